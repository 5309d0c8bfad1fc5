// Recovery (recovery_machine.hpp) through the run machine: rolling back
// the replicas that lost an actor, losses during a round or a recovery,
// rejoining nodes, and restoring a run checkpoint at the start.
#include "run_machine_fixture.hpp"

namespace {

TEST_F(RunMachine, ALostActorRollsBackItsReplicaOnlyAndTrainingGoesOn) {
  make(small_config(2));
  start();
  rec.take("resume");
  barrier_all(500, false); // round 1 at 500 samples per replica
  score({0.5, 0.6});
  exchange_all();
  ASSERT_EQ(m->current_phase(), phase::training);
  rec.take("resume");
  // Replica 1 loses a relay mid-interval.
  m->on_lost(nt::actor_key::relay(1, 2), "remote_link_unreachable");
  EXPECT_EQ(m->current_phase(), phase::recovering);
  // A second loss of the same node while settling joins the same recovery.
  m->on_lost(nt::actor_key::slice_of(1, 1, 0), "remote_link_unreachable");
  auto settle = rec.take("settle");
  ASSERT_EQ(settle.size(), 2u);
  m->on_settled(settle[0].step); // the first timer is stale
  EXPECT_EQ(m->current_recovery_step(), nt::run_machine::recovery_step::settling);
  m->on_settled(settle[1].step);
  auto pauses = rec.take("pause");
  ASSERT_EQ(pauses.size(), 1u);
  EXPECT_EQ(pauses[0].replica, 1u) << "only the hit replica's worker is asked";
  nt::worker_position at;
  at.samples = 640; // 140 samples past its last round
  m->on_paused(pauses[0].step, 1, at);
  // Every actor of replica 1 is stopped and spawned again at incarnation 1.
  EXPECT_EQ(m->incarnation(1), 1u);
  EXPECT_EQ(m->incarnation(0), 0u);
  auto stops = rec.take("stop");
  auto spawns = rec.take("spawn");
  EXPECT_EQ(stops.size(), 1u + 3u + 2u) << "worker, 3 relays and 2 slices of replica 1";
  ASSERT_EQ(spawns.size(), stops.size());
  for (const auto& sp : spawns)
    EXPECT_EQ(sp.key.replica, 1u) << nt::to_string(sp.key);
  // A registration of the old incarnation is refused.
  EXPECT_FALSE(m->on_registered(spawns[0].key, 0));
  for (const auto& sp : spawns) {
    EXPECT_TRUE(m->on_registered(sp.key, 1));
    m->on_spawned(sp.step, sp.key);
  }
  auto wires = rec.take("wire");
  EXPECT_EQ(wires.size(), spawns.size() + 2u) << "the new actors and both leaders";
  for (const auto& w : wires)
    m->on_wired(w.step, w.key);
  auto restores = rec.take("restore");
  auto seeks = rec.take("seek");
  ASSERT_EQ(restores.size(), 2u);
  ASSERT_EQ(seeks.size(), 1u);
  EXPECT_EQ(seeks[0].replica, 1u);
  EXPECT_EQ(rec.seeks.back().samples, 500u) << "back to its position at round 1";
  for (const auto& r : restores) {
    EXPECT_EQ(r.replica, 1u);
    m->on_restored(r.step, r.layer, r.replica, 1);
  }
  EXPECT_EQ(m->current_phase(), phase::recovering) << "the worker is not back yet";
  m->on_seeked(seeks[0].step, 1);
  EXPECT_EQ(m->current_phase(), phase::training);
  auto resumes = rec.take("resume");
  ASSERT_EQ(resumes.size(), 1u);
  EXPECT_EQ(resumes[0].replica, 1u) << "replica 0 kept its work and never stopped";
  ASSERT_EQ(rec.recoveries.size(), 1u);
  EXPECT_EQ(rec.recoveries[0].samples_redone, 140u);
  EXPECT_TRUE(rec.recoveries[0].redone_exact);
  EXPECT_EQ(rec.recoveries[0].lost.size(), 2u);
  EXPECT_EQ(rec.recoveries[0].round, 1u);
  // A barrier of the old incarnation is stale; the new one counts.
  nt::barrier_report old;
  old.replica = 1;
  old.incarnation = 0;
  const auto late_before = m->late_replies();
  m->on_barrier(old);
  EXPECT_EQ(m->late_replies(), late_before + 1);
  barrier_all_at(1000, false, {0, 1});
  EXPECT_EQ(m->current_round_step(), step::scoring);
}

TEST_F(RunMachine, ALossDuringScoringUndoesTheRoundAndRunsItAgain) {
  make(small_config(2));
  start();
  barrier_all(500, false);
  ASSERT_EQ(m->current_round_step(), step::scoring);
  auto first = rec.take("validate");
  m->on_scored(first[0].step, 0, nt::replica_score{0.5, 0.5});
  m->on_lost(nt::actor_key::worker(0), "kill"); // a lost worker: its progress is unknown
  recover(*m, rec, 0);
  EXPECT_EQ(m->current_phase(), phase::training);
  EXPECT_EQ(rec.recoveries.back().samples_redone, 500u) << "the whole interval, at the barrier";
  // The late score of the undone round is ignored.
  m->on_scored(first[1].step, 1, nt::replica_score{0.5, 0.5});
  EXPECT_GE(m->late_replies(), 1u);
  barrier_all_at(500, false, {0});
  ASSERT_EQ(m->current_round_step(), step::scoring) << "replica 1 still waits at its barrier";
  score({0.5, 0.7});
  exchange_all();
  EXPECT_EQ(m->current_phase(), phase::training);
  EXPECT_EQ(rec.rounds.size(), 1u) << "the undone round was never reported";
}

TEST_F(RunMachine, ALossWhileApplyingTheExchangeFinishesApplyingIt) {
  make(small_config(2));
  start();
  rec.take("resume");
  barrier_all(500, false);
  score({0.5, 0.7});
  for (const auto& e : rec.take("exchange"))
    m->on_exchanged(e.step, e.layer, some_layer(3.0f), 1);
  ASSERT_EQ(m->current_round_step(), step::applying);
  auto applying = rec.take("apply");
  m->on_restored(applying[0].step, applying[0].layer, applying[0].replica, 1);
  m->on_lost(nt::actor_key::slice_of(0, 0, 0), "kill");
  recover(*m, rec, 0);
  // Back in the round: the result is applied to every replica again.
  EXPECT_EQ(m->current_round_step(), step::applying);
  EXPECT_EQ(rec.seeks.back().samples, 500u) << "the rolled-back worker goes to this round";
  auto again = rec.take("apply");
  EXPECT_EQ(again.size(), 2u) << "best: the replica that was not best, both layers";
  for (const auto& r : again)
    m->on_restored(r.step, r.layer, r.replica, 1);
  EXPECT_EQ(m->current_phase(), phase::training);
  EXPECT_EQ(rec.take("resume").size(), 2u);
  EXPECT_EQ(m->result().sync_rounds, 1u);
}

TEST_F(RunMachine, ALossDuringARecoveryRestartsItAsOne) {
  make(small_config(2));
  start();
  rec.take("resume");
  m->on_lost(nt::actor_key::relay(0, 1), "kill");
  auto settle = rec.take("settle");
  m->on_settled(settle.back().step);
  for (const auto& p : rec.take("pause"))
    m->on_paused(p.step, p.replica, nt::worker_position{});
  rec.take("stop");
  auto spawns = rec.take("spawn");
  ASSERT_FALSE(spawns.empty());
  // Replica 1 loses an actor while replica 0's actors are being spawned.
  m->on_lost(nt::actor_key::worker(1), "kill");
  m->on_spawned(spawns[0].step, spawns[0].key); // of the abandoned attempt: late
  recover(*m, rec, 0);
  EXPECT_EQ(m->current_phase(), phase::training);
  EXPECT_EQ(m->result().recoveries, 1u);
  EXPECT_EQ(rec.recoveries.size(), 1u);
  EXPECT_EQ(rec.recoveries[0].rolled_back.size(), 2u);
  EXPECT_EQ(rec.take("resume").size(), 2u);
}

TEST_F(RunMachine, ANodeThatRejoinsGetsItsActorsBackAfterTheNextRound) {
  auto c = small_config(2);
  const nt::run_layout layout{c};
  std::vector<std::size_t> placement(layout.size(), 0);
  std::size_t on_b = 0;
  for (std::size_t i = 0; i < layout.size(); ++i)
    if (layout.actors()[i].kind == nt::actor_kind::neuron_slice && layout.actors()[i].layer == 1) {
      placement[i] = 1; // layer 2's slices on node "b"
      ++on_b;
    }
  make(c, placement, {"a", "b"});
  m->on_node_joined(0);
  m->on_node_joined(1);
  ASSERT_NO_FATAL_FAILURE(start_spawned());
  m->on_node_lost(1, "remote_link_unreachable");
  recover(*m, rec, 0);
  EXPECT_EQ(m->node_of(nt::actor_key::slice_of(0, 1, 0)), 0u) << "re-placed on the live node";
  EXPECT_FALSE(m->node_alive(1));
  m->on_node_joined(1); // started again
  EXPECT_TRUE(m->node_alive(1));
  rec.take("resume");
  barrier_all_at(500, false, {0, 1});
  score({0.5, 0.6});
  for (const auto& e : rec.take("exchange"))
    m->on_exchanged(e.step, e.layer, some_layer(1.0f), 1);
  for (const auto& r : rec.take("apply"))
    m->on_restored(r.step, r.layer, r.replica, 1);
  // The round is over: the slices move back, without a rollback.
  EXPECT_EQ(m->current_phase(), phase::recovering);
  const auto spawned = recover(*m, rec, 500);
  std::size_t to_b = 0;
  for (const auto& k : spawned)
    to_b += m->node_of(k) == 1 ? 1 : 0;
  EXPECT_EQ(to_b, on_b);
  EXPECT_EQ(m->node_of(nt::actor_key::slice_of(1, 1, 0)), 1u);
  EXPECT_EQ(m->current_phase(), phase::training);
  EXPECT_EQ(m->result().recoveries, 1u) << "moving back is no recovery";
  EXPECT_EQ(rec.recoveries.size(), 1u);
  EXPECT_EQ(m->result().samples_redone, 0u);
}

TEST_F(RunMachine, ALeavingNodesActorsMoveAfterTheNextRoundAndItIsReleased) {
  auto c = small_config(2);
  const nt::run_layout layout{c};
  std::vector<std::size_t> placement(layout.size(), 0);
  std::size_t on_c = 0;
  for (std::size_t i = 0; i < layout.size(); ++i)
    if (layout.actors()[i].kind == nt::actor_kind::neuron_slice && layout.actors()[i].layer == 1) {
      placement[i] = 2; // layer 2's slices on node "c"
      ++on_c;
    }
  make(c, placement, {"a", "b", "c"});
  for (std::size_t n = 0; n < 3; ++n)
    m->on_node_joined(n);
  EXPECT_CONTAINS(m->on_leave_requested(2), "training has not begun");
  ASSERT_NO_FATAL_FAILURE(start_spawned());
  EXPECT_CONTAINS(m->on_leave_requested(0), "holds the coordinator");
  EXPECT_CONTAINS(m->on_leave_requested(7), "not a live node");
  EXPECT_EQ(m->on_leave_requested(2), "");
  EXPECT_EQ(m->on_leave_requested(2), "") << "asked again: still leaving";
  EXPECT_TRUE(rec.take("release").empty()) << "released before its actors moved";
  rec.take("resume");
  barrier_all_at(500, false, {0, 1});
  score({0.5, 0.6});
  exchange_all();
  // The round is kept: c's slices move (to a or b), nothing rolls back.
  EXPECT_EQ(m->current_phase(), phase::recovering);
  const auto spawned = recover(*m, rec, 500);
  std::size_t moved = 0;
  for (const auto& k : spawned)
    if (k.kind == nt::actor_kind::neuron_slice && k.layer == 1) {
      EXPECT_NE(m->node_of(k), 2u) << nt::describe(k);
      ++moved;
    }
  EXPECT_EQ(moved, on_c);
  EXPECT_EQ(m->current_phase(), phase::training);
  const auto released = rec.take("release");
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].node, 2u);
  EXPECT_FALSE(m->node_alive(2));
  EXPECT_EQ(m->result().recoveries, 0u);
  EXPECT_EQ(m->result().samples_redone, 0u);
  EXPECT_EQ(m->result().nodes_left, 1u);
  // Its node actor going down afterwards is no loss.
  m->on_node_lost(2, "normal");
  EXPECT_EQ(m->current_phase(), phase::training);
  // Started again, it rejoins as a lost node does, and a later loss of it
  // counts again.
  m->on_node_joined(2);
  EXPECT_TRUE(m->node_alive(2));
  m->on_node_lost(2, "remote_link_unreachable");
  EXPECT_FALSE(m->node_alive(2));
  // b may leave as well: a, the coordinator's node, takes its actors.
  EXPECT_EQ(m->on_leave_requested(1), "");
}

