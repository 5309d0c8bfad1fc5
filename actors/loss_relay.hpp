// The loss relay of one replica (boundary L): gathers swarm L's logits,
// computes softmax cross-entropy against the labels from the shard worker,
// reports loss and accuracy to the worker, and starts the backward pass with
// (P - Y) / B, split by swarm L's columns.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "actors.hpp"
#include "relay_common.hpp"

namespace nettorrent {

struct loss_relay_state : gathering_relay_state {
  static inline const char* name = "loss_relay";

  /// Gathered logits (B x classes) waiting for their labels.
  struct waiting_logits {
    shared_matrix logits;
    bool train = false;
  };

  /// Labels (and the train flag they came with) waiting for their logits.
  std::unordered_map<std::uint64_t, std::pair<bool, std::vector<std::uint8_t>>> labels;
  std::unordered_map<std::uint64_t, waiting_logits> logits;
};

loss_relay_actor::behavior_type
loss_relay(loss_relay_actor::stateful_pointer<loss_relay_state> self, relay_spec spec);

} // namespace nettorrent
