// Dense layers and their column slices: splitting, initialisation, forward
// and backward passes (a layer split into slices must compute what the full
// layer computes), and a finite-difference check of the backward pass.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "nettorrent/dense.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/rng.hpp"

namespace nt = nettorrent;

namespace {

constexpr nt::activation all_activations[] = {nt::activation::identity, nt::activation::relu,
                                              nt::activation::tanh, nt::activation::sigmoid};

nt::matrix uniform_matrix(Eigen::Index rows, Eigen::Index cols, float lo, float hi,
                          std::uint64_t seed) {
  nt::rng gen{seed};
  nt::matrix m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j)
      m(i, j) = lo + (hi - lo) * nt::unit_float(gen.next());
  return m;
}

nt::slice_geometry full_geometry(std::size_t layer, std::size_t fan_in, std::size_t fan_out,
                                 nt::activation act) {
  nt::slice_geometry g;
  g.layer = layer;
  g.fan_in = fan_in;
  g.fan_out = fan_out;
  g.cols = {0, fan_out};
  g.act = act;
  return g;
}

/// True when a and b have the same shape and the same bits.
template <class A, class B>
bool same_bits(const A& a, const B& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols())
    return false;
  for (Eigen::Index i = 0; i < a.rows(); ++i)
    for (Eigen::Index j = 0; j < a.cols(); ++j) {
      const float x = a(i, j), y = b(i, j);
      if (std::memcmp(&x, &y, sizeof x) != 0)
        return false;
    }
  return true;
}

/// Largest |a - b| relative to max(1, largest |b|).
template <class A, class B>
double max_rel_diff(const A& a, const B& b) {
  EXPECT_EQ(a.rows(), b.rows());
  EXPECT_EQ(a.cols(), b.cols());
  double scale = 1, diff = 0;
  for (Eigen::Index i = 0; i < b.rows(); ++i)
    for (Eigen::Index j = 0; j < b.cols(); ++j) {
      scale = std::max(scale, std::fabs(static_cast<double>(b(i, j))));
      diff = std::max(diff, std::fabs(static_cast<double>(a(i, j)) - static_cast<double>(b(i, j))));
    }
  return diff / scale;
}

} // namespace

// ------------------------------------------------------------- split_columns

TEST(SplitColumns, NearEqualContiguousCover) {
  for (std::size_t n = 1; n <= 40; ++n) {
    for (std::size_t parts = 1; parts <= n; ++parts) {
      const auto ranges = nt::split_columns(n, parts);
      ASSERT_EQ(ranges.size(), parts) << n << "/" << parts;
      std::size_t expect_begin = 0, smallest = n, largest = 0;
      for (std::size_t i = 0; i < parts; ++i) {
        EXPECT_EQ(ranges[i].begin, expect_begin) << n << "/" << parts << " range " << i;
        EXPECT_GT(ranges[i].end, ranges[i].begin) << "empty range";
        // The first n % parts ranges are the longer ones.
        EXPECT_EQ(ranges[i].size(), n / parts + (i < n % parts ? 1 : 0));
        smallest = std::min(smallest, ranges[i].size());
        largest = std::max(largest, ranges[i].size());
        expect_begin = ranges[i].end;
      }
      EXPECT_EQ(expect_begin, n) << "ranges do not cover [0, n)";
      EXPECT_LE(largest - smallest, 1u) << n << "/" << parts;
    }
  }
}

TEST(SplitColumns, ExampleSplit) {
  const auto r = nt::split_columns(10, 3);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0], (nt::column_range{0, 4}));
  EXPECT_EQ(r[1], (nt::column_range{4, 7}));
  EXPECT_EQ(r[2], (nt::column_range{7, 10}));
  EXPECT_EQ(nt::split_columns(5, 1).at(0), (nt::column_range{0, 5}));
}

TEST(SplitColumns, InvalidPartsThrow) {
  EXPECT_THROW(nt::split_columns(10, 0), nt::error);
  EXPECT_THROW(nt::split_columns(3, 4), nt::error);
  EXPECT_THROW(nt::split_columns(0, 1), nt::error);
  EXPECT_THROW(nt::split_columns(0, 0), nt::error);
  EXPECT_NO_THROW(nt::split_columns(3, 3));
}

// ---------------------------------------------------------------- init_dense

