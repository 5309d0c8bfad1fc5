#include "spawn.hpp"

#include <algorithm>
#include <thread>

#include <caf/all.hpp>

#include "coordinator.hpp"
#include "gradient_relay.hpp"
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

coordinator_actor spawn_embedded(caf::actor_system& sys, const run_config& cfg,
                                 std::shared_ptr<const data_splits> data, bool verbose) {
  const std::size_t L = cfg.model.layers.size() - 1;
  const std::size_t R = cfg.topology.replicas;
  const std::size_t max_batch = max_batch_rows(cfg);
  auto coord = sys.spawn(coordinator, coordinator_spec{cfg, data, verbose});

  std::vector<std::uint32_t> validation = data->validation;
  if (cfg.topology.validation_subset != 0 && cfg.topology.validation_subset < validation.size())
    validation.resize(cfg.topology.validation_subset);

  for (std::uint32_t l = 0; l < L; ++l)
    caf::anon_send(coord, atom::reg::value, l,
                   sys.spawn(swarm_leader, leader_spec{l, R, cfg.topology.slices_of(l)}));
  for (std::uint32_t r = 0; r < R; ++r) {
    worker_spec w;
    w.replica = r;
    w.data = data;
    w.shard = shard_indices(data->train, R, r);
    w.validation = validation;
    w.batch_size = cfg.training.batch_size;
    w.eval_batch_size = eval_batch_size(cfg);
    w.max_in_flight = cfg.topology.max_in_flight;
    w.sync_every = cfg.topology.sync_every;
    w.max_epochs = cfg.training.max_epochs;
    w.seed = cfg.training.seed;
    caf::anon_send(coord, atom::reg::value, r, sys.spawn(shard_worker, std::move(w)));
    for (std::uint32_t k = 0; k <= L; ++k) {
      relay_spec rs;
      rs.replica = r;
      rs.boundary = k;
      rs.layers = static_cast<std::uint32_t>(L);
      if (k > 0) {
        rs.prev_width = cfg.model.layers[k];
        rs.prev_cols = split_columns(cfg.model.layers[k], cfg.topology.slices_of(k - 1));
      }
      rs.next_slices = k < L ? cfg.topology.slices_of(k) : 0;
      rs.max_batch = max_batch;
      caf::anon_send(coord, atom::reg::value, r, k, sys.spawn(gradient_relay, std::move(rs)));
    }
    for (std::uint32_t l = 0; l < L; ++l) {
      const std::size_t parts = cfg.topology.slices_of(l);
      for (std::uint32_t i = 0; i < parts; ++i) {
        slice_spec ss;
        ss.replica = r;
        ss.index = i;
        ss.geometry = slice_of(cfg.model, l, parts, i);
        ss.optimizer = cfg.optimizer;
        ss.seed = cfg.training.seed;
        ss.weight_stashing = cfg.topology.weight_stashing;
        ss.max_batch = max_batch;
        caf::anon_send(coord, atom::reg::value, r, l, i, sys.spawn(neuron_slice, ss));
      }
    }
  }
  return coord;
}

} // namespace nettorrent
