// The data deal of an actor run (data.hpp: replica_epoch_order, redeal,
// dealt_order) and the membership rules that fit a kept round to another
// replica count (membership.hpp). No actors.
#include <gtest/gtest.h>

#include "test_support.hpp"

#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

#include "nettorrent/data.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/membership.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/optimizer.hpp"

namespace nt = nettorrent;

namespace {

std::vector<std::uint32_t> train_of(std::size_t n) {
  std::vector<std::uint32_t> t(n);
  std::iota(t.begin(), t.end(), 100u); // not 0-based, like a real split
  return t;
}

/// The samples an order's whole batches train.
std::vector<std::uint32_t> trained(const std::vector<std::uint32_t>& order, std::size_t from,
                                   std::size_t batch) {
  const std::size_t whole = from + (order.size() - from) / batch * batch;
  return {order.begin() + static_cast<std::ptrdiff_t>(from),
          order.begin() + static_cast<std::ptrdiff_t>(whole)};
}

TEST(ReplicaEpochOrder, IsTheShardShuffledOncePerEpochAsTheWorkerDoes) {
  const auto train = train_of(1000);
  for (std::size_t r = 0; r < 3; ++r) {
    // The worker's way before the deal existed: the shard, shuffled in place
    // once per epoch by one generator.
    std::vector<std::uint32_t> order = nt::shard_indices(train, 3, r);
    nt::rng gen = nt::shard_rng(7, r);
    EXPECT_EQ(nt::replica_epoch_order(train, 7, 3, r, 0), order);
    for (std::uint64_t e = 1; e <= 4; ++e) {
      nt::shuffle(order, gen);
      nt::rng after{0};
      EXPECT_EQ(nt::replica_epoch_order(train, 7, 3, r, e, &after), order) << "epoch " << e;
      EXPECT_EQ(after.state(), gen.state());
    }
  }
}

TEST(Redeal, DealsWhatIsLeftABatchEachInTurn) {
  const std::vector<std::vector<std::uint32_t>> orders = {{1, 2, 3, 4, 5}, {6, 7, 8, 9}};
  // Replica 0 stands at 1, replica 1 at 2: left 2 3 4 5 and 8 9, taken a
  // batch of 2 from each in turn: 2 3 | 8 9 | 4 5, then dealt over 3.
  const auto out = nt::redeal(orders, {1, 2}, 2, 3);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], (std::vector<std::uint32_t>{2, 3}));
  EXPECT_EQ(out[1], (std::vector<std::uint32_t>{8, 9}));
  EXPECT_EQ(out[2], (std::vector<std::uint32_t>{4, 5}));
  const auto two = nt::redeal(orders, {0, 0}, 2, 2);
  EXPECT_EQ(two[0], (std::vector<std::uint32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(two[1], (std::vector<std::uint32_t>{6, 7, 8, 9}));
  EXPECT_CONTAINS(test_support::error_of([&] { nt::redeal(orders, {6, 0}, 2, 2); }),
                  "replica 0 stands at 6 in an order of 5 samples");
  EXPECT_CONTAINS(test_support::error_of([&] { nt::redeal(orders, {0}, 2, 2); }),
                  "1 cursors for 2 replicas");
}

// Two changes in one epoch (2 -> 3 -> 2 replicas): every sample of the
// epoch is trained at most once, and only the last partial batch is left out.
TEST(DealtOrder, AnEpochWithTwoChangesTrainsEverySampleAtMostOnce) {
  const auto train = train_of(1003);
  const std::size_t b = 16;
  std::multiset<std::uint32_t> seen;
  std::vector<std::vector<std::uint32_t>> before;
  for (std::size_t r = 0; r < 2; ++r)
    before.push_back(nt::replica_epoch_order(train, 3, 2, r, 2));
  const std::vector<std::uint64_t> at1 = {10 * b, 12 * b};
  for (std::size_t r = 0; r < 2; ++r)
    for (std::size_t i = 0; i < at1[r]; ++i)
      seen.insert(before[r][i]);
  nt::epoch_deal deal{2, {{2, at1}}};
  std::vector<std::vector<std::uint32_t>> mid;
  for (std::size_t r = 0; r < 3; ++r)
    mid.push_back(nt::dealt_order(train, 3, b, 3, r, deal));
  const std::vector<std::uint64_t> at2 = {3 * b, 2 * b, 4 * b};
  for (std::size_t r = 0; r < 3; ++r)
    for (std::size_t i = 0; i < at2[r]; ++i)
      seen.insert(mid[r][i]);
  deal.changes.push_back({3, at2});
  std::size_t left = 0;
  for (std::size_t r = 0; r < 3; ++r)
    left += mid[r].size() - at2[r];
  for (std::size_t r = 0; r < 2; ++r)
    for (auto x : trained(nt::dealt_order(train, 3, b, 2, r, deal), 0, b))
      seen.insert(x);
  for (auto x : seen)
    EXPECT_EQ(seen.count(x), 1u) << "sample " << x << " trained twice";
  EXPECT_EQ(train.size() - seen.size(), left % b);
  EXPECT_CONTAINS(test_support::error_of([&] {
                    nt::dealt_order(train, 3, b, 2, 0, nt::epoch_deal{2, {{2, at1}, {2, at2}}});
                  }),
                  "a replica change lists 3 cursors for 2 replicas");
}

bool same_weights(const std::vector<nt::layer_state>& a, const std::vector<nt::layer_state>& b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t l = 0; l < a.size(); ++l)
    if (a[l].params.w != b[l].params.w || a[l].params.b != b[l].params.b)
      return false;
  return true;
}

