// A whole multilayer perceptron as a list of one-slice layers, and the
// forward/evaluation code shared by the centralised trainer, `evaluate` and
// the coordinator's final test pass.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/dense.hpp"

namespace nettorrent {

/// Geometry of every layer of `m` as a single full-width slice. Hidden
/// layers use m.hidden, the last layer identity.
std::vector<slice_geometry> model_geometry(const model_config& m);

/// Geometry of slice `s` of `parts` of layer `layer`.
slice_geometry slice_of(const model_config& m, std::size_t layer, std::size_t parts, std::size_t s);

/// Result of scoring a model on a set of samples.
struct evaluation {
  double loss = 0;     ///< mean cross-entropy
  double accuracy = 0; ///< fraction correct
  std::size_t samples = 0;
  std::size_t classes = 0;
  std::vector<std::size_t> confusion; ///< classes x classes, row = true label
};

/// Scores `params` (one entry per layer, activations from `geometry`) on the
/// samples `idx` of `set` (all samples when `idx` is null), in batches of
/// `batch` samples.
evaluation evaluate_model(const std::vector<slice_geometry>& geometry,
                          const std::vector<dense_params>& params, const image_set& set,
                          const std::vector<std::uint32_t>* idx, std::size_t batch = 1000);

} // namespace nettorrent
