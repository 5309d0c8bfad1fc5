// Recovery from lost actors, on the deterministic test coordinator: an actor
// is killed at a chosen moment of an embedded run (a one-node cluster, as
// `nettorrent train` runs it); the run must complete, and with
// max_in_flight = 1 end with weights and optimizer state bit-identical to
// the same run without the failure.
#include "fixture.hpp"

#include <functional>

namespace actor_tests {
namespace {

using coordinator_impl = nt::coordinator_actor::stateful_pointer<nt::coordinator_state>;
using slice_impl = nt::neuron_slice_actor::stateful_pointer<nt::neuron_slice_state>;
using machine = nt::run_machine;

class Recovery : public ActorTest {
protected:
  Recovery() {
    cfg = base_config(out_dir("run"));
    cfg.model.layers = {16, 12, 8, 4};
    cfg.topology.replicas = 2;
    cfg.topology.slices = {2};
    cfg.topology.max_in_flight = 1;
    cfg.topology.policy = nt::sync_policy::average;
    cfg.topology.sync_every = 32; // 4 batches of 8 per round and replica
    cfg.training.max_epochs = 2;
    cfg.optimizer.kind = nt::optimizer_kind::adam;
    cfg.optimizer.learning_rate = 0.01f;
    data = synthetic_splits(192, 40, 16, 4, 0.3f);
  }

  /// Runs the embedded run to its end; before that, once `moment()` holds,
  /// kills `victims` (all at once). Returns the result; `fired` says whether
  /// the moment came.
  nt::run_result run_with_fault(const std::function<bool()>& moment,
                                const std::vector<nt::actor_key>& victims, bool& fired) {
    cfg.validate();
    coord = nt::spawn_embedded(sys, cfg, data, /*verbose=*/false);
    impl = dynamic_cast<coordinator_impl>(caf::actor_cast<caf::abstract_actor*>(coord));
    self->send(coord, nt::atom::run::value);
    fired = false;
    while (sched.try_run_once()) {
      if (!victims.empty() && !fired && started() && moment()) {
        fired = true;
        for (const auto& v : victims)
          caf::anon_send_exit(handle(v), caf::exit_reason::kill);
      }
    }
    for (;;) { // settle timers; the registration deadline fires harmlessly
      const bool ran = sched.run() > 0;
      const bool timers = sched.trigger_timeouts() > 0;
      if (!ran && !timers)
        break;
    }
    nt::run_result r;
    self->receive([&](nt::run_result& x) { r = std::move(x); },
                  caf::after(std::chrono::milliseconds(0)) >>
                      [&] { ADD_FAILURE() << "the run did not reply"; });
    return r;
  }

  nt::run_result fault_free() {
    bool fired = false;
    return run_with_fault([] { return false; }, {}, fired);
  }

  bool started() const {
    return impl != nullptr && impl->state.machine->current_phase() != machine::phase::registering
           && impl->state.machine->current_phase() != machine::phase::wiring
           && impl->state.machine->current_phase() != machine::phase::ready;
  }

  const caf::actor& handle(const nt::actor_key& a) const {
    return impl->state.handles[impl->state.machine->layout().index(a)];
  }

  slice_impl slice(std::uint32_t r, std::uint32_t l, std::uint32_t i) const {
    return dynamic_cast<slice_impl>(
        caf::actor_cast<caf::abstract_actor*>(handle(nt::actor_key::slice_of(r, l, i))));
  }

  std::uint64_t rounds() const { return impl->state.machine->result().sync_rounds; }
  machine::phase phase() const { return impl->state.machine->current_phase(); }
  machine::round_step round_step() const { return impl->state.machine->current_round_step(); }

  /// The moment a sync round is in step `st`, once `after` rounds are done.
  std::function<bool()> at_step(machine::round_step st, std::uint64_t after = 0) const {
    return [this, st, after] {
      return rounds() >= after && phase() == machine::phase::sync_round && round_step() == st;
    };
  }

