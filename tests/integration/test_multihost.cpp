// Clusters on separate network hosts: one Linux network namespace per node,
// joined by veth links on a bridge, with addresses (10.213.0.0/24) that
// exist only inside the namespaces the test made (network_lab). Each
// `nettorrent node` runs in its own namespace with its own address and
// mutual TLS; rogue peers attack from a fourth. Where the kernel or user
// cannot create namespaces the tests say why and are reported skipped.
//
// ctest label `multihost`. The lab and every child are removed in
// TearDown, also when a test fails.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "cluster_files.hpp"
#include "netns.hpp"
#include "process_test.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using integration::child_process;
using integration::network_lab;
using integration::run_spec;
using integration::seconds_since;
using test_support::read_file;
using test_support::write_file;
using namespace std::chrono_literals;

namespace {

const std::string rogue_peer = NETTORRENT_ROGUE_PEER;

/// A figure from a node's summary: "done: N samples in 1m05s (Y samples/s)".
struct run_summary {
  double samples = -1;
  double samples_per_second = -1;
  double test_accuracy = -1;
};

run_summary summary_of(const std::string& out) {
  run_summary s;
  std::smatch m;
  if (std::regex_search(out, m,
                        std::regex{R"(done: ([0-9]+) samples in [^ ]+ \(([0-9.]+) samples/s\))"})) {
    s.samples = std::stod(m[1]);
    s.samples_per_second = std::stod(m[2]);
  }
  if (std::regex_search(out, m, std::regex{R"(test: accuracy ([0-9.]+))"}))
    s.test_accuracy = std::stod(m[1]);
  return s;
}

/// Resident memory of a process in bytes (VmRSS), -1 if it is gone.
long rss_bytes(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stol(line.substr(6)) * 1024;
  return -1;
}

class Multihost : public integration::process_test {
protected:
  void SetUp() override {
    if (const std::string why = network_lab::unavailable(); !why.empty())
      GTEST_SKIP() << "cannot build separate network hosts here: " << why;
    process_test::SetUp();
  }

  void TearDown() override {
    process_test::TearDown(); // the nodes first: they run in the namespaces
    lab_.reset();
  }

  /// The lab of `hosts` namespaces; fails the test if it cannot be built.
  void make_lab(std::size_t hosts) {
    try {
      lab_ = std::make_unique<network_lab>(hosts);
    } catch (const std::exception& e) {
      FAIL() << e.what();
    }
    for (std::size_t i = 0; i < hosts; ++i)
      std::cout << "host " << i << ": namespace " << lab_->ns(i) << ", " << network_lab::address(i)
                << '\n';
  }

