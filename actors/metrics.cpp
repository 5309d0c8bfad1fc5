#include "metrics.hpp"

#include <chrono>
#include <ostream>
#include <thread>

#include <CivetServer.h>

#include "nettorrent/error.hpp"

namespace nettorrent {

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
  auto& samples = BuildCounter()
                      .Name("nettorrent_samples_total")
                      .Help("Training samples through a swarm (per replica)")
                      .Register(reg);
  auto& batches = BuildCounter()
                      .Name("nettorrent_batches_total")
                      .Help("Training batches through a swarm (per replica)")
                      .Register(reg);
  auto& sent = BuildCounter()
                   .Name("nettorrent_messages_sent_total")
                   .Help("Messages sent, by kind")
                   .Register(reg);
  auto& received = BuildCounter()
                       .Name("nettorrent_messages_received_total")
                       .Help("Messages received, by kind")
                       .Register(reg);
  auto& bytes_sent = BuildCounter()
                         .Name("nettorrent_bytes_sent_total")
                         .Help("Matrix payload bytes sent, by kind")
                         .Register(reg);
  auto& bytes_received = BuildCounter()
                             .Name("nettorrent_bytes_received_total")
                             .Help("Matrix payload bytes received, by kind")
                             .Register(reg);
  auto& dropped = BuildCounter()
                      .Name("nettorrent_dropped_messages_total")
                      .Help("Malformed messages dropped, by kind")
                      .Register(reg);
  auto& stale = BuildCounter()
                    .Name("nettorrent_stale_messages_total")
                    .Help("Messages of another incarnation of the replica dropped (stale)")
                    .Register(reg);
  auto& forward = BuildHistogram()
                      .Name("nettorrent_forward_seconds")
                      .Help("Time of a slice's forward computation")
                      .Register(reg);
  auto& backward = BuildHistogram()
                       .Name("nettorrent_backward_seconds")
                       .Help("Time of a slice's backward computation and update")
                       .Register(reg);
  auto& staleness =
      BuildHistogram()
          .Name("nettorrent_update_staleness")
          .Help("Updates applied to a slice between a batch's forward and its backward")
          .Register(reg);
  auto& alive = BuildGauge()
                    .Name("nettorrent_peers_alive")
                    .Help("Slices of a swarm alive, as its leader sees them")
                    .Register(reg);
  auto& failures = BuildCounter()
                       .Name("nettorrent_peer_failures_total")
                       .Help("Slices of a swarm seen going down")
                       .Register(reg);
  auto& rounds = BuildCounter()
                     .Name("nettorrent_sync_rounds_total")
                     .Help("Sync rounds a swarm leader ran")
                     .Register(reg);
  auto& sync_bytes = BuildCounter()
                         .Name("nettorrent_sync_bytes_total")
                         .Help("Bytes of weights and optimizer state moved by sync rounds")
                         .Register(reg);
  auto& winner = BuildGauge()
                     .Name("nettorrent_sync_winner_replica")
                     .Help("Best replica of the last sync round")
                     .Register(reg);
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

  auto gauge = [&](const char* name, const char* help) {
    return &BuildGauge().Name(name).Help(help).Register(reg).Add({{"node", node}});
  };
  run_.training_loss =
      gauge("nettorrent_training_loss", "Mean training loss since the last sync round");
  run_.best_validation_accuracy =
      gauge("nettorrent_best_validation_accuracy", "Best validation accuracy so far");
  run_.test_accuracy = gauge("nettorrent_test_accuracy", "Test accuracy of the final model");
  run_.samples_per_second =
      gauge("nettorrent_samples_per_second", "Training samples per second since the start");
  run_.epoch = gauge("nettorrent_epoch", "Epoch in progress");
  run_.time_to_target = gauge("nettorrent_time_to_target_seconds",
                              "Seconds to the target validation accuracy (-1 until reached)");
  run_.time_to_target->Set(-1);
  auto counter = [&](const char* name, const char* help) {
    return &BuildCounter().Name(name).Help(help).Register(reg).Add({{"node", node}});
  };
  run_.recoveries = counter("nettorrent_recoveries_total",
                            "Lost nodes the run recovered from (their actors re-placed)");
  run_.samples_redone = counter("nettorrent_samples_redone_total",
                                "Training samples trained again because of recoveries");
  // From noticing a lost node (the connection timeout is not included) to
  // training again: re-placing and re-wiring actors takes from tens of
  // milliseconds (loopback) to tens of seconds.
  const Histogram::BucketBoundaries recovery_buckets{0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 60};
  run_.recovery_seconds = &BuildHistogram()
                               .Name("nettorrent_recovery_seconds")
                               .Help("Time from noticing a lost node to training again")
                               .Register(reg)
                               .Add({{"node", node}}, recovery_buckets);
  run_.nodes_alive =
      gauge("nettorrent_nodes_alive", "Nodes of the run alive, as the coordinator sees them");
  auto& steps = BuildCounter()
                    .Name("nettorrent_round_step_seconds_total")
                    .Help("Seconds the sync rounds spent per step: draining (replicas waiting "
                          "at the barrier), scoring, keeping_best, exchanging, applying, "
                          "snapshotting")
                    .Register(reg);
  for (std::size_t i = 0; i < run_.round_step_seconds.size(); ++i)
    run_.round_step_seconds[i] =
        &steps.Add({{"node", node}, {"step", run_result::round_timing::name(i)}});
  auto& val = BuildGauge()
                  .Name("nettorrent_validation_accuracy")
                  .Help("Last validation accuracy of each replica")
                  .Register(reg);
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
