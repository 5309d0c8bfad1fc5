// Run checkpoints (checkpoint format version 2): everything a training run
// needs to continue where it stopped, bit for bit where its schedule is
// deterministic. A run checkpoint is a whole-model checkpoint (the model
// section of checkpoint.hpp, so `nettorrent evaluate` and load_checkpoint()
// read it) followed by a run-state section (layout in
// src/checkpoint_format.hpp).
//
// The data order is not stored: every data stream shuffles its index list
// in place at the start of each epoch with a generator seeded from the run
// seed (data.hpp: shard_rng), so the order of epoch e is replayed from the
// configuration by e shuffles (replay_data_order). The generator's state is
// stored and checked against the replay, so different data or a different
// seed are refused rather than silently giving another order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nettorrent/policy_state.hpp"
#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/rng.hpp"
#include "nettorrent/run_support.hpp"

namespace nettorrent {

/// Where one replica's data stream stands.
struct data_position {
  std::uint64_t epoch = 0;      ///< 1-based epoch in progress (0 = not started)
  std::uint64_t cursor = 0;     ///< next position in this epoch's sample order
  std::uint64_t samples = 0;    ///< training samples this stream has fed
  std::uint64_t next_batch = 0; ///< next batch id (centralised: batches trained)
  rng::state_type rng_state{};  ///< the data-order generator, after epoch `epoch`'s shuffle
};

/// A run between two steps: what a run checkpoint holds.
struct run_state {
  // The run's configuration, for check_resume_compatible().
  std::uint64_t config_hash = 0; ///< run_config::hash()
  std::string config_text;       ///< run_config::canonical(); hashes to config_hash
  /// Written by the actor pipeline (rounds are sync rounds), not by the
  /// centralised trainer (rounds are validation passes).
  bool actor_run = false;

  std::uint64_t round = 0;    ///< sync rounds done (centralised: validation passes done)
  std::uint64_t samples = 0;  ///< training samples over all replicas
  std::uint64_t epoch = 0;    ///< 1-based epoch in progress
  double elapsed_seconds = 0; ///< training wall clock so far, over every session

  std::vector<curve_point> curve;
  double loss_sum = 0;            ///< training loss summed since the last curve point
  std::uint64_t loss_samples = 0; ///< samples in loss_sum
  double best_validation_accuracy = 0;
  bool reached_target = false;
  double time_to_target = -1; ///< seconds; -1 if not reached

  /// keep_best: the best validation pass so far (empty = none yet), the
  /// moment it was taken and the data-order generator then (the final
  /// model.ckpt's header carries it).
  std::vector<layer_state> best_layers;
  std::uint64_t best_samples = 0;
  std::uint64_t best_epoch = 0;
  rng::state_type best_rng{};

  /// The model of every replica, [replica][layer]. One entry: every replica
  /// holds that state (the centralised trainer; actor runs right after an
  /// averaging round), so it is stored once.
  std::vector<std::vector<layer_state>> models;
  /// Per replica (positions.size() = replicas), where its data stream stands.
  std::vector<data_position> positions;
  /// A sync policy with a state (outer: the outer momentum): every layer's
  /// state (empty for the other policies). The weights theta it works from
  /// are the model's, which every replica shares after such a round.
  std::vector<policy_state> policy_states;
  /// The replica count changed inside the current epoch (an elastic
  /// resume): how its samples are dealt (data.hpp). Empty otherwise.
  epoch_deal deal;
  /// Samples trained by replicas that have retired since (they count in
  /// `samples`, but no position holds them).
  std::uint64_t retired_samples = 0;

  /// The model of `replica`, whether stored once or per replica.
  const std::vector<layer_state>& model_of(std::size_t replica) const {
    return models.size() == 1 ? models.front() : models.at(replica);
  }
};

/// A run state for `cfg` before the first step: config hash and text set,
/// `replicas` data positions at zero, no model.
run_state initial_run_state(const run_config& cfg, std::size_t replicas);

/// Writes a run checkpoint to `path` atomically (temp file, fsync, rename):
/// the model section holds `header` with state.model_of(0), the run-state
/// section the rest. Throws nettorrent::error if the state is inconsistent
/// (no model, models neither 1 nor one per position, header and state
/// hashes differ) or the write fails.
void save_run_checkpoint(const std::string& path, const checkpoint_header& header,
                         const run_state& state);

struct run_checkpoint {
  std::string path;       ///< the file it was read from
  model_checkpoint model; ///< what load_checkpoint() reads: replica 0's model
  run_state state;        ///< state.models[0] is model.layers
};

/// Reads a run checkpoint. Throws nettorrent::error naming the file and the
/// reason: everything load_checkpoint() refuses, a model checkpoint without
/// run state, and a truncated, wrong-version, corrupted or inconsistent
/// run-state section.
run_checkpoint load_run_checkpoint(const std::string& path);

/// "run-00000012.ckpt": the file name of round `round`'s run checkpoint.
std::string run_checkpoint_name(std::uint64_t round);

/// Writes `dir`/run_checkpoint_name(state.round) with save_run_checkpoint,
/// then, once it is durable, deletes older run checkpoints of `dir` so that
/// the newest `keep` remain (by round; the one just written always stays).
/// A crash at any point leaves the previous ones intact. Returns the path.
std::string write_run_checkpoint(const std::string& dir, std::size_t keep,
                                 const checkpoint_header& header, const run_state& state);

/// The run checkpoint `path` names: a file as it is; a directory: its run
/// checkpoint of the highest round. Throws naming `path` if it does not
/// exist or the directory holds no run-*.ckpt.
std::string resolve_resume_path(const std::string& path);

/// True for the keys a resumed run may set differently from the saved run:
/// training.max_epochs, training.target_accuracy, training.output_dir,
/// topology.slices, topology.replicas (an actor run; membership.hpp), and
/// every system., placement., nodes. and node. key.
bool may_change_on_resume(std::string_view key);

/// Throws nettorrent::error naming `checkpoint` and every key whose value in
/// `now` differs from the saved run's (both values), except the keys
/// may_change_on_resume() allows.
void check_resume_compatible(const run_config& now, const run_state& saved,
                             const std::string& checkpoint);

/// A data stream's order and generator at a saved position.
struct data_order {
  std::vector<std::uint32_t> order; ///< the sample order of epoch pos.epoch
  rng gen{0};                       ///< continues with epoch pos.epoch + 1's shuffle
};

/// Replays the stream that shuffles `indices` in place with `gen` at the
/// start of every epoch (pass the stream's initial generator, e.g.
/// shard_rng(seed, shard)) up to `pos.epoch`. Throws nettorrent::error if
/// the generator does not reach pos.rng_state (other data or seed than the run's).
data_order replay_data_order(std::vector<std::uint32_t> indices, rng gen, const data_position& pos);

} // namespace nettorrent
