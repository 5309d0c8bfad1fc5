// The swarm leader on its own: sync rounds under `best`, `average`, `outer`
// and `none` over 3 replicas x 3 slices of real neuron slices, and `collect`.
// This file is compiled with -ffp-contract=off (tests/CMakeLists.txt), so the
// outer step worked out here rounds every operation as the leader's does.
#include "fixture.hpp"

namespace actor_tests {
namespace {

/// A run layout in which layer `layer` has R replicas x P slices.
nt::run_layout layout_of(std::size_t R, std::size_t P, std::size_t layer) {
  return nt::run_layout{R, std::vector<std::size_t>(layer + 1, P)};
}

constexpr std::size_t R = 3;       // replicas
constexpr std::size_t P = 3;       // slices of the layer
constexpr std::uint32_t layer = 1; // 12 -> 8, ReLU

class Leader : public ActorTest {
protected:
  Leader() { model.layers = {16, 12, 8, 4}; }

  /// Spawns R x P slices of `layer` (replica r seeded 100 + r, so replicas
  /// differ). With `distinct_moments`, every slice's Adam moments are set to
  /// values unique to (replica, slice, element), with equal step counters.
  void spawn_slices(bool distinct_moments, nt::sync_precision coding = nt::sync_precision::f32,
                    bool feedback = false) {
    nt::optimizer_config opt;
    opt.kind = nt::optimizer_kind::adam;
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t i = 0; i < P; ++i) {
        nt::slice_spec spec;
        spec.replica = static_cast<std::uint32_t>(r);
        spec.index = static_cast<std::uint32_t>(i);
        spec.geometry = nt::slice_of(model, layer, P, i);
        spec.optimizer = opt;
        // Coded rounds send changes from weights every replica shares.
        spec.seed = coding == nt::sync_precision::f32 ? 100 + r : 100;
        spec.sync_coding = coding;
        spec.sync_feedback = feedback;
        spec.max_batch = 64;
        slices.push_back(spawn(nt::neuron_slice, spec));
      }
    if (!distinct_moments)
      return;
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t i = 0; i < P; ++i) {
        nt::layer_state st = state_of(r, i);
        auto fill = [&](nt::optimizer_state& s, float scale) {
          ASSERT_FALSE(s.m.empty());
          ASSERT_EQ(s.m.size(), s.v.size());
          for (std::size_t j = 0; j < s.m.size(); ++j) {
            s.m[j] = scale
                         * (0.001f * static_cast<float>(j)
                            - 0.01f * static_cast<float>((r + 1) * (r + 1)))
                     + 0.1f * static_cast<float>(i);
            s.v[j] =
                scale * 1e-4f * static_cast<float>((j % 7) + r + 1) / static_cast<float>(i + 1);
          }
          s.steps = 5;
        };
        fill(st.w_state, 1.0f);
        fill(st.b_state, 3.0f);
        st.params.b.setConstant(0.01f * static_cast<float>(r) - 0.02f * static_cast<float>(i));
        EXPECT_TRUE(ask_ok(at(r, i), nt::atom::set_state::value, st));
      }
  }

  const nt::neuron_slice_actor& at(std::size_t r, std::size_t i) const { return slices[r * P + i]; }

  nt::layer_state state_of(std::size_t r, std::size_t i) {
    return ask<nt::layer_state>(at(r, i), nt::atom::get_state::value).value_or(nt::layer_state{});
  }

