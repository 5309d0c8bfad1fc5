// The run machine as a router: registration, wiring, spawning on nodes, the
// run's phases in order, late replies, failures before training.
#include "run_machine_fixture.hpp"

namespace {

TEST_F(RunMachine, WalksEveryPhaseOfARunInOrder) {
  make(small_config(2));
  EXPECT_EQ(m->current_phase(), phase::registering);
  EXPECT_EQ(m->expected(), 2u + 2u + 6u + 4u); // leaders, workers, relays, slices
  register_all();
  EXPECT_EQ(m->current_phase(), phase::wiring);
  auto wires = rec.take("wire");
  EXPECT_EQ(wires.size(), m->expected());
  for (std::size_t i = 0; i + 1 < wires.size(); ++i)
    m->on_wired(wires[i].step, wires[i].key);
  EXPECT_EQ(m->current_phase(), phase::wiring) << "one wire is still missing";
  m->on_wired(wires.back().step, wires.back().key);
  EXPECT_EQ(m->current_phase(), phase::ready);
  EXPECT_TRUE(rec.take("resume").empty()) << "training started before anyone asked";
  m->on_run_requested();
  EXPECT_EQ(m->current_phase(), phase::training);
  EXPECT_EQ(rec.take("resume").size(), 2u);

  clock = 110;
  barrier_all(500, false);
  EXPECT_EQ(m->current_phase(), phase::sync_round);
  EXPECT_EQ(m->current_round_step(), step::scoring);
  score({0.5, 0.7});
  EXPECT_EQ(m->current_round_step(), step::exchanging);
  auto ex = rec.take("exchange");
  ASSERT_EQ(ex.size(), 2u); // one per layer
  EXPECT_EQ(ex[0].replica, 1u) << "replica 1 scored best";
  ASSERT_EQ(rec.rounds.size(), 1u);
  EXPECT_DOUBLE_EQ(rec.rounds[0].point.validation_accuracy, 0.7);
  EXPECT_DOUBLE_EQ(rec.rounds[0].point.seconds, 10.0);
  EXPECT_DOUBLE_EQ(rec.rounds[0].point.train_loss, 0.1);
  EXPECT_EQ(rec.rounds[0].point.samples, 1000u);
  m->on_exchanged(ex[0].step, 0, some_layer(1.0f), 100);
  EXPECT_EQ(m->current_round_step(), step::exchanging);
  m->on_exchanged(ex[1].step, 1, some_layer(2.0f), 50);
  EXPECT_EQ(m->current_round_step(), step::applying) << "the result is kept, then applied";
  auto restores = rec.take("apply");
  ASSERT_EQ(restores.size(), 2u) << "2 layers of replica 0 (best: replica 1 holds the result)";
  for (const auto& r : restores)
    EXPECT_EQ(r.replica, 0u);
  for (std::size_t i = 0; i + 1 < restores.size(); ++i)
    m->on_restored(restores[i].step, restores[i].layer, restores[i].replica, 10);
  EXPECT_EQ(m->current_phase(), phase::sync_round);
  m->on_restored(restores.back().step, restores.back().layer, restores.back().replica, 10);
  EXPECT_EQ(m->current_phase(), phase::training);
  EXPECT_EQ(rec.take("resume").size(), 2u);

  clock = 120;
  barrier_all(1000, true);
  score({0.8, 0.6});
  EXPECT_EQ(m->current_phase(), phase::finishing) << "every worker is out of epochs";
  EXPECT_TRUE(rec.take("exchange").empty()) << "no exchange after the last round";
  auto collects = rec.take("collect");
  ASSERT_EQ(collects.size(), 2u);
  EXPECT_EQ(collects[0].replica, 0u) << "the final model is the best replica's";
  for (const auto& c : collects)
    m->on_collected(c.step, c.layer, c.replica, some_layer(static_cast<float>(c.layer)));
  auto stats = rec.take("stats");
  EXPECT_EQ(stats.size(), 2u + 2u + 6u) << "leaders, workers and relays are asked";
  EXPECT_EQ(rec.finished_calls, 0);
  for (const auto& c : stats)
    m->on_stats(c.step, c.key, nt::peer_counters{1, 0, 0, {}});
  ASSERT_EQ(rec.finished_calls, 1);
  EXPECT_EQ(m->current_phase(), phase::done);
  const auto& r = *rec.result;
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.sync_rounds, 2u);
  EXPECT_EQ(r.sync_bytes, 150u + 2u * 10u) << "the exchange and the two restores";
  EXPECT_EQ(r.samples, 2000u);
  EXPECT_EQ(r.dropped, 10u);
  EXPECT_DOUBLE_EQ(r.best_validation_accuracy, 0.8);
  EXPECT_EQ(r.curve.size(), 2u);
  ASSERT_EQ(r.layers.size(), 2u);
  EXPECT_EQ(r.layers[1].params.w(0, 0), 1.0f);
  EXPECT_EQ(r.saved_samples, 2000u);
  EXPECT_EQ(r.late_replies, 0u);
  EXPECT_GE(rec.stops, 1);
}