TEST(InitDense, DeterministicInSeed) {
  for (auto act : all_activations) {
    const auto g = full_geometry(1, 13, 9, act);
    const nt::dense_params a = nt::init_dense(42, g);
    const nt::dense_params b = nt::init_dense(42, g);
    ASSERT_EQ(a.w.rows(), 13);
    ASSERT_EQ(a.w.cols(), 9);
    ASSERT_EQ(a.b.size(), 9);
    EXPECT_TRUE(same_bits(a.w, b.w)) << nt::to_string(act);
    EXPECT_TRUE(a.b.isZero(0)) << "biases start at zero";

    // Another seed, or another layer index, gives other weights.
    for (const nt::dense_params& other :
         {nt::init_dense(43, g), nt::init_dense(42, full_geometry(2, 13, 9, act))}) {
      std::size_t equal = 0;
      for (Eigen::Index i = 0; i < a.w.size(); ++i)
        if (a.w.data()[i] == other.w.data()[i])
          ++equal;
      EXPECT_LT(equal, 3u) << nt::to_string(act);
    }
  }
}

TEST(InitDense, WeightsAreDistinct) {
  // Each weight hashes its own (row, column): no repeated rows or columns.
  const nt::dense_params p = nt::init_dense(5, full_geometry(0, 8, 8, nt::activation::tanh));
  for (Eigen::Index i = 0; i < 8; ++i)
    for (Eigen::Index j = 0; j < 8; ++j)
      if (i != j) {
        EXPECT_NE(p.w.row(i), p.w.row(j));
        EXPECT_NE(p.w.col(i), p.w.col(j));
      }
}

TEST(InitDense, SlicesAreColumnsOfTheFullLayer) {
  const std::size_t fan_in = 11, fan_out = 10;
  for (auto act : {nt::activation::relu, nt::activation::tanh, nt::activation::sigmoid}) {
    const nt::dense_params full = nt::init_dense(7, full_geometry(3, fan_in, fan_out, act));
    for (std::size_t parts = 1; parts <= 3; ++parts) {
      const auto ranges = nt::split_columns(fan_out, parts);
      for (const auto& cols : ranges) {
        nt::slice_geometry g = full_geometry(3, fan_in, fan_out, act);
        g.cols = cols;
        const nt::dense_params s = nt::init_dense(7, g);
        const auto c0 = static_cast<Eigen::Index>(cols.begin);
        const auto n = static_cast<Eigen::Index>(cols.size());
        ASSERT_EQ(s.w.rows(), static_cast<Eigen::Index>(fan_in));
        ASSERT_EQ(s.w.cols(), n);
        ASSERT_EQ(s.b.size(), n);
        EXPECT_TRUE(same_bits(s.w, full.w.middleCols(c0, n)))
            << nt::to_string(act) << " parts " << parts << " cols [" << cols.begin << ","
            << cols.end << ")";
        EXPECT_TRUE(s.b.isZero(0));
      }
    }
  }
}

TEST(InitDense, HeNormalStatistics) {
  // ReLU layer: He normal, std sqrt(2 / fan_in). 256 x 256 = 65536 weights.
  const std::size_t fan_in = 256, fan_out = 256;
  const nt::dense_params p =
      nt::init_dense(3, full_geometry(0, fan_in, fan_out, nt::activation::relu));
  const double expected_std = std::sqrt(2.0 / static_cast<double>(fan_in));
  double sum = 0, sum_sq = 0, max_abs = 0;
  const auto count = static_cast<double>(p.w.size());
  for (Eigen::Index i = 0; i < p.w.size(); ++i) {
    const double w = p.w.data()[i];
    ASSERT_TRUE(std::isfinite(w));
    sum += w;
    sum_sq += w * w;
    max_abs = std::max(max_abs, std::fabs(w));
  }
  const double mean = sum / count;
  const double stddev = std::sqrt(sum_sq / count - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.02 * expected_std);
  EXPECT_NEAR(stddev, expected_std, 0.02 * expected_std);
  // Normal, not uniform: some weights beyond 3 std (expected ~177 of 65536).
  EXPECT_GT(max_abs, 3.5 * expected_std);
}

