// What the coordinator's run machine and the world exchange: the reports
// that come in (barriers, counters) and run_backend, the commands that go
// out. The coordinator actor implements run_backend by sending messages;
// tests implement it with a recorder.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/policy_state.hpp"
#include "nettorrent/run_layout.hpp"
#include "nettorrent/run_result.hpp"
#include "nettorrent/slice_ops.hpp"
#include "nettorrent/sync_codec.hpp"
#include "nettorrent/sync_policy.hpp"

namespace nettorrent {

struct run_state;

/// Where a shard worker stands in its shard: enough to put a new worker
/// exactly there (the epoch's order is replayed from the seed: `epoch`
/// shuffles of the shard).
struct worker_position {
  std::uint64_t epoch = 0;      ///< 1-based epoch in progress (0 = not started)
  std::uint64_t cursor = 0;     ///< next position in the epoch's order
  std::uint64_t samples = 0;    ///< training samples fed so far
  std::uint64_t next_batch = 0; ///< next batch id
  /// Set by the coordinator when it moves a worker into an epoch whose
  /// replica count changed (data.hpp): that epoch's order is dealt_order().
  epoch_deal deal;

  friend bool operator==(const worker_position& a, const worker_position& b) {
    return a.epoch == b.epoch && a.cursor == b.cursor && a.samples == b.samples
           && a.next_batch == b.next_batch && a.deal == b.deal;
  }
};

/// What a shard worker reports when it reaches a barrier.
struct barrier_report {
  std::uint32_t replica = 0;
  std::uint32_t incarnation = 0; ///< of the worker that reports
  bool finished = false;         ///< no more epochs to run
  /// A full sync_every samples since the last round (false: the end of the
  /// epochs came first, off the sync grid).
  bool on_grid = true;
  /// Not finished, but the epochs end before another sync_every samples:
  /// the next barrier is the worker's last, and off the sync grid.
  bool ends_next = false;
  std::uint64_t samples = 0;     ///< training samples so far
  std::uint64_t epoch = 0;       ///< 1-based epoch in progress
  double loss_sum = 0;           ///< training loss summed since the last barrier
  std::uint64_t loss_samples = 0;
  bool diverged = false;    ///< a training loss was not finite: the run must stop
  worker_position position; ///< where the worker stands at the barrier
};

/// Counters an actor reports at the end of a run.
struct peer_counters {
  std::uint64_t dropped = 0;            ///< malformed messages dropped
  std::uint64_t stale = 0;              ///< messages of another incarnation dropped
  std::uint64_t max_staleness = 0;      ///< slices (leaders sum their swarm)
  std::vector<std::uint64_t> staleness; ///< histogram, slices only
};

/// What the machine tells the world after every sync round.
struct round_summary {
  std::uint64_t round = 0; ///< 1-based
  std::uint32_t best = 0;
  curve_point point;                 ///< this round's learning-curve point
  std::vector<replica_score> scores; ///< per replica
  double best_validation_accuracy = 0;
  double samples_per_second = 0;
  bool reached_target = false;
  double time_to_target = -1;
  double elapsed = 0; ///< seconds since training started, when the round ended
  bool synced = false; ///< the score is the synced model's (average, outer), not a replica's
  /// Round time per step so far (every finished step of every round).
  run_result::round_timing round_time;
};

/// What one recovery cost, for the operator and the metrics.
struct recovery_summary {
  std::vector<actor_key> lost;            ///< actors lost
  std::vector<std::uint32_t> rolled_back; ///< replicas rolled back to the last round
  std::uint64_t round = 0;                ///< the sync round they went back to
  std::uint64_t samples_redone = 0;
  bool redone_exact = true; ///< false: a lost worker's progress is unknown, the
                            ///< interval since the last round is counted
  double seconds = 0;       ///< from the first loss to training again
  std::size_t moved = 0;    ///< lost actors placed on live nodes
  std::size_t restarted = 0;
  std::size_t nodes_alive = 0;
};

/// The commands of the machine. The coordinator actor implements them by
/// sending messages; replies come back through the machine's on_* calls with
/// the step number the command carried.
class run_backend {
public:
  virtual ~run_backend() = default;
  /// Ask node `node` (index into the node list) to spawn actor `a`.
  virtual void spawn(std::uint64_t step, std::size_t node, const actor_key& a,
                     std::uint32_t incarnation) = 0;
  /// Connect actor `a` to its neighbours (the layout says which).
  virtual void wire(std::uint64_t step, const actor_key& a) = 0;
  /// Let replica r's shard worker feed until its next sync point.
  virtual void resume(std::uint32_t replica) = 0;
  /// Score replica r on part `part` of `parts` of the validation subset
  /// (one part: all of it).
  virtual void validate(std::uint64_t step, std::uint32_t replica, std::uint32_t part,
                        std::uint32_t parts) = 0;
  /// Have layer l's leader gather replica r's slices into one layer.
  virtual void collect(std::uint64_t step, std::uint32_t layer, std::uint32_t replica) = 0;
  /// Have layer l's leader compute the exchange (policy, best replica; for
  /// a policy with a state, the layer's weights after the last round and
  /// its state from then, else both empty).
  /// `moments`: the slices send their optimizer moments too (else the
  /// round's layer states hold none).
  virtual void exchange(std::uint64_t step, std::uint32_t layer, std::uint32_t best,
                        sync_policy policy, dense_params theta, policy_state state,
                        bool moments) = 0;
  /// Have layer l's leader hand replica r's slices a sync round's result
  /// (the whole layer's, which the leader cuts by columns).
  virtual void apply(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                     const round_payload& result) = 0;
  /// Have layer l's leader set replica r's slices to `state` (a rollback).
  virtual void restore(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                       const layer_state& state) = 0;
  /// Ask replica r's worker to stop feeding and say where it is.
  virtual void pause(std::uint64_t step, std::uint32_t replica) = 0;
  /// Move replica r's (new) worker to `position`.
  virtual void seek(std::uint64_t step, std::uint32_t replica, const worker_position& position) = 0;
  /// Stop actor `a` (a survivor of a rolled-back replica); forget its handle.
  virtual void stop(const actor_key& a) = 0;
  /// Node `node` left gracefully and hosts nothing now: it may go.
  virtual void release(std::size_t node) = 0;
  /// Call on_settled(step) after the settle time of a recovery.
  virtual void settle(std::uint64_t step) = 0;
  /// A recovery finished.
  virtual void recovered(const recovery_summary& r) = 0;
  /// Write a run checkpoint of `state` (every training.checkpoint_every rounds).
  virtual void save(std::shared_ptr<const run_state> state) = 0;
  /// Ask actor `a` for its counters.
  virtual void query_stats(std::uint64_t step, const actor_key& a) = 0;
  /// A sync round ended (progress output and metrics).
  virtual void round_done(const round_summary& r, bool print) = 0;
  /// A line for the operator.
  virtual void log(const std::string& line) = 0;
  /// Training started (every actor registered and wired): the stall
  /// watchdog starts watching.
  virtual void training_started() {}
  /// The run is over (ok or not): deliver it. Called exactly once.
  virtual void finished(run_result&& result) = 0;
  /// Stop every actor of the run.
  virtual void stop_all() = 0;
};

} // namespace nettorrent
