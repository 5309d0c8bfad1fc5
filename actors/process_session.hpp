// The process session of `nettorrent train` and `nettorrent node`: one path
// for both. Every process runs one actor system with one node actor; the
// embedded run is a one-node cluster ("local") that goes through exactly
// the steps of a cluster's coordinator node. CAF-free header: apps/ include
// no CAF header.
#pragma once

#include <iosfwd>
#include <string>

#include "nettorrent/cluster.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/run_result.hpp"

namespace nettorrent {

/// `nettorrent train`: the whole run in this process. Checks the output
/// directory, loads the data, starts the metrics exporter and the actor
/// system, runs, writes the outputs, prints the summary (when `verbose`) and
/// lingers for a last scrape. Returns the result (ok = false with error).
/// With `resume` (a run checkpoint or a directory holding them), the run
/// continues from it (refused, naming the keys, if the configuration
/// differs in what must not change).
run_result run_embedded(const run_config& cfg, std::ostream& out, bool verbose = true,
                        const std::string& resume = "");

/// `nettorrent node`: one node of a cluster. The coordinator's node does
/// what run_embedded does, with its coordinator published on its port; every
/// other node connects to it (retrying until system.registration_timeout),
/// joins through its node actor (refused if its cluster description hashes
/// differently), hosts what the coordinator asks it to spawn, and waits for
/// the run to end. Returns the process exit status (0 ok, 1 failure).
/// `resume` is for the coordinator's node only (the others are told what to
/// host by the coordinator).
int run_node(const node_config& nc, std::ostream& out, std::ostream& err,
             const std::string& resume = "");

} // namespace nettorrent
