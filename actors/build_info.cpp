#include "build_info.hpp"

#include <caf/config.hpp>

namespace nettorrent {

std::string caf_version_string() {
  // CAF_VERSION is major * 10000 + minor * 100 + patch (1706 = 0.17.6).
  return std::to_string(CAF_MAJOR_VERSION) + "." + std::to_string(CAF_MINOR_VERSION) + "."
         + std::to_string(CAF_PATCH_VERSION);
}

} // namespace nettorrent
