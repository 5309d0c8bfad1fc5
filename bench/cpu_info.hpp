// Names the CPU a benchmark ran on, so absolute figures can be read in
// context (machines of the same kind differ ~2x).
#pragma once

#include <fstream>
#include <string>

namespace nettorrent::bench {

inline std::string cpu_model() {
  std::ifstream in{"/proc/cpuinfo"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  return "unknown CPU";
}

/// The widest SIMD the *CPU* offers (what the build uses depends on -march).
inline std::string cpu_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    return "AVX-512";
  if (__builtin_cpu_supports("avx2"))
    return "AVX2";
  return "SSE";
}

/// The SIMD width this binary was compiled for.
inline std::string build_isa() {
#if defined(__AVX512F__)
  return "AVX-512";
#elif defined(__AVX2__)
  return "AVX2";
#else
  return "SSE2";
#endif
}

} // namespace nettorrent::bench
