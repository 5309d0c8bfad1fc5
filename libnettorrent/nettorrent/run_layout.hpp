// The run layout: the one canonical list of a run's actors. A run with L
// layers (swarms), R replicas and P_l slices in layer l has
//   coordinator       1
//   swarm leader      one per layer l = 0..L-1
//   shard worker      one per replica r = 0..R-1
//   relay             one per replica and boundary k = 0..L
//                     (k = 0 input relay, 0 < k < L hidden relay, k = L loss relay)
//   neuron slice      one per replica, layer and slice i = 0..P_l-1
// in this canonical order, replica-major: the coordinator and the leaders by
// layer stand outside the replicas; then one block per replica r, holding
// its worker, its relays by boundary and its slices by (layer, slice).
//
//   [coordinator][leader 0 .. leader L-1][replica 0 block][replica 1 block]...
//   replica block: [worker][relay k=0 .. k=L][slice l0 i0 .. slice l(L-1) i(P-1)]
//
// A replica appended at the end or removed from it moves no other actor's
// index, key or metrics cell. Every actor has a dense index into that order.
// Placement, node actors, the coordinator's registry, the swarm leaders and
// the metrics all use this one enumeration; nothing else does index
// arithmetic over a run's actors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nettorrent {

struct run_config;

enum class actor_kind : std::uint8_t {
  coordinator,
  swarm_leader,
  shard_worker,
  /// A relay at boundary k of a replica: the input relay (k = 0), a hidden
  /// relay between two layers, or the loss relay after the last (k = L).
  relay,
  neuron_slice,
};

std::string_view to_string(actor_kind k) noexcept;

/// Names one actor of a run. Fields a kind does not use stay 0.
struct actor_key {
  actor_kind kind = actor_kind::coordinator;
  std::uint32_t replica = 0;  ///< shard_worker, relay, neuron_slice
  std::uint32_t layer = 0;    ///< swarm_leader, neuron_slice (0-based)
  std::uint32_t boundary = 0; ///< relay: k = 0..L
  std::uint32_t slice = 0;    ///< neuron_slice: index within (replica, layer)

  static actor_key coordinator() { return {}; }
  static actor_key leader(std::uint32_t l) { return {actor_kind::swarm_leader, 0, l, 0, 0}; }
  static actor_key worker(std::uint32_t r) { return {actor_kind::shard_worker, r, 0, 0, 0}; }
  static actor_key relay(std::uint32_t r, std::uint32_t k) {
    return {actor_kind::relay, r, 0, k, 0};
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

/// For errors: "neuron slice (replica 0, layer 2, slice 1)", "relay
/// (replica 0, boundary 1)", "shard worker (replica 1)", "swarm leader (layer 3)".
std::string describe(const actor_key& a);

/// The metrics cell an actor updates: swarm 0 is the input side (workers and
/// input relays), swarm l+1 is layer l; leaders report as replica 0.
struct metrics_cell {
  std::size_t swarm = 0;
  std::size_t replica = 0;
};

class run_layout {
public:
  run_layout() = default;
  /// R replicas, P_l = slices[l] slices in layer l (slices.size() = L >= 1).
  run_layout(std::size_t replicas, std::vector<std::size_t> slices);
  /// The layout of a validated run configuration.
  explicit run_layout(const run_config& cfg);

  std::size_t layers() const noexcept { return slices_.size(); }
  std::size_t replicas() const noexcept { return replicas_; }
  std::size_t slices_of(std::size_t layer) const { return slices_.at(layer); }
  const std::vector<std::size_t>& slices() const noexcept { return slices_; }

  /// Every actor of the run, in canonical order (the coordinator first).
  const std::vector<actor_key>& actors() const noexcept { return actors_; }
  /// Number of actors, the coordinator included.
  std::size_t size() const noexcept { return actors_.size(); }
  /// Dense index of `a` into actors(); nullopt if `a` is not in this run.
  std::optional<std::size_t> find(const actor_key& a) const noexcept;
  /// Dense index of `a`; throws nettorrent::error if `a` is not in this run.
  std::size_t index(const actor_key& a) const;

  /// The slices of layer l in replica r, by slice index.
  std::vector<actor_key> slices_of(std::size_t replica, std::size_t layer) const;
  /// Swarm l: every replica's slices of layer l, replica-major (the order a
  /// swarm leader is wired with).
  std::vector<actor_key> swarm(std::size_t layer) const;
  /// Position of slice `a` within swarm(a.layer).
  std::size_t swarm_position(const actor_key& a) const;
  /// Position of slice (r, i) within swarm(layer).
  std::size_t swarm_position(std::size_t replica, std::size_t layer, std::size_t slice) const;

  /// Number of metrics cells: R replicas x (L + 1) swarms.
  std::size_t metrics_cells() const noexcept { return (layers() + 1) * replicas_; }
  /// Dense index of a metrics cell, replica-major: a replica appended at the
  /// end moves no other cell.
  std::size_t metrics_index(metrics_cell c) const noexcept {
    return c.replica * (layers() + 1) + c.swarm;
  }
  /// Actors in one replica's block: its worker, L + 1 relays, its slices.
  std::size_t replica_block_size() const noexcept { return 1 + (layers() + 1) + slices_per_replica_; }
  /// The metrics cell actor `a` updates.
  metrics_cell metrics_of(const actor_key& a) const;

  friend bool operator==(const run_layout& a, const run_layout& b) {
    return a.replicas_ == b.replicas_ && a.slices_ == b.slices_;
  }

private:
  std::size_t replicas_ = 0;
  std::vector<std::size_t> slices_;
  std::vector<std::size_t> slice_offset_; ///< first slice of layer l within a replica
  std::size_t slices_per_replica_ = 0;
  std::vector<actor_key> actors_;
};

} // namespace nettorrent
