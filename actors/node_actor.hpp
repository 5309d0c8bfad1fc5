// The node actor: one per process. It knows its node id and cluster hash,
// joins the run by saying hello to the coordinator, spawns any actor of the
// run on request (the coordinator asks for what the placement puts on this
// node) and registers it with the coordinator, reports what it hosts, and
// stops its actors on request or when the coordinator it joined goes down. The model is VAST's node
// with its component factory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "actors.hpp"
#include "metrics.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"

namespace nettorrent {

struct node_spec {
  std::string id;                           ///< this node's id ("local" for embedded runs)
  std::uint64_t cluster_hash = 0;           ///< what this node says in hello
  run_config cfg;                           ///< the run (every node has the same)
  std::shared_ptr<const data_splits> data;  ///< null on nodes that host no shard worker
  const metrics* process_metrics = nullptr; ///< this process's metrics; null = off
};

struct node_state {
  static inline const char* name = "node";
  node_spec spec;
  coordinator_actor coordinator;
  bool admitted = false; ///< the coordinator answered the hello
  std::vector<std::pair<actor_key, caf::actor>> hosted;
  /// Who asked this node to join (the process): told `released` when the
  /// coordinator lets this node go after a graceful leave.
  caf::strong_actor_ptr joiner;
};

node_actor::behavior_type node(node_actor::stateful_pointer<node_state> self, node_spec spec);

} // namespace nettorrent
