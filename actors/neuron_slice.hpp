// The neuron slice: owns columns [c0, c1) of one layer in one replica with
// their optimizer state. Forward on a batch's input, backward on its output
// gradient, and an optimizer update the moment its gradient is complete.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>

#include "actors.hpp"
#include "metrics.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/dense.hpp"
#include "nettorrent/optimizer.hpp"

namespace nettorrent {

/// Everything a slice needs to start.
struct slice_spec {
  std::uint32_t replica = 0;
  std::uint32_t index = 0;       ///< slice index within its layer
  std::uint32_t incarnation = 0; ///< stamped on what it sends; others are stale
  slice_geometry geometry;
  optimizer_config optimizer;
  std::uint64_t seed = 0;
  bool weight_stashing = false;
  /// topology.sync_precision: other than f32, the slice keeps the last
  /// round's weights, which its round reads and results are changes from.
  sync_precision sync_coding = sync_precision::f32;
  /// topology.sync_feedback: a round's change carries what earlier rounds'
  /// changes lost to rounding (the residual in the optimizer states' `r`).
  bool sync_feedback = false;
  std::size_t max_batch = 0;              ///< largest batch a peer may send
  const swarm_metrics* metrics = nullptr; ///< null = metrics off
};

struct neuron_slice_state {
  static inline const char* name = "neuron_slice";

  /// What backward needs of a training batch, kept from its forward pass.
  struct stash_entry {
    shared_matrix x; ///< input (B x fan_in), shared with the relay
    shared_matrix h; ///< output (B x n), shared with the relay
    std::uint64_t updates_at_forward = 0;
    std::unique_ptr<dense_params> weights; ///< forward-time weights (weight stashing)
  };

  slice_spec spec;
  dense_params params;
  dense_grads grads;
  std::unique_ptr<optimizer> opt;
  optimizer_state w_state;
  optimizer_state b_state;
  /// The weights after the last sync round, rollback or resume (only under
  /// a sync precision other than f32: rounds send changes from them).
  dense_params round_weights;
  /// sync_feedback: the residuals after the round read last, which become
  /// the slice's own when that round's result arrives (a round that runs
  /// again reads from the same residuals).
  bool owes_pending = false;
  std::vector<float> w_owed_next;
  std::vector<float> b_owed_next;
  std::unordered_map<std::uint64_t, stash_entry> stash;
  ack_sink_actor ack_sink;   ///< layer 1: the input relay (gets acks)
  grad_sink_actor grad_sink; ///< layers 2..L: the hidden relay before this layer (gets dX)
  block_sink_actor next;     ///< the relay after this layer (gets H)
  slice_stats stats;
};

neuron_slice_actor::behavior_type
neuron_slice(neuron_slice_actor::stateful_pointer<neuron_slice_state> self, slice_spec spec);

} // namespace nettorrent
