// The files of a test cluster: the result-affecting keys of a run
// (run_spec), written once for a cluster description and once for the
// embedded run's file so both describe the same run; the description's
// [placement] and [nodes]; node files; certificates and [tls].
#pragma once

#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_support.hpp"

namespace integration {

/// The result-affecting keys of a run: written once for the cluster file
/// and once for the embedded run's file, so both describe the same run.
struct run_spec {
  std::string strategy = "round_robin";
  int replicas = 1;
  int slices = 3;
  int max_in_flight = 1;
  int train_limit = 1280;
  int max_epochs = 1;
  bool keep_best = false;
  int sync_every = 100000;
  int seed = 11;
  std::string learning_rate = "0.001";
  double registration_timeout = 30;
  double heartbeat_interval = 1;
  double connection_timeout = 10;
  double stall_timeout = 60;
  int checkpoint_every = 0;
  std::string policy = "best";
  std::string sync_precision = "f32"; ///< topology.sync_precision
  bool round_moments = true;          ///< topology.round_moments
  bool sync_feedback = false;         ///< topology.sync_feedback

  std::string run_sections(const std::string& output_dir) const {
    std::ostringstream os;
    os << "[model]\nlayers = [784, 256, 128, 10]\nactivation = \"relu\"\n\n"
       << "[data]\ndir = \"\"\nvalidation_size = 5000\ntrain_limit = " << train_limit
       << "\ntest_limit = 2000\n\n"
       << "[training]\nbatch_size = 64\nmax_epochs = " << max_epochs
       << "\ntarget_accuracy = 0.0\nkeep_best = " << (keep_best ? "true" : "false")
       << "\nseed = " << seed << "\noutput_dir = \"" << output_dir
       << "\"\nprogress_interval = 0\ncheckpoint_every = " << checkpoint_every
       << "\ncheckpoint_keep = 100\n\n"
       << "[optimizer]\nkind = \"adam\"\nlearning_rate = " << learning_rate << "\n\n"
       << "[topology]\nreplicas = " << replicas << "\nslices = " << slices
       << "\nmax_in_flight = " << max_in_flight << "\nsync_every = " << sync_every
       << "\nsync_policy = \"" << policy << "\"\nsync_precision = \"" << sync_precision
       << "\"\nround_moments = " << (round_moments ? "true" : "false")
       << "\nsync_feedback = " << (sync_feedback ? "true" : "false") << "\n\n"
       << "[system]\nscheduler_threads = 1\nregistration_timeout = " << registration_timeout
       << "\nheartbeat_interval = " << heartbeat_interval
       << "\nconnection_timeout = " << connection_timeout << "\nstall_timeout = " << stall_timeout
       << "\n";
    return os.str();
  }
};

/// One node of a test cluster.
struct test_node {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::uint16_t metrics_port = 0;
};

/// A cluster description: `spec`'s run plus [placement] and [nodes] for
/// n0..n(N-1).
inline std::string cluster_description(const run_spec& spec, const std::vector<test_node>& nodes,
                                       const std::string& output_dir) {
  std::ostringstream os;
  os << spec.run_sections(output_dir) << "\n[placement]\nstrategy = \"" << spec.strategy
     << "\"\n\n[nodes]\n";
  auto list = [&](const char* key, auto item) {
    os << key << " = [";
    for (std::size_t i = 0; i < nodes.size(); ++i)
      os << (i ? ", " : "") << item(i);
    os << "]\n";
  };
  list("ids", [](std::size_t i) { return "\"n" + std::to_string(i) + "\""; });
  list("hosts", [&](std::size_t i) { return "\"" + nodes[i].host + "\""; });
  list("ports", [&](std::size_t i) { return std::to_string(nodes[i].port); });
  list("metrics_ports", [&](std::size_t i) { return std::to_string(nodes[i].metrics_port); });
  return os.str();
}

/// Node n<i>'s file: naming `cluster_file`, listening on bind:port.
inline std::string node_file(const std::string& cluster_file, std::size_t i,
                             const std::string& bind, std::uint16_t port) {
  return "[node]\ncluster_file = \"" + cluster_file + "\"\nid = \"n" + std::to_string(i)
         + "\"\nbind = \"" + bind + "\"\nport = " + std::to_string(port) + "\n";
}

/// scripts/make-certs.sh: a test CA and a certificate and key per node id
/// in `out_dir`; must succeed.
inline void make_certs(const std::string& out_dir, const std::vector<std::string>& ids) {
  std::string cmd = std::string{NETTORRENT_SOURCE_DIR} + "/scripts/make-certs.sh " + out_dir;
  for (const auto& id : ids)
    cmd += " " + id;
  ASSERT_EQ(std::system((cmd + " >/dev/null").c_str()), 0) << cmd;
}

/// Writes certificates for n0..n(N-1) into <dir>/<ca_dir>
/// (scripts/make-certs.sh), a [tls] section into <dir>/<cluster>, and each
/// <dir>/node-<i>.ini's own certificate and key.
inline void enable_tls(const std::string& dir, const std::string& cluster, std::size_t n,
                       const std::string& ca_dir = "certs") {
  using test_support::read_file;
  using test_support::write_file;
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < n; ++i)
    ids.push_back("n" + std::to_string(i));
  ASSERT_NO_FATAL_FAILURE(make_certs(dir + "/" + ca_dir, ids));
  ASSERT_NO_FATAL_FAILURE(write_file(
      dir + "/" + cluster,
      read_file(dir + "/" + cluster) + "\n[tls]\nenabled = true\nca_file = \"" + ca_dir + "/ca.pem\"\n"));
  for (std::size_t i = 0; i < n; ++i) {
    const std::string f = dir + "/node-" + std::to_string(i) + ".ini";
    const std::string id = "n" + std::to_string(i);
    ASSERT_NO_FATAL_FAILURE(write_file(f, read_file(f) + "tls_certificate = \"" + ca_dir + "/" + id
                                              + ".pem\"\ntls_key = \"" + ca_dir + "/" + id
                                              + "-key.pem\"\n"));
  }
}

} // namespace integration
