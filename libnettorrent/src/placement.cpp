#include "nettorrent/placement.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "nettorrent/cost_model.hpp"
#include "nettorrent/error.hpp"

namespace nettorrent {

namespace {

// The plan's cell for `a`, or nullptr if `a` is not an actor of this run.
template <class Plan>
auto* cell(Plan& p, const actor_key& a) {
  using cell_ptr = decltype(&p.coordinator_node);
  const auto in = [](std::size_t i, std::size_t n) { return i < n; };
  switch (a.kind) {
  case actor_kind::coordinator:
    return a.replica == 0 && a.layer == 0 && a.boundary == 0 && a.slice == 0 ? &p.coordinator_node
                                                                             : cell_ptr{nullptr};
  case actor_kind::swarm_leader:
    return in(a.layer, p.leader_nodes.size()) ? &p.leader_nodes[a.layer] : cell_ptr{nullptr};
  case actor_kind::shard_worker:
    return in(a.replica, p.worker_nodes.size()) ? &p.worker_nodes[a.replica] : cell_ptr{nullptr};
  case actor_kind::relay:
    return in(a.replica, p.relay_nodes.size()) && in(a.boundary, p.relay_nodes[a.replica].size())
               ? &p.relay_nodes[a.replica][a.boundary]
               : cell_ptr{nullptr};
  case actor_kind::neuron_slice:
    return in(a.replica, p.slice_nodes.size()) && in(a.layer, p.slice_nodes[a.replica].size())
                   && in(a.slice, p.slice_nodes[a.replica][a.layer].size())
               ? &p.slice_nodes[a.replica][a.layer][a.slice]
               : cell_ptr{nullptr};
  }
  return cell_ptr{nullptr};
}

// "0, 2-4, 7" for a sorted set of indices.
std::string ranges(const std::set<std::uint32_t>& xs) {
  std::string out;
  for (auto it = xs.begin(); it != xs.end();) {
    const std::uint32_t first = *it;
    std::uint32_t last = first;
    for (++it; it != xs.end() && *it == last + 1; ++it)
      last = *it;
    out += (out.empty() ? "" : ", ") + std::to_string(first)
           + (last == first ? "" : (last == first + 1 ? ", " : "-") + std::to_string(last));
  }
  return out;
}

} // namespace

std::size_t placement_plan::node_index(const actor_key& a) const {
  const std::size_t* c = cell(*this, a);
  if (c == nullptr)
    throw error("placement: " + to_string(a) + " is not an actor of this run ("
                + std::to_string(replicas) + " replicas, " + std::to_string(layers()) + " layers)");
  return *c;
}

std::string placement_plan::canonical() const {
  std::string out;
  for (const auto& a : actors())
    out += "placement." + to_string(a) + "=" + node_of(a) + "\n";
  return out;
}

bool operator==(const placement_plan& a, const placement_plan& b) {
  return a.strategy == b.strategy && a.nodes == b.nodes && a.replicas == b.replicas
         && a.slices == b.slices && a.coordinator_node == b.coordinator_node
         && a.leader_nodes == b.leader_nodes && a.worker_nodes == b.worker_nodes
         && a.relay_nodes == b.relay_nodes && a.slice_nodes == b.slice_nodes;
}

namespace {

placement_plan plan_fixed(const cluster_config& cfg);

/// auto: every fixed strategy planned and predicted on the description's
/// figures, filled in from `measured` where given; the fastest (the first
/// of equals) wins.
placement_plan plan_auto(const cluster_config& cfg, const std::vector<node_figures>* measured) {
  std::vector<std::pair<placement_strategy, double>> predicted;
  placement_plan best;
  double fastest = -1;
  for (auto s : candidate_strategies(cfg)) {
    cluster_config c = cfg;
    c.placement.strategy = s;
    placement_plan p = plan_fixed(c);
    if (measured != nullptr && measured->size() != p.nodes.size())
      throw error("placement auto: start-up figures for " + std::to_string(measured->size())
                  + " of " + std::to_string(p.nodes.size()) + " nodes");
    std::vector<node_figures> figures;
    for (std::size_t i = 0; i < p.nodes.size(); ++i)
      figures.push_back(
          planning_figures(cfg, p.nodes[i], measured != nullptr ? &(*measured)[i] : nullptr));
    const double x = predict(p, cfg.run, estimate_traffic(p, cfg.run), figures).samples_per_second;
    predicted.emplace_back(s, x);
    if (x > fastest) {
      fastest = x;
      best = std::move(p);
    }
  }
  best.chosen = best.strategy;
  best.strategy = placement_strategy::automatic;
  const auto num = [](double v) { return std::to_string(static_cast<long long>(v + 0.5)); };
  best.prediction = std::string{to_string(best.chosen)} + ": " + num(fastest)
                    + " samples/s predicted";
  for (const auto& [s, x] : predicted)
    if (s != best.chosen)
      best.prediction += ", " + std::string{to_string(s)} + " " + num(x);
  best.basis = measured != nullptr
                   ? "on every node's start-up figures, nodes.bandwidth_mbit and nodes.cores "
                     "where given"
                   : "on nodes.bandwidth_mbit and nodes.cores, " + num(auto_core_gflops)
                         + " GFLOP/s per core";
  return best;
}

} // namespace

placement_plan plan_placement(const cluster_config& cfg, const std::vector<node_figures>* measured) {
  try {
    cfg.validate();
  } catch (const error& ex) {
    throw error((cfg.path.empty() ? std::string{"cluster"} : cfg.path) + ": " + ex.what());
  }
  return cfg.placement.strategy == placement_strategy::automatic ? plan_auto(cfg, measured)
                                                                 : plan_fixed(cfg);
}

namespace {

void place_by_swarm(placement_plan& p) {
  // Coordinator and workers stay on node 0 (the cells' initial value).
  const std::size_t N = p.nodes.size();
  const std::size_t L = p.layers();
  for (std::size_t l = 0; l < L; ++l)
    p.leader_nodes[l] = l % N;
  for (std::size_t r = 0; r < p.replicas; ++r) {
    for (std::size_t k = 0; k <= L; ++k)
      p.relay_nodes[r][k] = std::min(k, L - 1) % N; // the loss relay joins swarm L-1
    for (std::size_t l = 0; l < L; ++l)
      std::fill(p.slice_nodes[r][l].begin(), p.slice_nodes[r][l].end(), l % N);
  }
}

void place_by_replica(placement_plan& p) {
  // The coordinator and the leaders stay on node 0: the exchange's results
  // go to the coordinator, and replica 0's layers reach its leaders
  // without crossing a host. Each replica's block is one node's.
  for (std::size_t r = 0; r < p.replicas; ++r) {
    const std::size_t n = r % p.nodes.size();
    p.worker_nodes[r] = n;
    std::fill(p.relay_nodes[r].begin(), p.relay_nodes[r].end(), n);
    for (auto& slices : p.slice_nodes[r])
      std::fill(slices.begin(), slices.end(), n);
  }
}

void place_by_group(placement_plan& p) {
  // Group r: nodes [r N / R, (r + 1) N / R) when R < N; node r mod N
  // otherwise. Within its group a replica is laid out as by_swarm lays out
  // the whole cluster; swarm l's leader sits with replica 0's slices of l.
  const std::size_t N = p.nodes.size();
  const std::size_t R = p.replicas;
  const std::size_t L = p.layers();
  const auto group = [&](std::size_t r) -> std::pair<std::size_t, std::size_t> {
    if (R >= N)
      return {r % N, 1};
    const std::size_t first = r * N / R;
    return {first, (r + 1) * N / R - first};
  };
  for (std::size_t r = 0; r < R; ++r) {
    const auto [first, size] = group(r);
    p.worker_nodes[r] = first;
    for (std::size_t k = 0; k <= L; ++k)
      p.relay_nodes[r][k] = first + std::min(k, L - 1) % size;
    for (std::size_t l = 0; l < L; ++l)
      std::fill(p.slice_nodes[r][l].begin(), p.slice_nodes[r][l].end(), first + l % size);
  }
  const auto [first, size] = group(0);
  for (std::size_t l = 0; l < L; ++l)
    p.leader_nodes[l] = first + l % size;
}

void place_listed(placement_plan& p, const placement_config& e) {
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < p.nodes.size(); ++i)
    index[p.nodes[i]] = i;
  p.coordinator_node = index.at(e.coordinator);
  for (std::size_t l = 0; l < p.layers(); ++l)
    p.leader_nodes[l] = index.at(e.leaders[l]);
  for (std::size_t r = 0; r < p.replicas; ++r) {
    p.worker_nodes[r] = index.at(e.workers[r]);
    for (std::size_t k = 0; k <= p.layers(); ++k)
      p.relay_nodes[r][k] = index.at(e.relays[r].of(k));
    for (std::size_t l = 0; l < p.layers(); ++l)
      for (std::size_t i = 0; i < p.slices[l]; ++i)
        p.slice_nodes[r][l][i] = index.at(e.slices[r][l].of(i));
  }
}

placement_plan plan_fixed(const cluster_config& cfg) {
  placement_plan p;
  p.strategy = cfg.placement.strategy;
  for (const auto& n : cfg.nodes)
    p.nodes.push_back(n.id);
  std::sort(p.nodes.begin(), p.nodes.end());
  const std::size_t L = cfg.run.model.layers.size() - 1;
  const std::size_t R = cfg.run.topology.replicas;
  p.replicas = R;
  for (std::size_t l = 0; l < L; ++l)
    p.slices.push_back(cfg.run.topology.slices_of(l));
  p.layout = run_layout{R, p.slices};

  // The shape first (every cell 0), then each strategy fills the cells.
  p.leader_nodes.assign(L, 0);
  p.worker_nodes.assign(R, 0);
  p.relay_nodes.assign(R, std::vector<std::size_t>(L + 1, 0));
  p.slice_nodes.resize(R);
  for (auto& per_layer : p.slice_nodes)
    for (std::size_t l = 0; l < L; ++l)
      per_layer.emplace_back(p.slices[l], 0);

  switch (p.strategy) {
  case placement_strategy::round_robin: {
    std::size_t j = 0;
    for (const auto& a : p.actors())
      *cell(p, a) = j++ % p.nodes.size();
    break;
  }
  case placement_strategy::by_swarm:
    place_by_swarm(p);
    break;
  case placement_strategy::by_replica:
    place_by_replica(p);
    break;
  case placement_strategy::by_group:
    place_by_group(p);
    break;
  case placement_strategy::automatic: // plan_auto() plans each of the others
    break;
  case placement_strategy::listed:
    place_listed(p, cfg.placement);
    break;
  }
  p.chosen = p.strategy;
  return p;
}

} // namespace

