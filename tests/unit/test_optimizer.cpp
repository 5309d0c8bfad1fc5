// Optimizers: two steps on a tiny vector against values worked out by hand,
// state layout, configuration validation, and a long vector (several of the
// implementation's 512-element chunks) against a scalar reference.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "nettorrent/error.hpp"
#include "nettorrent/optimizer.hpp"
#include "nettorrent/rng.hpp"

namespace nt = nettorrent;

namespace {

// The tiny problem every hand-worked test uses.
//   w0 = [1, -2],  g1 = [0.5, -1],  g2 = [0.25, 0.5]
constexpr float g1[] = {0.5f, -1.0f};
constexpr float g2[] = {0.25f, 0.5f};

struct two_steps {
  std::vector<float> after1, after2;
  nt::optimizer_state state;
  std::size_t state_m_size_initial = 0, state_v_size_initial = 0;
};

two_steps run_two_steps(const nt::optimizer_config& cfg) {
  const auto opt = nt::make_optimizer(cfg);
  two_steps out;
  std::vector<float> w{1.0f, -2.0f};
  out.state = opt->make_state(w.size());
  out.state_m_size_initial = out.state.m.size();
  out.state_v_size_initial = out.state.v.size();
  EXPECT_EQ(out.state.steps, 0u);
  opt->step(w.data(), g1, w.size(), out.state);
  EXPECT_EQ(out.state.steps, 1u);
  out.after1 = w;
  opt->step(w.data(), g2, w.size(), out.state);
  EXPECT_EQ(out.state.steps, 2u);
  out.after2 = w;
  return out;
}

constexpr double tol = 2e-6;

nt::optimizer_config config_of(nt::optimizer_kind kind, float lr) {
  nt::optimizer_config cfg;
  cfg.kind = kind;
  cfg.learning_rate = lr;
  return cfg;
}

} // namespace

TEST(Optimizer, SgdByHand) {
  // lr = 0.1
  // step 1: w = [1 - 0.1*0.5, -2 - 0.1*(-1)]        = [0.95, -1.9]
  // step 2: w = [0.95 - 0.1*0.25, -1.9 - 0.1*0.5]   = [0.925, -1.95]
  const auto r = run_two_steps(config_of(nt::optimizer_kind::sgd, 0.1f));
  EXPECT_NEAR(r.after1[0], 0.95, tol);
  EXPECT_NEAR(r.after1[1], -1.9, tol);
  EXPECT_NEAR(r.after2[0], 0.925, tol);
  EXPECT_NEAR(r.after2[1], -1.95, tol);
  // SGD keeps no moments.
  EXPECT_EQ(r.state_m_size_initial, 0u);
  EXPECT_EQ(r.state_v_size_initial, 0u);
}

TEST(Optimizer, MomentumClassicalByHand) {
  // lr = 0.1, mu = 0.9
  // step 1: v = 0.9*0 + g1 = [0.5, -1]
  //         w = [1 - 0.1*0.5, -2 - 0.1*(-1)]               = [0.95, -1.9]
  // step 2: v = 0.9*[0.5, -1] + [0.25, 0.5] = [0.7, -0.4]
  //         w = [0.95 - 0.1*0.7, -1.9 - 0.1*(-0.4)]        = [0.88, -1.86]
  auto cfg = config_of(nt::optimizer_kind::momentum, 0.1f);
  cfg.momentum = 0.9f;
  cfg.nesterov = false;
  const auto r = run_two_steps(cfg);
  EXPECT_NEAR(r.after1[0], 0.95, tol);
  EXPECT_NEAR(r.after1[1], -1.9, tol);
  EXPECT_NEAR(r.after2[0], 0.88, tol);
  EXPECT_NEAR(r.after2[1], -1.86, tol);
  EXPECT_EQ(r.state_m_size_initial, 2u);
  EXPECT_EQ(r.state_v_size_initial, 0u);
  ASSERT_EQ(r.state.m.size(), 2u);
  EXPECT_NEAR(r.state.m[0], 0.7, tol);
  EXPECT_NEAR(r.state.m[1], -0.4, tol);
}