TEST_F(RunMachine, ALateReplyOfAnEarlierStepIsIgnoredAndCounted) {
  make(small_config(2));
  start();
  barrier_all(500, false);
  auto first = rec.take("validate");
  ASSERT_EQ(first.size(), 2u);
  for (const auto& v : first)
    m->on_scored(v.step, v.replica, nt::replica_score{0.5, 0.5});
  auto ex = rec.take("exchange");
  for (const auto& e : ex)
    m->on_exchanged(e.step, e.layer, some_layer(1.0f), 1);
  for (const auto& r : rec.take("apply"))
    m->on_restored(r.step, r.layer, r.replica, 1);
  rec.take("resume");
  barrier_all(1000, false);
  ASSERT_EQ(m->current_round_step(), step::scoring);
  // A reply of the first round's scoring arrives during the second one.
  m->on_scored(first[0].step, 0, nt::replica_score{0.0, 1.0});
  EXPECT_EQ(m->late_replies(), 1u);
  EXPECT_EQ(m->current_round_step(), step::scoring);
  // It did not count: one real reply is not enough to end the scoring.
  auto second = rec.take("validate");
  m->on_scored(second[0].step, second[0].replica, nt::replica_score{0.4, 0.6});
  EXPECT_EQ(m->current_round_step(), step::scoring);
  // A duplicate is ignored and counted too.
  m->on_scored(second[0].step, second[0].replica, nt::replica_score{0.4, 0.6});
  EXPECT_EQ(m->late_replies(), 2u);
  m->on_scored(second[1].step, second[1].replica, nt::replica_score{0.3, 0.7});
  EXPECT_EQ(m->current_round_step(), step::exchanging);
  ASSERT_EQ(rec.rounds.size(), 2u);
  EXPECT_DOUBLE_EQ(rec.rounds[1].point.validation_accuracy, 0.7) << "the late 1.0 leaked in";
  // An exchange reply of the first round is late as well.
  m->on_exchanged(ex[0].step, 0, some_layer(1.0f), 1000);
  EXPECT_EQ(m->late_replies(), 3u);
  EXPECT_EQ(m->current_round_step(), step::exchanging);
}

TEST_F(RunMachine, ARegistrationAfterTheDeadlineIsRefusedAndCounted) {
  make(small_config(1));
  const auto& all = m->layout().actors();
  for (const auto& a : all)
    if (a.kind != nt::actor_kind::coordinator && a != nt::actor_key::slice_of(0, 1, 0))
      m->on_registered(a);
  EXPECT_EQ(m->current_phase(), phase::registering);
  m->on_registration_deadline();
  EXPECT_TRUE(m->failed());
  EXPECT_EQ(rec.finished_calls, 0) << "nobody asked yet";
  EXPECT_GE(rec.stops, 1) << "the registered actors are stopped";
  EXPECT_FALSE(m->on_registered(nt::actor_key::slice_of(0, 1, 0)));
  EXPECT_EQ(m->ignored_registrations(), 1u);
  EXPECT_TRUE(rec.take("wire").empty()) << "a late registration must not start wiring";
  m->on_run_requested();
  ASSERT_EQ(rec.finished_calls, 1);
  EXPECT_FALSE(rec.result->ok);
  EXPECT_CONTAINS(rec.result->error, "registration deadline of 5s passed");
  EXPECT_CONTAINS(rec.result->error, "1 of 8 actors did not register");
  EXPECT_CONTAINS(rec.result->error, "neuron slice (replica 0, layer 2, slice 0)");
}

