// Benchmark: samples/s of the embedded actor pipeline next to the
// centralised trainer, both run in this process on the same data, with the
// same validation schedule (the whole 5000-sample validation split once per
// epoch), in interleaved repeats; medians and ratios are printed.
//
//   1 replica,  1 slice per layer, max_in_flight 1   target >= 0.9x centralised
//   2 replicas, 1 slice per layer, max_in_flight 2   target >= 1.5x centralised (2 cores)
//   the same 2-replica run with Prometheus metrics on  target within 3% of metrics off
//
// usage: bench_pipeline [--epochs=N] [--repeats=N]
#include <algorithm>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cpu_info.hpp"
#include "nettorrent/centralised.hpp"
#include "process_session.hpp"

namespace nt = nettorrent;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

nt::run_config base_config(std::size_t epochs) {
  nt::run_config cfg;
  cfg.training.max_epochs = epochs;
  cfg.training.progress_interval = 0;
  cfg.training.output_dir = "/tmp/nettorrent-bench";
  cfg.topology.validation_subset = 0; // the whole validation split, like the centralised run
  return cfg;
}

nt::run_config actor_config(std::size_t epochs, std::size_t replicas, std::size_t in_flight) {
  nt::run_config cfg = base_config(epochs);
  cfg.topology.replicas = replicas;
  cfg.topology.slices = {1};
  cfg.topology.max_in_flight = in_flight;
  // One sync round (= one validation pass) per epoch, as in the centralised run.
  cfg.topology.sync_every = 55000 / replicas;
  cfg.system.scheduler_threads = 0;
  return cfg;
}

double actor_rate(const nt::run_config& cfg) {
  std::ostringstream sink;
  const nt::run_result r = nt::run_embedded(cfg, sink, false);
  if (!r.ok)
    throw std::runtime_error(r.error);
  return r.samples_per_second;
}

} // namespace

int main(int argc, char** argv) {
  std::size_t epochs = 2;
  int repeats = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--epochs=", 0) == 0)
      epochs = std::stoul(a.substr(9));
    else if (a.rfind("--repeats=", 0) == 0)
      repeats = std::max(1, std::stoi(a.substr(10)));
    else {
      std::fprintf(stderr, "usage: %s [--epochs=N] [--repeats=N]\n", argv[0]);
      return 2;
    }
  }
  try {
    std::vector<double> central, one, two, two_metrics;
    for (int r = 0; r < repeats; ++r) {
      std::ostringstream sink;
      central.push_back(nt::run_centralised(base_config(epochs), sink).samples_per_second);
      one.push_back(actor_rate(actor_config(epochs, 1, 1)));
      two.push_back(actor_rate(actor_config(epochs, 2, 2)));
      nt::run_config with_metrics = actor_config(epochs, 2, 2);
      with_metrics.system.metrics = true;
      with_metrics.system.metrics_port = 9479; // not the demo's port
      two_metrics.push_back(actor_rate(with_metrics));
    }
    const double c = median(central);
    const double a1 = median(one);
    const double a2 = median(two);
    std::printf("cpu:          %s (%s; build uses %s), %u cores\n", nt::bench::cpu_model().c_str(),
                nt::bench::cpu_isa().c_str(), nt::bench::build_isa().c_str(),
                std::thread::hardware_concurrency());
    std::printf(
        "workload:     784-256-128-10, Adam, batch 64, %zu epochs, validation once per epoch; "
        "median of %d interleaved repeats\n",
        epochs, repeats);
    std::printf("centralised:  %9.0f samples/s\n", c);
    std::printf("actors R=1:   %9.0f samples/s  ratio %.3f  (target >= 0.90: %s)\n", a1, a1 / c,
                a1 / c >= 0.9 ? "met" : "NOT met");
    std::printf("actors R=2:   %9.0f samples/s  ratio %.3f  (target >= 1.50: %s)\n", a2, a2 / c,
                a2 / c >= 1.5 ? "met" : "NOT met");
    const double a2m = median(two_metrics);
    std::printf("actors R=2 with metrics on: %9.0f samples/s  ratio to metrics off %.3f  (target "
                ">= 0.97: %s)\n",
                a2m, a2m / a2, a2m / a2 >= 0.97 ? "met" : "NOT met");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_pipeline: error: %s\n", e.what());
    return 1;
  }
}
