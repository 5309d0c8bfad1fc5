#include "nettorrent/version.hpp"

#include <Eigen/Core>

// Set by libnettorrent/CMakeLists.txt from project(... VERSION ...).
#ifndef NETTORRENT_VERSION
#error "NETTORRENT_VERSION must be defined by the build"
#endif

namespace nettorrent {

std::string version_string() {
  return NETTORRENT_VERSION;
}

std::string eigen_version_string() {
  return std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "."
         + std::to_string(EIGEN_MINOR_VERSION);
}

std::string compiler_version_string() {
#if defined(__clang__)
  return "Clang " __clang_version__;
#elif defined(__GNUC__)
  return "GCC " __VERSION__;
#else
  return "unknown compiler";
#endif
}

} // namespace nettorrent