TEST(Optimizer, MomentumNesterovByHand) {
  // lr = 0.1, mu = 0.9
  // step 1: v = [0.5, -1]
  //         g + mu v = [0.5 + 0.45, -1 - 0.9] = [0.95, -1.9]
  //         w = [1 - 0.095, -2 + 0.19]                  = [0.905, -1.81]
  // step 2: v = 0.9*[0.5, -1] + [0.25, 0.5] = [0.7, -0.4]
  //         g + mu v = [0.25 + 0.63, 0.5 - 0.36] = [0.88, 0.14]
  //         w = [0.905 - 0.088, -1.81 - 0.014]          = [0.817, -1.824]
  auto cfg = config_of(nt::optimizer_kind::momentum, 0.1f);
  cfg.momentum = 0.9f;
  cfg.nesterov = true;
  const auto r = run_two_steps(cfg);
  EXPECT_NEAR(r.after1[0], 0.905, tol);
  EXPECT_NEAR(r.after1[1], -1.81, tol);
  EXPECT_NEAR(r.after2[0], 0.817, tol);
  EXPECT_NEAR(r.after2[1], -1.824, tol);
  ASSERT_EQ(r.state.m.size(), 2u);
  EXPECT_NEAR(r.state.m[0], 0.7, tol);
  EXPECT_NEAR(r.state.m[1], -0.4, tol);
}

TEST(Optimizer, AdagradByHand) {
  // lr = 0.1, eps = 0.5 (large, so that a missing eps would show)
  // step 1: G = [0.25, 1], sqrt(G) = [0.5, 1]
  //         w = [1 - 0.1*0.5/(0.5+0.5), -2 - 0.1*(-1)/(1+0.5)]
  //           = [1 - 0.05, -2 + 0.1/1.5]                = [0.95, -1.933333..]
  // step 2: G = [0.25 + 0.0625, 1 + 0.25] = [0.3125, 1.25]
  //         sqrt(G) = [sqrt(5)/4, sqrt(5)/2]
  //         w0 -= 0.1 * 0.25/(sqrt(5)/4 + 0.5) = 0.1 / (sqrt(5) + 2) = 0.1 (sqrt(5) - 2)
  //         w1 -= 0.1 * 0.5/(sqrt(5)/2 + 0.5)  = 0.1 / (sqrt(5) + 1) = 0.1 (sqrt(5) - 1)/4
  auto cfg = config_of(nt::optimizer_kind::adagrad, 0.1f);
  cfg.epsilon = 0.5f;
  const auto r = run_two_steps(cfg);
  const double s5 = std::sqrt(5.0);
  const double w1_after1 = -2.0 + 0.1 / 1.5;
  EXPECT_NEAR(r.after1[0], 0.95, tol);
  EXPECT_NEAR(r.after1[1], w1_after1, tol);
  EXPECT_NEAR(r.after2[0], 0.95 - 0.1 * (s5 - 2.0), tol);            // 0.9263932
  EXPECT_NEAR(r.after2[1], w1_after1 - 0.1 * (s5 - 1.0) / 4.0, tol); // -1.9642350
  EXPECT_EQ(r.state_m_size_initial, 0u);
  EXPECT_EQ(r.state_v_size_initial, 2u);
  ASSERT_EQ(r.state.v.size(), 2u);
  EXPECT_NEAR(r.state.v[0], 0.3125, tol);
  EXPECT_NEAR(r.state.v[1], 1.25, tol);
}

TEST(Optimizer, RmspropByHand) {
  // lr = 0.1, rho = 0.75, eps = 0.25
  // step 1: E = 0.75*0 + 0.25*[0.25, 1] = [0.0625, 0.25], sqrt(E) = [0.25, 0.5]
  //         w = [1 - 0.1*0.5/0.5, -2 - 0.1*(-1)/0.75]  = [0.9, -1.866666..]
  // step 2: g2^2 = [0.0625, 0.25] = E, so E stays [0.0625, 0.25]
  //         w = [0.9 - 0.1*0.25/0.5, -1.8666.. - 0.1*0.5/0.75]
  //           = [0.85, -1.933333..]
  auto cfg = config_of(nt::optimizer_kind::rmsprop, 0.1f);
  cfg.rho = 0.75f;
  cfg.epsilon = 0.25f;
  const auto r = run_two_steps(cfg);
  EXPECT_NEAR(r.after1[0], 0.9, tol);
  EXPECT_NEAR(r.after1[1], -2.0 + 0.1 / 0.75, tol);
  EXPECT_NEAR(r.after2[0], 0.85, tol);
  EXPECT_NEAR(r.after2[1], -2.0 + 0.1 / 0.75 - 0.05 / 0.75, tol);
  EXPECT_EQ(r.state_m_size_initial, 0u);
  EXPECT_EQ(r.state_v_size_initial, 2u);
  ASSERT_EQ(r.state.v.size(), 2u);
  EXPECT_NEAR(r.state.v[0], 0.0625, tol);
  EXPECT_NEAR(r.state.v[1], 0.25, tol);
}