  std::vector<std::vector<nt::layer_state>> all_states() {
    std::vector<std::vector<nt::layer_state>> out(R);
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t i = 0; i < P; ++i)
        out[r].push_back(state_of(r, i));
    return out;
  }

  nt::swarm_leader_actor spawn_leader() {
    auto leader = spawn(nt::swarm_leader, nt::leader_spec{layer, layout_of(R, P, layer)});
    EXPECT_TRUE(ask_ok(leader, nt::atom::wire::value, slices)); // replica-major
    return leader;
  }

  /// A sync round as the coordinator runs it: `sync` computes the
  /// post-exchange layer without touching a slice (checked), then `restore`
  /// sets every replica to it (the best one keeps its own under best).
  /// Returns the bytes read and written.
  std::uint64_t sync(const nt::swarm_leader_actor& leader, std::uint32_t best,
                     nt::sync_policy policy, nt::sync_request outer = {},
                     nt::exchange_result* result = nullptr) {
    const auto before = all_states();
    auto x = ask<nt::exchange_result>(leader, nt::atom::sync::value, best,
                                      static_cast<std::uint8_t>(policy), std::move(outer));
    if (!x)
      return 0;
    EXPECT_TRUE(x->post.size() == 1 || x->post.size() == R);
    const auto untouched = all_states();
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t i = 0; i < P; ++i)
        expect_same_state(untouched[r][i], before[r][i],
                          "computing the exchange changed replica " + std::to_string(r));
    std::uint64_t bytes = x->bytes;
    for (std::uint32_t r = 0; r < R; ++r)
      if (policy != nt::sync_policy::best || r != best)
        bytes += ask<std::uint64_t>(leader, nt::atom::restore::value, r,
                                    x->post.size() == 1 ? x->post.front() : x->post[r])
                     .value_or(0);
    if (result)
      *result = std::move(*x);
    return bytes;
  }

  nt::model_config model;
  std::vector<nt::neuron_slice_actor> slices; ///< replica-major
};

std::size_t bytes_of_replica(const std::vector<nt::layer_state>& states) {
  std::size_t n = 0;
  for (const auto& s : states)
    n += nt::state_bytes(s);
  return n;
}

TEST_F(Leader, BestCopiesTheBestReplicaBitForBit) {
  spawn_slices(true);
  auto leader = spawn_leader();
  const auto before = all_states();
  // The replicas really differ before the round.
  for (std::size_t i = 0; i < P; ++i) {
    EXPECT_FALSE(same_bits(before[0][i].params.w, before[1][i].params.w));
    EXPECT_FALSE(same_bits(before[2][i].w_state.m, before[1][i].w_state.m));
  }
  const std::uint64_t bytes = sync(leader, 1, nt::sync_policy::best);
  EXPECT_GT(bytes, 0u);
  // At least replica 1's state went to the two other replicas.
  EXPECT_GE(bytes, (R - 1) * bytes_of_replica(before[1]));
  const auto after = all_states();
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t i = 0; i < P; ++i)
      expect_same_state(after[r][i], before[1][i],
                        "replica " + std::to_string(r) + " slice " + std::to_string(i));
  EXPECT_TRUE(no_message_waiting());
}

TEST_F(Leader, AverageGivesEveryReplicaTheElementWiseMean) {
  spawn_slices(true);
  auto leader = spawn_leader();
  const auto before = all_states();
  const std::uint64_t bytes = sync(leader, 2, nt::sync_policy::average);
  EXPECT_GT(bytes, 0u);
  // Every replica's state was read and the mean written to every replica.
  std::size_t total = 0;
  for (const auto& rep : before)
    total += bytes_of_replica(rep);
  EXPECT_GE(bytes, total);
  const auto after = all_states();
  for (std::size_t i = 0; i < P; ++i) {
    // The mean worked out here, element by element, in replica order (not
    // with nt::average_states, which the leader itself calls).
    auto mean_of = [&](auto get) {
      auto out = get(before[0][i]);
      const float third = 1.0f / 3.0f;
      for (std::size_t k = 0; k < static_cast<std::size_t>(out.size()); ++k) {
        float acc = get(before[0][i]).data()[k];
        acc += get(before[1][i]).data()[k];
        acc += get(before[2][i]).data()[k];
        out.data()[k] = acc * third;
      }
      return out;
    };
    nt::layer_state mean = before[0][i];
    mean.params.w = mean_of([](const nt::layer_state& x) { return x.params.w; });
    mean.params.b = mean_of([](const nt::layer_state& x) { return x.params.b; });
    mean.w_state.m = mean_of([](const nt::layer_state& x) { return x.w_state.m; });
    mean.w_state.v = mean_of([](const nt::layer_state& x) { return x.w_state.v; });
    mean.b_state.m = mean_of([](const nt::layer_state& x) { return x.b_state.m; });
    mean.b_state.v = mean_of([](const nt::layer_state& x) { return x.b_state.v; });
    // The mean is none of the inputs (the comparison below is not trivial).
    EXPECT_FALSE(same_bits(mean.params.w, before[0][i].params.w));
    EXPECT_FALSE(same_bits(mean.w_state.v, before[2][i].w_state.v));
    EXPECT_FALSE(same_bits(mean.b_state.m, before[1][i].b_state.m));
    EXPECT_EQ(mean.w_state.steps, 5u);
    for (std::size_t r = 0; r < R; ++r)
      expect_same_state(after[r][i], mean,
                        "replica " + std::to_string(r) + " slice " + std::to_string(i));
  }
  EXPECT_TRUE(no_message_waiting());
}

