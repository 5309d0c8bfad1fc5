#include "nettorrent/centralised.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ostream>

#include "nettorrent/error.hpp"
#include "nettorrent/run_support.hpp"
#include "nettorrent/session.hpp"

namespace nettorrent {

centralised_trainer::centralised_trainer(const model_config& model, const optimizer_config& opt,
                                         std::uint64_t seed)
    : geometry_(model_geometry(model)), opt_(make_optimizer(opt)) {
  const std::size_t n = geometry_.size();
  params_.reserve(n);
  grads_.resize(n);
  h_.resize(n);
  dh_.resize(n);
  for (std::size_t l = 0; l < n; ++l) {
    params_.push_back(init_dense(seed, geometry_[l]));
    resize_grads(params_[l], grads_[l]);
    w_state_.push_back(opt_->make_state(static_cast<std::size_t>(params_[l].w.size())));
    b_state_.push_back(opt_->make_state(static_cast<std::size_t>(params_[l].b.size())));
  }
}

loss_result centralised_trainer::train_batch(const matrix& x, const std::uint8_t* labels) {
  const std::size_t n = geometry_.size();
  // Forward: h_[l] = act_l(h_[l-1] W_l + b_l), h_[-1] = x.
  for (std::size_t l = 0; l < n; ++l)
    dense_forward(l == 0 ? x : h_[l - 1], params_[l], geometry_[l].act, h_[l]);
  // dLoss/dlogits of the mean loss: (P - Y) / B.
  const loss_result res = softmax_xent_backward(h_[n - 1], labels, dh_[n - 1]);
  // Backward, last layer first. dX of layer l is computed from its weights
  // before they are updated; it becomes dh_[l-1].
  for (std::size_t l = n; l-- > 0;) {
    dense_backward(l == 0 ? x : h_[l - 1], h_[l], geometry_[l].act, params_[l], dh_[l], grads_[l],
                   l == 0 ? nullptr : &dh_[l - 1]);
    auto& p = params_[l];
    opt_->step(p.w.data(), grads_[l].dw.data(), static_cast<std::size_t>(p.w.size()), w_state_[l]);
    opt_->step(p.b.data(), grads_[l].db.data(), static_cast<std::size_t>(p.b.size()), b_state_[l]);
  }
  return res;
}

std::vector<layer_state> centralised_trainer::layers() const {
  std::vector<layer_state> out;
  for (std::size_t l = 0; l < params_.size(); ++l)
    out.push_back({params_[l], w_state_[l], b_state_[l]});
  return out;
}

void centralised_trainer::restore(const std::vector<layer_state>& layers) {
  if (layers.size() != params_.size())
    throw error("restore: " + std::to_string(layers.size()) + " layers given, model has "
                + std::to_string(params_.size()));
  for (std::size_t l = 0; l < params_.size(); ++l) {
    if (layers[l].params.w.rows() != params_[l].w.rows()
        || layers[l].params.w.cols() != params_[l].w.cols())
      throw error("restore: layer " + std::to_string(l) + " has the wrong shape");
    params_[l] = layers[l].params;
    w_state_[l] = layers[l].w_state;
    b_state_[l] = layers[l].b_state;
  }
}

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

} // namespace