TEST(Optimizer, AdamByHand) {
  // lr = 0.1, beta1 = 0.5, beta2 = 0.75, eps = 0.5
  // step 1 (t = 1): m = 0.5*g1 = [0.25, -0.5]; v = 0.25*g1^2 = [0.0625, 0.25]
  //   mhat = m/(1-0.5) = [0.5, -1]; vhat = v/(1-0.75) = [0.25, 1]; sqrt = [0.5, 1]
  //   w = [1 - 0.1*0.5/(0.5+0.5), -2 - 0.1*(-1)/(1+0.5)] = [0.95, -1.933333..]
  // step 2 (t = 2): m = 0.5*[0.25, -0.5] + 0.5*[0.25, 0.5] = [0.25, 0]
  //   v = 0.75*[0.0625, 0.25] + 0.25*[0.0625, 0.25] = [0.0625, 0.25]
  //   mhat = m/(1-0.25) = [1/3, 0]; vhat = v/(1-0.5625) = v*16/7 = [1/7, 4/7]
  //   w0 = 0.95 - 0.1*(1/3)/(sqrt(1/7) + 0.5)          = 0.9120337..
  //   w1 unchanged (mhat = 0)                            = -1.933333..
  auto cfg = config_of(nt::optimizer_kind::adam, 0.1f);
  cfg.beta1 = 0.5f;
  cfg.beta2 = 0.75f;
  cfg.epsilon = 0.5f;
  const auto r = run_two_steps(cfg);
  const double w1_after1 = -2.0 + 0.1 / 1.5;
  EXPECT_NEAR(r.after1[0], 0.95, tol);
  EXPECT_NEAR(r.after1[1], w1_after1, tol);
  EXPECT_NEAR(r.after2[0], 0.95 - 0.1 * (1.0 / 3.0) / (std::sqrt(1.0 / 7.0) + 0.5), tol);
  EXPECT_NEAR(r.after2[1], w1_after1, tol);
  EXPECT_EQ(r.state_m_size_initial, 2u);
  EXPECT_EQ(r.state_v_size_initial, 2u);
  ASSERT_EQ(r.state.m.size(), 2u);
  ASSERT_EQ(r.state.v.size(), 2u);
  EXPECT_NEAR(r.state.m[0], 0.25, tol);
  EXPECT_NEAR(r.state.m[1], 0.0, tol);
  EXPECT_NEAR(r.state.v[0], 0.0625, tol);
  EXPECT_NEAR(r.state.v[1], 0.25, tol);
}

TEST(Optimizer, AdamFirstStepIsLearningRateTimesSign) {
  // With bias correction, step 1 gives mhat = g, vhat = g^2, so
  // w -= lr * g / (|g| + eps) ~ lr * sign(g) for eps = 1e-8.
  //   w = [1 - 0.1, -2 + 0.1] = [0.9, -1.9]
  auto cfg = config_of(nt::optimizer_kind::adam, 0.1f);
  cfg.beta1 = 0.9f;
  cfg.beta2 = 0.999f;
  cfg.epsilon = 1e-8f;
  const auto opt = nt::make_optimizer(cfg);
  std::vector<float> w{1.0f, -2.0f};
  auto s = opt->make_state(2);
  opt->step(w.data(), g1, 2, s);
  EXPECT_NEAR(w[0], 0.9, 1e-6);
  EXPECT_NEAR(w[1], -1.9, 1e-6);
}

