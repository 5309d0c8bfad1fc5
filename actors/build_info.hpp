// What the CAF side of this build was compiled against, for
// `nettorrent --version`. Free of CAF headers, so apps/ may include it.
#pragma once

#include <string>

namespace nettorrent {

/// The CAF version of the headers this build used: "0.17.6".
std::string caf_version_string();

} // namespace nettorrent
