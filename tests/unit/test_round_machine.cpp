// The sync round (round_machine.hpp) through the run machine: both orders
// (score first; exchange first and score the synced model), timing, the
// target, keep_best, validate_every, run checkpoints and broken replies.
#include "run_machine_fixture.hpp"

namespace {

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
  for (const auto& r : rec.take("apply"))
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
  auto restores = rec.take("apply");
  ASSERT_EQ(restores.size(), 4u) << "every replica takes the new weights";
  for (std::size_t k = 0; k < restores.size(); ++k) {
    const nt::round_payload& p = rec.applied[k];
    ASSERT_EQ(p.weights.w.precision, nt::sync_precision::f32);
    EXPECT_EQ(p.weights.w.values.at(0), 100.0f + static_cast<float>(restores[k].layer));
    EXPECT_FALSE(p.moments) << "each replica keeps its own moments: only weights travel";
    EXPECT_TRUE(p.w_state.m.empty());
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
  auto restores = rec.take("apply");
  EXPECT_EQ(restores.size(), 4u) << "every replica takes the mean";
  for (const auto& p : rec.applied)
    EXPECT_TRUE(p.moments) << "average: the mean moments travel with the mean weights";
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
  for (const auto& r : rec.take("apply"))
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

} // namespace

namespace {

/// A leader's coded answer for layer `l`: the last round's weights `theta`
/// moved by `by`, as an int8 change, and the post states it gives.
struct coded_answer {
  nt::coded_params update;
  nt::dense_params weights; ///< what the change rebuilds from theta
};

coded_answer coded_move(const nt::dense_params& theta, float by) {
  nt::dense_params target = theta;
  target.w.array() += by;
  target.b.array() += by;
  coded_answer a;
  a.update = nt::encode_params(target, theta, nt::sync_precision::int8);
  a.weights = nt::decode_params(a.update, theta);
  return a;
}

/// Outer runs with int8 sync rounds.
class CodedOuterRunMachine : public OuterRunMachine {
protected:
  /// A run of outer_config() with int8 sync rounds, at its first exchange.
  void start_a_coded_round() {
    auto c = outer_config();
    c.topology.sync_coding = nt::sync_precision::int8;
    make(c);
    start();
    rec.take("resume");
    barrier_all(500, false);
  }
};

} // namespace

TEST_F(CodedOuterRunMachine, ARoundAppliesTheLeadersChangeOnceAndTheWeightsAfterARecovery) {
  start_a_coded_round();
  auto ex = rec.take("exchange");
  ASSERT_EQ(ex.size(), 2u);
  std::vector<coded_answer> answers;
  for (const auto& e : ex) {
    answers.push_back(coded_move(rec.outer_in[e.layer].theta, 0.25f));
    std::vector<nt::layer_state> post;
    for (std::size_t r = 0; r < 2; ++r) {
      auto st = layer_of(e.layer, 0, 10.0f * static_cast<float>(r));
      st.params = answers.back().weights;
      post.push_back(std::move(st));
    }
    m->on_exchanged(e.step, e.layer, std::move(post),
                    nt::policy_state{{layer_of(e.layer, 0.5f).params}}, 1,
                    nt::coded_params{answers.back().update});
  }
  ASSERT_EQ(m->current_round_step(), step::applying);
  auto applies = rec.take("apply");
  ASSERT_EQ(applies.size(), 4u);
  for (std::size_t k = 0; k < applies.size(); ++k) {
    const auto& p = rec.applied[k];
    EXPECT_EQ(p.weights.w.precision, nt::sync_precision::int8);
    EXPECT_EQ(p.weights.w.q, answers[applies[k].layer].update.w.q) << "the leader's change";
    EXPECT_FALSE(p.moments);
  }
  m->on_restored(applies[0].step, applies[0].layer, applies[0].replica, 1);
  // A loss while applying: the slices that took the change must not take it
  // twice, so the kept result goes again as the weights themselves.
  m->on_lost(nt::actor_key::slice_of(1, 0, 0), "kill");
  recover(*m, rec, 500);
  auto again = rec.take("apply");
  ASSERT_EQ(again.size(), 4u);
  for (std::size_t k = 4; k < rec.applied.size(); ++k) {
    const auto& p = rec.applied[k];
    ASSERT_EQ(p.weights.w.precision, nt::sync_precision::f32);
    const auto& want = answers[again[k - 4].layer].weights;
    EXPECT_EQ(nt::decode_params(p.weights, want).w, want.w);
  }
}

TEST_F(CodedOuterRunMachine, AChangeThatDoesNotGiveTheReportedWeightsEndsTheRun) {
  start_a_coded_round();
  const auto ex = rec.take("exchange");
  const auto a = coded_move(rec.outer_in[0].theta, 0.25f);
  auto st = layer_of(0, 0);
  st.params = a.weights;
  st.params.w(0, 0) += 1.0f; // not what the change gives
  m->on_exchanged(ex[0].step, 0, {st, st}, nt::policy_state{{layer_of(0, 0.5f).params}}, 1,
                  nt::coded_params{a.update});
  ASSERT_TRUE(rec.result);
  EXPECT_FALSE(rec.result->ok);
  EXPECT_CONTAINS(rec.result->error, "the swarm leader of layer 1 answered the sync round with a "
                                     "change that does not give the weights it reports");
}

TEST_F(RunMachine, ACodedAverageRoundSendsTheLastRoundsWeightsToTheLeader) {
  auto c = small_config(2);
  c.topology.policy = nt::sync_policy::average;
  c.topology.sync_coding = nt::sync_precision::bf16;
  make(c);
  start();
  rec.take("resume");
  barrier_all(500, false);
  ASSERT_EQ(rec.outer_in.size(), 2u);
  for (const auto& in : rec.outer_in) {
    EXPECT_GT(in.theta.w.size(), 0) << "theta: what the changes start from";
    EXPECT_EQ(in.parts, 0u) << "average keeps no policy state";
  }
}

namespace {

class LightOuterRunMachine : public OuterRunMachine {
protected:
  /// outer_config() whose rounds leave the moments on the slices, a run
  /// checkpoint every second round.
  void make_light() {
    auto c = outer_config();
    c.topology.round_moments = false;
    c.training.checkpoint_every = 2;
    c.training.keep_best = false;
    make(c);
    start();
  }

