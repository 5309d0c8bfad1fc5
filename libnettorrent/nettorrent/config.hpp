// The run configuration: model, data, training and optimizer sections, read
// from a CAF-style INI file and `--section.key=value` overrides, checked key
// by key (unknown keys, wrong types and out-of-range values are errors naming
// the file, line and key) and validated as a whole.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nettorrent/activation.hpp"
#include "nettorrent/optimizer.hpp"

namespace nettorrent {

struct model_config {
  /// Layer widths, input first: {784, 256, 128, 10} is 784-256-128-10.
  std::vector<std::size_t> layers{784, 256, 128, 10};
  /// Activation of every hidden layer; the last layer is always identity
  /// (softmax cross-entropy is applied by the loss).
  activation hidden = activation::relu;
};

struct data_config {
  /// Directory with the four IDX files; empty = the dataset-fashion-mnist
  /// package's directory.
  std::string dir;
  /// Samples of the training file held out for validation.
  std::size_t validation_size = 5000;
  /// Use at most this many training samples (0 = all): for quick runs.
  std::size_t train_limit = 0;
  /// Evaluate on at most this many test samples (0 = all).
  std::size_t test_limit = 0;
};

struct training_config {
  std::size_t batch_size = 64;
  std::size_t max_epochs = 15;
  /// Stop once validation accuracy reaches this (0 = train max_epochs).
  double target_accuracy = 0;
  /// Samples between validation passes (0 = once per epoch).
  std::size_t eval_every = 0;
  std::uint64_t seed = 1;
  /// Keep the weights of the best validation pass and evaluate/save those
  /// (early-stopping style) instead of the last weights.
  bool keep_best = true;
  /// Where the checkpoint and learning curve go.
  std::string output_dir = "runs/local";
  /// Seconds between progress lines within an epoch (0 = per epoch only).
  double progress_interval = 5;
  /// Sync rounds (centralised: validation passes) between run checkpoints
  /// in output_dir; 0 = one at the end of the run only.
  std::size_t checkpoint_every = 0;
  /// Run checkpoints kept in output_dir (the newest; >= 1).
  std::size_t checkpoint_keep = 3;
};

/// How replicas exchange weights in a sync round: the best replica's state,
/// the mean of every replica's state, nothing, or an outer optimizer step on
/// the replicas' mean change (DiLoCo; see nettorrent/outer.hpp).
enum class sync_policy { best, average, none, outer };

/// How a sync round's weights travel (nettorrent/sync_codec.hpp): raw
/// binary32, or as a change from the last round's weights in bfloat16 or in
/// int8 with a scale per row. In every process, so it changes results.
enum class sync_precision : std::uint8_t { f32 = 0, bf16 = 1, int8 = 2 };

std::string_view to_string(sync_precision p) noexcept;

std::string_view to_string(sync_policy p) noexcept;
sync_policy parse_sync_policy(std::string_view name);

/// The actor pipeline: how the model is cut into swarms, slices and replicas
/// and how the asynchronous descent is paced.
struct topology_config {
  /// Data-parallel replicas (= data shards).
  std::size_t replicas = 2;
  /// Neuron slices per layer: one value for every layer, or one per layer.
  std::vector<std::size_t> slices{1};
  /// Batches a replica may have in its pipeline at once (>= 1). Staleness of
  /// an update is at most max_in_flight - 1.
  std::size_t max_in_flight = 1;
  /// Samples per replica between sync rounds.
  std::size_t sync_every = 5000;
  sync_policy policy = sync_policy::outer;
  /// Validation samples that score a sync round (0 = the whole validation
  /// split): every replica on all of them (best, none), or the synced model
  /// with one part per replica (average, outer).
  std::size_t validation_subset = 0;
  /// Score the replicas every this many sync rounds (the last round always):
  /// the other rounds only exchange. Above 1 only without a winner to pick
  /// (policy average, outer or none). The learning curve, keep_best and the
  /// target check see the scored rounds.
  std::size_t validate_every = 1;
  /// sync_policy outer: the outer step size, the outer momentum, Nesterov's
  /// form, and whether the replicas' optimizer moments are averaged too (by
  /// default every replica keeps its own).
  float outer_learning_rate = 0.7f;
  float outer_momentum = 0.9f;
  bool outer_nesterov = true;
  bool outer_average_moments = false;
  /// Sync policies average and outer: how the weights travel in a round.
  sync_precision sync_coding = sync_precision::f32;
  /// Sync policy outer: every round also reads each replica's optimizer
  /// moments, so that a replica rolled back after a lost node goes on
  /// bit-identically. false: only the rounds that a run checkpoint or the
  /// end state needs read them; a rolled-back replica restarts its
  /// optimizer from zero moments.
  bool round_moments = true;
  /// Sync policy outer with a sync precision other than f32: error
  /// feedback, each replica's slices carry what their coded changes lost
  /// into the next round's change.
  bool sync_feedback = false;
  /// Keep forward-time weights for the backward pass.
  bool weight_stashing = false;

