// The shard worker of one replica: streams micro-batches of its data shard
// into the pipeline, keeps at most max_in_flight training batches in it
// (CAF has no back-pressure; this is it), stops at every sync point and
// reports to the coordinator once its pipeline is empty, and scores the
// replica on the validation subset on request.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <unordered_set>
#include <vector>

#include "actors.hpp"
#include "metrics.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/rng.hpp"

namespace nettorrent {

struct worker_spec {
  std::uint32_t replica = 0;
  std::uint32_t incarnation = 0;           ///< stamped on what it sends; others are stale
  std::shared_ptr<const data_splits> data; ///< read-only, loaded by this node
  /// Replicas of the run: this replica's shard of data->train and its
  /// order per epoch follow from it (data.hpp: replica_epoch_order).
  std::size_t replicas = 1;
  std::vector<std::uint32_t> validation;   ///< the validation subset
  std::size_t batch_size = 64;
  std::size_t eval_batch_size = 1000;
  std::size_t max_in_flight = 1;
  std::size_t sync_every = 10000;
  std::size_t max_epochs = 1;
  std::uint64_t seed = 0;
  const swarm_metrics* metrics = nullptr; ///< swarm "0" of this replica; null = off
};

struct shard_worker_state {
  static inline const char* name = "shard_worker";

  worker_spec spec;
  input_relay_actor input;
  loss_relay_actor loss_relay;
  barrier_sink_actor coordinator;
  std::vector<std::uint32_t> order; ///< this epoch's sample order
  rng gen{0};
  bool dealt = false; ///< `order` is a dealt_order(): the next epoch is replayed
  /// NETTORRENT_SAMPLE_LOG: "epoch sample" per trained sample (a diagnostic).
  std::shared_ptr<std::FILE> sample_log;
  std::size_t shard_size = 0; ///< samples of an epoch that is not dealt
  std::size_t cursor = 0;                          ///< next position in `order`
  std::uint64_t epoch = 0;                         ///< 1-based epoch in progress (0 = not started)
  std::uint64_t next_batch = 0;                    ///< batch ids, training and validation
  std::unordered_set<std::uint64_t> in_flight;     ///< training batches not yet `done`
  std::unordered_set<std::uint64_t> awaiting_loss; ///< training batches whose loss is due
                                                   ///< (done and loss come from different
                                                   ///< relays, in either order)
  std::uint64_t samples = 0;
  std::uint64_t since_sync = 0;
  bool running = false;  ///< between resume and the barrier
  bool finished = false; ///< all epochs fed
  double loss_sum = 0;   ///< training loss since the last barrier
  std::uint64_t loss_samples = 0;
  drop_stats counts;
  // Validation pass in progress.
  std::unordered_set<std::uint64_t> eval_pending;
  double eval_loss = 0;
  std::uint64_t eval_correct = 0;
  std::uint64_t eval_samples = 0; ///< samples of the validation pass in progress
  caf::typed_response_promise<replica_score> eval_promise;
  /// A validation asked for while a pass was still running.
  struct queued {
    std::uint32_t part = 0;
    std::uint32_t parts = 1;
    caf::typed_response_promise<replica_score> promise;
  };
  std::optional<queued> eval_queued;
};

shard_worker_actor::behavior_type
shard_worker(shard_worker_actor::stateful_pointer<shard_worker_state> self, worker_spec spec);

} // namespace nettorrent
