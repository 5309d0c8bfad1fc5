#include "nettorrent/gather.hpp"

#include <utility>

namespace nettorrent {

const char* to_string(part_status s) noexcept {
  switch (s) {
  case part_status::accepted:
    return "accepted";
  case part_status::complete:
    return "complete";
  case part_status::duplicate:
    return "duplicate";
  case part_status::out_of_range:
    return "out of range";
  case part_status::empty:
    return "empty";
  case part_status::wrong_width:
    return "wrong width";
  case part_status::wrong_rows:
    return "wrong rows";
  }
  return "?";
}

column_layout make_column_layout(std::vector<column_range> cols) {
  return std::make_shared<const std::vector<column_range>>(std::move(cols));
}

// --- column_gather ----------------------------------------------------------

column_gather::column_gather(column_layout cols)
    : cols_(std::move(cols)), got_(cols_->size(), false) {}

bool column_gather::has(std::uint32_t slice) const noexcept {
  return slice < got_.size() && got_[slice];
}

part_status column_gather::add(std::uint32_t slice, const shared_matrix& block) {
  if (slice >= got_.size())
    return part_status::out_of_range;
  if (!block)
    return part_status::empty;
  if (got_[slice])
    return part_status::duplicate;
  const column_range c = (*cols_)[slice];
  const matrix& m = block.get();
  if (static_cast<std::size_t>(m.cols()) != c.size())
    return part_status::wrong_width;
  if (count_ > 0 && m.rows() != rows_)
    return part_status::wrong_rows;
  if (count_ == 0) {
    rows_ = m.rows();
    if (got_.size() > 1)
      buf_.resize(rows_, static_cast<Eigen::Index>(width()));
  }
  if (got_.size() == 1)
    single_ = block; // shares the buffer: nothing to assemble
  else
    buf_.middleCols(static_cast<Eigen::Index>(c.begin), static_cast<Eigen::Index>(c.size())) = m;
  got_[slice] = true;
  return ++count_ == got_.size() ? part_status::complete : part_status::accepted;
}

shared_matrix column_gather::take() {
  if (!complete())
    return {};
  shared_matrix out = got_.size() == 1 ? std::move(single_) : shared_matrix{std::move(buf_)};
  single_ = shared_matrix{};
  buf_ = matrix{};
  got_.assign(got_.size(), false);
  count_ = 0;
  rows_ = 0;
  return out;
}

// --- ordered_sum ------------------------------------------------------------

ordered_sum::ordered_sum(std::size_t parts, Eigen::Index rows, Eigen::Index cols)
    : parts_(parts), rows_(rows), cols_(cols) {}

bool ordered_sum::has(std::uint32_t slice) const noexcept {
  // Accepted parts have rows_ x cols_ >= 1 elements; missing ones none.
  return slice < parts_.size() && parts_[slice].size() != 0;
}

part_status ordered_sum::add(std::uint32_t slice, matrix&& part) {
  if (slice >= parts_.size())
    return part_status::out_of_range;
  if (part.size() == 0)
    return part_status::empty;
  if (has(slice))
    return part_status::duplicate;
  if (part.cols() != cols_)
    return part_status::wrong_width;
  if (part.rows() != rows_)
    return part_status::wrong_rows;
  parts_[slice] = std::move(part);
  return ++count_ == parts_.size() ? part_status::complete : part_status::accepted;
}

matrix ordered_sum::take() {
  if (!complete() || parts_.empty())
    return {};
  // The relay's arithmetic since the first version: start from part 0 and
  // add the others in slice order. Float addition is not associative, so any
  // other order could round differently.
  matrix sum = std::move(parts_[0]);
  for (std::size_t i = 1; i < parts_.size(); ++i) {
    sum += parts_[i];
    parts_[i] = matrix{};
  }
  parts_[0] = matrix{};
  count_ = 0;
  return sum;
}

// --- finished_batches -------------------------------------------------------

finished_batches::finished_batches(std::size_t capacity) : capacity_(capacity) {
  ids_.reserve(capacity + 1);
}

void finished_batches::insert(std::uint64_t batch) {
  if (!ids_.insert(batch).second)
    return;
  order_.push_back(batch);
  if (order_.size() > capacity_) {
    ids_.erase(order_.front());
    order_.pop_front();
  }
}

} // namespace nettorrent
