// The sync policies' table and their exchanges as plain functions over
// whole-layer states (nettorrent/sync_policy.hpp), without actors.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>

#include "nettorrent/error.hpp"
#include "nettorrent/slice_ops.hpp"
#include "nettorrent/sync_policy.hpp"

namespace nt = nettorrent;

namespace {

// A layer state of 5 inputs x 7 neurons whose every value depends on `seed`.
nt::layer_state layer(float seed) {
  nt::layer_state s;
  s.params.w.resize(5, 7);
  s.params.b.resize(7);
  for (Eigen::Index k = 0; k < s.params.w.size(); ++k)
    s.params.w.data()[k] = seed * 0.37f + 0.011f * static_cast<float>(k % 13) - 0.05f;
  for (Eigen::Index k = 0; k < s.params.b.size(); ++k)
    s.params.b.data()[k] = -seed * 0.21f + 0.003f * static_cast<float>(k);
  auto moments = [&](nt::optimizer_state& o, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
      o.m.push_back(seed * 0.01f + 1e-4f * static_cast<float>(k));
      o.v.push_back(seed * seed * 1e-3f + 1e-6f * static_cast<float>(k));
    }
    o.steps = 40;
  };
  moments(s.w_state, 35);
  moments(s.b_state, 7);
  return s;
}

bool same_bits(const nt::layer_state& a, const nt::layer_state& b) {
  auto eq = [](const float* x, const float* y, std::size_t n) {
    return std::memcmp(x, y, n * sizeof(float)) == 0;
  };
  return nt::same_shape(a.params, b.params)
         && eq(a.params.w.data(), b.params.w.data(), static_cast<std::size_t>(a.params.w.size()))
         && eq(a.params.b.data(), b.params.b.data(), static_cast<std::size_t>(a.params.b.size()))
         && a.w_state.m == b.w_state.m && a.w_state.v == b.w_state.v
         && a.b_state.m == b.b_state.m && a.b_state.v == b.b_state.v
         && a.w_state.steps == b.w_state.steps && a.b_state.steps == b.b_state.steps;
}

std::vector<nt::layer_state> exchange(nt::sync_policy p, std::vector<nt::layer_state> replicas,
                                      std::size_t best, nt::policy_state& state,
                                      nt::dense_params theta = {},
                                      const nt::outer_config& cfg = {}) {
  nt::exchange_input in{replicas, best, cfg, theta, state};
  return nt::policy_def(p).exchange(in);
}

} // namespace

TEST(SyncPolicyTable, EveryRowSitsAtItsIdAndItsNameParsesBack) {
  std::set<std::string> names;
  const auto& all = nt::sync_policies();
  for (std::size_t i = 0; i < all.size(); ++i) {
    const nt::sync_policy_def& d = *all[i];
    EXPECT_EQ(static_cast<std::size_t>(d.id), i) << d.name;
    EXPECT_EQ(&nt::policy_def(d.id), &d);
    EXPECT_EQ(nt::policy_def_of_id(static_cast<unsigned>(i)), &d);
    EXPECT_EQ(nt::parse_sync_policy(d.name), d.id);
    EXPECT_EQ(nt::to_string(d.id), d.name);
    EXPECT_TRUE(names.insert(std::string{d.name}).second) << d.name << " twice";
    // A row that exchanges has the exchange; a row with a state checks it.
    EXPECT_EQ(d.exchanges, d.exchange != nullptr) << d.name;
    EXPECT_EQ(d.keeps_state, d.check_request != nullptr) << d.name;
    EXPECT_EQ(d.keeps_state, d.initial_state != nullptr) << d.name;
    EXPECT_EQ(d.keeps_state, d.check_state != nullptr) << d.name;
    // Picking the best replica and scoring the synced model exclude each other.
    EXPECT_FALSE(d.picks_best && d.scores_synced_model) << d.name;
  }
  EXPECT_EQ(nt::policy_def_of_id(static_cast<unsigned>(all.size())), nullptr);
  try {
    (void)nt::parse_sync_policy("fastest");
    ADD_FAILURE() << "an unknown policy was accepted";
  } catch (const nt::error& e) {
    EXPECT_NE(std::string{e.what()}.find("\"fastest\" (expected best, average, none or outer)"),
              std::string::npos)
        << e.what();
  }
}

TEST(SyncPolicyTable, TheRowsSayWhatEachPolicyDoes) {
  EXPECT_TRUE(nt::sync::best.picks_best);
  EXPECT_FALSE(nt::sync::best.keeps_state);
  EXPECT_TRUE(nt::sync::average.scores_synced_model);
  EXPECT_FALSE(nt::sync::none.exchanges);
  EXPECT_TRUE(nt::sync::outer.scores_synced_model);
  EXPECT_TRUE(nt::sync::outer.keeps_state);
  EXPECT_EQ(nt::policy_names([](const nt::sync_policy_def& d) { return !d.picks_best; }),
            "\"average\", \"none\" or \"outer\"");
}

