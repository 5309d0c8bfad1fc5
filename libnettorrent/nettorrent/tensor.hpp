// Dense float32 tensors used throughout NetTorrent, plus CPU set-up for speed.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>

#include <Eigen/Core>

namespace nettorrent {

/// A batch-major matrix: one sample per row (B x features). Row-major so a
/// batch of samples and a slice's per-sample outputs are contiguous.
using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A row vector, used for biases (1 x n).
using row_vector = Eigen::Matrix<float, 1, Eigen::Dynamic>;

/// An immutable matrix shared by reference count: broadcast to several
/// actors and kept in a stash without copying. Never mutated once shared.
/// (Its CAF inspector is in actors/messages.hpp.)
struct shared_matrix {
  std::shared_ptr<const matrix> ptr;

  shared_matrix() = default;
  explicit shared_matrix(matrix&& m) : ptr(std::make_shared<const matrix>(std::move(m))) {}

  const matrix& get() const { return *ptr; }
  explicit operator bool() const noexcept { return ptr != nullptr; }
};

/// True if every element is finite. One vectorised pass: x * 0 is 0 for a
/// finite x and NaN for NaN or +-Inf, so the sum is 0 exactly when all are
/// finite. (Eigen's allFinite() is several times slower.)
template <class Derived>
bool all_finite(const Eigen::DenseBase<Derived>& m) {
  return (m.derived().array() * 0.0f).sum() == 0.0f;
}

/// Turns on flush-to-zero and denormals-are-zero for the calling thread and
/// limits Eigen to one thread. Call once in every thread that does math:
/// Adam's tiny second moments otherwise produce denormals that make the
/// trainer ~2.5x slower.
void prepare_math_thread();

/// True when FTZ and DAZ are set for the calling thread.
bool flush_to_zero_enabled();

} // namespace nettorrent
