// The wire format's identity, carried by every node's hello: a version of
// NetTorrent's message formats and a byte-order mark. Matrices travel as
// raw floats in the sender's native byte order (CAF converts integers, not
// raw payloads), so a peer of the other byte order, or of another wire
// format, is refused at hello rather than misread later.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nettorrent {

/// Bumped whenever a message that crosses nodes changes its layout.
// 3: shared matrices carry a precision tag; 4: sync requests carry the outer
// optimizer's state, exchange results one state per replica; 5: worker
// positions carry the epoch's deal; 6: sync rounds travel as coded payloads
// (round_get, round_set) and sync requests carry the sync precision; 7: a
// round's read says whether the moments come too, barrier reports whether
// the epochs end before the next sync point, optimizer states carry the
// sync feedback residual.
inline constexpr std::uint32_t wire_version = 7;

/// The four bytes of 0x01020304 in this machine's byte order.
std::vector<std::uint8_t> byte_order_mark();

/// Empty if a peer announcing `version` and `mark` can talk to this node;
/// else why not, for the refusal message.
std::string check_wire(std::uint32_t version, const std::vector<std::uint8_t>& mark);

} // namespace nettorrent
