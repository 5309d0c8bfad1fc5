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
using test_support::error_of;

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
  std::vector<nt::worker_position> seeks;
  /// The weights and the policy state (its one part, the outer momentum) of
  /// every exchange command.
  struct outer_command {
    nt::dense_params theta;
    nt::dense_params velocity;
    std::size_t parts = 0;
  };
  std::vector<outer_command> outer_in;
  std::vector<nt::layer_state> restored; ///< the state of every restore command
  std::vector<std::pair<std::uint32_t, std::uint32_t>> validate_parts; ///< (part, parts)
  std::vector<nt::recovery_summary> recoveries;
  std::vector<std::shared_ptr<const nt::run_state>> saved;
  int finished_calls = 0;
  int stops = 0;

  void spawn(std::uint64_t s, std::size_t node, const nt::actor_key& a, std::uint32_t) override {
    commands.push_back({"spawn", s, a, 0, 0, node});
  }
  void wire(std::uint64_t s, const nt::actor_key& a) override {
    commands.push_back({"wire", s, a});
  }
  void resume(std::uint32_t r) override { commands.push_back({"resume", 0, {}, r}); }
  void validate(std::uint64_t s, std::uint32_t r, std::uint32_t part,
                std::uint32_t parts) override {
    commands.push_back({"validate", s, {}, r});
    validate_parts.emplace_back(part, parts);
  }
  void collect(std::uint64_t s, std::uint32_t l, std::uint32_t r) override {
    commands.push_back({"collect", s, {}, r, l});
  }
  void exchange(std::uint64_t s, std::uint32_t l, std::uint32_t best, nt::sync_policy,
                nt::dense_params theta, nt::policy_state st) override {
    commands.push_back({"exchange", s, {}, best, l});
    const std::size_t parts = st.parts.size();
    outer_in.push_back(
        {std::move(theta), parts > 0 ? std::move(st.parts[0]) : nt::dense_params{}, parts});
  }
  void query_stats(std::uint64_t s, const nt::actor_key& a) override {
    commands.push_back({"stats", s, a});
  }
  void restore(std::uint64_t s, std::uint32_t l, std::uint32_t r,
               const nt::layer_state& st) override {
    commands.push_back({"restore", s, {}, r, l});
    restored.push_back(st);
  }
  void pause(std::uint64_t s, std::uint32_t r) override { commands.push_back({"pause", s, {}, r}); }
  void seek(std::uint64_t s, std::uint32_t r, const nt::worker_position& p) override {
    commands.push_back({"seek", s, {}, r});
    seeks.push_back(p);
  }
  void stop(const nt::actor_key& a) override { commands.push_back({"stop", 0, a}); }
  void settle(std::uint64_t s) override { commands.push_back({"settle", s, {}}); }
  void recovered(const nt::recovery_summary& r) override { recoveries.push_back(r); }
  void save(std::shared_ptr<const nt::run_state> st) override { saved.push_back(std::move(st)); }
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