  /// Kills leader `layer` while the leaders compute an exchange: nothing is
  /// rolled back or redone and the run ends as the fault-free one.
  void expect_a_lost_leader_costs_nothing(std::uint32_t layer, const std::string& why) {
    const nt::run_result ref = fault_free();
    bool fired = false;
    const nt::run_result r = run_with_fault(at_step(machine::round_step::exchanging, 1),
                                            {nt::actor_key::leader(layer)}, fired);
    ASSERT_TRUE(fired);
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.recoveries, 1u);
    EXPECT_EQ(r.replicas_rolled_back, 0u) << why;
    EXPECT_EQ(r.samples_redone, 0u);
    EXPECT_EQ(r.sync_rounds, ref.sync_rounds);
    ASSERT_EQ(r.curve.size(), ref.curve.size());
    for (std::size_t k = 0; k < r.curve.size(); ++k)
      EXPECT_EQ(r.curve[k].validation_loss, ref.curve[k].validation_loss) << "round " << k;
    for (std::size_t l = 0; l < r.layers.size(); ++l)
      expect_same_state(r.layers[l], ref.layers[l], "layer " + std::to_string(l + 1));
  }

  /// Runs the fault-free reference once, then the faulty run, and compares.
  void expect_recovers_bit_identically(const std::function<bool()>& moment,
                                       const std::vector<nt::actor_key>& victims,
                                       const std::string& what) {
    const nt::run_result ref = fault_free();
    ASSERT_TRUE(ref.ok) << ref.error;
    ASSERT_EQ(ref.recoveries, 0u);
    bool fired = false;
    const nt::run_result r = run_with_fault(moment, victims, fired);
    ASSERT_TRUE(fired) << what << ": the moment never came";
    ASSERT_TRUE(r.ok) << what << ": " << r.error;
    EXPECT_EQ(r.recoveries, 1u) << what;
    EXPECT_EQ(r.samples, ref.samples) << what;
    EXPECT_EQ(r.sync_rounds, ref.sync_rounds) << what;
    EXPECT_EQ(r.curve.size(), ref.curve.size()) << what;
    ASSERT_EQ(r.layers.size(), ref.layers.size());
    for (std::size_t l = 0; l < r.layers.size(); ++l)
      expect_same_state(r.layers[l], ref.layers[l], what + ", layer " + std::to_string(l + 1));
    for (std::size_t k = 0; k < r.curve.size() && k < ref.curve.size(); ++k) {
      EXPECT_EQ(r.curve[k].validation_loss, ref.curve[k].validation_loss) << what << " round " << k;
      EXPECT_EQ(r.curve[k].train_loss, ref.curve[k].train_loss) << what << " round " << k;
    }
    // At most one interval (plus the batch in flight) redone per rolled-back replica.
    EXPECT_GE(r.replicas_rolled_back, 1u) << what;
    EXPECT_LE(r.samples_redone, r.replicas_rolled_back
                                    * (cfg.topology.sync_every
                                       + cfg.topology.max_in_flight * cfg.training.batch_size))
        << what;
    std::cout << what << ": " << r.samples_redone << " samples redone, " << r.actors_moved
              << " actors moved, " << r.actors_restarted << " restarted\n";
  }

