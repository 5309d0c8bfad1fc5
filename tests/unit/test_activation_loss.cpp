// Activations (values, derivatives, names) and softmax cross-entropy (values,
// gradient, stability, accuracy counting).
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "nettorrent/activation.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/loss.hpp"
#include "nettorrent/rng.hpp"

namespace nt = nettorrent;

namespace {

constexpr nt::activation all_activations[] = {nt::activation::identity, nt::activation::relu,
                                              nt::activation::tanh, nt::activation::sigmoid};

/// B x n matrix with entries uniform in [lo, hi).
nt::matrix uniform_matrix(Eigen::Index rows, Eigen::Index cols, float lo, float hi,
                          std::uint64_t seed) {
  nt::rng gen{seed};
  nt::matrix m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j)
      m(i, j) = lo + (hi - lo) * nt::unit_float(gen.next());
  return m;
}

/// The activation in double precision, written out independently of the library.
double reference_activation(nt::activation a, double z) {
  switch (a) {
  case nt::activation::identity:
    return z;
  case nt::activation::relu:
    return z > 0 ? z : 0.0;
  case nt::activation::tanh:
    return std::tanh(z);
  case nt::activation::sigmoid:
    return 1.0 / (1.0 + std::exp(-z));
  }
  return std::numeric_limits<double>::quiet_NaN();
}

/// L = sum_ij act(Z)_ij * R_ij, with act from the library, summed in double.
double weighted_activation_sum(nt::activation a, nt::matrix z, const nt::matrix& r) {
  nt::activate(a, z);
  double sum = 0;
  for (Eigen::Index i = 0; i < z.rows(); ++i)
    for (Eigen::Index j = 0; j < z.cols(); ++j)
      sum += static_cast<double>(z(i, j)) * static_cast<double>(r(i, j));
  return sum;
}

/// |a - b| <= rel * max(|a|, |b|) + abs_floor.
::testing::AssertionResult close_rel(double a, double b, double rel, double abs_floor) {
  const double tol = rel * std::max(std::fabs(a), std::fabs(b)) + abs_floor;
  if (std::fabs(a - b) <= tol)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << a << " vs " << b << " differ by " << std::fabs(a - b) << " > " << tol;
}

double softmax_mean_loss(const nt::matrix& logits, const std::uint8_t* labels) {
  return nt::softmax_xent(logits, labels).loss_sum / static_cast<double>(logits.rows());
}

} // namespace

// ---------------------------------------------------------------- activations

TEST(Activation, NamesRoundTrip) {
  for (auto a : all_activations)
    EXPECT_EQ(nt::parse_activation(nt::to_string(a)), a) << nt::to_string(a);
  EXPECT_EQ(nt::to_string(nt::activation::identity), "identity");
  EXPECT_EQ(nt::to_string(nt::activation::relu), "relu");
  EXPECT_EQ(nt::to_string(nt::activation::tanh), "tanh");
  EXPECT_EQ(nt::to_string(nt::activation::sigmoid), "sigmoid");
}

TEST(Activation, UnknownNameThrowsNamingIt) {
  EXPECT_THROW(nt::parse_activation(""), nt::error);
  EXPECT_THROW(nt::parse_activation("relu6"), nt::error);
  try {
    nt::parse_activation("softplus");
    FAIL() << "parse_activation(\"softplus\") did not throw";
  } catch (const nt::error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("softplus"), std::string::npos) << msg;
    EXPECT_NE(msg.find("relu"), std::string::npos) << msg; // lists the choices
  }
}

TEST(Activation, ForwardMatchesDoubleReference) {
  // B x n = 6 x 7, values in [-4, 4).
  const nt::matrix z = uniform_matrix(6, 7, -4.0f, 4.0f, 11);
  for (auto a : all_activations) {
    nt::matrix h = z;
    nt::activate(a, h);
    for (Eigen::Index i = 0; i < z.rows(); ++i)
      for (Eigen::Index j = 0; j < z.cols(); ++j)
        EXPECT_TRUE(
            close_rel(h(i, j), reference_activation(a, static_cast<double>(z(i, j))), 1e-5, 1e-6))
            << nt::to_string(a) << " at z = " << z(i, j);
  }
}