TEST(SyncPolicyExchange, BestGivesEveryReplicaTheBestOnesLayer) {
  nt::policy_state unused;
  // Only the best replica is read: the others may be left empty.
  const auto out = exchange(nt::sync_policy::best, {nt::layer_state{}, layer(2), nt::layer_state{}},
                            1, unused);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(same_bits(out[0], layer(2)));
  EXPECT_THROW(exchange(nt::sync_policy::best, {layer(1)}, 3, unused), nt::error);
}

TEST(SyncPolicyExchange, AverageOfWholeLayersEqualsTheGluedAverageOfTheirSlices) {
  const std::vector<nt::layer_state> replicas{layer(1), layer(2), layer(4)};
  nt::policy_state unused;
  const auto out = exchange(nt::sync_policy::average, replicas, 0, unused);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(same_bits(out[0], nt::average_states({&replicas[0], &replicas[1], &replicas[2]})));
  // The leader glues a replica's slices before the exchange; averaging slice
  // by slice and gluing the means gives the same bits (the mean is taken
  // element by element).
  const auto cols = nt::split_columns(7, 3);
  std::vector<nt::layer_state> parts;
  for (const auto& c : cols) {
    std::vector<nt::layer_state> cut;
    for (const auto& r : replicas)
      cut.push_back(nt::cut_slice(r, c));
    parts.push_back(nt::average_states({&cut[0], &cut[1], &cut[2]}));
  }
  EXPECT_TRUE(same_bits(out[0], nt::glue_slices(parts)));
  EXPECT_NEAR(out[0].params.w(0, 0),
              (replicas[0].params.w(0, 0) + replicas[1].params.w(0, 0)
               + replicas[2].params.w(0, 0)) / 3,
              1e-6);
}

TEST(SyncPolicyExchange, OuterIsTheOuterStepAndUpdatesTheLayersMomentum) {
  const std::vector<nt::layer_state> replicas{layer(1), layer(3)};
  nt::outer_config cfg;
  const nt::dense_params theta = layer(2).params;
  nt::policy_state state = nt::sync::outer.initial_state(theta);
  ASSERT_EQ(state.parts.size(), 1u);
  EXPECT_EQ(state.parts[0].w.cwiseAbs().maxCoeff(), 0.0f) << "no momentum before round 1";
  EXPECT_EQ(nt::sync::outer.check_state(state, theta), "");
  nt::outer_state expected_state{theta, state.parts[0]};
  const auto expected = nt::outer_exchange(cfg, {&replicas[0], &replicas[1]}, expected_state);
  const auto out = exchange(nt::sync_policy::outer, replicas, 0, state, theta, cfg);
  ASSERT_EQ(out.size(), expected.size());
  for (std::size_t r = 0; r < out.size(); ++r)
    EXPECT_TRUE(same_bits(out[r], expected[r]));
  ASSERT_EQ(state.parts.size(), 1u);
  const nt::dense_params& v = state.parts[0];
  EXPECT_TRUE(nt::same_shape(v, expected_state.velocity));
  EXPECT_EQ(std::memcmp(v.w.data(), expected_state.velocity.w.data(),
                        static_cast<std::size_t>(v.w.size()) * sizeof(float)),
            0);
  EXPECT_GT(v.w.cwiseAbs().maxCoeff(), 0.0f) << "the momentum moved";
}

TEST(SyncPolicyExchange, OuterRefusesARequestOrAStateThatDoesNotFit) {
  const nt::dense_params theta = layer(2).params;
  const nt::policy_state ok = nt::sync::outer.initial_state(theta);
  nt::outer_config cfg;
  EXPECT_EQ(nt::sync::outer.check_request(cfg, theta, ok), "");
  cfg.learning_rate = 0;
  EXPECT_NE(nt::sync::outer.check_request(cfg, theta, ok).find("outer learning rate"),
            std::string::npos);
  cfg = {};
  cfg.momentum = 1;
  EXPECT_NE(nt::sync::outer.check_request(cfg, theta, ok).find("outer momentum"),
            std::string::npos);
  nt::policy_state bad = ok;
  bad.parts[0].w.resize(2, 2);
  EXPECT_NE(nt::sync::outer.check_request({}, theta, bad).find("do not match"), std::string::npos);
  EXPECT_NE(nt::sync::outer.check_state(bad, theta).find("an outer momentum of 2 x 2"),
            std::string::npos);
  EXPECT_NE(nt::sync::outer.check_state(nt::policy_state{}, theta).find("0 matrices"),
            std::string::npos);
}
