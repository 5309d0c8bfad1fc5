// A cluster node: one process, one actor system, the actors the placement
// plan gives this node, connected to the others through CAF's middleman.
#pragma once

#include <iosfwd>

#include "nettorrent/cluster.hpp"

namespace nettorrent {

/// Runs node `nc` until the run ends. The coordinator's node publishes the
/// coordinator on its port and prints the run's summary; every other node
/// connects to it (with retries until system.registration_timeout), is
/// admitted only if its cluster description hashes the same, spawns and
/// registers its actors, and waits for the coordinator to finish.
/// Returns the process exit status: 0 on success, 1 on any failure.
int run_node(const node_config& nc, std::ostream& out, std::ostream& err);

} // namespace nettorrent