TEST(Activation, ForwardExactValuesAndSaturation) {
  nt::matrix z(1, 5);
  z << -1000.0f, -2.0f, 0.0f, 3.0f, 1000.0f;
  nt::matrix h = z;
  nt::activate(nt::activation::relu, h);
  EXPECT_EQ(h(0, 0), 0.0f);
  EXPECT_EQ(h(0, 1), 0.0f);
  EXPECT_EQ(h(0, 2), 0.0f);
  EXPECT_EQ(h(0, 3), 3.0f);
  EXPECT_EQ(h(0, 4), 1000.0f);

  h = z;
  nt::activate(nt::activation::identity, h);
  EXPECT_EQ(h, z);

  // Sigmoid and tanh saturate without NaN for huge |z|.
  h = z;
  nt::activate(nt::activation::sigmoid, h);
  EXPECT_EQ(h(0, 2), 0.5f);
  EXPECT_EQ(h(0, 0), 0.0f);
  EXPECT_EQ(h(0, 4), 1.0f);
  for (Eigen::Index j = 0; j < h.cols(); ++j)
    EXPECT_TRUE(std::isfinite(h(0, j)));

  h = z;
  nt::activate(nt::activation::tanh, h);
  EXPECT_EQ(h(0, 2), 0.0f);
  EXPECT_EQ(h(0, 0), -1.0f);
  EXPECT_EQ(h(0, 4), 1.0f);
}

// Gradient check: with L = sum(act(Z) .* R), dL/dZ from activation_backward
// (given dH = R and H = act(Z)) must match central differences of L.
TEST(Activation, BackwardMatchesFiniteDifferences) {
  const Eigen::Index rows = 4, cols = 5; // B x n
  nt::matrix z = uniform_matrix(rows, cols, -3.0f, 3.0f, 21);
  // Keep every input at least 0.25 away from ReLU's kink at 0.
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j)
      if (std::fabs(z(i, j)) < 0.25f)
        z(i, j) = z(i, j) < 0 ? z(i, j) - 0.25f : z(i, j) + 0.25f;
  const nt::matrix r = uniform_matrix(rows, cols, -1.0f, 1.0f, 22);
  const float step = 1e-2f;

  for (auto a : all_activations) {
    nt::matrix h = z;
    nt::activate(a, h);
    nt::matrix dz = r; // dH
    nt::activation_backward(a, h, dz);
    std::size_t nonzero = 0;
    for (Eigen::Index i = 0; i < rows; ++i) {
      for (Eigen::Index j = 0; j < cols; ++j) {
        nt::matrix zp = z, zm = z;
        zp(i, j) += step;
        zm(i, j) -= step;
        // Divide by the step actually taken in float.
        const double dzstep = static_cast<double>(zp(i, j)) - static_cast<double>(zm(i, j));
        const double fd =
            (weighted_activation_sum(a, zp, r) - weighted_activation_sum(a, zm, r)) / dzstep;
        EXPECT_TRUE(close_rel(dz(i, j), fd, 1e-2, 1e-5))
            << nt::to_string(a) << " dZ(" << i << "," << j << ") at z = " << z(i, j);
        if (dz(i, j) != 0.0f)
          ++nonzero;
      }
    }
    EXPECT_GT(nonzero, 0u) << nt::to_string(a);
  }
}

TEST(Activation, BackwardKnownDerivatives) {
  // H in terms of which the derivative is written: relu' = [h > 0],
  // tanh' = 1 - h^2, sigmoid' = h (1 - h), identity' = 1.
  nt::matrix h(1, 4);
  h << 0.0f, 0.5f, -0.5f, 0.25f;
  nt::matrix dh(1, 4);
  dh << 2.0f, 2.0f, 2.0f, 2.0f;

  nt::matrix d = dh;
  nt::activation_backward(nt::activation::identity, h, d);
  EXPECT_EQ(d, dh);

  d = dh;
  nt::activation_backward(nt::activation::relu, h, d);
  EXPECT_EQ(d(0, 0), 0.0f);
  EXPECT_EQ(d(0, 1), 2.0f);
  EXPECT_EQ(d(0, 2), 0.0f);
  EXPECT_EQ(d(0, 3), 2.0f);

  d = dh;
  nt::activation_backward(nt::activation::tanh, h, d);
  EXPECT_FLOAT_EQ(d(0, 0), 2.0f);           // 2 (1 - 0)
  EXPECT_FLOAT_EQ(d(0, 1), 1.5f);           // 2 (1 - 0.25)
  EXPECT_FLOAT_EQ(d(0, 2), 1.5f);           // 2 (1 - 0.25)
  EXPECT_FLOAT_EQ(d(0, 3), 2.0f * 0.9375f); // 2 (1 - 0.0625)

  d = dh;
  nt::activation_backward(nt::activation::sigmoid, h, d);
  EXPECT_FLOAT_EQ(d(0, 0), 0.0f);           // 2 * 0 * 1
  EXPECT_FLOAT_EQ(d(0, 1), 0.5f);           // 2 * 0.5 * 0.5
  EXPECT_FLOAT_EQ(d(0, 3), 2.0f * 0.1875f); // 2 * 0.25 * 0.75
}

// ---------------------------------------------------------------------- loss

