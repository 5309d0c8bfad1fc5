#include "nettorrent/loss.hpp"

#include <cmath>

namespace nettorrent {

std::size_t argmax_row(const matrix& m, std::size_t row) {
  const auto r = static_cast<Eigen::Index>(row);
  Eigen::Index best = 0;
  for (Eigen::Index k = 1; k < m.cols(); ++k)
    if (m(r, k) > m(r, best))
      best = k;
  return static_cast<std::size_t>(best);
}

namespace {

// Loss of every row; with WithGrad also writes (softmax(z) - onehot(y)) / B.
// log-sum-exp is taken around the row maximum so exp never overflows; the
// sums run in double so the loss is accurate for large logits.
template <bool WithGrad>
loss_result xent(const matrix& logits, const std::uint8_t* labels, matrix* grad) {
  loss_result res;
  const double scale = 1.0 / static_cast<double>(logits.rows());
  for (Eigen::Index i = 0; i < logits.rows(); ++i) {
    const auto y = static_cast<Eigen::Index>(labels[i]);
    const auto z = logits.row(i);
    const double zmax = static_cast<double>(z.maxCoeff());
    double sum = 0;
    for (Eigen::Index k = 0; k < z.size(); ++k)
      sum += std::exp(static_cast<double>(z(k)) - zmax);
    const double lse = zmax + std::log(sum);
    res.loss_sum += lse - static_cast<double>(z(y));
    if constexpr (WithGrad) {
      for (Eigen::Index k = 0; k < z.size(); ++k) {
        const double pk = std::exp(static_cast<double>(z(k)) - lse);
        (*grad)(i, k) = static_cast<float>((pk - (k == y ? 1.0 : 0.0)) * scale);
      }
    }
    if (argmax_row(logits, static_cast<std::size_t>(i)) == static_cast<std::size_t>(y))
      ++res.correct;
  }
  return res;
}

} // namespace

loss_result softmax_xent(const matrix& logits, const std::uint8_t* labels) {
  return xent<false>(logits, labels, nullptr);
}

loss_result softmax_xent_backward(const matrix& logits, const std::uint8_t* labels, matrix& grad) {
  if (grad.rows() != logits.rows() || grad.cols() != logits.cols())
    grad.resize(logits.rows(), logits.cols());
  return xent<true>(logits, labels, &grad);
}

} // namespace nettorrent
