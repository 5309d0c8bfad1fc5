// The two collective steps of a gradient relay, as plain state machines over
// one batch (no actors, so they are tested on their own):
//   column_gather  forward: swarm k's P slices each send their column block
//                  H[:, c0:c1) (B x n_i); assembled into H (B x width).
//   ordered_sum    backward: swarm k+1's P slices each send a partial input
//                  gradient dX_i = dZ_i W_i^T (B x fan_in); summed as
//                  dX_0 + dX_1 + ... in slice-index order, whatever the
//                  arrival order, so the result does not depend on scheduling.
// Both refuse a part that does not fit with a status (never a throw): the
// relay turns that into a dropped message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_set>
#include <vector>

#include "nettorrent/dense.hpp"
#include "nettorrent/tensor.hpp"

namespace nettorrent {

/// What became of one part offered to a column_gather or an ordered_sum.
enum class part_status : std::uint8_t {
  accepted,     ///< stored; more parts are due
  complete,     ///< stored, and every part is here: take() the result
  duplicate,    ///< this slice's part arrived already
  out_of_range, ///< there is no such slice
  empty,        ///< no matrix at all
  wrong_width,  ///< columns differ from the slice's range (gather) or from fan_in (sum)
  wrong_rows,   ///< rows differ from the first block's (gather) or from the batch's (sum)
};

const char* to_string(part_status s) noexcept;

/// Column ranges of the P slices of a swarm (split_columns), shared by every
/// gather of a relay so that opening a gather copies no vector.
using column_layout = std::shared_ptr<const std::vector<column_range>>;

/// A layout from `cols`: contiguous ranges starting at column 0.
column_layout make_column_layout(std::vector<column_range> cols);

/// Assembles one batch's B x width matrix from the column blocks of P slices
/// (width = the last range's end). With P = 1 the single block is passed
/// through as it is: the result shares its buffer, nothing is copied. With
/// P > 1 one B x width buffer is allocated, at the first block.
class column_gather {
public:
  explicit column_gather(column_layout cols);

  /// Offers slice `slice`'s block (B x cols[slice].size()). The first block
  /// fixes B; later blocks must have the same number of rows.
  part_status add(std::uint32_t slice, const shared_matrix& block);

  /// True if slice `slice`'s block arrived (false for an unknown slice).
  bool has(std::uint32_t slice) const noexcept;
  std::size_t arrived() const noexcept { return count_; }
  std::size_t slices() const noexcept { return cols_->size(); }
  bool complete() const noexcept { return count_ == cols_->size(); }
  /// Rows of the first block (0 before any arrived).
  Eigen::Index rows() const noexcept { return rows_; }
  std::size_t width() const noexcept { return cols_->back().end; }

  /// The assembled matrix (B x width), or an empty handle unless complete().
  /// Resets the gather: it can then collect another batch.
  shared_matrix take();

private:
  column_layout cols_;
  std::vector<bool> got_;
  std::size_t count_ = 0;
  Eigen::Index rows_ = 0;
  matrix buf_;           ///< P > 1: filled block by block
  shared_matrix single_; ///< P = 1: the block itself
};

/// Sums P partial input gradients (B x fan_in each) of one batch in slice
/// order: ((dX_0 + dX_1) + dX_2) + ..., element by element, whatever order
/// they arrive in. Parts are moved in, and the sum is built in part 0's
/// buffer: nothing is allocated beyond the list of P parts.
class ordered_sum {
public:
  /// Expects `parts` parts of `rows` x `cols` (all >= 1).
  ordered_sum(std::size_t parts, Eigen::Index rows, Eigen::Index cols);

  /// Offers slice `slice`'s part; moved from only if it is taken.
  part_status add(std::uint32_t slice, matrix&& part);

  /// True if slice `slice`'s part arrived (false for an unknown slice).
  bool has(std::uint32_t slice) const noexcept;
  std::size_t arrived() const noexcept { return count_; }
  std::size_t parts() const noexcept { return parts_.size(); }
  bool complete() const noexcept { return count_ == parts_.size(); }
  Eigen::Index rows() const noexcept { return rows_; }
  Eigen::Index cols() const noexcept { return cols_; }

  /// parts[0] + parts[1] + ... + parts[P-1] (B x fan_in), or an empty matrix
  /// unless complete(). Resets the sum: it can then collect another batch.
  matrix take();

private:
  std::vector<matrix> parts_; ///< [slice]; empty until it arrived
  std::size_t count_ = 0;
  Eigen::Index rows_;
  Eigen::Index cols_;
};

/// The ids of the last `capacity` batches whose gather completed: a late or
/// repeated block for one of them is refused instead of opening a gather that
/// would never complete. Sized once: no rehash in steady state.
class finished_batches {
public:
  explicit finished_batches(std::size_t capacity = 4096);

  /// Remembers `batch`, forgetting the oldest id beyond capacity.
  void insert(std::uint64_t batch);
  bool contains(std::uint64_t batch) const { return ids_.count(batch) != 0; }
  std::size_t size() const noexcept { return order_.size(); }

private:
  std::size_t capacity_;
  std::unordered_set<std::uint64_t> ids_;
  std::deque<std::uint64_t> order_;
};

} // namespace nettorrent
