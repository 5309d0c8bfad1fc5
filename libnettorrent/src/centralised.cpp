#include "nettorrent/centralised.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ostream>

#include "nettorrent/error.hpp"
#include "nettorrent/run_checkpoint.hpp"
#include "nettorrent/score_ledger.hpp"
#include "nettorrent/signals.hpp"
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

/// The centralised trainer's state, fresh or resumed: one data stream, the
/// model in `trainer` (st.models stays empty but while a checkpoint is made).
run_state start_state(const run_config& cfg, const centralised_hooks& hooks,
                      centralised_trainer& trainer) {
  if (hooks.resume == nullptr)
    return initial_run_state(cfg, 1);
  run_state st = *hooks.resume;
  const auto fail = [&](const std::string& why) {
    throw error(hooks.resume_from + ": cannot resume: " + why);
  };
  if (st.actor_run || st.positions.size() != 1)
    fail("it is a run checkpoint of the actor pipeline (" + std::to_string(st.positions.size())
         + " replicas); the centralised trainer continues only its own");
  if (st.models.empty())
    fail("it holds no model");
  trainer.restore(st.model_of(0));
  st.models.clear();
  // The saved run continues under the configuration given now (it may
  // differ in max_epochs, target_accuracy, ...): its checkpoints say so.
  st.config_text = cfg.canonical();
  st.config_hash = cfg.hash();
  return st;
}

} // namespace

