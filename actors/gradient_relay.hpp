// The gradient relay at boundary k of one replica (k = 0 .. L):
//   k = 0      input relay: broadcasts a batch from the shard worker to
//              swarm 1 and reports `done` when every swarm-1 slice has
//              applied its update (this frees the worker's in-flight slot).
//   0 < k < L  gathers swarm k's column blocks into H (B x out_k) and
//              broadcasts it to swarm k+1; sums swarm k+1's partial dX in
//              slice-index order and sends each swarm-k slice its columns.
//   k = L      loss relay: gathers the logits, computes softmax
//              cross-entropy against the labels, reports loss and accuracy,
//              and starts the backward pass with (P - Y) / B by columns.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "actors.hpp"
#include "metrics.hpp"
#include "nettorrent/dense.hpp"

namespace nettorrent {

struct relay_spec {
  std::uint32_t replica = 0;
  std::uint32_t boundary = 0;          ///< k
  std::uint32_t layers = 0;            ///< L
  std::size_t prev_width = 0;          ///< layers[k]: width of the gathered H (k > 0),
                                       ///< of the input batches (k = 0)
  std::vector<column_range> prev_cols; ///< column ranges of swarm k's slices (k > 0)
  std::size_t next_slices = 0;         ///< slices of swarm k+1 (k < L)
  std::size_t max_batch = 0;
  const swarm_metrics* metrics = nullptr; ///< swarm k's metrics; null = off
};

struct gradient_relay_state {
  static inline const char* name = "gradient_relay";

  /// Forward gather of one batch.
  struct gather {
    matrix buf;           ///< B x prev_width, filled block by block
    shared_matrix single; ///< the block itself when swarm k has one slice
    std::vector<bool> got;
    std::size_t count = 0;
    bool train = false;
  };
  /// Backward sum of one batch: partials kept until all arrived, then summed
  /// in slice-index order so the result does not depend on arrival order.
  struct partials {
    std::vector<matrix> parts;
    std::size_t count = 0;
    Eigen::Index rows = 0;
  };

  relay_spec spec;
  std::vector<neuron_slice_actor> prev; ///< swarm k's slices
  std::vector<neuron_slice_actor> next; ///< swarm k+1's slices
  batch_sink_actor sink;
  std::unordered_map<std::uint64_t, gather> forward;
  std::unordered_map<std::uint64_t, partials> backward;
  /// k = 0: which swarm-1 slices acked a training batch (a duplicate ack
  /// must not count twice, or the batch would leave the pipeline early).
  struct ack_set {
    std::vector<bool> got;
    std::size_t count = 0;
  };
  std::unordered_map<std::uint64_t, ack_set> acks; ///< k = 0
  /// k = L: labels (and the train flag they came with) waiting for logits.
  std::unordered_map<std::uint64_t, std::pair<bool, std::vector<std::uint8_t>>> labels;
  std::unordered_map<std::uint64_t, gather> logits; ///< k = L, waiting for labels
  /// Batches whose forward gather completed recently: a late or repeated
  /// block for one of them is dropped instead of opening a gather that would
  /// never complete. Bounded: the oldest id is forgotten first.
  std::unordered_set<std::uint64_t> finished;
  std::deque<std::uint64_t> finished_order;
  static constexpr std::size_t finished_capacity = 4096;
  std::uint64_t dropped = 0;

  void mark_finished(std::uint64_t batch) {
    if (!finished.insert(batch).second)
      return;
    finished_order.push_back(batch);
    if (finished_order.size() > finished_capacity) {
      finished.erase(finished_order.front());
      finished_order.pop_front();
    }
  }
};

gradient_relay_actor::behavior_type
gradient_relay(gradient_relay_actor::stateful_pointer<gradient_relay_state> self, relay_spec spec);

} // namespace nettorrent