/// An outer state for the whole layer (12 x 8) unlike any replica: theta
/// near replica 0's weights, a momentum of mixed signs.
nt::sync_request outer_of(const std::vector<nt::layer_state>& replica0, float eta, float mu,
                           bool nesterov, bool average_moments) {
  nt::sync_request o;
  o.cfg = nt::outer_config{eta, mu, nesterov, average_moments};
  o.theta = nt::glue_slices(replica0).params;
  o.state.parts = {nt::zero_velocity(o.theta)};
  for (Eigen::Index k = 0; k < o.theta.w.size(); ++k) {
    o.theta.w.data()[k] += 0.003f * static_cast<float>(k % 5) - 0.004f;
    o.state.parts[0].w.data()[k] = 0.002f * static_cast<float>((k % 9) - 4);
  }
  for (Eigen::Index k = 0; k < o.theta.b.size(); ++k) {
    o.theta.b.data()[k] = 0.05f - 0.01f * static_cast<float>(k);
    o.state.parts[0].b.data()[k] = -0.001f * static_cast<float>(k);
  }
  return o;
}

/// The outer step worked out here on plain arrays, one rounded operation at
/// a time: delta = theta - mean, v = mu v + delta, theta' = mean + (delta -
/// eta (delta + mu v)) (Nesterov) or mean + (delta - eta v); mean = the sum
/// in replica order times 1/3.
void expected_outer(const std::vector<const float*>& replicas, float* theta, float* v,
                    std::size_t n, float eta, float mu, bool nesterov) {
  const float third = 1.0f / 3.0f;
  for (std::size_t k = 0; k < n; ++k) {
    float mean = replicas[0][k];
    mean += replicas[1][k];
    mean += replicas[2][k];
    mean *= third;
    const float delta = theta[k] - mean;
    v[k] = mu * v[k] + delta;
    const float move = nesterov ? delta - eta * (delta + mu * v[k]) : delta - eta * v[k];
    theta[k] = mean + move;
  }
}

class LeaderOuter : public Leader, public ::testing::WithParamInterface<bool> {};

TEST_P(LeaderOuter, OneRoundIsTheFormulaBitForBitAndKeepsEachReplicasMoments) {
  const bool nesterov = GetParam();
  spawn_slices(true);
  auto leader = spawn_leader();
  const auto before = all_states();
  std::vector<nt::layer_state> whole; // every replica's layer, glued
  for (const auto& rep : before)
    whole.push_back(nt::glue_slices(rep));
  const nt::sync_request req = outer_of(before[0], 0.7f, 0.9f, nesterov, false);
  // Worked out here.
  nt::dense_params theta = req.theta;
  nt::dense_params v = req.state.parts[0];
  expected_outer({whole[0].params.w.data(), whole[1].params.w.data(), whole[2].params.w.data()},
                 theta.w.data(), v.w.data(), static_cast<std::size_t>(theta.w.size()), 0.7f, 0.9f,
                 nesterov);
  expected_outer({whole[0].params.b.data(), whole[1].params.b.data(), whole[2].params.b.data()},
                 theta.b.data(), v.b.data(), static_cast<std::size_t>(theta.b.size()), 0.7f, 0.9f,
                 nesterov);
  // Not trivially the mean or the old theta.
  const auto avg = nt::mean_params({&whole[0].params, &whole[1].params, &whole[2].params});
  EXPECT_FALSE(same_bits(theta.w, avg.w));
  EXPECT_FALSE(same_bits(theta.w, req.theta.w));
  nt::exchange_result x;
  EXPECT_GT(sync(leader, 0, nt::sync_policy::outer, req, &x), 0u);
  ASSERT_EQ(x.post.size(), R) << "local moments: one state per replica";
  EXPECT_TRUE(same_bits(x.state.parts.at(0).w, v.w));
  EXPECT_TRUE(same_bits(x.state.parts.at(0).b, v.b));
  const auto after = all_states();
  const auto cols = nt::split_columns(8, P);
  for (std::size_t r = 0; r < R; ++r) {
    EXPECT_TRUE(same_bits(x.post[r].params.w, theta.w)) << "replica " << r;
    EXPECT_TRUE(same_bits(x.post[r].params.b, theta.b)) << "replica " << r;
    // The replica's own Adam moments, untouched.
    EXPECT_TRUE(same_bits(x.post[r].w_state.m, whole[r].w_state.m)) << "replica " << r;
    EXPECT_TRUE(same_bits(x.post[r].w_state.v, whole[r].w_state.v)) << "replica " << r;
    EXPECT_TRUE(same_bits(x.post[r].b_state.m, whole[r].b_state.m)) << "replica " << r;
    for (std::size_t i = 0; i < P; ++i) {
      nt::layer_state want = nt::cut_slice(whole[r], cols[i]);
      want.params = nt::cut_slice(nt::layer_state{theta, {}, {}}, cols[i]).params;
      expect_same_state(after[r][i], want,
                        "replica " + std::to_string(r) + " slice " + std::to_string(i));
    }
  }
  EXPECT_TRUE(no_message_waiting());
}