TEST(InitDense, GlorotUniformWithinLimit) {
  // Non-ReLU layers: Glorot uniform in [-limit, limit],
  // limit = sqrt(6 / (fan_in + fan_out)); std = limit / sqrt(3).
  const std::size_t fan_in = 100, fan_out = 300;
  const double limit = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  for (auto act : {nt::activation::tanh, nt::activation::sigmoid, nt::activation::identity}) {
    const nt::dense_params p = nt::init_dense(9, full_geometry(1, fan_in, fan_out, act));
    double sum = 0, sum_sq = 0, max_abs = 0;
    const auto count = static_cast<double>(p.w.size());
    for (Eigen::Index i = 0; i < p.w.size(); ++i) {
      const double w = p.w.data()[i];
      ASSERT_LE(std::fabs(w), limit) << nt::to_string(act);
      sum += w;
      sum_sq += w * w;
      max_abs = std::max(max_abs, std::fabs(w));
    }
    const double mean = sum / count;
    const double stddev = std::sqrt(sum_sq / count - mean * mean);
    EXPECT_NEAR(mean, 0.0, 0.02 * limit) << nt::to_string(act);
    EXPECT_NEAR(stddev, limit / std::sqrt(3.0), 0.02 * limit) << nt::to_string(act);
    EXPECT_GT(max_abs, 0.99 * limit) << nt::to_string(act);
  }
}

// ------------------------------------------------------- forward / backward

namespace {

struct layer_case {
  Eigen::Index batch, fan_in, fan_out;
};

// The full layer's results for one input and upstream gradient.
struct full_result {
  nt::matrix h;  // B x out
  nt::matrix dz; // B x out
  nt::dense_grads grads;
  nt::matrix dx; // B x in
};

void check_slices_match_full(const layer_case& lc, nt::activation act, std::uint64_t seed) {
  const auto fan_in = static_cast<std::size_t>(lc.fan_in);
  const auto fan_out = static_cast<std::size_t>(lc.fan_out);
  const nt::matrix x = uniform_matrix(lc.batch, lc.fan_in, -1.0f, 1.0f, seed);      // B x in
  const nt::matrix r = uniform_matrix(lc.batch, lc.fan_out, -1.0f, 1.0f, seed + 1); // dH
  const nt::row_vector bias = uniform_matrix(1, lc.fan_out, -0.5f, 0.5f, seed + 2); // 1 x out

  nt::dense_params full = nt::init_dense(seed, full_geometry(2, fan_in, fan_out, act));
  full.b = bias;
  full_result ref;
  nt::dense_forward(x, full, act, ref.h);
  ASSERT_EQ(ref.h.rows(), lc.batch);
  ASSERT_EQ(ref.h.cols(), lc.fan_out);
  ref.dz = r;
  nt::dense_backward(x, ref.h, act, full, ref.dz, ref.grads, &ref.dx);
  ASSERT_EQ(ref.dx.rows(), lc.batch);
  ASSERT_EQ(ref.dx.cols(), lc.fan_in);

  for (std::size_t parts = 1; parts <= 3; ++parts) {
    SCOPED_TRACE(std::string{nt::to_string(act)} + ", " + std::to_string(parts) + " slices");
    nt::matrix h_cat(lc.batch, lc.fan_out);
    nt::matrix dw_cat(lc.fan_in, lc.fan_out);
    nt::row_vector db_cat(lc.fan_out);
    nt::matrix dx_sum = nt::matrix::Zero(lc.batch, lc.fan_in);
    for (const auto& cols : nt::split_columns(fan_out, parts)) {
      nt::slice_geometry g = full_geometry(2, fan_in, fan_out, act);
      g.cols = cols;
      const auto c0 = static_cast<Eigen::Index>(cols.begin);
      const auto n = static_cast<Eigen::Index>(cols.size());
      nt::dense_params p = nt::init_dense(seed, g);
      p.b = bias.segment(c0, n);
      nt::matrix h;
      nt::dense_forward(x, p, act, h);
      ASSERT_EQ(h.rows(), lc.batch);
      ASSERT_EQ(h.cols(), n);
      nt::matrix dh = r.middleCols(c0, n);
      nt::dense_grads grads;
      nt::matrix dx;
      nt::dense_backward(x, h, act, p, dh, grads, &dx);
      h_cat.middleCols(c0, n) = h;
      dw_cat.middleCols(c0, n) = grads.dw;
      db_cat.segment(c0, n) = grads.db;
      dx_sum += dx;
    }
    if (parts == 1) {
      // The one-slice case is the full layer itself, bit for bit.
      EXPECT_TRUE(same_bits(h_cat, ref.h));
      EXPECT_TRUE(same_bits(dw_cat, ref.grads.dw));
      EXPECT_TRUE(same_bits(db_cat, ref.grads.db));
      EXPECT_TRUE(same_bits(dx_sum, ref.dx));
    }
    // Each output column is one dot product over the inputs, so the slices'
    // outputs and weight gradients agree with the full layer up to rounding
    // (Eigen's product kernel depends on the matrix size, so the last bits
    // may differ).
    EXPECT_LE(max_rel_diff(h_cat, ref.h), 1e-6);
    EXPECT_LE(max_rel_diff(dw_cat, ref.grads.dw), 1e-6);
    EXPECT_LE(max_rel_diff(db_cat, ref.grads.db), 1e-6);
    // The partial input gradients add up to the full one (summation order
    // differs, so allow rounding).
    EXPECT_LE(max_rel_diff(dx_sum, ref.dx), 1e-5);
  }
}

} // namespace