TEST_F(RunMachine, DuplicateAndUnknownRegistrationsAreRefused) {
  make(small_config(1));
  EXPECT_TRUE(m->on_registered(nt::actor_key::worker(0)));
  EXPECT_FALSE(m->on_registered(nt::actor_key::worker(0)));
  EXPECT_FALSE(m->on_registered(nt::actor_key::worker(1)));         // no replica 1
  EXPECT_FALSE(m->on_registered(nt::actor_key::slice_of(0, 0, 1))); // one slice per layer
  EXPECT_FALSE(m->on_registered(nt::actor_key::coordinator()));
  EXPECT_EQ(m->ignored_registrations(), 4u);
  EXPECT_EQ(m->registered(), 1u);
}

TEST_F(RunMachine, TheDeadlineAfterRegistrationChangesNothing) {
  make(small_config(1));
  register_all();
  m->on_registration_deadline();
  EXPECT_FALSE(m->failed());
  EXPECT_EQ(m->current_phase(), phase::wiring);
}

TEST_F(RunMachine, NodesAreAskedToSpawnWhatThePlacementPutsOnThem) {
  auto c = small_config(1);
  const nt::run_layout layout{c};
  std::vector<std::size_t> placement(layout.size(), 0);
  for (std::size_t i = 0; i < layout.size(); ++i)
    if (layout.actors()[i].kind == nt::actor_kind::neuron_slice)
      placement[i] = 1; // slices on node "b", the rest on node "a"
  make(c, placement, {"a", "b"});
  m->on_node_joined(1);
  auto on_b = rec.take("spawn");
  ASSERT_EQ(on_b.size(), 2u);
  for (const auto& s : on_b) {
    EXPECT_EQ(s.node, 1u);
    EXPECT_EQ(s.key.kind, nt::actor_kind::neuron_slice);
  }
  m->on_node_joined(1); // a second hello asks for nothing new
  EXPECT_TRUE(rec.take("spawn").empty());
  m->on_registration_deadline();
  ASSERT_TRUE(m->failed());
  m->on_run_requested();
  ASSERT_TRUE(rec.result);
  EXPECT_CONTAINS(rec.result->error, "nodes that never joined: a");
  EXPECT_EQ(rec.result->error.find("b)"), std::string::npos) << rec.result->error;
}

TEST_F(RunMachine, AHeldPlacementSpawnsNothingUntilPlacedThenAsksEveryJoinedNode) {
  // Placement auto in a cluster: the coordinator plans once every node has
  // measured itself; nodes that join before that are asked afterwards.
  auto c = small_config(1);
  const nt::run_layout layout{c};
  const std::vector<std::size_t> described(layout.size(), 0);
  make(c, described, {"a", "b"});
  m->hold_placement();
  EXPECT_TRUE(m->placement_held());
  m->on_node_joined(0);
  m->on_node_joined(1);
  EXPECT_TRUE(rec.take("spawn").empty());
  std::vector<std::size_t> planned(layout.size(), 0);
  for (std::size_t i = 0; i < layout.size(); ++i)
    if (layout.actors()[i].kind == nt::actor_kind::neuron_slice)
      planned[i] = 1;
  EXPECT_CONTAINS(error_of([&] { m->place({0, 1}); }), "the placement covers 2 actors");
  EXPECT_CONTAINS(error_of([&] { m->place(std::vector<std::size_t>(layout.size(), 2)); }),
                  "names node 2 of 2");
  m->place(planned);
  EXPECT_FALSE(m->placement_held());
  const auto spawns = rec.take("spawn");
  ASSERT_EQ(spawns.size(), layout.size() - 1); // all but the coordinator
  for (const auto& s : spawns)
    EXPECT_EQ(s.node, s.key.kind == nt::actor_kind::neuron_slice ? 1u : 0u) << nt::describe(s.key);
  EXPECT_CONTAINS(error_of([&] { m->place(planned); }), "without a held placement");
  EXPECT_CONTAINS(error_of([&] { m->hold_placement(); }), "before any node joins");
}

