// A hidden relay of one replica (boundary 0 < k < L): gathers swarm k's
// column blocks into H (B x out_k) and broadcasts it to swarm k+1; sums swarm
// k+1's partial input gradients in slice-index order and sends each swarm-k
// slice its columns of the sum.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "actors.hpp"
#include "nettorrent/gather.hpp"
#include "relay_common.hpp"

namespace nettorrent {

struct hidden_relay_state : gathering_relay_state {
  static inline const char* name = "hidden_relay";

  std::vector<neuron_slice_actor> next; ///< swarm k+1's slices
  /// Training batches forwarded to swarm k+1, waiting for its partial dX.
  std::unordered_map<std::uint64_t, ordered_sum> backward;
};

hidden_relay_actor::behavior_type
hidden_relay(hidden_relay_actor::stateful_pointer<hidden_relay_state> self, relay_spec spec);

} // namespace nettorrent