TEST(DenseSlices, ForwardBackwardEqualFullLayerSmall) {
  // B x in = 6 x 9, out = 10: slices of 10, 5+5, 4+3+3 neurons.
  for (auto act : all_activations)
    check_slices_match_full({6, 9, 10}, act, 100);
}

TEST(DenseSlices, ForwardBackwardEqualFullLayerLarger) {
  // B x in = 32 x 48, out = 37: large enough for blocked matrix products.
  for (auto act : all_activations)
    check_slices_match_full({32, 48, 37}, act, 200);
}

TEST(Dense, ForwardMatchesDoubleReference) {
  // H = act(X W + b) computed element by element in double.
  const Eigen::Index batch = 3, fan_in = 5, fan_out = 4;
  const nt::matrix x = uniform_matrix(batch, fan_in, -1.0f, 1.0f, 51);
  for (auto act : all_activations) {
    nt::dense_params p = nt::init_dense(52, full_geometry(0, 5, 4, act));
    p.b = uniform_matrix(1, fan_out, -0.5f, 0.5f, 53);
    nt::matrix h;
    nt::dense_forward(x, p, act, h);
    for (Eigen::Index i = 0; i < batch; ++i)
      for (Eigen::Index j = 0; j < fan_out; ++j) {
        double z = p.b(j);
        for (Eigen::Index k = 0; k < fan_in; ++k)
          z += static_cast<double>(x(i, k)) * static_cast<double>(p.w(k, j));
        double expect = z;
        if (act == nt::activation::relu)
          expect = std::max(z, 0.0);
        else if (act == nt::activation::tanh)
          expect = std::tanh(z);
        else if (act == nt::activation::sigmoid)
          expect = 1.0 / (1.0 + std::exp(-z));
        EXPECT_NEAR(h(i, j), expect, 1e-5) << nt::to_string(act) << " H(" << i << "," << j << ")";
      }
  }
}

namespace {

/// L = sum(H .* R) for H = act(X W + b), summed in double.
double weighted_output_sum(const nt::matrix& x, const nt::dense_params& p, nt::activation act,
                           const nt::matrix& r) {
  nt::matrix h;
  nt::dense_forward(x, p, act, h);
  double sum = 0;
  for (Eigen::Index i = 0; i < h.rows(); ++i)
    for (Eigen::Index j = 0; j < h.cols(); ++j)
      sum += static_cast<double>(h(i, j)) * static_cast<double>(r(i, j));
  return sum;
}

/// Central difference of `loss` with respect to `value` (changed in place and
/// restored), divided by the step actually taken in float.
template <class Loss>
double central_difference(float& value, float step, Loss&& loss) {
  const float saved = value;
  value = saved + step;
  const float up = value;
  const double lp = loss();
  value = saved - step;
  const float down = value;
  const double lm = loss();
  value = saved;
  return (lp - lm) / (static_cast<double>(up) - static_cast<double>(down));
}

::testing::AssertionResult close_rel(double a, double b, double rel, double abs_floor) {
  const double tol = rel * std::max(std::fabs(a), std::fabs(b)) + abs_floor;
  if (std::fabs(a - b) <= tol)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << a << " vs " << b << " differ by " << std::fabs(a - b) << " > " << tol;
}

} // namespace

