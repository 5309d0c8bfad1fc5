// The score ledger: what a run books for each validation pass, in one place
// for the centralised trainer and the round machine. It holds the learning
// curve, the best validation accuracy, whether and when the target was
// reached, and the training loss since the last pass. It says whether a pass
// improved on the best (keep_best keeps that pass's layers; the caller holds
// them) and whether the pass meets the target. Plain C++
// (tests/unit/test_score_ledger.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "nettorrent/run_support.hpp"

namespace nettorrent {

struct run_state;

class score_ledger {
public:
  /// `target_accuracy` = training.target_accuracy (0: no target).
  explicit score_ledger(double target_accuracy = 0) : target_(target_accuracy) {}

  /// Training loss summed over `samples` samples, for the next pass's point.
  void add_training_loss(double sum, std::uint64_t samples) {
    loss_sum_ += sum;
    loss_samples_ += samples;
  }

  /// What booking a pass found.
  struct entry {
    curve_point point;
    bool improved = false; ///< the first pass, or better than every earlier one
    bool meets_target = false;
  };
  /// Books a validation pass after `samples` samples, in epoch `epoch`, at
  /// `seconds`: a curve point whose training loss is the mean since the last
  /// pass (which starts again from zero), the best, and the target.
  entry book(std::size_t epoch, std::uint64_t samples, double seconds, double validation_loss,
             double validation_accuracy);

  const std::vector<curve_point>& curve() const noexcept { return curve_; }
  double best() const noexcept { return best_; }
  bool reached_target() const noexcept { return reached_; }
  double time_to_target() const noexcept { return time_to_target_; } ///< -1 if not reached
  double loss_sum() const noexcept { return loss_sum_; }
  std::uint64_t loss_samples() const noexcept { return loss_samples_; }

  /// The ledger as it stands, to go back to (a round that is undone).
  struct mark {
    std::size_t points = 0;
    double best = 0;
    bool reached = false;
    double time_to_target = -1;
    double loss_sum = 0;
    std::uint64_t loss_samples = 0;
  };
  mark marked() const noexcept;
  /// Back to `m`: later points are dropped.
  void undo(const mark& m);

  /// Fills the run state's curve, best, target and loss fields with the
  /// ledger's first `points` points (the best and the target judged over
  /// them) and the training loss since.
  void save(run_state& st, std::size_t points) const;
  /// The ledger a run state holds, its target judged again with this
  /// ledger's (a resumed run may change training.target_accuracy).
  void restore(const run_state& st);

private:
  double target_ = 0;
  std::vector<curve_point> curve_;
  double best_ = 0;
  bool reached_ = false;
  double time_to_target_ = -1;
  double loss_sum_ = 0;
  std::uint64_t loss_samples_ = 0;
};

} // namespace nettorrent
