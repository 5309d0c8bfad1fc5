// The coordinator's run logic as a plain state machine: events in, commands
// out (the model is Zeek Broker's channel). No actors here: the coordinator
// actor turns messages into calls of the on_* functions and the machine's
// commands, issued through a run_backend, into messages. The machine is a
// router over sub-machines that share one run_core (run_core.hpp has the
// picture):
//
//   registering --(every actor of the layout registered)--> wiring
//   wiring      --(every wire acknowledged)--> ready
//   ready       --(run requested)--> training (a resumed run: recovering,
//                                    restoring the run checkpoint first)
//   training    --(every replica at the barrier)--> sync round
//                                    (round_machine.hpp)
//   any phase after ready --(an actor or node lost, a stall)--> recovering
//                                    (recovery_machine.hpp)
//   finishing:  collecting (final layers) -> statistics -> done
//   Errors other than losses (divergence, the registration deadline, a
//   loss before training) end the run: done with !ok.
//
// Each fan-out (spawn, wire, score, collect, exchange, statistics) has its
// own tracker and a step number; a reply carrying another step's number, or
// a second reply for the same slot, is ignored and counted (late_replies).
// Tested without actors: tests/unit/test_run_machine.cpp (the router),
// test_round_machine.cpp and test_recovery_machine.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nettorrent/recovery_machine.hpp"
#include "nettorrent/round_machine.hpp"
#include "nettorrent/run_core.hpp"

namespace nettorrent {

class run_machine {
public:
  using phase = run_phase;
  using round_step = round_machine::step;
  using recovery_step = recovery_machine::step;

  /// `nodes` > 0 and `placement[i]` = node of layout actor i: the machine
  /// asks each node to spawn its actors when it joins. With no placement,
  /// actors register on their own. `clock` returns seconds (monotonic).
  run_machine(run_config cfg, run_backend& backend, std::function<double()> clock,
              bool verbose = true, std::vector<std::size_t> placement = {},
              std::vector<std::string> node_names = {});

  /// Placement "auto" in a cluster: spawn nothing until place() gives the
  /// placement planned on every node's start-up figures. Before any node
  /// joins.
  void hold_placement();
  bool placement_held() const noexcept { return placement_held_; }
  /// The held placement (node of every layout actor): asks every node that
  /// joined already for its actors. Throws nettorrent::error unless held,
  /// or if it does not cover the layout.
  void place(std::vector<std::size_t> placement);

  // Events.
  /// Node `node` was admitted: ask it for its actors (once placed).
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
  /// `update`: under a sync precision other than f32, the new weights as
  /// the change every slice applies.
  void on_exchanged(std::uint64_t step, std::uint32_t layer, std::vector<layer_state>&& post,
                    policy_state&& state, std::uint64_t bytes, coded_params&& update = {});
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
  bool node_alive(std::size_t node) const { return node < core_.alive.size() && core_.alive[node]; }
  /// Nodes alive, as the coordinator sees them.
  std::size_t nodes_alive() const { return core_.nodes_alive(); }
  /// Node `node` joined the run at least once (it may have been lost since).
  bool node_ever_joined(std::size_t node) const {
    return node < core_.node_joined.size() && core_.node_joined[node];
  }
  /// Training began (the wiring is over); false while actors register.
  bool training_began() const noexcept {
    return core_.phase != phase::registering && core_.phase != phase::wiring
           && core_.phase != phase::ready;
  }
  void on_stats(std::uint64_t step, const actor_key& a, const peer_counters& c);
  /// An actor went down or a request failed: the run ends with `what`.
  void on_failure(const std::string& what);
  /// Actor `a` went down (`reason` rendered).
  void on_lost(const actor_key& a, const std::string& reason);

  /// Node `node` asks to leave gracefully (SIGTERM to it): at the end of the
  /// next sync round (which reads the moments) its actors move to other
  /// nodes, restored to that round's state, so nothing is redone; then the
  /// backend releases it. Returns why it cannot ("" = accepted): the
  /// coordinator's node, before training, no other node left.
  std::string on_leave_requested(std::size_t node);
  /// Releases every leaving node that hosts nothing any more (after its
  /// actors moved).
  void release_leavers();

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
  std::uint64_t events() const noexcept { return core_.events; }
  /// Stalls the watchdog reported.
  std::uint64_t stalls() const noexcept { return core_.stalls; }
  /// What the run waits for now: phase, step, open fan-outs and their
  /// missing replies, replicas at the barrier, nodes alive. Several lines.
  std::string describe_state() const;

