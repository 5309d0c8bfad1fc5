// The sync round, a sub-machine of the run machine (run_machine.hpp): once
// every replica is at the barrier, in one of two orders (the policy's row,
// sync_policy.hpp):
//   score first (best, none):   scoring (validate every replica) ->
//             keeping_best (collect the best replica's layers, when
//             keep_best and it improved) -> stop? finish :
//             exchanging (every leader; none: snapshotting) -> applying
//             -> training
//   synced (average, outer):    exchanging -> applying -> scoring (the
//             synced model, replica r on part r of R of the validation
//             subset, when validate_every picks the round; the kept best
//             pass is the round's state, nothing to collect) ->
//             stop? finish : training
// The exchange reads first (leaders compute the post-exchange layers), the
// machine keeps that result as the rollback state, then applies it.
// topology.validate_every > 1 skips the scoring of the rounds in between.
// The round owns its fan-outs (score, collect, exchange, apply); the shared
// state is run_core's. Tested through the run machine in
// tests/unit/test_round_machine.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nettorrent/run_core.hpp"
#include "nettorrent/sync_codec.hpp"

namespace nettorrent {

class run_machine;

class round_machine {
public:
  enum class step { none, scoring, keeping_best, exchanging, applying, snapshotting };

  round_machine(run_core& core, run_machine& router) : c_(core), m_(router) {}

  /// Every replica is at the barrier: the round begins.
  void start();
  void on_scored(std::uint64_t step, std::uint32_t replica, const replica_score& s);
  /// A collect for keeping_best or snapshotting; false if the round asked
  /// for none (the router's final collect may be the one).
  bool on_collected(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                    layer_state&& ls);
  /// `update`: under a sync precision other than f32, the layer's new
  /// weights as the change every slice applies.
  void on_exchanged(std::uint64_t step, std::uint32_t layer, std::vector<layer_state>&& post,
                    policy_state&& state, std::uint64_t bytes, coded_params&& update = {});
  void on_applied(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                  std::uint64_t bytes);
  /// Apply the kept round's result to every replica (also after a recovery
  /// that interrupted the applying: then as the weights themselves, since
  /// some slices hold the result already and a change applies only once).
  void start_apply();

  /// A loss interrupted the round: true if its result is kept already (it
  /// is being applied, or the synced model scored), so the recovery goes on
  /// applying it; else the round is undone (undo()) and runs again.
  bool result_kept() const noexcept;
  /// The current (or last) round read every replica's optimizer moments.
  bool read_moments() const noexcept { return read_moments_; }
  /// Undoes the round under way: counts, scores and the best pass go back
  /// to where they were when it started.
  void undo();
  /// Moves to `next`, adding the time spent in the current step to the
  /// result's round timing.
  void step_to(step next);

  step current() const noexcept { return step_; }
  /// The round under way is the last: out of epochs, at the target, or
  /// asked to stop.
  bool ends_after_round() const noexcept { return stop_after_round_ || c_.stop_requested; }
  std::uint32_t best() const noexcept { return best_; }
  /// "  waiting for 2 score replies (step 7)" lines for its open fan-outs.
  void describe(std::string& out) const;

private:
  /// Every score of the round is in: book it, report it, keep the best pass.
  void scored();
  void report_round(const curve_point& p, bool synced);
  /// keep_best and an improved pass: keep its layers (synced: the snapshot;
  /// else collect the best replica's), then go on with the round.
  void keep_best_pass(bool synced);
  void start_scoring(std::uint32_t parts);
  void after_keep_best();
  void start_exchange();
  void start_snapshot();
  /// The exchange's results are all in: keep them as the rollback state.
  void keep_exchanged();
  /// Keeps the round's result as the rollback state (positions, round).
  void keep_round();
  void commit_round(); ///< keep_round() and publish
  /// The round's result is applied: training goes on, or the synced model
  /// is scored.
  void after_apply();
  /// Policies that score the synced model: "" if layer `layer`'s exchange
  /// result fits the model, gives every replica the same weights (one
  /// state, unless the policy keeps a state) and carries a fitting policy
  /// state, else what is wrong.
  std::string check_exchange(std::uint32_t layer, const std::vector<layer_state>& post,
                             const policy_state& state) const;
  void end_synced_round();

  run_core& c_;
  run_machine& m_;
  step step_ = step::none;
  double step_t0_ = 0; ///< when step_ was entered

  fanout scores_;
  fanout collects_;
  fanout exchanges_;
  fanout applies_;

  std::vector<worker_position> round_positions_; ///< at this round's barrier
  std::vector<replica_score> replica_scores_;
  bool all_finished_ = false;
  /// The last round ends the epochs off the sync grid: it is not committed
  /// as the run state, so that a resumed run keeps the grid of a straight one.
  bool final_off_grid_ = false;
  /// The round's read brings the replicas' optimizer moments (always, unless
  /// topology.round_moments = false).
  bool read_moments_ = true;
  bool stop_after_round_ = false;
  bool improved_ = false;
  std::uint32_t best_ = 0;
  bool score_this_round_ = true; ///< synced scoring: validate_every picks this round
  std::vector<layer_state> collect_into_;    ///< keeping_best: the best replica's layers
  std::vector<layer_state> snapshot_layers_; ///< snapshotting: every replica's layers
  /// This round's exchange results, [layer] -> one shared state or one per replica.
  std::vector<std::vector<layer_state>> exchanged_;
  std::vector<policy_state> policy_states_next_; ///< kept with the round's result
  /// Per layer, the round's coded change (sync precision other than f32),
  /// until the first apply sends it.
  std::vector<coded_params> updates_;

  /// What a round had done before it started, to undo an interrupted one.
  struct round_mark {
    std::uint64_t sync_rounds = 0;
    score_ledger::mark scores;
    std::uint64_t epochs = 0;
    std::uint64_t samples = 0;
    std::vector<layer_state> best_layers; ///< when best_moved
    std::uint64_t best_samples = 0;
    std::uint64_t best_epoch = 0;
    double last_progress = -1;
  } round_start_;
  bool best_moved_ = false; ///< round_start_.best_layers holds the layers a collect replaced
};

} // namespace nettorrent
