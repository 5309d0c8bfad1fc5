// Every typed actor interface of NetTorrent, one doc line per handler.
// Interfaces that would refer to each other in a cycle are split: an actor
// that only *reports to* another gets a narrow "sink" handle.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "atoms.hpp"
#include "messages.hpp"

namespace nettorrent {

// Every message of a batch's data flow (forward, block, backward, grad, ack,
// labels, done, loss) carries the incarnation of the replica it belongs to
// right after its atom; a receiver of another incarnation drops it as stale.

/// Where a neuron slice sends its output: the hidden or loss relay after its layer.
using block_sink_actor = caf::typed_actor<
    /// Forward: a slice's output columns H[:, c0:c1) of a batch (B x n).
    caf::reacts_to<atom::block, std::uint32_t /*incarnation*/, std::uint64_t /*batch*/,
                   bool /*train*/, std::uint32_t /*slice*/, shared_matrix>>;

/// Where a slice of layers 2..L sends its input gradient: the hidden relay before it.
using grad_sink_actor = caf::typed_actor<
    /// Backward: a slice's partial input gradient dZ W^T (B x fan_in).
    caf::reacts_to<atom::grad, std::uint32_t /*incarnation*/, std::uint64_t /*batch*/,
                   std::uint32_t /*slice*/, owned_matrix>>;

/// Where a slice of layer 1 reports its updates: the input relay.
using ack_sink_actor = caf::typed_actor<
    /// The slice applied its update for the batch.
    caf::reacts_to<atom::ack, std::uint32_t /*incarnation*/, std::uint64_t /*batch*/,
                   std::uint32_t /*slice*/>>;

/// A neuron slice: columns [c0, c1) of one layer in one replica.
using neuron_slice_actor = caf::typed_actor<
    /// Forward a batch's input X (B x fan_in); training batches are stashed.
    caf::reacts_to<atom::forward, std::uint32_t /*incarnation*/, std::uint64_t /*batch*/,
                   bool /*train*/, shared_matrix>,
    /// Backward dLoss/dH for this slice's columns (B x n); updates the weights.
    caf::reacts_to<atom::backward, std::uint32_t /*incarnation*/, std::uint64_t /*batch*/,
                   owned_matrix>,
    /// Layer 1: connects the slice to the input relay (acks) and the relay after it.
    caf::replies_to<atom::wire, ack_sink_actor /*prev*/, block_sink_actor /*next*/>::with<atom::ok>,
    /// Layers 2..L: connects the slice to the hidden relay before it and the relay after it.
    caf::replies_to<atom::wire, grad_sink_actor /*prev*/,
                    block_sink_actor /*next*/>::with<atom::ok>,
    /// Returns weights and optimizer state (for sync rounds and checkpoints).
    caf::replies_to<atom::get_state>::with<layer_state>,
    /// Replaces weights and optimizer state (a rollback or a resume); a
    /// state without moments (a round that did not read them) starts the
    /// slice's optimizer afresh.
    caf::replies_to<atom::set_state, layer_state>::with<atom::ok>,
    /// A sync round's read: the weights coded in the precision given (the
    /// change since the last round unless f32) and, when asked, the
    /// optimizer moments.
    caf::replies_to<atom::round_get, std::uint8_t /*sync_precision*/,
                    bool /*moments*/>::with<round_payload>,
    /// A sync round's result: the weights coded as the round sent them, and
    /// the moments when the payload carries them.
    caf::replies_to<atom::round_set, round_payload>::with<atom::ok>,
    /// Returns update, staleness, dropped- and stale-message counters.
    caf::replies_to<atom::stats>::with<slice_stats>,
    /// What the actor is waiting for, one line (stall watchdog, SIGUSR1).
    caf::replies_to<atom::status>::with<std::string>>;

/// What a relay reports to its replica's shard worker.
using batch_sink_actor = caf::typed_actor<
    /// Input relay: every swarm-1 slice applied the batch's update.
    caf::reacts_to<atom::done, std::uint32_t /*incarnation*/, std::uint64_t /*batch*/>,
    /// Loss relay: summed loss and correct predictions of a batch; NaN (any relay): diverged.
    caf::reacts_to<atom::loss, std::uint32_t /*incarnation*/, std::uint64_t /*batch*/,
                   bool /*train*/, double /*loss_sum*/, std::uint64_t /*correct*/>>;

/// The three roles of the relays at the L + 1 layer boundaries of a replica.
enum class relay_role : std::uint8_t { input, hidden, loss };

/// The role of the relay at boundary k of a model of L layers: k = 0 input,
/// k = L loss, hidden in between.
constexpr relay_role relay_role_of(std::uint32_t k, std::size_t layers) noexcept {
  return k == 0 ? relay_role::input : k == layers ? relay_role::loss : relay_role::hidden;
}

/// The input relay of a replica (boundary 0).
using input_relay_actor = ack_sink_actor::extend<
    /// A batch's input X (B x in) from the shard worker, broadcast to swarm 1.
    caf::reacts_to<atom::forward, std::uint32_t /*incarnation*/, std::uint64_t /*batch*/,
                   bool /*train*/, shared_matrix>,
    /// Connects the relay to swarm 1's slices and to its shard worker.
    caf::replies_to<atom::wire, std::vector<neuron_slice_actor> /*next*/,
                    batch_sink_actor>::with<atom::ok>,
    /// Returns the dropped- and stale-message counters.
    caf::replies_to<atom::stats>::with<drop_stats>,
    /// What the actor is waiting for, one line (stall watchdog, SIGUSR1).
    caf::replies_to<atom::status>::with<std::string>>;

/// A hidden relay of a replica (boundary 0 < k < L): blocks from swarm k,
/// input gradients from swarm k+1.
using hidden_relay_actor = block_sink_actor::extend_with<grad_sink_actor>::extend<
    /// Connects the relay to swarms k and k+1 and to the worker (divergence reports).
    caf::replies_to<atom::wire, std::vector<neuron_slice_actor> /*prev*/,
                    std::vector<neuron_slice_actor> /*next*/, batch_sink_actor>::with<atom::ok>,
    /// Returns the dropped- and stale-message counters.
    caf::replies_to<atom::stats>::with<drop_stats>,
    /// What the actor is waiting for, one line (stall watchdog, SIGUSR1).
    caf::replies_to<atom::status>::with<std::string>>;

/// The loss relay of a replica (boundary L): logits from swarm L, labels from the worker.
using loss_relay_actor = block_sink_actor::extend<
    /// A batch's labels from the shard worker.
    caf::reacts_to<atom::labels, std::uint32_t /*incarnation*/, std::uint64_t /*batch*/,
                   bool /*train*/, label_batch>,
    /// Connects the relay to swarm L's slices and to its shard worker.
    caf::replies_to<atom::wire, std::vector<neuron_slice_actor> /*prev*/,
                    batch_sink_actor>::with<atom::ok>,
    /// Returns the dropped- and stale-message counters.
    caf::replies_to<atom::stats>::with<drop_stats>,
    /// What the actor is waiting for, one line (stall watchdog, SIGUSR1).
    caf::replies_to<atom::status>::with<std::string>>;

/// What a shard worker reports to the coordinator.
using barrier_sink_actor = caf::typed_actor<
    /// The worker reached a sync point (or its last epoch) with an empty pipeline.
    caf::reacts_to<atom::barrier, barrier_report>>;

/// A shard worker: streams one replica's data shard through the pipeline.
using shard_worker_actor = batch_sink_actor::extend<
    /// Connects the worker to its input and loss relays and the coordinator.
    caf::replies_to<atom::wire, input_relay_actor, loss_relay_actor,
                    barrier_sink_actor>::with<atom::ok>,
    /// Feeds batches until the next sync point.
    caf::reacts_to<atom::resume>,
    /// Stops feeding; returns where the worker stands (recovery).
    caf::replies_to<atom::pause>::with<worker_position>,
    /// Moves a fresh worker to `position` (a replica rolled back to its last
    /// sync round); the pipeline must be empty.
    caf::replies_to<atom::seek, worker_position>::with<atom::ok>,
    /// Scores the replica on part `part` of `parts` equal, contiguous parts of
    /// the validation subset (1 part: all of it; pipeline must be drained).
    caf::replies_to<atom::validate, std::uint32_t /*part*/,
                    std::uint32_t /*parts*/>::with<replica_score>,
    /// Returns the dropped- and stale-message counters.
    caf::replies_to<atom::stats>::with<drop_stats>,
    /// What the actor is waiting for, one line (stall watchdog, SIGUSR1).
    caf::replies_to<atom::status>::with<std::string>>;

/// A swarm leader: membership and the sync exchange of one layer.
using swarm_leader_actor = caf::typed_actor<
    /// Hands the leader its swarm: R x P slices, replica-major.
    caf::replies_to<atom::wire, std::vector<neuron_slice_actor>>::with<atom::ok>,
    /// Computes the exchange for `best` under `policy` (best, average, outer
    /// with the layer's outer state) without changing any slice: returns the
    /// post-exchange state(s) and bytes read.
    caf::replies_to<atom::sync, std::uint32_t /*best*/, std::uint8_t /*policy*/,
                    sync_request>::with<exchange_result>,
    /// Sets replica r's slices to the columns of a whole layer; returns bytes sent.
    caf::replies_to<atom::restore, std::uint32_t /*replica*/, layer_state>::with<std::uint64_t>,
    /// Hands replica r's slices a sync round's result for the whole layer
    /// (cut by columns); returns bytes sent.
    caf::replies_to<atom::round_set, std::uint32_t /*replica*/, round_payload>::with<std::uint64_t>,
    /// Returns a replica's whole layer, its slices glued together.
    caf::replies_to<atom::collect, std::uint32_t /*replica*/>::with<layer_state>,
    /// Returns the swarm's counters summed over its slices.
    caf::replies_to<atom::stats>::with<slice_stats>,
    /// What the actor is waiting for, one line (stall watchdog, SIGUSR1).
    caf::replies_to<atom::status>::with<std::string>>;

/// Writes run checkpoints, so that no file is written in the coordinator's handlers.
using checkpoint_writer_actor = caf::typed_actor<
    /// Writes a run checkpoint of `state` into training.output_dir (keeps the newest
    /// training.checkpoint_keep).
    caf::reacts_to<atom::save, run_state_ref>,
    /// Quits once every checkpoint before this message is written.
    caf::reacts_to<atom::stop>>;

/// The coordinator: the actor around the run's state machine.
using coordinator_actor = barrier_sink_actor::extend<
    /// Starts the run once everything registered and was wired; replies when it ends.
    caf::replies_to<atom::run>::with<run_result>,
    /// Registers actor `key` of the run, spawned at `incarnation` (sent by the
    /// node actor that spawned it).
    caf::reacts_to<atom::reg, actor_key, std::uint32_t /*incarnation*/, caf::actor>,
    /// Registration deadline timer.
    caf::reacts_to<atom::deadline>,
    /// Recovery timer: the losses of step `step` have settled.
    caf::reacts_to<atom::settled, std::uint64_t /*step*/>,
    /// Stall watchdog timer.
    caf::reacts_to<atom::watchdog>,
    /// Prints what the run and every actor are waiting for, without acting (SIGUSR1).
    caf::reacts_to<atom::dump>,
    /// Stops the run at its next sync round (SIGINT, SIGTERM), which is kept
    /// as the run state; from this process only (the token of its spec).
    caf::reacts_to<atom::halt, std::uint64_t /*token*/, std::string /*signal*/>,
    /// A node's node actor joins with its id, cluster-description hash, wire
    /// format version and byte-order mark; refused if the hash, wire format or
    /// byte order differ or the id is not in the description.
    caf::replies_to<atom::hello, node_name /*node*/, std::uint64_t /*hash*/,
                    std::uint32_t /*wire version*/, byte_mark>::with<atom::ok>,
    /// Every node's state (one peer_state byte each, in the description's
    /// order) and whether training began: what a node about to join needs
    /// to open its direct links.
    caf::replies_to<atom::peers>::with<node_states, bool /*training began*/>,
    /// A node at start times a transfer of `bytes` to this node; returns their count.
    caf::replies_to<atom::probe, probe_bytes>::with<std::uint64_t>,
    /// What node `node` measured at start: its link to this node (Mbit/s;
    /// 0: the probe had no answer), one core's rate (GFLOP/s) and its cores.
    caf::reacts_to<atom::probe, node_name, double /*mbit*/, double /*gflops*/,
                   std::uint32_t /*cores*/>,
    /// Node `node` (from its own node actor) asks to leave gracefully: its
    /// actors move at the next sync round. Replies "" when accepted, else
    /// why not.
    caf::replies_to<atom::leave, node_name>::with<std::string>>;

/// The node actor of a process: spawns, on the coordinator's request, any
/// actor of the run, and reports and stops what it hosts.
using node_actor = caf::typed_actor<
    /// Joins the run of `coordinator` (hello with this node's id and hash).
    caf::replies_to<atom::join, coordinator_actor>::with<atom::ok>,
    /// Spawns actor `key` of the run at `incarnation`, registers it with the
    /// coordinator and returns its handle.
    caf::replies_to<atom::spawn, actor_key, std::uint32_t /*incarnation*/>::with<caf::actor>,
    /// The actors this node hosts, in the order they were spawned.
    caf::replies_to<atom::hosts>::with<std::vector<actor_key>>,
    /// The handle of hosted actor `key` (an error if this node does not host it).
    caf::replies_to<atom::hosts, actor_key>::with<caf::actor>,
    /// Stops every actor this node hosts.
    caf::replies_to<atom::stop>::with<atom::ok>,
    /// Prints what every actor this node hosts is waiting for (SIGUSR1).
    caf::reacts_to<atom::dump>,
    /// Prints the placement the coordinator planned on every node's start-up
    /// figures (placement "auto"); from the coordinator only.
    caf::reacts_to<atom::placed, std::string>,
    /// From this process (SIGTERM): ask the coordinator to leave gracefully.
    caf::reacts_to<atom::leave>,
    /// From the coordinator: this node's actors moved away; it quits (normal).
    caf::reacts_to<atom::released>>;

} // namespace nettorrent
