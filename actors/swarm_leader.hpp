// The swarm leader of one layer: knows (and monitors) the R x P slices of
// its swarm, runs the exchange of a sync round for its layer (the policy's
// function, sync_policy.hpp), and gathers a replica's slices into a whole
// layer for checkpoints.
#pragma once

#include <cstdint>
#include <vector>

#include "actors.hpp"
#include "metrics.hpp"
#include "nettorrent/run_layout.hpp"

namespace nettorrent {

struct leader_spec {
  std::uint32_t layer = 0;
  run_layout layout;                      ///< the run: replicas, slices of this layer
  const swarm_metrics* metrics = nullptr; ///< null = off

  std::size_t replicas() const noexcept { return layout.replicas(); }
  std::size_t slices() const { return layout.slices_of(layer); }
};

struct swarm_leader_state {
  static inline const char* name = "swarm_leader";
  leader_spec spec;
  std::vector<neuron_slice_actor> slices; ///< in run_layout::swarm(layer) order
  std::size_t alive = 0;                  ///< slices not known to be down
  const neuron_slice_actor& at(std::size_t r, std::size_t i) const {
    return slices[spec.layout.swarm_position(r, spec.layer, i)];
  }
};

swarm_leader_actor::behavior_type
swarm_leader(swarm_leader_actor::stateful_pointer<swarm_leader_state> self, leader_spec spec);

} // namespace nettorrent