  /// `nettorrent node --config-file=<dir>/node-i.ini [extra...]` in host i.
  child_process& start_node_in_host(std::size_t i, const std::string& name,
                                    std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{cli, "node",
                                  "--config-file=" + path("node-" + std::to_string(i) + ".ini")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return start(name, lab_->in_host(i, std::move(argv)));
  }

  /// Starts nodes 0..n-1, each in its own host.
  std::vector<child_process*> start_nodes(std::size_t n, const std::vector<std::string>& extra = {},
                                          const std::string& tag = "") {
    std::vector<child_process*> nodes;
    for (std::size_t i = 0; i < n; ++i)
      nodes.push_back(&start_node_in_host(i, "n" + std::to_string(i) + tag, extra));
    return nodes;
  }

  void expect_all_exit_ok(const std::vector<child_process*>& nodes,
                          std::chrono::duration<double> limit) {
    for (auto* c : nodes)
      EXPECT_TRUE(exits_within(*c, limit));
    for (auto* c : nodes)
      EXPECT_TRUE(c->exited_ok()) << c->log();
  }

  /// config/hosts as shipped (the README's 3-host cluster), certificates
  /// made by scripts/make-certs.sh as the README says.
  void copy_shipped_hosts_cluster() {
    for (const auto* name : {"cluster.ini", "node-0.ini", "node-1.ini", "node-2.ini"}) {
      const std::string text = read_file(source_dir + "/config/hosts/" + name);
      ASSERT_FALSE(text.empty()) << "config/hosts/" << name;
      ASSERT_NO_FATAL_FAILURE(write_file(path(name), text));
    }
    make_certs("certs", {"n0", "n1", "n2"});
  }

  void make_certs(const std::string& sub, const std::vector<std::string>& ids) {
    integration::make_certs(path(sub), ids);
  }

  /// A cluster description of `spec` on hosts 0..n-1 (port 4200 + i
  /// each, metrics on the host's loopback), TLS on, with its node files.
  void write_tls_cluster(const run_spec& spec, std::size_t n, const std::string& output_dir) {
    std::vector<integration::test_node> nodes;
    for (std::size_t i = 0; i < n; ++i)
      nodes.push_back({network_lab::address(i), static_cast<std::uint16_t>(4200 + i),
                       static_cast<std::uint16_t>(9200 + i)});
    ASSERT_NO_FATAL_FAILURE(
        write_file(path("cluster.ini"), integration::cluster_description(spec, nodes, output_dir)));
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_NO_FATAL_FAILURE(write_file(path("node-" + std::to_string(i) + ".ini"),
                                         integration::node_file("cluster.ini", i,
                                                                network_lab::address(i),
                                                                nodes[i].port)));
    ASSERT_NO_FATAL_FAILURE(integration::enable_tls(dir_.string(), "cluster.ini", n));
  }

  std::unique_ptr<network_lab> lab_;
};

// ---------------------------------------------------------------------------

TEST_F(Multihost, TheReadmesThreeHostTlsClusterTrainsToTheTargetAccuracy) {
  deadline_ = t0_ + 240s;
  ASSERT_NO_FATAL_FAILURE(make_lab(3));
  ASSERT_NO_FATAL_FAILURE(copy_shipped_hosts_cluster());
  // The README's command on each host; only the output goes to the test's
  // directory. Metrics stay on (each host's own loopback).
  const auto t = integration::clock_type::now();
  const auto nodes = start_nodes(3, {"--training.output_dir=" + path("out")});
  expect_all_exit_ok(nodes, 200s);
  ASSERT_FALSE(HasFailure());
  std::cout << "3-host TLS run: " << seconds_since(t) << " s\n";
  EXPECT_CONTAINS(nodes[1]->out(), "node n1: admitted by the coordinator at 10.213.0.1:4200");
  EXPECT_CONTAINS(nodes[2]->out(), "node n2: TLS link to node n1");
  const run_summary s = summary_of(nodes[0]->out());
  std::cout << "test accuracy " << s.test_accuracy << ", " << s.samples_per_second
            << " samples/s\n";
  EXPECT_GE(s.test_accuracy, 0.88) << nodes[0]->out();
  EXPECT_TRUE(fs::exists(path("out/model.ckpt")));
}

TEST_F(Multihost, AThreeHostTlsRunIsBitIdenticalToTheEmbeddedRun) {
  ASSERT_NO_FATAL_FAILURE(make_lab(3));
  run_spec spec; // round_robin, 1 replica, 3 slices per layer, max_in_flight 1, 20 batches
  ASSERT_NO_FATAL_FAILURE(write_tls_cluster(spec, 3, path("cluster-out")));
  ASSERT_NO_FATAL_FAILURE(run_embedded(spec, path("embedded-out")));
  const auto nodes = start_nodes(3);
  expect_all_exit_ok(nodes, 60s);
  ASSERT_FALSE(HasFailure());
  EXPECT_CONTAINS(nodes[2]->out(), "node n2: TLS link to node n1 at 10.213.0.2:4201");
  const std::string a = read_file(path("embedded-out/model.ckpt"));
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == read_file(path("cluster-out/model.ckpt")))
      << "the 3-host TLS cluster's model differs from the embedded run's";
}

TEST_F(Multihost, Bf16OnTheWireHalvesTheBytesBetweenHosts) {
  ASSERT_NO_FATAL_FAILURE(make_lab(3));
  run_spec spec;           // 1 replica x 3 slices over 3 hosts: every layer crosses hosts
  spec.train_limit = 6400; // 100 batches, no sync round (one replica)
  ASSERT_NO_FATAL_FAILURE(write_tls_cluster(spec, 3, path("unused")));
  struct measured {
    double bytes_per_batch = 0;
    run_summary s;
  };
  auto run = [&](const std::string& precision) {
    measured m;
    std::uint64_t before = 0;
    for (std::size_t i = 0; i < 3; ++i)
      before += lab_->link_bytes(i);
    const auto nodes = start_nodes(3,
                                   {"--system.wire_precision=" + precision,
                                    "--training.output_dir=" + path("out-" + precision)},
                                   "-" + precision);
    expect_all_exit_ok(nodes, 60s);
    std::uint64_t after = 0;
    for (std::size_t i = 0; i < 3; ++i)
      after += lab_->link_bytes(i);
    m.s = summary_of(nodes[0]->out());
    // Each byte crosses two links (sender's and receiver's): halve the sum.
    m.bytes_per_batch = static_cast<double>(after - before) / 2 / (m.s.samples / 64);
    EXPECT_CONTAINS(nodes[0]->out(), "wire precision " + precision);
    return m;
  };
  const measured f32 = run("f32");
  const measured bf16 = run("bf16");
  ASSERT_FALSE(HasFailure());
  std::cout << "bytes per batch between hosts: f32 " << f32.bytes_per_batch / 1e3 << " KB, bf16 "
            << bf16.bytes_per_batch / 1e3 << " KB (ratio "
            << bf16.bytes_per_batch / f32.bytes_per_batch << "); test accuracy f32 "
            << f32.s.test_accuracy << ", bf16 " << bf16.s.test_accuracy << '\n';
  // Activations and gradients are nearly all the traffic here; framing,
  // TLS records and validation labels are not halved.
  EXPECT_LE(bf16.bytes_per_batch, 0.6 * f32.bytes_per_batch);
  EXPECT_GE(bf16.bytes_per_batch, 0.4 * f32.bytes_per_batch);
  // The rounding shows in the model, and costs little accuracy.
  EXPECT_NE(read_file(path("out-f32/model.ckpt")), read_file(path("out-bf16/model.ckpt")));
  EXPECT_NEAR(bf16.s.test_accuracy, f32.s.test_accuracy, 0.02);
}

TEST_F(Multihost, RoguePeersFromAFourthHostAreRefusedAndTheRunIsUnchanged) {
  deadline_ = t0_ + 180s;
  ASSERT_NO_FATAL_FAILURE(make_lab(4)); // hosts 0-2: the cluster; host 3: the rogue
  run_spec spec;                        // deterministic: 1 replica x 3 slices, max_in_flight 1
  spec.train_limit = 6400;
  spec.max_epochs = 20; // 2000 batches: long enough to outlast the attacks
  ASSERT_NO_FATAL_FAILURE(write_tls_cluster(spec, 3, path("cluster-out")));
  ASSERT_NO_FATAL_FAILURE(run_embedded(spec, path("embedded-out")));
  // The rogue's credentials: none, a self-signed certificate, one of
  // another CA; and, as the positive control, a valid one (cluster CA).
  ASSERT_NO_FATAL_FAILURE(make_certs("other-ca", {"n1"}));
  ASSERT_EQ(std::system(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=n1 -keyout "
                         + path("self-key.pem") + " -out " + path("self.pem") + " 2>/dev/null")
                            .c_str()),
            0);
  // The control's certificate is signed by the cluster's own CA.
  ASSERT_EQ(std::system(("openssl req -new -newkey rsa:2048 -nodes -subj /CN=n1 -keyout "
                         + path("good-key.pem") + " -out " + path("good.csr") + " 2>/dev/null && "
                         + "openssl x509 -req -in " + path("good.csr") + " -CA "
                         + path("certs/ca.pem") + " -CAkey " + path("certs/ca-key.pem")
                         + " -CAcreateserial -days 1 -out " + path("good.pem") + " 2>/dev/null")
                            .c_str()),
            0);

