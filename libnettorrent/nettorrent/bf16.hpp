// bfloat16: the upper 16 bits of an IEEE-754 binary32 (sign, the full 8-bit
// exponent, 7 mantissa bits). Halves the bytes of activations and gradients
// between nodes (system.wire_precision = "bf16") with float's range.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace nettorrent {

/// Rounds to the nearest bfloat16, ties to even. NaN stays NaN (quiet);
/// infinities and zeros keep their sign; values beyond bfloat16's largest
/// finite number round to infinity, as binary32 rounding would.
inline std::uint16_t to_bf16(float x) noexcept {
  std::uint32_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  // Branch-free (a select), so the loops below vectorise.
  const std::uint32_t nan = (u >> 16) | 0x0040u; // NaN: keep the sign, force quiet
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

/// Exact: every bfloat16 is a binary32.
inline float from_bf16(std::uint16_t h) noexcept {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float x = 0;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline void encode_bf16(const float* in, std::size_t n, std::uint16_t* out) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    out[i] = to_bf16(in[i]);
}

inline void decode_bf16(const std::uint16_t* in, std::size_t n, float* out) noexcept {
  for (std::size_t i = 0; i < n; ++i)
    out[i] = from_bf16(in[i]);
}

} // namespace nettorrent
