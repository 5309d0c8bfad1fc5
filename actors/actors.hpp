// Every typed actor interface of NetTorrent, one doc line per handler.
// Interfaces that would refer to each other in a cycle are split: an actor
// that only *reports to* another gets a narrow "sink" handle.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "atoms.hpp"
#include "messages.hpp"

namespace nettorrent {

/// What a neuron slice sends to its gradient relays.
using slice_output_actor = caf::typed_actor<
    /// Forward: this slice's output columns H[:, c0:c1) of a batch (B x n).
    caf::reacts_to<atom::block, std::uint64_t /*batch*/, bool /*train*/, std::uint32_t /*slice*/,
                   shared_matrix>,
    /// Backward: this slice's partial input gradient dZ W^T (B x fan_in).
    caf::reacts_to<atom::grad, std::uint64_t /*batch*/, std::uint32_t /*slice*/, owned_matrix>,
    /// Swarm 1 only: this slice applied its update for the batch.
    caf::reacts_to<atom::ack, std::uint64_t /*batch*/, std::uint32_t /*slice*/>>;

/// A neuron slice: columns [c0, c1) of one layer in one replica.
using neuron_slice_actor = caf::typed_actor<
    /// Forward a batch's input X (B x fan_in); training batches are stashed.
    caf::reacts_to<atom::forward, std::uint64_t /*batch*/, bool /*train*/, shared_matrix>,
    /// Backward dLoss/dH for this slice's columns (B x n); updates the weights.
    caf::reacts_to<atom::backward, std::uint64_t /*batch*/, owned_matrix>,
    /// Connects the slice to the relay before it and the relay after it.
    caf::replies_to<atom::wire, slice_output_actor /*prev*/,
                    slice_output_actor /*next*/>::with<atom::ok>,
    /// Returns weights and optimizer state (for sync rounds and checkpoints).
    caf::replies_to<atom::get_state>::with<layer_state>,
    /// Replaces weights and optimizer state (a sync round's result).
    caf::replies_to<atom::set_state, layer_state>::with<atom::ok>,
    /// Returns update, staleness and dropped-message counters.
    caf::replies_to<atom::stats>::with<slice_stats>>;

/// What a relay reports to its replica's shard worker.
using batch_sink_actor = caf::typed_actor<
    /// Input relay: every swarm-1 slice applied the batch's update.
    caf::reacts_to<atom::done, std::uint64_t /*batch*/>,
    /// Loss relay: summed loss and correct predictions of a batch.
    caf::reacts_to<atom::loss, std::uint64_t /*batch*/, bool /*train*/, double /*loss_sum*/,
                   std::uint64_t /*correct*/>>;

/// A gradient relay at one layer boundary of one replica (k = 0 .. L).
using gradient_relay_actor = slice_output_actor::extend<
    /// Input relay: a batch's input from the shard worker, broadcast to swarm 1.
    caf::reacts_to<atom::forward, std::uint64_t /*batch*/, bool /*train*/, shared_matrix>,
    /// Loss relay: a batch's labels from the shard worker.
    caf::reacts_to<atom::labels, std::uint64_t /*batch*/, bool /*train*/,
                   std::vector<std::uint8_t>>,
    /// Connects the relay to the slices before and after it and to its worker.
    caf::replies_to<atom::wire, std::vector<neuron_slice_actor> /*prev*/,
                    std::vector<neuron_slice_actor> /*next*/, batch_sink_actor>::with<atom::ok>,
    /// Returns the number of malformed messages dropped.
    caf::replies_to<atom::stats>::with<std::uint64_t>>;

/// What a shard worker reports to the coordinator.
using barrier_sink_actor = caf::typed_actor<
    /// The worker reached a sync point (or its last epoch) with an empty pipeline.
    caf::reacts_to<atom::barrier, barrier_report>>;

/// A shard worker: streams one replica's data shard through the pipeline.
using shard_worker_actor = batch_sink_actor::extend<
    /// Connects the worker to its input and loss relays and the coordinator.
    caf::replies_to<atom::wire, gradient_relay_actor /*input*/, gradient_relay_actor /*loss*/,
                    barrier_sink_actor>::with<atom::ok>,
    /// Feeds batches until the next sync point.
    caf::reacts_to<atom::resume>,
    /// Scores the replica on the validation subset (pipeline must be drained).
    caf::replies_to<atom::validate>::with<replica_score>,
    /// Returns the number of malformed messages dropped.
    caf::replies_to<atom::stats>::with<std::uint64_t>>;

/// A swarm leader: membership and the best-peer exchange of one layer.
using swarm_leader_actor = caf::typed_actor<
    /// Hands the leader its swarm: R x P slices, replica-major.
    caf::replies_to<atom::wire, std::vector<neuron_slice_actor>>::with<atom::ok>,
    /// Runs the exchange for `best` under `policy`; returns bytes moved.
    caf::replies_to<atom::sync, std::uint32_t /*best*/,
                    std::uint8_t /*policy*/>::with<std::uint64_t>,
    /// Returns a replica's whole layer, its slices glued together.
    caf::replies_to<atom::collect, std::uint32_t /*replica*/>::with<layer_state>,
    /// Returns the swarm's counters summed over its slices.
    caf::replies_to<atom::stats>::with<slice_stats>>;

/// The outcome of a run, as the coordinator reports it.
struct run_report {
  bool ok = false;
  std::string error;         ///< set when !ok
  std::uint64_t samples = 0; ///< training samples over all replicas
  std::uint64_t epochs = 0;
  double seconds = 0;
  double samples_per_second = 0;
  double best_validation_accuracy = 0;
  double time_to_target = -1;
  bool reached_target = false;
  std::uint64_t sync_rounds = 0;
  std::uint64_t sync_bytes = 0;
  std::uint32_t best_replica = 0;
  double test_accuracy = 0;
  double test_loss = 0;
  std::uint64_t max_staleness = 0;
  std::vector<std::uint64_t> staleness; ///< histogram over all slices
  std::uint64_t dropped = 0;
  std::string checkpoint_path;
  std::string curve_path;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, run_report& r) {
  return f(caf::meta::type_name("run_report"), r.ok, r.error, r.samples, r.epochs, r.seconds,
           r.samples_per_second, r.best_validation_accuracy, r.time_to_target, r.reached_target,
           r.sync_rounds, r.sync_bytes, r.best_replica, r.test_accuracy, r.test_loss,
           r.max_staleness, r.staleness, r.dropped, r.checkpoint_path, r.curve_path);
}

/// The coordinator: registration, wiring, sync rounds, stop, final test.
using coordinator_actor = barrier_sink_actor::extend<
    /// Starts the run once everything registered; replies when it ends.
    caf::replies_to<atom::run>::with<run_report>,
    /// Registers neuron slice (replica, layer, slice).
    caf::reacts_to<atom::reg, std::uint32_t, std::uint32_t, std::uint32_t, neuron_slice_actor>,
    /// Registers the gradient relay (replica, boundary).
    caf::reacts_to<atom::reg, std::uint32_t, std::uint32_t, gradient_relay_actor>,
    /// Registers the shard worker of a replica.
    caf::reacts_to<atom::reg, std::uint32_t, shard_worker_actor>,
    /// Registers the swarm leader of a layer.
    caf::reacts_to<atom::reg, std::uint32_t, swarm_leader_actor>,
    /// Registration deadline timer.
    caf::reacts_to<atom::deadline>,
    /// A node joins: its id and its cluster-description hash, refused if the
    /// hash differs from the coordinator's.
    caf::replies_to<atom::hello, std::string /*node*/, std::uint64_t /*hash*/>::with<atom::ok>>;

} // namespace nettorrent