TEST(SoftmaxXent, HandComputedTwoClass) {
  // Row logits [0, ln 3]: softmax = [1/4, 3/4].
  //   label 1: loss = -ln(3/4) = ln(4/3), arg-max 1 = label -> correct
  //   label 0: loss = -ln(1/4) = ln 4,    arg-max 1 != label -> wrong
  const float ln3 = static_cast<float>(std::log(3.0));
  nt::matrix logits(2, 2);
  logits << 0.0f, ln3, 0.0f, ln3;
  const std::uint8_t labels[] = {1, 0};
  const nt::loss_result res = nt::softmax_xent(logits, labels);
  EXPECT_NEAR(res.loss_sum, std::log(4.0 / 3.0) + std::log(4.0), 1e-6);
  EXPECT_EQ(res.correct, 1u);

  // Gradient of the mean loss (B = 2): (P - Y) / 2.
  nt::matrix grad;
  const nt::loss_result res2 = nt::softmax_xent_backward(logits, labels, grad);
  EXPECT_DOUBLE_EQ(res2.loss_sum, res.loss_sum);
  EXPECT_EQ(res2.correct, res.correct);
  ASSERT_EQ(grad.rows(), 2);
  ASSERT_EQ(grad.cols(), 2);
  EXPECT_NEAR(grad(0, 0), (0.25 - 0.0) / 2, 1e-6);
  EXPECT_NEAR(grad(0, 1), (0.75 - 1.0) / 2, 1e-6);
  EXPECT_NEAR(grad(1, 0), (0.25 - 1.0) / 2, 1e-6);
  EXPECT_NEAR(grad(1, 1), (0.75 - 0.0) / 2, 1e-6);
}

TEST(SoftmaxXent, HandComputedThreeClass) {
  // Logits [0, ln 2, ln 5]: exp = [1, 2, 5], softmax = [1/8, 2/8, 5/8].
  // Label 2: loss = ln(8/5), correct. Single sample, so grad = P - Y.
  nt::matrix logits(1, 3);
  logits << 0.0f, static_cast<float>(std::log(2.0)), static_cast<float>(std::log(5.0));
  const std::uint8_t labels[] = {2};
  nt::matrix grad;
  const nt::loss_result res = nt::softmax_xent_backward(logits, labels, grad);
  EXPECT_NEAR(res.loss_sum, std::log(8.0 / 5.0), 1e-6);
  EXPECT_EQ(res.correct, 1u);
  EXPECT_NEAR(grad(0, 0), 1.0 / 8, 1e-6);
  EXPECT_NEAR(grad(0, 1), 2.0 / 8, 1e-6);
  EXPECT_NEAR(grad(0, 2), 5.0 / 8 - 1.0, 1e-6);

  // Adding a constant to every logit changes nothing.
  const nt::matrix shifted = (logits.array() + 100.0f).matrix();
  EXPECT_NEAR(nt::softmax_xent(shifted, labels).loss_sum, std::log(8.0 / 5.0), 2e-5);
}

TEST(SoftmaxXent, StableForHugeLogits) {
  // Row 0: [1e4, 0, -1e4], label 1 -> loss = 1e4 exactly up to rounding.
  // Row 1: same, label 0 -> loss ~ 0.
  // Row 2: [1e4, 1e4, -1e4], label 1 -> loss = ln 2; tie -> arg-max 0 (wrong).
  nt::matrix logits(3, 3);
  logits << 1e4f, 0.0f, -1e4f, 1e4f, 0.0f, -1e4f, 1e4f, 1e4f, -1e4f;
  const std::uint8_t labels[] = {1, 0, 1};
  nt::matrix grad;
  const nt::loss_result res = nt::softmax_xent_backward(logits, labels, grad);
  ASSERT_TRUE(std::isfinite(res.loss_sum));
  EXPECT_NEAR(res.loss_sum, 1e4 + 0.0 + std::log(2.0), 1e-6 * 1e4);
  EXPECT_EQ(res.correct, 1u);
  for (Eigen::Index i = 0; i < grad.rows(); ++i)
    for (Eigen::Index k = 0; k < grad.cols(); ++k)
      ASSERT_TRUE(std::isfinite(grad(i, k))) << i << "," << k;
  // (P - Y) / 3
  EXPECT_NEAR(grad(0, 0), 1.0 / 3, 1e-6);
  EXPECT_NEAR(grad(0, 1), -1.0 / 3, 1e-6);
  EXPECT_NEAR(grad(0, 2), 0.0, 1e-6);
  EXPECT_NEAR(grad(1, 0), 0.0, 1e-6);
  EXPECT_NEAR(grad(2, 0), 0.5 / 3, 1e-6);
  EXPECT_NEAR(grad(2, 1), -0.5 / 3, 1e-6);

  // The forward-only version agrees.
  const nt::loss_result fwd = nt::softmax_xent(logits, labels);
  EXPECT_DOUBLE_EQ(fwd.loss_sum, res.loss_sum);

  // Very negative logits for the label do not underflow to an infinite loss.
  nt::matrix neg(1, 2);
  neg << -1e4f, 1e4f;
  const std::uint8_t label0[] = {0};
  const double l = nt::softmax_xent(neg, label0).loss_sum;
  EXPECT_TRUE(std::isfinite(l));
  EXPECT_NEAR(l, 2e4, 1e-2);
}

