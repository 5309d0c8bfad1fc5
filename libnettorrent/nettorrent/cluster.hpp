// The cluster description and the node file: what several `nettorrent node`
// processes share, and what each one says about itself.
//
// A cluster file is a CAF-style INI file with every section of a run config
// ([model], [data], [training], [optimizer], [topology], [system]: the same
// keys, readers and validation as config/local.ini) plus:
//
//   [placement]
//   strategy = "by_swarm"        ; required: "round_robin", "by_swarm", "explicit"
//   rebalance_on_rejoin = true   ; a rejoined node gets its actors back (default true)
//   ; explicit only (all five required then, forbidden otherwise):
//   coordinator = "n0"                         ; one node id
//   leaders = ["n0", "n1", "n2"]               ; one per layer
//   workers = ["n0", "n1"]                     ; one per replica
//   relays = ["n0", ["n0", "n1", "n2", "n2"]]  ; per replica: one id for all of
//                                              ;   its L+1 relays, or L+1 ids
//   slices = [["n0", "n1", "n2"], [["n0", "n1"], "n1", "n2"]]
//                                              ; per replica, per layer: one id
//                                              ;   for all slices of that layer,
//                                              ;   or one id per slice
//   [nodes]                      ; all four required, one entry per node
//   ids = ["n0", "n1", "n2"]
//   hosts = ["127.0.0.1", "127.0.0.1", "127.0.0.1"]
//   ports = [4200, 4201, 4202]
//   metrics_ports = [9200, 9201, 9202]
//
// A node file holds one section:
//
//   [node]
//   cluster_file = "cluster.ini" ; required; relative to the node file's dir
//   id = "n1"                    ; required; must be in nodes.ids
//   bind = "127.0.0.1"           ; listen address (default 127.0.0.1)
//   port = 4201                  ; optional; must equal the node list's entry
//   metrics_port = 9201          ; optional; must equal the node list's entry
//
// Placement lists count layers, replicas, relay boundaries and slices from 0,
// as the actors do (run_config's own messages count layers from 1).
//
// Every error is a nettorrent::error naming the file, the key and, where the
// key was written in the file, the line: "cluster.ini:31: nodes.ports: ...".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nettorrent/config.hpp"
#include "nettorrent/hash.hpp" // hash_hex, for callers printing hash()

