// Operations on the state of neuron slices (parameters + optimizer state),
// used by sync rounds and checkpoints: pick the best replica, average
// replicas, cut a layer into slices and glue slices back into a layer.
// Plain C++, so the exchange logic is testable without actors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/dense.hpp"

namespace nettorrent {

/// A replica's score in a sync round (or a part of the validation subset's).
struct replica_score {
  double loss = 0;           ///< mean validation loss
  double accuracy = 0;       ///< validation accuracy
  double loss_sum = 0;       ///< summed validation loss
  std::uint64_t correct = 0; ///< samples classified correctly
  std::uint64_t samples = 0; ///< samples scored
};

/// The replica with the lowest loss; ties go to the lowest replica id.
std::size_t pick_best(const std::vector<replica_score>& scores);

/// The score of one model from the scores of disjoint parts of the
/// validation subset (in part order): summed losses and counts over all
/// samples. Throws nettorrent::error when no sample was scored.
replica_score combine_parts(const std::vector<replica_score>& parts);

/// Element-wise mean of weights and optimizer moments, summed in the order
/// given (callers pass replica-id order). Step counters must be equal and
/// stay as they are. All states must have the same shapes.
layer_state average_states(const std::vector<const layer_state*>& states);

/// Columns `cols` of a full layer's state.
layer_state cut_slice(const layer_state& full, column_range cols);

/// Concatenates slices (in column order) into the full layer's state.
layer_state glue_slices(const std::vector<layer_state>& slices);

/// Bytes of parameters and optimizer state in `s` (what a sync sends).
std::size_t state_bytes(const layer_state& s);

/// Bytes of the weights and bias in `p`.
std::size_t params_bytes(const dense_params& p);

} // namespace nettorrent
