// Cluster runs as real processes: `nettorrent node` and
// scripts/launch-cluster.sh started with fork/exec on loopback.
//
// Every test writes its own cluster.ini and node files into a fresh temp
// directory, with TCP ports found free at run time, so parallel ctest runs
// don't clash. Each child runs in a process group of its own; the fixture
// kills (SIGKILL) and reaps every group in TearDown, whatever failed, and no
// wait lasts beyond the test's budget of 120 s.
#include <gtest/gtest.h>

#include "test_support.hpp"

#include "child_process.hpp"
#include "process_test.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/cluster.hpp"
#include "nettorrent/placement.hpp"

extern char** environ;

namespace nt = nettorrent;
using test_support::read_file;
using test_support::write_file;
namespace fs = std::filesystem;

namespace {

using integration::clock_type;
using integration::enable_tls;
using integration::run_spec;
using integration::seconds_since;
using namespace std::chrono_literals;

const std::string cli = NETTORRENT_CLI;
const std::string source_dir = NETTORRENT_SOURCE_DIR;
const std::string launcher = source_dir + "/scripts/launch-cluster.sh";

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

using integration::child_process;
using integration::describe_status;
using integration::free_ports;

class ClusterProcesses : public integration::process_test {
protected:
  child_process& start_node(const std::string& node_file, const std::string& name,
                            std::vector<std::string> overrides = {}) {
    std::vector<std::string> argv{cli, "node", "--config-file=" + path(node_file)};
    argv.insert(argv.end(), overrides.begin(), overrides.end());
    return start(name, std::move(argv));
  }

  /// Writes `file` (a cluster description: `spec`'s run plus [placement]
  /// and [nodes] for n0..n(N-1) on `ports`) and, unless `node_files` is
  /// false, node-i.ini naming it.
  void write_cluster(const run_spec& spec, const std::vector<std::uint16_t>& ports,
                     const std::vector<std::uint16_t>& metrics, const std::string& output_dir,
                     const std::string& file = "cluster.ini", bool node_files = true) {
    std::vector<integration::test_node> nodes;
    for (std::size_t i = 0; i < ports.size(); ++i)
      nodes.push_back({"127.0.0.1", ports[i], metrics[i]});
    write_file(path(file), integration::cluster_description(spec, nodes, output_dir));
    if (node_files)
      for (std::size_t i = 0; i < ports.size(); ++i)
        write_node_file("node-" + std::to_string(i) + ".ini", file, i, ports[i]);
  }

  void write_node_file(const std::string& name, const std::string& cluster_file, std::size_t i,
                       std::uint16_t port) {
    write_file(path(name), integration::node_file(cluster_file, i, "127.0.0.1", port));
  }

  /// 2n free ports: n middleman ports, then n metrics ports.
  void pick_ports(std::size_t n, std::vector<std::uint16_t>& ports,
                  std::vector<std::uint16_t>& metrics) {
    auto all = free_ports(2 * n);
    ASSERT_EQ(all.size(), 2 * n) << "cannot find free ports on 127.0.0.1";
    ports.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n));
    metrics.assign(all.begin() + static_cast<std::ptrdiff_t>(n), all.end());
  }

  /// A copy of config/cluster in <dir>/<sub>, with every middleman and
  /// metrics port replaced by a free one.
  std::string copy_shipped_cluster(const std::string& sub) {
    std::vector<std::uint16_t> ports, metrics;
    pick_ports(3, ports, metrics);
    if (ports.size() != 3)
      return {};
    const fs::path to = dir_ / sub;
    fs::create_directories(to);
    for (const auto& name : {"cluster.ini", "node-0.ini", "node-1.ini", "node-2.ini"}) {
      std::string text = read_file(source_dir + "/config/cluster/" + name);
      EXPECT_FALSE(text.empty()) << "config/cluster/" << name;
      // Two phases through placeholders: a new port may contain an old one
      // ("59200" holds "9200"), which a direct replacement would rewrite.
      for (std::size_t i = 0; i < 3; ++i) {
        text = replace_all(text, std::to_string(4200 + i), "@PORT" + std::to_string(i) + "@");
        text = replace_all(text, std::to_string(9200 + i), "@METRICS" + std::to_string(i) + "@");
      }
      for (std::size_t i = 0; i < 3; ++i) {
        text = replace_all(text, "@PORT" + std::to_string(i) + "@", std::to_string(ports[i]));
        text = replace_all(text, "@METRICS" + std::to_string(i) + "@", std::to_string(metrics[i]));
      }
      write_file((to / name).string(), text);
    }
    // The copy must really use the new ports, or runs could clash.
    const nt::cluster_config cc = nt::load_cluster_config((to / "cluster.ini").string());
    EXPECT_EQ(cc.nodes.size(), 3u);
    for (std::size_t i = 0; i < cc.nodes.size() && i < 3; ++i) {
      EXPECT_EQ(cc.nodes[i].port, ports[i]);
      EXPECT_EQ(cc.nodes[i].metrics_port, metrics[i]);
    }
    return to.string();
  }

  /// Starts node-0.ini .. node-(n-1).ini and waits until every one exited 0.
  std::vector<child_process*> run_nodes(int n) {
    std::vector<child_process*> nodes;
    for (int i = 0; i < n; ++i)
      nodes.push_back(&start_node("node-" + std::to_string(i) + ".ini", "n" + std::to_string(i)));
    for (auto* c : nodes)
      EXPECT_TRUE(exits_within(*c, 60s));
    for (auto* c : nodes)
      EXPECT_TRUE(c->exited_ok()) << c->log();
    return nodes;
  }

  child_process::env_changes launcher_env(const std::optional<std::string>& cluster_dir) const {
    return {{"NETTORRENT_BIN", cli},
            {"NETTORRENT_CLUSTER_DIR", cluster_dir},
            {"NETTORRENT_KILL_GRACE", std::string{"5"}}};
  }

};

bool bytes_equal(const float* a, const float* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0;
}

void expect_bit_identical(const nt::optimizer_state& a, const nt::optimizer_state& b,
                          const std::string& what) {
  EXPECT_EQ(a.steps, b.steps) << what;
  ASSERT_EQ(a.m.size(), b.m.size()) << what;
  ASSERT_EQ(a.v.size(), b.v.size()) << what;
  EXPECT_TRUE(bytes_equal(a.m.data(), b.m.data(), a.m.size())) << what << ": first moments differ";
  EXPECT_TRUE(bytes_equal(a.v.data(), b.v.data(), a.v.size())) << what << ": second moments differ";
}

// ---------------------------------------------------------------------------

