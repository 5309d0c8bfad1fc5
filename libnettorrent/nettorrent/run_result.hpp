// What every training run reports at the end, whatever ran it: the
// centralised trainer, the embedded actor run or a cluster. One type, so the
// outputs (evaluation, checkpoint, curve, plot, summary) are written once.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/run_support.hpp"

namespace nettorrent {

struct run_result {
  bool ok = true;
  std::string error;         ///< set when !ok
  bool actor_run = false;    ///< the actor pipeline ran (sync rounds, staleness apply)
  std::uint64_t samples = 0; ///< training samples over all replicas
  std::uint64_t epochs = 0;  ///< epochs started (the last may be partial)
  double seconds = 0;        ///< wall clock of training incl. validation
  double samples_per_second = 0;
  double best_validation_accuracy = 0;
  double time_to_target = -1; ///< seconds; -1 if the target was not reached
  bool reached_target = false;
  std::uint64_t sync_rounds = 0;
  std::uint64_t sync_bytes = 0;
  std::uint32_t best_replica = 0;
  /// The scores were the synced model's (sync_policy average, outer): no
  /// replica was best.
  bool synced_model = false;
  std::uint64_t max_staleness = 0;
  std::vector<std::uint64_t> staleness; ///< histogram over all slices
  std::uint64_t dropped = 0;            ///< malformed messages dropped by peers
  std::uint64_t stale_dropped = 0;      ///< messages of another incarnation dropped
  std::uint64_t late_replies = 0;       ///< replies of an earlier step the coordinator ignored
  std::vector<curve_point> curve;

  /// Where the sync rounds' time went (actor runs), seconds summed over
  /// every round: replicas waiting at the barrier for the last one
  /// (draining), scoring them on validation data, collecting the best
  /// replica (keep_best), computing the exchange, applying it, and
  /// collecting every replica's layers under policy none (snapshotting).
  struct round_timing {
    /// The parts, in this order everywhere (summary, metrics labels). The
    /// run machine's round steps scoring..snapshotting share these values.
    enum part : std::size_t {
      draining,
      scoring,
      keeping_best,
      exchanging,
      applying,
      snapshotting,
      parts
    };
    std::array<double, parts> seconds{};

    /// "draining", "scoring", "keeping_best", ... (the metrics' step label).
    static const char* name(std::size_t p) {
      static constexpr const char* names[parts] = {"draining",   "scoring",  "keeping_best",
                                                   "exchanging", "applying", "snapshotting"};
      return names[p];
    }
    double total() const {
      double sum = 0;
      for (double s : seconds)
        sum += s;
      return sum;
    }
  };
  round_timing round_time;

  // What failures cost (actor runs).
  std::uint64_t recoveries = 0;     ///< recoveries from lost actors or nodes
  double recovery_seconds = 0;      ///< from the first loss to training again, summed
  std::uint64_t samples_redone = 0; ///< training samples trained again after rollbacks
  std::uint64_t replicas_rolled_back = 0;
  std::uint64_t actors_moved = 0;     ///< lost actors spawned again (on a live node)
  std::uint64_t actors_restarted = 0; ///< surviving actors of rolled-back replicas respawned
  std::uint64_t nodes_left = 0;       ///< nodes that left gracefully, their actors moved

  /// The model to save and evaluate, with the moment it was taken (with
  /// keep_best: the best validation pass, not the end of the run).
  std::vector<layer_state> layers;
  bool kept_best = false;
  std::uint64_t saved_samples = 0;
  std::uint64_t saved_epoch = 0;
  /// Data-order generator at that moment (the centralised trainer's; actor
  /// runs have one per shard and leave it unset).
  bool has_saved_rng = false;
  std::array<std::uint64_t, 4> saved_rng{};

  // Filled by the outputs step.
  evaluation test;
  std::string checkpoint_path;
  std::string curve_path;
  std::string run_checkpoint_path; ///< the last run checkpoint written ("" = none)
  /// Actor runs: the state of the last sync round (what a run checkpoint at
  /// the end holds; resuming from it replays the last interval). In-process
  /// only: not serialised.
  std::shared_ptr<const struct run_state> end_state;
};

} // namespace nettorrent
