// Softmax cross-entropy on logits, with a numerically stable log-sum-exp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nettorrent/tensor.hpp"

namespace nettorrent {

struct loss_result {
  double loss_sum = 0;     ///< sum over the batch of -log softmax(z)_y
  std::size_t correct = 0; ///< samples whose arg-max logit equals the label
};

/// Loss and accuracy of `logits` (B x K) against `labels` (B entries, each in
/// [0, K)). Ties in the arg-max go to the lowest class index.
loss_result softmax_xent(const matrix& logits, const std::uint8_t* labels);

/// Same, and writes dLoss/dlogits of the *mean* loss, (P - Y) / B, into
/// `grad` (B x K; resized only if its shape differs).
loss_result softmax_xent_backward(const matrix& logits, const std::uint8_t* labels, matrix& grad);

/// Arg-max per row (ties to the lowest index). Used for confusion matrices.
std::size_t argmax_row(const matrix& m, std::size_t row);

} // namespace nettorrent
