// Random numbers (generator, hashing, normal deviates), the math-thread set-up,
// and the centralised trainer's determinism and ability to learn.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <vector>

#include <pmmintrin.h>
#include <xmmintrin.h>

#include <gtest/gtest.h>

#include "nettorrent/centralised.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/rng.hpp"
#include "nettorrent/tensor.hpp"

namespace nt = nettorrent;

// ------------------------------------------------------------------- mixing

TEST(Rng, Mix64MatchesSplitMix64Reference) {
  // The first output of the reference SplitMix64 generator seeded with 0.
  static_assert(nt::mix64(0) == 0xe220a8397b1dcdafULL);
  EXPECT_EQ(nt::mix64(0), 0xe220a8397b1dcdafULL);
  EXPECT_NE(nt::mix64(1), nt::mix64(2));
}

TEST(Rng, XoshiroMatchesReferenceOutputs) {
  // xoshiro256** from the state {1, 2, 3, 4}, computed with an independent
  // implementation of the published algorithm.
  nt::rng gen{0};
  gen.set_state({1, 2, 3, 4});
  const std::uint64_t expect[] = {11520ULL,
                                  0ULL,
                                  1509978240ULL,
                                  1215971899390074240ULL,
                                  1216172134540287360ULL,
                                  607988272756665600ULL};
  for (auto e : expect)
    EXPECT_EQ(gen.next(), e);
}

TEST(Rng, SameSeedSameSequence) {
  nt::rng a{42}, b{42}, c{43};
  std::size_t equal_to_other_seed = 0;
  for (int i = 0; i < 1000; ++i) {
    const auto x = a.next();
    EXPECT_EQ(x, b.next());
    if (x == c.next())
      ++equal_to_other_seed;
  }
  EXPECT_EQ(equal_to_other_seed, 0u);
  // Seeding never produces the all-zero state (xoshiro's fixed point).
  for (std::uint64_t seed : {0ULL, 1ULL, ~0ULL}) {
    const nt::rng gen{seed};
    const auto s = gen.state();
    EXPECT_FALSE(s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0) << seed;
  }
}

TEST(Rng, StateRoundTrip) {
  nt::rng a{7};
  for (int i = 0; i < 10; ++i)
    a.next();
  const auto saved = a.state();
  std::vector<std::uint64_t> first;
  for (int i = 0; i < 20; ++i)
    first.push_back(a.next());
  nt::rng b{12345};
  b.set_state(saved);
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(b.next(), first[static_cast<std::size_t>(i)]);
}

TEST(Rng, BelowStaysInRange) {
  nt::rng gen{5};
  for (std::uint64_t bound :
       {1ULL, 2ULL, 3ULL, 7ULL, 10ULL, 1000ULL, 1ULL << 33, (1ULL << 63) + 12345ULL, ~0ULL}) {
    std::uint64_t largest = 0;
    for (int i = 0; i < 2000; ++i) {
      const auto x = gen.below(bound);
      ASSERT_LT(x, bound) << bound;
      largest = std::max(largest, x);
    }
    if (bound == 1)
      EXPECT_EQ(largest, 0u);
    else if (bound <= 1000)
      EXPECT_GE(largest, bound * 9 / 10) << "never reaches the top of [0, " << bound << ")";
    else
      EXPECT_GT(largest, bound / 2) << bound;
  }
}

TEST(Rng, BelowIsRoughlyUniform) {
  // 100000 draws in [0, 10): chi-square with 9 degrees of freedom. The
  // 99.99th percentile is about 33.7.
  nt::rng gen{77};
  constexpr int draws = 100000;
  std::vector<int> counts(10, 0);
  for (int i = 0; i < draws; ++i)
    ++counts[static_cast<std::size_t>(gen.below(10))];
  double chi2 = 0;
  const double expected = draws / 10.0;
  for (int c : counts)
    chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 33.7);
  for (int c : counts)
    EXPECT_NEAR(c, expected, 0.05 * expected);

  // A bound that is not a power of two and large: both halves equally likely.
  const std::uint64_t big = (1ULL << 63) + (1ULL << 62); // 3 * 2^62
  int low = 0;
  for (int i = 0; i < 20000; ++i)
    if (gen.below(big) < big / 2)
      ++low;
  EXPECT_NEAR(low, 10000, 400);
}

TEST(Rng, ShuffleIsDeterministicPermutation) {
  std::vector<std::uint32_t> base(1000);
  std::iota(base.begin(), base.end(), 0u);

  auto a = base, b = base, c = base;
  nt::rng ga{3}, gb{3}, gc{4};
  nt::shuffle(a, ga);
  nt::shuffle(b, gb);
  nt::shuffle(c, gc);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, base);
  std::size_t fixed_points = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] == base[i])
      ++fixed_points;
  EXPECT_LT(fixed_points, 10u); // a random permutation has ~1
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, base);

  // A second shuffle with the advanced generator gives another order.
  auto again = a;
  nt::shuffle(again, ga);
  EXPECT_NE(again, a);

  // Trivial sizes.
  std::vector<std::uint32_t> empty, one{9};
  nt::shuffle(empty, ga);
  nt::shuffle(one, ga);
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(one, std::vector<std::uint32_t>{9});
}

