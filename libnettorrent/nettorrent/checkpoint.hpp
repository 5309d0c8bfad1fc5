// Whole-model checkpoints: one Cereal portable-binary file, independent of
// how the model was sliced or distributed. Written atomically (temp file,
// fsync, rename); loading refuses truncated, foreign, wrong-version,
// corrupted and wrong-shape files with an error naming the file and reason.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "nettorrent/activation.hpp"
#include "nettorrent/dense.hpp"
#include "nettorrent/optimizer.hpp"

namespace nettorrent {

/// "NTCKPT\0\1" read as a little-endian 64-bit number.
inline constexpr std::uint64_t checkpoint_magic = 0x0100'5450'4b43'544eULL;
inline constexpr std::uint32_t checkpoint_version = 1;

struct checkpoint_header {
  std::uint32_t version = checkpoint_version;
  std::vector<std::uint64_t> layers;   ///< widths, input first
  std::vector<activation> activations; ///< one per layer
  optimizer_kind optimizer = optimizer_kind::adam;
  std::uint64_t config_hash = 0; ///< run_config::hash()
  // All of these describe the moment the saved weights were taken (with
  // keep_best: the best validation pass, not the end of the run).
  std::uint64_t step = 0;    ///< batches trained (per replica for actor runs: samples / batch)
  std::uint64_t samples = 0; ///< training samples processed
  std::uint64_t epoch = 0;   ///< 1-based epoch in progress
  /// Data-order generator of the centralised trainer; zero for actor runs,
  /// whose shards each have their own generator.
  std::array<std::uint64_t, 4> rng_state{};
};

/// One layer: parameters and the optimizer state of W and b.
struct layer_state {
  dense_params params;
  optimizer_state w_state;
  optimizer_state b_state;
};

struct model_checkpoint {
  checkpoint_header header;
  std::vector<layer_state> layers;
};

/// Writes `ck` to `path` atomically. Throws nettorrent::error on failure and
/// leaves no partial file behind.
void save_checkpoint(const std::string& path, const model_checkpoint& ck);

/// Reads `path`. Throws nettorrent::error naming the file and the reason
/// (missing, truncated, not a checkpoint, unsupported version, corrupted,
/// inconsistent shapes).
model_checkpoint load_checkpoint(const std::string& path);

} // namespace nettorrent