TEST_F(RunMachine, AResumedRunRestoresEveryReplicaBeforeTraining) {
  auto c = small_config(2);
  nt::run_state st = nt::initial_run_state(c, 2);
  st.models.push_back({some_layer(4.0f), some_layer(5.0f)});
  st.round = 3;
  st.samples = 3000;
  st.curve.resize(3);
  st.positions[0].samples = st.positions[1].samples = 1500;
  st.positions[1].cursor = 7;
  make(c);
  m->resume_from(st);
  register_all();
  for (const auto& w : rec.take("wire"))
    m->on_wired(w.step, w.key);
  m->on_run_requested();
  EXPECT_TRUE(rec.take("resume").empty()) << "not before the replicas are restored";
  auto restores = rec.take("restore");
  auto seeks = rec.take("seek");
  EXPECT_EQ(restores.size(), 4u);
  ASSERT_EQ(seeks.size(), 2u);
  EXPECT_EQ(rec.seeks[1].cursor, 7u);
  for (const auto& r : restores)
    m->on_restored(r.step, r.layer, r.replica, 1);
  for (const auto& sk : seeks)
    m->on_seeked(sk.step, sk.replica);
  EXPECT_EQ(m->current_phase(), phase::training);
  EXPECT_EQ(rec.take("resume").size(), 2u);
  EXPECT_EQ(m->result().recoveries, 0u) << "a resume is no recovery";
  barrier_all_at(2000, false, {0, 1});
  score({0.5, 0.6});
  EXPECT_EQ(m->result().sync_rounds, 4u) << "rounds continue from the checkpoint";
  EXPECT_EQ(m->scores().curve().size(), 4u);
}