TEST(Dense, BackwardMatchesFiniteDifferences) {
  // Tiny layer: B x in = 3 x 4, out = 3; loss L = sum(H .* R).
  const Eigen::Index batch = 3, fan_in = 4, fan_out = 3;
  const nt::matrix r = uniform_matrix(batch, fan_out, -1.0f, 1.0f, 61);
  const float step = 1e-2f;
  for (auto act : all_activations) {
    SCOPED_TRACE(std::string{nt::to_string(act)});
    nt::matrix x = uniform_matrix(batch, fan_in, -1.0f, 1.0f, 62);
    nt::dense_params p = nt::init_dense(63, full_geometry(0, 4, 3, act));
    p.b = uniform_matrix(1, fan_out, -0.5f, 0.5f, 64);

    // Move every pre-activation at least 0.1 away from ReLU's kink, through
    // the bias of its column (all finite differences stay on one side).
    if (act == nt::activation::relu) {
      for (int round = 0; round < 20; ++round) {
        const nt::matrix z = (x * p.w).rowwise() + p.b;
        bool moved = false;
        for (Eigen::Index i = 0; i < batch; ++i)
          for (Eigen::Index j = 0; j < fan_out; ++j)
            if (std::fabs(z(i, j)) < 0.1f) {
              p.b(j) += 0.25f;
              moved = true;
            }
        if (!moved)
          break;
      }
    }

    nt::matrix h;
    nt::dense_forward(x, p, act, h);
    nt::matrix dh = r;
    nt::dense_grads grads;
    nt::matrix dx;
    nt::dense_backward(x, h, act, p, dh, grads, &dx);
    ASSERT_EQ(grads.dw.rows(), fan_in);
    ASSERT_EQ(grads.dw.cols(), fan_out);
    ASSERT_EQ(grads.db.size(), fan_out);
    ASSERT_EQ(dx.rows(), batch);
    ASSERT_EQ(dx.cols(), fan_in);

    auto loss = [&] { return weighted_output_sum(x, p, act, r); };
    for (Eigen::Index k = 0; k < fan_in; ++k)
      for (Eigen::Index j = 0; j < fan_out; ++j)
        EXPECT_TRUE(
            close_rel(grads.dw(k, j), central_difference(p.w(k, j), step, loss), 1e-2, 1e-4))
            << "dW(" << k << "," << j << ")";
    for (Eigen::Index j = 0; j < fan_out; ++j)
      EXPECT_TRUE(close_rel(grads.db(j), central_difference(p.b(j), step, loss), 1e-2, 1e-4))
          << "db(" << j << ")";
    for (Eigen::Index i = 0; i < batch; ++i)
      for (Eigen::Index k = 0; k < fan_in; ++k)
        EXPECT_TRUE(close_rel(dx(i, k), central_difference(x(i, k), step, loss), 1e-2, 1e-4))
            << "dX(" << i << "," << k << ")";
    // On exit dh holds dZ: for the identity that is R itself.
    if (act == nt::activation::identity) {
      EXPECT_EQ(dh, r);
    }
  }
}

TEST(Dense, BackwardWithoutDxLeavesNoInputGradient) {
  const nt::matrix x = uniform_matrix(4, 6, -1.0f, 1.0f, 71); // B x in
  const nt::matrix r = uniform_matrix(4, 5, -1.0f, 1.0f, 72); // B x out
  const nt::dense_params p = nt::init_dense(73, full_geometry(0, 6, 5, nt::activation::tanh));
  nt::matrix h;
  nt::dense_forward(x, p, nt::activation::tanh, h);

  nt::matrix dh_a = r, dh_b = r;
  nt::dense_grads with_dx, without_dx;
  nt::matrix dx;
  nt::dense_backward(x, h, nt::activation::tanh, p, dh_a, with_dx, &dx);
  nt::dense_backward(x, h, nt::activation::tanh, p, dh_b, without_dx, nullptr);
  EXPECT_EQ(dx.rows(), 4);
  EXPECT_EQ(dx.cols(), 6);
  // The weight and bias gradients do not depend on whether dX is wanted.
  EXPECT_TRUE(same_bits(with_dx.dw, without_dx.dw));
  EXPECT_TRUE(same_bits(with_dx.db, without_dx.db));
  EXPECT_TRUE(same_bits(dh_a, dh_b));
}

TEST(Dense, BuffersAreReusedWhenShapesMatch) {
  const nt::matrix x = uniform_matrix(4, 6, -1.0f, 1.0f, 81);
  const nt::dense_params p = nt::init_dense(82, full_geometry(0, 6, 5, nt::activation::relu));
  nt::matrix h;
  nt::dense_forward(x, p, nt::activation::relu, h);
  const float* h_data = h.data();
  nt::dense_forward(x, p, nt::activation::relu, h);
  EXPECT_EQ(h.data(), h_data);

  nt::dense_grads grads;
  nt::resize_grads(p, grads);
  ASSERT_EQ(grads.dw.rows(), 6);
  ASSERT_EQ(grads.dw.cols(), 5);
  ASSERT_EQ(grads.db.size(), 5);
  const float* dw_data = grads.dw.data();
  nt::matrix dh = nt::matrix::Ones(4, 5);
  nt::dense_backward(x, h, nt::activation::relu, p, dh, grads, nullptr);
  EXPECT_EQ(grads.dw.data(), dw_data);
}
