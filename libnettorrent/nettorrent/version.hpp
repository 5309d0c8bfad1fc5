// The version of NetTorrent and of what libnettorrent was built with, for
// `nettorrent --version` (the CAF version is in actors/build_info.hpp).
#pragma once

#include <string>

namespace nettorrent {

/// NetTorrent's version: the CMake project version, "0.1.0".
std::string version_string();

/// The Eigen version of the headers libnettorrent used: "3.4.0".
std::string eigen_version_string();

/// The compiler that built libnettorrent: "GCC 12.2.0", "Clang 14.0.6".
std::string compiler_version_string();

} // namespace nettorrent
