// The centralised trainer: plain single-threaded mini-batch training of the
// whole model. It is the reference every distributed run is compared against.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/loss.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/optimizer.hpp"
#include "nettorrent/run_checkpoint.hpp"
#include "nettorrent/run_result.hpp"

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

/// How a centralised run starts and what it hands out on the way; the
/// defaults train from the start and hand out nothing.
struct centralised_hooks {
  /// Continue this saved run (checked against the configuration with
  /// check_resume_compatible first) instead of starting afresh.
  const run_state* resume = nullptr;
  std::string resume_from; ///< the file `resume` came from, for messages
  /// Receives the run's state every training.checkpoint_every validation
  /// passes (if > 0) and at the end of training (before keep_best restores
  /// the best pass), unless nothing was trained since the last call.
  std::function<void(const run_state&)> checkpoint;
  /// Set (from another thread, e.g. on SIGTERM): training ends after the
  /// batch under way, as if max_epochs were reached there.
  const std::atomic<bool>* stop = nullptr;
};

/// Trains on `data` until the target validation accuracy or max_epochs,
/// printing progress to `out`; returns the model to save (the best
/// validation pass with keep_best) and the run's figures. Writes nothing
/// itself. A resumed run ends with the same model, optimizer state and
/// curve (but for its seconds) as the run it continues would have.
run_result train_centralised(const run_config& cfg, const data_splits& data, std::ostream& out,
                             const centralised_hooks& hooks = {});

/// Runs `nettorrent centralised [--resume=PATH]`: checks the output
/// directory (and the run checkpoint PATH names: a file or a directory's
/// newest), loads data, trains writing run checkpoints into output_dir,
/// then writes the outputs (test evaluation, checkpoint, curve, plot) and
/// the summary through the same steps as the actor runs
/// (nettorrent/session.hpp).
run_result run_centralised(const run_config& cfg, std::ostream& out,
                           const std::string& resume = "");

} // namespace nettorrent