INSTANTIATE_TEST_SUITE_P(NesterovOrNot, LeaderOuter, ::testing::Bool());

TEST_F(Leader, AnOuterRoundWithoutMomentsGivesTheSameWeightsAndAFreshRestoreStartsAfresh) {
  spawn_slices(true);
  auto leader = spawn_leader();
  const auto before = all_states();
  const nt::sync_request with = outer_of(before[0], 0.7f, 0.9f, true, false);
  nt::sync_request without = with;
  without.moments = false;
  auto full = ask<nt::exchange_result>(leader, nt::atom::sync::value, std::uint32_t{0},
                                       static_cast<std::uint8_t>(nt::sync_policy::outer), with);
  auto light = ask<nt::exchange_result>(leader, nt::atom::sync::value, std::uint32_t{0},
                                        static_cast<std::uint8_t>(nt::sync_policy::outer), without);
  ASSERT_TRUE(full && light);
  ASSERT_EQ(light->post.size(), R);
  for (std::size_t r = 0; r < R; ++r) {
    EXPECT_TRUE(same_bits(light->post[r].params.w, full->post[r].params.w)) << "replica " << r;
    EXPECT_TRUE(same_bits(light->post[r].params.b, full->post[r].params.b)) << "replica " << r;
    EXPECT_TRUE(light->post[r].w_state.m.empty() && light->post[r].w_state.v.empty());
    EXPECT_TRUE(light->post[r].b_state.m.empty() && light->post[r].b_state.v.empty());
  }
  EXPECT_TRUE(same_bits(light->state.parts.at(0).w, full->state.parts.at(0).w));
  // Adam: the moments are twice the weights, so the read without them is a third.
  std::uint64_t weights = 0;
  for (const auto& rep : before)
    for (const auto& st : rep)
      weights += static_cast<std::uint64_t>(st.params.w.size() + st.params.b.size()) * 4;
  EXPECT_EQ(light->bytes, weights);
  EXPECT_GT(full->bytes, 2 * weights);
  EXPECT_TRUE(same_bits(all_states()[1][0].w_state.m, before[1][0].w_state.m))
      << "reading changes no slice";
  // A rollback to such a state: the weights, and the optimizer from zero.
  EXPECT_GT(ask<std::uint64_t>(leader, nt::atom::restore::value, std::uint32_t{1}, light->post[1])
                .value_or(0),
            0u);
  const auto cols = nt::split_columns(8, P);
  for (std::size_t i = 0; i < P; ++i) {
    const nt::layer_state got = state_of(1, i);
    EXPECT_TRUE(same_bits(got.params.w,
                          nt::cut_slice(nt::layer_state{full->post[1].params, {}, {}}, cols[i])
                              .params.w));
    ASSERT_EQ(got.w_state.m.size(), static_cast<std::size_t>(got.params.w.size()));
    EXPECT_EQ(*std::max_element(got.w_state.m.begin(), got.w_state.m.end()), 0.0f);
    EXPECT_EQ(*std::min_element(got.w_state.v.begin(), got.w_state.v.end()), 0.0f);
    EXPECT_EQ(got.w_state.steps, 0u);
    EXPECT_EQ(got.b_state.steps, 0u);
  }
  EXPECT_TRUE(same_bits(state_of(0, 0).w_state.m, before[0][0].w_state.m))
      << "other replicas keep theirs";
  EXPECT_TRUE(no_message_waiting());
}