TEST_F(ClusterProcesses, ThreeNodeRunIsBitIdenticalToTheEmbeddedRun) {
  std::vector<std::uint16_t> ports, metrics;
  ASSERT_NO_FATAL_FAILURE(pick_ports(3, ports, metrics));
  run_spec spec; // round_robin, 1 replica, 3 slices per layer, max_in_flight 1, 20 batches
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("cluster-out")));
  // The point of the test: each layer's slices sit on three different
  // processes, so every layer's forward and backward pass crosses the wire.
  const nt::cluster_config cc = nt::load_cluster_config(path("cluster.ini"));
  const nt::placement_plan plan = nt::plan_placement(cc);
  ASSERT_EQ(plan.layers(), 3u);
  for (std::size_t l = 0; l < plan.layers(); ++l) {
    const auto& nodes = plan.slice_nodes.at(0).at(l);
    ASSERT_EQ(nodes.size(), 3u);
    EXPECT_EQ(std::set<std::size_t>(nodes.begin(), nodes.end()).size(), 3u)
        << "layer " << l << "'s slices share a node";
  }

  ASSERT_NO_FATAL_FAILURE(run_embedded(spec, path("embedded-out")));

  const auto t = clock_type::now();
  const std::vector<child_process*> nodes = run_nodes(3);
  ASSERT_FALSE(HasFailure());
  std::cout << "3-node run: " << seconds_since(t) << " s\n";
  EXPECT_CONTAINS(nodes[0]->out(), "test: accuracy");
  EXPECT_CONTAINS(nodes[1]->out(), "node n1: the run is over");
  EXPECT_CONTAINS(nodes[2]->out(), "node n2: the run is over");
  // Each node measures its link and compute at start; the coordinator
  // prints every node's figures with the cost model's predictions.
  for (std::size_t i = 1; i < 3; ++i) {
    EXPECT_CONTAINS(nodes[i]->out(), "link to the coordinator's node: 1.05 MB in ");
    EXPECT_CONTAINS(nodes[i]->out(), " GFLOP/s on one core");
  }
  EXPECT_CONTAINS(nodes[0]->out(), "node n0: compute: ");
  EXPECT_CONTAINS(nodes[0]->out(), "coordinator: measured at start: n0 ");
  EXPECT_CONTAINS(nodes[0]->out(), "; n2 ");
  EXPECT_CONTAINS(nodes[0]->out(), "coordinator: the cost model on these figures: ");
  EXPECT_CONTAINS(nodes[0]->out(), "round_robin (this run's placement) ");

  const nt::model_checkpoint a = nt::load_checkpoint(path("embedded-out/model.ckpt"));
  const nt::model_checkpoint b = nt::load_checkpoint(path("cluster-out/model.ckpt"));
  EXPECT_EQ(a.header.samples, 1280u);
  EXPECT_EQ(a.header.step, 20u);
  EXPECT_EQ(a.header.layers, b.header.layers);
  EXPECT_EQ(a.header.activations, b.header.activations);
  EXPECT_EQ(a.header.optimizer, b.header.optimizer);
  EXPECT_EQ(a.header.config_hash, b.header.config_hash);
  EXPECT_EQ(a.header.step, b.header.step);
  EXPECT_EQ(a.header.samples, b.header.samples);
  EXPECT_EQ(a.header.epoch, b.header.epoch);
  EXPECT_EQ(a.header.rng_state, b.header.rng_state);
  ASSERT_EQ(a.layers.size(), 3u);
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    const auto& x = a.layers[l];
    const auto& y = b.layers[l];
    const std::string what = "layer " + std::to_string(l + 1);
    ASSERT_EQ(x.params.w.rows(), y.params.w.rows()) << what;
    ASSERT_EQ(x.params.w.cols(), y.params.w.cols()) << what;
    ASSERT_EQ(x.params.b.size(), y.params.b.size()) << what;
    EXPECT_TRUE(bytes_equal(x.params.w.data(), y.params.w.data(),
                            static_cast<std::size_t>(x.params.w.size())))
        << what << ": W differs (max |diff| " << (x.params.w - y.params.w).cwiseAbs().maxCoeff()
        << ")";
    EXPECT_TRUE(bytes_equal(x.params.b.data(), y.params.b.data(),
                            static_cast<std::size_t>(x.params.b.size())))
        << what << ": b differs";
    expect_bit_identical(x.w_state, y.w_state, what + " W optimizer state");
    expect_bit_identical(x.b_state, y.b_state, what + " b optimizer state");
    // Adam: both moments exist, and every slice took all 20 steps.
    EXPECT_EQ(x.w_state.m.size(), static_cast<std::size_t>(x.params.w.size())) << what;
    EXPECT_EQ(x.w_state.steps, 20u) << what;
  }
}

TEST_F(ClusterProcesses, ThreeNodeRunWithMutualTlsIsBitIdenticalToTheEmbeddedRun) {
  std::vector<std::uint16_t> ports, metrics;
  ASSERT_NO_FATAL_FAILURE(pick_ports(3, ports, metrics));
  run_spec spec; // round_robin, 1 replica, 3 slices per layer, max_in_flight 1, 20 batches
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("cluster-out")));
  ASSERT_NO_FATAL_FAILURE(enable_tls(dir_.string(), "cluster.ini", 3));
  ASSERT_NO_FATAL_FAILURE(run_embedded(spec, path("embedded-out")));
  const std::vector<child_process*> nodes = run_nodes(3);
  ASSERT_FALSE(HasFailure());
  EXPECT_CONTAINS(nodes[2]->out(), "node n2: TLS link to node n1");
  EXPECT_EQ(read_file(path("cluster-out/model.ckpt")), read_file(path("embedded-out/model.ckpt")))
      << "the TLS cluster's model differs from the embedded run's";
}

class Placements : public ClusterProcesses,
                   public ::testing::WithParamInterface<const char*> {};

TEST_P(Placements, TheRunIsBitIdenticalToTheEmbeddedRun) {
  // by_replica: each of 3 replicas (2 slices per layer) on a node of its
  // own, the coordinator and the leaders on n0; only the outer rounds cross
  // hosts. auto: whatever the cost model chooses (with a round every 5
  // batches, sync traffic weighs most: by_swarm), planned alike on every
  // node.
  std::vector<std::uint16_t> ports, metrics;
  ASSERT_NO_FATAL_FAILURE(pick_ports(3, ports, metrics));
  run_spec spec;
  spec.strategy = GetParam();
  // by_group with 2 replicas on 3 nodes: replica 0 on n0, replica 1's
  // swarms split over n1 and n2.
  spec.replicas = std::string{GetParam()} == "by_group" ? 2 : 3;
  spec.slices = 2;
  spec.train_limit = 3840;
  spec.sync_every = 320;
  spec.policy = "outer";
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("cluster-out")));
  const nt::placement_plan plan = nt::plan_placement(nt::load_cluster_config(path("cluster.ini")));
  const auto in_replica = [](const nt::actor_key& a, std::uint32_t r) {
    return a.replica == r && a.kind != nt::actor_kind::swarm_leader
           && a.kind != nt::actor_kind::coordinator;
  };
  for (std::uint32_t r = 0; r < 3 && plan.chosen == nt::placement_strategy::by_replica; ++r) {
    const auto here = nt::actors_on(plan, plan.nodes.at(r));
    const auto mine = std::count_if(here.begin(), here.end(),
                                    [&](const nt::actor_key& a) { return in_replica(a, r); });
    EXPECT_EQ(static_cast<std::size_t>(mine), plan.layout.replica_block_size())
        << "replica " << r << "'s block is not on " << plan.nodes.at(r);
  }
  if (plan.strategy == nt::placement_strategy::by_group) {
    const nt::placement_plan& g = plan;
    EXPECT_EQ(g.worker_nodes, (std::vector<std::size_t>{0, 1}));
    EXPECT_EQ(g.slice_nodes.at(1).at(1).at(0), 2u); // replica 1's swarm 1 on n2
  }
  ASSERT_NO_FATAL_FAILURE(run_embedded(spec, path("embedded-out")));
  const std::vector<child_process*> nodes = run_nodes(3);
  ASSERT_FALSE(HasFailure());
  EXPECT_CONTAINS(nodes[0]->out(), "placement " + std::string{GetParam()});
  if (std::string{GetParam()} == "auto") {
    // The coordinator plans on what the nodes measured and hands the plan
    // to every node.
    EXPECT_CONTAINS(nodes[0]->out(), "coordinator: placement planned on every node's start-up "
                                     "figures:\ncoordinator: placement auto: ");
    EXPECT_CONTAINS(nodes[0]->out(), "coordinator:   auto chose ");
    EXPECT_CONTAINS(nodes[0]->out(), "(on every node's start-up figures");
    for (std::size_t i = 1; i < 3; ++i)
      EXPECT_CONTAINS(nodes[i]->out(), "node n" + std::to_string(i)
                                           + ": placement planned on every node's start-up figures:");
    EXPECT_CONTAINS(nodes[1]->out(), "node n1:   n1: ");
  }
  EXPECT_CONTAINS(nodes[0]->out(), "test: accuracy");
  EXPECT_EQ(read_file(path("cluster-out/model.ckpt")), read_file(path("embedded-out/model.ckpt")))
      << "the " << GetParam() << " cluster's model differs from the embedded run's";
}

INSTANTIATE_TEST_SUITE_P(Strategies, Placements,
                         ::testing::Values("by_replica", "by_group", "auto"));

