// The coordinator's run logic as a plain state machine: events in, commands
// out (the model is Zeek Broker's channel). No actors here: the coordinator
// actor turns messages into calls of the on_* functions and the machine's
// commands, issued through a run_backend, into messages. Tested without
// actors in tests/unit/test_run_machine.cpp.
//
//   registering --(every actor of the layout registered)--> wiring
//   wiring      --(every wire acknowledged)--> ready
//   ready       --(run requested)--> training
//   training    --(every replica at the barrier)--> sync round
//   sync round, in one of two orders (the policy's row, sync_policy.hpp):
//     score first (best, none):   scoring (validate every replica) ->
//               keeping_best (collect the best replica's layers, when
//               keep_best and it improved) -> stop? finishing :
//               exchanging (every leader; none: snapshotting) -> applying
//               -> training
//     synced (average, outer):    exchanging -> applying -> scoring (the
//               synced model, replica r on part r of R of the validation
//               subset, when validate_every picks the round; the kept best
//               pass is the round's state, nothing to collect) ->
//               stop? finishing : training
//   finishing:  collecting (final layers) -> statistics -> done
// The exchange reads first (leaders compute the post-exchange layers), the
// machine keeps that result as the rollback state, then applies it.
//
//   recovering (an actor or a node lost after training started):
//     settling (more losses merge in) -> pausing (live workers of the hit
//     replicas say where they are) -> respawning (every actor of a hit
//     replica, and lost leaders, on live nodes, at a new incarnation) ->
//     wiring (them and every leader) -> restoring (the hit replicas' layers
//     from the last sync round's state, their workers to that round's
//     position) -> back to training (or to applying an interrupted exchange).
//   A round interrupted before its result was kept is undone and run again
//   once the rolled-back replicas are back at its barrier. Replicas that lost
//   nothing keep their work. A loss during recovery restarts it (one
//   recovery). Errors other than losses (divergence, the registration
//   deadline, a loss before training) end the run: done with !ok.
//
// Each fan-out (spawn, wire, score, collect, exchange, statistics) has its
// own tracker and a step number; a reply carrying another step's number, or
// a second reply for the same slot, is ignored and counted (late_replies).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/outer.hpp"
#include "nettorrent/policy_state.hpp"
#include "nettorrent/sync_policy.hpp"
#include "nettorrent/run_checkpoint.hpp"
#include "nettorrent/run_layout.hpp"
#include "nettorrent/run_result.hpp"
#include "nettorrent/score_ledger.hpp"
#include "nettorrent/slice_ops.hpp"

namespace nettorrent {

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
  virtual void exchange(std::uint64_t step, std::uint32_t layer, std::uint32_t best,
                        sync_policy policy, dense_params theta, policy_state state) = 0;
  /// Have layer l's leader set replica r's slices to `state`.
  virtual void restore(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                       const layer_state& state) = 0;
  /// Ask replica r's worker to stop feeding and say where it is.
  virtual void pause(std::uint64_t step, std::uint32_t replica) = 0;
  /// Move replica r's (new) worker to `position`.
  virtual void seek(std::uint64_t step, std::uint32_t replica, const worker_position& position) = 0;
  /// Stop actor `a` (a survivor of a rolled-back replica); forget its handle.
  virtual void stop(const actor_key& a) = 0;
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

class run_machine {
public:
  enum class phase {
    registering,
    wiring,
    ready,
    training,
    sync_round,
    recovering,
    finishing,
    done
  };
  enum class round_step { none, scoring, keeping_best, exchanging, applying, snapshotting };
  enum class recovery_step { none, settling, pausing, respawning, wiring, restoring };

  /// `nodes` > 0 and `placement[i]` = node of layout actor i: the machine
  /// asks each node to spawn its actors when it joins. With no placement,
  /// actors register on their own. `clock` returns seconds (monotonic).
  run_machine(run_config cfg, run_backend& backend, std::function<double()> clock,
              bool verbose = true, std::vector<std::size_t> placement = {},
              std::vector<std::string> node_names = {});

