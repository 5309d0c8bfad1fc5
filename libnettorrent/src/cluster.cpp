#include "nettorrent/cluster.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "config_schema.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/ini.hpp"
#include "nettorrent/placement.hpp"

namespace nettorrent {

using namespace schema;

namespace {

// --- values ----------------------------------------------------------------

constexpr std::size_t max_port = 65535;

// Node ids appear in file names, logs and metric labels: keep them plain.
std::string read_node_id(const ini_value& v) {
  std::string id = read_string(v);
  if (id.empty())
    throw error("a node id must not be empty");
  for (char c : id)
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_' && c != '-' && c != '.')
      throw error("node id \"" + id + "\" may hold only letters, digits, '_', '-' and '.'");
  return id;
}

std::string read_host(const ini_value& v) {
  std::string host = read_string(v);
  if (host.empty())
    throw error("a host must not be empty");
  for (char c : host)
    if (std::isspace(static_cast<unsigned char>(c)) != 0)
      throw error("host \"" + host + "\" contains white space");
  return host;
}

std::vector<std::string> read_node_ids(const ini_value& v) {
  return read_list(v, "a list of node ids like [\"n0\", \"n1\"]", read_node_id);
}

// "n1" (the whole group) or ["n1", "n2"] (one per actor).
node_group read_node_group(const ini_value& v) {
  if (v.kind == ini_value::type::list)
    return {read_node_ids(v), true};
  if (v.kind != ini_value::type::string && v.kind != ini_value::type::atom)
    wrong_type(v, "a node id or a list of node ids");
  return {{read_node_id(v)}, false};
}

std::string show_group(const node_group& g) {
  return g.each ? show_list(g.ids) : quote(g.ids.at(0));
}

std::string join_ids(const std::vector<node_address>& nodes) {
  std::string s;
  for (const auto& n : nodes)
    s += (s.empty() ? "" : ", ") + n.id;
  return s;
}

// --- the cluster file --------------------------------------------------------

// A cluster file as read, before [nodes]' parallel lists are zipped.
struct cluster_file {
  cluster_config cfg;
  std::vector<std::string> ids;
  std::vector<std::string> hosts;
  std::vector<std::size_t> ports;
  std::vector<std::size_t> metrics_ports;
  std::vector<std::size_t> bandwidth_mbit; ///< optional
  std::vector<std::size_t> cores;          ///< optional
};

const std::vector<option<cluster_file>>& cluster_options() {
  static const std::vector<option<cluster_file>> specs = [] {
    auto all = lift<cluster_file>(
        run_options(), [](auto& f) -> auto& { return f.cfg.run; });
    const std::vector<option<cluster_file>> own = {
        {"placement.strategy", "string",
         "which node hosts which actor: round_robin, by_swarm, by_replica, by_group, auto or "
         "explicit",
         [](cluster_file& f, const ini_value& v) {
           f.cfg.placement.strategy = parse_placement_strategy(read_string(v));
         },
         [](const cluster_file& f) {
           return quote(std::string{to_string(f.cfg.placement.strategy)});
         },
         true, true},
        {"placement.rebalance_on_rejoin", "boolean",
         "after a lost node rejoins, move the actors recovery placed elsewhere back to it",
         [](cluster_file& f, const ini_value& v) {
           f.cfg.placement.rebalance_on_rejoin = read_bool(v);
         },
         [](const cluster_file& f) {
           return std::string{f.cfg.placement.rebalance_on_rejoin ? "true" : "false"};
         }},
        {"tls.enabled", "boolean",
         "mutual TLS (caf_openssl) on every port and connection; required beyond loopback",
         [](cluster_file& f, const ini_value& v) { f.cfg.tls.enabled = read_bool(v); },
         [](const cluster_file& f) { return std::string{f.cfg.tls.enabled ? "true" : "false"}; }},
        {"tls.certificate", "string", "this node's certificate (PEM); a node file may override it",
         [](cluster_file& f, const ini_value& v) { f.cfg.tls.certificate = read_string(v); },
         [](const cluster_file& f) { return quote(f.cfg.tls.certificate); }, false},
        {"tls.key", "string", "the certificate's private key (PEM); a node file may override it",
         [](cluster_file& f, const ini_value& v) { f.cfg.tls.key = read_string(v); },
         [](const cluster_file& f) { return quote(f.cfg.tls.key); }, false},
        {"tls.ca_file", "string", "the CA every peer's certificate must chain to (PEM)",
         [](cluster_file& f, const ini_value& v) { f.cfg.tls.ca_file = read_string(v); },
         [](const cluster_file& f) { return quote(f.cfg.tls.ca_file); }, false},
        {"tls.passphrase", "string", "the key's passphrase, if it has one",
         [](cluster_file& f, const ini_value& v) { f.cfg.tls.passphrase = read_string(v); },
         [](const cluster_file&) { return std::string{"(not shown)"}; }, false},
        {"placement.coordinator", "string", "explicit: the coordinator's node id",
         [](cluster_file& f, const ini_value& v) { f.cfg.placement.coordinator = read_node_id(v); },
         [](const cluster_file& f) { return quote(f.cfg.placement.coordinator); }},
        {"placement.leaders", "list of strings", "explicit: one node id per layer (swarm leader)",
         [](cluster_file& f, const ini_value& v) { f.cfg.placement.leaders = read_node_ids(v); },
         [](const cluster_file& f) { return show_list(f.cfg.placement.leaders); }},
        {"placement.workers", "list of strings", "explicit: one node id per replica (shard worker)",
         [](cluster_file& f, const ini_value& v) { f.cfg.placement.workers = read_node_ids(v); },
         [](const cluster_file& f) { return show_list(f.cfg.placement.workers); }},
        {"placement.relays", "list",
         "explicit: per replica, one node id for its L+1 gradient "
         "relays or a list of L+1 ids (boundary 0 = input, L = loss)",
         [](cluster_file& f, const ini_value& v) {
           f.cfg.placement.relays =
               read_list(v, "a list with one entry per replica", read_node_group);
         },
         [](const cluster_file& f) { return show_list(f.cfg.placement.relays, show_group); }},
        {"placement.slices", "list of lists",
         "explicit: per replica a list with, per layer, one "
         "node id for all its neuron slices or a list of one id per slice",
         [](cluster_file& f, const ini_value& v) {
           f.cfg.placement.slices =
               read_list(v, "a list with one list per replica", [](const ini_value& x) {
                 return read_list(x, "a list with one entry per layer", read_node_group);
               });
         },
         [](const cluster_file& f) {
           return show_list(f.cfg.placement.slices, [](const std::vector<node_group>& r) {
             return show_list(r, show_group);
           });
         }},
        {"nodes.ids", "list of strings", "the nodes' ids, unique (letters, digits, _ - .)",
         [](cluster_file& f, const ini_value& v) { f.ids = read_node_ids(v); },
         [](const cluster_file& f) { return show_list(f.ids); }, true, true},
        {"nodes.hosts", "list of strings", "per node: the address its peers connect to",
         [](cluster_file& f, const ini_value& v) {
           f.hosts = read_list(v, "a list of quoted host names or addresses", read_host);
         },
         [](const cluster_file& f) { return show_list(f.hosts); }, true, true},
        {"nodes.ports", "list of integers", "per node: the CAF middleman (BASP) port",
         [](cluster_file& f, const ini_value& v) { f.ports = read_size_list(v, 1, max_port); },
         [](const cluster_file& f) { return show_list(f.ports); }, true, true},
        {"nodes.metrics_ports", "list of integers", "per node: the Prometheus exporter port",
         [](cluster_file& f, const ini_value& v) {
           f.metrics_ports = read_size_list(v, 1, max_port);
         },
         [](const cluster_file& f) { return show_list(f.metrics_ports); }, true, true},
        {"nodes.bandwidth_mbit", "list of integers",
         "per node: its link's rate in Mbit/s each way, for placement \"auto\" (default 1000)",
         [](cluster_file& f, const ini_value& v) {
           f.bandwidth_mbit = read_size_list(v, 1, 1000000);
         },
         [](const cluster_file& f) { return show_list(f.bandwidth_mbit); }, false},
        {"nodes.cores", "list of integers",
         "per node: its cores, for placement \"auto\" (default 1)",
         [](cluster_file& f, const ini_value& v) { f.cores = read_size_list(v, 1, 4096); },
         [](const cluster_file& f) { return show_list(f.cores); }, false},
    };
    all.insert(all.end(), own.begin(), own.end());
    return all;
  }();
  return specs;
}

// Zips [nodes]' lists into node addresses, sorted by id.
std::vector<node_address> zip_nodes(const cluster_file& f) {
  const auto check_length = [&](const char* key, std::size_t n) {
    if (n != f.ids.size())
      throw error(std::string{key} + ": has " + std::to_string(n) + " entries, nodes.ids has "
                  + std::to_string(f.ids.size()) + " (one entry per node)");
  };
  check_length("nodes.hosts", f.hosts.size());
  check_length("nodes.ports", f.ports.size());
  check_length("nodes.metrics_ports", f.metrics_ports.size());
  if (!f.bandwidth_mbit.empty())
    check_length("nodes.bandwidth_mbit", f.bandwidth_mbit.size());
  if (!f.cores.empty())
    check_length("nodes.cores", f.cores.size());
  std::vector<node_address> nodes;
  for (std::size_t i = 0; i < f.ids.size(); ++i)
    nodes.push_back({f.ids[i], f.hosts[i], static_cast<std::uint16_t>(f.ports[i]),
                     static_cast<std::uint16_t>(f.metrics_ports[i]),
                     f.bandwidth_mbit.empty() ? 0 : f.bandwidth_mbit[i],
                     f.cores.empty() ? 0 : f.cores[i]});
  std::sort(nodes.begin(), nodes.end(),
            [](const node_address& a, const node_address& b) { return a.id < b.id; });
  return nodes;
}

// --- validation of the parts -----------------------------------------------------

void validate_nodes(const std::vector<node_address>& nodes) {
  if (nodes.empty())
    throw error("nodes.ids: needs at least one node");
  std::set<std::string> ids;
  // host:port -> "node n0's port"; CAF and the exporter both bind theirs.
  std::map<std::string, std::pair<std::string, bool>> endpoints;
  for (const auto& n : nodes) {
    if (!ids.insert(n.id).second)
      throw error("nodes.ids: node \"" + n.id + "\" is listed twice");
    if (n.port == 0 || n.metrics_port == 0)
      throw error(std::string{n.port == 0 ? "nodes.ports" : "nodes.metrics_ports"} + ": node "
                  + n.id + " has port 0");
    for (const bool metrics : {false, true}) {
      const std::string ep = n.host + ":" + std::to_string(metrics ? n.metrics_port : n.port);
      const std::string what = "node " + n.id + "'s " + (metrics ? "metrics port" : "port");
      const auto [it, fresh] = endpoints.emplace(ep, std::make_pair(what, metrics));
      if (!fresh)
        throw error(
            std::string{metrics || it->second.second ? "nodes.metrics_ports" : "nodes.ports"} + ": "
            + ep + " is used twice: " + it->second.first + " and " + what);
    }
  }
}

void check_node(const cluster_config& c, const std::string& key, const std::string& where,
                const std::string& id) {
  if (c.find_node(id) == nullptr)
    throw error(key + ": " + where + " names node \"" + id + "\", which is not in nodes.ids ("
                + join_ids(c.nodes) + ")");
}

void check_group(const cluster_config& c, const std::string& key, const std::string& where,
                 const node_group& g, std::size_t actors, const std::string& what) {
  if (g.each ? g.ids.size() != actors : g.ids.size() != 1)
    throw error(key + ": " + where + " has " + std::to_string(g.ids.size()) + " node ids, but "
                + std::to_string(actors) + " " + what
                + " (give one id per actor, or a single id for all of them)");
  for (std::size_t i = 0; i < g.ids.size(); ++i)
    check_node(c, key, where + (g.each ? " entry " + std::to_string(i) : std::string{}), g.ids[i]);
}

void check_count(const std::string& key, std::size_t given, std::size_t wanted,
                 const std::string& per) {
  if (given != wanted)
    throw error(key + ": has " + std::to_string(given) + " entries, wanted "
                + std::to_string(wanted) + " (one per " + per + ")");
}

void validate_placement(const cluster_config& c) {
  const placement_config& p = c.placement;
  const bool listed = p.strategy == placement_strategy::listed;
  const std::pair<const char*, bool> lists[] = {
      {"placement.coordinator", !p.coordinator.empty()}, {"placement.leaders", !p.leaders.empty()},
      {"placement.workers", !p.workers.empty()},         {"placement.relays", !p.relays.empty()},
      {"placement.slices", !p.slices.empty()},
  };
  for (const auto& [key, given] : lists) {
    if (listed && !given)
      throw error(std::string{key}
                  + ": missing; placement.strategy \"explicit\" needs coordinator, leaders, "
                    "workers, relays and slices");
    if (!listed && given)
      throw error(std::string{key} + ": only read by placement.strategy \"explicit\", but it is \""
                  + std::string{to_string(p.strategy)} + "\" (remove the key or the strategy)");
  }
  if (!listed)
    return;
  const std::size_t L = c.run.model.layers.size() - 1;
  const std::size_t R = c.run.topology.replicas;
  check_node(c, "placement.coordinator", "it", p.coordinator);
  check_count("placement.leaders", p.leaders.size(), L,
              "layer, as model.layers has " + std::to_string(L) + " layers");
  for (std::size_t l = 0; l < L; ++l)
    check_node(c, "placement.leaders", "entry " + std::to_string(l), p.leaders[l]);
  const std::string per_replica = "replica, as topology.replicas = " + std::to_string(R);
  check_count("placement.workers", p.workers.size(), R, per_replica);
  for (std::size_t r = 0; r < R; ++r)
    check_node(c, "placement.workers", "entry " + std::to_string(r), p.workers[r]);
  check_count("placement.relays", p.relays.size(), R, per_replica);
  for (std::size_t r = 0; r < R; ++r)
    check_group(c, "placement.relays", "replica " + std::to_string(r), p.relays[r], L + 1,
                "relays (boundaries 0.." + std::to_string(L) + ")");
  check_count("placement.slices", p.slices.size(), R, per_replica);
  for (std::size_t r = 0; r < R; ++r) {
    const std::string where = "replica " + std::to_string(r);
    if (p.slices[r].size() != L)
      throw error("placement.slices: " + where + " has " + std::to_string(p.slices[r].size())
                  + " entries, wanted " + std::to_string(L) + " (one per layer)");
    for (std::size_t l = 0; l < L; ++l)
      check_group(c, "placement.slices", where + " layer " + std::to_string(l), p.slices[r][l],
                  c.run.topology.slices_of(l), "slices");
  }
}

// --- the node file -----------------------------------------------------------

// A node file as read; 0 = port not given.
struct node_file {
  node_config cfg;
  std::size_t port = 0;
  std::size_t metrics_port = 0;
  std::string tls_certificate; ///< overrides of the cluster's tls paths
  std::string tls_key;
  std::string tls_ca_file;
};

/// With TLS on, the certificate, key and CA file must be set and readable.
void check_tls_files(const tls_config& t, const std::string& where) {
  if (!t.enabled)
    return;
  const std::pair<const char*, const std::string*> files[] = {
      {"tls.certificate", &t.certificate}, {"tls.key", &t.key}, {"tls.ca_file", &t.ca_file}};
  for (const auto& [key, file] : files) {
    if (file->empty())
      throw error(where + ": tls.enabled = true needs " + key
                  + " (a PEM file; scripts/make-certs.sh makes test ones)");
    std::ifstream in{*file};
    if (!in)
      throw error(where + ": " + key + " = \"" + *file + "\": cannot read it");
  }
}

const std::vector<option<node_file>>& node_options() {
  static const std::vector<option<node_file>> specs = {
      {"node.cluster_file", "string",
       "the shared cluster description; a relative path starts at this file's directory",
       [](node_file& f, const ini_value& v) {
         f.cfg.cluster_file = read_string(v);
         if (f.cfg.cluster_file.empty())
           throw error("must not be empty");
       },
       [](const node_file& f) { return quote(f.cfg.cluster_file); }, true, true},
      {"node.id", "string", "this node's id: one of the cluster file's nodes.ids",
       [](node_file& f, const ini_value& v) { f.cfg.id = read_node_id(v); },
       [](const node_file& f) { return quote(f.cfg.id); }, true, true},
      {"node.tls_certificate", "string", "this node's certificate, instead of tls.certificate",
       [](node_file& f, const ini_value& v) { f.tls_certificate = read_string(v); },
       [](const node_file& f) { return quote(f.tls_certificate); }},
      {"node.tls_key", "string", "this node's private key, instead of tls.key",
       [](node_file& f, const ini_value& v) { f.tls_key = read_string(v); },
       [](const node_file& f) { return quote(f.tls_key); }},
      {"node.tls_ca_file", "string", "the CA file, instead of tls.ca_file",
       [](node_file& f, const ini_value& v) { f.tls_ca_file = read_string(v); },
       [](const node_file& f) { return quote(f.tls_ca_file); }},
      {"node.bind", "string",
       "address the node listens on; anything but loopback requires tls.enabled = true",
       [](node_file& f, const ini_value& v) { f.cfg.bind = read_host(v); },
       [](const node_file& f) { return quote(f.cfg.bind); }},
      {"node.port", "integer", "optional check: must equal this node's entry in nodes.ports",
       [](node_file& f, const ini_value& v) { f.port = read_size(v, 1, max_port); },
       [](const node_file& f) {
         return f.port == 0 ? std::string{"(from nodes.ports)"} : std::to_string(f.port);
       }},
      {"node.metrics_port", "integer",
       "optional check: must equal this node's entry in nodes.metrics_ports",
       [](node_file& f, const ini_value& v) { f.metrics_port = read_size(v, 1, max_port); },
       [](const node_file& f) {
         return f.metrics_port == 0 ? std::string{"(from nodes.metrics_ports)"}
                                    : std::to_string(f.metrics_port);
       }},
  };
  return specs;
}

std::string resolve_relative(const std::string& base_file, const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p{path};
  if (p.is_absolute())
    return path;
  return (fs::path{base_file}.parent_path() / p).lexically_normal().string();
}

void check_override(const ini_document& doc, const char* key, std::size_t given,
                    std::uint16_t listed, const char* list_key, const node_config& c) {
  if (given != 0 && given != listed)
    throw error(origin_of(doc, key) + ": " + key + ": " + std::to_string(given) + " differs from "
                + std::to_string(listed) + ", node " + c.id + "'s entry in " + list_key + " of "
                + c.cluster_file);
}

} // namespace

// --- public API ----------------------------------------------------------------

std::string_view to_string(placement_strategy s) noexcept {
  switch (s) {
  case placement_strategy::round_robin:
    return "round_robin";
  case placement_strategy::by_swarm:
    return "by_swarm";
  case placement_strategy::listed:
    return "explicit";
  case placement_strategy::by_replica:
    return "by_replica";
  case placement_strategy::automatic:
    return "auto";
  case placement_strategy::by_group:
    return "by_group";
  }
  return "?";
}

placement_strategy parse_placement_strategy(std::string_view name) {
  for (auto s : {placement_strategy::round_robin, placement_strategy::by_swarm,
                 placement_strategy::by_replica, placement_strategy::by_group,
                 placement_strategy::automatic, placement_strategy::listed})
    if (name == to_string(s))
      return s;
  throw error("unknown placement strategy \"" + std::string{name}
              + "\" (expected round_robin, by_swarm, by_replica, by_group, auto or explicit)");
}

const node_address* cluster_config::find_node(std::string_view id) const {
  for (const auto& n : nodes)
    if (n.id == id)
      return &n;
  return nullptr;
}

void cluster_config::validate() const {
  run.validate();
  validate_nodes(nodes);
  validate_placement(*this);
}

std::string cluster_config::canonical() const {
  std::vector<std::string> lines = split_lines(run.canonical());
  lines.push_back("placement.strategy=" + std::string{to_string(placement.strategy)});
  lines.push_back("tls.enabled=" + std::string{tls.enabled ? "true" : "false"});
  // Not part of a run's hash (an embedded run never serialises), but nodes
  // must agree: it changes what every cross-node matrix rounds to.
  lines.push_back("system.wire_precision=" + std::string{to_string(run.system.wire)});
  // Every node derives the placement after a rejoin from the description.
  lines.push_back("placement.rebalance_on_rejoin="
                  + std::string{placement.rebalance_on_rejoin ? "true" : "false"});
  for (auto& l : split_lines(plan_placement(*this).canonical()))
    lines.push_back(std::move(l));
  for (const auto& n : nodes)
    lines.push_back("nodes." + n.id + "=" + n.endpoint() + " metrics "
                    + std::to_string(n.metrics_port)
                    + (n.bandwidth_mbit != 0 ? " mbit " + std::to_string(n.bandwidth_mbit) : "")
                    + (n.cores != 0 ? " cores " + std::to_string(n.cores) : ""));
  return sorted_lines(std::move(lines));
}

std::uint64_t cluster_config::hash() const {
  return fnv1a64(canonical());
}

cluster_config parse_cluster_config(const ini_document& doc) {
  cluster_file f;
  f.cfg.path = doc.path;
  apply_document(doc, f, cluster_options());
  try {
    f.cfg.nodes = zip_nodes(f);
    f.cfg.validate();
  } catch (const error& ex) {
    throw error(locate(doc, ex.what()));
  }
  return std::move(f.cfg);
}

cluster_config load_cluster_config(const std::string& path) {
  return parse_cluster_config(parse_ini_file(path));
}

bool node_config::binds_beyond_loopback() const {
  return !(bind == "localhost" || bind.rfind("127.", 0) == 0 || bind == "::1" || bind == "[::1]");
}

node_config load_node_config(const std::string& path) {
  // The node file's directory resolves a relative cluster_file.
  const ini_document doc = parse_ini_file(path);
  node_file f;
  f.cfg.path = doc.path;
  apply_document(doc, f, node_options());
  node_config& c = f.cfg;
  c.cluster_file = resolve_relative(doc.path, c.cluster_file);
  try {
    c.cluster = load_cluster_config(c.cluster_file);
  } catch (const error& ex) {
    throw error(origin_of(doc, "node.cluster_file") + ": node.cluster_file: " + ex.what());
  }
  const node_address* self = c.cluster.find_node(c.id);
  if (self == nullptr)
    throw error(origin_of(doc, "node.id") + ": node.id: \"" + c.id + "\" is not in nodes.ids of "
                + c.cluster_file + " (" + join_ids(c.cluster.nodes) + ")");
  check_override(doc, "node.port", f.port, self->port, "nodes.ports", c);
  check_override(doc, "node.metrics_port", f.metrics_port, self->metrics_port,
                 "nodes.metrics_ports", c);
  c.port = self->port;
  c.metrics_port = self->metrics_port;
  // This node's TLS files: the node file's, else the cluster file's; a
  // relative path starts at the directory of the file that gave it.
  tls_config& t = c.cluster.tls;
  const auto pick = [&](std::string& into, const std::string& own) {
    if (!own.empty())
      into = resolve_relative(doc.path, own);
    else if (!into.empty())
      into = resolve_relative(c.cluster_file, into);
  };
  pick(t.certificate, f.tls_certificate);
  pick(t.key, f.tls_key);
  pick(t.ca_file, f.tls_ca_file);
  check_tls_files(t, path);
  if (c.binds_beyond_loopback() && !t.enabled)
    throw error(origin_of(doc, "node.bind") + ": node.bind = \"" + c.bind
                + "\" listens beyond loopback, which requires mutual TLS: set tls.enabled = true "
                  "and tls.certificate, tls.key, tls.ca_file in "
                + c.cluster_file
                + " (or node.tls_* in this node file; scripts/make-certs.sh makes a test CA and "
                  "certificates), or bind to 127.0.0.1");
  return std::move(f.cfg);
}

std::string describe_cluster_keys() {
  return "cluster file:\n" + describe(cluster_options(), cluster_file{}) + "node file:\n"
         + describe(node_options(), node_file{});
}

} // namespace nettorrent
