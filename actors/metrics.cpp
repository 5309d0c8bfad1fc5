#include "metrics.hpp"

#include <chrono>
#include <ostream>
#include <thread>

#include <CivetServer.h>

#include "nettorrent/error.hpp"
#include "nettorrent/metric_families.hpp"

namespace nettorrent {

namespace {

template <class T> struct builder_of;
template <> struct builder_of<prometheus::Counter> {
  static constexpr metric_type type = metric_type::counter;
  static auto make() { return prometheus::BuildCounter(); }
};
template <> struct builder_of<prometheus::Gauge> {
  static constexpr metric_type type = metric_type::gauge;
  static auto make() { return prometheus::BuildGauge(); }
};
template <> struct builder_of<prometheus::Histogram> {
  static constexpr metric_type type = metric_type::histogram;
  static auto make() { return prometheus::BuildHistogram(); }
};

/// The family `name` of the one table (nettorrent/metric_families.hpp),
/// registered with its help text.
template <class T>
prometheus::Family<T>& registered(prometheus::Registry& reg, std::string_view name) {
  const metric_family& f = metric_family_of(name, builder_of<T>::type);
  return builder_of<T>::make()
      .Name(std::string{f.name})
      .Help(std::string{f.help})
      .Register(reg);
}

} // namespace

const char* to_string(msg_kind k) noexcept {
  switch (k) {
  case msg_kind::forward:
    return "forward";
  case msg_kind::block:
    return "block";
  case msg_kind::backward:
    return "backward";
  case msg_kind::grad:
    return "grad";
  case msg_kind::ack:
    return "ack";
  case msg_kind::labels:
    return "labels";
  case msg_kind::done:
    return "done";
  case msg_kind::loss:
    return "loss";
  }
  return "?";
}

metrics::metrics(std::string node, const run_layout& layout)
    : registry_(std::make_shared<prometheus::Registry>()), layout_(layout) {
  const std::size_t layers = layout.layers();
  const std::size_t replicas = layout.replicas();
  using namespace prometheus;
  auto& reg = *registry_;
  auto& samples = registered<Counter>(reg, "nettorrent_samples_total");
  auto& batches = registered<Counter>(reg, "nettorrent_batches_total");
  auto& sent = registered<Counter>(reg, "nettorrent_messages_sent_total");
  auto& received = registered<Counter>(reg, "nettorrent_messages_received_total");
  auto& bytes_sent = registered<Counter>(reg, "nettorrent_bytes_sent_total");
  auto& bytes_received = registered<Counter>(reg, "nettorrent_bytes_received_total");
  auto& dropped = registered<Counter>(reg, "nettorrent_dropped_messages_total");
  auto& stale = registered<Counter>(reg, "nettorrent_stale_messages_total");
  auto& forward = registered<Histogram>(reg, "nettorrent_forward_seconds");
  auto& backward = registered<Histogram>(reg, "nettorrent_backward_seconds");
  auto& staleness =
      registered<Histogram>(reg, "nettorrent_update_staleness");
  auto& alive = registered<Gauge>(reg, "nettorrent_peers_alive");
  auto& failures = registered<Counter>(reg, "nettorrent_peer_failures_total");
  auto& rounds = registered<Counter>(reg, "nettorrent_sync_rounds_total");
  auto& sync_bytes = registered<Counter>(reg, "nettorrent_sync_bytes_total");
  auto& winner = registered<Gauge>(reg, "nettorrent_sync_winner_replica");
  const Histogram::BucketBoundaries seconds_buckets{1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3,
                                                    1e-2, 3e-2, 0.1,  0.3,  1};
  const Histogram::BucketBoundaries staleness_buckets{0, 1, 2, 3, 4, 8, 16};

  swarms_.resize(layout.metrics_cells());
  for (std::size_t s = 0; s <= layers; ++s) {
    const std::string swarm = std::to_string(s);
    const Labels per_swarm{{"node", node}, {"swarm", swarm}};
    // Children shared by every replica of the swarm.
    swarm_metrics shared;
    shared.forward_seconds = &forward.Add(per_swarm, seconds_buckets);
    shared.backward_seconds = &backward.Add(per_swarm, seconds_buckets);
    shared.staleness = &staleness.Add(per_swarm, staleness_buckets);
    for (std::size_t k = 0; k < msg_kinds; ++k) {
      Labels l = per_swarm;
      l.emplace("kind", to_string(static_cast<msg_kind>(k)));
      shared.sent[k] = {&sent.Add(l), &bytes_sent.Add(l)};
      shared.received[k] = {&received.Add(l), &bytes_received.Add(l)};
      shared.dropped[k] = &dropped.Add(l);
    }
    shared.peers_alive = &alive.Add(per_swarm);
    shared.peer_failures = &failures.Add(per_swarm);
    shared.sync_rounds = &rounds.Add(per_swarm);
    shared.sync_bytes = &sync_bytes.Add(per_swarm);
    shared.sync_winner = &winner.Add(per_swarm);
    for (std::size_t r = 0; r < replicas; ++r) {
      swarm_metrics m = shared;
      Labels l = per_swarm;
      l.emplace("replica", std::to_string(r));
      m.samples = &samples.Add(l);
      m.batches = &batches.Add(l);
      m.stale = &stale.Add(l);
      swarms_[layout.metrics_index({s, r})] = m;
    }
  }

  auto gauge = [&](const char* name) {
    return &registered<Gauge>(reg, name).Add({{"node", node}});
  };
  run_.training_loss =
      gauge("nettorrent_training_loss");
  run_.best_validation_accuracy =
      gauge("nettorrent_best_validation_accuracy");
  run_.test_accuracy = gauge("nettorrent_test_accuracy");
  run_.samples_per_second =
      gauge("nettorrent_samples_per_second");
  run_.epoch = gauge("nettorrent_epoch");
  run_.time_to_target = gauge("nettorrent_time_to_target_seconds");
  run_.time_to_target->Set(-1);
  auto counter = [&](const char* name) {
    return &registered<Counter>(reg, name).Add({{"node", node}});
  };
  run_.recoveries = counter("nettorrent_recoveries_total");
  run_.samples_redone = counter("nettorrent_samples_redone_total");
  // From noticing a lost node (the connection timeout is not included) to
  // training again: re-placing and re-wiring actors takes from tens of
  // milliseconds (loopback) to tens of seconds.
  const Histogram::BucketBoundaries recovery_buckets{0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 60};
  run_.recovery_seconds = &registered<Histogram>(reg, "nettorrent_recovery_seconds")
                               .Add({{"node", node}}, recovery_buckets);
  run_.nodes_alive =
      gauge("nettorrent_nodes_alive");
  run_.nodes_left = counter("nettorrent_nodes_left_total");
  auto& steps = registered<Counter>(reg, "nettorrent_round_step_seconds_total");
  for (std::size_t i = 0; i < run_.round_step_seconds.size(); ++i)
    run_.round_step_seconds[i] =
        &steps.Add({{"node", node}, {"step", run_result::round_timing::name(i)}});
  auto& val = registered<Gauge>(reg, "nettorrent_validation_accuracy");
  for (std::size_t r = 0; r < replicas; ++r)
    run_.validation_accuracy.push_back(&val.Add({{"node", node}, {"replica", std::to_string(r)}}));
}

const swarm_metrics& metrics::of(const actor_key& a) const {
  return swarms_.at(layout_.metrics_index(layout_.metrics_of(a)));
}

void linger_for_scrapes(double seconds, std::ostream& out) {
  if (seconds <= 0)
    return;
  out << "metrics: the exporter stays up " << seconds << "s for a last scrape" << std::endl;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

std::unique_ptr<prometheus::Exposer> expose_metrics(const metrics& m, const std::string& bind,
                                                    std::uint16_t port) {
  const std::string addr = bind + ":" + std::to_string(port);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(addr);
  } catch (const std::exception& e) {
    throw error("cannot serve metrics on " + addr
                + " (port taken or address invalid): " + e.what());
  }
  exposer->RegisterCollectable(m.registry());
  return exposer;
}

} // namespace nettorrent