TEST_F(Leader, OuterWithRateOneAndNoMomentumIsAveragingTheWeights) {
  spawn_slices(true);
  auto leader = spawn_leader();
  const auto before = all_states();
  nt::exchange_result outer;
  sync(leader, 0, nt::sync_policy::outer, outer_of(before[0], 1.0f, 0.0f, true, false), &outer);
  ASSERT_EQ(outer.post.size(), R);
  // Back to the states before, then the average policy on the same input.
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t i = 0; i < P; ++i)
      EXPECT_TRUE(ask_ok(at(r, i), nt::atom::set_state::value, before[r][i]));
  nt::exchange_result average;
  sync(leader, 0, nt::sync_policy::average, {}, &average);
  ASSERT_EQ(average.post.size(), 1u);
  for (std::size_t r = 0; r < R; ++r) {
    EXPECT_TRUE(same_bits(outer.post[r].params.w, average.post[0].params.w)) << "replica " << r;
    EXPECT_TRUE(same_bits(outer.post[r].params.b, average.post[0].params.b)) << "replica " << r;
  }
  // ... while the moments stay each replica's (average takes their mean).
  EXPECT_FALSE(same_bits(outer.post[0].w_state.m, average.post[0].w_state.m));
}

TEST_F(Leader, OuterCanAverageTheMomentsToo) {
  spawn_slices(true);
  auto leader = spawn_leader();
  const auto before = all_states();
  std::vector<nt::layer_state> whole;
  for (const auto& rep : before)
    whole.push_back(nt::glue_slices(rep));
  nt::exchange_result x;
  sync(leader, 0, nt::sync_policy::outer, outer_of(before[0], 0.7f, 0.9f, true, true), &x);
  ASSERT_EQ(x.post.size(), 1u) << "one shared state";
  const auto mean = nt::average_states({&whole[0], &whole[1], &whole[2]});
  EXPECT_TRUE(same_bits(x.post[0].w_state.m, mean.w_state.m));
  EXPECT_TRUE(same_bits(x.post[0].b_state.v, mean.b_state.v));
  EXPECT_FALSE(same_bits(x.post[0].params.w, mean.params.w)) << "weights: the outer step's";
  const auto after = all_states();
  for (std::size_t i = 0; i < P; ++i)
    expect_same_state(after[1][i], after[0][i], "slice " + std::to_string(i));
}

