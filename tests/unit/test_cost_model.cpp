// The cost model of `nettorrent plan` (cost_model.hpp): the bytes each
// placement makes cross each node's link, worked out by hand for the
// shipped 3-host cluster; the compute-bound and link-bound predictions; and
// the report, its errors and larger clusters.
#include <gtest/gtest.h>

#include "test_support.hpp"

#include <string>
#include <vector>

#include "nettorrent/cluster.hpp"
#include "nettorrent/cost_model.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/placement.hpp"

namespace nt = nettorrent;
using test_support::error_of;

namespace {

/// config/hosts with 2 replicas: 784-256-128-10, batch 64, 1 slice per
/// layer, outer with Adam, 5000 validation samples; a round every 6400
/// samples per replica (100 steps), f32 rounds that read the moments,
/// no feedback.
nt::cluster_config hosts(nt::placement_strategy s) {
  nt::cluster_config c =
      nt::load_cluster_config(std::string{NETTORRENT_SOURCE_DIR} + "/config/hosts/cluster.ini");
  c.run.topology.sync_every = 6400;
  c.run.topology.replicas = 2;
  c.run.topology.sync_coding = nt::sync_precision::f32;
  c.run.topology.sync_feedback = false;
  c.run.topology.round_moments = true;
  c.placement.strategy = s;
  c.validate();
  return c;
}

constexpr double B = 64;
constexpr double o = nt::message_overhead;

TEST(CostModel, BySwarmCrossesTheSwarmsLinksEveryBatch) {
  const nt::cluster_config c = hosts(nt::placement_strategy::by_swarm);
  const nt::placement_plan p = nt::plan_placement(c);
  const nt::step_traffic t = nt::estimate_traffic(p, c.run);
  EXPECT_DOUBLE_EQ(t.steps_per_round, 100);
  // n1 holds swarm 1 (256 -> 128) and the hidden relay feeding it. Per
  // replica and batch: H (64 x 256) in and its gradient (64 x 256) out to
  // swarm 0 on n0; 64 x 128 out to the relay on n2 and its gradient in.
  // The synced model's validation: 2500 samples per replica and round, as
  // forward traffic spread over the round's 100 steps.
  const double val = 2500 / B / 100;
  const double h1 = B * 256 * 4 + o, h2 = B * 128 * 4 + o;
  EXPECT_DOUBLE_EQ(t.pipeline_in[1], 2 * ((1 + val) * h1 + h2));
  EXPECT_DOUBLE_EQ(t.pipeline_out[1], 2 * ((1 + val) * h2 + h1));
  // Flops: n1 computes layer 2's forward (and validation), dW and dX.
  EXPECT_DOUBLE_EQ(t.flops[1], 2 * (2 * (1 + val) + 4) * B * 256 * 128);
  // bf16 halves every payload.
  nt::cluster_config half = c;
  half.run.system.wire = nt::wire_precision::bf16;
  const nt::step_traffic th = nt::estimate_traffic(nt::plan_placement(half), half.run);
  EXPECT_DOUBLE_EQ(th.pipeline_in[1], 2 * ((1 + val) * (h1 - o) / 2 + (h2 - o) / 2 + (2 + val) * o));
  // int8: a byte per value and a float scale per row.
  nt::cluster_config q = c;
  q.run.system.wire = nt::wire_precision::int8;
  const nt::step_traffic tq = nt::estimate_traffic(nt::plan_placement(q), q.run);
  const double q1 = B * 256 + B * 4 + o, q2 = B * 128 + B * 4 + o;
  EXPECT_DOUBLE_EQ(tq.pipeline_in[1], 2 * ((1 + val) * q1 + q2));
}

TEST(CostModel, ByReplicaCrossesHostsOnlyInSyncRounds) {
  const nt::cluster_config c = hosts(nt::placement_strategy::by_replica);
  const nt::placement_plan p = nt::plan_placement(c);
  const nt::step_traffic t = nt::estimate_traffic(p, c.run);
  for (std::size_t n = 0; n < 3; ++n) {
    EXPECT_EQ(t.pipeline_out[n], 0) << p.nodes[n];
    EXPECT_EQ(t.pipeline_in[n], 0) << p.nodes[n];
  }
  // Replica 1 lives on n1, its leaders on n0: per round each layer's state
  // (W, b and Adam's two moments, f32) goes to the leader, and only the new
  // weights come back (outer leaves every replica's moments as they are).
  double state = 0;
  double weights = 0;
  for (const auto& [a, b] : {std::pair{784, 256}, std::pair{256, 128}, std::pair{128, 10}}) {
    state += 3.0 * (a * b + b) * 4 + o;
    weights += 1.0 * (a * b + b) * 4 + o;
  }
  EXPECT_DOUBLE_EQ(t.sync_out[1], state);
  EXPECT_DOUBLE_EQ(t.sync_in[1], weights);
  EXPECT_EQ(t.sync_out[2] + t.sync_in[2], 0); // n2 hosts nothing
  // int8 rounds: the weights go as a byte each plus a float scale per row.
  nt::cluster_config q = c;
  q.run.topology.sync_coding = nt::sync_precision::int8;
  const nt::step_traffic ti = nt::estimate_traffic(p, q.run);
  double coded = 0;
  double moments = 0;
  for (const auto& [a, b] : {std::pair{784, 256}, std::pair{256, 128}, std::pair{128, 10}}) {
    coded += 1.0 * (a * b + b) + (a + 1) * 4 + o;
    moments += 2.0 * (a * b + b) * 4;
  }
  EXPECT_DOUBLE_EQ(ti.sync_out[1], coded + moments);
  EXPECT_DOUBLE_EQ(ti.sync_in[1], coded);
}

TEST(CostModel, PredictionsAreBoundByComputeOrByTheSlowestLink) {
  const nt::cluster_config c = hosts(nt::placement_strategy::by_swarm);
  const nt::placement_plan p = nt::plan_placement(c);
  const nt::step_traffic t = nt::estimate_traffic(p, c.run);
  // Fast links: compute bound; the busiest node's flops set the step.
  std::vector<nt::node_figures> fast(3, nt::node_figures{1e9, 1, 1});
  const nt::prediction a = nt::predict(p, c.run, t, fast);
  double most = 0;
  for (double f : t.flops)
    most = std::max(most, f);
  EXPECT_NEAR(a.step_seconds, most / 1e9, 1e-9);
  EXPECT_EQ(a.bottleneck, "compute on n0");
  EXPECT_NEAR(a.samples_per_second, 2 * B / a.step_seconds, 1e-6);
  // n1 at 1 Mbit/s: its link (the larger direction) sets the step.
  std::vector<nt::node_figures> slow = fast;
  slow[1].mbit = 1;
  const nt::prediction b = nt::predict(p, c.run, t, slow);
  EXPECT_NEAR(b.step_seconds,
              std::max(t.pipeline_out[1], t.pipeline_in[1]) / (1e6 / 8)
                  + (t.sync_out[1] + t.sync_in[1]) / (1e6 / 8) / 100,
              1e-9);
  EXPECT_EQ(b.busiest_link, "n1");
  EXPECT_GT(b.step_seconds, a.step_seconds);
}

TEST(CostModel, TheReportNamesEveryStrategyAndRefusesUnknownNodes) {
  const nt::cluster_config c = hosts(nt::placement_strategy::by_swarm);
  nt::plan_options opt;
  opt.default_mbit = 100;
  const std::string r = nt::plan_report(c, opt);
  for (const char* s : {"round_robin ", "by_swarm ", "by_replica ", "bottleneck: ", "links at 100"})
    EXPECT_CONTAINS(r, s);
  opt.bandwidth = {{"n9", 10}};
  EXPECT_CONTAINS(error_of([&] { nt::plan_report(c, opt); }), "no node \"n9\"");
  opt.bandwidth = {{"n1", 0}};
  EXPECT_CONTAINS(error_of([&] { nt::plan_report(c, opt); }), "above 0 Mbit/s");
  // The seed's picture on 100 hosts: 10 layers, 10 replicas of 10 slices.
  nt::cluster_config big = c;
  big.run.model.layers = {784, 256, 256, 128, 128, 128, 64, 64, 64, 32, 10};
  big.run.topology.replicas = 10;
  big.run.topology.slices = {10};
  opt.bandwidth.clear();
  opt.nodes = 100;
  const std::string r100 = nt::plan_report(big, opt);
  EXPECT_CONTAINS(r100, "plan: 100 nodes, 10 replicas, 10 swarms");
  EXPECT_CONTAINS(r100, "by_replica ");
}

TEST(CostModel, AutoChoosesByTheDescriptionsLinksAndCores) {
  // n1 at 100 Mbit/s: only sync rounds should cross hosts.
  nt::cluster_config c = hosts(nt::placement_strategy::automatic);
  for (auto& n : c.nodes)
    n.bandwidth_mbit = n.id == "n1" ? 100 : 1000;
  const nt::placement_plan slow = nt::plan_placement(c);
  EXPECT_EQ(slow.strategy, nt::placement_strategy::automatic);
  EXPECT_EQ(slow.chosen, nt::placement_strategy::by_replica);
  EXPECT_CONTAINS(nt::describe(slow), "auto chose by_replica: ");
  EXPECT_CONTAINS(slow.prediction, "samples/s predicted, by_swarm ");
  nt::cluster_config fixed = c;
  fixed.placement.strategy = nt::placement_strategy::by_replica;
  EXPECT_EQ(nt::plan_placement(fixed).canonical(), slow.canonical());
  // One replica on fast links: by_replica would put the whole model on one
  // node; splitting the swarms over three is faster.
  c.run.topology.replicas = 1;
  for (auto& n : c.nodes)
    n.bandwidth_mbit = 1000000;
  EXPECT_EQ(nt::plan_placement(c).chosen, nt::placement_strategy::by_swarm);
  // The figures are part of what nodes must agree on.
  nt::cluster_config other = c;
  other.nodes[2].cores = 8;
  EXPECT_NE(other.hash(), c.hash());
}

} // namespace