TEST_F(ClusterProcesses, ATlsNodeWithoutItsCertificateFileIsRefusedAtStart) {
  std::vector<std::uint16_t> ports, metrics;
  ASSERT_NO_FATAL_FAILURE(pick_ports(3, ports, metrics));
  run_spec spec;
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("out")));
  ASSERT_NO_FATAL_FAILURE(enable_tls(dir_.string(), "cluster.ini", 3));
  fs::remove(path("certs/n1.pem"));
  child_process& n1 = start_node("node-1.ini", "n1");
  ASSERT_TRUE(exits_within(n1, 10s));
  EXPECT_FALSE(n1.exited_ok());
  EXPECT_CONTAINS(n1.err(), "tls.certificate");
  EXPECT_CONTAINS(n1.err(), "n1.pem");
}

TEST_F(ClusterProcesses, APeerWithACertificateOfAnotherCaIsRefusedAndTheRunGoesOn) {
  std::vector<std::uint16_t> ports, metrics;
  ASSERT_NO_FATAL_FAILURE(pick_ports(3, ports, metrics));
  run_spec spec;
  spec.registration_timeout = 20;
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("out")));
  ASSERT_NO_FATAL_FAILURE(enable_tls(dir_.string(), "cluster.ini", 3));
  // A rogue n1: the same description, but its certificate comes from another CA.
  ASSERT_NO_FATAL_FAILURE(integration::make_certs(path("rogue"), {"n1"}));
  ASSERT_NO_FATAL_FAILURE(write_file(path("rogue.ini"),
                                     "[node]\ncluster_file = \"cluster.ini\"\nid = \"n1\"\nbind = "
                                     "\"127.0.0.1\"\ntls_certificate = \"rogue/n1.pem\"\ntls_key = "
                                     "\"rogue/n1-key.pem\"\ntls_ca_file = \"rogue/ca.pem\"\n"));
  child_process& n0 = start_node("node-0.ini", "n0");
  ASSERT_TRUE(prints_within(n0, "listening on", 20s));
  child_process& rogue = start("rogue", {cli, "node", "--config-file=" + path("rogue.ini"),
                                         "--system.registration_timeout=3"});
  ASSERT_TRUE(exits_within(rogue, 30s));
  EXPECT_FALSE(rogue.exited_ok()) << rogue.log();
  EXPECT_CONTAINS(rogue.err(), "cannot reach the coordinator");
  // Both sides say why: the coordinator's node logs the refused handshake.
  EXPECT_CONTAINS(n0.err(), "node n0: refused a TLS connection from 127.0.0.1:");
  // (The rogue, verifying n0's certificate against its own CA, aborts first.)
  EXPECT_CONTAINS(n0.err(), "alert unknown ca");
  // The real nodes still join and the run completes.
  child_process& n1 = start_node("node-1.ini", "n1");
  child_process& n2 = start_node("node-2.ini", "n2");
  for (auto* c : {&n0, &n1, &n2}) {
    ASSERT_TRUE(exits_within(*c, 60s));
    EXPECT_TRUE(c->exited_ok()) << c->log();
  }
  EXPECT_EQ(n0.out().find("node n1 joined"), n0.out().rfind("node n1 joined"))
      << "the rogue was admitted";
}

TEST_F(ClusterProcesses, NodeWithDifferentClusterDescriptionIsRefused) {
  std::vector<std::uint16_t> ports, metrics;
  ASSERT_NO_FATAL_FAILURE(pick_ports(3, ports, metrics));
  run_spec spec;
  spec.strategy = "by_swarm";
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("out")));
  run_spec other = spec;
  other.learning_rate = "0.002"; // one result-affecting key
  ASSERT_NO_FATAL_FAILURE(
      write_cluster(other, ports, metrics, path("out"), "cluster-other.ini", false));
  ASSERT_NO_FATAL_FAILURE(write_node_file("node-1-other.ini", "cluster-other.ini", 1, ports[1]));
  const std::string good_hash = nt::hash_hex(nt::load_cluster_config(path("cluster.ini")).hash());
  const std::string other_hash =
      nt::hash_hex(nt::load_cluster_config(path("cluster-other.ini")).hash());
  ASSERT_NE(good_hash, other_hash);

  child_process& n0 = start_node("node-0.ini", "n0");
  ASSERT_TRUE(prints_within(n0, "listening on", 20s));
  child_process& n1 = start_node("node-1-other.ini", "n1");
  ASSERT_TRUE(exits_within(n1, 30s));
  EXPECT_FALSE(n1.exited_ok()) << n1.log();
  const std::string err = n1.err();
  EXPECT_CONTAINS(err, "refused");
  EXPECT_CONTAINS(err, "hash");
  EXPECT_CONTAINS(err, other_hash);
  EXPECT_CONTAINS(err, good_hash);
  EXPECT_CONTAINS(err, "127.0.0.1:" + std::to_string(ports[0]));

  ASSERT_TRUE(prints_within(n0, "refused node n1", 10s));
  EXPECT_CONTAINS(n0.out(), "\ncoordinator: refused node n1: its cluster description hashes to "
                                + other_hash + ", the coordinator's to " + good_hash + "\n");
  // A refused peer does not bring the coordinator down; the fixture kills it.
  EXPECT_TRUE(n0.running()) << n0.log();
}

TEST_F(ClusterProcesses, UnreachableCoordinatorIsNamed) {
  std::vector<std::uint16_t> ports, metrics;
  ASSERT_NO_FATAL_FAILURE(pick_ports(3, ports, metrics));
  run_spec spec;
  spec.registration_timeout = 2;
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("out")));

  const auto t = clock_type::now();
  child_process& n1 = start_node("node-1.ini", "n1"); // n0 is never started
  ASSERT_TRUE(exits_within(n1, 10s));
  const double took = seconds_since(t);
  std::cout << "n1 gave up after " << took << " s: " << n1.describe() << '\n';
  EXPECT_FALSE(n1.exited_ok()) << n1.log();
  const std::string err = n1.err();
  EXPECT_CONTAINS(err, "cannot reach the coordinator");
  EXPECT_CONTAINS(err, "127.0.0.1:" + std::to_string(ports[0]));
  EXPECT_GE(took, 1.5) << "gave up before system.registration_timeout = 2";
}

// Lost nodes: the run recovers and goes on. The reference is the embedded
// run of the same run sections (a 3-node run without faults is bit-identical
// to it: ThreeNodeRunIsBitIdenticalToTheEmbeddedRun). With max_in_flight = 1
// the recovered cluster run must end bit for bit where it ends.
class LostNode : public ClusterProcesses {
protected:
  /// by_swarm, 2 replicas, 1 slice per layer, max_in_flight 1, 2 epochs of
  /// 12 800 samples, a sync round every 1280 samples per replica.
  run_spec recovery_spec(double heartbeat, double timeout) const {
    run_spec spec;
    spec.strategy = "by_swarm";
    spec.replicas = 2;
    spec.slices = 1;
    spec.max_in_flight = 1;
    spec.train_limit = 12800;
    spec.max_epochs = 2;
    spec.sync_every = 1280;
    spec.heartbeat_interval = heartbeat;
    spec.connection_timeout = timeout;
    return spec;
  }

  /// Runs the embedded reference of `spec` into <dir>/reference.
  void run_reference(const run_spec& spec) { run_embedded(spec, path("reference")); }