TEST_F(Leader, CodedOuterRoundsSendChangesAndEverySliceRebuildsTheSameBits) {
  // Every replica starts from the same weights theta, takes one training
  // step of its own, then an outer round under each coded precision: the
  // slices send int8 (bf16) changes from theta, the leader answers with the
  // new weights as a change, and every slice rebuilds exactly the post
  // weights the coordinator keeps, its own moments untouched.
  for (auto coding : {nt::sync_precision::int8, nt::sync_precision::bf16}) {
    slices.clear();
    spawn_slices(false, coding);
    auto leader = spawn_leader();
    auto log = std::make_shared<message_log>();
    auto relay = spawn(fake_relay, log);
    const auto theta_slices = all_states()[0];
    const nt::dense_params theta = nt::glue_slices(theta_slices).params;
    const auto x = filled(4, 12, 0.3f);
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t i = 0; i < P; ++i) {
        const auto& sl = at(r, i);
        EXPECT_TRUE(ask_ok(sl, nt::atom::wire::value, nt::grad_sink_actor{relay},
                           nt::block_sink_actor{relay}));
        deliver(sl, nt::atom::forward::value, 0u, std::uint64_t{1}, true, share(x));
        const auto cols = static_cast<Eigen::Index>(theta_slices[i].params.w.cols());
        deliver(sl, nt::atom::backward::value, 0u, std::uint64_t{1},
                nt::owned_matrix{filled(4, cols, 0.1f * static_cast<float>(r + 1))});
      }
    const auto trained = all_states();
    EXPECT_FALSE(same_bits(trained[0][0].params.w, trained[1][0].params.w));
    nt::sync_request req = outer_of(theta_slices, 0.7f, 0.9f, true, false);
    req.theta = theta;
    req.coding = coding;
    auto got = ask<nt::exchange_result>(leader, nt::atom::sync::value, std::uint32_t{0},
                                        static_cast<std::uint8_t>(nt::sync_policy::outer), req);
    ASSERT_TRUE(got);
    ASSERT_EQ(got->update.w.precision, coding);
    const nt::dense_params post = got->post.front().params;
    EXPECT_TRUE(same_bits(nt::decode_params(got->update, theta).w, post.w));
    // What the slices sent: their coded changes (a scale per row of each
    // slice under int8) and their f32 moments, less than the f32 weights.
    std::size_t sent = 0;
    std::size_t f32 = 0;
    for (const auto& rep : trained)
      for (std::size_t i = 0; i < P; ++i) {
        const auto& st = rep[i];
        const std::size_t moments = nt::state_bytes(st) - nt::params_bytes(st.params);
        sent += moments + nt::coded_bytes(nt::encode_params(st.params, st.params, coding));
        f32 += moments + nt::params_bytes(st.params);
      }
    EXPECT_EQ(got->bytes, sent) << nt::to_string(coding);
    EXPECT_LT(got->bytes, f32);
    std::uint64_t down = 0;
    for (std::uint32_t r = 0; r < R; ++r)
      down += ask<std::uint64_t>(leader, nt::atom::round_set::value, r,
                                 nt::round_payload{got->update, false, {}, {}})
                  .value_or(0);
    std::size_t cut_bytes = 0;
    for (const auto& c : nt::split_columns(8, P))
      cut_bytes += nt::coded_bytes(nt::cut_columns(got->update, c));
    EXPECT_EQ(down, R * cut_bytes) << "the new weights only, as changes";
    const auto cols = nt::split_columns(8, P);
    const auto after = all_states();
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t i = 0; i < P; ++i) {
        const auto want = nt::cut_slice(nt::layer_state{post, {}, {}}, cols[i]).params;
        EXPECT_TRUE(same_bits(after[r][i].params.w, want.w)) << "replica " << r << " slice " << i;
        EXPECT_TRUE(same_bits(after[r][i].params.b, want.b)) << "replica " << r << " slice " << i;
        EXPECT_TRUE(same_bits(after[r][i].w_state, trained[r][i].w_state))
            << "the slice keeps its own moments";
      }
    // A slice refuses a payload in another precision than its run's.
    EXPECT_CONTAINS(
        ask_error(
            at(0, 0), nt::atom::round_set::value,
            nt::round_payload{nt::cut_columns(nt::encode_params(post, post,
                                                                nt::sync_precision::int8 == coding
                                                                    ? nt::sync_precision::bf16
                                                                    : nt::sync_precision::int8),
                                              cols[0]),
                              false,
                              {},
                              {}}),
        "weights in a sync precision other than this run's");
  }
}

