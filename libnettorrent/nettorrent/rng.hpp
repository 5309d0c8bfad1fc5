// Seeded, platform-independent random numbers. Every random source in
// NetTorrent derives from the configured seed through these functions, so a
// run repeats bit for bit wherever its schedule is deterministic. We avoid
// <random>'s distributions because their output is library-specific.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace nettorrent {

/// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// Hashes a seed together with a list of coordinates (layer, row, column,
/// shard, epoch, ...) into one well-mixed 64-bit value.
std::uint64_t hash_coords(std::uint64_t seed, std::initializer_list<std::uint64_t> coords) noexcept;

/// Maps 64 random bits to a float in [0, 1) using the top 24 bits.
inline float unit_float(std::uint64_t bits) noexcept {
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
}

/// xoshiro256** (Blackman, Vigna 2018), seeded through SplitMix64.
class rng {
public:
  using state_type = std::array<std::uint64_t, 4>;

  explicit rng(std::uint64_t seed) noexcept;

  std::uint64_t next() noexcept;

  /// Uniform integer in [0, bound), unbiased (Lemire 2019).
  std::uint64_t below(std::uint64_t bound) noexcept;

  const state_type& state() const noexcept { return s_; }
  void set_state(const state_type& s) noexcept { s_ = s; }

private:
  state_type s_;
};

/// Fisher-Yates shuffle driven by `gen`.
void shuffle(std::vector<std::uint32_t>& v, rng& gen) noexcept;

/// A standard normal deviate computed from one 64-bit hash (Box-Muller on two
/// 32-bit halves), so that any element can be generated independently.
float normal_from_bits(std::uint64_t bits) noexcept;

} // namespace nettorrent
