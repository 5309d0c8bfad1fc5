#include "nettorrent/run_layout.hpp"

#include "nettorrent/config.hpp"
#include "nettorrent/error.hpp"

namespace nettorrent {

std::string_view to_string(actor_kind k) noexcept {
  switch (k) {
  case actor_kind::coordinator:
    return "coordinator";
  case actor_kind::swarm_leader:
    return "leader";
  case actor_kind::shard_worker:
    return "worker";
  case actor_kind::relay:
    return "relay";
  case actor_kind::neuron_slice:
    return "slice";
  }
  return "?";
}

std::string to_string(const actor_key& a) {
  std::string s{to_string(a.kind)};
  const auto num = [](char c, std::uint32_t x) { return std::string{" "} + c + std::to_string(x); };
  switch (a.kind) {
  case actor_kind::coordinator:
    break;
  case actor_kind::swarm_leader:
    s += num('l', a.layer);
    break;
  case actor_kind::shard_worker:
    s += num('r', a.replica);
    break;
  case actor_kind::relay:
    s += num('r', a.replica) + num('k', a.boundary);
    break;
  case actor_kind::neuron_slice:
    s += num('r', a.replica) + num('l', a.layer) + num('i', a.slice);
    break;
  }
  return s;
}

std::string describe(const actor_key& a) {
  const auto n = [](std::uint32_t x) { return std::to_string(x); };
  switch (a.kind) {
  case actor_kind::coordinator:
    return "coordinator";
  case actor_kind::swarm_leader:
    return "swarm leader (layer " + n(a.layer + 1) + ")";
  case actor_kind::shard_worker:
    return "shard worker (replica " + n(a.replica) + ")";
  case actor_kind::relay:
    return "relay (replica " + n(a.replica) + ", boundary " + n(a.boundary) + ")";
  case actor_kind::neuron_slice:
    return "neuron slice (replica " + n(a.replica) + ", layer " + n(a.layer + 1) + ", slice "
           + n(a.slice) + ")";
  }
  return "?";
}

run_layout::run_layout(std::size_t replicas, std::vector<std::size_t> slices)
    : replicas_(replicas), slices_(std::move(slices)) {
  if (replicas_ == 0 || slices_.empty())
    throw error("run layout: needs at least one replica and one layer");
  for (auto p : slices_) {
    if (p == 0)
      throw error("run layout: every layer needs at least one slice");
    slice_offset_.push_back(slices_per_replica_);
    slices_per_replica_ += p;
  }
  const auto L = static_cast<std::uint32_t>(layers());
  const auto R = static_cast<std::uint32_t>(replicas_);
  actors_.push_back(actor_key::coordinator());
  for (std::uint32_t l = 0; l < L; ++l)
    actors_.push_back(actor_key::leader(l));
  for (std::uint32_t r = 0; r < R; ++r) {
    actors_.push_back(actor_key::worker(r));
    for (std::uint32_t k = 0; k <= L; ++k)
      actors_.push_back(actor_key::relay(r, k));
    for (std::uint32_t l = 0; l < L; ++l)
      for (std::uint32_t i = 0; i < slices_[l]; ++i)
        actors_.push_back(actor_key::slice_of(r, l, i));
  }
}

run_layout::run_layout(const run_config& cfg)
    : run_layout(cfg.topology.replicas, [&] {
        std::vector<std::size_t> p;
        for (std::size_t l = 0; l + 1 < cfg.model.layers.size(); ++l)
          p.push_back(cfg.topology.slices_of(l));
        return p;
      }()) {}

std::optional<std::size_t> run_layout::find(const actor_key& a) const noexcept {
  const std::size_t L = layers();
  const std::size_t R = replicas_;
  const std::size_t leaders = 1;
  // Replica r's block starts at block(r): its worker, its relays, its slices.
  const auto block = [&](std::size_t r) { return leaders + L + r * replica_block_size(); };
  const bool unused_zero = [&] {
    switch (a.kind) {
    case actor_kind::coordinator:
      return a.replica == 0 && a.layer == 0 && a.boundary == 0 && a.slice == 0;
    case actor_kind::swarm_leader:
      return a.replica == 0 && a.boundary == 0 && a.slice == 0;
    case actor_kind::shard_worker:
      return a.layer == 0 && a.boundary == 0 && a.slice == 0;
    case actor_kind::relay:
      return a.layer == 0 && a.slice == 0;
    case actor_kind::neuron_slice:
      return a.boundary == 0;
    }
    return false;
  }();
  if (!unused_zero)
    return std::nullopt;
  switch (a.kind) {
  case actor_kind::coordinator:
    return 0;
  case actor_kind::swarm_leader:
    if (a.layer < L)
      return leaders + a.layer;
    break;
  case actor_kind::shard_worker:
    if (a.replica < R)
      return block(a.replica);
    break;
  case actor_kind::relay:
    if (a.replica < R && a.boundary <= L)
      return block(a.replica) + 1 + a.boundary;
    break;
  case actor_kind::neuron_slice:
    if (a.replica < R && a.layer < L && a.slice < slices_[a.layer])
      return block(a.replica) + 1 + (L + 1) + slice_offset_[a.layer] + a.slice;
    break;
  }
  return std::nullopt;
}

std::size_t run_layout::index(const actor_key& a) const {
  if (auto i = find(a))
    return *i;
  throw error("run layout: " + to_string(a) + " is not an actor of this run ("
              + std::to_string(replicas_) + " replicas, " + std::to_string(layers()) + " layers)");
}

std::vector<actor_key> run_layout::slices_of(std::size_t replica, std::size_t layer) const {
  std::vector<actor_key> out;
  for (std::size_t i = 0; i < slices_.at(layer); ++i)
    out.push_back(actor_key::slice_of(static_cast<std::uint32_t>(replica),
                                      static_cast<std::uint32_t>(layer),
                                      static_cast<std::uint32_t>(i)));
  return out;
}

std::vector<actor_key> run_layout::swarm(std::size_t layer) const {
  std::vector<actor_key> out;
  for (std::size_t r = 0; r < replicas_; ++r)
    for (const auto& k : slices_of(r, layer))
      out.push_back(k);
  return out;
}

std::size_t run_layout::swarm_position(std::size_t replica, std::size_t layer,
                                       std::size_t slice) const {
  return replica * slices_.at(layer) + slice;
}

std::size_t run_layout::swarm_position(const actor_key& a) const {
  return swarm_position(a.replica, a.layer, a.slice);
}

metrics_cell run_layout::metrics_of(const actor_key& a) const {
  switch (a.kind) {
  case actor_kind::coordinator:
    return {0, 0};
  case actor_kind::swarm_leader:
    return {a.layer + std::size_t{1}, 0};
  case actor_kind::shard_worker:
    return {0, a.replica};
  case actor_kind::relay:
    return {a.boundary, a.replica};
  case actor_kind::neuron_slice:
    return {a.layer + std::size_t{1}, a.replica};
  }
  return {0, 0};
}

} // namespace nettorrent
