// The placement plan: which node hosts every actor of a run. A pure function
// of the cluster description, so every node computes the same plan, spawns
// the actors placed on itself and knows where to find the others.
//
// The actors and their canonical order come from the run layout
// (run_layout.hpp); round_robin deals them out in that order.
//
// Canonical node order: sorted by id (byte-wise), whatever order [nodes]
// lists them in; "node 0" below means the first id in that order.
//   round_robin  actor j of the canonical order on node j mod N.
//   by_swarm     swarm l — its leader and every replica's slices of layer l —
//                on node l mod N; relay k with the swarm it feeds (k < L: swarm
//                k; the loss relay k = L: swarm L-1); coordinator and shard
//                workers on node 0.
//   by_replica   replica r's block (worker, relays, slices) on node r mod N;
//                coordinator and leaders on node 0.
//   auto         the fastest of the three above by the cost model
//                (cost_model.hpp). Planned from the description alone, it
//                takes nodes.bandwidth_mbit (default 1000), nodes.cores
//                (default 1) and a nominal core rate; planned by the
//                coordinator on the figures every node measured at start,
//                the measured figures fill in what the description leaves
//                out, and the measured core rate replaces the nominal one.
//   explicit     the [placement] lists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nettorrent/cluster.hpp"
#include "nettorrent/run_layout.hpp"

namespace nettorrent {

/// What is known of one node: given in the description or measured at start.
struct node_figures {
  double mbit = 1000; ///< link rate in Mbit/s, each direction (0: not measured)
  double gflops = 1;  ///< one core's dense-matrix rate, GFLOP/s
  double cores = 1;
};

/// Where every actor lives. Node numbers index `nodes` (canonical order).
struct placement_plan {
  placement_strategy strategy = placement_strategy::by_swarm;
  /// auto: the strategy it chose, and its prediction against the others
  /// ("by_replica: 20 629 samples/s predicted; by_swarm 5 557, ...").
  placement_strategy chosen = placement_strategy::by_swarm;
  std::string prediction;
  /// auto: the figures it planned on ("nodes.bandwidth_mbit, nodes.cores").
  std::string basis;
  std::vector<std::string> nodes;  ///< node ids, sorted
  std::size_t replicas = 0;        ///< R
  std::vector<std::size_t> slices; ///< P_l per layer; size() = L
  std::size_t coordinator_node = 0;
  std::vector<std::size_t> leader_nodes;                          ///< [layer]
  std::vector<std::size_t> worker_nodes;                          ///< [replica]
  std::vector<std::vector<std::size_t>> relay_nodes;              ///< [replica][boundary]
  std::vector<std::vector<std::vector<std::size_t>>> slice_nodes; ///< [replica][layer][slice]

  run_layout layout; ///< the run's actors, in canonical order

  std::size_t layers() const noexcept { return slices.size(); }

  /// Every actor of the run, in canonical order.
  const std::vector<actor_key>& actors() const noexcept { return layout.actors(); }

  /// Index into `nodes` of the node hosting `a`; throws nettorrent::error
  /// if `a` is not an actor of this run.
  std::size_t node_index(const actor_key& a) const;
  /// Id of the node hosting `a`.
  const std::string& node_of(const actor_key& a) const { return nodes[node_index(a)]; }

  /// One `actor=node` line per actor, in canonical order: part of the
  /// cluster hash.
  std::string canonical() const;

  friend bool operator==(const placement_plan& a, const placement_plan& b);
  friend bool operator!=(const placement_plan& a, const placement_plan& b) { return !(a == b); }
};

/// The plan of a validated cluster description. Pure: the same description
/// (whatever the order of its lines and list entries) gives the same plan.
/// With `measured` (one entry per node, in canonical order), "auto" plans on
/// those figures wherever the description gives none (a link measured as 0
/// Mbit/s counts as not measured: 1000); other strategies ignore them.
/// Throws nettorrent::error if `measured` does not cover every node.
placement_plan plan_placement(const cluster_config& cfg,
                              const std::vector<node_figures>* measured = nullptr);

/// Placement "auto" on several nodes: the coordinator plans it once every
/// node has sent its start-up figures (nodes print the description's plan
/// only as what it would be).
bool planned_at_start(const cluster_config& cfg);

/// The fixed layouts "auto" weighs for `cfg`, in the order it breaks ties:
/// by_swarm, by_replica, by_group (only when 1 < R < N, where it differs
/// from both) and round_robin.
std::vector<placement_strategy> candidate_strategies(const cluster_config& cfg);

/// The figures "auto" plans node `id` on: the description's
/// nodes.bandwidth_mbit and nodes.cores where given; otherwise the measured
/// link (if above 0) and cores, else 1000 Mbit/s and 1 core; the measured
/// core rate, else the nominal auto_core_gflops.
node_figures planning_figures(const cluster_config& cfg, const std::string& id,
                              const node_figures* measured);

/// The actors `node_id` hosts, in canonical order. Throws nettorrent::error
/// naming the node if it is not in the plan.
std::vector<actor_key> actors_on(const placement_plan& plan, std::string_view node_id);

/// A human-readable summary: one line per node with how many actors of each
/// kind it hosts and which swarms (layers) and replicas they belong to.
std::string describe(const placement_plan& plan);

} // namespace nettorrent
