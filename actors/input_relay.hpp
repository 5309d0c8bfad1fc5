// The input relay of one replica (boundary 0): broadcasts each batch from the
// shard worker to swarm 1's slices and reports `done` once every swarm-1
// slice has applied the batch's update (this frees the worker's in-flight
// slot).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "actors.hpp"
#include "relay_common.hpp"

namespace nettorrent {

struct input_relay_state : relay_state_base {
  static inline const char* name = "input_relay";

  /// Which swarm-1 slices acked a training batch (a duplicate ack must not
  /// count twice, or the batch would leave the pipeline early).
  struct ack_set {
    std::vector<bool> got;
    std::size_t count = 0;
  };

  std::vector<neuron_slice_actor> next; ///< swarm 1's slices
  std::unordered_map<std::uint64_t, ack_set> acks;
};

input_relay_actor::behavior_type
input_relay(input_relay_actor::stateful_pointer<input_relay_state> self, relay_spec spec);

} // namespace nettorrent
