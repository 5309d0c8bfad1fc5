// The one non-cryptographic hash of NetTorrent: FNV-1a 64 (Fowler, Noll, Vo;
// http://www.isthe.com/chongo/tech/comp/fnv/). It checksums checkpoint
// payloads and hashes the canonical text of run configs and cluster
// descriptions. Not a defence against a deliberate collision.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace nettorrent {

/// FNV-1a 64 of `bytes`: offset basis 0xcbf29ce484222325, prime
/// 0x100000001b3, one XOR-then-multiply per byte.
std::uint64_t fnv1a64(std::string_view bytes) noexcept;

/// A hash as 16 lower-case hex digits, as nodes and the coordinator print it.
std::string hash_hex(std::uint64_t hash);

} // namespace nettorrent
