// The embedded run: every actor in one process, one actor system.
#pragma once

#include <iosfwd>

#include "actors.hpp"
#include "nettorrent/config.hpp"

namespace nettorrent {

/// Loads the data, starts an actor system configured from cfg.system, spawns
/// and runs the pipeline, prints progress and a summary to `out`, and returns
/// the coordinator's report (report.ok = false with report.error on failure).
run_report run_embedded(const run_config& cfg, std::ostream& out, bool verbose = true);

/// Prints the end-of-run summary of `r`.
void print_summary(const run_report& r, std::ostream& out);

} // namespace nettorrent