  /// Starts `n` nodes of `spec` and waits for the coordinator's first
  /// progress line, then a seeded random moment (0-400 ms) more.
  void start_cluster(const run_spec& spec, std::size_t n, unsigned seed) {
    std::vector<std::uint16_t> ports, metrics;
    ASSERT_NO_FATAL_FAILURE(pick_ports(n, ports, metrics));
    ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("out")));
    for (std::size_t i = 0; i < n; ++i)
      nodes_.push_back(&start_node("node-" + std::to_string(i) + ".ini", "n" + std::to_string(i)));
    ASSERT_TRUE(prints_within(*nodes_[0], "\nepoch ", 60s));
    std::mt19937 gen{seed};
    const auto delay = std::chrono::milliseconds(std::uniform_int_distribution<int>{0, 400}(gen));
    std::cout << "fault " << delay.count() << " ms after the first sync round (seed " << seed
              << ")\n";
    std::this_thread::sleep_for(delay);
    for (auto* c : nodes_)
      ASSERT_TRUE(c->running()) << "the run ended before the fault\n" << c->log();
  }

  /// The coordinator's node finishes; `survivors` too. Prints and checks
  /// what the failure cost; returns the samples redone.
  std::uint64_t expect_run_completes(const std::vector<std::size_t>& survivors,
                                     std::size_t rolled_back_at_most) {
    for (auto i : survivors)
      EXPECT_TRUE(exits_within(*nodes_[i], 90s));
    for (auto i : survivors)
      EXPECT_TRUE(nodes_[i]->exited_ok()) << nodes_[i]->log();
    const std::string out = nodes_[0]->out();
    EXPECT_CONTAINS(out, "recovering");
    EXPECT_CONTAINS(out, "test: accuracy");
    std::uint64_t redone = 0;
    const std::regex line{R"(recovered in ([0-9.a-z]+): ([0-9]+) samples to redo)"};
    std::size_t recoveries = 0;
    for (auto it = std::sregex_iterator(out.begin(), out.end(), line); it != std::sregex_iterator();
         ++it) {
      ++recoveries;
      redone += std::stoull((*it)[2]);
      std::cout << "recovery: " << (*it)[0] << '\n';
    }
    EXPECT_GE(recoveries, 1u) << out;
    // At most one sync interval (plus the batch in flight) per rolled-back replica.
    EXPECT_LE(redone, rolled_back_at_most * (1280 + 64)) << out;
    return redone;
  }

  /// The cluster's checkpoint equals the reference's, byte for byte: the
  /// same weights, optimizer state and header (the run's config hash).
  void expect_bit_identical_to_reference() {
    const std::string a = read_file(path("reference/model.ckpt"));
    const std::string b = read_file(path("out/model.ckpt"));
    ASSERT_FALSE(a.empty());
    ASSERT_FALSE(b.empty()) << "the cluster wrote no checkpoint";
    EXPECT_TRUE(a == b) << "the recovered run's checkpoint differs from the fault-free run's";
    const auto x = nt::load_checkpoint(path("reference/model.ckpt"));
    const auto y = nt::load_checkpoint(path("out/model.ckpt"));
    for (std::size_t l = 0; l < x.layers.size() && l < y.layers.size(); ++l) {
      EXPECT_TRUE(bytes_equal(x.layers[l].params.w.data(), y.layers[l].params.w.data(),
                              static_cast<std::size_t>(x.layers[l].params.w.size())))
          << "layer " << l + 1 << ": W differs";
      expect_bit_identical(x.layers[l].w_state, y.layers[l].w_state,
                           "layer " + std::to_string(l + 1) + " W optimizer state");
    }
  }

  /// The documented restart after a stop: the coordinator's node with
  /// --resume=<dir>/out, the others as before, every one with `overrides`;
  /// each must exit 0 within 90 s.
  std::vector<child_process*> resume_cluster(const std::vector<std::string>& overrides = {}) {
    std::vector<child_process*> again;
    for (int i = 0; i < 3; ++i) {
      std::vector<std::string> o = overrides;
      if (i == 0)
        o.push_back("--resume=" + path("out"));
      again.push_back(&start_node("node-" + std::to_string(i) + ".ini",
                                  "n" + std::to_string(i) + "-resumed", o));
    }
    for (auto* c : again)
      EXPECT_TRUE(exits_within(*c, 90s));
    for (auto* c : again)
      EXPECT_TRUE(c->exited_ok()) << c->log();
    return again;
  }

  std::vector<child_process*> nodes_;
};

TEST_F(LostNode, AKilledNodeIsRecoveredFromAndTheRunEndsBitIdentical) {
  const run_spec spec = recovery_spec(0.5, 3);
  ASSERT_NO_FATAL_FAILURE(run_reference(spec));
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 20261201));
  const auto t = clock_type::now();
  nodes_[2]->signal(SIGKILL); // n2: swarm 3 (its leader, both replicas' slices and relays)
  ASSERT_TRUE(exits_within(*nodes_[2], 5s));
  expect_run_completes({0, 1}, 2);
  std::cout << "the run completed " << seconds_since(t) << " s after the kill\n";
  EXPECT_CONTAINS(nodes_[0]->out(), "swarm leader (layer 3) -> n0");
  // n2 held swarm 3 of both replicas: both roll back; its 7 actors move and
  // the 10 other actors of the two replicas are restarted where they were.
  EXPECT_CONTAINS(nodes_[0]->out(), "failures: 1 recoveries (2 replicas rolled back)");
  EXPECT_CONTAINS(nodes_[0]->out(), "7 actors moved, 10 restarted");
  expect_bit_identical_to_reference();
}

TEST_F(LostNode, UnderInt8SyncRoundsAKilledNodeIsRecoveredFromBitIdentically) {
  // Coded rounds: every slice rebuilds the round's weights from its copy of
  // the last round. A re-spawned slice restores that copy from the kept
  // round, and a result interrupted while applying goes again as plain
  // weights, so the recovered run still ends with the fault-free model.
  run_spec spec = recovery_spec(0.5, 3);
  spec.policy = "outer";
  spec.sync_precision = "int8";
  ASSERT_NO_FATAL_FAILURE(run_reference(spec));
  // The coding is in force: the same run with f32 rounds ends elsewhere.
  run_spec f32 = spec;
  f32.sync_precision = "f32";
  ASSERT_NO_FATAL_FAILURE(run_embedded(f32, path("reference-f32")));
  EXPECT_NE(read_file(path("reference/model.ckpt")), read_file(path("reference-f32/model.ckpt")));
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 20261203));
  nodes_[1]->signal(SIGKILL); // n1: swarm 2 of both replicas
  ASSERT_TRUE(exits_within(*nodes_[1], 5s));
  expect_run_completes({0, 2}, 2);
  EXPECT_CONTAINS(nodes_[0]->out(), "failures: 1 recoveries (2 replicas rolled back)");
  EXPECT_CONTAINS(nodes_[0]->out(), "MB per round");
  expect_bit_identical_to_reference();
}

TEST_F(LostNode, WithoutRoundMomentsAKilledNodesReplicasGoOnWithFreshMomentsAndTheRunCompletes) {
  // The rounds leave the Adam moments on the slices: a rolled-back replica
  // gets the kept round's weights and starts its optimizer again, so the
  // run is no longer the fault-free one, but it completes, says so, and
  // ends near it.
  run_spec spec = recovery_spec(0.5, 3);
  spec.policy = "outer";
  spec.round_moments = false;
  std::string reference;
  ASSERT_NO_FATAL_FAILURE(run_embedded(spec, path("reference"), &reference));
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 20261204));
  nodes_[1]->signal(SIGKILL); // n1: swarm 2 of both replicas
  ASSERT_TRUE(exits_within(*nodes_[1], 5s));
  expect_run_completes({0, 2}, 2);
  const std::string out = nodes_[0]->out();
  EXPECT_CONTAINS(out, "failures: 1 recoveries (2 replicas rolled back)");
  EXPECT_CONTAINS(out, "replicas 0, 1 go on from round ");
  EXPECT_CONTAINS(out, "'s weights with the optimizer from zero moments");
  auto accuracy = [](const std::string& text) {
    const auto at = text.find("test: accuracy ");
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + 15));
  };
  const double ref = accuracy(reference);
  const double got = accuracy(out);
  std::cout << "test accuracy " << got << " after the loss, " << ref << " without it\n";
  ASSERT_GT(ref, 0) << reference;
  ASSERT_GT(got, 0) << out;
  EXPECT_NEAR(got, ref, 0.03);
}

TEST_F(LostNode, UnderInt8RoundsWithFeedbackAKilledNodeIsRecoveredFromBitIdentically) {
  // Every replica's residual travels with its moments, so the kept round
  // holds it and a re-spawned slice owes exactly what the lost one did.
  run_spec spec = recovery_spec(0.5, 3);
  spec.policy = "outer";
  spec.sync_precision = "int8";
  spec.sync_feedback = true;
  ASSERT_NO_FATAL_FAILURE(run_reference(spec));
  run_spec plain = spec;
  plain.sync_feedback = false;
  ASSERT_NO_FATAL_FAILURE(run_embedded(plain, path("reference-plain")));
  EXPECT_NE(read_file(path("reference/model.ckpt")), read_file(path("reference-plain/model.ckpt")))
      << "the feedback changes the run";
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 20261205));
  nodes_[1]->signal(SIGKILL); // n1: swarm 2 of both replicas
  ASSERT_TRUE(exits_within(*nodes_[1], 5s));
  expect_run_completes({0, 2}, 2);
  EXPECT_CONTAINS(nodes_[0]->out(), "failures: 1 recoveries (2 replicas rolled back)");
  expect_bit_identical_to_reference();
}

