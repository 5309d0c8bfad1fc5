#include "nettorrent/session.hpp"

#include <cstdio>
#include <ostream>

#include "nettorrent/model.hpp"
#include "nettorrent/plot.hpp"
#include "nettorrent/run_support.hpp"

namespace nettorrent {

std::shared_ptr<const data_splits> load_checked_data(const run_config& cfg) {
  auto data = std::make_shared<const data_splits>(load_run_data(cfg));
  check_shard_sizes(cfg, data->train.size());
  return data;
}

void print_banner(const run_config& cfg, const data_splits& data, bool actor_run,
                  std::ostream& out) {
  std::string shape;
  for (auto w : cfg.model.layers)
    shape += (shape.empty() ? "" : "-") + std::to_string(w);
  out << "data: " << data.train.size() << " training, " << data.validation.size() << " validation, "
      << data.test.size() << " test samples\n"
      << "model: " << shape << ", " << to_string(cfg.model.hidden) << ", optimizer "
      << to_string(cfg.optimizer.kind) << " lr " << cfg.optimizer.learning_rate << ", batch "
      << cfg.training.batch_size << ", seed " << cfg.training.seed << '\n';
  if (actor_run) {
    std::string slices;
    for (auto p : cfg.topology.slices)
      slices += (slices.empty() ? "" : ",") + std::to_string(p);
    out << "topology: " << cfg.topology.replicas << " replicas x [" << slices
        << "] slices per layer, max_in_flight " << cfg.topology.max_in_flight << ", sync every "
        << cfg.topology.sync_every << " samples per replica, policy "
        << to_string(cfg.topology.policy) << '\n';
  }
  out << std::flush;
}

std::vector<std::uint32_t> test_selection(const run_config& cfg, const image_set& test) {
  const std::size_t n = cfg.data.test_limit != 0 && cfg.data.test_limit < test.size()
                            ? cfg.data.test_limit
                            : test.size();
  std::vector<std::uint32_t> idx(n);
  for (std::size_t i = 0; i < n; ++i)
    idx[i] = static_cast<std::uint32_t>(i);
  return idx;
}

checkpoint_header checkpoint_header_of(const run_config& cfg) {
  checkpoint_header h;
  h.layers.assign(cfg.model.layers.begin(), cfg.model.layers.end());
  for (const auto& g : model_geometry(cfg.model))
    h.activations.push_back(g.act);
  h.optimizer = cfg.optimizer.kind;
  h.config_hash = cfg.hash();
  return h;
}

model_checkpoint make_checkpoint(const run_config& cfg, const run_result& r) {
  model_checkpoint ck;
  ck.header = checkpoint_header_of(cfg);
  ck.header.samples = r.saved_samples;
  ck.header.step = r.saved_samples / cfg.training.batch_size;
  ck.header.epoch = r.saved_epoch;
  if (r.has_saved_rng)
    ck.header.rng_state = r.saved_rng;
  ck.layers = r.layers;
  return ck;
}

run_checkpoint load_resume_checkpoint(const run_config& cfg, const std::string& path) {
  const std::string file = resolve_resume_path(path);
  run_checkpoint ck = load_run_checkpoint(file);
  check_resume_compatible(cfg, ck.state, file);
  return ck;
}

void print_resume(const std::string& path, const run_state& s, std::ostream& out) {
  out << "resuming " << path << ": round " << s.round << ", " << s.samples << " samples, epoch "
      << s.epoch << ", " << format_duration(s.elapsed_seconds) << " trained" << std::endl;
}

std::string save_run_state(const run_config& cfg, const run_state& state) {
  checkpoint_header h = checkpoint_header_of(cfg);
  h.samples = state.samples;
  h.epoch = state.epoch;
  if (!state.positions.empty())
    h.step = state.positions.front().samples / cfg.training.batch_size;
  if (state.positions.size() == 1)
    h.rng_state = state.positions.front().rng_state;
  return write_run_checkpoint(cfg.training.output_dir, cfg.training.checkpoint_keep, h, state);
}

void write_outputs(const run_config& cfg, const data_splits& data, run_result& r,
                   std::ostream& out) {
  const std::vector<slice_geometry> geometry = model_geometry(cfg.model);
  std::vector<dense_params> params;
  for (const auto& l : r.layers)
    params.push_back(l.params);
  const std::vector<std::uint32_t> sel = test_selection(cfg, data.test);
  r.test = evaluate_model(geometry, params, data.test, &sel);
  r.checkpoint_path = cfg.training.output_dir + "/model.ckpt";
  r.curve_path = cfg.training.output_dir + "/curve.csv";
  save_checkpoint(r.checkpoint_path, make_checkpoint(cfg, r));
  write_curve_csv(r.curve_path, r.curve);
  const std::string png = cfg.training.output_dir + "/curve.png";
  if (plot_curve(r.curve_path, png, out))
    out << "plotted " << png << std::endl;
}

void print_summary(const run_result& r, std::ostream& out) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "done: %llu samples in %s (%.0f samples/s)",
                static_cast<unsigned long long>(r.samples), format_duration(r.seconds).c_str(),
                r.samples_per_second);
  out << buf;
  // Sync bytes: what the rounds moved between the swarm leaders and the
  // replicas' slices, both ways.
  const double per_round = r.sync_rounds > 0 ? static_cast<double>(r.sync_bytes)
                                                   / static_cast<double>(r.sync_rounds) / 1e6
                                             : 0.0;
  if (r.actor_run && r.synced_model) {
    std::snprintf(buf, sizeof buf,
                  ", %llu sync rounds (%.1f MB between leaders and slices, %.2f MB per round)\n"
                  "the synced model's best validation accuracy %.4f\n",
                  static_cast<unsigned long long>(r.sync_rounds),
                  static_cast<double>(r.sync_bytes) / 1e6, per_round, r.best_validation_accuracy);
  } else if (r.actor_run) {
    std::snprintf(buf, sizeof buf,
                  ", %llu sync rounds (%.1f MB between leaders and slices, %.2f MB per round)\n"
                  "best replica %u, best validation accuracy %.4f\n",
                  static_cast<unsigned long long>(r.sync_rounds),
                  static_cast<double>(r.sync_bytes) / 1e6, per_round, r.best_replica,
                  r.best_validation_accuracy);
  } else {
    std::snprintf(buf, sizeof buf, ", best validation accuracy %.4f\n", r.best_validation_accuracy);
  }
  out << buf;
  std::snprintf(buf, sizeof buf, "test: accuracy %.4f, loss %.4f on %zu samples\n", r.test.accuracy,
                r.test.loss, r.test.samples);
  out << buf << "time to target: "
      << (r.reached_target ? format_duration(r.time_to_target) : std::string{"not reached"})
      << '\n';
  if (r.actor_run) {
    out << "staleness: max " << r.max_staleness << "; dropped messages: " << r.dropped
        << " malformed, " << r.stale_dropped
        << " of another incarnation; late replies: " << r.late_replies << '\n'
        << "staleness histogram (updates per staleness 0, 1, ...): [";
    for (std::size_t k = 0; k < r.staleness.size(); ++k)
      out << (k > 0 ? ", " : "") << r.staleness[k];
    out << "]\n";
    char line[256];
    std::snprintf(line, sizeof line,
                  "failures: %llu recoveries (%llu replicas rolled back), %llu samples redone, "
                  "%.2f s recovering, %llu actors moved, %llu restarted\n",
                  static_cast<unsigned long long>(r.recoveries),
                  static_cast<unsigned long long>(r.replicas_rolled_back),
                  static_cast<unsigned long long>(r.samples_redone), r.recovery_seconds,
                  static_cast<unsigned long long>(r.actors_moved),
                  static_cast<unsigned long long>(r.actors_restarted));
    out << line;
    if (r.nodes_left > 0)
      out << "membership: " << r.nodes_left << (r.nodes_left == 1 ? " node" : " nodes")
          << " left gracefully (actors moved at a sync round, nothing redone)\n";
    // Where the rounds' time went, per round on average.
    const auto& t = r.round_time;
    const double per = r.sync_rounds > 0 ? 1e3 / static_cast<double>(r.sync_rounds) : 0;
    std::snprintf(line, sizeof line,
                  "round time: %.2f s in %llu rounds (%.1f%% of the run); per round:", t.total(),
                  static_cast<unsigned long long>(r.sync_rounds),
                  r.seconds > 0 ? 100 * t.total() / r.seconds : 0.0);
    out << line;
    for (std::size_t p = 0; p < t.seconds.size(); ++p) {
      std::snprintf(line, sizeof line, "%s %s %.1f ms", p > 0 ? "," : "", t.name(p),
                    t.seconds[p] * per);
      out << line;
    }
    out << '\n';
  }
  out << "wrote " << r.checkpoint_path << " and " << r.curve_path << std::endl;
  if (!r.run_checkpoint_path.empty())
  {
    out << "run checkpoint " << r.run_checkpoint_path << " (--resume=" << r.run_checkpoint_path
        << " continues the run)" << std::endl;
    if (r.end_state && r.end_state->round < r.sync_rounds)
      out << "  it holds sync round " << r.end_state->round << " (" << r.end_state->samples
          << " samples), the last kept as the run state; a resumed run trains the "
          << (r.samples - r.end_state->samples)
          << " samples after it again, as a straight longer run would" << std::endl;
  }
}

} // namespace nettorrent
