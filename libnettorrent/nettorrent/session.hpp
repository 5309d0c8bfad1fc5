// What every process of a training run does around its training, written
// once for `nettorrent train`, `nettorrent node` and `nettorrent centralised`:
// check the output directory, load and check the data, load and check the
// run checkpoint a resumed run continues, print the banner, write run
// checkpoints on the way, and after the run write the outputs (test
// evaluation, checkpoint, learning curve, plot) and the summary. Plain C++: the actor side
// (actors/process_session.cpp) adds the actor system and the metrics exporter around the same
// steps.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/run_checkpoint.hpp"
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

/// The header every checkpoint of `cfg`'s run carries: widths, activations,
/// optimizer and config hash (the moment fields left zero).
checkpoint_header checkpoint_header_of(const run_config& cfg);

/// The checkpoint of a finished run: its model and the moment it was taken.
model_checkpoint make_checkpoint(const run_config& cfg, const run_result& r);

/// `--resume=PATH`: resolves PATH (a run checkpoint, or a directory's newest
/// run-*.ckpt; the result's `path` says which), loads it and checks that
/// `cfg` may continue it (check_resume_compatible). Throws
/// nettorrent::error naming the file.
run_checkpoint load_resume_checkpoint(const run_config& cfg, const std::string& path);

/// "resuming PATH: round N, S samples, epoch E (of a run started ...)".
void print_resume(const std::string& path, const run_state& s, std::ostream& out);

/// Writes `state` as a run checkpoint into training.output_dir and keeps the
/// newest training.checkpoint_keep there (write_run_checkpoint). The model
/// section's moment is the state's (replica 0's step, its data-order
/// generator if the run has one stream). Returns the file's path.
std::string save_run_state(const run_config& cfg, const run_state& state);

/// After a successful run: scores r.layers on the test split, writes the
/// checkpoint and the learning curve into training.output_dir (atomically)
/// and plots the curve. Sets r.test, r.checkpoint_path, r.curve_path.
void write_outputs(const run_config& cfg, const data_splits& data, run_result& r,
                   std::ostream& out);

/// The end-of-run summary.
void print_summary(const run_result& r, std::ostream& out);

} // namespace nettorrent
