// The coordinator: the actor around the run's state machine
// (libnettorrent/nettorrent/run_machine.hpp). It only translates: messages
// (hello, reg, barrier, replies, down) into the machine's events, and the
// machine's commands into messages. It admits nodes (cluster hash) and asks
// each node actor to spawn what the placement puts on that node. Evaluation
// and file writing happen after the run, in the process session.
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
#include "nettorrent/cost_model.hpp"
#include "nettorrent/run_machine.hpp"

namespace nettorrent {

struct coordinator_spec {
  run_config cfg;
  bool verbose = true;                  ///< print progress lines
  std::uint64_t cluster_hash = 0;       ///< what joining nodes must match (0: embedded)
  const run_metrics* metrics = nullptr; ///< null = off
  std::size_t train_samples = 0;        ///< training split size, for the ETA
  /// Node ids in canonical order and the node of every layout actor; empty:
  /// actors are spawned elsewhere and register on their own (tests).
  std::vector<std::string> nodes;
  std::vector<std::size_t> placement;
  bool rebalance_on_rejoin = true; ///< placement.rebalance_on_rejoin
  /// --resume: the run checkpoint's state to continue from (null: a new run).
  std::shared_ptr<const run_state> resume;
  /// What a halt request must carry: only this process knows it.
  std::uint64_t halt_token = 0;
  /// Cluster runs: the description, for the cost model on the figures the
  /// nodes measure at start, and this node's own compute probe.
  std::shared_ptr<const cluster_config> cluster;
  double own_gflops = 0;
};

struct coordinator_state {
  static inline const char* name = "coordinator";

  coordinator_spec spec;
  std::unique_ptr<run_backend> backend;
  std::unique_ptr<run_machine> machine;
  std::vector<caf::actor> handles; ///< registered actors, by layout index
  std::unordered_map<caf::actor_addr, std::size_t> index_of;
  std::vector<node_actor> nodes; ///< admitted node actors, by node index
  std::unordered_map<caf::actor_addr, std::size_t> node_of;
  std::set<caf::node_id> admitted; ///< only they (and this process) may register actors
  caf::typed_response_promise<run_result> promise;
  checkpoint_writer_actor writer; ///< spawned at the first periodic checkpoint
  /// What each node measured at start (by node index), printed with the
  /// cost model's predictions once every other node has reported.
  std::vector<std::optional<node_figures>> figures;
  bool figures_printed = false;

  /// The stall watchdog: what it saw at its last tick, and when the run last moved.
  struct watchdog_state {
    std::uint64_t events = 0;          ///< run_machine::events() at the last tick
    std::vector<std::string> workers;  ///< every worker's status at the last tick
    double moved = 0;                  ///< steady seconds when progress was last seen
    bool dumping = false;              ///< a stall dump is being gathered
  } watchdog;
};

coordinator_actor::behavior_type
coordinator(coordinator_actor::stateful_pointer<coordinator_state> self, coordinator_spec spec);

} // namespace nettorrent