  /// Slices of layer `l` (0-based).
  std::size_t slices_of(std::size_t l) const {
    return slices.size() == 1 ? slices[0] : slices.at(l);
  }
};

/// Settings of the process running actors.
/// How activations and gradients travel between nodes (never in-process,
/// never the weights of a sync round): raw binary32, or bfloat16 (half the
/// bytes, 8 significant bits).
enum class wire_precision : std::uint8_t { f32 = 0, bf16 = 1, int8 = 2 };

std::string_view to_string(wire_precision p) noexcept;

// Both precisions share their names and values (config.cpp names them once).
static_assert(static_cast<int>(wire_precision::bf16) == static_cast<int>(sync_precision::bf16)
                  && static_cast<int>(wire_precision::int8) == static_cast<int>(sync_precision::int8),
              "the precisions' values agree");

struct system_config {
  /// CAF scheduler threads (0 = one per core).
  std::size_t scheduler_threads = 0;
  /// Seconds the coordinator waits for every actor to register.
  double registration_timeout = 10;
  /// Cluster runs: seconds between BASP heartbeats to every connected node.
  double heartbeat_interval = 1;
  /// Cluster runs: seconds without a message after which a node is lost
  /// (a frozen peer is noticed within this time).
  double connection_timeout = 10;
  /// Seconds without any progress (no batch completed, no reply) after which
  /// the coordinator prints what every actor waits for and rolls the stuck
  /// replicas back.
  double stall_timeout = 60;
  /// Export Prometheus metrics (one Exposer per process).
  bool metrics = false;
  /// Address the exporter listens on.
  std::string metrics_bind = "127.0.0.1";
  /// Port of the embedded run's exporter (cluster nodes use nodes.metrics_ports).
  std::size_t metrics_port = 9470;
  /// Seconds the exporter stays up after the run ends (for a last scrape).
  double metrics_linger = 0;
  /// Cluster runs: precision of activations and gradients on the wire.
  /// Changes results, so it is part of the cluster hash (not of a run's).
  wire_precision wire = wire_precision::f32;
};

struct run_config {
  model_config model;
  data_config data;
  training_config training;
  optimizer_config optimizer;
  topology_config topology;
  system_config system;

  /// Checks cross-field constraints; throws nettorrent::error naming the key.
  void validate() const;

  /// Every setting that affects the training result, one
  /// `section.key=value` line each, the lines sorted byte-wise (output paths
  /// and display settings excluded). Independent of the order of keys and
  /// sections in the file and in the schema.
  std::string canonical() const;

  /// FNV-1a 64 of canonical(): stored in checkpoints.
  std::uint64_t hash() const;
};

/// A command's arguments with the configuration file and the resume path
/// taken out.
struct command_line {
  std::string config_file;       ///< the PATH of `--config-file=PATH`; empty if not given
  std::string resume;            ///< the PATH of `--resume=PATH`; empty if not given
  std::vector<std::string> rest; ///< every other argument, in order
};

/// The one reader of `--config-file=PATH` and `--resume=PATH`. Throws
/// nettorrent::error for either flag given twice, an empty path, or a flag
/// without `=PATH`.
command_line split_command_line(const std::vector<std::string>& args);

/// Parses command-line style arguments: `--config-file=PATH` (at most once)
/// and `--section.key=value` overrides, applied after the file. Anything else
/// in `args` is an error, `--resume=PATH` too (commands that resume read it
/// with split_command_line and call load_run_config_from). Every key is
/// checked against the schema.
run_config load_run_config(const std::vector<std::string>& args);

/// The same for arguments already split; ignores cl.resume (the caller
/// resumes).
run_config load_run_config_from(const command_line& cl);

/// Applies `--section.key=value` arguments on top of `cfg` (no validation:
/// call cfg.validate() afterwards).
void apply_overrides(const std::vector<std::string>& args, run_config& cfg);

/// One line per key: name, type, default and meaning (for --help and docs).
std::string describe_config_keys();

} // namespace nettorrent
