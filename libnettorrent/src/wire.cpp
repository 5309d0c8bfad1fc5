#include "nettorrent/wire.hpp"

#include <algorithm>
#include <cstring>

namespace nettorrent {

std::vector<std::uint8_t> byte_order_mark() {
  const std::uint32_t x = 0x01020304;
  std::vector<std::uint8_t> out(sizeof x);
  std::memcpy(out.data(), &x, sizeof x);
  return out;
}

std::string check_wire(std::uint32_t version, const std::vector<std::uint8_t>& mark) {
  const auto mine = byte_order_mark();
  if (mark != mine) {
    auto reversed = mine;
    std::reverse(reversed.begin(), reversed.end());
    if (mark == reversed)
      return "it stores numbers in the other byte order (matrices travel as raw floats in the "
             "sender's byte order, so such peers cannot be mixed)";
    return "its byte-order mark is malformed";
  }
  if (version != wire_version)
    return "it speaks wire format " + std::to_string(version) + ", this node "
           + std::to_string(wire_version) + " (run the same NetTorrent version on every node)";
  return {};
}

} // namespace nettorrent