  // Events.
  /// Node `node` was admitted: ask it for its actors.
  void on_node_joined(std::size_t node);
  /// A spawn finished (the actor registers on its own).
  void on_spawned(std::uint64_t step, const actor_key& a);
  /// Actor `a`, spawned at `incarnation`, registered. False if refused
  /// (unknown, duplicate, too late, an earlier incarnation).
  bool on_registered(const actor_key& a, std::uint32_t incarnation = 0);
  void on_registration_deadline();
  void on_run_requested();
  void on_wired(std::uint64_t step, const actor_key& a);
  void on_barrier(const barrier_report& b);
  void on_scored(std::uint64_t step, std::uint32_t replica, const replica_score& s);
  void on_collected(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                    layer_state&& ls);
  /// Layer `layer`'s exchange: the state every replica takes (one entry) or
  /// one per replica; the policy's new state of the layer (if it has one).
  void on_exchanged(std::uint64_t step, std::uint32_t layer, std::vector<layer_state>&& post,
                    policy_state&& state, std::uint64_t bytes);
  /// The same with one shared state and no policy state.
  void on_exchanged(std::uint64_t step, std::uint32_t layer, layer_state&& post,
                    std::uint64_t bytes);
  void on_restored(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                   std::uint64_t bytes);
  void on_paused(std::uint64_t step, std::uint32_t replica, const worker_position& p);
  void on_seeked(std::uint64_t step, std::uint32_t replica);
  void on_settled(std::uint64_t step);
  /// Node `node` was lost (its node actor went down): its actors with it.
  void on_node_lost(std::size_t node, const std::string& reason);
  /// A node that was lost joined again: it takes actors at the next
  /// re-placement.
  bool node_alive(std::size_t node) const { return node < alive_.size() && alive_[node]; }
  /// Node `node` joined the run at least once (it may have been lost since).
  bool node_ever_joined(std::size_t node) const {
    return node < node_joined_.size() && node_joined_[node];
  }
  /// Training began (the wiring is over); false while actors register.
  bool training_began() const noexcept {
    return phase_ != phase::registering && phase_ != phase::wiring && phase_ != phase::ready;
  }
  void on_stats(std::uint64_t step, const actor_key& a, const peer_counters& c);
  /// An actor went down or a request failed: the run ends with `what`.
  void on_failure(const std::string& what);
  /// Actor `a` went down (`reason` rendered).
  void on_lost(const actor_key& a, const std::string& reason);

  /// SIGINT / SIGTERM (`why` names it): the run ends after its next sync
  /// round (the one under way, if any), which is kept as the run state
  /// unless the policy's last round keeps none (best, none: the round
  /// before). Before training began, the run fails at once.
  void request_stop(const std::string& why);

  /// Continue from a run checkpoint's state (before the run starts): every
  /// replica is restored to it when training starts. A state of another
  /// replica count is fitted to this run's by change_replicas()
  /// (membership.hpp).
  void resume_from(const run_state& s);

  /// The stall watchdog saw no progress for system.stall_timeout. Actors
  /// (layout indices) in `silent` did not answer its status request and are
  /// treated as lost; with none silent, the replicas that hold work (not at
  /// the barrier; in a round or recovery: all) are rolled back like ones that
  /// lost an actor. The third stall without a round completed in between
  /// ends the run, naming what it waited for.
  void on_stalled(const std::vector<std::size_t>& silent, const std::string& waiting_for);
  /// Accepted events so far (barriers, replies): the watchdog's progress measure.
  std::uint64_t events() const noexcept { return events_; }
  /// Stalls the watchdog reported.
  std::uint64_t stalls() const noexcept { return stalls_; }
  /// What the run waits for now: phase, step, open fan-outs and their
  /// missing replies, replicas at the barrier, nodes alive. Several lines.
  std::string describe_state() const;

  /// The state of the last sync round, as a run checkpoint holds it.
  std::shared_ptr<const run_state> committed_state() const { return committed_; }

  /// placement.rebalance_on_rejoin: after the first round that follows a
  /// rejoin, actors go back to the nodes the plan gives them (default on).
  void set_rebalance_on_rejoin(bool on) noexcept { rebalance_on_rejoin_ = on; }

