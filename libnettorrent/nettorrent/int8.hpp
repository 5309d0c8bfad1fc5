// int8 with a scale per row: activations and gradients between nodes under
// system.wire_precision = "int8" (a quarter of float's bytes, plus 4 per
// row). Row i travels as s_i = max_j |x_ij| / 127 (a float) and
// q_ij = round(x_ij / s_i) in [-127, 127], ties to even; it decodes to
// q_ij * s_i, within s_i / 2 of x_ij. A row of zeros has s_i = 0. A row
// holding a NaN or an infinity travels with s_i = NaN, so it decodes to NaN
// and the receiver sees the divergence it carries.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace nettorrent {

/// The scale of a row of `n` floats.
inline float int8_row_scale(const float* x, std::size_t n) noexcept {
  float m = 0;
  bool finite = true;
  for (std::size_t j = 0; j < n; ++j) {
    finite = finite && std::isfinite(x[j]);
    m = std::fmax(m, std::fabs(x[j]));
  }
  return finite ? m / 127.0f : std::nanf("");
}

/// Quantises `n` floats of a row with its `scale` (int8_row_scale).
inline void encode_int8(const float* x, std::size_t n, float scale, std::int8_t* q) noexcept {
  if (!(scale > 0)) { // zeros (or NaN: the scale carries it)
    for (std::size_t j = 0; j < n; ++j)
      q[j] = 0;
    return;
  }
  const float inv = 1.0f / scale;
  for (std::size_t j = 0; j < n; ++j) {
    const float v = std::nearbyint(x[j] * inv); // ties to even (the default rounding mode)
    q[j] = static_cast<std::int8_t>(std::fmax(-127.0f, std::fmin(127.0f, v)));
  }
}

inline void decode_int8(const std::int8_t* q, std::size_t n, float scale, float* x) noexcept {
  for (std::size_t j = 0; j < n; ++j)
    x[j] = static_cast<float>(q[j]) * scale;
}

} // namespace nettorrent