bool planned_at_start(const cluster_config& cfg) {
  return cfg.placement.strategy == placement_strategy::automatic && cfg.nodes.size() > 1;
}

std::vector<placement_strategy> candidate_strategies(const cluster_config& cfg) {
  const std::size_t N = cfg.nodes.size();
  const std::size_t R = cfg.run.topology.replicas;
  std::vector<placement_strategy> out{placement_strategy::by_swarm, placement_strategy::by_replica};
  if (R > 1 && R < N)
    out.push_back(placement_strategy::by_group);
  out.push_back(placement_strategy::round_robin);
  return out;
}

node_figures planning_figures(const cluster_config& cfg, const std::string& id,
                              const node_figures* m) {
  const node_address* n = cfg.find_node(id);
  if (n == nullptr)
    throw error("placement: node \"" + id + "\" is not in the cluster description");
  node_figures f;
  f.mbit = n->bandwidth_mbit != 0        ? static_cast<double>(n->bandwidth_mbit)
           : m != nullptr && m->mbit > 0 ? m->mbit
                                         : 1000;
  f.cores = n->cores != 0 ? static_cast<double>(n->cores) : m != nullptr ? m->cores : 1;
  f.gflops = m != nullptr ? m->gflops : auto_core_gflops;
  return f;
}