run_result train_centralised(const run_config& cfg, const data_splits& data, std::ostream& out) {
  const auto& tc = cfg.training;
  centralised_trainer trainer{cfg.model, cfg.optimizer, tc.seed};
  std::vector<std::uint32_t> order = data.train;
  rng gen = shard_rng(tc.seed, 0);
  const std::size_t batch = tc.batch_size;
  const std::size_t batches_per_epoch =
      order.size() / batch; // the remainder waits for the next shuffle
  const std::uint64_t eval_every = tc.eval_every != 0 ? tc.eval_every : batches_per_epoch * batch;

  matrix x;
  std::vector<std::uint8_t> labels(batch);
  std::vector<curve_point> curve;
  run_result result;
  double loss_acc = 0;
  std::uint64_t loss_samples = 0;
  std::uint64_t next_eval = eval_every;
  const auto t0 = clock_type::now();
  double last_progress = 0;
  bool done = false;
  std::vector<layer_state> best_layers; // keep_best: weights of the best validation pass
  std::uint64_t best_samples = 0;
  std::size_t best_epoch = 0;
  rng::state_type best_rng{};

  auto validate = [&](std::size_t epoch) {
    const evaluation ev =
        evaluate_model(trainer.geometry(), trainer.params(), data.train_pool, &data.validation);
    curve_point p;
    p.epoch = epoch;
    p.samples = result.samples;
    p.seconds = seconds_since(t0);
    p.train_loss = loss_samples > 0 ? loss_acc / static_cast<double>(loss_samples) : 0;
    p.validation_loss = ev.loss;
    p.validation_accuracy = ev.accuracy;
    curve.push_back(p);
    loss_acc = 0;
    loss_samples = 0;
    if (tc.keep_best && (best_layers.empty() || ev.accuracy > result.best_validation_accuracy)) {
      best_layers = trainer.layers();
      best_samples = result.samples;
      best_epoch = epoch;
      best_rng = gen.state();
    }
    result.best_validation_accuracy = std::max(result.best_validation_accuracy, ev.accuracy);
    const double progress = static_cast<double>(result.samples)
                            / static_cast<double>(batches_per_epoch * batch * tc.max_epochs);
    const double eta = p.seconds / progress * (1 - progress);
    out << "epoch " << epoch << '/' << tc.max_epochs << "  samples " << result.samples << "  "
        << fmt("%.0f", static_cast<double>(result.samples) / p.seconds) << " samples/s  loss "
        << fmt("%.4f", p.train_loss) << "  val loss " << fmt("%.4f", ev.loss) << "  val acc "
        << fmt("%.4f", ev.accuracy) << " (best " << fmt("%.4f", result.best_validation_accuracy)
        << ")  elapsed " << format_duration(p.seconds) << "  ETA " << format_duration(eta)
        << std::endl;
    last_progress = p.seconds;
    if (tc.target_accuracy > 0 && ev.accuracy >= tc.target_accuracy) {
      result.reached_target = true;
      result.time_to_target = p.seconds;
      out << "reached target validation accuracy " << tc.target_accuracy << " after "
          << format_duration(p.seconds) << std::endl;
      done = true;
    }
  };

  for (std::size_t epoch = 1; epoch <= tc.max_epochs && !done; ++epoch) {
    result.epochs = epoch;
    shuffle(order, gen);
    for (std::size_t b = 0; b < batches_per_epoch && !done; ++b) {
      gather_batch(data.train_pool, order.data() + b * batch, batch, x, labels.data());
      const loss_result res = trainer.train_batch(x, labels.data());
      if (!std::isfinite(res.loss_sum))
        throw error("training diverged in epoch " + std::to_string(epoch) + ", batch "
                    + std::to_string(b + 1)
                    + ": the loss is not finite (lower "
                      "optimizer.learning_rate); nothing was written");
      loss_acc += res.loss_sum;
      loss_samples += batch;
      result.samples += batch;
      if (result.samples >= next_eval) {
        next_eval += eval_every;
        validate(epoch);
      } else if (tc.progress_interval > 0
                 && seconds_since(t0) - last_progress >= tc.progress_interval) {
        last_progress = seconds_since(t0);
        out << "  epoch " << epoch << " batch " << (b + 1) << '/' << batches_per_epoch << "  "
            << fmt("%.0f", static_cast<double>(result.samples) / last_progress)
            << " samples/s  loss " << fmt("%.4f", loss_acc / static_cast<double>(loss_samples))
            << std::endl;
      }
    }
  }
  result.seconds = seconds_since(t0);
  result.samples_per_second = static_cast<double>(result.samples) / result.seconds;
  std::uint64_t saved_samples = result.samples;
  std::uint64_t saved_epoch = result.epochs;
  rng::state_type saved_rng = gen.state();
  if (tc.keep_best && !best_layers.empty()) {
    trainer.restore(best_layers);
    saved_samples = best_samples;
    saved_epoch = best_epoch;
    saved_rng = best_rng;
    out << "keeping the weights of the best validation pass (after " << best_samples
        << " samples)\n";
  }

  result.layers = trainer.layers();
  result.kept_best = tc.keep_best && !best_layers.empty();
  result.saved_samples = saved_samples;
  result.saved_epoch = saved_epoch;
  result.has_saved_rng = true;
  result.saved_rng = saved_rng;
  result.curve = std::move(curve);
  return result;
}

run_result run_centralised(const run_config& cfg, std::ostream& out) {
  prepare_math_thread();
  check_output_dir(cfg.training.output_dir);
  const data_splits data = load_run_data(cfg);
  print_banner(cfg, data, /*actor_run=*/false, out);
  run_result r = train_centralised(cfg, data, out);
  write_outputs(cfg, data, r, out);
  print_summary(r, out);
  return r;
}

} // namespace nettorrent
