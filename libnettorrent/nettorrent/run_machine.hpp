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
//   sync round: scoring (validate every replica) -> keeping_best (collect the
//               best replica's layers, when keep_best and it improved) ->
//               stop? finishing : exchanging (every leader) -> training
//   finishing:  collecting (final layers) -> statistics -> done
// Any error (a lost actor, an error reply, divergence, the registration
// deadline) ends the run: done with !ok. There is room for a `recovering`
// phase between training and sync round (next issue).
//
// Each fan-out (spawn, wire, score, collect, exchange, statistics) has its
// own tracker and a step number; a reply carrying another step's number, or
// a second reply for the same slot, is ignored and counted (late_replies).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/run_layout.hpp"
#include "nettorrent/run_result.hpp"
#include "nettorrent/slice_ops.hpp"

namespace nettorrent {

/// What a shard worker reports when it reaches a barrier.
struct barrier_report {
  std::uint32_t replica = 0;
  bool finished = false;     ///< no more epochs to run
  std::uint64_t samples = 0; ///< training samples so far
  std::uint64_t epoch = 0;   ///< 1-based epoch in progress
  double loss_sum = 0;       ///< training loss summed since the last barrier
  std::uint64_t loss_samples = 0;
  bool diverged = false; ///< a training loss was not finite: the run must stop
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
  /// Score replica r on the validation subset.
  virtual void validate(std::uint64_t step, std::uint32_t replica) = 0;
  /// Have layer l's leader gather replica r's slices into one layer.
  virtual void collect(std::uint64_t step, std::uint32_t layer, std::uint32_t replica) = 0;
  /// Have layer l's leader run the exchange (policy, best replica).
  virtual void exchange(std::uint64_t step, std::uint32_t layer, std::uint32_t best,
                        sync_policy policy) = 0;
  /// Ask actor `a` for its counters.
  virtual void query_stats(std::uint64_t step, const actor_key& a) = 0;
  /// A sync round ended (progress output and metrics).
  virtual void round_done(const round_summary& r, bool print) = 0;
  /// A line for the operator.
  virtual void log(const std::string& line) = 0;
  /// The run is over (ok or not): deliver it. Called exactly once.
  virtual void finished(run_result&& result) = 0;
  /// Stop every actor of the run.
  virtual void stop_all() = 0;
};

class run_machine {
public:
  enum class phase { registering, wiring, ready, training, sync_round, finishing, done };
  enum class round_step { none, scoring, keeping_best, exchanging };

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
  /// Actor `a` registered. False if refused (unknown, duplicate, too late).
  bool on_registered(const actor_key& a);
  void on_registration_deadline();
  void on_run_requested();
  void on_wired(std::uint64_t step, const actor_key& a);
  void on_barrier(const barrier_report& b);
  void on_scored(std::uint64_t step, std::uint32_t replica, const replica_score& s);
  void on_collected(std::uint64_t step, std::uint32_t layer, layer_state&& ls);
  void on_exchanged(std::uint64_t step, std::uint32_t layer, std::uint64_t bytes);
  void on_stats(std::uint64_t step, const actor_key& a, const peer_counters& c);
  /// An actor went down or a request failed: the run ends with `what`.
  void on_failure(const std::string& what);
  /// Actor `a` went down (`reason` rendered).
  void on_lost(const actor_key& a, const std::string& reason);

  // Queries.
  phase current_phase() const noexcept { return phase_; }
  round_step current_round_step() const noexcept { return round_step_; }
  bool failed() const noexcept { return !result_.ok; }
  bool run_requested() const noexcept { return run_requested_; }
  std::uint64_t late_replies() const noexcept { return result_.late_replies; }
  std::uint64_t ignored_registrations() const noexcept { return ignored_registrations_; }
  std::size_t registered() const noexcept { return registered_count_; }
  std::size_t expected() const noexcept { return layout_.size() - 1; }
  bool is_registered(const actor_key& a) const;
  const run_layout& layout() const noexcept { return layout_; }
  const run_result& result() const noexcept { return result_; }
  /// "2 of 8 actors did not register: ..." (at most 20 named).
  std::string missing_actors() const;

private:
  /// Counts a reply the current step does not expect.
  void late();
  void start_wiring();
  void maybe_start_training();
  void resume_all();
  void start_round();
  void scored();
  void after_keep_best();
  void start_exchange();
  void finish();
  void start_stats();
  void deliver();
  void fail(const std::string& what);
  bool over() const noexcept { return phase_ == phase::done || !result_.ok; }
  double now() const { return clock_() - t0_; }
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
  fanout stats_;
  std::vector<actor_key> stats_keys_;

  // Training progress.
  double t0_ = 0;
  double last_progress_ = -1;
  std::vector<std::optional<barrier_report>> barriers_;
  std::size_t at_barrier_ = 0;
  std::vector<replica_score> scores_v_;
  double loss_sum_ = 0;
  std::uint64_t loss_samples_ = 0;
  bool all_finished_ = false;
  bool stop_after_round_ = false;
  bool improved_ = false;
  std::uint32_t best_ = 0;
  std::vector<layer_state> collect_into_;
  std::vector<layer_state> best_layers_;
  std::uint64_t best_samples_ = 0;
  std::uint64_t best_epoch_ = 0;
  bool collecting_final_ = false;
  run_result result_;
};

std::string_view to_string(run_machine::phase p) noexcept;

/// The progress line printed after a sync round: epoch, samples, samples/s,
/// loss, validation accuracy, round, elapsed, ETA. `total_samples` = training
/// samples of all epochs.
std::string progress_line(const round_summary& r, std::size_t max_epochs, double total_samples);

} // namespace nettorrent
