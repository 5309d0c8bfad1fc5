// A real Prometheus server (Debian's prometheus 2.42, temp storage, loopback,
// 1 s scrape interval) scrapes a real embedded run and a real 2-node cluster
// run; the test then checks through Prometheus's HTTP API that every metric
// family exists with the expected labels, that counters only grow, and that
// every PromQL expression of the Grafana dashboards returns data. Every
// process is killed in the fixture's destructor, whatever happens.
#include <gtest/gtest.h>

#include <rapidjson/document.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "child_process.hpp"
#include "dashboard_queries.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using integration::child_process;

namespace {

const std::string cli = NETTORRENT_CLI;
const std::string source_dir = NETTORRENT_SOURCE_DIR;

/// Every metric family and the labels each series must carry (besides the
/// job and instance labels Prometheus adds).
const std::map<std::string, std::set<std::string>> families = {
    {"nettorrent_samples_total", {"node", "swarm", "replica"}},
    {"nettorrent_batches_total", {"node", "swarm", "replica"}},
    {"nettorrent_messages_sent_total", {"node", "swarm", "kind"}},
    {"nettorrent_messages_received_total", {"node", "swarm", "kind"}},
    {"nettorrent_bytes_sent_total", {"node", "swarm", "kind"}},
    {"nettorrent_bytes_received_total", {"node", "swarm", "kind"}},
    {"nettorrent_dropped_messages_total", {"node", "swarm", "kind"}},
    {"nettorrent_stale_messages_total", {"node", "swarm", "replica"}},
    {"nettorrent_sync_rounds_total", {"node", "swarm"}},
    {"nettorrent_sync_bytes_total", {"node", "swarm"}},
    {"nettorrent_peer_failures_total", {"node", "swarm"}},
    {"nettorrent_forward_seconds_bucket", {"node", "swarm", "le"}},
    {"nettorrent_backward_seconds_bucket", {"node", "swarm", "le"}},
    {"nettorrent_update_staleness_bucket", {"node", "swarm", "le"}},
    {"nettorrent_peers_alive", {"node", "swarm"}},
    {"nettorrent_sync_winner_replica", {"node", "swarm"}},
    {"nettorrent_training_loss", {"node"}},
    {"nettorrent_validation_accuracy", {"node", "replica"}},
    {"nettorrent_best_validation_accuracy", {"node"}},
    {"nettorrent_test_accuracy", {"node"}},
    {"nettorrent_samples_per_second", {"node"}},
    {"nettorrent_epoch", {"node"}},
    {"nettorrent_time_to_target_seconds", {"node"}},
    {"nettorrent_recoveries_total", {"node"}},
    {"nettorrent_recovery_seconds_bucket", {"node", "le"}},
    {"nettorrent_samples_redone_total", {"node"}},
    {"nettorrent_nodes_alive", {"node"}},
    {"nettorrent_round_step_seconds_total", {"node", "step"}},
};

class Prometheus : public ::testing::Test {
protected:
  Prometheus() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path()
          / ("nettorrent-prom-" + std::to_string(::getpid()) + "-" + info->name());
    fs::remove_all(dir);
    fs::create_directories(dir / "tsdb");
  }
  ~Prometheus() override {
    procs.clear(); // kills and reaps every child
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  child_process& start(std::vector<std::string> argv, const std::string& log) {
    argv[0] = find_program(argv[0]);
    const std::string path = (dir / log).string();
    procs.push_back(std::make_unique<child_process>(log, std::move(argv), dir.string(), path, path,
                                                    child_process::env_changes{}));
    return *procs.back();
  }

  /// Absolute path of `name` (execve does not search PATH).
  static std::string find_program(const std::string& name) {
    if (name.find('/') != std::string::npos)
      return name;
    const char* path = std::getenv("PATH");
    std::stringstream ss{path != nullptr ? path : "/usr/bin:/bin"};
    for (std::string d; std::getline(ss, d, ':');)
      if (::access((d + "/" + name).c_str(), X_OK) == 0)
        return d + "/" + name;
    return name;
  }

  /// Waits until `c`'s output holds `text` (false on timeout or exit without it).
  static bool prints(child_process& c, const std::string& text, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (c.out().find(text) != std::string::npos)
        return true;
      if (!c.running())
        return c.out().find(text) != std::string::npos;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  void write(const std::string& name, const std::string& text) {
    std::ofstream{dir / name} << text;
  }

  /// Runs an instant query; returns the `data.result` array as a document.
  rapidjson::Document query(const std::string& promql) {
    rapidjson::Document d;
    const std::string body =
        integration::http_get(prom_port, "/api/v1/query?query=" + integration::url_encode(promql));
    d.Parse(body.c_str());
    return d;
  }

  std::size_t series(const std::string& promql) {
    auto d = query(promql);
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("data"))
      return 0;
    return d["data"]["result"].Size();
  }

  fs::path dir;
  std::vector<std::unique_ptr<child_process>> procs;
  std::uint16_t prom_port = 0;
};

TEST_F(Prometheus, ScrapesEmbeddedAndClusterRunsAndAnswersEveryDashboardQuery) {
  const auto ports = integration::free_ports(6);
  ASSERT_EQ(ports.size(), 6u) << "cannot find free ports on 127.0.0.1";
  prom_port = ports[0];
  const std::uint16_t m_local = ports[1];
  const std::uint16_t m0 = ports[2];
  const std::uint16_t m1 = ports[3];
  const std::uint16_t b0 = ports[4];
  const std::uint16_t b1 = ports[5];
  write("prometheus.yml",
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: nettorrent-local\n    static_configs:\n      - targets: ['127.0.0.1:"
            + std::to_string(m_local)
            + "']\n"
              "  - job_name: nettorrent-cluster\n    static_configs:\n      - targets: ['127.0.0.1:"
            + std::to_string(m0) + "', '127.0.0.1:" + std::to_string(m1) + "']\n");
  write("cluster.ini",
        "[model]\nlayers = [784, 64, 32, 10]\n"
        "[data]\ntrain_limit = 8000\n"
        "[training]\nmax_epochs = 3\nprogress_interval = 0\noutput_dir = \""
            + (dir / "cluster").string()
            + "\"\n"
              "[topology]\nreplicas = 2\nslices = 2\nsync_every = 1000\nvalidation_subset = 500\n"
              "[system]\nscheduler_threads = 1\nmetrics = true\nmetrics_linger = "
              "60\nregistration_timeout = 20\n"
              "[placement]\nstrategy = \"round_robin\"\n"
              "[nodes]\nids = [\"n0\", \"n1\"]\nhosts = [\"127.0.0.1\", \"127.0.0.1\"]\n"
              "ports = ["
            + std::to_string(b0) + ", " + std::to_string(b1)
            + "]\n"
              "metrics_ports = ["
            + std::to_string(m0) + ", " + std::to_string(m1) + "]\n");
  write("node-0.ini", "[node]\ncluster_file = \"cluster.ini\"\nid = \"n0\"\n");
  write("node-1.ini", "[node]\ncluster_file = \"cluster.ini\"\nid = \"n1\"\n");

  start({"prometheus", "--config.file=" + (dir / "prometheus.yml").string(),
         "--storage.tsdb.path=" + (dir / "tsdb").string(),
         "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
        "prometheus.log");
  auto& local =
      start({cli, "train", "--config-file=" + source_dir + "/config/local.ini",
             "--training.max_epochs=3", "--data.train_limit=8000", "--topology.sync_every=1000",
             "--training.progress_interval=0", "--training.output_dir=" + (dir / "local").string(),
             "--system.metrics_port=" + std::to_string(m_local), "--system.metrics_linger=60"},
            "local.log");
  auto& n0 = start({cli, "node", "--config-file=" + (dir / "node-0.ini").string()}, "n0.log");
  auto& n1 = start({cli, "node", "--config-file=" + (dir / "node-1.ini").string()}, "n1.log");

  // Each run trains, reports, and keeps its exporter up for a last scrape.
  ASSERT_TRUE(prints(local, "stays up", 120s)) << local.log();
  ASSERT_TRUE(prints(n0, "stays up", 120s)) << n0.log();
  ASSERT_TRUE(prints(n1, "stays up", 120s)) << n1.log();
  // New series become queryable a few seconds after the first scrape; give
  // Prometheus at least 3 scrapes of the final values (rate() needs two).
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (series("nettorrent_test_accuracy") < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(500ms);
  std::this_thread::sleep_for(4s);
  ASSERT_EQ(series("up == 1"), 3u) << "not every exporter is up";

  // 1. Every family exists, from every run, with the expected labels.
  for (const auto& [name, labels] : families) {
    auto d = query(name);
    ASSERT_FALSE(d.HasParseError()) << name;
    const auto& result = d["data"]["result"];
    EXPECT_GT(result.Size(), 0u) << name << " has no series";
    std::set<std::string> nodes;
    for (const auto& s : result.GetArray()) {
      const auto& metric = s["metric"];
      for (const auto& l : labels)
        EXPECT_TRUE(metric.HasMember(l.c_str())) << name << " lacks label " << l;
      if (metric.HasMember("node"))
        nodes.insert(metric["node"].GetString());
    }
    EXPECT_EQ(nodes, (std::set<std::string>{"local", "n0", "n1"})) << name;
  }
  // Swarm and replica labels take the expected values; no batch ids.
  EXPECT_EQ(series("nettorrent_samples_total{node=\"local\"}"), 8u); // swarms 0..3 x 2 replicas
  EXPECT_EQ(series("nettorrent_samples_total{node=\"local\",swarm=\"3\",replica=\"1\"} > 0"), 1u);
  // The coordinator's process reports the run's nodes alive; the others 0.
  EXPECT_EQ(series("nettorrent_nodes_alive{node=\"local\"} == 1"), 1u);
  EXPECT_EQ(series("nettorrent_nodes_alive{node=\"n0\"} == 2"), 1u);
  EXPECT_EQ(series("nettorrent_nodes_alive{node=\"n1\"} == 0"), 1u);
  // The coordinator's process accounts the rounds' time; scoring takes some.
  EXPECT_EQ(series("nettorrent_round_step_seconds_total{node=\"local\"}"), 6u);
  EXPECT_EQ(series("nettorrent_round_step_seconds_total{node=\"local\",step=\"scoring\"} > 0"), 1u);

  // 2. Counters only grow: no resets of any counter series over the run.
  for (const auto& [name, labels] : families) {
    if (name.size() < 6 || name.compare(name.size() - 6, 6, "_total") != 0)
      continue;
    auto resets = query("max(resets(" + name + "[10m]))");
    ASSERT_EQ(resets["data"]["result"].Size(), 1u) << name;
    EXPECT_STREQ(resets["data"]["result"][0]["value"][1].GetString(), "0") << name;
  }
  // And they did grow: training samples are counted.
  EXPECT_EQ(series("sum(nettorrent_samples_total{swarm=\"1\"}) > 0"), 1u);

  // 3. Every dashboard query returns at least one series.
  const auto queries = dashboard_queries(source_dir + "/grafana/dashboards");
  ASSERT_FALSE(queries.empty());
  for (const auto& q : queries)
    EXPECT_GT(series(q.expr), 0u) << q.dashboard << ": " << q.title << ": " << q.expr;
}

} // namespace

namespace {

TEST_F(Prometheus, ATakenMetricsPortIsAClearError) {
  // Hold a port, then ask a run to serve its metrics there.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string port = std::to_string(ntohs(addr.sin_port));
  auto& run =
      start({cli, "train", "--config-file=" + source_dir + "/config/local.ini",
             "--data.train_limit=2000", "--training.max_epochs=1",
             "--training.output_dir=" + (dir / "out").string(), "--system.metrics_port=" + port},
            "taken.log");
  const bool exited = run.wait_until(std::chrono::steady_clock::now() + 60s);
  ::close(fd);
  ASSERT_TRUE(exited) << run.log();
  EXPECT_TRUE(WIFEXITED(run.status()) && WEXITSTATUS(run.status()) == 1) << run.log();
  EXPECT_NE(run.out().find("127.0.0.1:" + port), std::string::npos) << run.log();
  EXPECT_FALSE(fs::exists(dir / "out" / "model.ckpt")) << "the run trained anyway";
}

} // namespace