nt::run_state kept_round(std::size_t replicas, bool shared) {
  nt::run_state st;
  const nt::slice_geometry g{0, 4, 3, {0, 3}, nt::activation::relu};
  const auto opt = nt::make_optimizer(nt::optimizer_config{});
  for (std::size_t r = 0; r < (shared ? 1 : replicas); ++r) {
    nt::layer_state ls;
    ls.params = nt::init_dense(10 + r, g);
    ls.w_state = opt->make_state(static_cast<std::size_t>(ls.params.w.size()));
    ls.b_state = opt->make_state(static_cast<std::size_t>(ls.params.b.size()));
    st.models.push_back({ls});
  }
  for (std::size_t r = 0; r < replicas; ++r) {
    nt::data_position p;
    p.epoch = 2;
    p.cursor = 64 * (r + 1);
    p.samples = 1000 + 64 * (r + 1);
    p.next_batch = 40 + r;
    st.positions.push_back(p);
    st.samples += p.samples;
  }
  return st;
}

TEST(ChangeReplicas, ANewReplicaCopiesReplicaZeroAndTheEpochIsDealtAgain) {
  const nt::run_state st = kept_round(2, false);
  const nt::run_state out = nt::change_replicas(st, 3, nt::policy_def(nt::sync_policy::none));
  ASSERT_EQ(out.positions.size(), 3u);
  ASSERT_EQ(out.models.size(), 3u);
  EXPECT_TRUE(same_weights(out.models[0], st.models[0]));
  EXPECT_TRUE(same_weights(out.models[1], st.models[1]));
  EXPECT_TRUE(same_weights(out.models[2], st.models[0]));
  EXPECT_EQ(out.positions[0].samples, st.positions[0].samples);
  EXPECT_EQ(out.positions[2].samples, 0u);
  EXPECT_EQ(out.positions[2].next_batch, 0u);
  for (const auto& p : out.positions) {
    EXPECT_EQ(p.epoch, 2u);
    EXPECT_EQ(p.cursor, 0u);
  }
  EXPECT_EQ(out.deal, (nt::epoch_deal{2, {{2, {64, 128}}}}));
  EXPECT_EQ(out.retired_samples, 0u);
  EXPECT_EQ(out.samples, st.samples);
  EXPECT_CONTAINS(nt::describe_replica_change(st, out),
                  "3 replicas instead of 2: replica 2 starts as a copy of replica 0; the samples "
                  "of epoch 2 not yet trained are dealt again over 3 replicas");
  // The same count changes nothing.
  const nt::run_state same = nt::change_replicas(st, 2, nt::policy_def(nt::sync_policy::none));
  EXPECT_TRUE(same.deal.empty());
  EXPECT_EQ(same.positions.size(), 2u);
}

TEST(ChangeReplicas, ARetiredReplicasSamplesCountOnAndASecondChangeExtendsTheDeal) {
  const nt::run_state st = kept_round(3, true);
  const nt::run_state two = nt::change_replicas(st, 2, nt::policy_def(nt::sync_policy::average));
  EXPECT_EQ(two.models.size(), 1u); // still shared by every replica
  EXPECT_EQ(two.retired_samples, st.positions[2].samples);
  EXPECT_CONTAINS(nt::describe_replica_change(st, two), "replica 2 retires");
  nt::run_state later = two;
  later.positions[0].cursor = 32;
  later.positions[1].cursor = 0;
  const nt::run_state four =
      nt::change_replicas(later, 4, nt::policy_def(nt::sync_policy::average));
  EXPECT_EQ(four.deal, (nt::epoch_deal{2, {{3, {64, 128, 192}}, {2, {32, 0}}}}));
  EXPECT_EQ(four.retired_samples, two.retired_samples);
}

TEST(ChangeReplicas, APolicyStateStartsFromOneReplicaAndIsDroppedAtOne) {
  const auto& outer = nt::policy_def(nt::sync_policy::outer);
  const nt::run_state one = kept_round(1, true);
  const nt::run_state two = nt::change_replicas(one, 2, outer);
  ASSERT_EQ(two.policy_states.size(), 1u);
  EXPECT_EQ(outer.check_state(two.policy_states[0], two.models[0][0].params), "");
  EXPECT_TRUE(nt::change_replicas(two, 1, outer).policy_states.empty());
  EXPECT_EQ(nt::change_replicas(two, 3, outer).policy_states.size(), 1u);
}

TEST(ChangeReplicas, ReplicasInDifferentEpochsAreRefused) {
  nt::run_state st = kept_round(2, true);
  st.positions[1].epoch = 3;
  EXPECT_CONTAINS(test_support::error_of([&] {
                    nt::change_replicas(st, 3, nt::policy_def(nt::sync_policy::average));
                  }),
                  "replica 0 stands in epoch 2, replica 1 in epoch 3");
  EXPECT_THROW(nt::change_replicas(st, 0, nt::policy_def(nt::sync_policy::average)), nt::error);
}

} // namespace