  const auto nodes = start_nodes(3);
  ASSERT_TRUE(prints_within(*nodes[0], "training 1 replicas", 60s)); // training is under way
  std::vector<long> rss0;
  for (auto* c : nodes)
    rss0.push_back(rss_bytes(c->pid()));
  std::vector<long> rss_max = rss0;

  // Each must make rogue_peer report "refused" (exit 0).
  struct attack {
    std::string name;
    std::vector<std::string> args; // after HOST PORT
  };
  const std::vector<attack> attacks{
      {"no certificate", {}},
      {"self-signed certificate", {path("self.pem"), path("self-key.pem")}},
      {"certificate of another CA", {path("other-ca/n1.pem"), path("other-ca/n1-key.pem")}},
      {"plain TCP", {}},
      {"64 KiB of random bytes", {"20261201"}},
      {"BASP header announcing 4 GiB", {}},
  };
  const std::vector<std::string> modes{"tls", "tls", "tls", "plain", "random", "basp-4g"};
  int attempt = 0;
  for (std::size_t a = 0; a < attacks.size(); ++a) {
    for (std::size_t i = 0; i < 3; ++i) {
      std::vector<std::string> argv{rogue_peer, modes[a], network_lab::address(i),
                                    std::to_string(4200 + i)};
      argv.insert(argv.end(), attacks[a].args.begin(), attacks[a].args.end());
      child_process& r = start("rogue-" + std::to_string(attempt++), lab_->in_host(3, argv));
      ASSERT_TRUE(exits_within(r, 15s));
      std::cout << attacks[a].name << " -> n" << i << ": " << r.out();
      EXPECT_TRUE(r.exited_ok()) << attacks[a].name << " against n" << i << ": " << r.log();
      EXPECT_CONTAINS(r.out(), "refused");
      for (std::size_t k = 0; k < nodes.size(); ++k)
        rss_max[k] = std::max(rss_max[k], rss_bytes(nodes[k]->pid()));
    }
  }
  // The positive control: the same tool with a certificate of the
  // cluster's CA is admitted (so "refused" above means refused).
  child_process& good = start("rogue-control",
                              lab_->in_host(3, {rogue_peer, "tls", network_lab::address(1), "4201",
                                                path("good.pem"), path("good-key.pem")}));
  ASSERT_TRUE(exits_within(good, 15s));
  std::cout << "valid certificate -> n1: " << good.out();
  EXPECT_EQ(WEXITSTATUS(good.status()), 3) << good.log();
  EXPECT_CONTAINS(good.out(), "admitted");