TEST_F(OuterRunMachine, AnInterruptedRoundKeepsTheLastMomentumAndScoresOnce) {
  make(outer_config());
  start();
  rec.take("resume");
  barrier_all(500, false);
  outer_exchange_all(100, 0.5f);
  restore_all();
  auto v = rec.take("validate");
  ASSERT_EQ(v.size(), 2u);
  score_parts(v, {80, 80});
  rec.take("resume");
  // Round 2: one layer answers, then replica 1 loses a slice.
  rec.outer_in.clear();
  barrier_all(1000, false);
  auto ex = rec.take("exchange");
  ASSERT_EQ(ex.size(), 2u);
  m->on_exchanged(ex[0].step, 0, {layer_of(0, 7.0f), layer_of(0, 7.0f)},
                  nt::policy_state{{layer_of(0, 9.0f).params}}, 1);
  m->on_lost(nt::actor_key::slice_of(1, 1, 0), "remote_link_unreachable");
  recover(*m, rec, 900);
  EXPECT_EQ(m->result().sync_rounds, 1u) << "round 2 is undone";
  rec.take("resume");
  barrier_all_at(1000, false, {1});
  ASSERT_EQ(rec.outer_in.size(), 4u) << "round 2 asked again";
  EXPECT_EQ(rec.outer_in[2].velocity.w(0, 0), 0.5f) << "the kept momentum, not the undone one";
  EXPECT_EQ(rec.outer_in[2].theta.w(0, 0), 100.0f);
  outer_exchange_all(200, 1.0f);
  restore_all();
  // A loss while the synced model is scored: the round's result is kept,
  // applied again and scored again, and counted once.
  v = rec.take("validate");
  ASSERT_EQ(v.size(), 2u);
  score_parts({v[0]}, {99, 99}); // one half answers, then the other replica loses a relay
  m->on_lost(nt::actor_key::relay(1, 1), "remote_link_unreachable");
  recover(*m, rec, 1000);
  EXPECT_EQ(m->result().sync_rounds, 2u);
  restore_all(); // applying the kept result again
  auto again = rec.take("validate");
  ASSERT_EQ(again.size(), 2u) << "scored again";
  score_parts({v[1]}, {99, 99}); // the old step: late
  EXPECT_EQ(m->late_replies(), 1u);
  score_parts(again, {85, 85});
  EXPECT_EQ(m->current_phase(), phase::training);
  EXPECT_EQ(m->scores().curve().size(), 2u);
  EXPECT_EQ(m->result().sync_rounds, 2u);
  ASSERT_FALSE(rec.saved.empty());
  EXPECT_EQ(rec.saved.back()->round, 2u);
  EXPECT_EQ(rec.saved.back()->policy_states[0].parts[0].w(0, 0), 1.0f);
}