TEST(SoftmaxXent, GradientOfMeanLossMatchesFiniteDifferences) {
  const Eigen::Index batch = 4, classes = 5; // logits: B x K
  const nt::matrix logits = uniform_matrix(batch, classes, -2.0f, 2.0f, 31);
  const std::uint8_t labels[] = {0, 3, 4, 3};
  nt::matrix grad;
  nt::softmax_xent_backward(logits, labels, grad);
  ASSERT_EQ(grad.rows(), batch);
  ASSERT_EQ(grad.cols(), classes);

  const float step = 1e-3f;
  for (Eigen::Index i = 0; i < batch; ++i) {
    double row_sum = 0;
    for (Eigen::Index k = 0; k < classes; ++k) {
      nt::matrix lp = logits, lm = logits;
      lp(i, k) += step;
      lm(i, k) -= step;
      const double h = static_cast<double>(lp(i, k)) - static_cast<double>(lm(i, k));
      const double fd = (softmax_mean_loss(lp, labels) - softmax_mean_loss(lm, labels)) / h;
      EXPECT_TRUE(close_rel(grad(i, k), fd, 1e-2, 1e-6)) << "grad(" << i << "," << k << ")";
      row_sum += static_cast<double>(grad(i, k));
    }
    // Softmax probabilities sum to one, so each row of P - Y sums to zero.
    EXPECT_NEAR(row_sum, 0.0, 1e-6);
    // The label's entry is the only negative one.
    EXPECT_LT(grad(i, labels[i]), 0.0f);
  }
}

TEST(SoftmaxXent, GradientResizesOnlyWhenNeeded) {
  const nt::matrix logits = uniform_matrix(3, 4, -1.0f, 1.0f, 41);
  const std::uint8_t labels[] = {0, 1, 2};
  nt::matrix grad(7, 2); // wrong shape: resized
  nt::softmax_xent_backward(logits, labels, grad);
  EXPECT_EQ(grad.rows(), 3);
  EXPECT_EQ(grad.cols(), 4);
  const float* data = grad.data();
  nt::softmax_xent_backward(logits, labels, grad); // right shape: same buffer
  EXPECT_EQ(grad.data(), data);
}

TEST(SoftmaxXent, AccuracyCounting) {
  // Arg-maxes: row0 -> 2, row1 -> 0, row2 -> 1, row3 -> 0 (tie 0/2), row4 -> 1
  // (tie 1/2).
  nt::matrix logits(5, 3);
  logits << 0.1f, 0.2f, 0.9f, //
      5.0f, -1.0f, 4.0f,      //
      -3.0f, -1.0f, -2.0f,    //
      1.0f, 0.0f, 1.0f,       //
      0.0f, 2.0f, 2.0f;
  const std::uint8_t all_right[] = {2, 0, 1, 0, 1};
  EXPECT_EQ(nt::softmax_xent(logits, all_right).correct, 5u);
  // Ties count only for the lowest index.
  const std::uint8_t tie_high[] = {2, 0, 1, 2, 2};
  EXPECT_EQ(nt::softmax_xent(logits, tie_high).correct, 3u);
  const std::uint8_t all_wrong[] = {0, 1, 0, 1, 0};
  EXPECT_EQ(nt::softmax_xent(logits, all_wrong).correct, 0u);
}

TEST(SoftmaxXent, ArgmaxTiesGoToLowestIndex) {
  nt::matrix m(5, 4);
  m << 1.0f, 1.0f, 1.0f, 1.0f,    //
      0.0f, 3.0f, 1.0f, 3.0f,     //
      -2.0f, -1.0f, -1.0f, -5.0f, //
      0.0f, 0.0f, 0.0f, 7.0f,     //
      9.0f, 1.0f, 9.0f, 9.0f;
  EXPECT_EQ(nt::argmax_row(m, 0), 0u);
  EXPECT_EQ(nt::argmax_row(m, 1), 1u);
  EXPECT_EQ(nt::argmax_row(m, 2), 1u);
  EXPECT_EQ(nt::argmax_row(m, 3), 3u);
  EXPECT_EQ(nt::argmax_row(m, 4), 0u);
}
