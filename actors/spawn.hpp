// Spawning and wiring, kept apart from the behaviours: builds every actor of
// a run from the configuration and registers it with the coordinator.
#pragma once

#include <memory>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>

#include "actors.hpp"
#include "metrics.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/placement.hpp"

namespace nettorrent {

/// Puts FTZ/DAZ on and Eigen to one thread in every CAF scheduler thread.
class math_thread_hook : public caf::thread_hook {
public:
  void init(caf::actor_system&) override {}
  void thread_started() override;
  void thread_terminates() override {}
};

/// Applies the [system] section to a CAF config (scheduler threads, thread
/// hook). Call before constructing the actor_system.
void configure_actor_system(caf::actor_system_config& sys_cfg, const run_config& cfg);

/// Largest batch any actor accepts: the training batch or the validation
/// batch, whichever is larger.
std::size_t max_batch_rows(const run_config& cfg);

/// Batch size of validation passes.
std::size_t eval_batch_size(const run_config& cfg);

/// Registers every message type that crosses a node boundary (required by
/// CAF on every node of a cluster; harmless in one process).
void register_message_types(caf::actor_system_config& sys_cfg);

/// Spawns actor `key` (not the coordinator) of the run described by `cfg`
/// at `incarnation`: the node actor's factory. `data` must be set for shard
/// workers; others ignore it. Throws nettorrent::error for a key that is
/// not an actor of this run or a worker without data.
caf::actor spawn_run_actor(caf::actor_system& sys, const run_config& cfg,
                           const std::shared_ptr<const data_splits>& data, const actor_key& key,
                           std::uint32_t incarnation = 0, const metrics* m = nullptr);

/// Starts an embedded run as a one-node cluster: a coordinator and a node
/// actor "local" that joins it and spawns every actor the coordinator asks
/// for (all of them). Returns the coordinator; send it `atom::run` to train.
/// The run writes nothing: the caller writes the outputs (nettorrent/session.hpp).
coordinator_actor spawn_embedded(caf::actor_system& sys, const run_config& cfg,
                                 std::shared_ptr<const data_splits> data, bool verbose,
                                 const metrics* m = nullptr);

} // namespace nettorrent