  nt::run_config cfg;
  std::shared_ptr<const nt::data_splits> data;
  nt::coordinator_actor coord;
  coordinator_impl impl = nullptr;
};

TEST_F(Recovery, TheFaultFreeRunRepeatsItself) {
  // The comparison below is only meaningful if the reference is stable.
  const nt::run_result a = fault_free();
  const nt::run_result b = fault_free();
  ASSERT_TRUE(a.ok && b.ok);
  EXPECT_GE(a.sync_rounds, 3u);
  for (std::size_t l = 0; l < a.layers.size(); ++l)
    expect_same_state(a.layers[l], b.layers[l], "layer " + std::to_string(l + 1));
}

TEST_F(Recovery, ASliceLostBetweenItsForwardAndBackwardPass) {
  expect_recovers_bit_identically(
      [&] {
        return phase() == machine::phase::training && rounds() >= 1
               && !slice(0, 1, 0)->state.stash.empty();
      },
      {nt::actor_key::slice_of(0, 1, 0)}, "slice r0 l1 i0 with a batch stashed");
}

TEST_F(Recovery, ASliceLostDuringTheBackwardPass) {
  // Layer 2 has applied the batch's update, layer 1 not yet.
  expect_recovers_bit_identically(
      [&] {
        return phase() == machine::phase::training && rounds() >= 2
               && !slice(1, 0, 1)->state.stash.empty() && slice(1, 1, 0)->state.stash.empty()
               && slice(1, 1, 0)->state.stats.updates > 0;
      },
      {nt::actor_key::slice_of(1, 0, 1)}, "slice r1 l0 i1 mid-backward");
}

TEST_F(Recovery, ASliceLostDuringAValidationPass) {
  expect_recovers_bit_identically(at_step(machine::round_step::scoring),
                                  {nt::actor_key::slice_of(1, 2, 0)},
                                  "slice r1 l2 i0 while scoring");
}

TEST_F(Recovery, ASliceLostDuringTheExchange) {
  expect_recovers_bit_identically(at_step(machine::round_step::exchanging, 1),
                                  {nt::actor_key::slice_of(0, 2, 1)},
                                  "slice r0 l2 i1 while the leaders compute");
}

TEST_F(Recovery, ASliceLostWhileTheExchangeIsApplied) {
  expect_recovers_bit_identically(at_step(machine::round_step::applying),
                                  {nt::actor_key::slice_of(1, 1, 1)},
                                  "slice r1 l1 i1 while the result is applied");
}

TEST_F(Recovery, ARelayLost) {
  expect_recovers_bit_identically(
      [&] {
        return phase() == machine::phase::training && rounds() >= 1
               && !slice(1, 2, 0)->state.stash.empty();
      },
      {nt::actor_key::relay(1, 2)}, "hidden relay r1 k2 mid-batch");
}

TEST_F(Recovery, AShardWorkerLost) {
  expect_recovers_bit_identically(
      [&] {
        return phase() == machine::phase::training && rounds() >= 2
               && !slice(0, 0, 0)->state.stash.empty();
      },
      {nt::actor_key::worker(0)}, "shard worker r0 mid-batch");
}

TEST_F(Recovery, TwoActorsOfDifferentReplicasLostAtOnce) {
  expect_recovers_bit_identically(
      [&] {
        return phase() == machine::phase::training && rounds() >= 1
               && !slice(0, 1, 1)->state.stash.empty();
      },
      {nt::actor_key::slice_of(0, 1, 1), nt::actor_key::relay(1, 3)},
      "slice r0 l1 i1 and loss relay r1 together");
}

TEST_F(Recovery, ALeaderLostDuringTheExchange) {
  expect_a_lost_leader_costs_nothing(1, "a leader holds no training state");
}

TEST_F(Recovery, NonePolicyRollsBackToTheReplicasOwnState) {
  cfg.topology.policy = nt::sync_policy::none;
  expect_recovers_bit_identically(
      [&] {
        return phase() == machine::phase::training && rounds() >= 2
               && !slice(1, 1, 0)->state.stash.empty();
      },
      {nt::actor_key::slice_of(1, 1, 0)}, "policy none, slice r1 l1 i0");
}

// Policy outer: the rollback state is every replica's own state (its own
// moments) and the outer momentum; the round scores the synced model after
// applying it.
TEST_F(Recovery, OuterPolicyASliceLostMidInterval) {
  cfg.topology.policy = nt::sync_policy::outer;
  expect_recovers_bit_identically(
      [&] {
        return phase() == machine::phase::training && rounds() >= 2
               && !slice(1, 1, 0)->state.stash.empty();
      },
      {nt::actor_key::slice_of(1, 1, 0)}, "policy outer, slice r1 l1 i0");
}

TEST_F(Recovery, OuterPolicyASliceLostDuringTheExchange) {
  cfg.topology.policy = nt::sync_policy::outer;
  expect_recovers_bit_identically(at_step(machine::round_step::exchanging, 1),
                                  {nt::actor_key::slice_of(0, 2, 1)},
                                  "policy outer, during the exchange");
}

TEST_F(Recovery, OuterPolicyASliceLostWhileTheSyncedModelIsScored) {
  cfg.topology.policy = nt::sync_policy::outer;
  expect_recovers_bit_identically(at_step(machine::round_step::scoring, 2),
                                  {nt::actor_key::slice_of(0, 0, 0)},
                                  "policy outer, during the synced model's validation");
}

TEST_F(Recovery, OuterPolicyALeaderLostDuringTheExchange) {
  cfg.topology.policy = nt::sync_policy::outer;
  expect_a_lost_leader_costs_nothing(0, "the outer state is the coordinator's, not the leader's");
}

} // namespace
} // namespace actor_tests
