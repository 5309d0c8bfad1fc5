#include "embedded.hpp"

#include <cstdio>
#include <ostream>

#include <caf/all.hpp>

#include "metrics.hpp"
#include "nettorrent/plot.hpp"
#include "nettorrent/run_support.hpp"
#include "spawn.hpp"

namespace nettorrent {

run_report run_embedded(const run_config& cfg, std::ostream& out, bool verbose) {
  prepare_math_thread();
  check_output_dir(cfg.training.output_dir);
  auto data = std::make_shared<const data_splits>(load_run_data(cfg));
  check_shard_sizes(cfg, data->train.size());
  std::string shape;
  for (auto w : cfg.model.layers)
    shape += (shape.empty() ? "" : "-") + std::to_string(w);
  std::string slices;
  for (auto p : cfg.topology.slices)
    slices += (slices.empty() ? "" : ",") + std::to_string(p);
  if (verbose)
    out << "data: " << data->train.size() << " training, " << data->validation.size()
        << " validation, " << data->test.size() << " test samples\n"
        << "model: " << shape << ", " << to_string(cfg.model.hidden) << ", optimizer "
        << to_string(cfg.optimizer.kind) << " lr " << cfg.optimizer.learning_rate << ", batch "
        << cfg.training.batch_size << ", seed " << cfg.training.seed << '\n'
        << "topology: " << cfg.topology.replicas << " replicas x [" << slices
        << "] slices per layer, max_in_flight " << cfg.topology.max_in_flight << ", sync every "
        << cfg.topology.sync_every << " samples per replica, policy "
        << to_string(cfg.topology.policy) << std::endl;
  // Metrics outlive the actor system: declared first, destroyed last.
  std::unique_ptr<metrics> m;
  std::unique_ptr<prometheus::Exposer> exposer;
  if (cfg.system.metrics) {
    m = std::make_unique<metrics>("local", cfg.model.layers.size() - 1, cfg.topology.replicas);
    exposer = expose_metrics(*m, cfg.system.metrics_bind,
                             static_cast<std::uint16_t>(cfg.system.metrics_port));
    if (verbose)
      out << "metrics: http://" << cfg.system.metrics_bind << ':' << cfg.system.metrics_port
          << "/metrics" << std::endl;
  }
  caf::actor_system_config sys_cfg;
  configure_actor_system(sys_cfg, cfg);
  caf::actor_system sys{sys_cfg};
  auto coord = spawn_embedded(sys, cfg, data, verbose, m.get());
  run_report report;
  caf::scoped_actor self{sys};
  self->request(coord, caf::infinite, atom::run::value)
      .receive([&](run_report& r) { report = std::move(r); },
               [&](caf::error& err) {
                 report.ok = false;
                 report.error = "the coordinator failed: " + sys.render(err);
               });
  if (report.ok) {
    const std::string png = cfg.training.output_dir + "/curve.png";
    if (plot_curve(report.curve_path, png, out))
      out << "plotted " << png << std::endl;
  }
  if (m)
    linger_for_scrapes(cfg.system.metrics_linger, out);
  return report;
}

void print_summary(const run_report& r, std::ostream& out) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "done: %llu samples in %s (%.0f samples/s), %llu sync rounds (%.1f MB exchanged)\n"
                "best replica %u, best validation accuracy %.4f\n"
                "test: accuracy %.4f, loss %.4f\n"
                "time to target: %s\n"
                "staleness: max %llu; dropped messages: %llu (stale: %llu)\n",
                static_cast<unsigned long long>(r.samples), format_duration(r.seconds).c_str(),
                r.samples_per_second, static_cast<unsigned long long>(r.sync_rounds),
                static_cast<double>(r.sync_bytes) / 1e6, r.best_replica, r.best_validation_accuracy,
                r.test_accuracy, r.test_loss,
                r.reached_target ? format_duration(r.time_to_target).c_str() : "not reached",
                static_cast<unsigned long long>(r.max_staleness),
                static_cast<unsigned long long>(r.dropped),
                static_cast<unsigned long long>(r.stale_dropped));
  out << buf;
  out << "staleness histogram (updates per staleness 0, 1, ...): [";
  for (std::size_t k = 0; k < r.staleness.size(); ++k)
    out << (k > 0 ? ", " : "") << r.staleness[k];
  out << "]\nwrote " << r.checkpoint_path << " and " << r.curve_path << std::endl;
}

} // namespace nettorrent