TEST_F(Leader, FeedbackRoundsCarryEachSlicesResidualWhichStandsOnceTheRoundIsApplied) {
  slices.clear();
  spawn_slices(false, nt::sync_precision::int8, /*feedback=*/true);
  auto leader = spawn_leader();
  auto log = std::make_shared<message_log>();
  auto relay = spawn(fake_relay, log);
  const auto theta_slices = all_states()[0];
  for (const auto& st : theta_slices)
    ASSERT_EQ(st.w_state.r.size(), static_cast<std::size_t>(st.params.w.size()))
        << "a residual of zeros from the start";
  const auto x = filled(4, 12, 0.3f);
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t i = 0; i < P; ++i) {
      const auto& sl = at(r, i);
      EXPECT_TRUE(ask_ok(sl, nt::atom::wire::value, nt::grad_sink_actor{relay},
                         nt::block_sink_actor{relay}));
      deliver(sl, nt::atom::forward::value, 0u, std::uint64_t{1}, true, share(x));
      const auto cols = static_cast<Eigen::Index>(theta_slices[i].params.w.cols());
      deliver(sl, nt::atom::backward::value, 0u, std::uint64_t{1},
              nt::owned_matrix{filled(4, cols, 0.1f * static_cast<float>(r + 1))});
    }
  const auto trained = all_states();
  nt::sync_request req = outer_of(theta_slices, 0.7f, 0.9f, true, false);
  req.theta = nt::glue_slices(theta_slices).params;
  req.coding = nt::sync_precision::int8;
  auto ask_round = [&] {
    return ask<nt::exchange_result>(leader, nt::atom::sync::value, std::uint32_t{0},
                                    static_cast<std::uint8_t>(nt::sync_policy::outer), req);
  };
  auto a = ask_round();
  auto b = ask_round(); // a round that runs again reads the same
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->update.w.q, b->update.w.q);
  ASSERT_EQ(a->post.size(), R);
  const auto cols = nt::split_columns(8, P);
  for (std::size_t r = 0; r < R; ++r) {
    const auto& owed = a->post[r].w_state.r;
    ASSERT_EQ(owed.size(), static_cast<std::size_t>(a->post[r].params.w.size()));
    EXPECT_TRUE(same_bits(owed, b->post[r].w_state.r));
    // The residual is what replica r's coded change left out of its weights.
    double largest = 0;
    for (std::size_t k = 0; k < owed.size(); ++k)
      largest = std::max(largest, std::abs(double{owed[k]}));
    EXPECT_GT(largest, 0.0) << "int8 rounding leaves something to carry";
    EXPECT_LT(largest, 0.01) << "at most half a quantum of a row's change";
    for (std::size_t i = 0; i < P; ++i) {
      const std::vector<float> now = state_of(r, i).w_state.r;
      ASSERT_FALSE(now.empty());
      EXPECT_EQ(*std::max_element(now.begin(), now.end()), 0.0f)
          << "read, not yet applied: the slice still owes nothing";
    }
  }
  for (std::uint32_t r = 0; r < R; ++r)
    EXPECT_GT(ask<std::uint64_t>(leader, nt::atom::round_set::value, r,
                                 nt::round_payload{a->update, false, {}, {}})
                  .value_or(0),
              0u);
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t i = 0; i < P; ++i) {
      const auto want = nt::cut_slice(a->post[r], cols[i]);
      EXPECT_TRUE(same_bits(state_of(r, i).w_state.r, want.w_state.r))
          << "replica " << r << " slice " << i << ": the round's residual stands";
      EXPECT_TRUE(same_bits(state_of(r, i).b_state.r, want.b_state.r));
    }
  // A rollback to a state without a residual starts owing nothing again.
  nt::layer_state plain = state_of(1, 0);
  plain.w_state.r.clear();
  plain.b_state.r.clear();
  EXPECT_TRUE(ask_ok(at(1, 0), nt::atom::set_state::value, plain));
  const auto back = state_of(1, 0).w_state.r;
  ASSERT_EQ(back.size(), static_cast<std::size_t>(plain.params.w.size()));
  EXPECT_EQ(*std::max_element(back.begin(), back.end()), 0.0f);
  EXPECT_EQ(*std::min_element(back.begin(), back.end()), 0.0f);
}

TEST_F(Leader, OuterRefusesABadOuterState) {
  spawn_slices(false);
  auto leader = spawn_leader();
  const auto before = all_states();
  const auto outer = static_cast<std::uint8_t>(nt::sync_policy::outer);
  auto bad_rate = outer_of(before[0], 0.7f, 0.9f, true, false);
  bad_rate.cfg.learning_rate = -1;
  EXPECT_CONTAINS(ask_error(leader, nt::atom::sync::value, std::uint32_t{0}, outer, bad_rate),
                  "outer learning rate -1.000000 is out of range (0, 10]");
  auto bad_momentum = outer_of(before[0], 0.7f, 1.0f, true, false);
  EXPECT_CONTAINS(ask_error(leader, nt::atom::sync::value, std::uint32_t{0}, outer, bad_momentum),
                  "outer momentum 1.000000 is out of range [0, 1)");
  EXPECT_CONTAINS(
      ask_error(leader, nt::atom::sync::value, std::uint32_t{0}, outer, nt::sync_request{}),
      "the outer state's weights (0 x 0, bias 0) and momentum (0 x 0, bias 0) do not match");
  auto wrong_shape = outer_of(before[0], 0.7f, 0.9f, true, false);
  wrong_shape.theta.w.conservativeResize(12, 7);
  wrong_shape.theta.b.conservativeResize(7);
  wrong_shape.state.parts = {nt::zero_velocity(wrong_shape.theta)};
  EXPECT_CONTAINS(ask_error(leader, nt::atom::sync::value, std::uint32_t{0}, outer, wrong_shape),
                  "outer state");
  const auto after = all_states();
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t i = 0; i < P; ++i)
      expect_same_state(after[r][i], before[r][i], "replica " + std::to_string(r));
}