  for (auto* c : nodes)
    ASSERT_TRUE(c->running()) << "the run ended before the attacks did: lengthen it\n" << c->log();
  expect_all_exit_ok(nodes, 120s);
  ASSERT_FALSE(HasFailure());
  // Each node logged why it refused each attack (one line per connection).
  for (std::size_t i = 0; i < 3; ++i) {
    const std::string err = nodes[i]->err();
    const std::string from = "node n" + std::to_string(i) + ": refused a TLS connection from "
                             + network_lab::address(3) + ":";
    std::size_t lines = 0;
    for (auto at = err.find(from); at != std::string::npos; at = err.find(from, at + 1))
      ++lines;
    std::cout << "n" << i << " logged " << lines << " refused connections; RSS "
              << rss0[i] / 1e6 << " MB before, at most " << rss_max[i] / 1e6 << " MB during\n";
    EXPECT_GE(lines, attacks.size()) << err;
    EXPECT_CONTAINS(err, "peer did not return a certificate");
    EXPECT_CONTAINS(err, "certificate verify failed");
    EXPECT_LE(rss_max[i] - rss0[i], 50L * 1000 * 1000) << "n" << i << "'s memory grew";
  }
  const std::string a = read_file(path("embedded-out/model.ckpt"));
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == read_file(path("cluster-out/model.ckpt")))
      << "the attacked run's model differs from the embedded run's";
}

