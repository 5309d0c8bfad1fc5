// The relay's two collective steps without actors: column_gather assembles
// a batch's matrix from the column blocks of P slices in any arrival order
// (and passes a single slice's block through without copying); ordered_sum
// adds P partial input gradients in slice order, so its result is the same
// bits whatever order they arrive in. Both refuse parts that do not fit.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "nettorrent/gather.hpp"
#include "nettorrent/rng.hpp"

namespace nt = nettorrent;

namespace {

nt::matrix uniform_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  nt::rng gen{seed};
  nt::matrix m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j)
      m(i, j) = -1.0f + 2.0f * nt::unit_float(gen.next());
  return m;
}

bool same_bits(const nt::matrix& a, const nt::matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols()
         && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float))
                == 0;
}

/// Every permutation of 0 .. n-1, in lexicographic order.
std::vector<std::vector<std::uint32_t>> arrival_orders(std::uint32_t n) {
  std::vector<std::uint32_t> p(n);
  std::iota(p.begin(), p.end(), 0u);
  std::vector<std::vector<std::uint32_t>> out;
  do
    out.push_back(p);
  while (std::next_permutation(p.begin(), p.end()));
  return out;
}

/// The column blocks of `full` for `cols`, each in a buffer of its own.
std::vector<nt::shared_matrix> blocks_of(const nt::matrix& full,
                                         const std::vector<nt::column_range>& cols) {
  std::vector<nt::shared_matrix> out;
  for (const auto& c : cols)
    out.emplace_back(nt::matrix{
        full.middleCols(static_cast<Eigen::Index>(c.begin), static_cast<Eigen::Index>(c.size()))});
  return out;
}

// --- column_gather ----------------------------------------------------------

TEST(Gather, ColumnsAssembleTheSameMatrixInAnyArrivalOrder) {
  const auto cols = nt::split_columns(7, 3); // [0, 3), [3, 5), [5, 7)
  const nt::matrix full = uniform_matrix(5, 7, 1);
  const auto blocks = blocks_of(full, cols);
  const auto layout = nt::make_column_layout(cols);
  const auto orders = arrival_orders(3);
  ASSERT_EQ(orders.size(), 6u);
  for (const auto& order : orders) {
    nt::column_gather g{layout};
    EXPECT_EQ(g.slices(), 3u);
    EXPECT_EQ(g.width(), 7u);
    for (std::size_t i = 0; i < order.size(); ++i) {
      EXPECT_FALSE(g.complete());
      EXPECT_FALSE(g.has(order[i]));
      const auto expected =
          i + 1 < order.size() ? nt::part_status::accepted : nt::part_status::complete;
      EXPECT_EQ(g.add(order[i], blocks[order[i]]), expected);
      EXPECT_TRUE(g.has(order[i]));
      EXPECT_EQ(g.arrived(), i + 1);
      EXPECT_EQ(g.rows(), 5);
    }
    ASSERT_TRUE(g.complete());
    const nt::shared_matrix h = g.take();
    ASSERT_TRUE(h);
    EXPECT_TRUE(same_bits(h.get(), full))
        << "order " << order[0] << order[1] << order[2] << " assembled another matrix";
  }
}

TEST(Gather, ColumnsOfOneSlicePassTheirBlockThroughWithoutCopying) {
  nt::column_gather g{nt::make_column_layout(nt::split_columns(4, 1))};
  const nt::shared_matrix block{uniform_matrix(3, 4, 2)};
  EXPECT_EQ(g.add(0, block), nt::part_status::complete);
  const nt::shared_matrix h = g.take();
  EXPECT_EQ(h.ptr.get(), block.ptr.get()) << "the single block was copied";
  // The gather kept no reference: the caller's handle and the result are all.
  EXPECT_EQ(block.ptr.use_count(), 2);
}

