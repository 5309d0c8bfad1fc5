// What the three relay roles share: the spec and the counters of every relay,
// and, for the two relays that gather swarm k's column blocks (hidden and
// loss), the forward gathers, the split of a gradient into swarm k's column
// blocks, and the report of diverged weights.
//   input relay  (k = 0)      input_relay.hpp
//   hidden relay (0 < k < L)  hidden_relay.hpp
//   loss relay   (k = L)      loss_relay.hpp
#pragma once

#include <cstdint>
#include <limits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/message_view.hpp>
#include <caf/result.hpp>
#include <caf/scheduled_actor.hpp>

#include "actors.hpp"
#include "metrics.hpp"
#include "nettorrent/dense.hpp"
#include "nettorrent/gather.hpp"
#include "validation.hpp"

namespace nettorrent {

/// Everything a relay of any role needs to start.
struct relay_spec {
  std::uint32_t replica = 0;
  std::uint32_t incarnation = 0;       ///< stamped on what it sends; others are stale
  std::size_t prev_width = 0;          ///< layers[k]: width of the input batches (input
                                       ///< relay), of the gathered H or logits (others)
  std::vector<column_range> prev_cols; ///< column ranges of swarm k's slices (k > 0)
  std::size_t max_batch = 0;
  const swarm_metrics* metrics = nullptr; ///< swarm k's metrics; null = off
};

/// What every relay holds.
struct relay_state_base {
  relay_spec spec;
  batch_sink_actor sink; ///< the replica's shard worker
  drop_stats counts;
};

/// What the hidden and loss relays also hold: swarm k's slices and the
/// gathers of their column blocks.
struct gathering_relay_state : relay_state_base {
  /// One batch being gathered, and the train flag its first block came with.
  struct open_gather {
    open_gather(column_layout cols, bool train_flag) : blocks(std::move(cols)), train(train_flag) {}
    column_gather blocks;
    bool train;
  };

  std::vector<neuron_slice_actor> prev; ///< swarm k's slices
  column_layout cols;                   ///< their column ranges (spec.prev_cols)
  std::unordered_map<std::uint64_t, open_gather> forward;
  /// Batches whose gather completed recently: a late or repeated block for
  /// one of them is dropped instead of opening a gather that never completes.
  finished_batches finished;

  /// Takes the spec (call once, in the behaviour).
  void start(relay_spec s) {
    spec = std::move(s);
    cols = make_column_layout(spec.prev_cols);
  }
};

/// Makes a relay count and drop a message its role has no handler for (only
/// a dynamically typed sender can send one: a bug, or a peer node) instead
/// of exiting. A request gets an error; an asynchronous message no answer
/// (CAF would send an error back as a message, which ends a sender without
/// an error handler).
template <class Self>
void drop_other_roles_messages(Self self) {
  self->set_default_handler(
      [self](caf::scheduled_actor*, caf::message_view&) -> caf::result<caf::message> {
        drop_message(self, self->state.counts.dropped, "unexpected", 0);
        if (self->current_message_id().is_request())
          return caf::sec::unexpected_message;
        return caf::message{};
      });
}

/// A training batch carried non-finite values: the weights diverged. The
/// batch can never complete, so report a non-finite loss for it; the worker
/// then stops the run with an error instead of waiting forever.
template <class Self>
void report_divergence(Self self, std::uint64_t batch) {
  auto& s = self->state;
  self->send(s.sink, atom::loss::value, s.spec.incarnation, batch, true,
             std::numeric_limits<double>::quiet_NaN(), std::uint64_t{0});
}

/// Splits `full` (B x width) into swarm k's column blocks and sends block i
/// to slice i as a backward message. One slice takes the whole matrix as is.
template <class Self>
void send_backward(Self self, std::uint64_t batch, matrix&& full) {
  auto& s = self->state;
  const std::uint32_t inc = s.spec.incarnation;
  if (s.prev.size() == 1) {
    if (const auto* m = s.spec.metrics)
      m->sent_msg(msg_kind::backward, payload_bytes(full));
    self->send(s.prev[0], atom::backward::value, inc, batch, owned_matrix{std::move(full)});
    return;
  }
  for (std::size_t i = 0; i < s.prev.size(); ++i) {
    const auto& c = (*s.cols)[i];
    matrix part =
        full.middleCols(static_cast<Eigen::Index>(c.begin), static_cast<Eigen::Index>(c.size()));
    if (const auto* m = s.spec.metrics)
      m->sent_msg(msg_kind::backward, payload_bytes(part));
    self->send(s.prev[i], atom::backward::value, inc, batch, owned_matrix{std::move(part)});
  }
}

/// A block from swarm k's slice `slice` (stale ones are dropped before):
/// drops it if malformed (a non-finite training block is also reported as
/// divergence), for a finished batch, or if it does not fit the batch's
/// gather; else stores it. Returns the assembled H (B x prev_width) when it
/// was the batch's last block, an empty handle otherwise.
template <class Self>
shared_matrix gather_block(Self self, std::uint64_t batch, bool train, std::uint32_t slice,
                           const shared_matrix& h) {
  auto& s = self->state;
  if (slice >= s.cols->size() || !h
      || !valid_batch(h.get(), static_cast<Eigen::Index>((*s.cols)[slice].size()),
                      s.spec.max_batch)) {
    drop_message(self, s.counts.dropped, "block", batch, s.spec.metrics, msg_kind::block);
    if (train && h && !all_finite(h.get()))
      report_divergence(self, batch);
    return {};
  }
  if (s.finished.contains(batch)) {
    drop_message(self, s.counts.dropped, "block", batch, s.spec.metrics, msg_kind::block);
    return {};
  }
  if (const auto* m = s.spec.metrics)
    m->received_msg(msg_kind::block, payload_bytes(h.get()));
  auto [it, fresh] = s.forward.try_emplace(batch, s.cols, train);
  if (it->second.train != train) {
    drop_message(self, s.counts.dropped, "block", batch, s.spec.metrics, msg_kind::block);
    return {};
  }
  const part_status st = it->second.blocks.add(slice, h);
  if (st == part_status::accepted)
    return {};
  if (st != part_status::complete) { // a duplicate or a block of another height
    drop_message(self, s.counts.dropped, "block", batch, s.spec.metrics, msg_kind::block);
    if (fresh)
      s.forward.erase(it);
    return {};
  }
  s.finished.insert(batch);
  auto node = s.forward.extract(it);
  shared_matrix out = node.mapped().blocks.take();
  if (const auto* m = s.spec.metrics; m != nullptr && train) {
    m->samples->Increment(static_cast<double>(out.get().rows()));
    m->batches->Increment();
  }
  return out;
}

/// The `block` handler of the hidden and the loss relay: drops a stale
/// block, gathers the others, and hands the complete H to `gathered(self,
/// batch, train, H)`.
template <class Self, class Gathered>
void on_block(Self self, std::uint32_t inc, std::uint64_t batch, bool train, std::uint32_t slice,
              const shared_matrix& h, Gathered gathered) {
  auto& s = self->state;
  if (drop_if_stale(self, s.counts.stale, inc, s.spec.incarnation, "block", batch, s.spec.metrics))
    return;
  if (shared_matrix full = gather_block(self, batch, train, slice, h))
    gathered(self, batch, train, std::move(full));
}

} // namespace nettorrent
