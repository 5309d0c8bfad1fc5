// Benchmark: samples/s of the centralised trainer next to the GEMM-only rate
// of the same step, measured in the same run, and their ratio.
//
// GEMM-only = the step's matrix products alone, on buffers of the same
// shapes: forward X W for every layer, backward H^T dZ for every layer and
// dZ W^T for every layer but the first (~1.0 MFLOP per sample for
// 784-256-128-10). The trainer figure is a full training step: batch
// assembly from uint8 images, forward, softmax cross-entropy, backward and
// the optimizer update. Both run on one thread with flush-to-zero on, in
// interleaved rounds; medians are reported.
//
// usage: bench_centralised [--rounds=N] [--seconds=S] [--optimizer=adam]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cpu_info.hpp"
#include "nettorrent/centralised.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/run_support.hpp"

namespace nt = nettorrent;
using clock_type = std::chrono::steady_clock;

namespace {

struct gemm_step {
  std::vector<nt::matrix> x, w, h, dz, dw, dx;

  gemm_step(const std::vector<std::size_t>& layers, std::size_t batch) {
    const auto b = static_cast<Eigen::Index>(batch);
    for (std::size_t l = 0; l + 1 < layers.size(); ++l) {
      const auto in = static_cast<Eigen::Index>(layers[l]);
      const auto out = static_cast<Eigen::Index>(layers[l + 1]);
      x.push_back(nt::matrix::Random(b, in));
      w.push_back(nt::matrix::Random(in, out) * 0.05f);
      h.push_back(nt::matrix::Zero(b, out));
      dz.push_back(nt::matrix::Random(b, out) * 0.01f);
      dw.push_back(nt::matrix::Zero(in, out));
      dx.push_back(nt::matrix::Zero(b, in));
    }
  }

  void run() {
    for (std::size_t l = 0; l < w.size(); ++l)
      h[l].noalias() = x[l] * w[l];
    for (std::size_t l = w.size(); l-- > 0;) {
      dw[l].noalias() = x[l].transpose() * dz[l];
      if (l > 0)
        dx[l].noalias() = dz[l] * w[l].transpose();
    }
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double rate(F&& step, std::size_t batch, double seconds) {
  std::size_t steps = 0;
  const auto t0 = clock_type::now();
  double elapsed = 0;
  do {
    for (int i = 0; i < 16; ++i)
      step();
    steps += 16;
    elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
  } while (elapsed < seconds);
  return static_cast<double>(steps * batch) / elapsed;
}

} // namespace

int main(int argc, char** argv) {
  int rounds = 7;
  double seconds = 0.5;
  std::string opt = "adam";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--rounds=", 0) == 0)
      rounds = std::max(1, std::stoi(a.substr(9)));
    else if (a.rfind("--seconds=", 0) == 0)
      seconds = std::stod(a.substr(10));
    else if (a.rfind("--optimizer=", 0) == 0)
      opt = a.substr(12);
    else {
      std::fprintf(stderr, "usage: %s [--rounds=N] [--seconds=S] [--optimizer=NAME]\n", argv[0]);
      return 2;
    }
  }
  try {
    nt::prepare_math_thread();
    nt::run_config cfg;
    cfg.optimizer.kind = nt::parse_optimizer_kind(opt);
    const std::size_t batch = cfg.training.batch_size;
    const nt::data_splits data = nt::load_run_data(cfg);

    nt::centralised_trainer trainer{cfg.model, cfg.optimizer, cfg.training.seed};
    std::vector<std::uint32_t> order = data.train;
    nt::rng gen = nt::shard_rng(cfg.training.seed, 0);
    nt::shuffle(order, gen);
    nt::matrix x;
    std::vector<std::uint8_t> labels(batch);
    std::size_t cursor = 0;
    auto train_step = [&] {
      if (cursor + batch > order.size())
        cursor = 0;
      nt::gather_batch(data.train_pool, order.data() + cursor, batch, x, labels.data());
      trainer.train_batch(x, labels.data());
      cursor += batch;
    };
    gemm_step gemm{cfg.model.layers, batch};
    auto gemm_run = [&] { gemm.run(); };

    // Warm up both (first-touch allocation, caches, optimizer moments).
    rate(train_step, batch, 0.3);
    rate(gemm_run, batch, 0.3);

    std::vector<double> train_rates, gemm_rates, ratios;
    for (int r = 0; r < rounds; ++r) {
      const double g = rate(gemm_run, batch, seconds);
      const double t = rate(train_step, batch, seconds);
      gemm_rates.push_back(g);
      train_rates.push_back(t);
      ratios.push_back(t / g);
    }
    const double ratio = median(ratios);
    const std::string isa = nt::bench::cpu_isa();
    const double target = isa == "AVX-512" ? 0.55 : 0.8;
    std::printf("cpu:        %s (%s; build uses %s)\n", nt::bench::cpu_model().c_str(), isa.c_str(),
                nt::bench::build_isa().c_str());
    std::printf("model:      784-256-128-10, batch %zu, optimizer %s, 1 thread, FTZ %s\n", batch,
                opt.c_str(), nt::flush_to_zero_enabled() ? "on" : "off");
    std::printf("rounds:     %d interleaved x %.2fs each\n", rounds, seconds);
    std::printf("gemm-only:  %10.0f samples/s (median)\n", median(gemm_rates));
    std::printf("trainer:    %10.0f samples/s (median)\n", median(train_rates));
    std::printf("ratio:      %10.3f trainer / gemm-only (median of per-round ratios)\n", ratio);
    std::printf("target:     >= %.2f on %s: %s\n", target, isa.c_str(),
                ratio >= target ? "met" : "NOT met");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_centralised: error: %s\n", e.what());
    return 1;
  }
}