  // Queries.
  phase current_phase() const noexcept { return phase_; }
  round_step current_round_step() const noexcept { return round_step_; }
  recovery_step current_recovery_step() const noexcept { return recovery_step_; }
  std::uint32_t incarnation(std::size_t replica) const { return incarnation_.at(replica); }
  /// The node actor `a` lives on now.
  std::size_t node_of(const actor_key& a) const { return node_of_.at(layout_.index(a)); }
  bool failed() const noexcept { return !result_.ok; }
  bool run_requested() const noexcept { return run_requested_; }
  std::uint64_t late_replies() const noexcept { return result_.late_replies; }
  std::uint64_t ignored_registrations() const noexcept { return ignored_registrations_; }
  std::size_t registered() const noexcept { return registered_count_; }
  std::size_t expected() const noexcept { return layout_.size() - 1; }
  bool is_registered(const actor_key& a) const;
  const run_layout& layout() const noexcept { return layout_; }
  /// The run's result; its curve, best and target are filled in when it is
  /// delivered (scores() has them while the run goes on).
  const run_result& result() const noexcept { return result_; }
  const score_ledger& scores() const noexcept { return ledger_; }
  /// "2 of 8 actors did not register: ..." (at most 20 named).
  std::string missing_actors() const;

private:
  /// Counts a reply the current step does not expect.
  void late();
  /// The verdict on a reply for `slot` of fan-out `f` at `step` when the
  /// machine expects one (`open`); nullopt (counted as late) otherwise, and
  /// for a late or duplicate reply.
  std::optional<fanout::verdict> take(fanout& f, bool open, std::uint64_t step, std::size_t slot);
  void start_wiring();
  void maybe_start_training();
  void resume_all();
  void start_round();
  /// Every score of the round is in: book it, report it, keep the best pass.
  void scored();
  void report_round(const curve_point& p, bool synced);
  /// keep_best and an improved pass: keep its layers (synced: the snapshot;
  /// else collect the best replica's), then go on with the round.
  void keep_best_pass(bool synced);
  void after_keep_best();
  void start_exchange();
  void start_apply();
  void start_snapshot();
  /// Keeps the round's result as the rollback state (positions, round).
  void keep_round();
  /// Builds the run state of the kept round; writes it when a checkpoint is due.
  void publish_round();
  void commit_round(); ///< keep_round() and publish_round()
  /// The round's result is applied: training goes on, or (outer) the synced
  /// model is scored.
  void after_apply();
  /// Policies that score the synced model: "" if layer `layer`'s exchange
  /// result fits the model, gives every replica the same weights (one
  /// state, unless the policy keeps a state) and carries a fitting policy
  /// state, else what is wrong.
  std::string check_exchange(std::uint32_t layer, const std::vector<layer_state>& post,
                             const policy_state& state) const;
  void end_synced_round();
  void finish();
  // Recovery.
  void lose(const std::vector<std::size_t>& actors, const std::string& why);
  void plan_recovery();
  void start_respawn();
  void start_recovery_wiring();
  void start_restoring();
  void finish_recovery();
  std::size_t place(std::size_t actor) const;
  void start_stats();
  void deliver();
  void fail(const std::string& what);
  bool over() const noexcept { return phase_ == phase::done || !result_.ok; }
  double now() const { return clock_() - t0_; }
  /// Moves the round to `next`, adding the time spent in the current step
  /// to result_.round_time.
  void step_to(round_step next);
  void say(const std::string& line);

  run_config cfg_;
  run_layout layout_;
  run_backend& backend_;
  std::function<double()> clock_;
  bool verbose_;
  std::vector<std::size_t> placement_;
  std::vector<std::string> node_names_;
  std::vector<bool> node_joined_;

  phase phase_ = phase::registering;
  round_step round_step_ = round_step::none;
  double step_t0_ = 0;  ///< when round_step_ was entered
  double drain_t0_ = 0; ///< when this round's first barrier report arrived
  bool run_requested_ = false;
  bool delivered_ = false;
  std::uint64_t next_step_ = 1;
  std::vector<bool> registered_; ///< by layout index
  std::size_t registered_count_ = 0;
  std::uint64_t ignored_registrations_ = 0;

  fanout spawns_;
  std::vector<std::size_t> spawn_slot_; ///< layout index -> slot in spawns_ (per node)
  fanout wires_;
  fanout scores_;
  fanout collects_;
  fanout exchanges_;
  fanout applies_;
  fanout stats_;
  std::vector<actor_key> stats_keys_;

  // Training progress.
  double t0_ = 0;
  double last_progress_ = -1;
  std::vector<std::optional<barrier_report>> barriers_;
  std::size_t at_barrier_ = 0;
  std::vector<replica_score> replica_scores_;
  /// The curve, the best score, the target (result_'s copies are filled in
  /// when the run ends).
  score_ledger ledger_;
  bool all_finished_ = false;
  /// The last round ends the epochs off the sync grid: it is not committed
  /// as the run state, so that a resumed run keeps the grid of a straight one.
  bool final_off_grid_ = false;
  bool stop_requested_ = false; ///< request_stop: end after this round
  /// The round under way is the last: out of epochs, at the target, or asked to stop.
  bool ends_after_round() const noexcept { return stop_after_round_ || stop_requested_; }
  bool stop_after_round_ = false;
  bool improved_ = false;
  std::uint32_t best_ = 0;
  std::vector<layer_state> collect_into_;
  std::vector<layer_state> best_layers_;
  std::uint64_t best_samples_ = 0;
  std::uint64_t best_epoch_ = 0;
  bool collecting_final_ = false;
  run_result result_;

