// Prometheus metrics of one process: one registry, one factory that creates
// every labelled child once at start, one Exposer. Actors receive plain
// pointers to their children at spawn and never create metrics per message.
// Labels: node, swarm (1-based layer; "0" = the input side: workers and the
// input relay), replica, kind. No batch or actor ids as labels.
#pragma once

#include <array>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "nettorrent/run_layout.hpp"
#include "nettorrent/run_result.hpp"

namespace nettorrent {

/// Message kinds counted by the traffic metrics.
enum class msg_kind : std::uint8_t { forward, block, backward, grad, ack, labels, done, loss };
inline constexpr std::size_t msg_kinds = 8;
const char* to_string(msg_kind k) noexcept;

/// Counters of one message kind in one direction.
struct traffic_counters {
  prometheus::Counter* messages = nullptr;
  prometheus::Counter* bytes = nullptr;
  void add(std::size_t payload_bytes) const {
    messages->Increment();
    bytes->Increment(static_cast<double>(payload_bytes));
  }
};

/// Everything an actor of one swarm (and replica) updates.
struct swarm_metrics {
  prometheus::Counter* samples = nullptr; ///< per swarm x replica
  prometheus::Counter* batches = nullptr; ///< per swarm x replica
  prometheus::Histogram* forward_seconds = nullptr;
  prometheus::Histogram* backward_seconds = nullptr;
  prometheus::Histogram* staleness = nullptr;
  std::array<traffic_counters, msg_kinds> sent{};
  std::array<traffic_counters, msg_kinds> received{};
  std::array<prometheus::Counter*, msg_kinds> dropped{};
  prometheus::Counter* stale = nullptr; ///< per swarm x replica: other incarnations' messages
  prometheus::Gauge* peers_alive = nullptr;
  prometheus::Counter* peer_failures = nullptr;
  prometheus::Counter* sync_rounds = nullptr;
  prometheus::Counter* sync_bytes = nullptr;
  prometheus::Gauge* sync_winner = nullptr;

  void sent_msg(msg_kind k, std::size_t bytes) const {
    sent[static_cast<std::size_t>(k)].add(bytes);
  }
  void received_msg(msg_kind k, std::size_t bytes) const {
    received[static_cast<std::size_t>(k)].add(bytes);
  }
  void dropped_msg(msg_kind k) const { dropped[static_cast<std::size_t>(k)]->Increment(); }
};

/// Run-level metrics (label node only), updated by the coordinator. Every
/// process exports them; the other processes keep their start values.
struct run_metrics {
  prometheus::Gauge* training_loss = nullptr;
  std::vector<prometheus::Gauge*> validation_accuracy; ///< [replica]
  prometheus::Gauge* best_validation_accuracy = nullptr;
  prometheus::Gauge* test_accuracy = nullptr;
  prometheus::Gauge* samples_per_second = nullptr;
  prometheus::Gauge* epoch = nullptr;
  prometheus::Gauge* time_to_target = nullptr;
  prometheus::Counter* recoveries = nullptr;         ///< lost nodes recovered from
  prometheus::Histogram* recovery_seconds = nullptr; ///< noticing a loss -> training again
  prometheus::Counter* samples_redone = nullptr;     ///< samples trained again after recoveries
  prometheus::Gauge* nodes_alive = nullptr;          ///< coordinator's process: nodes; others 0
  prometheus::Counter* nodes_left = nullptr;         ///< coordinator's process: graceful leaves
  /// Seconds of sync rounds per step, indexed by run_result::round_timing::part.
  std::array<prometheus::Counter*, run_result::round_timing::parts> round_step_seconds{};
};

/// The metrics of one process.
class metrics {
public:
  /// Creates every family and child for the swarms (0 = input side, 1..L =
  /// layers) and replicas of `layout`, labelled with `node`.
  metrics(std::string node, const run_layout& layout);

  /// The children actor `a` updates (its cell in the run layout).
  const swarm_metrics& of(const actor_key& a) const;
  const run_metrics& run() const { return run_; }
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

private:
  std::shared_ptr<prometheus::Registry> registry_;
  run_layout layout_;
  std::vector<swarm_metrics> swarms_; ///< [layout_.metrics_index(cell)]
  run_metrics run_;
};

/// Keeps the calling thread (and so the exporter) alive for `seconds` after
/// a run, printing why; no-op for 0.
void linger_for_scrapes(double seconds, std::ostream& out);

/// Serves `m` on http://bind:port/metrics. Throws nettorrent::error naming
/// the address when it cannot listen (port taken, bad address).
std::unique_ptr<prometheus::Exposer> expose_metrics(const metrics& m, const std::string& bind,
                                                    std::uint16_t port);

} // namespace nettorrent