TEST(Gather, ColumnsRefuseBlocksThatDoNotFitAndStaysUsable) {
  const auto cols = nt::split_columns(5, 2); // [0, 3), [3, 5)
  const nt::matrix full = uniform_matrix(4, 5, 3);
  const auto blocks = blocks_of(full, cols);
  nt::column_gather g{nt::make_column_layout(cols)};
  // Before any block: no such slice, no matrix, wrong width (slice 0 has 3 columns).
  EXPECT_EQ(g.add(2, blocks[0]), nt::part_status::out_of_range);
  EXPECT_EQ(g.add(0, nt::shared_matrix{}), nt::part_status::empty);
  EXPECT_EQ(g.add(0, blocks[1]), nt::part_status::wrong_width);
  EXPECT_EQ(g.arrived(), 0u);
  EXPECT_EQ(g.rows(), 0);
  EXPECT_FALSE(g.take()) << "an incomplete gather has no result";
  // The first block fixes the rows; a duplicate and a block of another
  // height are refused.
  EXPECT_EQ(g.add(1, blocks[1]), nt::part_status::accepted);
  EXPECT_EQ(g.add(1, blocks[1]), nt::part_status::duplicate);
  EXPECT_EQ(g.add(0, nt::shared_matrix{uniform_matrix(3, 3, 4)}), nt::part_status::wrong_rows);
  EXPECT_EQ(g.add(0, nt::shared_matrix{uniform_matrix(4, 2, 4)}), nt::part_status::wrong_width);
  EXPECT_EQ(g.arrived(), 1u);
  EXPECT_FALSE(g.has(0));
  EXPECT_FALSE(g.has(7));
  // None of that disturbed the gather.
  EXPECT_EQ(g.add(0, blocks[0]), nt::part_status::complete);
  EXPECT_TRUE(same_bits(g.take().get(), full));
  // take() reset it: the next batch may have another height.
  EXPECT_EQ(g.arrived(), 0u);
  EXPECT_FALSE(g.has(0));
  const nt::matrix other = uniform_matrix(2, 5, 5);
  const auto next = blocks_of(other, cols);
  EXPECT_EQ(g.add(0, next[0]), nt::part_status::accepted);
  EXPECT_EQ(g.add(1, next[1]), nt::part_status::complete);
  EXPECT_TRUE(same_bits(g.take().get(), other));
}

TEST(Gather, StatusesHaveNames) {
  EXPECT_STREQ(nt::to_string(nt::part_status::duplicate), "duplicate");
  EXPECT_STREQ(nt::to_string(nt::part_status::wrong_rows), "wrong rows");
}

// --- ordered_sum ------------------------------------------------------------

/// Adds `parts` offered in `order` and returns the sum.
nt::matrix sum_in(const std::vector<nt::matrix>& parts, const std::vector<std::uint32_t>& order) {
  nt::ordered_sum sum{parts.size(), parts[0].rows(), parts[0].cols()};
  for (std::size_t i = 0; i < order.size(); ++i) {
    nt::matrix copy = parts[order[i]];
    const auto expected =
        i + 1 < order.size() ? nt::part_status::accepted : nt::part_status::complete;
    EXPECT_EQ(sum.add(order[i], std::move(copy)), expected);
  }
  EXPECT_TRUE(sum.complete());
  return sum.take();
}

TEST(Gather, OrderedSumEqualsTheLeftToRightSumBitForBitInAnyArrivalOrder) {
  std::vector<nt::matrix> parts;
  for (std::uint64_t i = 0; i < 4; ++i)
    parts.push_back(uniform_matrix(6, 9, 10 + i));
  nt::matrix left_to_right = parts[0];
  for (std::size_t i = 1; i < parts.size(); ++i)
    left_to_right += parts[i];
  for (const auto& order : arrival_orders(4))
    EXPECT_TRUE(same_bits(sum_in(parts, order), left_to_right))
        << "arrival order " << order[0] << order[1] << order[2] << order[3];
}

