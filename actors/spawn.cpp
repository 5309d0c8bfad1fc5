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

namespace {

std::vector<std::uint32_t> validation_subset(const run_config& cfg, const data_splits& data) {
  std::vector<std::uint32_t> v = data.validation;
  if (cfg.topology.validation_subset != 0 && cfg.topology.validation_subset < v.size())
    v.resize(cfg.topology.validation_subset);
  return v;
}

} // namespace

std::vector<actor_key> pipeline_actors(const run_config& cfg) {
  const auto L = static_cast<std::uint32_t>(cfg.model.layers.size() - 1);
  const auto R = static_cast<std::uint32_t>(cfg.topology.replicas);
  std::vector<actor_key> out;
  for (std::uint32_t l = 0; l < L; ++l)
    out.push_back(actor_key::leader(l));
  for (std::uint32_t r = 0; r < R; ++r) {
    out.push_back(actor_key::worker(r));
    for (std::uint32_t k = 0; k <= L; ++k)
      out.push_back(actor_key::relay(r, k));
    for (std::uint32_t l = 0; l < L; ++l)
      for (std::uint32_t i = 0; i < cfg.topology.slices_of(l); ++i)
        out.push_back(actor_key::slice_of(r, l, i));
  }
  return out;
}

caf::actor spawn_and_register(caf::actor_system& sys, const run_config& cfg,
                              const std::shared_ptr<const data_splits>& data, const actor_key& key,
                              const coordinator_actor& coord, const metrics* m,
                              caf::scoped_actor* via) {
  auto reg = [&](auto&&... xs) {
    if (via != nullptr)
      (*via)->send(coord, atom::reg::value, std::forward<decltype(xs)>(xs)...);
    else
      caf::anon_send(coord, atom::reg::value, std::forward<decltype(xs)>(xs)...);
  };
  auto swarm = [m](std::size_t s, std::size_t r) { return m ? &m->swarm(s, r) : nullptr; };
  const std::size_t L = cfg.model.layers.size() - 1;
  const std::size_t max_batch = max_batch_rows(cfg);
  switch (key.kind) {
  case actor_kind::swarm_leader: {
    auto a = sys.spawn(swarm_leader,
                       leader_spec{key.layer, cfg.topology.replicas,
                                   cfg.topology.slices_of(key.layer), swarm(key.layer + 1, 0)});
    reg(key.layer, a);
    return caf::actor_cast<caf::actor>(a);
  }
  case actor_kind::shard_worker: {
    if (!data)
      throw error("internal: shard worker " + std::to_string(key.replica)
                  + " spawned without data");
    worker_spec w;
    w.replica = key.replica;
    w.data = data;
    w.shard = shard_indices(data->train, cfg.topology.replicas, key.replica);
    w.validation = validation_subset(cfg, *data);
    w.batch_size = cfg.training.batch_size;
    w.eval_batch_size = eval_batch_size(cfg);
    w.max_in_flight = cfg.topology.max_in_flight;
    w.sync_every = cfg.topology.sync_every;
    w.max_epochs = cfg.training.max_epochs;
    w.seed = cfg.training.seed;
    w.metrics = swarm(0, key.replica);
    auto a = sys.spawn(shard_worker, std::move(w));
    reg(key.replica, a);
    return caf::actor_cast<caf::actor>(a);
  }
  case actor_kind::gradient_relay: {
    const std::uint32_t k = key.boundary;
    relay_spec rs;
    rs.replica = key.replica;
    rs.prev_width = cfg.model.layers[k];
    if (k > 0)
      rs.prev_cols = split_columns(cfg.model.layers[k], cfg.topology.slices_of(k - 1));
    rs.max_batch = max_batch;
    rs.metrics = swarm(k, key.replica);
    auto spawn_relay = [&](auto behaviour) {
      return caf::actor_cast<caf::actor>(sys.spawn(behaviour, std::move(rs)));
    };
    caf::actor a;
    switch (relay_role_of(k, L)) {
    case relay_role::input:
      a = spawn_relay(input_relay);
      break;
    case relay_role::hidden:
      a = spawn_relay(hidden_relay);
      break;
    case relay_role::loss:
      a = spawn_relay(loss_relay);
      break;
    }
    reg(key.replica, k, a);
    return a;
  }
  case actor_kind::neuron_slice: {
    const std::size_t parts = cfg.topology.slices_of(key.layer);
    slice_spec ss;
    ss.replica = key.replica;
    ss.index = key.slice;
    ss.geometry = slice_of(cfg.model, key.layer, parts, key.slice);
    ss.optimizer = cfg.optimizer;
    ss.seed = cfg.training.seed;
    ss.weight_stashing = cfg.topology.weight_stashing;
    ss.max_batch = max_batch;
    ss.metrics = swarm(key.layer + 1, key.replica);
    auto a = sys.spawn(neuron_slice, ss);
    reg(key.replica, key.layer, key.slice, a);
    return caf::actor_cast<caf::actor>(a);
  }
  case actor_kind::coordinator:
    break;
  }
  throw error("internal: spawn_and_register cannot spawn " + to_string(key));
}

coordinator_actor spawn_embedded(caf::actor_system& sys, const run_config& cfg,
                                 std::shared_ptr<const data_splits> data, bool verbose,
                                 const metrics* m) {
  coordinator_spec spec;
  spec.cfg = cfg;
  spec.data = data;
  spec.verbose = verbose;
  spec.metrics = m ? &m->run() : nullptr;
  auto coord = sys.spawn(coordinator, spec);
  for (const auto& key : pipeline_actors(cfg))
    spawn_and_register(sys, cfg, data, key, coord, m);
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
  c.add_message_type<run_report>("nettorrent::run_report");
  c.add_message_type<std::vector<std::uint8_t>>("std::vector<uint8_t>");
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
}

} // namespace nettorrent
