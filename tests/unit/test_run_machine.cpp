// The coordinator's round state machine, without actors: a recording backend
// stands in for the actor, a fake clock for time.
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "nettorrent/run_machine.hpp"

namespace nt = nettorrent;

namespace {

using phase = nt::run_machine::phase;
using step = nt::run_machine::round_step;

/// One command the machine issued.
struct command {
  std::string what; ///< "spawn", "wire", "resume", "validate", "collect", "exchange", "stats"
  std::uint64_t step = 0;
  nt::actor_key key;
  std::uint32_t replica = 0;
  std::uint32_t layer = 0;
  std::size_t node = 0;
};

class recorder : public nt::run_backend {
public:
  std::vector<command> commands;
  std::vector<std::string> lines;
  std::vector<nt::round_summary> rounds;
  std::optional<nt::run_result> result;
  int finished_calls = 0;
  int stops = 0;

  void spawn(std::uint64_t s, std::size_t node, const nt::actor_key& a, std::uint32_t) override {
    commands.push_back({"spawn", s, a, 0, 0, node});
  }
  void wire(std::uint64_t s, const nt::actor_key& a) override {
    commands.push_back({"wire", s, a});
  }
  void resume(std::uint32_t r) override { commands.push_back({"resume", 0, {}, r}); }
  void validate(std::uint64_t s, std::uint32_t r) override {
    commands.push_back({"validate", s, {}, r});
  }
  void collect(std::uint64_t s, std::uint32_t l, std::uint32_t r) override {
    commands.push_back({"collect", s, {}, r, l});
  }
  void exchange(std::uint64_t s, std::uint32_t l, std::uint32_t best, nt::sync_policy) override {
    commands.push_back({"exchange", s, {}, best, l});
  }
  void query_stats(std::uint64_t s, const nt::actor_key& a) override {
    commands.push_back({"stats", s, a});
  }
  void round_done(const nt::round_summary& r, bool) override { rounds.push_back(r); }
  void log(const std::string& line) override { lines.push_back(line); }
  void finished(nt::run_result&& r) override {
    ++finished_calls;
    result = std::move(r);
  }
  void stop_all() override { ++stops; }

  /// The commands named `what` issued since the last take(), removed from the log.
  std::vector<command> take(const std::string& what) {
    std::vector<command> out;
    std::vector<command> rest;
    for (auto& c : commands)
      (c.what == what ? out : rest).push_back(c);
    commands = std::move(rest);
    return out;
  }
};

/// 2 layers (16-8-4), `replicas` replicas, one slice per layer.
nt::run_config small_config(std::size_t replicas) {
  nt::run_config c;
  c.model.layers = {16, 8, 4};
  c.topology.replicas = replicas;
  c.topology.slices = {1};
  c.topology.policy = nt::sync_policy::average;
  c.training.keep_best = false;
  c.training.target_accuracy = 0;
  c.training.progress_interval = 0;
  c.system.registration_timeout = 5;
  return c;
}

nt::layer_state some_layer(float v) {
  nt::layer_state s;
  s.params.w = nt::matrix::Constant(2, 2, v);
  s.params.b = nt::row_vector::Constant(2, v);
  return s;
}

class RunMachine : public ::testing::Test {
protected:
  void make(nt::run_config c, std::vector<std::size_t> placement = {},
            std::vector<std::string> nodes = {}) {
    cfg = std::move(c);
    m.emplace(
        cfg, rec, [this] { return clock; }, /*verbose=*/true, std::move(placement),
        std::move(nodes));
  }

  void register_all() {
    for (const auto& a : m->layout().actors()) {
      if (a.kind != nt::actor_kind::coordinator) {
        EXPECT_TRUE(m->on_registered(a)) << nt::to_string(a);
      }
    }
  }

  /// Registers, wires and starts training.
  void start() {
    register_all();
    for (const auto& w : rec.take("wire"))
      m->on_wired(w.step, w.key);
    m->on_run_requested();
    ASSERT_EQ(m->current_phase(), phase::training);
  }

  /// Every replica reports a barrier (finished = last).
  void barrier_all(std::uint64_t samples, bool last) {
    for (std::uint32_t r = 0; r < cfg.topology.replicas; ++r) {
      nt::barrier_report b;
      b.replica = r;
      b.samples = samples;
      b.epoch = 1;
      b.finished = last;
      b.loss_sum = 1.0;
      b.loss_samples = 10;
      m->on_barrier(b);
    }
  }

  /// Answers every pending validate with accuracy acc[r].
  void score(const std::vector<double>& acc) {
    for (const auto& v : rec.take("validate"))
      m->on_scored(v.step, v.replica, nt::replica_score{1.0 - acc[v.replica], acc[v.replica]});
  }

  void answer_collects() {
    for (const auto& c : rec.take("collect"))
      m->on_collected(c.step, c.layer, some_layer(static_cast<float>(c.layer)));
  }

  void answer_stats() {
    for (const auto& c : rec.take("stats"))
      m->on_stats(c.step, c.key, nt::peer_counters{1, 0, 0, {}});
  }

