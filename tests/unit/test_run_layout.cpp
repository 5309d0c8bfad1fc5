// The run layout (run_layout.hpp): one canonical, replica-major order with a
// dense index, swarms, metrics cells, and a replica appended without moving
// any other actor.
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "nettorrent/run_layout.hpp"

namespace nt = nettorrent;

namespace {

TEST(RunLayout, OneCanonicalOrderWithADenseIndex) {
  const nt::run_layout l{2, {2, 1}};
  ASSERT_EQ(l.size(), 1u + 2u + 2u + 6u + 6u);
  for (std::size_t i = 0; i < l.size(); ++i)
    EXPECT_EQ(l.index(l.actors()[i]), i) << nt::to_string(l.actors()[i]);
  EXPECT_EQ(l.actors()[0], nt::actor_key::coordinator());
  EXPECT_EQ(l.actors()[1], nt::actor_key::leader(0));
  // Replica-major: replica 0's block (worker, relays, slices), then replica 1's.
  EXPECT_EQ(l.actors()[3], nt::actor_key::worker(0));
  EXPECT_EQ(l.actors()[4], nt::actor_key::relay(0, 0));
  EXPECT_EQ(l.actors()[7], nt::actor_key::slice_of(0, 0, 0));
  EXPECT_EQ(l.actors()[10], nt::actor_key::worker(1));
  EXPECT_EQ(l.replica_block_size(), 7u);
  EXPECT_EQ(l.actors().back(), nt::actor_key::slice_of(1, 1, 0));
  EXPECT_FALSE(l.find(nt::actor_key::slice_of(0, 1, 1)));
  EXPECT_FALSE(l.find(nt::actor_key::relay(0, 3)));
  EXPECT_FALSE(l.find(nt::actor_key::worker(2)));
  nt::actor_key odd = nt::actor_key::worker(0);
  odd.slice = 1; // a field the kind does not use
  EXPECT_FALSE(l.find(odd));
  EXPECT_CONTAINS(test_support::error_of([&] { l.index(odd); }), "not an actor of this run");
  const auto swarm0 = l.swarm(0);
  ASSERT_EQ(swarm0.size(), 4u);
  for (std::size_t p = 0; p < swarm0.size(); ++p)
    EXPECT_EQ(l.swarm_position(swarm0[p]), p);
  EXPECT_EQ(swarm0[2], nt::actor_key::slice_of(1, 0, 0));
  std::vector<bool> seen(l.metrics_cells(), false);
  for (const auto& a : l.actors())
    if (a.kind != nt::actor_kind::coordinator)
      seen.at(l.metrics_index(l.metrics_of(a))) = true;
  for (std::size_t c = 0; c < seen.size(); ++c)
    EXPECT_TRUE(seen[c]) << "metrics cell " << c << " has no actor";
}

TEST(RunLayout, AnAppendedReplicaMovesNoOtherActorOrMetricsCell) {
  const nt::run_layout two{2, {2, 1, 3}};
  const nt::run_layout three{3, {2, 1, 3}};
  ASSERT_EQ(three.size(), two.size() + two.replica_block_size());
  for (std::size_t i = 0; i < two.size(); ++i) {
    const auto& a = two.actors()[i];
    EXPECT_EQ(three.actors()[i], a) << nt::to_string(a);
    EXPECT_EQ(three.index(a), i) << nt::to_string(a);
    EXPECT_EQ(three.metrics_index(three.metrics_of(a)), two.metrics_index(two.metrics_of(a)))
        << nt::to_string(a);
  }
  // The new block holds exactly replica 2's actors.
  for (std::size_t i = two.size(); i < three.size(); ++i) {
    const auto& a = three.actors()[i];
    EXPECT_NE(a.kind, nt::actor_kind::swarm_leader);
    EXPECT_EQ(a.replica, 2u) << nt::to_string(a);
  }
}

} // namespace