/// 2 layers (16-8-4), `replicas` replicas, one slice per layer, policy
/// best: the round that scores every replica first and then exchanges
/// (average and outer score the synced model after the exchange:
/// OuterRunMachine, AverageRunMachine).
nt::run_config small_config(std::size_t replicas) {
  nt::run_config c;
  c.model.layers = {16, 8, 4};
  c.topology.replicas = replicas;
  c.topology.slices = {1};
  c.topology.policy = nt::sync_policy::best;
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

  /// Every replica reports a barrier (finished = last; on_grid: a full
  /// sync interval since the last round).
  void barrier_all(std::uint64_t samples, bool last, bool on_grid = true) {
    for (std::uint32_t r = 0; r < cfg.topology.replicas; ++r) {
      nt::barrier_report b;
      b.replica = r;
      b.samples = samples;
      b.epoch = 1;
      b.finished = last;
      b.on_grid = on_grid;
      b.loss_sum = 1.0;
      b.loss_samples = 10;
      b.position.samples = samples;
      m->on_barrier(b);
    }
  }

  /// The replicas in `which` report a barrier at `samples` (their current
  /// incarnation).
  void barrier_all_at(std::uint64_t samples, bool last, const std::vector<std::uint32_t>& which) {
    for (std::uint32_t r : which) {
      nt::barrier_report b;
      b.replica = r;
      b.incarnation = m->incarnation(r);
      b.samples = samples;
      b.epoch = 1;
      b.finished = last;
      b.position.samples = samples;
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
      m->on_collected(c.step, c.layer, c.replica, some_layer(static_cast<float>(c.layer)));
  }

  /// Answers every pending exchange (the leaders' computation), then every
  /// restore that applies it; `bytes` per answer.
  void exchange_all(std::uint64_t bytes = 1) {
    for (const auto& e : rec.take("exchange"))
      m->on_exchanged(e.step, e.layer, some_layer(9.0f), bytes);
    for (const auto& r : rec.take("restore"))
      m->on_restored(r.step, r.layer, r.replica, bytes);
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
  m->on_exchanged(ex[0].step, 0, some_layer(1.0f), 100);
  EXPECT_EQ(m->current_round_step(), step::exchanging);
  m->on_exchanged(ex[1].step, 1, some_layer(2.0f), 50);
  EXPECT_EQ(m->current_round_step(), step::applying) << "the result is kept, then applied";
  auto restores = rec.take("restore");
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

TEST_F(RunMachine, RoundTimeIsAttributedToEachStep) {
  auto c = small_config(2);
  c.training.keep_best = true;
  make(c);
  start();
  // Replica 0 reaches the barrier at 101 s, replica 1 at 104: 3 s draining.
  clock = 101;
  nt::barrier_report b;
  b.samples = 500;
  b.epoch = 1;
  b.position.samples = 500;
  m->on_barrier(b);
  clock = 104;
  b.replica = 1;
  m->on_barrier(b);
  ASSERT_EQ(m->current_round_step(), step::scoring);
  clock = 106; // 2 s scoring
  score({0.5, 0.7});
  ASSERT_EQ(m->current_round_step(), step::keeping_best);
  clock = 106.5; // 0.5 s collecting the best replica
  answer_collects();
  ASSERT_EQ(m->current_round_step(), step::exchanging);
  clock = 107.5; // 1 s computing the exchange
  for (const auto& e : rec.take("exchange"))
    m->on_exchanged(e.step, e.layer, some_layer(9.0f), 1);
  ASSERT_EQ(m->current_round_step(), step::applying);
  clock = 107.75; // 0.25 s applying
  for (const auto& r : rec.take("restore"))
    m->on_restored(r.step, r.layer, r.replica, 1);
  ASSERT_EQ(m->current_phase(), phase::training);
  clock = 120; // training time is no round time
  barrier_all(1000, true);
  clock = 121;
  score({0.6, 0.6}); // the last round: its summary goes to the metrics
  ASSERT_EQ(rec.rounds.size(), 2u);
  using rt = nt::run_result::round_timing;
  const auto& t = rec.rounds.back().round_time; // as the metrics see it
  EXPECT_DOUBLE_EQ(t.seconds[rt::draining], 3.0);
  EXPECT_DOUBLE_EQ(t.seconds[rt::keeping_best], 0.5);
  EXPECT_DOUBLE_EQ(t.seconds[rt::exchanging], 1.0);
  EXPECT_DOUBLE_EQ(t.seconds[rt::applying], 0.25);
  EXPECT_DOUBLE_EQ(t.seconds[rt::scoring], 3.0) << "both rounds' scoring (2 s, then 1 s)";
  EXPECT_DOUBLE_EQ(t.seconds[rt::snapshotting], 0.0);
}

TEST_F(RunMachine, ValidateEveryKRoundsScoresOnlyThoseAndTheLast) {
  // Policy none: every replica scored, nothing exchanged (for average and
  // outer see AverageRunMachine and OuterRunMachine).
  auto c = small_config(2);
  c.topology.policy = nt::sync_policy::none;
  c.topology.validate_every = 2;
  make(c);
  start();
  barrier_all(500, false); // round 1: not scored, straight to keeping the replicas' state
  EXPECT_TRUE(rec.take("validate").empty());
  EXPECT_EQ(m->current_round_step(), step::snapshotting);
  answer_collects();
  ASSERT_EQ(m->current_phase(), phase::training);
  EXPECT_TRUE(rec.rounds.empty()) << "no curve point, no progress line";
  barrier_all(1000, false); // round 2: scored
  EXPECT_EQ(m->current_round_step(), step::scoring);
  score({0.5, 0.6});
  answer_collects();
  ASSERT_EQ(rec.rounds.size(), 1u);
  EXPECT_EQ(rec.rounds[0].round, 2u);
  EXPECT_DOUBLE_EQ(rec.rounds[0].point.train_loss, 0.1) << "both rounds' loss, averaged";
  barrier_all(1500, true); // round 3: the last, scored although 3 % 2 != 0
  EXPECT_EQ(m->current_round_step(), step::scoring);
  score({0.7, 0.6});
  EXPECT_EQ(m->current_phase(), phase::finishing);
  answer_collects();
  answer_stats();
  ASSERT_TRUE(rec.result);
  EXPECT_EQ(rec.result->sync_rounds, 3u);
  EXPECT_EQ(rec.result->curve.size(), 2u);
  EXPECT_DOUBLE_EQ(rec.result->best_validation_accuracy, 0.7);
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
  for (const auto& r : rec.take("restore"))
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

TEST_F(RunMachine, StopsAtTheFirstRoundReachingTheTarget) {
  auto c = small_config(2);
  c.training.target_accuracy = 0.75;
  make(c);
  start();
  clock = 103;
  barrier_all(500, false);
  score({0.5, 0.7});
  EXPECT_EQ(m->current_phase(), phase::sync_round) << "0.7 < 0.75: keep training";
  exchange_all();
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
    m->on_collected(x.step, x.layer, x.replica, some_layer(7.0f));
  EXPECT_EQ(m->current_round_step(), step::exchanging);
  exchange_all();
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
  // Nothing is exchanged, but the replica's layers are kept for a rollback.
  EXPECT_EQ(m->current_round_step(), step::snapshotting);
  EXPECT_TRUE(rec.take("resume").empty());
  answer_collects();
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

/// Drives a recovery from the settle timer to the end: answers pauses with
/// `paused` samples, registers and acknowledges every respawn, wire,
/// restore and seek. Returns the keys respawned.
std::vector<nt::actor_key> recover(nt::run_machine& m, recorder& rec, std::uint64_t paused) {
  auto settle = rec.take("settle");
  EXPECT_FALSE(settle.empty());
  if (settle.empty())
    return {};
  m.on_settled(settle.back().step);
  for (const auto& p : rec.take("pause")) {
    nt::worker_position pos;
    pos.samples = paused;
    m.on_paused(p.step, p.replica, pos);
  }
  rec.take("stop");
  std::vector<nt::actor_key> spawned;
  for (const auto& sp : rec.take("spawn")) {
    const bool leader = sp.key.kind == nt::actor_kind::swarm_leader;
    EXPECT_TRUE(m.on_registered(sp.key, leader ? 0 : m.incarnation(sp.key.replica)))
        << nt::to_string(sp.key);
    m.on_spawned(sp.step, sp.key);
    spawned.push_back(sp.key);
  }
  for (const auto& w : rec.take("wire"))
    m.on_wired(w.step, w.key);
  for (const auto& r : rec.take("restore"))
    m.on_restored(r.step, r.layer, r.replica, 1);
  for (const auto& sk : rec.take("seek"))
    m.on_seeked(sk.step, sk.replica);
  return spawned;
}

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
  auto applying = rec.take("restore");
  m->on_restored(applying[0].step, applying[0].layer, applying[0].replica, 1);
  m->on_lost(nt::actor_key::slice_of(0, 0, 0), "kill");
  recover(*m, rec, 0);
  // Back in the round: the result is applied to every replica again.
  EXPECT_EQ(m->current_round_step(), step::applying);
  EXPECT_EQ(rec.seeks.back().samples, 500u) << "the rolled-back worker goes to this round";
  auto again = rec.take("restore");
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
  for (const auto& sp : rec.take("spawn")) {
    m->on_registered(sp.key, 0);
    m->on_spawned(sp.step, sp.key);
  }
  for (const auto& w : rec.take("wire"))
    m->on_wired(w.step, w.key);
  m->on_run_requested();
  ASSERT_EQ(m->current_phase(), phase::training);
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
  for (const auto& r : rec.take("restore"))
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

TEST_F(RunMachine, ARunCheckpointIsKeptEveryKRoundsAfterTheExchange) {
  auto c = small_config(2);
  c.training.checkpoint_every = 2;
  make(c);
  start();
  for (std::uint64_t round = 1; round <= 4; ++round) {
    barrier_all_at(500 * round, false, {0, 1});
    score({0.5, 0.6});
    EXPECT_EQ(rec.saved.size(), (round - 1) / 2) << "nothing is written before the exchange";
    exchange_all();
    rec.take("resume");
  }
  ASSERT_EQ(rec.saved.size(), 2u);
  const auto& st = *rec.saved[1];
  EXPECT_EQ(st.round, 4u);
  EXPECT_EQ(st.curve.size(), 4u);
  ASSERT_EQ(st.models.size(), 1u) << "average: every replica holds the same layers";
  EXPECT_EQ(st.models[0][0].params.w(0, 0), 9.0f) << "the exchanged layers";
  ASSERT_EQ(st.positions.size(), 2u);
  EXPECT_EQ(st.positions[1].samples, 2000u);
  EXPECT_EQ(st.samples, 4000u);
  EXPECT_EQ(st.config_hash, c.hash());
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

/// The outer-policy run of small_config(2): keep_best, a run checkpoint
/// every round.
nt::run_config outer_config() {
  auto c = small_config(2);
  c.topology.policy = nt::sync_policy::outer;
  c.training.keep_best = true;
  c.training.checkpoint_every = 1;
  return c;
}

class OuterRunMachine : public RunMachine {
protected:
  /// A state of layer l of small_config (16-8-4) with every weight `w` and
  /// every first moment `m`.
  static nt::layer_state layer_of(std::uint32_t l, float w, float m = 0) {
    const Eigen::Index in = l == 0 ? 16 : 8;
    const Eigen::Index out = l == 0 ? 8 : 4;
    nt::layer_state s;
    s.params.w = nt::matrix::Constant(in, out, w);
    s.params.b = nt::row_vector::Constant(out, w);
    s.w_state.m.assign(static_cast<std::size_t>(in * out), m);
    return s;
  }

  /// Answers every pending exchange as an outer leader: replica r's state
  /// of layer l has weights base + l (the same for every replica) and
  /// moments 10 r (its own); the new momentum is vel + l.
  void outer_exchange_all(float base, float vel) {
    for (const auto& e : rec.take("exchange")) {
      std::vector<nt::layer_state> post;
      for (std::size_t r = 0; r < 2; ++r)
        post.push_back(
            layer_of(e.layer, base + static_cast<float>(e.layer), 10.0f * static_cast<float>(r)));
      m->on_exchanged(e.step, e.layer, std::move(post),
                      nt::policy_state{{layer_of(e.layer, vel + static_cast<float>(e.layer)).params}},
                      1);
    }
  }
  void restore_all() {
    for (const auto& r : rec.take("restore"))
      m->on_restored(r.step, r.layer, r.replica, 1);
  }
  /// Answers the pending validations (one part of the subset per replica)
  /// of `v`: part r scores 100 samples, `correct[r]` of them right, loss
  /// sum 100 - correct[r].
  void score_parts(const std::vector<command>& v, const std::vector<std::uint64_t>& correct) {
    for (const auto& c : v) {
      const auto k = correct[c.replica];
      m->on_scored(c.step, c.replica,
                   nt::replica_score{1.0 - static_cast<double>(k) / 100.0,
                                     static_cast<double>(k) / 100.0, 100.0 - static_cast<double>(k),
                                     k, 100});
    }
  }
};

TEST_F(OuterRunMachine, ExchangesFirstThenScoresTheSyncedModelOnce) {
  make(outer_config());
  start();
  rec.take("resume");
  barrier_all(500, false);
  EXPECT_TRUE(rec.take("validate").empty()) << "no replica is scored before the exchange";
  EXPECT_EQ(m->current_round_step(), step::exchanging);
  ASSERT_EQ(rec.outer_in.size(), 2u) << "one outer state per layer";
  // Round 1: theta is the initial weights, the momentum zero.
  const auto geo = nt::model_geometry(cfg.model);
  for (std::size_t l = 0; l < 2; ++l) {
    const auto init = nt::init_dense(cfg.training.seed, geo[l]);
    EXPECT_TRUE(rec.outer_in[l].theta.w == init.w) << "layer " << l;
    EXPECT_EQ(rec.outer_in[l].velocity.w.rows(), init.w.rows());
    EXPECT_EQ(rec.outer_in[l].velocity.w.cols(), init.w.cols());
    EXPECT_EQ(rec.outer_in[l].velocity.w.cwiseAbs().maxCoeff(), 0.0f);
  }
  outer_exchange_all(100, 0.5f);
  EXPECT_EQ(m->current_round_step(), step::applying);
  auto restores = rec.take("restore");
  ASSERT_EQ(restores.size(), 4u) << "every replica takes its own state";
  for (std::size_t k = 0; k < restores.size(); ++k) {
    EXPECT_EQ(rec.restored[k].params.w(0, 0), 100.0f + static_cast<float>(restores[k].layer));
    EXPECT_EQ(rec.restored[k].w_state.m[0], 10.0f * static_cast<float>(restores[k].replica))
        << "each replica keeps its own moments";
  }
  EXPECT_TRUE(rec.saved.empty()) << "the run state waits for the round's score";
  for (const auto& r : restores)
    m->on_restored(r.step, r.layer, r.replica, 1);
  EXPECT_EQ(m->current_round_step(), step::scoring);
  auto v = rec.take("validate");
  ASSERT_EQ(v.size(), 2u) << "the synced model is scored once: one half of the subset per replica";
  ASSERT_EQ(rec.validate_parts.size(), 2u);
  for (std::size_t k = 0; k < 2; ++k)
    EXPECT_EQ(rec.validate_parts[k], (std::pair<std::uint32_t, std::uint32_t>{v[k].replica, 2}));
  score_parts({v[0]}, {70, 90});
  EXPECT_EQ(m->current_round_step(), step::scoring) << "half the subset is not a score";
  score_parts({v[1]}, {70, 90});
  EXPECT_EQ(m->current_phase(), phase::training);
  ASSERT_EQ(rec.rounds.size(), 1u);
  EXPECT_TRUE(rec.rounds[0].synced);
  ASSERT_EQ(rec.rounds[0].scores.size(), 1u);
  EXPECT_DOUBLE_EQ(rec.rounds[0].point.validation_accuracy, 0.8) << "160 of 200";
  EXPECT_DOUBLE_EQ(rec.rounds[0].point.validation_loss, 0.2) << "40 / 200";
  EXPECT_EQ(rec.rounds[0].round, 1u);
  EXPECT_EQ(m->result().sync_rounds, 1u);
  ASSERT_EQ(rec.saved.size(), 1u);
  const auto& st = *rec.saved[0];
  EXPECT_EQ(st.round, 1u);
  ASSERT_EQ(st.curve.size(), 1u) << "the checkpoint has the round's curve point";
  EXPECT_DOUBLE_EQ(st.curve[0].validation_accuracy, 0.8);
  ASSERT_EQ(st.models.size(), 2u) << "replicas keep their own moments: one model each";
  EXPECT_EQ(st.models[1][0].params.w(0, 0), 100.0f);
  EXPECT_EQ(st.models[1][0].w_state.m[0], 10.0f);
  ASSERT_EQ(st.policy_states.size(), 2u);
  EXPECT_EQ(st.policy_states[1].parts[0].w(0, 0), 1.5f);
  ASSERT_EQ(st.best_layers.size(), 2u) << "keep_best: the synced model";
  EXPECT_EQ(st.best_layers[1].params.w(0, 0), 101.0f);
  // Round 2 starts from round 1's result.
  rec.take("resume");
  rec.outer_in.clear();
  barrier_all(1000, true);
  ASSERT_EQ(rec.outer_in.size(), 2u);
  EXPECT_EQ(rec.outer_in[1].theta.w(0, 0), 101.0f);
  EXPECT_EQ(rec.outer_in[1].velocity.w(0, 0), 1.5f);
  outer_exchange_all(200, 2.0f);
  restore_all();
  v = rec.take("validate");
  ASSERT_EQ(v.size(), 2u);
  score_parts(v, {70, 70}); // worse: the best pass stays
  EXPECT_EQ(m->current_phase(), phase::finishing);
  EXPECT_TRUE(rec.take("collect").empty()) << "the final model is in hand";
  answer_stats();
  ASSERT_TRUE(rec.result);
  ASSERT_TRUE(rec.result->ok) << rec.result->error;
  ASSERT_EQ(rec.result->layers.size(), 2u);
  EXPECT_EQ(rec.result->layers[0].params.w(0, 0), 100.0f) << "keep_best: round 1's model";
  ASSERT_TRUE(rec.result->end_state);
  EXPECT_EQ(rec.result->end_state->policy_states[0].parts[0].w(0, 0), 2.0f);
  EXPECT_EQ(rec.result->end_state->round, 2u);
}

TEST_F(OuterRunMachine, ALastRoundOffTheSyncGridIsNotTheRunState) {
  make(outer_config());
  start();
  barrier_all(500, false);
  outer_exchange_all(100, 0.5f);
  restore_all();
  score_parts(rec.take("validate"), {70, 90});
  ASSERT_EQ(rec.saved.size(), 1u);
  // The epochs end 140 samples per replica after round 1, off the grid: the
  // round gives the final model and its curve point, but the run state that
  // a resumed run continues stays round 1 (a longer run has no round here).
  barrier_all(640, true, /*on_grid=*/false);
  outer_exchange_all(200, 2.0f);
  restore_all();
  score_parts(rec.take("validate"), {95, 95});
  answer_stats();
  ASSERT_TRUE(rec.result);
  ASSERT_TRUE(rec.result->ok) << rec.result->error;
  EXPECT_EQ(rec.result->sync_rounds, 2u);
  EXPECT_EQ(rec.result->curve.size(), 2u);
  EXPECT_EQ(rec.result->layers[0].params.w(0, 0), 200.0f) << "keep_best: round 2's model";
  EXPECT_EQ(rec.saved.size(), 1u) << "no run checkpoint of the off-grid round";
  ASSERT_TRUE(rec.result->end_state);
  EXPECT_EQ(rec.result->end_state->round, 1u);
  EXPECT_EQ(rec.result->end_state->samples, 1000u);
  EXPECT_EQ(rec.result->end_state->curve.size(), 1u);
  EXPECT_EQ(rec.result->end_state->policy_states[0].parts[0].w(0, 0), 0.5f) << "round 1's momentum";
}

TEST_F(OuterRunMachine, AStopRequestEndsTheRunAfterTheNextRoundWhichIsTheRunState) {
  make(outer_config());
  start();
  EXPECT_TRUE(m->training_began());
  m->request_stop("SIGTERM");
  EXPECT_EQ(rec.lines.back(), "coordinator: SIGTERM: stopping at the end of the next sync round");
  EXPECT_EQ(m->current_phase(), phase::training) << "the round under way ends first";
  barrier_all(500, false);
  outer_exchange_all(100, 0.5f);
  restore_all();
  score_parts(rec.take("validate"), {70, 90});
  EXPECT_EQ(m->current_phase(), phase::finishing);
  answer_stats();
  ASSERT_TRUE(rec.result);
  ASSERT_TRUE(rec.result->ok) << rec.result->error;
  EXPECT_EQ(rec.result->sync_rounds, 1u);
  ASSERT_TRUE(rec.result->end_state);
  EXPECT_EQ(rec.result->end_state->round, 1u) << "the round the run stopped at is kept";
  EXPECT_EQ(rec.result->end_state->samples, 1000u);
}

TEST_F(RunMachine, AStopRequestBeforeTrainingBeganEndsTheRunAtOnce) {
  make(small_config(2));
  EXPECT_FALSE(m->training_began());
  m->request_stop("SIGINT");
  ASSERT_TRUE(m->failed());
  EXPECT_CONTAINS(m->result().error, "stopped by SIGINT before training began; nothing was written");
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

TEST_F(OuterRunMachine, AnExchangeThatBreaksTheOuterRoundEndsTheRunNamingIt) {
  struct bad_case {
    const char* what;
    std::vector<nt::layer_state> post;
    nt::dense_params velocity;
  };
  const std::vector<bad_case> cases = {
      {"different weights for different replicas",
       {layer_of(0, 1.0f), layer_of(0, 2.0f)},
       layer_of(0, 0.5f).params},
      {"weights of 8 x 4 (bias 4) for a layer of 16 x 8",
       {layer_of(1, 1.0f), layer_of(1, 1.0f)},
       layer_of(0, 0.5f).params},
      {"an outer momentum of 0 x 0 (bias 0) for a layer of 16 x 8",
       {layer_of(0, 1.0f), layer_of(0, 1.0f)},
       nt::dense_params{}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    rec = recorder{};
    make(outer_config());
    start();
    barrier_all(500, false);
    auto ex = rec.take("exchange");
    ASSERT_EQ(ex.size(), 2u);
    auto post = c.post;
    nt::policy_state vel{{c.velocity}};
    m->on_exchanged(ex[0].step, 0, std::move(post), std::move(vel), 1);
    ASSERT_TRUE(rec.result);
    EXPECT_FALSE(rec.result->ok);
    EXPECT_CONTAINS(rec.result->error, "the swarm leader of layer 1 answered the sync round with");
    EXPECT_CONTAINS(rec.result->error, c.what);
  }
}

TEST_F(OuterRunMachine, AScoreWhoseCountsDoNotAddUpEndsTheRun) {
  make(outer_config());
  start();
  barrier_all(500, false);
  outer_exchange_all(100, 0.5f);
  restore_all();
  auto v = rec.take("validate");
  ASSERT_EQ(v.size(), 2u);
  m->on_scored(v[0].step, 0, nt::replica_score{0.5, 0.5, 50, 120, 100});
  ASSERT_TRUE(rec.result);
  EXPECT_FALSE(rec.result->ok);
  EXPECT_CONTAINS(rec.result->error,
                  "replica 0 sent an inconsistent validation score (loss 0.5, accuracy 0.5, 120 of "
                  "100 samples right)");
}

TEST_F(OuterRunMachine, ValidateEverySkipsTheScoreButNotTheExchange) {
  auto c = outer_config();
  c.topology.validate_every = 2;
  make(c);
  start();
  rec.take("resume");
  barrier_all(500, false);
  outer_exchange_all(100, 0.5f);
  restore_all();
  EXPECT_TRUE(rec.take("validate").empty()) << "round 1 is not scored";
  EXPECT_EQ(m->current_phase(), phase::training);
  EXPECT_EQ(m->result().sync_rounds, 1u);
  ASSERT_EQ(rec.saved.size(), 1u) << "its checkpoint is written all the same";
  EXPECT_TRUE(rec.saved[0]->curve.empty());
  rec.take("resume");
  barrier_all(1000, false);
  outer_exchange_all(200, 1.0f);
  restore_all();
  EXPECT_EQ(rec.take("validate").size(), 2u) << "round 2 is";
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

using AverageRunMachine = OuterRunMachine;

TEST_F(AverageRunMachine, ExchangesFirstThenScoresTheSyncedModelOnceAndStoresItOnce) {
  auto c = small_config(2);
  c.topology.policy = nt::sync_policy::average;
  c.training.keep_best = true;
  c.training.checkpoint_every = 1;
  make(c);
  start();
  rec.take("resume");
  barrier_all(500, false);
  EXPECT_TRUE(rec.take("validate").empty()) << "no replica is scored before the exchange";
  EXPECT_EQ(m->current_round_step(), step::exchanging);
  for (const auto& e : rec.take("exchange"))
    m->on_exchanged(e.step, e.layer, layer_of(e.layer, 5.0f + static_cast<float>(e.layer), 1.0f),
                    1);
  ASSERT_EQ(m->current_round_step(), step::applying);
  auto restores = rec.take("restore");
  EXPECT_EQ(restores.size(), 4u) << "every replica takes the mean";
  for (const auto& r : restores)
    m->on_restored(r.step, r.layer, r.replica, 1);
  auto v = rec.take("validate");
  ASSERT_EQ(v.size(), 2u) << "the synced model, half the subset on each replica";
  score_parts(v, {80, 60});
  ASSERT_EQ(rec.rounds.size(), 1u);
  EXPECT_TRUE(rec.rounds[0].synced);
  EXPECT_DOUBLE_EQ(rec.rounds[0].point.validation_accuracy, 0.7);
  ASSERT_EQ(rec.saved.size(), 1u);
  EXPECT_EQ(rec.saved[0]->models.size(), 1u) << "every replica holds the same state: stored once";
  EXPECT_TRUE(rec.saved[0]->policy_states.empty());
  ASSERT_EQ(rec.saved[0]->curve.size(), 1u);
  EXPECT_EQ(rec.saved[0]->best_layers.at(1).params.w(0, 0), 6.0f);
  // The last round: exchanged, applied, scored, then the run ends with the
  // synced model in hand.
  rec.take("resume");
  barrier_all(1000, true);
  EXPECT_EQ(m->current_round_step(), step::exchanging) << "the last round exchanges too";
  for (const auto& e : rec.take("exchange"))
    m->on_exchanged(e.step, e.layer, layer_of(e.layer, 7.0f, 1.0f), 1);
  for (const auto& r : rec.take("restore"))
    m->on_restored(r.step, r.layer, r.replica, 1);
  score_parts(rec.take("validate"), {50, 50}); // worse than round 1
  EXPECT_EQ(m->current_phase(), phase::finishing);
  EXPECT_TRUE(rec.take("collect").empty());
  answer_stats();
  ASSERT_TRUE(rec.result);
  ASSERT_TRUE(rec.result->ok) << rec.result->error;
  EXPECT_EQ(rec.result->layers.at(0).params.w(0, 0), 5.0f) << "keep_best: round 1's synced model";
  EXPECT_TRUE(rec.result->synced_model);
  EXPECT_EQ(rec.result->sync_rounds, 2u);
  ASSERT_TRUE(rec.result->end_state);
  EXPECT_EQ(rec.result->end_state->model_of(1).at(0).params.w(0, 0), 7.0f)
      << "the run state is the last round's";
}

TEST_F(AverageRunMachine, AReplyWithAStatePerReplicaEndsTheRun) {
  auto c = small_config(2);
  c.topology.policy = nt::sync_policy::average;
  make(c);
  start();
  barrier_all(500, false);
  auto ex = rec.take("exchange");
  ASSERT_EQ(ex.size(), 2u);
  m->on_exchanged(ex[0].step, 0, {layer_of(0, 1.0f), layer_of(0, 2.0f)}, nt::policy_state{}, 1);
  ASSERT_TRUE(rec.result);
  EXPECT_CONTAINS(rec.result->error, "2 states (an average round gives every replica one)");
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
