// The state the coordinator's sub-machines share (run_machine.hpp is the
// router over them): the run's configuration and layout, where every actor
// and node stands, the replicas at the barrier, the kept round (the
// rollback state), the score ledger and the result. Plain C++, no actors.
//
//   run_machine (router: registration, wiring, training, finishing)
//     |-- round_machine    (round_machine.hpp: drain -> score or exchange
//     |                     -> apply -> resume)
//     |-- recovery_machine (recovery_machine.hpp: settle -> pause ->
//     |                     respawn -> wire -> restore)
//     `-- membership       (membership.hpp: a kept round fitted to another
//                           replica count)
//   all of them read and write one run_core.
#pragma once

#include <algorithm>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/policy_state.hpp"
#include "nettorrent/run_backend.hpp"
#include "nettorrent/run_checkpoint.hpp"
#include "nettorrent/run_layout.hpp"
#include "nettorrent/run_result.hpp"
#include "nettorrent/score_ledger.hpp"
#include "nettorrent/sync_policy.hpp"

namespace nettorrent {

enum class run_phase {
  registering,
  wiring,
  ready,
  training,
  sync_round,
  recovering,
  finishing,
  done
};
std::string_view to_string(run_phase p) noexcept;

/// Fan-out bookkeeping: `n` expected replies, each slot counted once, under
/// one step number.
class fanout {
public:
  enum class verdict { counted, complete, late, duplicate };

  void start(std::uint64_t step, std::size_t n);
  /// Records the reply for `slot` of step `step`.
  verdict reply(std::uint64_t step, std::size_t slot);
  bool active() const noexcept { return active_; }
  std::uint64_t step() const noexcept { return step_; }
  std::size_t missing() const noexcept { return got_.size() - count_; }

private:
  std::uint64_t step_ = 0;
  std::vector<bool> got_;
  std::size_t count_ = 0;
  bool active_ = false;
};

/// Appends "  waiting for 2 score replies (step 7)\n" to `out` if `f` waits
/// for replies.
void describe_waiting(std::string& out, const char* name, const fanout& f);

/// A slot no fan-out has: a reply for it is late.
inline constexpr std::size_t no_slot = std::numeric_limits<std::size_t>::max();

struct run_core {
  run_core(run_config cfg, run_backend& backend, std::function<double()> clock, bool verbose,
           std::vector<std::size_t> placement, std::vector<std::string> node_names);

  run_config cfg;
  run_layout layout;
  run_backend& backend;
  std::function<double()> clock;
  bool verbose = true;
  std::vector<std::size_t> placement; ///< planned node of every layout actor (empty: none)
  std::vector<std::string> node_names;

  run_phase phase = run_phase::registering;
  std::uint64_t next_step = 1;
  run_result result;
  score_ledger ledger; ///< the curve, the best, the target (into result at the end)
  double t0 = 0;       ///< when training started (less the resumed run's seconds)
  double last_progress = -1;

  // Actors and nodes.
  std::vector<bool> registered; ///< by layout index
  std::size_t registered_count = 0;
  std::vector<std::uint32_t> incarnation; ///< per replica
  std::vector<std::size_t> node_of;       ///< node of every layout actor now
  std::vector<bool> alive;                ///< per node
  std::vector<bool> node_joined;          ///< per node: joined at least once

  // Replicas at the barrier.
  std::vector<std::optional<barrier_report>> barriers;
  std::size_t at_barrier = 0;
  double drain_t0 = 0; ///< when this round's first barrier report arrived

  // The kept round (the rollback state): every replica's layers after the
  // last sync round (one shared vector when all replicas hold the same),
  // its worker's position then, and the policy's state of every layer.
  std::vector<std::shared_ptr<const std::vector<layer_state>>> snapshot;
  std::vector<worker_position> positions;
  std::uint64_t snapshot_round = 0;
  std::vector<policy_state> policy_states;
  /// The replica count changed inside an epoch (an elastic resume): how
  /// that epoch is dealt, and the samples of replicas retired since.
  epoch_deal deal;
  std::uint64_t retired_samples = 0;
  /// keep_best: the best pass so far and when it was taken.
  std::vector<layer_state> best_layers;
  std::uint64_t best_samples = 0;
  std::uint64_t best_epoch = 0;
  std::shared_ptr<const run_state> committed; ///< the kept round as a run state

  // Requests and modes.
  bool run_requested = false;
  bool delivered = false;
  bool stop_requested = false; ///< request_stop: end after this round
  bool resuming = false;       ///< the first "recovery" restores a run checkpoint
  double resumed_elapsed = 0;
  bool rebalance_on_rejoin = true; ///< move actors back to a node that rejoined
  bool rebalance_pending = false;
  /// Per node: asked to leave; its actors move at the next kept round, and
  /// it takes none meanwhile (place()).
  std::vector<bool> leaving;
  /// Live actors move at the end of the next round (a leave, or a rebalance
  /// after a rejoin): the round reads the moments, so nothing is lost.
  bool moves_pending() const {
    return std::find(leaving.begin(), leaving.end(), true) != leaving.end()
           || (rebalance_pending && rebalance_on_rejoin);
  }

  // The stall watchdog's measures.
  std::uint64_t events = 0;             ///< accepted events
  std::uint64_t stalls = 0;             ///< stalls reported
  std::uint64_t stalls_since_round = 0; ///< ... since the last round was kept

  double now() const { return clock() - t0; }
  bool over() const noexcept { return phase == run_phase::done || !result.ok; }
  std::uint64_t new_step() { return next_step++; }
  void say(const std::string& line) const;
  /// Counts a reply the current step does not expect.
  void late() { ++result.late_replies; }
  /// The verdict on a reply for `slot` of fan-out `f` at `step` when the
  /// machine expects one (`open`); nullopt (counted as late) otherwise, and
  /// for a late or duplicate reply.
  std::optional<fanout::verdict> take(fanout& f, bool open, std::uint64_t step, std::size_t slot);

  const sync_policy_def& policy() const { return policy_def(cfg.topology.policy); }
  bool keeps_policy_state() const { return policy().keeps_state && layout.replicas() > 1; }
  /// The round exchanges first and then scores the synced model once (every
  /// replica holds the same weights after it), instead of scoring every
  /// replica to pick a winner first; replica r scores part r of R of the
  /// validation subset, so the pass runs on every replica's core.
  bool scores_synced() const { return layout.replicas() > 1 && policy().scores_synced_model; }

  /// The node actor `actor` goes to: a pure function of the plan and the
  /// live nodes that are not leaving (its planned node while that is one,
  /// else the one at planned index mod their count); alive.size() if none
  /// is left.
  std::size_t place(std::size_t actor) const;
  /// How many layout actors live on node `node` now.
  std::size_t hosted_on(std::size_t node) const {
    return static_cast<std::size_t>(std::count(node_of.begin() + 1, node_of.end(), node));
  }
  /// Nodes alive, as the coordinator sees them.
  std::size_t nodes_alive() const {
    return static_cast<std::size_t>(std::count(alive.begin(), alive.end(), true));
  }
  /// Builds `committed` from the kept round.
  void commit_state();
  /// The kept round's state as a run checkpoint holds it, committed; a
  /// checkpoint is written when training.checkpoint_every says so.
  void publish_round();
  /// The worker position to seek replica r to (with the epoch's deal).
  worker_position seek_position(std::size_t r) const;
};

} // namespace nettorrent
