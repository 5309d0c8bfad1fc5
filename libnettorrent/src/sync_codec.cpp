#include "nettorrent/sync_codec.hpp"

#include <cmath>
#include <utility>

#include "nettorrent/bf16.hpp"
#include "nettorrent/int8.hpp"

namespace nettorrent {

namespace {

/// `now - base` (or `now` under f32) of a rows x cols row-major block.
coded_matrix encode(const float* now, const float* base, std::int64_t rows, std::int64_t cols,
                    sync_precision p) {
  coded_matrix c;
  c.precision = p;
  c.rows = rows;
  c.cols = cols;
  const auto n = static_cast<std::size_t>(rows * cols);
  if (p == sync_precision::f32) {
    c.values.assign(now, now + n);
    return c;
  }
  std::vector<float> change(n);
  for (std::size_t i = 0; i < n; ++i)
    change[i] = now[i] - base[i];
  if (p == sync_precision::bf16) {
    c.halves.resize(n);
    encode_bf16(change.data(), n, c.halves.data());
    return c;
  }
  const auto w = static_cast<std::size_t>(cols);
  c.q.resize(n);
  c.values.resize(static_cast<std::size_t>(rows));
  for (std::size_t r = 0; r < c.values.size(); ++r) {
    c.values[r] = int8_row_scale(change.data() + r * w, w);
    encode_int8(change.data() + r * w, w, c.values[r], c.q.data() + r * w);
  }
  return c;
}

/// Writes what `c` describes into `out` (rows x cols, row-major), `base`
/// plus the change unless under f32.
void decode(const coded_matrix& c, const float* base, float* out) {
  const auto n = static_cast<std::size_t>(c.rows * c.cols);
  if (c.precision == sync_precision::f32) {
    std::copy(c.values.begin(), c.values.end(), out);
    return;
  }
  std::vector<float> change(n);
  if (c.precision == sync_precision::bf16) {
    decode_bf16(c.halves.data(), n, change.data());
  } else {
    const auto w = static_cast<std::size_t>(c.cols);
    for (std::size_t r = 0; r < static_cast<std::size_t>(c.rows); ++r)
      decode_int8(c.q.data() + r * w, w, c.values[r], change.data() + r * w);
  }
  for (std::size_t i = 0; i < n; ++i)
    out[i] = base[i] + change[i];
}

coded_matrix cut(const coded_matrix& c, column_range r) {
  coded_matrix out;
  out.precision = c.precision;
  out.rows = c.rows;
  out.cols = static_cast<std::int64_t>(r.size());
  const auto w = static_cast<std::size_t>(c.cols);
  auto rows_of = [&](const auto& from, auto& to) {
    to.reserve(static_cast<std::size_t>(c.rows) * r.size());
    for (std::size_t i = 0; i < static_cast<std::size_t>(c.rows); ++i)
      to.insert(to.end(), from.begin() + static_cast<std::ptrdiff_t>(i * w + r.begin),
                from.begin() + static_cast<std::ptrdiff_t>(i * w + r.end));
  };
  switch (c.precision) {
  case sync_precision::f32:
    rows_of(c.values, out.values);
    break;
  case sync_precision::bf16:
    rows_of(c.halves, out.halves);
    break;
  case sync_precision::int8:
    rows_of(c.q, out.q);
    out.values = c.values; // a row keeps its scale
    break;
  }
  return out;
}

std::string check(const coded_matrix& c, std::int64_t rows, std::int64_t cols, const char* what) {
  const std::string shape = std::to_string(rows) + " x " + std::to_string(cols);
  constexpr std::int64_t most = std::int64_t{1} << 31; // rows * cols cannot overflow
  if (rows < 0 || cols < 0 || rows >= most || cols >= most)
    return std::string{what} + " of an impossible shape " + shape;
  if (c.rows != rows || c.cols != cols)
    return std::string{what} + " of " + std::to_string(c.rows) + " x " + std::to_string(c.cols)
           + " for " + shape;
  const auto n = static_cast<std::size_t>(rows * cols);
  bool sizes = false;
  switch (c.precision) {
  case sync_precision::f32:
    sizes = c.values.size() == n && c.halves.empty() && c.q.empty();
    break;
  case sync_precision::bf16:
    sizes = c.halves.size() == n && c.values.empty() && c.q.empty();
    break;
  case sync_precision::int8:
    sizes =
        c.q.size() == n && c.values.size() == static_cast<std::size_t>(rows) && c.halves.empty();
    break;
  default:
    return std::string{what} + " in an unknown precision "
           + std::to_string(static_cast<unsigned>(c.precision));
  }
  if (!sizes)
    return std::string{what} + " (" + shape + ", " + std::string{to_string(c.precision)}
           + ") whose payload has the wrong size";
  return {};
}

} // namespace

coded_params encode_params(const dense_params& now, const dense_params& base, sync_precision p) {
  return {encode(now.w.data(), base.w.data(), now.w.rows(), now.w.cols(), p),
          encode(now.b.data(), base.b.data(), 1, now.b.size(), p)};
}

dense_params decode_params(const coded_params& c, const dense_params& base) {
  dense_params out;
  out.w.resize(c.w.rows, c.w.cols);
  out.b.resize(c.b.cols);
  decode(c.w, base.w.data(), out.w.data());
  decode(c.b, base.b.data(), out.b.data());
  return out;
}

coded_params encode_with_feedback(const dense_params& now, const dense_params& base,
                                  sync_precision p, const std::vector<float>& w_owed,
                                  const std::vector<float>& b_owed, std::vector<float>& w_next,
                                  std::vector<float>& b_next) {
  dense_params x = now;
  const auto add = [](float* to, const std::vector<float>& owed, std::size_t n) {
    if (owed.size() == n)
      for (std::size_t i = 0; i < n; ++i)
        to[i] += owed[i];
  };
  const auto nw = static_cast<std::size_t>(x.w.size());
  const auto nb = static_cast<std::size_t>(x.b.size());
  add(x.w.data(), w_owed, nw);
  add(x.b.data(), b_owed, nb);
  coded_params c = encode_params(x, base, p);
  const dense_params sent = decode_params(c, base);
  const auto owe = [](const float* want, const float* got, std::vector<float>& out,
                      std::size_t n) {
    out.resize(n);
    for (std::size_t i = 0; i < n; ++i)
      out[i] = want[i] - got[i];
  };
  owe(x.w.data(), sent.w.data(), w_next, nw);
  owe(x.b.data(), sent.b.data(), b_next, nb);
  return c;
}

coded_params cut_columns(const coded_params& c, column_range cols) {
  return {cut(c.w, cols), cut(c.b, cols)};
}

std::string check_coded(const coded_params& c, std::int64_t rows, std::int64_t cols) {
  if (c.w.precision != c.b.precision)
    return "weights and bias in different precisions";
  if (auto why = check(c.w, rows, cols, "weights"); !why.empty())
    return why;
  return check(c.b, 1, cols, "bias");
}

std::string check_coded(const coded_params& c, const dense_params& like) {
  if (like.b.size() != like.w.cols())
    return "a layer whose bias does not match its weights";
  return check_coded(c, like.w.rows(), like.w.cols());
}

std::string check_payload(const round_payload& p, std::int64_t rows, std::int64_t cols) {
  if (auto why = check_coded(p.weights, rows, cols); !why.empty())
    return why;
  if (!p.moments)
    return {};
  const auto n = static_cast<std::size_t>(rows * cols);
  const auto nb = static_cast<std::size_t>(cols);
  for (auto vec : state_vectors) {
    const auto& w = p.w_state.*vec;
    const auto& b = p.b_state.*vec;
    if ((!w.empty() && w.size() != n) || (!b.empty() && b.size() != nb))
      return vec == &optimizer_state::r ? "a feedback residual of the wrong size"
                                        : "optimizer moments of the wrong size";
  }
  return {};
}

round_payload cut_payload(const round_payload& whole, column_range cols) {
  round_payload out;
  out.weights = cut_columns(whole.weights, cols);
  out.moments = whole.moments;
  if (!whole.moments)
    return out;
  const auto rows = static_cast<std::size_t>(whole.weights.w.rows);
  const auto n = static_cast<std::size_t>(whole.weights.w.cols);
  auto moments = [&](const optimizer_state& from, std::size_t r) {
    optimizer_state s;
    s.steps = from.steps;
    for (auto vec : state_vectors) {
      const std::vector<float>* src = &(from.*vec);
      std::vector<float>* dst = &(s.*vec);
      if (src->empty())
        continue;
      dst->reserve(r * cols.size());
      for (std::size_t i = 0; i < r; ++i)
        dst->insert(dst->end(), src->begin() + static_cast<std::ptrdiff_t>(i * n + cols.begin),
                    src->begin() + static_cast<std::ptrdiff_t>(i * n + cols.end));
    }
    return s;
  };
  out.w_state = moments(whole.w_state, rows);
  out.b_state = moments(whole.b_state, 1);
  return out;
}

std::size_t payload_bytes(const round_payload& p) noexcept {
  std::size_t n = 0;
  for (auto vec : state_vectors)
    n += (p.w_state.*vec).size() + (p.b_state.*vec).size();
  return coded_bytes(p.weights) + sizeof(float) * n;
}

std::size_t coded_bytes(const coded_params& c) noexcept {
  auto bytes = [](const coded_matrix& m) {
    return m.values.size() * sizeof(float) + m.halves.size() * sizeof(std::uint16_t) + m.q.size();
  };
  return bytes(c.w) + bytes(c.b);
}

} // namespace nettorrent