TEST_F(OuterRunMachine, AResumeTakesTheMomentumFromTheRunCheckpoint) {
  auto c = outer_config();
  nt::run_state st = nt::initial_run_state(c, 2);
  st.models.push_back({some_layer(4.0f), some_layer(5.0f)});
  st.round = 3;
  make(c);
  EXPECT_CONTAINS(error_of([&] { m->resume_from(st); }), "no sync policy state");
  st.policy_states = {nt::policy_state{{some_layer(0.25f).params}}};
  EXPECT_CONTAINS(error_of([&] { m->resume_from(st); }), "sync policy state of 1 layers");
  st.policy_states.push_back(nt::policy_state{{some_layer(0.75f).params}});
  st.policy_states[1].parts[0].w.conservativeResize(2, 1);
  EXPECT_CONTAINS(error_of([&] { m->resume_from(st); }),
                  "layer 2 has an outer momentum of 2 x 1 (bias 2) for a layer of 2 x 2");
  st.policy_states[1].parts.push_back(some_layer(0.75f).params);
  EXPECT_CONTAINS(error_of([&] { m->resume_from(st); }),
                  "an outer state of 2 matrices (the outer momentum is one)");
  st.policy_states[1] = nt::policy_state{{some_layer(0.75f).params}};
  m->resume_from(st);
  register_all();
  for (const auto& w : rec.take("wire"))
    m->on_wired(w.step, w.key);
  m->on_run_requested();
  restore_all();
  for (const auto& sk : rec.take("seek"))
    m->on_seeked(sk.step, sk.replica);
  ASSERT_EQ(m->current_phase(), phase::training);
  barrier_all(500, false);
  ASSERT_EQ(rec.outer_in.size(), 2u);
  EXPECT_EQ(rec.outer_in[1].velocity.w(0, 0), 0.75f);
  EXPECT_EQ(rec.outer_in[1].theta.w(0, 0), 5.0f);
  // An average run refuses a checkpoint with an outer momentum.
  auto a = small_config(2);
  a.topology.policy = nt::sync_policy::average;
  nt::run_state sa = nt::initial_run_state(a, 2);
  sa.models.push_back({some_layer(4.0f), some_layer(5.0f)});
  sa.policy_states = st.policy_states;
  nt::run_machine other(a, rec, [] { return 0.0; });
  EXPECT_CONTAINS(error_of([&] { other.resume_from(sa); }), "sync_policy is average");
}

} // namespace
