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

/// Spawns the actor `key` (not the coordinator) of the run described by
/// `cfg` and registers it with `coord`, sending the registration from `via`
/// when given (cluster nodes: the coordinator admits registrations only from
/// nodes that said hello) or anonymously (embedded runs). `data` must be set for shard
/// workers; others ignore it.
caf::actor spawn_and_register(caf::actor_system& sys, const run_config& cfg,
                              const std::shared_ptr<const data_splits>& data, const actor_key& key,
                              const coordinator_actor& coord, const metrics* m = nullptr,
                              caf::scoped_actor* via = nullptr);

/// Every actor of a run but the coordinator, in canonical order.
std::vector<actor_key> pipeline_actors(const run_config& cfg);

/// Spawns every actor of an embedded run (one process) and registers them
/// with a fresh coordinator, which it returns. Send it `atom::run` to train.
coordinator_actor spawn_embedded(caf::actor_system& sys, const run_config& cfg,
                                 std::shared_ptr<const data_splits> data, bool verbose,
                                 const metrics* m = nullptr);

} // namespace nettorrent