namespace nettorrent {

struct ini_document;

/// One entry of [nodes]: where a node's peers reach it.
struct node_address {
  std::string id;
  std::string host;
  std::uint16_t port = 0;         ///< CAF middleman (BASP) port
  std::uint16_t metrics_port = 0; ///< Prometheus exposer port
  std::size_t bandwidth_mbit = 0; ///< nodes.bandwidth_mbit, each way (0: not given)
  std::size_t cores = 0;          ///< nodes.cores (0: not given)
  std::string endpoint() const { return host + ":" + std::to_string(port); }
  friend bool operator==(const node_address& a, const node_address& b) {
    return a.id == b.id && a.host == b.host && a.port == b.port && a.metrics_port == b.metrics_port
           && a.bandwidth_mbit == b.bandwidth_mbit && a.cores == b.cores;
  }
};

enum class placement_strategy {
  round_robin, ///< every actor dealt over the nodes in canonical actor order
  by_swarm,    ///< swarm l (leader + slices) on node l mod N, the seed's picture
  listed,      ///< "explicit": from the [placement] lists
  /// Replica r's block (worker, relays, slices) on node r mod N; the
  /// coordinator and the leaders on the first node. Only sync rounds cross
  /// hosts.
  by_replica,
  /// "auto": the fastest of round_robin, by_swarm, by_replica and by_group
  /// by the cost model (cost_model.hpp).
  automatic,
  /// The hybrid: the nodes split into R groups (consecutive in canonical
  /// order, sizes differing by at most one); replica r's swarms dealt over
  /// group r as by_swarm deals them over all nodes. With N <= R the same as
  /// by_replica, with R = 1 the same as by_swarm.
  by_group,
};

std::string_view to_string(placement_strategy s) noexcept;
/// "round_robin", "by_swarm", "by_replica", "by_group", "auto" or
/// "explicit"; anything else throws.
placement_strategy parse_placement_strategy(std::string_view name);

/// One entry of an explicit placement list that covers a group of actors
/// (a replica's relays, or one layer's slices in one replica): a single node
/// id for the whole group (`"n1"`), or a list with one id per actor.
struct node_group {
  std::vector<std::string> ids;
  bool each = false; ///< written as a list: ids[i] hosts the group's actor i
  /// The node of actor `i` of the group.
  const std::string& of(std::size_t i) const { return each ? ids.at(i) : ids.at(0); }
};

/// The [placement] section. The lists are read by `explicit` only (required
/// then, an error otherwise).
struct placement_config {
  placement_strategy strategy = placement_strategy::by_swarm;
  /// After a lost node rejoins, move the actors re-placed away from it back
  /// to where the plan of the full live set puts them (true), or leave them
  /// where recovery put them (false).
  bool rebalance_on_rejoin = true;
  std::string coordinator;                     ///< node id
  std::vector<std::string> leaders;            ///< [layer]
  std::vector<std::string> workers;            ///< [replica]
  std::vector<node_group> relays;              ///< [replica]: L+1 relays (k = 0..L)
  std::vector<std::vector<node_group>> slices; ///< [replica][layer]: P_l slices
};

/// A validated cluster description: the same on every node.
/// Mutual TLS between nodes ([tls]; paths may be overridden per node file).
struct tls_config {
  bool enabled = false;    ///< every port and connection through caf_openssl
  std::string certificate; ///< this node's certificate (PEM)
  std::string key;         ///< its private key (PEM)
  std::string ca_file;     ///< the CA every peer's certificate must chain to
  std::string passphrase;  ///< of the key, if it has one
};

struct cluster_config {
  std::string path; ///< the file it was read from (for messages; not hashed)
  run_config run;
  placement_config placement;
  tls_config tls; ///< tls.enabled is hashed, the paths are not (they differ per node)
  /// The [nodes] list in canonical order: sorted by id, whatever order the
  /// file gave.
  std::vector<node_address> nodes;

  /// The node with this id, or nullptr.
  const node_address* find_node(std::string_view id) const;

  /// Checks everything that is not a single value's range: run.validate(),
  /// the node list (ids unique and well-formed, no host:port used twice) and
  /// the placement (explicit lists present exactly when strategy is
  /// "explicit", of the right lengths, naming known nodes). Throws
  /// nettorrent::error whose message starts with the key at fault.
  void validate() const;

  /// Everything nodes must agree on, as text: the lines of run.canonical(),
  /// the placement strategy and rebalance_on_rejoin, the resolved placement
  /// of every actor and one line per node, all lines sorted byte-wise together. Independent of the
  /// order of sections, keys and list entries in the file.
  std::string canonical() const;

  /// FNV-1a 64 of canonical(): a node refuses a peer whose hash differs.
  std::uint64_t hash() const;
};

/// Builds and validates a cluster description from a parsed INI document.
/// Throws nettorrent::error naming doc.path, the key and the line.
cluster_config parse_cluster_config(const ini_document& doc);

/// Reads, parses and validates a cluster file.
cluster_config load_cluster_config(const std::string& path);

/// A validated node file with its cluster description.
struct node_config {
  std::string path;         ///< the node file
  std::string cluster_file; ///< resolved path of the cluster file
  std::string id;
  std::string bind = "127.0.0.1";
  std::uint16_t port = 0;         ///< from the node list (an override must agree)
  std::uint16_t metrics_port = 0; ///< from the node list (an override must agree)
  cluster_config cluster;

  /// True unless `bind` is a loopback address (127.0.0.0/8, ::1, localhost):
  /// such a node must run with TLS (load_node_config refuses it otherwise).
  bool binds_beyond_loopback() const;
};

/// Reads a node file and the cluster file it names; validates both.
node_config load_node_config(const std::string& path);

/// One line per key of cluster files and node files (like
/// describe_config_keys()).
std::string describe_cluster_keys();

} // namespace nettorrent
