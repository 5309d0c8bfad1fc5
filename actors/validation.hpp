// Checks applied to every message from a peer before use, and the one way
// a bad message is handled: logged (first few), counted, dropped.
#pragma once

#include <cstdint>

#include <chrono>

#include <caf/actor_ostream.hpp>

#include "metrics.hpp"

#include "nettorrent/tensor.hpp"

namespace nettorrent {

/// True if `m` has `cols` columns, 1..max_rows rows and only finite values.
inline bool valid_batch(const matrix& m, Eigen::Index cols, std::size_t max_rows) {
  return m.cols() == cols && m.rows() >= 1 && static_cast<std::size_t>(m.rows()) <= max_rows
         && all_finite(m);
}

/// Bytes of a matrix payload, for the traffic metrics.
inline std::size_t payload_bytes(const matrix& m) {
  return static_cast<std::size_t>(m.size()) * sizeof(float);
}

/// Seconds since `t0`, for the latency histograms.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Counts a dropped message (also in `metrics`, when set) and logs the first
/// ten per actor.
template <class Self>
void drop_message(Self* self, std::uint64_t& counter, const char* what, std::uint64_t batch,
                  const swarm_metrics* metrics = nullptr, msg_kind kind = msg_kind::forward) {
  ++counter;
  if (metrics != nullptr)
    metrics->dropped_msg(kind);
  if (counter <= 10)
    caf::aout(self) << self->name() << " " << self->id() << ": dropped malformed " << what
                    << " message (batch " << batch << ")"
                    << (counter == 10 ? "; further drops are only counted" : "") << std::endl;
}

/// Drops a message of another incarnation of the replica than `expected`
/// (sent before a rollback, or by an actor the rollback replaced): counts it
/// in `counter` (and in `metrics`, when set) and logs the first ten per
/// actor. Returns true for a stale message: the handler then returns at
/// once, so the batch in progress is not touched.
template <class Self>
bool drop_if_stale(Self* self, std::uint64_t& counter, std::uint32_t incarnation,
                   std::uint32_t expected, const char* what, std::uint64_t batch,
                   const swarm_metrics* metrics = nullptr) {
  if (incarnation == expected)
    return false;
  ++counter;
  if (metrics != nullptr)
    metrics->stale->Increment();
  if (counter <= 10)
    caf::aout(self) << self->name() << " " << self->id() << ": dropped stale " << what
                    << " message (batch " << batch << ", incarnation " << incarnation
                    << ", expected " << expected << ")"
                    << (counter == 10 ? "; further stale messages are only counted" : "")
                    << std::endl;
  return true;
}

} // namespace nettorrent