  nt::run_config cfg;
  recorder rec;
  double clock = 100;
  std::optional<nt::run_machine> m;
};

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
  m->on_exchanged(ex[0].step, 0, 100);
  EXPECT_EQ(m->current_phase(), phase::sync_round);
  m->on_exchanged(ex[1].step, 1, 50);
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
    m->on_collected(c.step, c.layer, some_layer(static_cast<float>(c.layer)));
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
  EXPECT_EQ(r.sync_bytes, 150u);
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
    m->on_exchanged(e.step, e.layer, 1);
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
  m->on_exchanged(ex[0].step, 0, 1000);
  EXPECT_EQ(m->late_replies(), 3u);
  EXPECT_EQ(m->current_round_step(), step::exchanging);
}

TEST_F(RunMachine, StopsAtTheFirstRoundReachingTheTarget) {
  auto c = small_config(2);
  c.training.target_accuracy = 0.75;
  make(c);
  start();
  clock = 103;
  barrier_all(500, false);
  score({0.5, 0.7});
  EXPECT_EQ(m->current_phase(), phase::sync_round) << "0.7 < 0.75: keep training";
  for (const auto& e : rec.take("exchange"))
    m->on_exchanged(e.step, e.layer, 1);
  clock = 107;
  barrier_all(1000, false); // not finished: only the target stops it
  score({0.76, 0.6});
  EXPECT_EQ(m->current_phase(), phase::finishing);
  answer_collects();
  answer_stats();
  ASSERT_TRUE(rec.result);
  EXPECT_TRUE(rec.result->reached_target);
  EXPECT_DOUBLE_EQ(rec.result->time_to_target, 7.0);
  EXPECT_EQ(rec.result->sync_rounds, 2u);
  EXPECT_EQ(rec.result->best_replica, 0u);
}

TEST_F(RunMachine, KeepBestCollectsTheBestReplicaWhenItImproves) {
  auto c = small_config(2);
  c.training.keep_best = true;
  make(c);
  start();
  barrier_all(500, false);
  score({0.5, 0.7});
  EXPECT_EQ(m->current_round_step(), step::keeping_best);
  auto col = rec.take("collect");
  ASSERT_EQ(col.size(), 2u);
  EXPECT_EQ(col[0].replica, 1u);
  for (const auto& x : col)
    m->on_collected(x.step, x.layer, some_layer(7.0f));
  EXPECT_EQ(m->current_round_step(), step::exchanging);
  for (const auto& e : rec.take("exchange"))
    m->on_exchanged(e.step, e.layer, 1);
  barrier_all(1000, true);
  score({0.6, 0.6}); // worse: the first round's weights are kept
  EXPECT_EQ(m->current_phase(), phase::finishing);
  EXPECT_TRUE(rec.take("collect").empty()) << "the kept weights need no collection";
  answer_stats();
  ASSERT_TRUE(rec.result);
  EXPECT_TRUE(rec.result->kept_best);
  EXPECT_EQ(rec.result->saved_samples, 1000u);
  EXPECT_EQ(rec.result->layers[0].params.w(0, 0), 7.0f);
}

TEST_F(RunMachine, NoneAndOneReplicaSkipTheExchange) {
  auto c = small_config(1);
  make(c);
  start();
  rec.take("resume");
  barrier_all(500, false);
  score({0.5});
  EXPECT_TRUE(rec.take("exchange").empty());
  EXPECT_EQ(rec.take("resume").size(), 1u);
  EXPECT_EQ(m->current_phase(), phase::training);
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

TEST_F(RunMachine, ALostActorEndsTheRunNamingIt) {
  make(small_config(2));
  start();
  m->on_run_requested(); // a second request changes nothing
  m->on_lost(nt::actor_key::relay(1, 2), "remote_link_unreachable");
  ASSERT_EQ(rec.finished_calls, 1);
  EXPECT_FALSE(rec.result->ok);
  EXPECT_CONTAINS(rec.result->error, "lost gradient relay (replica 1, boundary 2)");
  EXPECT_CONTAINS(rec.result->error, "remote_link_unreachable");
  // Later events are ignored: the run is over.
  m->on_lost(nt::actor_key::worker(0), "x");
  barrier_all(100, false);
  EXPECT_EQ(rec.finished_calls, 1);
  EXPECT_TRUE(rec.take("validate").empty());
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

TEST(RunLayout, OneCanonicalOrderWithADenseIndex) {
  const nt::run_layout l{2, {2, 1}};
  ASSERT_EQ(l.size(), 1u + 2u + 2u + 6u + 6u);
  for (std::size_t i = 0; i < l.size(); ++i)
    EXPECT_EQ(l.index(l.actors()[i]), i) << nt::to_string(l.actors()[i]);
  EXPECT_EQ(l.actors()[0], nt::actor_key::coordinator());
  EXPECT_EQ(l.actors()[1], nt::actor_key::leader(0));
  EXPECT_EQ(l.actors()[3], nt::actor_key::worker(0));
  EXPECT_EQ(l.actors()[5], nt::actor_key::relay(0, 0));
  EXPECT_EQ(l.actors()[11], nt::actor_key::slice_of(0, 0, 0));
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

} // namespace
