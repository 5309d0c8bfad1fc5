#include "nettorrent/cost_model.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "nettorrent/centralised.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/dense.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/run_support.hpp"
#include "nettorrent/sync_policy.hpp"
#include "nettorrent/tensor.hpp"

namespace nettorrent {

namespace {

/// Adds `weight` messages of `payload` bytes from node `a` to node `b`
/// (nothing if they are the same node).
void carry(std::vector<double>& out, std::vector<double>& in, std::size_t a, std::size_t b,
           double payload, double weight = 1) {
  if (weight <= 0 || a == b)
    return;
  out[a] += weight * (payload + message_overhead);
  in[b] += weight * (payload + message_overhead);
}

std::size_t moments_of(optimizer_kind k) {
  switch (k) {
  case optimizer_kind::sgd:
    return 0;
  case optimizer_kind::adam:
    return 2;
  case optimizer_kind::momentum:
  case optimizer_kind::adagrad:
  case optimizer_kind::rmsprop:
    return 1;
  }
  return 0;
}

/// One replica's batch through its pipeline: its forward messages weighed
/// `fwd`, its backward ones `bwd` (a validation pass: forward only).
void add_pipeline(const placement_plan& p, const run_config& run, std::size_t r, double fwd,
                  double bwd, step_traffic& t) {
  const auto& w = run.model.layers; // widths n_0 .. n_L
  const std::size_t L = p.layers();
  const double B = static_cast<double>(run.training.batch_size);
  // Bytes per value on the wire (int8: plus a float scale per row, below).
  const double f = run.system.wire == wire_precision::bf16   ? 2
                   : run.system.wire == wire_precision::int8 ? 1
                                                              : 4;
  const double row_scales = run.system.wire == wire_precision::int8 ? B * 4 : 0;
  // A message of `values` matrix values (B rows), or of `bytes` bytes.
  const auto send = [&](double weight, std::size_t a, std::size_t b, double values,
                        double bytes = 0) {
    carry(t.pipeline_out, t.pipeline_in, a, b, values > 0 ? values * f + row_scales : bytes,
          weight);
  };
  const std::size_t worker = p.worker_nodes[r];
  const auto relay = [&](std::size_t k) { return p.relay_nodes[r][k]; };
  send(fwd, worker, relay(0), B * static_cast<double>(w[0])); // the batch
  send(fwd, worker, relay(L), 0, B);                           // its labels
  send(fwd, relay(L), worker, 0);                                  // loss
  send(bwd, relay(0), worker, 0);                                  // done
  for (std::size_t l = 0; l < L; ++l) {
    const auto cols = split_columns(w[l + 1], p.slices[l]);
    for (std::size_t i = 0; i < cols.size(); ++i) {
      const std::size_t s = p.slice_nodes[r][l][i];
      const double c = static_cast<double>(cols[i].size());
      const double fan_in = static_cast<double>(w[l]);
      // Forward: the layer's input in, the slice's columns out.
      send(fwd, relay(l), s, B * fan_in);
      send(fwd, s, relay(l + 1), B * c);
      // Backward: the gradient of its columns in, a partial dX out (layer
      // 1 sends an ack instead).
      send(bwd, relay(l + 1), s, B * c);
      send(bwd, s, relay(l), l == 0 ? 0 : B * fan_in);
      t.flops[s] += (2 * fwd + (l == 0 ? 2 : 4) * bwd) * B * fan_in * c;
    }
  }
}

/// Validation samples one replica scores per round, on average.
double validation_per_round(const run_config& run, std::size_t replicas) {
  const sync_policy_def& def = policy_def(run.topology.policy);
  const double subset = static_cast<double>(
      validation_subset_size(run.data.validation_size, run.topology.validation_subset));
  const double share = replicas > 1 && def.scores_synced_model ? static_cast<double>(replicas) : 1;
  return subset / share / static_cast<double>(std::max<std::size_t>(run.topology.validate_every, 1));
}

/// Bytes of a rows x cols block's weights (and its bias row) as a sync
/// round codes them (nettorrent/sync_codec.hpp).
double coded_bytes_of(std::size_t rows, std::size_t cols, sync_precision p) {
  const double n = static_cast<double>((rows + 1) * cols);
  switch (p) {
  case sync_precision::bf16:
    return n * 2;
  case sync_precision::int8:
    return n + static_cast<double>(rows + 1) * 4; // a scale per row
  case sync_precision::f32:
    break;
  }
  return n * 4;
}

/// One sync round's transfers.
void add_sync(const placement_plan& p, const run_config& run, step_traffic& t) {
  const sync_policy_def& def = policy_def(run.topology.policy);
  const std::size_t R = p.replicas;
  if (R < 2)
    return;
  const auto& w = run.model.layers;
  const double moments = static_cast<double>(moments_of(run.optimizer.kind));
  const double m = 1 + moments;
  // topology.round_moments = false: a round reads the moments only when it
  // writes a run checkpoint (the end state's reads are left out).
  const std::size_t every = run.training.checkpoint_every;
  const double read_share =
      run.topology.round_moments ? 1 : every > 0 ? 1 / static_cast<double>(every) : 0;
  // topology.sync_feedback: each slice's residual (one f32 per weight)
  // travels with its moments.
  const double owed = run.topology.sync_feedback ? 1 : 0;
  const double read_m = 1 + (moments + owed) * read_share;
  const sync_precision coding = run.topology.sync_coding;
  const bool sets_moments = round_sets_moments(run.topology);
  auto& out = t.sync_out;
  auto& in = t.sync_in;
  for (std::size_t l = 0; l < p.layers(); ++l) {
    const double layer = static_cast<double>(w[l] * w[l + 1] + w[l + 1]) * 4; // W and b, f32
    const auto cols = split_columns(w[l + 1], p.slices[l]);
    const std::size_t leader = p.leader_nodes[l];
    const auto slice_share = [&](std::size_t i) {
      return static_cast<double>(cols[i].size()) / static_cast<double>(w[l + 1]);
    };
    // A slice's weights as the round codes them, and its moments (f32).
    const auto weights_of = [&](std::size_t i) {
      return coded_bytes_of(w[l], cols[i].size(), coding);
    };
    const auto moments_of_slice = [&](std::size_t i) { return layer * moments * slice_share(i); };
    const auto read_moments_of_slice = [&](std::size_t i) {
      return layer * (moments + owed) * slice_share(i) * read_share;
    };
    // Read: the slices' weights and moments go to the leader (only the best
    // replica's under best; every replica's when nothing is exchanged: none
    // snapshots them).
    const std::size_t read = def.picks_best ? 1 : R;
    for (std::size_t r = 0; r < read; ++r)
      for (std::size_t i = 0; i < cols.size(); ++i)
        carry(out, in, p.slice_nodes[r][l][i], leader,
              def.exchanges ? weights_of(i) + read_moments_of_slice(i)
                            : layer * m * slice_share(i));
    if (!def.exchanges) { // none: the leader hands the collected layers on
      carry(out, in, leader, p.coordinator_node, layer * m * static_cast<double>(R));
      continue;
    }
    // The request (theta, for a policy with a state or coded rounds, and
    // the policy state) and the result (one state for every replica, or one
    // each with a state, and the coded change).
    const bool theta = def.keeps_state || coding != sync_precision::f32;
    carry(out, in, p.coordinator_node, leader, (theta ? layer : 0) + (def.keeps_state ? layer : 0));
    carry(out, in, leader, p.coordinator_node,
          layer * read_m * (def.keeps_state ? static_cast<double>(R) : 1) + (def.keeps_state ? layer : 0)
              + (coding != sync_precision::f32 ? coded_bytes_of(w[l], w[l + 1], coding) : 0));
    // Apply: every replica (but the best, under best) gets its new weights,
    // coded, and its moments only when the round changes them.
    for (std::size_t r = def.picks_best ? 1 : 0; r < R; ++r)
      for (std::size_t i = 0; i < cols.size(); ++i) {
        const double bytes = weights_of(i) + (sets_moments ? moments_of_slice(i) : 0);
        carry(out, in, p.coordinator_node, leader, bytes);
        carry(out, in, leader, p.slice_nodes[r][l][i], bytes);
      }
  }
}

} // namespace

step_traffic estimate_traffic(const placement_plan& p, const run_config& run) {
  step_traffic t;
  const std::size_t N = p.nodes.size();
  t.pipeline_out.assign(N, 0);
  t.pipeline_in.assign(N, 0);
  t.sync_out.assign(N, 0);
  t.sync_in.assign(N, 0);
  t.flops.assign(N, 0);
  const double B = static_cast<double>(run.training.batch_size);
  t.steps_per_round = std::max(1.0, static_cast<double>(run.topology.sync_every) / B);
  // A round's validation pass, spread over its steps, as forward batches.
  const double val = validation_per_round(run, p.replicas) / B / t.steps_per_round;
  for (std::size_t r = 0; r < p.replicas; ++r)
    add_pipeline(p, run, r, 1 + val, 1, t);
  add_sync(p, run, t);
  return t;
}

prediction predict(const placement_plan& p, const run_config& run, const step_traffic& t,
                   const std::vector<node_figures>& nodes) {
  prediction out;
  double busiest = -1; // bytes in + out per step
  double train = 0;    // seconds per training step, the slowest node's
  double sync = 0;     // seconds per round of sync transfers, the slowest link's
  std::string train_limit, sync_limit;
  for (std::size_t n = 0; n < p.nodes.size(); ++n) {
    const node_figures& fig = nodes.at(n);
    const double rate = fig.mbit * 1e6 / 8; // bytes/s each way
    const double link = std::max(t.pipeline_out[n], t.pipeline_in[n]) / rate;
    const double compute = t.flops[n] / (fig.gflops * 1e9 * fig.cores);
    // A round's transfers come one after another (read, reply, apply), and
    // training waits for them: in and out add up.
    const double round = (t.sync_out[n] + t.sync_in[n]) / rate;
    const double total = t.pipeline_out[n] + t.pipeline_in[n]
                         + (t.sync_out[n] + t.sync_in[n]) / t.steps_per_round;
    if (total > busiest) {
      busiest = total;
      out.busiest_link = p.nodes[n];
    }
    if (link > train) {
      train = link;
      train_limit = "link of " + p.nodes[n]
                    + (t.pipeline_out[n] >= t.pipeline_in[n] ? " (out)" : " (in)");
    }
    if (compute > train) {
      train = compute;
      train_limit = "compute on " + p.nodes[n];
    }
    if (round > sync) {
      sync = round;
      sync_limit = "sync rounds through the link of " + p.nodes[n];
    }
  }
  const double sync_per_step = sync / t.steps_per_round;
  out.step_seconds = train + sync_per_step;
  out.bottleneck = sync_per_step > train ? sync_limit : train_limit;
  out.busiest_link_bytes = busiest / static_cast<double>(std::max<std::size_t>(p.replicas, 1));
  out.samples_per_second = out.step_seconds > 0
                               ? static_cast<double>(p.replicas * run.training.batch_size)
                                     / out.step_seconds
                               : 0;
  return out;
}

namespace {

std::string num(double v, int decimals = 0) {
  return format_value(decimals == 0 ? "%.0f" : decimals == 1 ? "%.1f" : "%.2f", v);
}

/// `cluster` with `n` nodes of its own (n000, n001, ...; hosts 10.x.y.z).
cluster_config with_nodes(cluster_config c, std::size_t n) {
  c.nodes.clear();
  const std::size_t digits = std::to_string(n - 1).size();
  for (std::size_t i = 0; i < n; ++i) {
    std::string id = std::to_string(i);
    id.insert(0, digits - id.size(), '0');
    node_address a;
    a.id = "n" + id;
    a.host = "10." + std::to_string(i / 65536 % 256) + "." + std::to_string(i / 256 % 256) + "."
             + std::to_string(i % 256);
    a.port = 4200;
    a.metrics_port = 9470;
    c.nodes.push_back(a);
  }
  if (c.placement.strategy == placement_strategy::listed) // its lists name other nodes
    c.placement = placement_config{};
  return c;
}

std::vector<node_figures> figures_of(const placement_plan& p, const plan_options& opt) {
  std::vector<node_figures> out(p.nodes.size());
  for (auto& f : out) {
    f.mbit = opt.default_mbit;
    f.gflops = opt.gflops;
    f.cores = opt.cores;
  }
  for (const auto& [id, mbit] : opt.bandwidth) {
    const auto it = std::find(p.nodes.begin(), p.nodes.end(), id);
    if (it == p.nodes.end())
      throw error("--bandwidth: no node \"" + id + "\" in the cluster");
    if (!(mbit > 0))
      throw error("--bandwidth: node " + id + " needs a rate above 0 Mbit/s");
    out[static_cast<std::size_t>(it - p.nodes.begin())].mbit = mbit;
  }
  return out;
}

std::string strategy_block(const cluster_config& c, const plan_options& opt) {
  const placement_plan p = plan_placement(c);
  const step_traffic t = estimate_traffic(p, c.run);
  const prediction x = predict(p, c.run, t, figures_of(p, opt));
  double sync = 0;
  for (double b : t.sync_out)
    sync += b;
  std::string out = std::string{to_string(c.placement.strategy)};
  out.resize(std::max<std::size_t>(out.size(), 12), ' ');
  return out + num(x.samples_per_second) + " samples/s  bottleneck: " + x.bottleneck
         + "; busiest link " + x.busiest_link + ": " + num(x.busiest_link_bytes / 1e3, 1)
         + " KB per batch (in + out); sync rounds move " + num(sync / 1e6, 1) + " MB between nodes\n";
}

} // namespace

std::string plan_report(const cluster_config& cluster, const plan_options& opt) {
  const cluster_config base = opt.nodes > 0 ? with_nodes(cluster, opt.nodes) : cluster;
  const run_config& run = base.run;
  std::string out = "plan: " + std::to_string(base.nodes.size()) + " nodes, "
                    + std::to_string(run.topology.replicas) + " replicas, "
                    + std::to_string(run.model.layers.size() - 1) + " swarms, batch "
                    + std::to_string(run.training.batch_size) + ", sync every "
                    + std::to_string(run.topology.sync_every) + " samples ("
                    + std::string{to_string(run.topology.policy)} + "), wire "
                    + std::string{to_string(run.system.wire)} + ", sync "
                    + std::string{to_string(run.topology.sync_coding)}
                    + (run.topology.sync_feedback ? " with feedback" : "")
                    + (run.topology.round_moments ? "" : ", moments only for run states") + "\n";
  out +=
      "assumed per node: cores "
      + num(opt.cores, opt.cores == static_cast<double>(static_cast<long long>(opt.cores)) ? 0 : 2)
      + " at " + num(opt.gflops, 1) + " GFLOP/s each, links at " + num(opt.default_mbit, 0)
      + " Mbit/s each way";
  for (const auto& [id, mbit] : opt.bandwidth)
    out += ", " + id + " at " + num(mbit, 0);
  out += "\nnot modelled: latency, pipelining, the actors' message handling, nodes sharing "
         "cores (give them a fraction each with --cores)\n";
  for (auto s : candidate_strategies(base)) {
    cluster_config c = base;
    c.placement.strategy = s;
    out += strategy_block(c, opt);
  }
  if (base.placement.strategy == placement_strategy::listed)
    out += strategy_block(base, opt);
  // What placement "auto" would choose: the description's own figures (the
  // plan must be the same on every node), at a nominal core rate.
  cluster_config a = base;
  a.placement.strategy = placement_strategy::automatic;
  const placement_plan described = plan_placement(a);
  out += "auto, on the description's nodes.bandwidth_mbit and nodes.cores at "
         + num(auto_core_gflops) + " GFLOP/s per core, chooses " + described.prediction + "\n";
  // A run plans auto again on what its nodes measure at start; these
  // figures stand in for the measurement.
  const std::vector<node_figures> assumed = figures_of(described, opt);
  out += "auto, on the figures assumed above as if measured at start, chooses "
         + plan_placement(a, &assumed).prediction + "\n";
  return out;
}

std::string measured_report(const cluster_config& cluster, const std::vector<node_figures>& nodes,
                            const placement_plan& mine) {
  if (nodes.size() != mine.nodes.size())
    throw error("measured_report: figures for " + std::to_string(nodes.size()) + " of "
                + std::to_string(mine.nodes.size()) + " nodes");
  std::string out = "measured at start:";
  for (std::size_t i = 0; i < nodes.size(); ++i)
    out += std::string{i == 0 ? " " : "; "} + mine.nodes[i] + " " + num(nodes[i].mbit)
           + " Mbit/s, " + num(nodes[i].cores) + " x " + num(nodes[i].gflops, 1) + " GFLOP/s";
  out += "\n";
  std::vector<std::pair<double, std::string>> lines;
  const auto line = [&](const placement_plan& p, const std::string& name) {
    const prediction x = predict(p, cluster.run, estimate_traffic(p, cluster.run), nodes);
    lines.emplace_back(x.samples_per_second, name + " " + num(x.samples_per_second)
                                                 + " samples/s (bottleneck: " + x.bottleneck + ")");
  };
  line(mine, std::string{to_string(mine.chosen)} + " (this run's placement)");
  for (auto s : candidate_strategies(cluster)) {
    if (s == mine.chosen)
      continue;
    cluster_config c = cluster;
    c.placement.strategy = s;
    line(plan_placement(c), std::string{to_string(s)});
  }
  std::stable_sort(lines.begin(), lines.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  out += "the cost model on these figures:";
  for (std::size_t i = 0; i < lines.size(); ++i)
    out += std::string{i == 0 ? " " : ", "} + lines[i].second;
  return out + "\n";
}

double measure_gflops(const run_config& run, double seconds) {
  // The centralised trainer on one core, a batch at a time: the run's real
  // math (forward, backward, optimizer step), none of the actors' work.
  using clock = std::chrono::steady_clock;
  const std::size_t B = run.training.batch_size;
  centralised_trainer trainer{run.model, run.optimizer, run.training.seed};
  matrix x = matrix::Constant(static_cast<Eigen::Index>(B),
                              static_cast<Eigen::Index>(run.model.layers.front()), 0.5f);
  std::vector<std::uint8_t> labels(B);
  for (std::size_t i = 0; i < B; ++i)
    labels[i] = static_cast<std::uint8_t>(i % run.model.layers.back());
  double flops = 0;
  const auto& w = run.model.layers;
  for (std::size_t l = 0; l + 1 < w.size(); ++l)
    flops += (l == 0 ? 4.0 : 6.0) * static_cast<double>(B * w[l] * w[l + 1]);
  std::size_t n = 0;
  const auto t0 = clock::now();
  double elapsed = 0;
  while (elapsed < seconds || n < 3) {
    trainer.train_batch(x, labels.data());
    ++n;
    elapsed = std::chrono::duration<double>(clock::now() - t0).count();
  }
  return flops * static_cast<double>(n) / elapsed / 1e9;
}

} // namespace nettorrent