TEST(Optimizer, StateSizesAndStepCounter) {
  struct expect_sizes {
    nt::optimizer_kind kind;
    bool m, v;
  };
  for (const auto& e : {expect_sizes{nt::optimizer_kind::sgd, false, false},
                        expect_sizes{nt::optimizer_kind::momentum, true, false},
                        expect_sizes{nt::optimizer_kind::adagrad, false, true},
                        expect_sizes{nt::optimizer_kind::rmsprop, false, true},
                        expect_sizes{nt::optimizer_kind::adam, true, true}}) {
    SCOPED_TRACE(std::string{nt::to_string(e.kind)});
    const auto opt = nt::make_optimizer(config_of(e.kind, 0.01f));
    EXPECT_EQ(opt->config().kind, e.kind);
    auto s = opt->make_state(7);
    EXPECT_EQ(s.m.size(), e.m ? 7u : 0u);
    EXPECT_EQ(s.v.size(), e.v ? 7u : 0u);
    for (float x : s.m)
      EXPECT_EQ(x, 0.0f);
    for (float x : s.v)
      EXPECT_EQ(x, 0.0f);
    EXPECT_EQ(s.steps, 0u);
    std::vector<float> w(7, 1.0f), g(7, 0.5f);
    for (int i = 0; i < 5; ++i)
      opt->step(w.data(), g.data(), w.size(), s);
    EXPECT_EQ(s.steps, 5u);
    for (float x : w)
      EXPECT_LT(x, 1.0f); // every optimizer moves against a positive gradient
  }
}

TEST(Optimizer, KindNamesRoundTrip) {
  for (auto k : {nt::optimizer_kind::sgd, nt::optimizer_kind::momentum, nt::optimizer_kind::adagrad,
                 nt::optimizer_kind::rmsprop, nt::optimizer_kind::adam})
    EXPECT_EQ(nt::parse_optimizer_kind(nt::to_string(k)), k);
  EXPECT_EQ(nt::parse_optimizer_kind("adam"), nt::optimizer_kind::adam);
  EXPECT_THROW(nt::parse_optimizer_kind("adamw"), nt::error);
  EXPECT_THROW(nt::parse_optimizer_kind(""), nt::error);
  try {
    nt::parse_optimizer_kind("lbfgs");
    FAIL() << "no exception";
  } catch (const nt::error& e) {
    EXPECT_NE(std::string{e.what()}.find("lbfgs"), std::string::npos) << e.what();
  }
}

namespace {

/// Expects cfg.validate() (and make_optimizer) to throw nettorrent::error
/// whose message names `key`.
void expect_rejected(const nt::optimizer_config& cfg, const std::string& key) {
  try {
    cfg.validate();
    ADD_FAILURE() << "validate() accepted a bad " << key;
  } catch (const nt::error& e) {
    EXPECT_NE(std::string{e.what()}.find(key), std::string::npos)
        << "message does not name " << key << ": " << e.what();
  }
  EXPECT_THROW(nt::make_optimizer(cfg), nt::error) << key;
}

} // namespace

TEST(Optimizer, ValidateRejectsOutOfRangeValues) {
  const nt::optimizer_config good;
  EXPECT_NO_THROW(good.validate());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();

  for (float lr : {0.0f, -0.1f, nan, inf, 11.0f}) {
    auto c = good;
    c.learning_rate = lr;
    expect_rejected(c, "learning_rate");
  }
  for (float mu : {1.0f, 1.5f, -0.1f, nan}) {
    auto c = good;
    c.momentum = mu;
    expect_rejected(c, "momentum");
  }
  for (float b : {1.0f, -0.5f, nan}) {
    auto c = good;
    c.beta1 = b;
    expect_rejected(c, "beta1");
    c = good;
    c.beta2 = b;
    expect_rejected(c, "beta2");
    c = good;
    c.rho = b;
    expect_rejected(c, "rho");
  }
  for (float eps : {0.0f, -1e-8f, 2.0f, nan}) {
    auto c = good;
    c.epsilon = eps;
    expect_rejected(c, "epsilon");
  }

  // Boundary values that are allowed.
  auto c = good;
  c.momentum = 0.0f;
  c.beta1 = 0.0f;
  c.beta2 = 0.0f;
  c.rho = 0.0f;
  c.epsilon = 1.0f;
  c.learning_rate = 10.0f;
  EXPECT_NO_THROW(c.validate());
}