TEST_F(Multihost, BindingBeyondLoopbackWithoutTlsIsRefusedAtStart) {
  ASSERT_NO_FATAL_FAILURE(make_lab(1));
  run_spec spec;
  ASSERT_NO_FATAL_FAILURE(write_file(
      path("cluster.ini"),
      integration::cluster_description(spec, {{network_lab::address(0), 4200, 9200}},
                                       path("out"))));
  ASSERT_NO_FATAL_FAILURE(
      write_file(path("node-0.ini"),
                 integration::node_file("cluster.ini", 0, network_lab::address(0), 4200)));
  child_process& n0 = start_node_in_host(0, "n0");
  ASSERT_TRUE(exits_within(n0, 20s));
  EXPECT_FALSE(n0.exited_ok());
  EXPECT_CONTAINS(n0.err(), "10.213.0.1");
  EXPECT_CONTAINS(n0.err(), "tls.enabled");
  EXPECT_FALSE(fs::exists(path("out/model.ckpt")));
}

TEST_F(Multihost, ANodeWhoseCertificateIsMissingOrUnreadableIsRefusedAtStart) {
  ASSERT_NO_FATAL_FAILURE(make_lab(2));
  run_spec spec;
  ASSERT_NO_FATAL_FAILURE(write_tls_cluster(spec, 2, path("out")));
  fs::remove(path("certs/n1.pem"));
  child_process& missing = start_node_in_host(1, "n1-missing");
  ASSERT_TRUE(exits_within(missing, 20s));
  EXPECT_FALSE(missing.exited_ok());
  EXPECT_CONTAINS(missing.err(), "tls.certificate");
  EXPECT_CONTAINS(missing.err(), "n1.pem");
  // Unreadable: the key belongs to root with mode 600 and the node runs as
  // nobody (setpriv), as a node would under a service account.
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(path("certs").c_str(), 0755), 0);
  ASSERT_NO_FATAL_FAILURE(make_certs("certs2", {"n0"}));
  ASSERT_EQ(::chmod(path("certs2").c_str(), 0755), 0);
  ASSERT_EQ(::chmod(path("certs2/n0.pem").c_str(), 0644), 0);
  ASSERT_EQ(::chmod(path("certs2/n0-key.pem").c_str(), 0600), 0);
  for (const auto* f : {"cluster.ini", "node-0.ini", "certs/ca.pem"})
    ASSERT_EQ(::chmod(path(f).c_str(), 0644), 0);
  ASSERT_NO_FATAL_FAILURE(write_file(path("node-0.ini"),
                                     integration::node_file("cluster.ini", 0,
                                                            network_lab::address(0), 4200)
                                         + "tls_certificate = \"certs2/n0.pem\"\n"
                                           "tls_key = \"certs2/n0-key.pem\"\n"));
  ASSERT_EQ(::chmod(path("node-0.ini").c_str(), 0644), 0);
  ASSERT_EQ(::access("/usr/bin/setpriv", X_OK), 0)
      << "/usr/bin/setpriv (util-linux) runs the node as nobody; it is missing";
  child_process& unreadable =
      start("n0-unreadable",
            lab_->in_host(0, {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                              "--clear-groups", cli, "node",
                              "--config-file=" + path("node-0.ini")}));
  ASSERT_TRUE(exits_within(unreadable, 20s));
  EXPECT_FALSE(unreadable.exited_ok());
  EXPECT_CONTAINS(unreadable.err(), "tls.key");
  EXPECT_CONTAINS(unreadable.err(), "n0-key.pem");
}