std::vector<actor_key> actors_on(const placement_plan& plan, std::string_view node_id) {
  const auto it = std::find(plan.nodes.begin(), plan.nodes.end(), node_id);
  if (it == plan.nodes.end())
    throw error("placement: node \"" + std::string{node_id} + "\" is not in the plan");
  const auto n = static_cast<std::size_t>(it - plan.nodes.begin());
  std::vector<actor_key> out;
  for (const auto& a : plan.actors())
    if (plan.node_index(a) == n)
      out.push_back(a);
  return out;
}

std::string describe(const placement_plan& plan) {
  std::string out = "placement " + std::string{to_string(plan.strategy)} + ": "
                    + std::to_string(plan.actors().size()) + " actors ("
                    + std::to_string(plan.replicas) + " replicas, " + std::to_string(plan.layers())
                    + " swarms) on " + std::to_string(plan.nodes.size()) + " nodes\n";
  if (plan.strategy == placement_strategy::automatic)
    out += "  auto chose " + plan.prediction + " (" + plan.basis + ")\n";
  for (const auto& node : plan.nodes) {
    const auto mine = actors_on(plan, node);
    std::map<actor_kind, std::size_t> count;
    std::set<std::uint32_t> swarms;
    std::set<std::uint32_t> replicas;
    for (const auto& a : mine) {
      ++count[a.kind];
      if (a.kind == actor_kind::swarm_leader || a.kind == actor_kind::neuron_slice)
        swarms.insert(a.layer);
      if (a.kind != actor_kind::coordinator && a.kind != actor_kind::swarm_leader)
        replicas.insert(a.replica);
    }
    out += "  " + node + ": " + std::to_string(mine.size()) + " actors";
    std::string sep = " (";
    for (const auto& [kind, n] : count) {
      out += sep + std::to_string(n) + " " + std::string{to_string(kind)};
      sep = ", ";
    }
    out += mine.empty() ? "" : ")";
    if (!swarms.empty())
      out += "; swarms " + ranges(swarms);
    if (!replicas.empty())
      out += "; replicas " + ranges(replicas);
    out += "\n";
  }
  return out;
}

} // namespace nettorrent
