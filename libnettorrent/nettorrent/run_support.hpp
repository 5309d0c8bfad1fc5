// Pieces every kind of training run shares: loading the configured data,
// the learning-curve CSV, progress lines, atomic file writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"

namespace nettorrent {

/// Reads the configured data set and makes the validation split.
data_splits load_run_data(const run_config& cfg);

/// Throws naming topology.replicas if a data shard of the configured
/// replicas would hold less than one training batch.
void check_shard_sizes(const run_config& cfg, std::size_t train_size);

/// One point of a learning curve.
struct curve_point {
  std::size_t epoch = 0;     ///< 1-based epoch in progress
  std::uint64_t samples = 0; ///< training samples so far
  double seconds = 0;        ///< wall clock since training started
  double train_loss = 0;     ///< mean training loss since the last point
  double validation_loss = 0;
  double validation_accuracy = 0;
};

/// Writes the curve as CSV (header + one row per point) atomically.
void write_curve_csv(const std::string& path, const std::vector<curve_point>& curve);

/// Writes `content` to `path` atomically: a temp file in the same directory,
/// fsync, rename, fsync of the directory. Creates missing parent
/// directories. Throws on failure and removes the temp file.
///
/// Test hook: with the environment variable
/// NETTORRENT_TEST_CRASH_BEFORE_RENAME=1 the process exits at once with
/// status 3 (`_exit`: no destructors, no flushing) after the temp file is
/// written and fsynced and before the rename, as a process killed there
/// would; the temp file stays behind, `path` is untouched. Tests only.
void write_file_atomically(const std::string& path,
                           const std::function<void(std::ostream&)>& writer);

/// Checks, before a run starts, that its output directory exists or can be
/// created and is writable, so a bad training.output_dir fails at once rather
/// than after training. Creates nothing; throws naming the directory.
void check_output_dir(const std::string& dir);

/// "1m23s" style duration.
std::string format_duration(double seconds);

/// `v` printed with a printf `format` of one double ("%.4f", "%g").
std::string format_value(const char* format, double v);

} // namespace nettorrent