TEST_F(RunMachine, AHeldPlacementAtTheDeadlineSaysWhatItWaitedFor) {
  auto c = small_config(1);
  make(c, std::vector<std::size_t>(nt::run_layout{c}.size(), 0), {"a", "b"});
  m->hold_placement();
  m->on_node_joined(0);
  m->on_registration_deadline();
  ASSERT_TRUE(m->failed());
  m->on_run_requested();
  ASSERT_TRUE(rec.result);
  EXPECT_CONTAINS(rec.result->error, "waited for every node's start-up figures");
  EXPECT_CONTAINS(rec.result->error, "nodes that never joined: b");
}

TEST_F(RunMachine, ALostActorBeforeTrainingEndsTheRunNamingIt) {
  make(small_config(2));
  register_all(); // wiring: nothing has trained yet, there is nothing to recover
  m->on_run_requested();
  m->on_lost(nt::actor_key::relay(1, 2), "remote_link_unreachable");
  ASSERT_EQ(rec.finished_calls, 1);
  EXPECT_FALSE(rec.result->ok);
  EXPECT_CONTAINS(rec.result->error, "lost relay (replica 1, boundary 2)");
  EXPECT_CONTAINS(rec.result->error, "remote_link_unreachable");
  // Later events are ignored: the run is over.
  m->on_lost(nt::actor_key::worker(0), "x");
  EXPECT_EQ(rec.finished_calls, 1);
}

TEST_F(RunMachine, AStopRequestBeforeTrainingBeganEndsTheRunAtOnce) {
  make(small_config(2));
  EXPECT_FALSE(m->training_began());
  m->request_stop("SIGINT");
  ASSERT_TRUE(m->failed());
  EXPECT_CONTAINS(m->result().error, "stopped by SIGINT before training began; nothing was written");
}

TEST_F(RunMachine, DivergenceEndsTheRunAndUnexpectedBarriersAreIgnored) {
  make(small_config(2));
  start();
  nt::barrier_report b;
  b.replica = 0;
  m->on_barrier(b);
  m->on_barrier(b); // the same replica twice
  EXPECT_EQ(rec.lines.back(), "coordinator: ignored an unexpected barrier report from replica 0");
  b.replica = 1;
  b.diverged = true;
  b.epoch = 2;
  b.samples = 640;
  m->on_barrier(b);
  ASSERT_TRUE(rec.result);
  EXPECT_CONTAINS(rec.result->error, "training diverged: replica 1");
  EXPECT_CONTAINS(rec.result->error, "epoch 2 after 640 samples");
}

TEST(Fanout, CountsEachSlotOnceUnderItsStep) {
  nt::fanout f;
  f.start(7, 2);
  EXPECT_EQ(f.reply(6, 0), nt::fanout::verdict::late);
  EXPECT_EQ(f.reply(7, 2), nt::fanout::verdict::late);
  EXPECT_EQ(f.reply(7, 1), nt::fanout::verdict::counted);
  EXPECT_EQ(f.reply(7, 1), nt::fanout::verdict::duplicate);
  EXPECT_EQ(f.missing(), 1u);
  EXPECT_EQ(f.reply(7, 0), nt::fanout::verdict::complete);
  EXPECT_FALSE(f.active());
  EXPECT_EQ(f.reply(7, 0), nt::fanout::verdict::late) << "a complete step takes no more replies";
}

} // namespace
