// A dense layer computed for a contiguous column range [c0, c1) of its
// neurons (model parallelism). A full layer is the one-slice case, and the
// outputs (and dW, db) of several slices concatenated by columns are the full
// layer's, up to float rounding: Eigen picks its product kernel by matrix
// size, so the last bits can differ between a slice and the full layer. The
// full input gradient is the sum of the slices' partial input gradients.
//
// Shapes (B = batch, in = fan-in, n = c1 - c0 = neurons in this slice):
//   X  : B x in      input activations (the previous layer's H)
//   W  : in x n      columns [c0, c1) of the layer's weight matrix
//   b  : 1 x n
//   H  : B x n       act(X W + b)
//   dH : B x n       dLoss/dH, overwritten with dZ
//   dW : in x n      X^T dZ
//   db : 1 x n       column sums of dZ
//   dX : B x in      dZ W^T  (partial: this slice's share of dLoss/dX)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "nettorrent/activation.hpp"
#include "nettorrent/tensor.hpp"

namespace nettorrent {

/// A half-open range of neuron (column) indices.
struct column_range {
  std::size_t begin = 0;
  std::size_t end = 0;
  std::size_t size() const noexcept { return end - begin; }
  friend bool operator==(column_range a, column_range b) noexcept {
    return a.begin == b.begin && a.end == b.end;
  }
};

/// Splits `n` neurons into `parts` contiguous ranges whose sizes differ by at
/// most one (the first `n % parts` ranges get the extra neuron).
/// Requires 1 <= parts <= n.
std::vector<column_range> split_columns(std::size_t n, std::size_t parts);

/// Where a slice sits in the model.
struct slice_geometry {
  std::size_t layer = 0;   ///< 0-based layer index
  std::size_t fan_in = 0;  ///< rows of the full weight matrix
  std::size_t fan_out = 0; ///< columns of the full weight matrix
  column_range cols;       ///< the slice's columns
  activation act = activation::relu;
};

/// Parameters of one slice.
struct dense_params {
  matrix w;     ///< in x n
  row_vector b; ///< 1 x n
};

/// Gradients of one slice.
struct dense_grads {
  matrix dw;     ///< in x n
  row_vector db; ///< 1 x n
};

/// Initialises a slice. Each weight is a pure function of
/// (seed, layer, row, global column): He normal, std sqrt(2 / fan_in), for
/// ReLU layers; Glorot uniform, limit sqrt(6 / (fan_in + fan_out)), otherwise.
/// Biases start at zero.
dense_params init_dense(std::uint64_t seed, const slice_geometry& g);

/// True if `a` and `b` have the same weight and bias shapes.
inline bool same_shape(const dense_params& a, const dense_params& b) {
  return a.w.rows() == b.w.rows() && a.w.cols() == b.w.cols() && a.b.size() == b.b.size();
}

/// Sizes `grads` for the slice (no-op when already sized).
void resize_grads(const dense_params& p, dense_grads& grads);

/// Forward pass. H = act(X W + b). `h` is resized only when its shape differs.
void dense_forward(const matrix& x, const dense_params& p, activation act, matrix& h);

/// Backward pass. On entry `dh` holds dLoss/dH; on exit it holds dZ.
/// Writes dW and db into `grads`. When `dx` is not null it receives this
/// slice's partial input gradient dZ W^T computed from the current (pre-update)
/// weights.
void dense_backward(const matrix& x, const matrix& h, activation act, const dense_params& p,
                    matrix& dh, dense_grads& grads, matrix* dx);

} // namespace nettorrent