  // Rollback state: every replica's layers after the last sync round (one
  // shared vector when all replicas hold the same) and its worker's
  // position at that round.
  std::vector<std::shared_ptr<const std::vector<layer_state>>> snapshot_;
  std::vector<worker_position> positions_;
  std::vector<worker_position> round_positions_; ///< at this round's barrier
  std::uint64_t snapshot_round_ = 0;
  /// The replica count changed inside an epoch (an elastic resume): how
  /// that epoch is dealt, and the samples of replicas retired since.
  epoch_deal deal_;
  std::uint64_t retired_samples_ = 0;
  std::vector<layer_state> snapshot_layers_; ///< this round's collected layers (snapshotting)
  /// This round's exchange results, [layer] -> one shared state or one per replica.
  std::vector<std::vector<layer_state>> exchanged_;
  /// A policy with a state (outer): every layer's state after the last
  /// round, and this round's (kept with the round's result). Theta is the
  /// snapshot's weights, which every replica shares after such a round.
  std::vector<policy_state> policy_states_;
  std::vector<policy_state> policy_states_next_;
  const sync_policy_def& policy() const { return policy_def(cfg_.topology.policy); }
  bool keeps_policy_state() const {
    return policy().keeps_state && layout_.replicas() > 1;
  }
  /// The round exchanges first and then scores the synced model once (every
  /// replica holds the same weights after it), instead of scoring every
  /// replica to pick a winner first; replica r scores part r of R of the
  /// validation subset, so the pass runs on every replica's core.
  bool scores_synced() const {
    return layout_.replicas() > 1 && policy().scores_synced_model;
  }
  bool score_this_round_ = true; ///< scores_synced(): validate_every picks this round
  std::vector<std::uint32_t> incarnation_;
  std::vector<std::size_t> node_of_; ///< node of every layout actor now
  std::vector<bool> alive_;          ///< per node
  std::vector<bool> lost_;           ///< per layout actor, in the current recovery
  std::vector<bool> replaced_;       ///< per layout actor, respawned by the recovery
  std::vector<bool> rolled_back_;            ///< per replica, rolled back by the recovery

  /// What a round had done before it started, to undo an interrupted one.
  struct round_mark {
    std::uint64_t sync_rounds = 0;
    score_ledger::mark scores;
    std::uint64_t epochs = 0;
    std::uint64_t samples = 0;
    std::vector<layer_state> best_layers;
    std::uint64_t best_samples = 0;
    std::uint64_t best_epoch = 0;
    double last_progress = -1;
  } round_start_;
  bool rebalance_on_rejoin_ = true; ///< move actors back to a node that rejoined
  bool rebalance_pending_ = false;
  bool rebalancing_ = false; ///< the current "recovery" moves live actors back
  bool resuming_ = false;    ///< the current "recovery" restores a run checkpoint
  double resumed_elapsed_ = 0;
  std::shared_ptr<const run_state> committed_; ///< the last round's state
  void commit_state();
  bool best_moved_ = false;          ///< round_start_.best_layers holds the layers a collect replaced
  std::vector<bool> redone_counted_; ///< per replica, in the current recovery
  enum class after_recovery { train, apply } after_recovery_ = after_recovery::train;
  recovery_step recovery_step_ = recovery_step::none;
  fanout recovering_; ///< the current recovery step's replies
  std::uint64_t events_ = 0;             ///< accepted events (stall watchdog)
  std::uint64_t stalls_ = 0;             ///< stalls reported by the watchdog
  std::uint64_t stalls_since_round_ = 0; ///< ... since the last round was kept
  std::uint64_t settle_step_ = 0;
  recovery_summary recovery_;
  double recovery_t0_ = 0;
};

std::string_view to_string(run_machine::phase p) noexcept;

/// The progress line printed after a sync round: epoch, samples, samples/s,
/// loss, validation accuracy, round, elapsed, ETA. `total_samples` = training
/// samples of all epochs.
std::string progress_line(const round_summary& r, std::size_t max_epochs, double total_samples);

} // namespace nettorrent