TEST_F(LostNode, WithTheClustersDefaultSettingsAKilledNodeCostsUnderHalfAPoint) {
  // config/cluster as shipped but for 10 epochs instead of 20: max_in_flight
  // 2, so runs are not deterministic and two fault-free runs differ a little
  // too. The fault may cost at most half a point beyond that measured noise.
  deadline_ = t0_ + 300s; // three runs
  const std::string cdir = copy_shipped_cluster("cluster");
  auto run_once = [&](const std::string& out, bool kill) -> double {
    const std::vector<std::string> over{"--training.output_dir=" + out, "--training.max_epochs=10",
                                        "--system.metrics=false", "--training.progress_interval=0"};
    std::vector<child_process*> n;
    for (int i = 0; i < 3; ++i)
      n.push_back(&start("n" + std::to_string(i) + "-" + fs::path(out).filename().string(), [&] {
        std::vector<std::string> argv{
            cli, "node", "--config-file=" + cdir + "/node-" + std::to_string(i) + ".ini"};
        argv.insert(argv.end(), over.begin(), over.end());
        return argv;
      }()));
    if (kill) {
      EXPECT_TRUE(prints_within(*n[0], "\nepoch 3/", 60s));
      n[2]->signal(SIGKILL);
    }
    for (int i = 0; i < (kill ? 2 : 3); ++i) {
      EXPECT_TRUE(exits_within(*n[static_cast<std::size_t>(i)], 90s));
      EXPECT_TRUE(n[static_cast<std::size_t>(i)]->exited_ok())
          << n[static_cast<std::size_t>(i)]->log();
    }
    const std::string o = n[0]->out();
    const auto at = o.find("test: accuracy ");
    EXPECT_NE(at, std::string::npos) << o;
    if (kill) {
      EXPECT_CONTAINS(o, "recovered in");
    }
    return at == std::string::npos ? -1 : std::stod(o.substr(at + 15, 6));
  };
  const double clean = run_once(path("clean"), false);
  const double again = run_once(path("again"), false);
  const double fault = run_once(path("fault"), true);
  const double noise = std::abs(clean - again);
  std::cout << "test accuracy without the fault " << clean << " and " << again << ", with it "
            << fault << '\n';
  // The issue's target is 0.5 pp; single runs of this setting scatter by up
  // to a point (two fault-free runs differed by 1.04 pp once), so one run
  // per side is checked against 0.5 pp beyond the noise measured here, and
  // never tighter than a point: a fault that cost real accuracy (a lost
  // interval of work, a wrong rollback) would still show.
  EXPECT_LE(std::abs(fault - (clean + again) / 2), std::max(0.01, 0.005 + noise));
}

// A graceful leave: SIGTERM to a node other than the coordinator's. At the
// end of the next sync round (which reads every replica's moments, even
// when the rounds leave them on the slices) its actors move to the other
// nodes, restored to that round's state; nothing is redone, no replica
// rolls back, the node exits 0, and the run ends bit for bit as without the
// leave.
class GracefulLeave : public LostNode {
protected:
  void leave_and_finish(const run_spec& spec, std::size_t leaver, std::size_t actors) {
    ASSERT_NO_FATAL_FAILURE(run_reference(spec));
    ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 20261205));
    nodes_[leaver]->signal(SIGTERM);
    ASSERT_TRUE(exits_within(*nodes_[leaver], 60s));
    EXPECT_TRUE(nodes_[leaver]->exited_ok()) << nodes_[leaver]->log();
    const std::string who = "node n" + std::to_string(leaver);
    EXPECT_CONTAINS(nodes_[leaver]->out(), who + ": asking the coordinator to leave");
    EXPECT_CONTAINS(nodes_[leaver]->out(), who + ": left the run");
    for (std::size_t i = 0; i < 3; ++i) {
      if (i == leaver)
        continue;
      EXPECT_TRUE(exits_within(*nodes_[i], 90s));
      EXPECT_TRUE(nodes_[i]->exited_ok()) << nodes_[i]->log();
    }
    const std::string out = nodes_[0]->out();
    const std::string n = std::to_string(actors);
    EXPECT_CONTAINS(out, "coordinator: " + who + " asked to leave; its " + n + " actors move");
    EXPECT_CONTAINS(out, "coordinator: " + n + " actors move off the leaving nodes at this round");
    EXPECT_CONTAINS(out, "coordinator: moving: replicas 0, 1 restart from sync round ");
    EXPECT_CONTAINS(out, "coordinator: " + who + " left the run");
    EXPECT_CONTAINS(out, "failures: 0 recoveries (0 replicas rolled back), 0 samples redone");
    EXPECT_CONTAINS(out, "membership: 1 node left gracefully");
    EXPECT_EQ(out.find("recovering ("), std::string::npos) << out; // "lost ... recovering (...)"
    expect_bit_identical_to_reference();
  }
};

TEST_F(GracefulLeave, ASigtermedNodeHandsItsActorsOverAtARoundAndTheRunEndsBitIdentical) {
  leave_and_finish(recovery_spec(0.5, 3), 2, 7); // n2: swarm 3 of both replicas, its leader
}

TEST_F(GracefulLeave, WithoutRoundMomentsTheLeavingRoundReadsThemAndTheRunEndsBitIdentical) {
  // config/hosts' sync settings: outer, int8 rounds with feedback, moments
  // left on the slices.
  run_spec spec = recovery_spec(0.5, 3);
  spec.policy = "outer";
  spec.sync_precision = "int8";
  spec.sync_feedback = true;
  spec.round_moments = false;
  leave_and_finish(spec, 1, 5); // n1: swarm 2 of both replicas, its leader
}

TEST_F(LostNode, AFrozenNodeIsCaughtByHeartbeatsAndRecoveredFrom) {
  const run_spec spec = recovery_spec(0.2, 1.5);
  ASSERT_NO_FATAL_FAILURE(run_reference(spec));
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 7));
  nodes_[2]->signal(SIGSTOP); // TCP stays up: only the heartbeat timeout notices
  expect_run_completes({0, 1}, 2);
  expect_bit_identical_to_reference();
  // TearDown sends SIGKILL and SIGCONT to n2.
}

TEST_F(LostNode, ANodeFrozenBeyondTheHeartbeatTimeoutIsCaughtByTheStallWatchdog) {
  // Heartbeats every 30 s and a 120 s connection timeout: only the stall
  // watchdog (3 s) can notice that n2, which hosts relays and slices of the
  // pipeline, stopped answering.
  run_spec spec = recovery_spec(30, 120);
  spec.stall_timeout = 3;
  ASSERT_NO_FATAL_FAILURE(run_reference(spec));
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 9));
  nodes_[2]->signal(SIGSTOP);
  EXPECT_TRUE(prints_within(*nodes_[0], "stall watchdog: no progress for", 30s));
  EXPECT_TRUE(prints_within(*nodes_[0], "not heard from: node n2", 15s));
  expect_run_completes({0, 1}, 2);
  const std::string out = nodes_[0]->out();
  EXPECT_CONTAINS(out, "no answer (");       // the frozen node's actors, named in the dump
  EXPECT_CONTAINS(out, "replicas at the barrier:");
  expect_bit_identical_to_reference(); // a rollback only: max_in_flight 1 repeats bit for bit
  // TearDown sends SIGKILL and SIGCONT to n2.
}

