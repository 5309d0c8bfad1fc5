// The cost model behind `nettorrent plan`: what a placement makes cross each
// node's link and compute on each node, and the throughput that follows.
// A pure function of the plan, the run settings and the figures given for
// each node (link rate, core speed, cores). Plain C++
// (tests/unit/test_cost_model.cpp).
//
// Per training step (every replica trains one batch of B samples):
//   - pipeline bytes: every message between two actors on different nodes,
//     with its payload (activations, gradient columns, partial gradients at
//     the wire precision; labels one byte each) plus message_overhead bytes;
//     acks and losses count their overhead only;
//   - sync bytes: a sync round's transfers (the leaders read each replica's
//     weights, coded at topology.sync_precision, and its optimizer moments
//     (f32); the coordinator hands them theta and the policy state; the
//     result comes back and is applied to every replica: the coded weights,
//     and the moments only when the round changes them) spread over the
//     sync_every / B steps of a round;
//   - a round's validation pass, as forward-only batches spread over the
//     round's steps (each replica's share of the validation subset);
//   - flops: 6 B fan_in cols per slice and batch (forward, dW, partial dX;
//     the first layer computes no dX: 4), 2 B fan_in cols per validation batch.
// A node's training step takes the longer of its compute (flops / (gflops x
// cores)) and its link (the larger of the bytes out and in, at its rate; each
// direction has the full rate, as with a tbf limit on both directions); the
// cluster's step is the slowest node's. A sync round stops training while
// its transfers run one after another (read, reply, apply), so its time on
// a link is (out + in) / rate, and the slowest link's adds to the round:
//   step = max_n max(compute_n, link_n) + max_n sync_n / (sync_every / B),
//   samples/s = R B / step.
// Not modelled: latency and pipelining (max_in_flight), CAF's message
// handling (so compute is optimistic), cores shared by several nodes on one
// machine.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "nettorrent/cluster.hpp"
#include "nettorrent/placement.hpp"

namespace nettorrent {

/// BASP framing and CAF's message header per message that crosses nodes
/// (an estimate).
inline constexpr double message_overhead = 100;

/// The core rate placement "auto" assumes when it plans from the
/// description alone (nettorrent plan, the plan a node prints at start):
/// GFLOP/s per core.
inline constexpr double auto_core_gflops = 50;

/// Bytes and work per training step, per node (index as plan.nodes).
struct step_traffic {
  std::vector<double> pipeline_out, pipeline_in; ///< bytes per step
  std::vector<double> sync_out, sync_in;         ///< bytes per sync round
  std::vector<double> flops;                     ///< per step
  double steps_per_round = 1;                    ///< sync_every / batch_size
};

step_traffic estimate_traffic(const placement_plan& plan, const run_config& run);

struct prediction {
  double samples_per_second = 0;
  double step_seconds = 0;
  std::string bottleneck;            ///< "link of n1 (out)", "compute on n0"
  double busiest_link_bytes = 0;     ///< in + out per batch of one replica, the busiest link
  std::string busiest_link;          ///< its node id
};

/// `nodes[i]` describes plan.nodes[i].
prediction predict(const placement_plan& plan, const run_config& run, const step_traffic& t,
                   const std::vector<node_figures>& nodes);

/// What `nettorrent plan` is asked.
struct plan_options {
  double default_mbit = 1000;                             ///< links not named below
  std::vector<std::pair<std::string, double>> bandwidth;  ///< node id -> Mbit/s
  std::size_t nodes = 0; ///< > 0: that many nodes n000, n001, ... instead of the file's
  double gflops = 1;     ///< one core's effective rate (measure_gflops())
  double cores = 1;      ///< per node
};

/// The predictions of round_robin, by_swarm and by_replica (and the file's
/// explicit placement, if it has one and the nodes are its own) for
/// `cluster`, one block per strategy, with the assumptions first. Throws
/// nettorrent::error for a bandwidth naming an unknown node or a rate <= 0.
std::string plan_report(const cluster_config& cluster, const plan_options& opt);

/// What the cost model predicts for `cluster` on figures measured at start,
/// `nodes[i]` for the i-th node in sorted id order (plan order): one line
/// naming each node's figures, then the run's placement `mine` and each
/// fixed strategy, fastest first, with samples/s and bottleneck.
std::string measured_report(const cluster_config& cluster, const std::vector<node_figures>& nodes,
                            const placement_plan& mine);

/// One core's effective rate on the run's model, in GFLOP/s: the
/// centralised trainer's training batches (forward, backward and the
/// optimizer step) for about `seconds`, counted as the model's flops.
double measure_gflops(const run_config& run, double seconds = 0.3);

} // namespace nettorrent