TEST(Rng, ShuffleFirstElementIsUniform) {
  // Where element 0 of [0, 4) ends up, over many shuffles: each of the four
  // positions about equally often.
  nt::rng gen{8};
  std::vector<int> where(4, 0);
  for (int i = 0; i < 40000; ++i) {
    std::vector<std::uint32_t> v{0, 1, 2, 3};
    nt::shuffle(v, gen);
    ++where[static_cast<std::size_t>(std::find(v.begin(), v.end(), 0u) - v.begin())];
  }
  for (int w : where)
    EXPECT_NEAR(w, 10000, 500);
}

TEST(Rng, HashCoordsDistinguishesCoordinates) {
  EXPECT_EQ(nt::hash_coords(1, {2, 3}), nt::hash_coords(1, {2, 3}));
  EXPECT_NE(nt::hash_coords(1, {2, 3}), nt::hash_coords(1, {3, 2}));
  EXPECT_NE(nt::hash_coords(1, {2, 3}), nt::hash_coords(2, {2, 3}));
  EXPECT_NE(nt::hash_coords(1, {2}), nt::hash_coords(1, {2, 0}));
  EXPECT_NE(nt::hash_coords(1, {0}), nt::hash_coords(1, {}));
  EXPECT_NE(nt::hash_coords(0, {0, 0, 0}), nt::hash_coords(0, {0, 0}));

  // No collisions over a grid of (seed, layer, row, column).
  std::set<std::uint64_t> seen;
  std::size_t total = 0;
  for (std::uint64_t seed : {0ULL, 1ULL, 2ULL})
    for (std::uint64_t layer = 0; layer < 4; ++layer)
      for (std::uint64_t r = 0; r < 40; ++r)
        for (std::uint64_t c = 0; c < 40; ++c) {
          seen.insert(nt::hash_coords(seed, {layer, r, c}));
          ++total;
        }
  EXPECT_EQ(seen.size(), total);

  // Changing one coordinate flips about half of the bits.
  double flipped = 0;
  for (std::uint64_t c = 0; c < 1000; ++c)
    flipped += static_cast<double>(
        __builtin_popcountll(nt::hash_coords(9, {1, c}) ^ nt::hash_coords(9, {1, c + 1})));
  EXPECT_NEAR(flipped / 1000.0, 32.0, 1.0);
}

TEST(Rng, UnitFloatInUnitInterval) {
  EXPECT_EQ(nt::unit_float(0), 0.0f);
  EXPECT_LT(nt::unit_float(~0ULL), 1.0f);
  EXPECT_GT(nt::unit_float(~0ULL), 0.9999f);
  EXPECT_EQ(nt::unit_float(1ULL << 63), 0.5f);
}

TEST(Rng, NormalFromBitsIsStandardNormal) {
  constexpr int count = 200000;
  double sum = 0, sum_sq = 0;
  int within_one = 0, beyond_three = 0;
  for (int i = 0; i < count; ++i) {
    const double z = nt::normal_from_bits(nt::hash_coords(17, {static_cast<std::uint64_t>(i)}));
    ASSERT_TRUE(std::isfinite(z));
    sum += z;
    sum_sq += z * z;
    if (std::fabs(z) < 1)
      ++within_one;
    if (std::fabs(z) > 3)
      ++beyond_three;
  }
  const double mean = sum / count;
  const double stddev = std::sqrt(sum_sq / count - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(stddev, 1.0, 0.01);
  EXPECT_NEAR(static_cast<double>(within_one) / count, 0.6827, 0.005);
  EXPECT_NEAR(static_cast<double>(beyond_three) / count, 0.0027, 0.0006);

  // Extreme inputs stay finite.
  EXPECT_TRUE(std::isfinite(nt::normal_from_bits(0)));
  EXPECT_TRUE(std::isfinite(nt::normal_from_bits(~0ULL)));
  EXPECT_EQ(nt::normal_from_bits(~0ULL << 32), 0.0f); // u1 = 1 -> radius 0
}

// ------------------------------------------------------------- math threads

TEST(MathThread, PrepareEnablesFlushToZero) {
  const unsigned saved_ftz = _MM_GET_FLUSH_ZERO_MODE();
  const unsigned saved_daz = _MM_GET_DENORMALS_ZERO_MODE();
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_OFF);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_OFF);
  EXPECT_FALSE(nt::flush_to_zero_enabled());
  volatile float smallest = std::numeric_limits<float>::min();
  volatile float half = 0.5f;
  EXPECT_GT(smallest * half, 0.0f) << "denormal result expected without FTZ";

  nt::prepare_math_thread();
  EXPECT_TRUE(nt::flush_to_zero_enabled());
  EXPECT_EQ(smallest * half, 0.0f) << "denormal result not flushed to zero";

  _MM_SET_FLUSH_ZERO_MODE(saved_ftz);
  _MM_SET_DENORMALS_ZERO_MODE(saved_daz);
}

// ------------------------------------------------------ centralised trainer