TEST(CostModel, AutoPlansOnTheStartUpFiguresWhereTheDescriptionGivesNone) {
  // One replica and no figures in the description: on fast measured links
  // the swarms spread over the three nodes; behind 1 Mbit/s links the whole
  // pipeline stays on one node.
  nt::cluster_config c = hosts(nt::placement_strategy::automatic);
  c.run.topology.replicas = 1;
  const std::vector<nt::node_figures> fast(3, nt::node_figures{1e6, 50, 1});
  const std::vector<nt::node_figures> slow(3, nt::node_figures{1, 50, 1});
  const nt::placement_plan a = nt::plan_placement(c, &fast);
  const nt::placement_plan b = nt::plan_placement(c, &slow);
  EXPECT_EQ(a.chosen, nt::placement_strategy::by_swarm);
  EXPECT_EQ(b.chosen, nt::placement_strategy::by_replica);
  EXPECT_CONTAINS(nt::describe(b), "on every node's start-up figures");
  EXPECT_CONTAINS(nt::describe(nt::plan_placement(c)), "50 GFLOP/s per core");
  // The description's figures stand: links given as fast outweigh slow
  // measurements.
  nt::cluster_config given = c;
  for (auto& n : given.nodes)
    n.bandwidth_mbit = 1000000;
  EXPECT_EQ(nt::plan_placement(given, &slow).chosen, nt::placement_strategy::by_swarm);
  // A link the probe could not measure (0) counts as 1000 Mbit/s.
  const nt::node_figures none{0, 40, 2};
  EXPECT_EQ(nt::planning_figures(c, "n1", &none).mbit, 1000);
  EXPECT_EQ(nt::planning_figures(c, "n1", &none).gflops, 40);
  EXPECT_EQ(nt::planning_figures(given, "n1", &none).mbit, 1000000);
  EXPECT_EQ(nt::planning_figures(c, "n1", nullptr).gflops, nt::auto_core_gflops);
  // Other strategies ignore the figures; a short list is refused.
  nt::cluster_config swarm = c;
  swarm.placement.strategy = nt::placement_strategy::by_swarm;
  EXPECT_EQ(nt::plan_placement(swarm, &slow), nt::plan_placement(swarm));
  const std::vector<nt::node_figures> two(2);
  EXPECT_CONTAINS(error_of([&] { nt::plan_placement(c, &two); }), "figures for 2 of 3 nodes");
}