run_result train_centralised(const run_config& cfg, const data_splits& data, std::ostream& out,
                             const centralised_hooks& hooks) {
  const auto& tc = cfg.training;
  centralised_trainer trainer{cfg.model, cfg.optimizer, tc.seed};
  run_state st = start_state(cfg, hooks, trainer);
  // The curve, the best pass and the target (judged again with the target
  // given now); st's copies are filled in for each checkpoint.
  score_ledger ledger{tc.target_accuracy};
  ledger.restore(st);
  data_position& pos = st.positions.front();
  // The sample order: the training split shuffled in place every epoch.
  std::vector<std::uint32_t> order = data.train;
  rng gen = shard_rng(tc.seed, 0);
  if (hooks.resume != nullptr) {
    try {
      data_order replayed = replay_data_order(data.train, gen, pos);
      order = std::move(replayed.order);
      gen = replayed.gen;
    } catch (const error& e) {
      throw error(hooks.resume_from + ": cannot resume: " + e.what());
    }
  }
  const std::size_t batch = tc.batch_size;
  const std::size_t batches_per_epoch =
      order.size() / batch; // the remainder waits for the next shuffle
  const std::uint64_t eval_every = tc.eval_every != 0 ? tc.eval_every : batches_per_epoch * batch;

  matrix x;
  std::vector<std::uint8_t> labels(batch);
  // Validation pass k (1-based) comes once eval_every * k samples are trained.
  std::uint64_t next_eval = (st.round + 1) * eval_every;
  const auto t0 = clock_type::now();
  const double elapsed_before = st.elapsed_seconds;
  const auto elapsed = [&] { return elapsed_before + seconds_since(t0); };
  double last_progress = elapsed_before;
  bool done = ledger.reached_target();
  // Samples of the last run checkpoint: the end of training writes one
  // unless nothing was trained since.
  std::uint64_t checkpointed = hooks.resume != nullptr ? st.samples : ~std::uint64_t{0};

  auto checkpoint = [&] {
    checkpointed = st.samples;
    if (!hooks.checkpoint)
      return;
    st.elapsed_seconds = elapsed();
    ledger.save(st, ledger.curve().size());
    st.models.assign(1, trainer.layers());
    hooks.checkpoint(st);
    st.models.clear();
  };

  auto validate = [&] {
    const evaluation ev =
        evaluate_model(trainer.geometry(), trainer.params(), data.train_pool, &data.validation);
    const score_ledger::entry e = ledger.book(static_cast<std::size_t>(st.epoch), st.samples,
                                              elapsed(), ev.loss, ev.accuracy);
    st.round = ledger.curve().size();
    if (tc.keep_best && e.improved) {
      st.best_layers = trainer.layers();
      st.best_samples = st.samples;
      st.best_epoch = st.epoch;
      st.best_rng = gen.state();
    }
    const double progress = static_cast<double>(st.samples)
                            / static_cast<double>(batches_per_epoch * batch * tc.max_epochs);
    const double seconds = e.point.seconds;
    const double eta = seconds / progress * (1 - progress);
    out << "epoch " << st.epoch << '/' << tc.max_epochs << "  samples " << st.samples << "  "
        << format_value("%.0f", static_cast<double>(st.samples) / seconds) << " samples/s  loss "
        << format_value("%.4f", e.point.train_loss) << "  val loss "
        << format_value("%.4f", ev.loss) << "  val acc " << format_value("%.4f", ev.accuracy)
        << " (best " << format_value("%.4f", ledger.best()) << ")  elapsed "
        << format_duration(seconds) << "  ETA " << format_duration(eta) << std::endl;
    last_progress = seconds;
    if (e.meets_target) {
      out << "reached target validation accuracy " << tc.target_accuracy << " after "
          << format_duration(seconds) << std::endl;
      done = true;
    }
  };

  while (!done && batches_per_epoch > 0 && pos.epoch <= tc.max_epochs) {
    if (hooks.stop != nullptr && hooks.stop->load(std::memory_order_relaxed)) {
      out << "stopped in epoch " << pos.epoch << " after " << st.samples << " samples" << std::endl;
      break;
    }
    if (pos.epoch == 0 || pos.cursor + batch > order.size()) {
      if (pos.epoch >= tc.max_epochs)
        break;
      ++pos.epoch;
      shuffle(order, gen);
      pos.cursor = 0;
      pos.rng_state = gen.state();
      st.epoch = pos.epoch;
    }
    gather_batch(data.train_pool, order.data() + pos.cursor, batch, x, labels.data());
    const loss_result res = trainer.train_batch(x, labels.data());
    if (!std::isfinite(res.loss_sum))
      throw error("training diverged in epoch " + std::to_string(pos.epoch) + ", batch "
                  + std::to_string(pos.cursor / batch + 1)
                  + ": the loss is not finite (lower "
                    "optimizer.learning_rate); nothing was written");
    pos.cursor += batch;
    pos.samples += batch;
    ++pos.next_batch;
    st.samples = pos.samples;
    ledger.add_training_loss(res.loss_sum, batch);
    if (st.samples >= next_eval) {
      next_eval += eval_every;
      validate();
      if (tc.checkpoint_every > 0 && st.round % tc.checkpoint_every == 0)
        checkpoint();
    } else if (tc.progress_interval > 0 && elapsed() - last_progress >= tc.progress_interval) {
      last_progress = elapsed();
      out << "  epoch " << pos.epoch << " batch " << (pos.cursor / batch) << '/'
          << batches_per_epoch << "  "
          << format_value("%.0f", static_cast<double>(st.samples) / last_progress)
          << " samples/s  loss "
          << format_value("%.4f", ledger.loss_sum() / static_cast<double>(ledger.loss_samples()))
          << std::endl;
    }
  }
  // The end of training: the run as it stands (before keep_best below).
  if (st.samples != checkpointed)
    checkpoint();

  run_result result;
  result.samples = st.samples;
  result.epochs = st.epoch;
  result.seconds = elapsed();
  result.samples_per_second = static_cast<double>(result.samples) / result.seconds;
  result.best_validation_accuracy = ledger.best();
  result.reached_target = ledger.reached_target();
  result.time_to_target = ledger.time_to_target();
  std::uint64_t saved_samples = result.samples;
  std::uint64_t saved_epoch = result.epochs;
  rng::state_type saved_rng = gen.state();
  if (tc.keep_best && !st.best_layers.empty()) {
    trainer.restore(st.best_layers);
    saved_samples = st.best_samples;
    saved_epoch = st.best_epoch;
    saved_rng = st.best_rng;
    out << "keeping the weights of the best validation pass (after " << st.best_samples
        << " samples)\n";
  }

  result.layers = trainer.layers();
  result.kept_best = tc.keep_best && !st.best_layers.empty();
  result.saved_samples = saved_samples;
  result.saved_epoch = saved_epoch;
  result.has_saved_rng = true;
  result.saved_rng = saved_rng;
  result.curve = ledger.curve();
  return result;
}

run_result run_centralised(const run_config& cfg, std::ostream& out, const std::string& resume) {
  prepare_math_thread();
  check_output_dir(cfg.training.output_dir);
  // A bad or incompatible checkpoint fails before the data is read.
  run_checkpoint from;
  centralised_hooks hooks;
  if (!resume.empty()) {
    from = load_resume_checkpoint(cfg, resume);
    hooks.resume = &from.state;
    hooks.resume_from = from.path;
  }
  const data_splits data = load_run_data(cfg);
  print_banner(cfg, data, /*actor_run=*/false, out);
  if (hooks.resume != nullptr)
    print_resume(hooks.resume_from, from.state, out);
  std::string last_checkpoint;
  hooks.checkpoint = [&](const run_state& s) { last_checkpoint = save_run_state(cfg, s); };
  // SIGINT / SIGTERM: training ends after the batch under way; the run
  // checkpoint at the end continues it exactly.
  std::atomic<bool> stop{false};
  hooks.stop = &stop;
  const signal_actions signals{[&stop](const char*) { stop = true; }, nullptr};
  run_result r = train_centralised(cfg, data, out, hooks);
  r.run_checkpoint_path = last_checkpoint;
  write_outputs(cfg, data, r, out);
  print_summary(r, out);
  return r;
}

} // namespace nettorrent