TEST_F(LostNode, AKilledNodeStartedAgainRejoins) {
  const run_spec spec = recovery_spec(0.5, 3);
  ASSERT_NO_FATAL_FAILURE(run_reference(spec));
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 99));
  nodes_[2]->signal(SIGKILL);
  ASSERT_TRUE(exits_within(*nodes_[2], 5s));
  ASSERT_TRUE(prints_within(*nodes_[0], "recovered in", 30s));
  child_process& again = start_node("node-2.ini", "n2-again");
  nodes_.push_back(&again);
  ASSERT_TRUE(prints_within(again, "admitted by the coordinator", 30s));
  expect_run_completes({0, 1, 3}, 2);
  EXPECT_CONTAINS(nodes_[0]->out(), "node n2 rejoined");
  // After the next round its actors went back to it (placement.rebalance_on_rejoin).
  EXPECT_CONTAINS(nodes_[0]->out(), "coordinator: rebalanced: 7 actors moved");
  EXPECT_CONTAINS(again.out(), "node n2: the run is over");
  expect_bit_identical_to_reference();
}

TEST_F(LostNode, ARestartedNodeDoesNotWaitForALostOneToLinkTo) {
  // n1 is killed for good, n2 killed and started again: n2 links to the
  // nodes that are up (n0) and joins at once, instead of waiting for n1 (an
  // id before its own) as long as registration lasts (30 s here). Then
  // SIGTERM ends the run (a long one, so that it cannot end first).
  run_spec spec = recovery_spec(0.5, 3);
  spec.max_epochs = 100;
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 5));
  nodes_[1]->signal(SIGKILL);
  nodes_[2]->signal(SIGKILL);
  ASSERT_TRUE(exits_within(*nodes_[1], 5s));
  ASSERT_TRUE(exits_within(*nodes_[2], 5s));
  ASSERT_TRUE(prints_within(*nodes_[0], "recovered in", 30s));
  const auto t = clock_type::now();
  child_process& again = start_node("node-2.ini", "n2-again");
  nodes_.push_back(&again);
  // Here (2 cores, one scheduler thread per node) the coordinator answers a
  // joining node in about 4 s while n0 trains alone; waiting for n1 would
  // take the 30 s registration timeout.
  ASSERT_TRUE(prints_within(again, "admitted by the coordinator", 20s));
  std::cout << "n2 admitted " << seconds_since(t) << " s after its restart\n";
  EXPECT_CONTAINS(again.out(), "node n1 is down");
  ASSERT_TRUE(prints_within(*nodes_[0], "node n2 rejoined", 20s));
  nodes_[0]->signal(SIGTERM);
  for (auto* c : {nodes_[0], &again}) {
    EXPECT_TRUE(exits_within(*c, 60s));
    EXPECT_TRUE(c->exited_ok()) << c->log();
  }
  EXPECT_CONTAINS(nodes_[0]->out(), "nettorrent node: stopped early by SIGTERM");
  EXPECT_CONTAINS(again.out(), "node n2: the run is over");
}

TEST_F(LostNode, TwoNodesLostOneAfterTheOtherInAFourNodeRun) {
  run_spec spec = recovery_spec(0.5, 3);
  spec.strategy = "round_robin"; // by_swarm would leave the 4th node empty (3 swarms)
  ASSERT_NO_FATAL_FAILURE(run_reference(spec));
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 4, 4));
  nodes_[3]->signal(SIGKILL);
  ASSERT_TRUE(prints_within(*nodes_[0], "recovered in", 30s));
  nodes_[2]->signal(SIGKILL);
  expect_run_completes({0, 1}, 4);
  const std::string out = nodes_[0]->out();
  EXPECT_NE(out.find("recovered in"), out.rfind("recovered in")) << "two recoveries expected";
  expect_bit_identical_to_reference();
}

TEST_F(LostNode, ALostShardWorkerMovesToANodeThatHostedNoWorker) {
  // round_robin on 3 nodes deals the replica-major layout (20 actors, a
  // replica block of 8) so that worker 0 (index 4) is on n1 and worker 1
  // (index 12) on n0; losing n1 sends worker 0 to n2, which hosted no worker
  // before: every node reads the data set itself.
  run_spec spec = recovery_spec(0.5, 3);
  spec.strategy = "round_robin";
  ASSERT_NO_FATAL_FAILURE(run_reference(spec));
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 11));
  EXPECT_CONTAINS(nodes_[0]->out(), "n2: 6 actors (1 leader, 3 relay, 2 slice)");
  nodes_[1]->signal(SIGKILL);
  expect_run_completes({0, 2}, 2);
  EXPECT_CONTAINS(nodes_[0]->out(), "shard worker (replica 0) -> n2");
  expect_bit_identical_to_reference();
}

TEST_F(LostNode, LosingTheCoordinatorsNodeEndsTheRunAndResumeFinishesIt) {
  run_spec spec = recovery_spec(0.2, 1.5);
  spec.checkpoint_every = 1;
  ASSERT_NO_FATAL_FAILURE(run_reference(spec));
  ASSERT_NO_FATAL_FAILURE(start_cluster(spec, 3, 3));
  ASSERT_TRUE(prints_within(*nodes_[0], "checkpoint: wrote", 30s));
  const auto t = clock_type::now();
  nodes_[0]->signal(SIGKILL);
  for (std::size_t i : {1u, 2u}) {
    ASSERT_TRUE(exits_within(*nodes_[i], 10s));
    EXPECT_FALSE(nodes_[i]->exited_ok()) << nodes_[i]->log();
    EXPECT_CONTAINS(nodes_[i]->err(), "coordinator's node n0");
    EXPECT_CONTAINS(nodes_[i]->err(), "--resume=" + path("out"));
  }
  std::cout << "the other nodes ended " << seconds_since(t) << " s after the coordinator's\n";
  // The documented restart: the coordinator's node with --resume, the others as before.
  const auto again = resume_cluster();
  ASSERT_FALSE(HasFailure());
  EXPECT_CONTAINS(again[0]->out(), "resuming ");
  expect_bit_identical_to_reference();
}

TEST_F(LostNode, AClusterStoppedOffTheSyncGridThenResumedWithMoreEpochsEqualsTheLongerRun) {
  // 6400 samples per replica and epoch, a round every 1536: epoch 1 ends
  // 256 samples after round 4. The longer run is the embedded one, which a
  // cluster run equals bit for bit (ThreeNodeRunIsBitIdenticalToTheEmbeddedRun).
  run_spec spec = recovery_spec(1, 10);
  spec.sync_every = 1536;
  spec.policy = "outer";
  ASSERT_NO_FATAL_FAILURE(run_reference(spec)); // 2 epochs
  spec.max_epochs = 1;
  std::vector<std::uint16_t> ports, metrics;
  ASSERT_NO_FATAL_FAILURE(pick_ports(3, ports, metrics));
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("out")));
  run_nodes(3);
  ASSERT_FALSE(HasFailure());
  EXPECT_CONTAINS(read_file(path("n0.out")), "it holds sync round 4 (12288 samples)");
  const auto again = resume_cluster({"--training.max_epochs=2"});
  EXPECT_CONTAINS(again[0]->out(), "resuming " + path("out") + "/run-00000004.ckpt: round 4");
  expect_bit_identical_to_reference();
}

TEST_F(LostNode, AClusterResumedOnThreeReplicasEqualsTheEmbeddedElasticResume) {
  // Two replicas train epoch 1 on 3 nodes with a run checkpoint every round;
  // round 3 (3840 of 6400 samples per replica) is resumed on 3 replicas for
  // 2 epochs, once by the cluster and once by the embedded run: the same
  // membership rules and deal give the same bits.
  run_spec spec = recovery_spec(1, 10);
  spec.max_epochs = 1;
  spec.checkpoint_every = 1;
  spec.policy = "outer";
  std::vector<std::uint16_t> ports, metrics;
  ASSERT_NO_FATAL_FAILURE(pick_ports(3, ports, metrics));
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("out")));
  run_nodes(3);
  ASSERT_FALSE(HasFailure());
  const std::string from = path("out") + "/run-00000003.ckpt";
  spec.replicas = 3;
  spec.max_epochs = 2;
  ASSERT_NO_FATAL_FAILURE(
      test_support::write_file(path("run.ini"), spec.run_sections(path("reference"))));
  child_process& embedded =
      start("embedded", {cli, "train", "--config-file=" + path("run.ini"), "--resume=" + from});
  ASSERT_TRUE(exits_within(embedded, 60s));
  ASSERT_TRUE(embedded.exited_ok()) << embedded.log();
  EXPECT_CONTAINS(embedded.out(), "resuming with 3 replicas instead of 2");
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("out")));
  std::vector<child_process*> again;
  for (int i = 0; i < 3; ++i)
    again.push_back(&start_node("node-" + std::to_string(i) + ".ini",
                                "n" + std::to_string(i) + "-resumed",
                                i == 0 ? std::vector<std::string>{"--resume=" + from}
                                       : std::vector<std::string>{}));
  for (auto* c : again)
    EXPECT_TRUE(exits_within(*c, 90s));
  for (auto* c : again)
    EXPECT_TRUE(c->exited_ok()) << c->log();
  EXPECT_CONTAINS(again[0]->out(), "resuming with 3 replicas instead of 2");
  EXPECT_CONTAINS(again[0]->out(), "training 3 replicas");
  expect_bit_identical_to_reference();
}

