// The centralised trainer: plain single-threaded mini-batch training of the
// whole model. It is the reference every distributed run is compared against.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/loss.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/optimizer.hpp"

namespace nettorrent {

/// Owns the weights, optimizer state and every buffer a training step needs;
/// after the first batch a step allocates nothing.
class centralised_trainer {
public:
  centralised_trainer(const model_config& model, const optimizer_config& opt, std::uint64_t seed);

  /// Forward, loss, backward and an optimizer update on one batch.
  /// x: B x layers[0]; labels: B entries.
  loss_result train_batch(const matrix& x, const std::uint8_t* labels);

  const std::vector<slice_geometry>& geometry() const noexcept { return geometry_; }
  const std::vector<dense_params>& params() const noexcept { return params_; }

  /// Model and optimizer state, for checkpoints and comparisons.
  std::vector<layer_state> layers() const;
  void restore(const std::vector<layer_state>& layers);

private:
  std::vector<slice_geometry> geometry_;
  std::vector<dense_params> params_;
  std::vector<dense_grads> grads_;
  std::vector<optimizer_state> w_state_;
  std::vector<optimizer_state> b_state_;
  std::unique_ptr<optimizer> opt_;
  // Per-layer buffers: h_[l] is layer l's output (B x out_l); dh_[l] its
  // gradient (B x out_l), turned into dZ in place.
  std::vector<matrix> h_;
  std::vector<matrix> dh_;
};

/// What a training run reports at the end.
struct run_summary {
  std::size_t epochs = 0;    ///< epochs started (the last may be partial)
  std::uint64_t samples = 0; ///< training samples processed
  double seconds = 0;        ///< wall clock of training incl. validation
  double samples_per_second = 0;
  double best_validation_accuracy = 0;
  double time_to_target = -1; ///< seconds; -1 if the target was not reached
  bool reached_target = false;
  evaluation test;
  std::string checkpoint_path;
  std::string curve_path;
};

/// Runs `nettorrent centralised`: loads data, trains until the target
/// validation accuracy or max_epochs, evaluates on the test split, writes the
/// checkpoint and learning curve into training.output_dir. Progress goes to
/// `out`.
run_summary run_centralised(const run_config& cfg, std::ostream& out);

} // namespace nettorrent
