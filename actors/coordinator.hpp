// The coordinator: the run's state machine.
//   registering -> (all registered) wiring -> (run requested) training
//   training: workers feed until a sync point and report a barrier; when all
//   replicas are at the barrier the coordinator runs a sync round: score
//   every replica on the validation subset, pick the best (lowest mean loss,
//   ties to the lowest id), stop if the target accuracy is reached or every
//   worker is out of epochs, else have every swarm leader run the exchange
//   and resume the workers.
//   finishing: gather the best replica's layers from the leaders, evaluate on
//   the test split, write checkpoint and learning curve, reply, shut down.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors.hpp"
#include "metrics.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/run_support.hpp"

namespace nettorrent {

struct coordinator_spec {
  run_config cfg;
  std::shared_ptr<const data_splits> data; ///< for the final test pass
  bool verbose = true;                     ///< print progress lines
  std::uint64_t cluster_hash = 0;          ///< cluster runs: what joining nodes must match
  const run_metrics* metrics = nullptr;    ///< null = off
};

struct coordinator_state {
  static inline const char* name = "coordinator";
  using clock_type = std::chrono::steady_clock;

  coordinator_spec spec;
  std::size_t layers = 0;
  std::size_t replicas = 0;
  std::vector<std::size_t> slice_offset; ///< first slot of layer l within a replica
  std::size_t slices_per_replica = 0;

  // Registered actors (empty handles until registered).
  std::vector<neuron_slice_actor> slices;  ///< [r * slices_per_replica + offset[l] + s]
  std::vector<caf::actor> relays;          ///< [r * (L + 1) + k], typed by relay_role_of(k, L)
  std::vector<shard_worker_actor> workers; ///< [r]
  std::vector<swarm_leader_actor> leaders; ///< [l]
  std::size_t registered = 0;
  std::size_t expected = 0;

  enum class phase { registering, wiring, wired, training, finishing, done };
  phase state = phase::registering;
  bool run_requested = false;
  caf::typed_response_promise<run_report> run_promise;
  std::size_t pending = 0; ///< outstanding replies in the current step

  // Training progress.
  std::vector<std::optional<barrier_report>> barriers;
  std::size_t at_barrier = 0;
  std::vector<replica_score> scores;
  std::uint64_t samples = 0;
  double loss_sum = 0;
  std::uint64_t loss_samples = 0;
  std::uint64_t epoch = 0;
  bool all_finished = false;
  clock_type::time_point t0;
  double last_progress = -1;
  std::vector<curve_point> curve;
  std::vector<layer_state> final_layers;
  std::vector<layer_state> best_layers; ///< keep_best: best replica at the best round
  std::uint64_t best_samples = 0;
  std::uint64_t best_epoch = 0;
  run_report report;
  /// Nodes admitted by `hello` (cluster runs): only they may register actors.
  std::set<caf::node_id> admitted;
  /// Names of registered actors, for the error when one goes down.
  std::unordered_map<caf::actor_addr, std::string> names;
};

coordinator_actor::behavior_type
coordinator(coordinator_actor::stateful_pointer<coordinator_state> self, coordinator_spec spec);

/// The name of an actor slot, for errors: "neuron slice (replica 0, layer 2, slice 1)".
std::string describe_slice(std::size_t r, std::size_t l, std::size_t s);

/// The name of a relay slot of a model of L layers, for errors: "input relay
/// (replica 0)", "hidden relay (replica 0, boundary 1)", "loss relay (replica 0)".
std::string describe_relay(std::size_t r, std::size_t k, std::size_t layers);

} // namespace nettorrent