TEST(CostModel, AutoSplitsEachReplicaOverAGroupWhenNodesOutnumberReplicas) {
  // Two replicas on four compute-bound nodes: by_replica leaves two nodes
  // idle; by_group lays each replica over two and halves each node's work.
  nt::cluster_config c = hosts(nt::placement_strategy::automatic);
  c.nodes.push_back(c.nodes.back());
  c.nodes.back().id = "n3";
  c.nodes.back().port = 4203;
  c.nodes.back().metrics_port = 9203;
  c.validate();
  const std::vector<nt::node_figures> fast(4, nt::node_figures{1e6, 50, 1});
  const nt::placement_plan p = nt::plan_placement(c, &fast);
  EXPECT_EQ(p.chosen, nt::placement_strategy::by_group);
  EXPECT_CONTAINS(p.prediction, "by_replica ");
  // Behind 1 Mbit/s links the pipeline stays whole on one node per replica.
  const std::vector<nt::node_figures> slow(4, nt::node_figures{1, 50, 1});
  EXPECT_EQ(nt::plan_placement(c, &slow).chosen, nt::placement_strategy::by_replica);
  nt::plan_options opt;
  EXPECT_CONTAINS(nt::plan_report(c, opt), "\nby_group ");
}

TEST(CostModel, TheMeasuredReportPredictsEveryLayoutOnTheStartUpFigures) {
  const nt::cluster_config c = hosts(nt::placement_strategy::by_swarm);
  // n1 behind a slow link: by_replica keeps its pipeline at home.
  const std::vector<nt::node_figures> figures{{1000, 50, 2}, {10, 40, 2}, {1000, 60, 1}};
  const std::string r = nt::measured_report(c, figures, nt::plan_placement(c));
  EXPECT_CONTAINS(r, "measured at start: n0 1000 Mbit/s, 2 x 50.0 GFLOP/s; n1 10 Mbit/s, 2 x "
                     "40.0 GFLOP/s; n2 1000 Mbit/s, 1 x 60.0 GFLOP/s\n");
  EXPECT_CONTAINS(r, "by_swarm (this run's placement) ");
  // Fastest first, each as the plan's own prediction on these figures.
  const auto at = [&](const char* s) { return r.find(s); };
  EXPECT_LT(at("by_replica "), at("by_swarm (this run's placement)"));
  for (auto s : {nt::placement_strategy::by_replica, nt::placement_strategy::by_swarm}) {
    nt::cluster_config x = c;
    x.placement.strategy = s;
    const nt::placement_plan p = nt::plan_placement(x);
    const nt::prediction want = nt::predict(p, x.run, nt::estimate_traffic(p, x.run), figures);
    EXPECT_CONTAINS(r, " " + std::to_string(static_cast<long long>(want.samples_per_second + 0.5))
                           + " samples/s (bottleneck: " + want.bottleneck + ")");
  }
  EXPECT_CONTAINS(error_of([&] { nt::measured_report(c, {figures[0]}, nt::plan_placement(c)); }),
                  "figures for 1 of 3 nodes");
}