  /// Runs a round to its end: the barrier, the exchange (with moments 10 r
  /// when the round asked for them), the apply and the score. Returns
  /// whether the round asked for the moments.
  bool round(std::uint64_t samples, float base, bool last = false, bool on_grid = true,
             bool ends_next = false) {
    rec.take("resume");
    rec.exchange_moments.clear();
    barrier_all(samples, last, on_grid, ends_next);
    const auto ex = rec.take("exchange");
    EXPECT_EQ(ex.size(), 2u);
    bool asked = !rec.exchange_moments.empty();
    for (const bool b : rec.exchange_moments)
      asked = asked && b;
    for (const auto& e : ex) {
      std::vector<nt::layer_state> post;
      for (std::size_t r = 0; r < 2; ++r) {
        auto st = layer_of(e.layer, base + static_cast<float>(e.layer),
                           10.0f * static_cast<float>(r));
        if (!asked)
          st.w_state = {};
        post.push_back(std::move(st));
      }
      m->on_exchanged(e.step, e.layer, std::move(post),
                      nt::policy_state{{layer_of(e.layer, 0.5f).params}}, 1);
    }
    restore_all();
    score_parts(rec.take("validate"), {70, 90});
    return asked;
  }
};

} // namespace

TEST_F(LightOuterRunMachine, OnlyRoundsThatARunStateNeedsReadTheMoments) {
  make_light();
  EXPECT_FALSE(round(500, 100)) << "round 1 writes nothing";
  EXPECT_TRUE(round(1000, 200)) << "round 2 writes a run checkpoint";
  ASSERT_EQ(rec.saved.size(), 1u);
  EXPECT_EQ(rec.saved[0]->round, 2u);
  ASSERT_EQ(rec.saved[0]->models.size(), 2u);
  EXPECT_EQ(rec.saved[0]->models[1][0].w_state.m.at(0), 10.0f) << "replica 1's own moments";
  // The epochs end 140 samples after round 3: its state is the end state.
  EXPECT_TRUE(round(1500, 300, false, true, /*ends_next=*/true));
  EXPECT_FALSE(round(1640, 400, true, /*on_grid=*/false)) << "the slices still hold them";
  // The run ends: every replica's layers come back once, with the moments
  // of the last round.
  auto collects = rec.take("collect");
  ASSERT_EQ(collects.size(), 4u) << "2 replicas x 2 layers";
  EXPECT_EQ(m->current_phase(), phase::finishing);
  for (const auto& c : collects)
    m->on_collected(c.step, c.layer, c.replica,
                    layer_of(c.layer, 400.0f + static_cast<float>(c.layer),
                             50.0f + static_cast<float>(c.replica)));
  answer_stats();
  ASSERT_TRUE(rec.result);
  ASSERT_TRUE(rec.result->ok) << rec.result->error;
  ASSERT_EQ(rec.result->layers.size(), 2u);
  EXPECT_EQ(rec.result->layers[1].params.w(0, 0), 401.0f);
  EXPECT_EQ(rec.result->layers[1].w_state.m.at(0), 50.0f) << "the saved model: replica 0's";
  ASSERT_TRUE(rec.result->end_state);
  const auto& end = *rec.result->end_state;
  EXPECT_EQ(end.round, 3u) << "the last round on the grid";
  ASSERT_EQ(end.models.size(), 2u);
  EXPECT_EQ(end.models[0][0].params.w(0, 0), 300.0f);
  EXPECT_EQ(end.models[1][0].w_state.m.at(0), 10.0f) << "as round 3 read them, not the end's";
}

TEST_F(LightOuterRunMachine, AnEndOnTheGridTakesTheMomentsFromTheFinalCollect) {
  make_light();
  EXPECT_FALSE(round(500, 100));
  EXPECT_TRUE(round(1000, 200));
  EXPECT_FALSE(round(1500, 300, /*last=*/true));
  auto collects = rec.take("collect");
  ASSERT_EQ(collects.size(), 4u);
  for (const auto& c : collects)
    m->on_collected(c.step, c.layer, c.replica,
                    layer_of(c.layer, 300.0f + static_cast<float>(c.layer),
                             60.0f + static_cast<float>(c.replica)));
  answer_stats();
  ASSERT_TRUE(rec.result);
  ASSERT_TRUE(rec.result->ok) << rec.result->error;
  ASSERT_TRUE(rec.result->end_state);
  const auto& end = *rec.result->end_state;
  EXPECT_EQ(end.round, 3u);
  ASSERT_EQ(end.models.size(), 2u);
  for (std::size_t r = 0; r < 2; ++r)
    for (std::size_t l = 0; l < 2; ++l) {
      EXPECT_EQ(end.models[r][l].params.w(0, 0), 300.0f + static_cast<float>(l));
      ASSERT_FALSE(end.models[r][l].w_state.m.empty()) << "replica " << r << " layer " << l;
      EXPECT_EQ(end.models[r][l].w_state.m[0], 60.0f + static_cast<float>(r));
    }
}

TEST_F(LightOuterRunMachine, ARolledBackReplicaGetsTheRoundsWeightsWithoutMoments) {
  make_light();
  EXPECT_FALSE(round(500, 100));
  m->on_lost(nt::actor_key::slice_of(1, 0, 0), "kill");
  recover(*m, rec, 700);
  // recover() answered the restores: look at what they carried.
  bool any = false;
  for (const auto& st : rec.restored) {
    any = true;
    EXPECT_TRUE(st.w_state.m.empty()) << "the slices start their optimizer afresh";
    EXPECT_EQ(st.params.w(0, 0), st.params.w.rows() == 16 ? 100.0f : 101.0f) << "round 1's weights";
  }
  EXPECT_TRUE(any);
}