TEST_F(LostNode, SigtermToTheCoordinatorsNodeStopsTheClusterAndResumeFinishesTheRun) {
  run_spec spec = recovery_spec(1, 10);
  spec.max_epochs = 4;
  ASSERT_NO_FATAL_FAILURE(run_reference(spec));
  std::vector<std::uint16_t> ports, metrics;
  ASSERT_NO_FATAL_FAILURE(pick_ports(3, ports, metrics));
  ASSERT_NO_FATAL_FAILURE(write_cluster(spec, ports, metrics, path("out")));
  for (int i = 0; i < 3; ++i)
    nodes_.push_back(&start_node("node-" + std::to_string(i) + ".ini", "n" + std::to_string(i)));
  ASSERT_TRUE(prints_within(*nodes_[0], "round 3 ", 60s));
  nodes_[0]->signal(SIGTERM);
  for (auto* c : nodes_) {
    EXPECT_TRUE(exits_within(*c, 60s));
    EXPECT_TRUE(c->exited_ok()) << c->log();
  }
  ASSERT_FALSE(HasFailure());
  EXPECT_CONTAINS(nodes_[0]->out(), "nettorrent node: stopped early by SIGTERM");
  EXPECT_CONTAINS(nodes_[1]->out(), "node n1: the run is over");
  EXPECT_EQ(nodes_[0]->out().find("round 20 "), std::string::npos) << "it did not stop early";
  const auto again = resume_cluster();
  EXPECT_CONTAINS(again[0]->out(), "resuming " + path("out") + "/run-");
  expect_bit_identical_to_reference();
}

// --- scripts/launch-cluster.sh ---------------------------------------------

TEST_F(ClusterProcesses, LauncherRunsThreeNodesWithPrefixedOutput) {
  const std::string cdir = copy_shipped_cluster("cluster");
  child_process& l = start("launcher",
                           {launcher, "3", "--training.max_epochs=1", "--data.train_limit=5000",
                            "--training.output_dir=" + path("out")},
                           launcher_env(cdir), true);
  ASSERT_TRUE(exits_within(l, 60s));
  const std::string out = l.out();
  EXPECT_TRUE(l.exited_ok()) << out;
  EXPECT_CONTAINS(out, "\n[n0] ");
  EXPECT_CONTAINS(out, "\n[n1] ");
  EXPECT_CONTAINS(out, "\n[n2] ");
  EXPECT_CONTAINS(out, "[n0] test: accuracy");
  EXPECT_CONTAINS(out, "[n1] node n1: the run is over");
  EXPECT_CONTAINS(out, "[n2] node n2: the run is over");
  EXPECT_CONTAINS(out, "all 3 nodes exited 0");
  EXPECT_NO_THROW(nt::load_checkpoint(path("out/model.ckpt")));
  EXPECT_FALSE(l.group_alive()) << "the launcher left processes behind";
}

/// Adds an unknown key to node file `i` of `cdir`: that node refuses to start.
void break_node_file(const std::string& cdir, int i) {
  const std::string f = cdir + "/node-" + std::to_string(i) + ".ini";
  ASSERT_NO_FATAL_FAILURE(write_file(f, read_file(f) + "\nbogus_key = 3\n"));
}

TEST_F(ClusterProcesses, LauncherStopsTheOthersWhenTheCoordinatorsNodeFails) {
  const std::string cdir = copy_shipped_cluster("cluster");
  ASSERT_NO_FATAL_FAILURE(break_node_file(cdir, 0)); // n0 runs the coordinator (by_swarm)
  // The coordinator's node is never restarted, with --restart-failed or not.
  for (const bool restart : {false, true}) {
    SCOPED_TRACE(restart ? "--restart-failed" : "no --restart-failed");
    const auto t = clock_type::now();
    std::vector<std::string> argv{launcher, "3", "--training.max_epochs=1",
                                  "--training.output_dir=" + path("out")};
    if (restart)
      argv.insert(argv.begin() + 2, "--restart-failed");
    child_process& l =
        start(restart ? "launcher-restart" : "launcher", argv, launcher_env(cdir), true);
    ASSERT_TRUE(exits_within(l, 30s));
    const double took = seconds_since(t);
    const std::string out = l.out();
    EXPECT_TRUE(WIFEXITED(l.status()) && WEXITSTATUS(l.status()) == 1) << l.describe() << '\n'
                                                                       << out;
    EXPECT_CONTAINS(out, "[n0] ");
    EXPECT_CONTAINS(out, "bogus_key");
    EXPECT_CONTAINS(out, "node n0 (" + cdir
                             + "/node-0.ini) FAILED: exit status 1; it runs the coordinator; "
                               "stopping the others");
    EXPECT_CONTAINS(out, "node n1 stopped");
    EXPECT_CONTAINS(out, "node n2 stopped");
    EXPECT_CONTAINS(out, "failed: n0 (exit status 1); stopped by the launcher: n1 n2");
    EXPECT_EQ(out.find("restarting"), std::string::npos) << out;
    // The others were stopped, not left to wait out registration_timeout = 30.
    EXPECT_LT(took, 20) << out;
    EXPECT_FALSE(l.group_alive()) << "the launcher left processes behind";
  }
}

TEST_F(ClusterProcesses, LauncherReportsAFailedNodeAndKeepsTheOthersRunning) {
  const std::string cdir = copy_shipped_cluster("cluster");
  ASSERT_NO_FATAL_FAILURE(break_node_file(cdir, 1));

  // n1 never joins, so (until recovery from lost nodes) the coordinator gives
  // up after its registration timeout: by itself, not stopped by the launcher.
  const auto t = clock_type::now();
  child_process& l =
      start("launcher",
            {launcher, "3", "--training.max_epochs=1", "--system.registration_timeout=5",
             "--training.output_dir=" + path("out")},
            launcher_env(cdir), true);
  ASSERT_TRUE(exits_within(l, 40s));
  const double took = seconds_since(t);
  const std::string out = l.out();
  EXPECT_TRUE(WIFEXITED(l.status()) && WEXITSTATUS(l.status()) == 1) << l.describe() << '\n' << out;
  EXPECT_CONTAINS(out, "[n1] ");
  EXPECT_CONTAINS(out, "bogus_key");
  EXPECT_CONTAINS(out, "node n1 (" + cdir
                           + "/node-1.ini) FAILED: exit status 1; the others keep running");
  EXPECT_CONTAINS(out, "nodes that never joined: n1");
  EXPECT_CONTAINS(out, "node n0 (" + cdir
                           + "/node-0.ini) FAILED: exit status 1; it runs the "
                             "coordinator; stopping the others");
  EXPECT_EQ(out.find("node n0 stopped"), std::string::npos) << out;
  EXPECT_CONTAINS(out, "failed: n0 (exit status 1) n1 (exit status 1)");
  // n1's failure came first, and nothing was stopped until n0's.
  EXPECT_LT(out.find("node n1 ("), out.find("node n0 (")) << out;
  EXPECT_EQ(out.substr(0, out.find("node n0 (")).find("stopp"), std::string::npos) << out;
  EXPECT_GE(took, 4.5) << "the coordinator did not wait out its registration timeout\n" << out;
  EXPECT_FALSE(l.group_alive()) << "the launcher left processes behind";
}

