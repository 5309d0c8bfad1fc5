#include "nettorrent/score_ledger.hpp"

#include <algorithm>

#include "nettorrent/run_checkpoint.hpp"

namespace nettorrent {

score_ledger::entry score_ledger::book(std::size_t epoch, std::uint64_t samples, double seconds,
                                       double validation_loss, double validation_accuracy) {
  entry e;
  e.point.epoch = epoch;
  e.point.samples = samples;
  e.point.seconds = seconds;
  e.point.train_loss = loss_samples_ > 0 ? loss_sum_ / static_cast<double>(loss_samples_) : 0;
  e.point.validation_loss = validation_loss;
  e.point.validation_accuracy = validation_accuracy;
  e.improved = curve_.empty() || validation_accuracy > best_;
  e.meets_target = target_ > 0 && validation_accuracy >= target_;
  curve_.push_back(e.point);
  loss_sum_ = 0;
  loss_samples_ = 0;
  best_ = std::max(best_, validation_accuracy);
  if (e.meets_target && !reached_) {
    reached_ = true;
    time_to_target_ = seconds;
  }
  return e;
}

score_ledger::mark score_ledger::marked() const noexcept {
  return {curve_.size(), best_, reached_, time_to_target_, loss_sum_, loss_samples_};
}

void score_ledger::undo(const mark& m) {
  curve_.resize(std::min(curve_.size(), m.points));
  best_ = m.best;
  reached_ = m.reached;
  time_to_target_ = m.time_to_target;
  loss_sum_ = m.loss_sum;
  loss_samples_ = m.loss_samples;
}

namespace {

/// The best accuracy of `curve`, and when it first met `target`.
struct judged {
  double best = 0;
  bool reached = false;
  double time_to_target = -1;
};

judged judge(const std::vector<curve_point>& curve, double target) {
  judged j;
  for (const auto& p : curve) {
    j.best = std::max(j.best, p.validation_accuracy);
    if (!j.reached && target > 0 && p.validation_accuracy >= target) {
      j.reached = true;
      j.time_to_target = p.seconds;
    }
  }
  return j;
}

} // namespace

void score_ledger::save(run_state& st, std::size_t points) const {
  st.curve.assign(curve_.begin(),
                  curve_.begin() + static_cast<std::ptrdiff_t>(std::min(curve_.size(), points)));
  const judged j = judge(st.curve, target_);
  st.best_validation_accuracy = j.best;
  st.reached_target = j.reached;
  st.time_to_target = j.time_to_target;
  st.loss_sum = loss_sum_;
  st.loss_samples = loss_samples_;
}

void score_ledger::restore(const run_state& st) {
  curve_ = st.curve;
  // The target may differ from the saved run's: it is judged again.
  const judged j = judge(curve_, target_);
  best_ = j.best;
  reached_ = j.reached;
  time_to_target_ = j.time_to_target;
  loss_sum_ = st.loss_sum;
  loss_samples_ = st.loss_samples;
}

} // namespace nettorrent
