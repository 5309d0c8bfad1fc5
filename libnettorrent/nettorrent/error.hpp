// The one exception type of libnettorrent: a message that already names
// what went wrong and where (file, key, peer), ready to show to a user.
#pragma once

#include <stdexcept>
#include <string>

namespace nettorrent {

class error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

} // namespace nettorrent