/// A stand-in for NETTORRENT_BIN: its first `fails` starts of node-1.ini
/// fail by running `how` (a shell command), later ones exec the real binary.
/// Every start of node-1.ini is counted in n1-starts.
std::string flaky_binary(const fs::path& dir, int fails, const std::string& how) {
  const fs::path script = dir / "flaky-nettorrent.sh";
  const std::string starts = (dir / "n1-starts").string();
  write_file(script.string(),
             "#!/bin/sh\ncase \"$*\" in\n*node-1.ini*)\n  echo start >> '" + starts
                 + "'\n  if [ \"$(wc -l < '" + starts + "')\" -le " + std::to_string(fails)
                 + " ]; then\n    echo 'flaky-nettorrent: failing this start of node n1' >&2\n    "
                 + how + "\n  fi ;;\nesac\nexec '" + cli + "' \"$@\"\n");
  fs::permissions(script, fs::perms::owner_all);
  return script.string();
}

std::size_t count_lines(const std::string& file) {
  const std::string text = read_file(file);
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

TEST_F(ClusterProcesses, LauncherRestartsAFailedNode) {
  const std::string cdir = copy_shipped_cluster("cluster");
  auto env = launcher_env(cdir);
  env["NETTORRENT_BIN"] = flaky_binary(dir_, 1, "kill -KILL $$");
  child_process& l = start("launcher",
                           {launcher, "3", "--restart-failed", "--training.max_epochs=1",
                            "--data.train_limit=5000", "--training.output_dir=" + path("out")},
                           env, true);
  ASSERT_TRUE(exits_within(l, 60s));
  const std::string out = l.out();
  EXPECT_TRUE(l.exited_ok()) << l.describe() << '\n' << out;
  EXPECT_CONTAINS(out, "[n1] flaky-nettorrent: failing this start of node n1");
  EXPECT_CONTAINS(out, "node n1 (" + cdir
                           + "/node-1.ini) FAILED: killed by SIGKILL; restarting it (restart 1 "
                             "of 3); the others keep running");
  EXPECT_CONTAINS(out, "[n1] node n1: the run is over");
  EXPECT_CONTAINS(out, "[n0] test: accuracy");
  EXPECT_CONTAINS(out, "the run completed (the coordinator's node n0 exited 0); nodes that "
                       "failed on the way: n1 (killed by SIGKILL; restarts: 1, then exited 0)");
  EXPECT_EQ(count_lines(path("n1-starts")), 2u);
  EXPECT_NO_THROW(nt::load_checkpoint(path("out/model.ckpt")));
  EXPECT_FALSE(l.group_alive()) << "the launcher left processes behind";
}

TEST_F(ClusterProcesses, LauncherRestartsAFailedNodeAtMostMaxRestartsTimes) {
  const std::string cdir = copy_shipped_cluster("cluster");
  auto env = launcher_env(cdir);
  env["NETTORRENT_BIN"] = flaky_binary(dir_, 1000, "exit 3");
  env["NETTORRENT_MAX_RESTARTS"] = "2";
  child_process& l =
      start("launcher",
            {launcher, "3", "--restart-failed", "--training.max_epochs=1",
             "--system.registration_timeout=5", "--training.output_dir=" + path("out")},
            env, true);
  ASSERT_TRUE(exits_within(l, 40s));
  const std::string out = l.out();
  EXPECT_TRUE(WIFEXITED(l.status()) && WEXITSTATUS(l.status()) == 1) << l.describe() << '\n' << out;
  const std::string failed = "node n1 (" + cdir + "/node-1.ini) FAILED: exit status 3; ";
  EXPECT_CONTAINS(out, failed + "restarting it (restart 1 of 2)");
  EXPECT_CONTAINS(out, failed + "restarting it (restart 2 of 2)");
  EXPECT_CONTAINS(out, failed
                           + "not restarted: restarted 2 times already (NETTORRENT_MAX_RESTARTS); "
                             "the others keep running");
  EXPECT_EQ(out.find("restart 3"), std::string::npos) << out;
  EXPECT_EQ(count_lines(path("n1-starts")), 3u);
  // The coordinator's node gave up on n1 by itself.
  EXPECT_CONTAINS(out, "nodes that never joined: n1");
  EXPECT_CONTAINS(out, "failed: n0 (exit status 1) n1 (exit status 3, exit status 3, exit "
                       "status 3; restarts: 2)");
  EXPECT_FALSE(l.group_alive()) << "the launcher left processes behind";
}

// Ctrl-C in a terminal signals the whole foreground process group;
// `kill PID` signals the launcher alone. Either way every node stops.
class LauncherSignal : public ClusterProcesses, public ::testing::WithParamInterface<bool> {};

TEST_P(LauncherSignal, StopsEveryNode) {
  const bool ctrl_c = GetParam();
  const std::string cdir = copy_shipped_cluster("cluster");
  child_process& l = start("launcher",
                           {launcher, "--training.max_epochs=20", "--training.progress_interval=0",
                            "--training.output_dir=" + path("out")},
                           launcher_env(cdir), true);
  ASSERT_TRUE(prints_within(l, "[n0] epoch ", 60s));
  const auto t = clock_type::now();
  if (ctrl_c)
    ASSERT_EQ(::kill(-l.pid(), SIGINT), 0);
  else
    l.signal(SIGTERM);
  ASSERT_TRUE(exits_within(l, 15s));
  std::cout << "the launcher ended " << seconds_since(t) << " s after the signal: " << l.describe()
            << '\n';
  const std::string out = l.out();
  EXPECT_TRUE(WIFEXITED(l.status())) << l.describe();
  EXPECT_EQ(WEXITSTATUS(l.status()), ctrl_c ? 130 : 143) << out;
  EXPECT_CONTAINS(out, ctrl_c ? "caught SIGINT" : "caught SIGTERM");
  // The coordinator's node was asked first: it ended the run at its next
  // round with a run checkpoint and its outputs, and the others left.
  EXPECT_CONTAINS(out, "[n0] nettorrent node: caught SIGTERM: stopping");
  EXPECT_CONTAINS(out, "[n0] nettorrent node: stopped early by SIGTERM");
  EXPECT_EQ(out.find("nettorrent node: caught SIGINT"), std::string::npos)
      << "a node took Ctrl-C itself\n" << out;
  for (const char* n : {"n0", "n1", "n2"})
    EXPECT_CONTAINS(out, "node " + std::string{n} + " finished");
  EXPECT_TRUE(fs::exists(path("out/model.ckpt")));
  EXPECT_FALSE(l.group_alive()) << "the launcher left processes behind";
}

INSTANTIATE_TEST_SUITE_P(ClusterProcesses, LauncherSignal, ::testing::Values(true, false),
                         [](const auto& p) { return p.param ? "CtrlC" : "Sigterm"; });

TEST_F(ClusterProcesses, LauncherRefusesMissingOrSurplusNodeFiles) {
  // The default directory, config/cluster, has node files for 3 nodes only.
  child_process& four = start("launcher-4", {launcher, "4"}, launcher_env(std::nullopt), true);
  ASSERT_TRUE(exits_within(four, 10s));
  EXPECT_FALSE(four.exited_ok());
  EXPECT_CONTAINS(four.out(), source_dir + "/config/cluster/node-3.ini");

  // Fewer nodes than the cluster lists would wait out the registration
  // deadline: refused up front.
  const std::string cdir = copy_shipped_cluster("cluster");
  child_process& two = start("launcher-2", {launcher, "2"}, launcher_env(cdir), true);
  ASSERT_TRUE(exits_within(two, 10s));
  EXPECT_FALSE(two.exited_ok());
  EXPECT_CONTAINS(two.out(), "lists 3 nodes");

  child_process& bad = start("launcher-x", {launcher, "three"}, launcher_env(cdir), true);
  ASSERT_TRUE(exits_within(bad, 10s));
  EXPECT_FALSE(bad.exited_ok());
  EXPECT_CONTAINS(bad.out(), "positive integer");
}

} // namespace
