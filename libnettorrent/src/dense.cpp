#include "nettorrent/dense.hpp"

#include <cmath>

#include "nettorrent/error.hpp"
#include "nettorrent/rng.hpp"

namespace nettorrent {

std::vector<column_range> split_columns(std::size_t n, std::size_t parts) {
  if (parts == 0 || parts > n)
    throw error("cannot split " + std::to_string(n) + " neurons into " + std::to_string(parts)
                + " slices");
  std::vector<column_range> out;
  out.reserve(parts);
  const std::size_t base = n / parts;
  const std::size_t extra = n % parts;
  std::size_t begin = 0;
  for (std::size_t i = 0; i < parts; ++i) {
    const std::size_t len = base + (i < extra ? 1 : 0);
    out.push_back({begin, begin + len});
    begin += len;
  }
  return out;
}

dense_params init_dense(std::uint64_t seed, const slice_geometry& g) {
  const std::size_t n = g.cols.size();
  dense_params p;
  p.w.resize(static_cast<Eigen::Index>(g.fan_in), static_cast<Eigen::Index>(n));
  p.b = row_vector::Zero(static_cast<Eigen::Index>(n));
  const bool he = g.act == activation::relu;
  const double scale = he ? std::sqrt(2.0 / static_cast<double>(g.fan_in))
                          : std::sqrt(6.0 / static_cast<double>(g.fan_in + g.fan_out));
  for (std::size_t r = 0; r < g.fan_in; ++r) {
    for (std::size_t c = 0; c < n; ++c) {
      const auto bits = hash_coords(seed, {g.layer, r, g.cols.begin + c});
      const double v = he ? scale * static_cast<double>(normal_from_bits(bits))
                          : scale * (2.0 * static_cast<double>(unit_float(bits)) - 1.0);
      p.w(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) = static_cast<float>(v);
    }
  }
  return p;
}

void resize_grads(const dense_params& p, dense_grads& grads) {
  if (grads.dw.rows() != p.w.rows() || grads.dw.cols() != p.w.cols())
    grads.dw.resize(p.w.rows(), p.w.cols());
  if (grads.db.size() != p.b.size())
    grads.db.resize(p.b.size());
}

void dense_forward(const matrix& x, const dense_params& p, activation act, matrix& h) {
  if (h.rows() != x.rows() || h.cols() != p.w.cols())
    h.resize(x.rows(), p.w.cols());
  h.noalias() = x * p.w;
  h.rowwise() += p.b;
  activate(act, h);
}

void dense_backward(const matrix& x, const matrix& h, activation act, const dense_params& p,
                    matrix& dh, dense_grads& grads, matrix* dx) {
  activation_backward(act, h, dh); // dh now holds dZ
  resize_grads(p, grads);
  grads.dw.noalias() = x.transpose() * dh;
  grads.db.noalias() = dh.colwise().sum();
  if (dx != nullptr) {
    if (dx->rows() != dh.rows() || dx->cols() != p.w.rows())
      dx->resize(dh.rows(), p.w.rows());
    dx->noalias() = dh * p.w.transpose();
  }
}

} // namespace nettorrent