TEST(Gather, OrderedSumDiffersFromAnotherOrderWhereRoundingDoes) {
  // 1e8 + (-1e8) + 1 = 1 from the left; from the right, -1e8 + 1 rounds back
  // to -1e8 (floats near 1e8 are 8 apart), so the sum would be 0.
  nt::matrix p0 = nt::matrix::Constant(2, 3, 1e8f);
  nt::matrix p1 = nt::matrix::Constant(2, 3, -1e8f);
  nt::matrix p2 = nt::matrix::Constant(2, 3, 1.0f);
  p2(1, 2) = 0.5f;
  const std::vector<nt::matrix> parts{p0, p1, p2};
  nt::matrix right_to_left = p2;
  right_to_left += p1;
  right_to_left += p0;
  ASSERT_EQ(right_to_left(0, 0), 0.0f) << "the values do not show the rounding";
  for (const auto& order : arrival_orders(3)) {
    const nt::matrix got = sum_in(parts, order);
    EXPECT_EQ(got(0, 0), 1.0f);
    EXPECT_EQ(got(1, 2), 0.5f);
    EXPECT_FALSE(same_bits(got, right_to_left))
        << "arrival order " << order[0] << order[1] << order[2] << " summed right to left";
  }
}

TEST(Gather, OrderedSumRefusesPartsThatDoNotFitWithoutTakingThem) {
  nt::ordered_sum sum{2, 3, 4};
  EXPECT_EQ(sum.parts(), 2u);
  EXPECT_EQ(sum.rows(), 3);
  EXPECT_EQ(sum.cols(), 4);
  nt::matrix wrong_width = uniform_matrix(3, 5, 20);
  nt::matrix wrong_rows = uniform_matrix(2, 4, 21);
  nt::matrix good0 = uniform_matrix(3, 4, 22);
  nt::matrix good1 = uniform_matrix(3, 4, 23);
  const nt::matrix expected = good0 + good1;
  nt::matrix keep = good1;
  EXPECT_EQ(sum.add(2, std::move(keep)), nt::part_status::out_of_range);
  EXPECT_EQ(keep.size(), 12) << "a refused part was moved from";
  EXPECT_EQ(sum.add(0, nt::matrix{}), nt::part_status::empty);
  EXPECT_EQ(sum.add(0, std::move(wrong_width)), nt::part_status::wrong_width);
  EXPECT_EQ(sum.add(0, std::move(wrong_rows)), nt::part_status::wrong_rows);
  EXPECT_EQ(wrong_width.size(), 15);
  EXPECT_EQ(wrong_rows.size(), 8);
  EXPECT_EQ(sum.arrived(), 0u);
  EXPECT_TRUE(sum.take().size() == 0) << "an incomplete sum has no result";
  EXPECT_EQ(sum.add(1, std::move(good1)), nt::part_status::accepted);
  nt::matrix again = uniform_matrix(3, 4, 24);
  EXPECT_EQ(sum.add(1, std::move(again)), nt::part_status::duplicate);
  EXPECT_EQ(again.size(), 12);
  EXPECT_TRUE(sum.has(1));
  EXPECT_FALSE(sum.has(0));
  EXPECT_FALSE(sum.has(5));
  EXPECT_EQ(sum.add(0, std::move(good0)), nt::part_status::complete);
  EXPECT_TRUE(same_bits(sum.take(), expected));
  EXPECT_EQ(sum.arrived(), 0u);
  EXPECT_FALSE(sum.has(0));
}

TEST(Gather, OrderedSumBuildsTheSumInPartZerosBuffer) {
  nt::ordered_sum sum{2, 2, 2};
  nt::matrix p0 = uniform_matrix(2, 2, 30);
  const float* buffer = p0.data();
  EXPECT_EQ(sum.add(1, uniform_matrix(2, 2, 31)), nt::part_status::accepted);
  EXPECT_EQ(sum.add(0, std::move(p0)), nt::part_status::complete);
  EXPECT_EQ(sum.take().data(), buffer) << "the sum was not built in place";
}

// --- finished_batches -------------------------------------------------------

TEST(Gather, FinishedBatchesForgetsTheOldestBeyondItsCapacity) {
  nt::finished_batches f{3};
  for (std::uint64_t b : {1u, 2u, 3u, 2u})
    f.insert(b);
  EXPECT_EQ(f.size(), 3u) << "a repeated id counts once";
  f.insert(4);
  EXPECT_FALSE(f.contains(1));
  for (std::uint64_t b : {2u, 3u, 4u})
    EXPECT_TRUE(f.contains(b)) << b;
  EXPECT_EQ(f.size(), 3u);
}

} // namespace