namespace {

nt::model_config small_model() {
  nt::model_config m;
  m.layers = {24, 16, 12, 4};
  m.hidden = nt::activation::relu;
  return m;
}

nt::optimizer_config adam(float lr) {
  nt::optimizer_config o;
  o.kind = nt::optimizer_kind::adam;
  o.learning_rate = lr;
  return o;
}

bool same_bits(const nt::matrix& a, const nt::matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols()
         && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float))
                == 0;
}

bool same_bits(const nt::row_vector& a, const nt::row_vector& b) {
  return a.size() == b.size()
         && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float))
                == 0;
}

} // namespace

TEST(CentralisedTrainer, SameSeedSameBatchesBitIdentical) {
  nt::prepare_math_thread();
  const nt::image_set data = nt::make_synthetic(320, 24, 4, 0.2f, 5);
  nt::centralised_trainer a{small_model(), adam(5e-3f), 11};
  nt::centralised_trainer b{small_model(), adam(5e-3f), 11};
  nt::centralised_trainer other{small_model(), adam(5e-3f), 12};
  ASSERT_EQ(a.params().size(), 3u);

  std::vector<std::uint32_t> order(data.size());
  std::iota(order.begin(), order.end(), 0u);
  nt::matrix x;
  std::vector<std::uint8_t> labels(32);
  for (std::size_t step = 0; step < 10; ++step) {
    nt::gather_batch(data, order.data() + step * 32, 32, x, labels.data());
    const auto ra = a.train_batch(x, labels.data());
    const auto rb = b.train_batch(x, labels.data());
    other.train_batch(x, labels.data());
    EXPECT_EQ(ra.loss_sum, rb.loss_sum);
    EXPECT_EQ(ra.correct, rb.correct);
  }
  for (std::size_t l = 0; l < a.params().size(); ++l) {
    EXPECT_TRUE(same_bits(a.params()[l].w, b.params()[l].w)) << "layer " << l;
    EXPECT_TRUE(same_bits(a.params()[l].b, b.params()[l].b)) << "layer " << l;
    EXPECT_FALSE(same_bits(a.params()[l].w, other.params()[l].w)) << "layer " << l;
  }
  const auto la = a.layers(), lb = b.layers();
  ASSERT_EQ(la.size(), lb.size());
  for (std::size_t l = 0; l < la.size(); ++l) {
    EXPECT_EQ(la[l].w_state.m, lb[l].w_state.m);
    EXPECT_EQ(la[l].w_state.v, lb[l].w_state.v);
    EXPECT_EQ(la[l].w_state.steps, 10u);
    EXPECT_EQ(la[l].b_state.steps, 10u);
  }
}

TEST(CentralisedTrainer, InitialParamsFollowInitDense) {
  const auto model = small_model();
  nt::centralised_trainer t{model, adam(1e-3f), 21};
  const auto geometry = nt::model_geometry(model);
  ASSERT_EQ(t.geometry().size(), geometry.size());
  for (std::size_t l = 0; l < geometry.size(); ++l) {
    const auto p = nt::init_dense(21, geometry[l]);
    EXPECT_TRUE(same_bits(t.params()[l].w, p.w)) << "layer " << l;
    EXPECT_TRUE(same_bits(t.params()[l].b, p.b)) << "layer " << l;
  }
  EXPECT_EQ(t.geometry().back().act, nt::activation::identity);
  EXPECT_EQ(t.geometry().front().act, nt::activation::relu);
}

TEST(CentralisedTrainer, TrainingReducesLoss) {
  nt::prepare_math_thread();
  const nt::image_set data = nt::make_synthetic(512, 24, 4, 0.25f, 6);
  nt::centralised_trainer t{small_model(), adam(1e-2f), 3};
  const nt::evaluation before = nt::evaluate_model(t.geometry(), t.params(), data, nullptr);

  std::vector<std::uint32_t> order(data.size());
  std::iota(order.begin(), order.end(), 0u);
  nt::rng gen{1};
  nt::matrix x;
  std::vector<std::uint8_t> labels(32);
  double first_epoch_loss = 0, last_epoch_loss = 0;
  const std::size_t batches = data.size() / 32; // 16 batches per epoch, 3 epochs = 48 steps
  for (int epoch = 0; epoch < 3; ++epoch) {
    nt::shuffle(order, gen);
    double loss = 0;
    for (std::size_t b = 0; b < batches; ++b) {
      nt::gather_batch(data, order.data() + b * 32, 32, x, labels.data());
      const auto res = t.train_batch(x, labels.data());
      ASSERT_TRUE(std::isfinite(res.loss_sum));
      loss += res.loss_sum;
    }
    if (epoch == 0)
      first_epoch_loss = loss;
    last_epoch_loss = loss;
  }
  const nt::evaluation after = nt::evaluate_model(t.geometry(), t.params(), data, nullptr);
  EXPECT_LT(last_epoch_loss, 0.5 * first_epoch_loss);
  EXPECT_LT(after.loss, 0.5 * before.loss);
  EXPECT_GT(after.accuracy, 0.9);
  EXPECT_GT(after.accuracy, before.accuracy);
}
