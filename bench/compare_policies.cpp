// The seed's claim, measured: the weight-sharing policies best, average,
// outer and none for R = 2, 4 replicas (and one replica, where there is
// nothing to share) and two sync intervals, next to the centralised trainer,
// on the same data, model and number of epochs. Prints a table (test
// accuracy, time and training samples to a validation accuracy, samples/s)
// and writes it as CSV.
//
// Every run validates on the whole validation split (5000 samples); the
// centralised run validates every `eval_every` samples so its time-to-target
// has the same resolution as a sync round of the R = 2 runs.
//
// usage: compare_policies [--epochs=N] [--target=0.88] [--csv=PATH] [--seed=N]
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cpu_info.hpp"
#include "nettorrent/centralised.hpp"
#include "nettorrent/run_support.hpp"
#include "nettorrent/sync_policy.hpp"
#include "process_session.hpp"

namespace nt = nettorrent;

namespace {

struct row {
  std::string name;
  std::string policy;
  std::size_t replicas = 0;
  std::size_t sync_every = 0;
  double test_accuracy = 0;
  double time_to_target = -1; ///< seconds, from the learning curve; -1 = never
  double samples_to_target = -1; ///< training samples (all replicas) by then; -1 = never
  double seconds = 0;
  double samples_per_second = 0;
};

/// The curve's first point whose validation accuracy reaches `target`:
/// its seconds and its training samples ({-1, -1}: never).
std::pair<double, double> time_to(const std::string& curve_csv, double target) {
  std::ifstream in{curve_csv};
  std::string line;
  std::getline(in, line); // header
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss{line};
    std::string x;
    while (std::getline(ss, x, ','))
      f.push_back(x);
    if (f.size() == 6 && std::stod(f[5]) >= target)
      return {std::stod(f[2]), std::stod(f[1])};
  }
  return {-1, -1};
}

nt::run_config base(std::size_t epochs, std::uint64_t seed, const std::string& dir) {
  nt::run_config cfg;
  cfg.training.max_epochs = epochs;
  cfg.training.seed = seed;
  cfg.training.progress_interval = 0;
  cfg.training.output_dir = dir;
  cfg.topology.validation_subset = 0;
  return cfg;
}

} // namespace

int main(int argc, char** argv) {
  std::size_t epochs = 15;
  double target = 0.88;
  std::string csv = "runs/compare-policies.csv";
  std::uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--epochs=", 0) == 0)
      epochs = std::stoul(a.substr(9));
    else if (a.rfind("--target=", 0) == 0)
      target = std::stod(a.substr(9));
    else if (a.rfind("--csv=", 0) == 0)
      csv = a.substr(6);
    else if (a.rfind("--seed=", 0) == 0)
      seed = std::stoull(a.substr(7));
    else {
      std::fprintf(stderr, "usage: %s [--epochs=N] [--target=A] [--csv=PATH] [--seed=N]\n",
                   argv[0]);
      return 2;
    }
  }
  try {
    const std::string dir = "/tmp/nettorrent-compare";
    std::vector<row> rows;
    const std::size_t sync_values[] = {5000, 20000};
    {
      nt::run_config cfg = base(epochs, seed, dir);
      cfg.training.eval_every = 2 * sync_values[0];
      std::ostringstream sink;
      const nt::run_result s = nt::run_centralised(cfg, sink);
      const auto [t, n] = time_to(s.curve_path, target);
      rows.push_back({"centralised", "-", 1, cfg.training.eval_every, s.test.accuracy, t, n,
                      s.seconds, s.samples_per_second});
      std::fprintf(stderr, "centralised done\n");
    }
    for (std::size_t replicas : {1, 2, 4})
      for (std::size_t sync : sync_values)
        for (const nt::sync_policy_def* def : nt::sync_policies()) {
          const nt::sync_policy policy = def->id;
          // One replica has nothing to share: every policy is the same run.
          if (replicas == 1 && def->exchanges)
            continue;
          nt::run_config cfg = base(epochs, seed, dir);
          cfg.topology.replicas = replicas;
          cfg.topology.sync_every = sync;
          cfg.topology.policy = policy;
          std::ostringstream sink;
          const nt::run_result r = nt::run_embedded(cfg, sink, false);
          if (!r.ok)
            throw std::runtime_error(r.error);
          const auto [t, n] = time_to(r.curve_path, target);
          rows.push_back({"actors", replicas == 1 ? "-" : std::string{nt::to_string(policy)},
                          replicas, sync, r.test.accuracy, t, n, r.seconds, r.samples_per_second});
          std::fprintf(stderr, "R=%zu sync_every=%zu %s done\n", replicas, sync,
                       std::string{nt::to_string(policy)}.c_str());
        }
    const nt::run_config shown = base(epochs, seed, dir);
    std::printf("cpu: %s (%s), %zu epochs, seed %llu, %s lr %g, batch %zu, max_in_flight %zu\n",
                nt::bench::cpu_model().c_str(), nt::bench::cpu_isa().c_str(), epochs,
                static_cast<unsigned long long>(seed),
                std::string{nt::to_string(shown.optimizer.kind)}.c_str(),
                static_cast<double>(shown.optimizer.learning_rate), shown.training.batch_size,
                shown.topology.max_in_flight);
    std::printf("| run | policy | R | sync_every | test acc | time to %.0f%% val acc | samples by "
                "then | run time | samples/s |\n",
                target * 100);
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& r : rows)
      std::printf("| %s | %s | %zu | %zu | %.4f | %s | %s | %s | %.0f |\n", r.name.c_str(),
                  r.policy.c_str(), r.replicas, r.sync_every, r.test_accuracy,
                  r.time_to_target < 0 ? "never" : nt::format_duration(r.time_to_target).c_str(),
                  r.samples_to_target < 0
                      ? "-"
                      : std::to_string(static_cast<long long>(r.samples_to_target)).c_str(),
                  nt::format_duration(r.seconds).c_str(), r.samples_per_second);
    nt::write_file_atomically(csv, [&](std::ostream& os) {
      os << "run,policy,replicas,sync_every,test_accuracy,time_to_target_s,samples_to_target,"
            "seconds,samples_per_second\n";
      for (const auto& r : rows)
        os << r.name << ',' << r.policy << ',' << r.replicas << ',' << r.sync_every << ','
           << r.test_accuracy << ',' << r.time_to_target << ',' << r.samples_to_target << ','
           << r.seconds << ',' << r.samples_per_second << '\n';
    });
    std::printf("wrote %s\n", csv.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_policies: error: %s\n", e.what());
    return 1;
  }
}
