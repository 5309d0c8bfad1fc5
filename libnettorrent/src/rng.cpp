#include "nettorrent/rng.hpp"

#include <cmath>
#include <utility>

namespace nettorrent {

std::uint64_t hash_coords(std::uint64_t seed,
                          std::initializer_list<std::uint64_t> coords) noexcept {
  std::uint64_t h = mix64(seed);
  for (auto c : coords)
    h = mix64(h ^ mix64(c + 0x632be59bd9b4e019ULL));
  return h;
}

namespace {

__extension__ using uint128 = unsigned __int128;

constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
  return (x << k) | (x >> (64 - k));
}

} // namespace

rng::rng(std::uint64_t seed) noexcept {
  std::uint64_t z = seed;
  for (auto& word : s_) {
    z += 0x9e3779b97f4a7c15ULL;
    word = mix64(z);
  }
}

std::uint64_t rng::next() noexcept {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

std::uint64_t rng::below(std::uint64_t bound) noexcept {
  // Lemire's nearly divisionless method on 64x64 -> 128 bit products.
  uint128 m = static_cast<uint128>(next()) * bound;
  auto low = static_cast<std::uint64_t>(m);
  if (low < bound) {
    const std::uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      m = static_cast<uint128>(next()) * bound;
      low = static_cast<std::uint64_t>(m);
    }
  }
  return static_cast<std::uint64_t>(m >> 64);
}

void shuffle(std::vector<std::uint32_t>& v, rng& gen) noexcept {
  for (std::size_t i = v.size(); i > 1; --i) {
    const auto j = static_cast<std::size_t>(gen.below(i));
    std::swap(v[i - 1], v[j]);
  }
}

float normal_from_bits(std::uint64_t bits) noexcept {
  // Box-Muller in double precision on two 32-bit uniforms; u1 in (0, 1].
  const double u1 = (static_cast<double>(bits >> 32) + 1.0) / 4294967296.0;
  const double u2 = static_cast<double>(bits & 0xffffffffULL) / 4294967296.0;
  const double r = std::sqrt(-2.0 * std::log(u1));
  return static_cast<float>(r * std::cos(2.0 * 3.14159265358979323846 * u2));
}

} // namespace nettorrent
