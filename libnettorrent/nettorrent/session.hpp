// What every process of a training run does around its training, written
// once for `nettorrent train`, `nettorrent node` and `nettorrent centralised`:
// check the output directory, load and check the data, print the banner,
// and after the run write the outputs (test evaluation, checkpoint, learning
// curve, plot) and the summary. Plain C++: the actor side (actors/process_session.cpp)
// adds the actor system and the metrics exporter around the same steps.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/run_result.hpp"

namespace nettorrent {

/// Loads the configured data and checks that every replica's shard holds a
/// batch. Throws nettorrent::error naming what is wrong.
std::shared_ptr<const data_splits> load_checked_data(const run_config& cfg);

/// The lines that open a run: data sizes, model, and (actor runs) topology.
void print_banner(const run_config& cfg, const data_splits& data, bool actor_run,
                  std::ostream& out);

/// The test samples a run is scored on: all of them, or the first
/// data.test_limit.
std::vector<std::uint32_t> test_selection(const run_config& cfg, const image_set& test);

/// The checkpoint of a finished run: its model and the moment it was taken.
model_checkpoint make_checkpoint(const run_config& cfg, const run_result& r);

/// After a successful run: scores r.layers on the test split, writes the
/// checkpoint and the learning curve into training.output_dir (atomically)
/// and plots the curve. Sets r.test, r.checkpoint_path, r.curve_path.
void write_outputs(const run_config& cfg, const data_splits& data, run_result& r,
                   std::ostream& out);

/// The end-of-run summary.
void print_summary(const run_result& r, std::ostream& out);

} // namespace nettorrent