// The implementation processes its arrays in chunks of 512 elements; a
// vector of 1500 (two full chunks and a partial one) must be updated exactly
// like every element on its own.
TEST(Optimizer, AdamLongVectorMatchesScalarReference) {
  const std::size_t n = 1500;
  nt::optimizer_config cfg = config_of(nt::optimizer_kind::adam, 0.01f);
  cfg.beta1 = 0.9f;
  cfg.beta2 = 0.999f;
  cfg.epsilon = 1e-6f;
  const auto opt = nt::make_optimizer(cfg);

  nt::rng gen{1234};
  auto uniform = [&] { return 2.0f * nt::unit_float(gen.next()) - 1.0f; };
  std::vector<float> w(n);
  for (auto& x : w)
    x = uniform();
  auto s = opt->make_state(n);

  // Scalar reference in double: m, v, w per element.
  std::vector<double> rw(w.begin(), w.end()), rm(n, 0.0), rv(n, 0.0);
  const double b1 = cfg.beta1, b2 = cfg.beta2, lr = cfg.learning_rate, eps = cfg.epsilon;

  std::vector<float> g(n);
  for (int t = 1; t <= 4; ++t) {
    for (auto& x : g)
      x = uniform();
    opt->step(w.data(), g.data(), n, s);
    for (std::size_t i = 0; i < n; ++i) {
      const double gi = g[i];
      rm[i] = b1 * rm[i] + (1 - b1) * gi;
      rv[i] = b2 * rv[i] + (1 - b2) * gi * gi;
      const double mhat = rm[i] / (1 - std::pow(b1, t));
      const double vhat = rv[i] / (1 - std::pow(b2, t));
      rw[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
  EXPECT_EQ(s.steps, 4u);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    // Each step moves w by at most ~lr; float rounding of that is ~1e-9.
    if (std::fabs(w[i] - rw[i]) > 1e-6 || std::fabs(s.m[i] - rm[i]) > 1e-6
        || std::fabs(s.v[i] - rv[i]) > 1e-6 * std::max(1e-3, rv[i])) {
      if (++bad <= 5)
        ADD_FAILURE() << "element " << i << ": w " << w[i] << " vs " << rw[i] << ", m " << s.m[i]
                      << " vs " << rm[i] << ", v " << s.v[i] << " vs " << rv[i];
    }
  }
  EXPECT_EQ(bad, 0u);
}

// Same chunking check for the other stateful optimizers: one call on 1500
// elements equals 1500 calls on one element each.
TEST(Optimizer, LongVectorEqualsElementwiseUpdates) {
  const std::size_t n = 1500;
  auto momentum = config_of(nt::optimizer_kind::momentum, 0.05f);
  auto nesterov = momentum;
  nesterov.nesterov = true;
  for (const auto& cfg : {config_of(nt::optimizer_kind::sgd, 0.05f), momentum, nesterov,
                          config_of(nt::optimizer_kind::adagrad, 0.05f),
                          config_of(nt::optimizer_kind::rmsprop, 0.05f),
                          config_of(nt::optimizer_kind::adam, 0.05f)}) {
    SCOPED_TRACE(std::string{nt::to_string(cfg.kind)} + (cfg.nesterov ? " nesterov" : ""));
    const auto opt = nt::make_optimizer(cfg);
    nt::rng gen{99};
    auto uniform = [&] { return 2.0f * nt::unit_float(gen.next()) - 1.0f; };
    std::vector<float> w(n);
    for (auto& x : w)
      x = uniform();
    std::vector<float> w1 = w;
    auto s = opt->make_state(n);
    std::vector<nt::optimizer_state> s1(n, opt->make_state(1));
    std::vector<float> g(n);
    for (int t = 0; t < 3; ++t) {
      for (auto& x : g)
        x = uniform();
      opt->step(w.data(), g.data(), n, s);
      for (std::size_t i = 0; i < n; ++i)
        opt->step(&w1[i], &g[i], 1, s1[i]);
    }
    std::size_t bad = 0;
    for (std::size_t i = 0; i < n; ++i)
      if (std::fabs(w[i] - w1[i]) > 1e-6f * std::max(1.0f, std::fabs(w1[i])))
        if (++bad <= 5)
          ADD_FAILURE() << "element " << i << ": " << w[i] << " vs " << w1[i];
    EXPECT_EQ(bad, 0u);
  }
}