  /// The state of the last sync round, as a run checkpoint holds it.
  std::shared_ptr<const run_state> committed_state() const { return core_.committed; }

  /// placement.rebalance_on_rejoin: after the first round that follows a
  /// rejoin, actors go back to the nodes the plan gives them (default on).
  void set_rebalance_on_rejoin(bool on) noexcept { core_.rebalance_on_rejoin = on; }

  // Queries.
  phase current_phase() const noexcept { return core_.phase; }
  round_step current_round_step() const noexcept { return round_.current(); }
  recovery_step current_recovery_step() const noexcept { return recovery_.current(); }
  std::uint32_t incarnation(std::size_t replica) const { return core_.incarnation.at(replica); }
  /// The node actor `a` lives on now.
  std::size_t node_of(const actor_key& a) const {
    return core_.node_of.at(core_.layout.index(a));
  }
  bool failed() const noexcept { return !core_.result.ok; }
  bool run_requested() const noexcept { return core_.run_requested; }
  std::uint64_t late_replies() const noexcept { return core_.result.late_replies; }
  std::uint64_t ignored_registrations() const noexcept { return ignored_registrations_; }
  std::size_t registered() const noexcept { return core_.registered_count; }
  std::size_t expected() const noexcept { return core_.layout.size() - 1; }
  bool is_registered(const actor_key& a) const;
  const run_layout& layout() const noexcept { return core_.layout; }
  /// The run's result; its curve, best and target are filled in when it is
  /// delivered (scores() has them while the run goes on).
  const run_result& result() const noexcept { return core_.result; }
  const score_ledger& scores() const noexcept { return core_.ledger; }
  /// "2 of 8 actors did not register: ..." (at most 20 named).
  std::string missing_actors() const;

private:
  friend class round_machine;
  friend class recovery_machine;

  /// A resumed run's sync policy state: checked against the policy's row.
  void resume_policy_state(const run_state& st);
  void start_wiring();
  void maybe_start_training();
  /// After a round (or a recovery): every replica trains on to its next
  /// barrier; actors go back to a node that rejoined first.
  void resume_all();
  /// The last replica reached the barrier: the draining ends, the round begins.
  void barrier_complete();
  /// Before training: the loss fails the run; while the statistics are
  /// gathered it only takes the lost actors' counters; else it recovers.
  void lose(const std::vector<std::size_t>& actors, const std::string& why);
  void finish();
  /// The best replica's layers; `every_replica`: every replica's, for a
  /// synced run whose last round read no moments (topology.round_moments =
  /// false).
  void start_final_collect(bool every_replica = false);
  /// The final collect of every replica is in: the saved model and, when it
  /// is the last round's, the end state get the moments the round left.
  void complete_moments(std::vector<layer_state>&& all);
  void start_stats();
  void deliver();
  void fail(const std::string& what);

  run_core core_;
  round_machine round_{core_, *this};
  recovery_machine recovery_{core_, *this, round_};

  std::uint64_t ignored_registrations_ = 0;
  fanout spawns_;
  std::vector<std::size_t> spawn_slot_; ///< layout index -> slot in spawns_ (per node)
  fanout wires_;
  fanout finals_; ///< the final collect of the best (or every) replica's layers
  std::vector<layer_state> final_layers_; ///< [replica * layers + layer]
  bool finals_every_replica_ = false;
  bool placement_held_ = false;
  fanout stats_;
  std::vector<actor_key> stats_keys_;
};


/// The progress line printed after a sync round: epoch, samples, samples/s,
/// loss, validation accuracy, round, elapsed, ETA. `total_samples` = training
/// samples of all epochs.
std::string progress_line(const round_summary& r, std::size_t max_epochs, double total_samples);

} // namespace nettorrent
