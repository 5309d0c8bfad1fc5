// The one table of the Prometheus metric families a NetTorrent process
// exports: name, type, labels and help. actors/metrics.cpp registers every
// family from it (and nothing else), and the dashboard checks read it to
// know which series and labels a query may use. Plain C++: no prometheus
// headers here.
#pragma once

#include <array>
#include <stdexcept>
#include <string>
#include <string_view>

namespace nettorrent {

enum class metric_type { counter, gauge, histogram };

struct metric_family {
  std::string_view name;
  metric_type type;
  std::array<std::string_view, 3> labels; ///< the first empty one ends the list
  std::string_view help;
};

namespace detail {
using mt = metric_type;
} // namespace detail

inline constexpr std::array<metric_family, 29> metric_families{{
    // Per swarm ("0" is the input side: workers and the input relay), per replica.
    {"nettorrent_samples_total", detail::mt::counter, {"node", "swarm", "replica"},
     "Training samples through a swarm (per replica)"},
    {"nettorrent_batches_total", detail::mt::counter, {"node", "swarm", "replica"},
     "Training batches through a swarm (per replica)"},
    {"nettorrent_stale_messages_total", detail::mt::counter, {"node", "swarm", "replica"},
     "Messages of another incarnation of the replica dropped (stale)"},
    // Per swarm, per message kind.
    {"nettorrent_messages_sent_total", detail::mt::counter, {"node", "swarm", "kind"},
     "Messages sent, by kind"},
    {"nettorrent_messages_received_total", detail::mt::counter, {"node", "swarm", "kind"},
     "Messages received, by kind"},
    {"nettorrent_bytes_sent_total", detail::mt::counter, {"node", "swarm", "kind"},
     "Matrix payload bytes sent, by kind"},
    {"nettorrent_bytes_received_total", detail::mt::counter, {"node", "swarm", "kind"},
     "Matrix payload bytes received, by kind"},
    {"nettorrent_dropped_messages_total", detail::mt::counter, {"node", "swarm", "kind"},
     "Malformed messages dropped, by kind"},
    // Per swarm.
    {"nettorrent_forward_seconds", detail::mt::histogram, {"node", "swarm"},
     "Time of a slice's forward computation"},
    {"nettorrent_backward_seconds", detail::mt::histogram, {"node", "swarm"},
     "Time of a slice's backward computation and update"},
    {"nettorrent_update_staleness", detail::mt::histogram, {"node", "swarm"},
     "Updates applied to a slice between a batch's forward and its backward"},
    {"nettorrent_peers_alive", detail::mt::gauge, {"node", "swarm"},
     "Slices of a swarm alive, as its leader sees them"},
    {"nettorrent_peer_failures_total", detail::mt::counter, {"node", "swarm"},
     "Slices of a swarm seen going down"},
    {"nettorrent_sync_rounds_total", detail::mt::counter, {"node", "swarm"},
     "Sync rounds a swarm leader ran"},
    {"nettorrent_sync_bytes_total", detail::mt::counter, {"node", "swarm"},
     "Bytes of weights and optimizer state moved by sync rounds"},
    {"nettorrent_sync_winner_replica", detail::mt::gauge, {"node", "swarm"},
     "Best replica of the last sync round"},
    // Per run (the coordinator's process updates them; the others keep their
    // start values).
    {"nettorrent_training_loss", detail::mt::gauge, {"node"},
     "Mean training loss since the last sync round"},
    {"nettorrent_validation_accuracy", detail::mt::gauge, {"node", "replica"},
     "Last validation accuracy of each replica"},
    {"nettorrent_best_validation_accuracy", detail::mt::gauge, {"node"},
     "Best validation accuracy so far"},
    {"nettorrent_test_accuracy", detail::mt::gauge, {"node"}, "Test accuracy of the final model"},
    {"nettorrent_samples_per_second", detail::mt::gauge, {"node"},
     "Training samples per second since the start"},
    {"nettorrent_epoch", detail::mt::gauge, {"node"}, "Epoch in progress"},
    {"nettorrent_time_to_target_seconds", detail::mt::gauge, {"node"},
     "Seconds to the target validation accuracy (-1 until reached)"},
    {"nettorrent_recoveries_total", detail::mt::counter, {"node"},
     "Lost nodes the run recovered from (their actors re-placed)"},
    {"nettorrent_recovery_seconds", detail::mt::histogram, {"node"},
     "Time from noticing a lost node to training again"},
    {"nettorrent_samples_redone_total", detail::mt::counter, {"node"},
     "Training samples trained again because of recoveries"},
    {"nettorrent_nodes_alive", detail::mt::gauge, {"node"},
     "Nodes of the run alive, as the coordinator sees them"},
    {"nettorrent_nodes_left_total", detail::mt::counter, {"node"},
     "Nodes that left the run gracefully, their actors moved at a sync round"},
    {"nettorrent_round_step_seconds_total", detail::mt::counter, {"node", "step"},
     "Seconds the sync rounds spent per step: draining (replicas waiting at the barrier), "
     "scoring, keeping_best, exchanging, applying, snapshotting"},
}};

/// The family named `name`, of type `type` (throws std::logic_error if the
/// table has no such family: a metric outside the table is a bug).
inline const metric_family& metric_family_of(std::string_view name, metric_type type) {
  for (const auto& f : metric_families)
    if (f.name == name && f.type == type)
      return f;
  throw std::logic_error("metric family " + std::string{name}
                         + " is not in nettorrent/metric_families.hpp with that type");
}

} // namespace nettorrent