TEST_F(Leader, NoneAndOneReplicaMoveNothing) {
  // Under none there is nothing to compute: the coordinator never asks,
  // and a leader that is asked refuses and changes nothing.
  spawn_slices(true);
  auto leader = spawn_leader();
  const auto before = all_states();
  EXPECT_CONTAINS(ask_error(leader, nt::atom::sync::value, std::uint32_t{0},
                            static_cast<std::uint8_t>(nt::sync_policy::none), nt::sync_request{}),
                  "nothing to exchange");
  const auto after = all_states();
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t i = 0; i < P; ++i)
      expect_same_state(after[r][i], before[r][i], "replica " + std::to_string(r));
}

TEST_F(Leader, SyncRefusesABadReplicaOrPolicy) {
  spawn_slices(false);
  auto leader = spawn_leader();
  EXPECT_CONTAINS(ask_error(leader, nt::atom::sync::value, std::uint32_t{3},
                            static_cast<std::uint8_t>(nt::sync_policy::best), nt::sync_request{}),
                  "bad replica or policy");
  EXPECT_CONTAINS(ask_error(leader, nt::atom::sync::value, std::uint32_t{0}, std::uint8_t{7},
                            nt::sync_request{}),
                  "bad replica or policy");
  EXPECT_CONTAINS(ask_error(leader, nt::atom::collect::value, std::uint32_t{3}), "no such replica");
}

TEST_F(Leader, WireRefusesTheWrongNumberOfSlices) {
  spawn_slices(false);
  auto leader = spawn(nt::swarm_leader, nt::leader_spec{layer, layout_of(R, P, layer)});
  std::vector<nt::neuron_slice_actor> too_few(slices.begin(), slices.end() - 1);
  EXPECT_CONTAINS(ask_error(leader, nt::atom::wire::value, too_few), "wrong number of slices");
}

TEST_F(Leader, CollectGluesAReplicasSlicesIntoTheFullLayer) {
  spawn_slices(false);
  auto leader = spawn_leader();
  // Fresh slices: the glued layer is the one-slice initialisation of the
  // whole layer with that replica's seed.
  for (std::uint32_t r = 0; r < R; ++r) {
    const auto full = ask<nt::layer_state>(leader, nt::atom::collect::value, r);
    ASSERT_TRUE(full.has_value());
    const nt::dense_params expected = nt::init_dense(100 + r, nt::slice_of(model, layer, 1, 0));
    EXPECT_TRUE(same_bits(full->params.w, expected.w)) << "replica " << r;
    EXPECT_TRUE(same_bits(full->params.b, expected.b)) << "replica " << r;
    EXPECT_EQ(full->w_state.m.size(), 12u * 8u);
    EXPECT_EQ(full->b_state.v.size(), 8u);
  }
}

TEST_F(Leader, CollectKeepsOptimizerStateInColumnOrder) {
  spawn_slices(true);
  auto leader = spawn_leader();
  const auto before = all_states();
  for (std::uint32_t r = 0; r < R; ++r) {
    const auto full = ask<nt::layer_state>(leader, nt::atom::collect::value, r);
    ASSERT_TRUE(full.has_value());
    expect_same_state(*full, nt::glue_slices(before[r]), "replica " + std::to_string(r));
    // And cutting the glued layer gives back each slice.
    for (std::size_t i = 0; i < P; ++i)
      expect_same_state(nt::cut_slice(*full, nt::split_columns(8, P)[i]), before[r][i],
                        "replica " + std::to_string(r) + " slice " + std::to_string(i));
  }
}

} // namespace
} // namespace actor_tests
