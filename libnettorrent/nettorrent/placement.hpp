// The placement plan: which node hosts every actor of a run. A pure function
// of the cluster description, so every node computes the same plan, spawns
// the actors placed on itself and knows where to find the others.
//
// Actors of a run with L layers (swarms), R replicas and P_l slices in layer l:
//   coordinator                 1
//   swarm leader                one per layer l = 0..L-1
//   shard worker                one per replica r = 0..R-1
//   gradient relay              one per replica and boundary k = 0..L
//                               (k = 0 feeds swarm 0; k = L is the loss relay)
//   neuron slice                one per replica, layer and slice i = 0..P_l-1
// Canonical actor order (actors(), round_robin's dealing order): the
// coordinator, leaders by layer, workers by replica, relays by (replica,
// boundary), slices by (replica, layer, slice).
//
// Canonical node order: sorted by id (byte-wise), whatever order [nodes]
// lists them in; "node 0" below means the first id in that order.
//   round_robin  actor j of the canonical order on node j mod N.
//   by_swarm     swarm l — its leader and every replica's slices of layer l —
//                on node l mod N; relay k with the swarm it feeds (k < L: swarm
//                k; the loss relay k = L: swarm L-1); coordinator and shard
//                workers on node 0.
//   explicit     the [placement] lists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nettorrent/cluster.hpp"

namespace nettorrent {

enum class actor_kind : std::uint8_t {
  coordinator,
  swarm_leader,
  shard_worker,
  gradient_relay,
  neuron_slice,
};

std::string_view to_string(actor_kind k) noexcept;

/// Names one actor of a run. Fields a kind does not use stay 0.
struct actor_key {
  actor_kind kind = actor_kind::coordinator;
  std::uint32_t replica = 0;  ///< shard_worker, gradient_relay, neuron_slice
  std::uint32_t layer = 0;    ///< swarm_leader, neuron_slice (0-based)
  std::uint32_t boundary = 0; ///< gradient_relay: k = 0..L
  std::uint32_t slice = 0;    ///< neuron_slice: index within (replica, layer)

  static actor_key coordinator() { return {}; }
  static actor_key leader(std::uint32_t l) { return {actor_kind::swarm_leader, 0, l, 0, 0}; }
  static actor_key worker(std::uint32_t r) { return {actor_kind::shard_worker, r, 0, 0, 0}; }
  static actor_key relay(std::uint32_t r, std::uint32_t k) {
    return {actor_kind::gradient_relay, r, 0, k, 0};
  }
  static actor_key slice_of(std::uint32_t r, std::uint32_t l, std::uint32_t i) {
    return {actor_kind::neuron_slice, r, l, 0, i};
  }

  friend bool operator==(const actor_key& a, const actor_key& b) {
    return a.kind == b.kind && a.replica == b.replica && a.layer == b.layer
           && a.boundary == b.boundary && a.slice == b.slice;
  }
  friend bool operator!=(const actor_key& a, const actor_key& b) { return !(a == b); }
};

/// "coordinator", "leader l1", "worker r0", "relay r0 k2", "slice r1 l0 i3".
std::string to_string(const actor_key& a);

/// Where every actor lives. Node numbers index `nodes` (canonical order).
struct placement_plan {
  placement_strategy strategy = placement_strategy::by_swarm;
  std::vector<std::string> nodes;  ///< node ids, sorted
  std::size_t replicas = 0;        ///< R
  std::vector<std::size_t> slices; ///< P_l per layer; size() = L
  std::size_t coordinator_node = 0;
  std::vector<std::size_t> leader_nodes;                          ///< [layer]
  std::vector<std::size_t> worker_nodes;                          ///< [replica]
  std::vector<std::vector<std::size_t>> relay_nodes;              ///< [replica][boundary]
  std::vector<std::vector<std::vector<std::size_t>>> slice_nodes; ///< [replica][layer][slice]

  std::size_t layers() const noexcept { return slices.size(); }

  /// Every actor of the run, in canonical order.
  std::vector<actor_key> actors() const;

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
placement_plan plan_placement(const cluster_config& cfg);

/// The actors `node_id` hosts, in canonical order. Throws nettorrent::error
/// naming the node if it is not in the plan.
std::vector<actor_key> actors_on(const placement_plan& plan, std::string_view node_id);

/// A human-readable summary: one line per node with how many actors of each
/// kind it hosts and which swarms (layers) and replicas they belong to.
std::string describe(const placement_plan& plan);

} // namespace nettorrent
