#include "spawn.hpp"

#include <algorithm>
#include <thread>

#include <caf/all.hpp>

#include "coordinator.hpp"
#include "hidden_relay.hpp"
#include "input_relay.hpp"
#include "loss_relay.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/model.hpp"
#include "neuron_slice.hpp"
#include "node_actor.hpp"
#include "shard_worker.hpp"
#include "swarm_leader.hpp"

namespace nettorrent {

void math_thread_hook::thread_started() {
  prepare_math_thread();
}

void configure_actor_system(caf::actor_system_config& sys_cfg, const run_config& cfg) {
  std::size_t threads = cfg.system.scheduler_threads;
  if (threads == 0)
    threads = std::max(1u, std::thread::hardware_concurrency());
  sys_cfg.set("scheduler.max-threads", threads);
  sys_cfg.add_thread_hook<math_thread_hook>();
}

std::size_t eval_batch_size(const run_config& cfg) {
  return std::max<std::size_t>(cfg.training.batch_size, 1000);
}

std::size_t max_batch_rows(const run_config& cfg) {
  return std::max(cfg.training.batch_size, eval_batch_size(cfg));
}


caf::actor spawn_run_actor(caf::actor_system& sys, const run_config& cfg,
                           const std::shared_ptr<const data_splits>& data, const actor_key& key,
                           std::uint32_t incarnation, const metrics* m) {
  const run_layout layout{cfg};
  if (!layout.find(key) || key.kind == actor_kind::coordinator)
    throw error(to_string(key) + " is not an actor a node spawns in this run");
  const swarm_metrics* sm = m != nullptr ? &m->of(key) : nullptr;
  const std::size_t L = layout.layers();
  const std::size_t max_batch = max_batch_rows(cfg);
  switch (key.kind) {
  case actor_kind::swarm_leader:
    return caf::actor_cast<caf::actor>(sys.spawn(swarm_leader, leader_spec{key.layer, layout, sm}));
  case actor_kind::shard_worker: {
    if (!data)
      throw error("this node loaded no data, so it cannot host shard worker "
                  + std::to_string(key.replica));
    worker_spec w;
    w.replica = key.replica;
    w.incarnation = incarnation;
    w.data = data;
    w.replicas = cfg.topology.replicas;
    w.validation = validation_subset(data->validation, cfg.topology.validation_subset);
    w.batch_size = cfg.training.batch_size;
    w.eval_batch_size = eval_batch_size(cfg);
    w.max_in_flight = cfg.topology.max_in_flight;
    w.sync_every = cfg.topology.sync_every;
    w.max_epochs = cfg.training.max_epochs;
    w.seed = cfg.training.seed;
    w.metrics = sm;
    return caf::actor_cast<caf::actor>(sys.spawn(shard_worker, std::move(w)));
  }
  case actor_kind::relay: {
    const std::uint32_t k = key.boundary;
    relay_spec rs;
    rs.replica = key.replica;
    rs.incarnation = incarnation;
    rs.prev_width = cfg.model.layers[k];
    if (k > 0)
      rs.prev_cols = split_columns(cfg.model.layers[k], cfg.topology.slices_of(k - 1));
    rs.max_batch = max_batch;
    rs.metrics = sm;
    switch (relay_role_of(k, L)) {
    case relay_role::input:
      return caf::actor_cast<caf::actor>(sys.spawn(input_relay, std::move(rs)));
    case relay_role::hidden:
      return caf::actor_cast<caf::actor>(sys.spawn(hidden_relay, std::move(rs)));
    case relay_role::loss:
      return caf::actor_cast<caf::actor>(sys.spawn(loss_relay, std::move(rs)));
    }
    break;
  }
  case actor_kind::neuron_slice: {
    slice_spec ss;
    ss.replica = key.replica;
    ss.index = key.slice;
    ss.incarnation = incarnation;
    ss.geometry = slice_of(cfg.model, key.layer, layout.slices_of(key.layer), key.slice);
    ss.optimizer = cfg.optimizer;
    ss.seed = cfg.training.seed;
    ss.weight_stashing = cfg.topology.weight_stashing;
    ss.sync_coding = cfg.topology.sync_coding;
    ss.sync_feedback = cfg.topology.sync_feedback;
    ss.max_batch = max_batch;
    ss.metrics = sm;
    return caf::actor_cast<caf::actor>(sys.spawn(neuron_slice, ss));
  }
  case actor_kind::coordinator:
    break;
  }
  throw error("internal: cannot spawn " + to_string(key));
}

coordinator_actor spawn_embedded(caf::actor_system& sys, const run_config& cfg,
                                 std::shared_ptr<const data_splits> data, bool verbose,
                                 const metrics* m) {
  const run_layout layout{cfg};
  coordinator_spec spec;
  spec.cfg = cfg;
  spec.verbose = verbose;
  spec.metrics = m ? &m->run() : nullptr;
  spec.train_samples = data ? data->train.size() : 0;
  spec.nodes = {"local"};
  spec.placement.assign(layout.size(), 0);
  auto coord = sys.spawn(coordinator, std::move(spec));
  auto local = sys.spawn(node, node_spec{"local", 0, cfg, std::move(data), m});
  // The node actor leaves with the coordinator; nobody waits for the join.
  caf::anon_send(local, atom::join::value, coord);
  return coord;
}

void register_message_types(caf::actor_system_config& c) {
  c.add_message_type<shared_matrix>("nettorrent::shared_matrix");
  c.add_message_type<owned_matrix>("nettorrent::owned_matrix");
  c.add_message_type<optimizer_state>("nettorrent::optimizer_state");
  c.add_message_type<layer_state>("nettorrent::layer_state");
  c.add_message_type<replica_score>("nettorrent::replica_score");
  c.add_message_type<slice_stats>("nettorrent::slice_stats");
  c.add_message_type<drop_stats>("nettorrent::drop_stats");
  c.add_message_type<barrier_report>("nettorrent::barrier_report");
  c.add_message_type<worker_position>("nettorrent::worker_position");
  c.add_message_type<exchange_result>("nettorrent::exchange_result");
  c.add_message_type<sync_request>("nettorrent::sync_request");
  c.add_message_type<round_payload>("nettorrent::round_payload");
  c.add_message_type<run_state_ref>("nettorrent::run_state_ref");
  c.add_message_type<run_result>("nettorrent::run_result");
  c.add_message_type<actor_key>("nettorrent::actor_key");
  c.add_message_type<std::vector<actor_key>>("std::vector<nettorrent::actor_key>");
  c.add_message_type<curve_point>("nettorrent::curve_point");
  c.add_message_type<std::vector<curve_point>>("std::vector<nettorrent::curve_point>");
  c.add_message_type<std::vector<layer_state>>("std::vector<nettorrent::layer_state>");
  c.add_message_type<label_batch>("nettorrent::label_batch");
  c.add_message_type<byte_mark>("nettorrent::byte_mark");
  c.add_message_type<node_name>("nettorrent::node_name");
  c.add_message_type<node_states>("nettorrent::node_states");
  c.add_message_type<probe_bytes>("nettorrent::probe_bytes");
  c.add_message_type<block_sink_actor>("nettorrent::block_sink_actor");
  c.add_message_type<grad_sink_actor>("nettorrent::grad_sink_actor");
  c.add_message_type<ack_sink_actor>("nettorrent::ack_sink_actor");
  c.add_message_type<neuron_slice_actor>("nettorrent::neuron_slice_actor");
  c.add_message_type<std::vector<neuron_slice_actor>>(
      "std::vector<nettorrent::neuron_slice_actor>");
  c.add_message_type<batch_sink_actor>("nettorrent::batch_sink_actor");
  c.add_message_type<input_relay_actor>("nettorrent::input_relay_actor");
  c.add_message_type<hidden_relay_actor>("nettorrent::hidden_relay_actor");
  c.add_message_type<loss_relay_actor>("nettorrent::loss_relay_actor");
  c.add_message_type<barrier_sink_actor>("nettorrent::barrier_sink_actor");
  c.add_message_type<shard_worker_actor>("nettorrent::shard_worker_actor");
  c.add_message_type<swarm_leader_actor>("nettorrent::swarm_leader_actor");
  c.add_message_type<coordinator_actor>("nettorrent::coordinator_actor");
  c.add_message_type<node_actor>("nettorrent::node_actor");
}

} // namespace nettorrent