TEST_F(Multihost, OverABandwidthLimitedLinkTheRunCompletes) {
  deadline_ = t0_ + 300s;
  ASSERT_NO_FATAL_FAILURE(make_lab(3));
  ASSERT_NO_FATAL_FAILURE(copy_shipped_hosts_cluster());
  // The README's 3-host cluster for 2 epochs, first on free links, then
  // with n1's link (both directions) limited to 100 Mbit/s, in f32, bf16 and
  // int8, and placed by_replica.
  const std::vector<std::string> over{"--training.max_epochs=2", "--system.metrics=false"};
  struct measured {
    run_summary s;
    double seconds = 0;
    double link_bytes = 0; // through n1's link
  };
  auto run = [&](const std::string& tag, const std::string& precision = "f32",
                 const std::string& strategy = "by_swarm") {
    measured m;
    std::vector<std::string> args = over;
    args.push_back("--system.wire_precision=" + precision);
    // The placement is the cluster file's (every node reads the same copy).
    const std::string shipped = read_file(source_dir + "/config/hosts/cluster.ini");
    const std::string from = "strategy = \"auto\"";
    EXPECT_NE(shipped.find(from), std::string::npos);
    std::string text = shipped;
    text.replace(text.find(from), from.size(), "strategy = \"" + strategy + "\"");
    write_file(path("cluster.ini"), text);
    args.push_back("--training.output_dir=" + path("out-" + tag));
    const double bytes0 = static_cast<double>(lab_->link_bytes(1));
    const auto t = integration::clock_type::now();
    const auto nodes = start_nodes(3, args, "-" + tag);
    expect_all_exit_ok(nodes, 200s);
    m.seconds = seconds_since(t);
    m.link_bytes = static_cast<double>(lab_->link_bytes(1)) - bytes0;
    m.s = summary_of(nodes[0]->out());
    EXPECT_GT(m.s.samples, 0) << nodes[0]->out();
    EXPECT_GT(m.s.test_accuracy, 0.8) << nodes[0]->out();
    return m;
  };
  const measured free = run("free");
  ASSERT_FALSE(HasFailure());
  ASSERT_NO_FATAL_FAILURE(lab_->limit_rate(1, "100mbit"));
  std::cout << "n1's link: " << lab_->qdisc(1);
  const measured slow = run("100mbit");
  const measured slow_bf16 = run("100mbit-bf16", "bf16");
  const measured slow_int8 = run("100mbit-int8", "int8");
  // by_replica: replica 1's whole pipeline on n1, so only its sync rounds
  // use the slow link.
  const measured slow_by_replica = run("100mbit-by-replica", "f32", "by_replica");
  ASSERT_FALSE(HasFailure());
  for (const auto& [name, m] :
       {std::pair{"free links", free}, std::pair{"n1 at 100 Mbit/s", slow},
        std::pair{"n1 at 100 Mbit/s, bf16", slow_bf16},
        std::pair{"n1 at 100 Mbit/s, int8", slow_int8},
        std::pair{"n1 at 100 Mbit/s, by_replica", slow_by_replica}}) {
    const double batches = m.s.samples / 64;
    std::cout << name << ": " << m.s.samples_per_second << " samples/s, " << m.seconds
              << " s for the whole run, " << m.link_bytes / batches / 1e3
              << " KB per batch through n1's link, "
              << m.link_bytes * 8 / m.seconds / 1e6 << " Mbit/s on it on average, test accuracy "
              << m.s.test_accuracy << '\n';
  }
  std::cout << "throughput ratio limited / free: "
            << slow.s.samples_per_second / free.s.samples_per_second << "; limited, bf16 / f32: "
            << slow_bf16.s.samples_per_second / slow.s.samples_per_second
            << "; limited, int8 / f32: "
            << slow_int8.s.samples_per_second / slow.s.samples_per_second
            << "; limited, by_replica / by_swarm: "
            << slow_by_replica.s.samples_per_second / slow.s.samples_per_second << '\n';
  // by_replica sends only sync rounds through the slow link: less per
  // sample than by_swarm's every batch.
  EXPECT_LT(slow_by_replica.link_bytes / slow_by_replica.s.samples,
            slow.link_bytes / slow.s.samples);
  // bf16 halves what crosses the slow link (framing aside), int8 quarters it
  // (its row scales, the sync rounds and the framing aside).
  EXPECT_LE(slow_bf16.link_bytes / slow_bf16.s.samples, 0.6 * slow.link_bytes / slow.s.samples);
  EXPECT_LE(slow_int8.link_bytes / slow_int8.s.samples, 0.35 * slow.link_bytes / slow.s.samples);
  // The limit was in force: n1's link carried at most 100 Mbit/s each way,
  // i.e. 200 Mbit/s both ways together, averaged over the run.
  EXPECT_LE(slow.link_bytes * 8 / slow.seconds, 2 * 100e6 * 1.05);
}

} // namespace
