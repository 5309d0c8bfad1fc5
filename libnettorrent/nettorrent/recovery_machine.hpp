// Recovery, a sub-machine of the run machine (run_machine.hpp): an actor or
// a node lost after training started.
//   settling (more losses merge in) -> pausing (live workers of the hit
//   replicas say where they are) -> respawning (every actor of a hit
//   replica, and lost leaders, on live nodes, at a new incarnation) ->
//   wiring (them and every leader) -> restoring (the hit replicas' layers
//   from the last sync round's state, their workers to that round's
//   position) -> back to training (or to applying an interrupted exchange).
// A round interrupted before its result was kept is undone and run again
// once the rolled-back replicas are back at its barrier. Replicas that lost
// nothing keep their work. A loss during recovery restarts it (one
// recovery). The same steps restore a run checkpoint at the start of a
// resumed run (restoring only) and move actors back to a node that rejoined
// (a rebalance). Owns its fan-out; the shared state is run_core's. Tested
// through the run machine in tests/unit/test_recovery_machine.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nettorrent/run_core.hpp"

namespace nettorrent {

class run_machine;
class round_machine;

class recovery_machine {
public:
  enum class step { none, settling, pausing, respawning, wiring, restoring };

  recovery_machine(run_core& core, run_machine& router, round_machine& round);

  /// Layout actors `actors` are lost (`why`): start a recovery, or merge
  /// them into the one under way.
  void lose(const std::vector<std::size_t>& actors, const std::string& why);
  /// Live actors `actors` go back to their planned nodes (a rebalance).
  void rebalance(const std::vector<std::size_t>& actors);
  /// A resumed run: put every replica where the run checkpoint left it.
  void restore_checkpoint();

  void on_settled(std::uint64_t step);
  void on_paused(std::uint64_t step, std::uint32_t replica, const worker_position& p);
  void on_spawned(std::uint64_t step, std::size_t actor);
  void on_wired(std::uint64_t step, std::size_t actor);
  void on_restored(std::uint64_t step, std::uint32_t layer, std::uint32_t replica);
  void on_seeked(std::uint64_t step, std::uint32_t replica);

  step current() const noexcept { return step_; }
  /// Actor `actor` is respawned by this recovery (its registration is due).
  bool replaces(std::size_t actor) const { return replaced_.at(actor); }
  /// Replica r is rolled back by this recovery (its barrier report is due
  /// after the restore).
  bool rolls_back(std::size_t replica) const { return rolled_back_.at(replica); }
  /// "  waiting for ..." lines for its open fan-out.
  void describe(std::string& out) const;

private:
  /// The actors to respawn elsewhere, for a loss or a move (rebalancing_).
  void move(const std::vector<std::size_t>& actors, const std::string& why);
  /// Begins a recovery: the round under way is undone or kept for applying.
  void begin();
  void plan();
  /// Marks the replicas that lost an actor and the actors to respawn, and
  /// places the lost ones; false (the run failed) if no node is left.
  bool place_lost(std::vector<std::string>& moved);
  /// "coordinator: recovery: replica 1 goes back to sync round 3; ..."
  std::string plan_line(const std::vector<std::string>& moved) const;
  void start_pausing();
  /// Counts the samples replica r redoes (its worker said where it was, or
  /// is lost: the interval since the last round, at most).
  void count_redone(std::size_t r, const worker_position* at);
  void start_respawn();
  void start_wiring();
  void start_restoring();
  void finish();
  /// The recovery's counts into the result, and the operator's line.
  void book();
  /// The rolled-back replicas train again.
  void resume_hit(const std::vector<bool>& hit);
  void clear();

  run_core& c_;
  run_machine& m_;
  round_machine& round_;
  step step_ = step::none;
  fanout replies_; ///< the current step's replies
  std::uint64_t settle_step_ = 0;
  std::vector<bool> lost_;          ///< per layout actor, in this recovery
  std::vector<bool> replaced_;      ///< per layout actor, respawned by this recovery
  std::vector<bool> rolled_back_;   ///< per replica, rolled back by this recovery
  std::vector<bool> redone_counted_; ///< per replica
  bool rebalancing_ = false; ///< this "recovery" moves live actors back
  bool apply_after_ = false; ///< the interrupted round's result is applied next
  recovery_summary summary_;
  double t0_ = 0;
};

} // namespace nettorrent
