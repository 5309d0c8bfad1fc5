// Resuming the centralised trainer from run checkpoints: from any checkpoint
// a resumed run ends exactly as the straight run (weights, optimizer state,
// curve but for its seconds, test accuracy, model.ckpt byte for byte);
// allowed changes (more epochs, another target) continue as the straight run
// with those settings would; the command line resolves directories, keeps
// checkpoint_keep files, refuses a changed configuration naming each key,
// evaluates run checkpoints, and survives a crash between the temp write
// and the rename.
#include <gtest/gtest.h>

#include "test_support.hpp"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "nettorrent/centralised.hpp"
#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/run_checkpoint.hpp"
#include "nettorrent/session.hpp"

namespace nt = nettorrent;
using test_support::error_of;
using test_support::curve_without_seconds;
using test_support::line_with;
using test_support::read_file;
using test_support::run_nettorrent;
namespace fs = std::filesystem;

namespace {

// --- the library: synthetic data --------------------------------------------------

// 1000 training and 300 validation samples of 4 Gaussian blobs.
const nt::data_splits& synthetic() {
  static const nt::data_splits d = [] {
    nt::data_splits s;
    s.train_pool = nt::make_synthetic(1300, 24, 4, 0.8f, 3);
    s.test = s.train_pool;
    for (std::uint32_t i = 0; i < 1000; ++i)
      s.train.push_back(i);
    for (std::uint32_t i = 1000; i < 1300; ++i)
      s.validation.push_back(i);
    return s;
  }();
  return d;
}

// 31 batches per epoch; a validation pass every 5 batches, so each epoch
// ends with samples trained after its last pass.
nt::run_config synthetic_config(std::size_t max_epochs = 4, bool keep_best = true) {
  nt::run_config cfg;
  cfg.model.layers = {24, 16, 4};
  cfg.optimizer.learning_rate = 1e-2f;
  cfg.training.batch_size = 32;
  cfg.training.max_epochs = max_epochs;
  cfg.training.eval_every = 160;
  cfg.training.keep_best = keep_best;
  cfg.training.progress_interval = 0;
  cfg.training.checkpoint_every = 1;
  cfg.validate();
  return cfg;
}

struct recorded_run {
  nt::run_result result;
  std::vector<nt::run_state> states; ///< what each checkpoint received
};

recorded_run train(const nt::run_config& cfg, const nt::run_state* resume = nullptr) {
  recorded_run r;
  std::ostringstream log;
  nt::centralised_hooks hooks;
  hooks.resume = resume;
  hooks.resume_from = "test state";
  hooks.checkpoint = [&](const nt::run_state& s) { r.states.push_back(s); };
  r.result = nt::train_centralised(cfg, synthetic(), log, hooks);
  return r;
}

bool same_floats(const float* a, const float* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0;
}

void expect_same_layers(const std::vector<nt::layer_state>& a,
                        const std::vector<nt::layer_state>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t l = 0; l < a.size(); ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    const auto& x = a[l];
    const auto& y = b[l];
    ASSERT_EQ(x.params.w.size(), y.params.w.size());
    ASSERT_EQ(x.params.b.size(), y.params.b.size());
    EXPECT_TRUE(same_floats(x.params.w.data(), y.params.w.data(),
                            static_cast<std::size_t>(x.params.w.size())));
    EXPECT_TRUE(same_floats(x.params.b.data(), y.params.b.data(),
                            static_cast<std::size_t>(x.params.b.size())));
    for (const auto& [s, t] :
         {std::pair{&x.w_state, &y.w_state}, std::pair{&x.b_state, &y.b_state}}) {
      ASSERT_EQ(s->m.size(), t->m.size());
      ASSERT_EQ(s->v.size(), t->v.size());
      EXPECT_TRUE(same_floats(s->m.data(), t->m.data(), s->m.size()));
      EXPECT_TRUE(same_floats(s->v.data(), t->v.data(), s->v.size()));
      EXPECT_EQ(s->steps, t->steps);
    }
  }
}

// Every curve field but the wall clock.
void expect_same_curve(const std::vector<nt::curve_point>& a,
                       const std::vector<nt::curve_point>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE("curve point " + std::to_string(i));
    EXPECT_EQ(a[i].epoch, b[i].epoch);
    EXPECT_EQ(a[i].samples, b[i].samples);
    EXPECT_EQ(a[i].train_loss, b[i].train_loss);
    EXPECT_EQ(a[i].validation_loss, b[i].validation_loss);
    EXPECT_EQ(a[i].validation_accuracy, b[i].validation_accuracy);
  }
}

void expect_same_result(const nt::run_result& a, const nt::run_result& b) {
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.epochs, b.epochs);
  EXPECT_EQ(a.best_validation_accuracy, b.best_validation_accuracy);
  EXPECT_EQ(a.reached_target, b.reached_target);
  EXPECT_EQ(a.kept_best, b.kept_best);
  EXPECT_EQ(a.saved_samples, b.saved_samples);
  EXPECT_EQ(a.saved_epoch, b.saved_epoch);
  EXPECT_EQ(a.saved_rng, b.saved_rng);
  expect_same_layers(a.layers, b.layers);
  expect_same_curve(a.curve, b.curve);
}

// The state as it would continue: everything but the wall clock.
// What every run state holds: where the run stands, its loss since the last
// curve point, its best pass.
void expect_same_progress(const nt::run_state& a, const nt::run_state& b) {
  EXPECT_EQ(a.config_hash, b.config_hash);
  EXPECT_EQ(a.round, b.round);
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.loss_sum, b.loss_sum);
  EXPECT_EQ(a.loss_samples, b.loss_samples);
  EXPECT_EQ(a.best_validation_accuracy, b.best_validation_accuracy);
  expect_same_layers(a.best_layers, b.best_layers);
  EXPECT_EQ(a.best_samples, b.best_samples);
}

void expect_same_state(const nt::run_state& a, const nt::run_state& b) {
  expect_same_progress(a, b);
  EXPECT_EQ(a.best_rng, b.best_rng);
  ASSERT_EQ(a.models.size(), 1u);
  ASSERT_EQ(b.models.size(), 1u);
  expect_same_layers(a.models[0], b.models[0]);
  ASSERT_EQ(a.positions.size(), 1u);
  ASSERT_EQ(b.positions.size(), 1u);
  EXPECT_EQ(a.positions[0].epoch, b.positions[0].epoch);
  EXPECT_EQ(a.positions[0].cursor, b.positions[0].cursor);
  EXPECT_EQ(a.positions[0].samples, b.positions[0].samples);
  EXPECT_EQ(a.positions[0].next_batch, b.positions[0].next_batch);
  EXPECT_EQ(a.positions[0].rng_state, b.positions[0].rng_state);
  expect_same_curve(a.curve, b.curve);
}

// An actor run's state: every replica's model and data position, the outer
// momentum, the best pass and the curve (but the wall clock).
void expect_same_actor_state(const nt::run_state& a, const nt::run_state& b) {
  expect_same_progress(a, b);
  ASSERT_EQ(a.models.size(), b.models.size());
  for (std::size_t r = 0; r < a.models.size(); ++r)
    expect_same_layers(a.models[r], b.models[r]);
  ASSERT_EQ(a.positions.size(), b.positions.size());
  for (std::size_t r = 0; r < a.positions.size(); ++r) {
    SCOPED_TRACE("replica " + std::to_string(r));
    EXPECT_EQ(a.positions[r].epoch, b.positions[r].epoch);
    EXPECT_EQ(a.positions[r].cursor, b.positions[r].cursor);
    EXPECT_EQ(a.positions[r].samples, b.positions[r].samples);
    // next_batch numbers messages (validation batches too), not data: a
    // resumed worker's numbering may differ; epoch, cursor and samples fix
    // the data stream.
  }
  test_support::expect_same_policy_states(a.policy_states, b.policy_states);
  expect_same_curve(a.curve, b.curve);
}

// A state through a file and back, as --resume reads it.
nt::run_state through_file(const nt::run_config& cfg, const nt::run_state& s,
                           const std::string& path) {
  nt::save_run_checkpoint(path, nt::checkpoint_header_of(cfg), s);
  return nt::load_run_checkpoint(path).state;
}

using Resume = test_support::temp_dir_test;

TEST_F(Resume, FromEveryCheckpointTheRunEndsAsTheStraightRun) {
  for (const bool keep_best : {true, false}) {
    SCOPED_TRACE(keep_best ? "keep_best" : "last weights");
    const nt::run_config cfg = synthetic_config(4, keep_best);
    const recorded_run straight = train(cfg);
    // 24 validation passes (every 160 of 4 x 992 samples), then the end.
    ASSERT_EQ(straight.result.curve.size(), 24u);
    ASSERT_EQ(straight.states.size(), 25u);
    EXPECT_EQ(straight.states.back().samples, 4u * 992);
    EXPECT_EQ(straight.states.back().round, 24u);
    for (std::size_t k = 0; k < straight.states.size(); ++k) {
      SCOPED_TRACE("resumed from checkpoint " + std::to_string(k));
      const nt::run_state saved = through_file(cfg, straight.states[k], path("run.ckpt"));
      const recorded_run resumed = train(cfg, &saved);
      expect_same_result(resumed.result, straight.result);
      // It checkpoints the rest of the run as the straight run did.
      ASSERT_EQ(resumed.states.size(), straight.states.size() - k - 1);
      for (std::size_t i = 0; i < resumed.states.size(); ++i)
        expect_same_state(resumed.states[i], straight.states[k + 1 + i]);
    }
  }
}

TEST_F(Resume, MoreEpochsContinueAsTheLongerRun) {
  const recorded_run shorter = train(synthetic_config(2));
  const nt::run_state end =
      through_file(synthetic_config(2), shorter.states.back(), path("run.ckpt"));
  EXPECT_EQ(end.samples, 2u * 992);
  EXPECT_EQ(end.loss_samples, 2u * 992 - 12 * 160); // trained after the last pass
  const recorded_run longer = train(synthetic_config(5));
  const recorded_run resumed = train(synthetic_config(5), &end);
  expect_same_result(resumed.result, longer.result);
  EXPECT_EQ(resumed.states.back().config_hash, synthetic_config(5).hash());
}

TEST_F(Resume, TheTargetIsJudgedWithTheTargetGivenNow) {
  const nt::run_config plain = synthetic_config(3);
  const recorded_run straight = train(plain);
  // A target first reached at the 4th pass.
  nt::run_config targeted = plain;
  targeted.training.target_accuracy = straight.result.curve[3].validation_accuracy;
  std::size_t first = 0;
  while (straight.result.curve[first].validation_accuracy < targeted.training.target_accuracy)
    ++first;
  const recorded_run stopped = train(targeted);
  ASSERT_TRUE(stopped.result.reached_target);
  ASSERT_EQ(stopped.result.curve.size(), first + 1);
  const nt::run_state end = stopped.states.back();
  // The same target: nothing more to train, the same result.
  const recorded_run again = train(targeted, &end);
  expect_same_result(again.result, stopped.result);
  EXPECT_EQ(again.result.time_to_target, stopped.result.time_to_target);
  EXPECT_TRUE(again.states.empty());
  // No target: the run continues as if it had never stopped.
  const recorded_run resumed = train(plain, &end);
  expect_same_result(resumed.result, straight.result);
  EXPECT_FALSE(resumed.result.reached_target);
}

TEST_F(Resume, AnActorRunsStateOrOtherDataAreRefused) {
  const nt::run_config cfg = synthetic_config(1);
  const recorded_run run = train(cfg);
  nt::run_state s = run.states.front();
  s.actor_run = true;
  std::ostringstream log;
  nt::centralised_hooks hooks;
  hooks.resume = &s;
  hooks.resume_from = "/r/run.ckpt";
  std::string msg = error_of([&] { nt::train_centralised(cfg, synthetic(), log, hooks); });
  EXPECT_CONTAINS(msg, "/r/run.ckpt: cannot resume");
  EXPECT_CONTAINS(msg, "actor pipeline");
  // Another training split: the order cannot be replayed.
  s = run.states.front();
  nt::data_splits fewer = synthetic();
  fewer.train.pop_back();
  msg = error_of([&] { nt::train_centralised(cfg, fewer, log, hooks); });
  EXPECT_CONTAINS(msg, "/r/run.ckpt: cannot resume");
  EXPECT_CONTAINS(msg, "cannot be replayed");
}

// --- the command line: Fashion-MNIST, a small model -----------------------------------

// 1200 training samples, 37 batches of 32 per epoch, a validation pass every
// 320 samples: 11 passes in 3 epochs, 32 samples trained after the last.
std::vector<std::string> run_args(const std::string& out, std::size_t epochs,
                                  std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"centralised",
                                "--model.layers=[784, 32, 10]",
                                "--data.train_limit=1200",
                                "--data.validation_size=500",
                                "--data.test_limit=500",
                                "--training.batch_size=32",
                                "--training.max_epochs=" + std::to_string(epochs),
                                "--training.eval_every=320",
                                "--training.progress_interval=0",
                                "--training.checkpoint_keep=100",
                                "--training.output_dir=" + out};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}


std::vector<std::string> run_files(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("run-", 0) == 0)
      out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

class ResumeCli : public test_support::temp_dir_test {
protected:
  test_support::cli_run run(const std::vector<std::string>& args, const std::string& env = "") {
    return run_nettorrent(args, path("log-" + std::to_string(logs_++) + ".txt"), env);
  }
  int logs_ = 0;
};

TEST_F(ResumeCli, ResumedFromTheMiddleTheRunEndsAsTheStraightRun) {
  const auto straight = run(run_args(path("a"), 3, {"--training.checkpoint_every=2"}));
  ASSERT_EQ(straight.code, 0) << straight.output;
  EXPECT_EQ(
      run_files(path("a")),
      (std::vector<std::string>{"run-00000002.ckpt", "run-00000004.ckpt", "run-00000006.ckpt",
                                "run-00000008.ckpt", "run-00000010.ckpt", "run-00000011.ckpt"}));
  EXPECT_CONTAINS(straight.output, "run checkpoint " + path("a") + "/run-00000011.ckpt");
  const std::string from = path("a") + "/run-00000004.ckpt";
  const auto resumed =
      run(run_args(path("b"), 3, {"--training.checkpoint_every=2", "--resume=" + from}));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_CONTAINS(resumed.output, "resuming " + from + ": round 4, 1280 samples, epoch 2");
  // The model file byte for byte, the curve but for its seconds, the test score.
  EXPECT_EQ(read_file(path("b") + "/model.ckpt"), read_file(path("a") + "/model.ckpt"));
  EXPECT_EQ(curve_without_seconds(path("b") + "/curve.csv"),
            curve_without_seconds(path("a") + "/curve.csv"));
  EXPECT_EQ(line_with(resumed.output, "test: accuracy"),
            line_with(straight.output, "test: accuracy"));
  // The end state too: the same weights and optimizer state.
  EXPECT_EQ(run_files(path("b")),
            (std::vector<std::string>{"run-00000006.ckpt", "run-00000008.ckpt", "run-00000010.ckpt",
                                      "run-00000011.ckpt"}));
  const nt::run_checkpoint a = nt::load_run_checkpoint(path("a") + "/run-00000011.ckpt");
  const nt::run_checkpoint b = nt::load_run_checkpoint(path("b") + "/run-00000011.ckpt");
  expect_same_state(b.state, a.state);
  EXPECT_GE(b.state.elapsed_seconds, 0.0);
}

TEST_F(ResumeCli, AChangedConfigurationIsRefusedNamingEachKey) {
  ASSERT_EQ(run(run_args(path("a"), 1)).code, 0);
  const auto r = run(
      run_args(path("b"), 1,
               {"--optimizer.learning_rate=0.002", "--training.seed=2", "--resume=" + path("a")}));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_CONTAINS(r.output, "nettorrent centralised: error: " + path("a") + "/run-00000003.ckpt");
  EXPECT_CONTAINS(r.output, "cannot resume");
  EXPECT_CONTAINS(r.output, "optimizer.learning_rate: the run had 0.001, now 0.002");
  EXPECT_CONTAINS(r.output, "training.seed: the run had 1, now 2");
  EXPECT_FALSE(fs::exists(path("b")));
}

TEST_F(ResumeCli, MoreEpochsFromTheDirectoryContinueAsTheLongerRun) {
  const auto shorter = run(run_args(path("a"), 1));
  ASSERT_EQ(shorter.code, 0) << shorter.output;
  // checkpoint_every = 0: one run checkpoint, at the end.
  EXPECT_EQ(run_files(path("a")), (std::vector<std::string>{"run-00000003.ckpt"}));
  const auto resumed = run(run_args(path("b"), 3, {"--resume=" + path("a")}));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_CONTAINS(resumed.output, "resuming " + path("a") + "/run-00000003.ckpt: round 3");
  const auto longer = run(run_args(path("c"), 3));
  ASSERT_EQ(longer.code, 0) << longer.output;
  EXPECT_EQ(read_file(path("b") + "/model.ckpt"), read_file(path("c") + "/model.ckpt"));
  EXPECT_EQ(curve_without_seconds(path("b") + "/curve.csv"),
            curve_without_seconds(path("c") + "/curve.csv"));
  EXPECT_EQ(line_with(resumed.output, "test: accuracy"),
            line_with(longer.output, "test: accuracy"));
  // A directory without run checkpoints is named.
  fs::create_directories(path("empty"));
  const auto none = run(run_args(path("d"), 3, {"--resume=" + path("empty")}));
  EXPECT_EQ(none.code, 1);
  EXPECT_CONTAINS(none.output, path("empty") + ": no run checkpoint (run-*.ckpt)");
}

TEST_F(ResumeCli, CheckpointKeepTwoKeepsTheTwoNewest) {
  const auto r = run(
      run_args(path("a"), 3, {"--training.checkpoint_every=1", "--training.checkpoint_keep=2"}));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(run_files(path("a")),
            (std::vector<std::string>{"run-00000010.ckpt", "run-00000011.ckpt"}));
  EXPECT_TRUE(fs::is_regular_file(path("a") + "/model.ckpt"));
}

TEST_F(ResumeCli, EvaluateReadsARunCheckpoint) {
  ASSERT_EQ(run(run_args(path("a"), 1, {"--training.checkpoint_every=1"})).code, 0);
  const auto r = run(
      {"evaluate", "--checkpoint=" + path("a") + "/run-00000002.ckpt", "--data.test_limit=500"});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.output, "(step 20, 640 samples, epoch 1)");
  EXPECT_CONTAINS(r.output, "on 500 samples");
}

TEST_F(ResumeCli, ACrashBeforeTheRenameKeepsTheLastGoodCheckpoint) {
  ASSERT_EQ(run(run_args(path("a"), 1, {"--training.checkpoint_every=1"})).code, 0);
  ASSERT_EQ(
      run_files(path("a")),
      (std::vector<std::string>{"run-00000001.ckpt", "run-00000002.ckpt", "run-00000003.ckpt"}));
  const std::string last = path("a") + "/run-00000003.ckpt";
  const std::string before = read_file(last);
  // Killed while writing run-00000004.ckpt, between its fsync and rename.
  const auto crashed =
      run(run_args(path("a"), 2, {"--training.checkpoint_every=1", "--resume=" + path("a")}),
          "NETTORRENT_TEST_CRASH_BEFORE_RENAME=1");
  EXPECT_EQ(crashed.code, 3) << crashed.output;
  const std::vector<std::string> files = run_files(path("a"));
  ASSERT_EQ(files.size(), 4u);
  EXPECT_EQ(
      std::vector<std::string>(files.begin(), files.begin() + 3),
      (std::vector<std::string>{"run-00000001.ckpt", "run-00000002.ckpt", "run-00000003.ckpt"}));
  EXPECT_EQ(files[3].rfind("run-00000004.ckpt.tmp.", 0), 0u) << files[3]; // the killed write
  EXPECT_EQ(read_file(last), before);
  EXPECT_EQ(nt::load_run_checkpoint(last).state.round, 3u);
  EXPECT_EQ(nt::resolve_resume_path(path("a")), last);
  // Resumed again, it finishes as the straight two-epoch run.
  const auto resumed =
      run(run_args(path("a"), 2, {"--training.checkpoint_every=1", "--resume=" + path("a")}));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_CONTAINS(resumed.output, "resuming " + last);
  const auto straight = run(run_args(path("c"), 2, {"--training.checkpoint_every=1"}));
  ASSERT_EQ(straight.code, 0) << straight.output;
  EXPECT_EQ(read_file(path("a") + "/model.ckpt"), read_file(path("c") + "/model.ckpt"));
}

} // namespace

namespace {

/// A small actor run: 2 replicas, average every 160 samples per replica,
/// max_in_flight 1 (deterministic), keep_best off.
std::vector<std::string> train_args(const std::string& out, std::size_t epochs,
                                    std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"train",
                                "--model.layers=[784, 32, 16, 10]",
                                "--data.train_limit=1280",
                                "--data.validation_size=500",
                                "--data.test_limit=500",
                                "--training.batch_size=32",
                                "--training.max_epochs=" + std::to_string(epochs),
                                "--training.keep_best=false",
                                "--training.progress_interval=0",
                                "--training.checkpoint_keep=100",
                                "--topology.replicas=2",
                                "--topology.sync_every=160",
                                "--topology.max_in_flight=1",
                                "--topology.sync_policy=average",
                                "--system.metrics=false",
                                "--training.output_dir=" + out};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

TEST_F(ResumeCli, TrainResumedFromARoundEndsAsTheStraightRunBitForBit) {
  const auto straight = run(train_args(path("a"), 2, {"--training.checkpoint_every=3"}));
  ASSERT_EQ(straight.code, 0) << straight.output;
  const auto files = run_files(path("a"));
  ASSERT_GE(files.size(), 2u) << straight.output;
  EXPECT_EQ(files.front(), "run-00000003.ckpt");
  const std::string from = path("a") + "/run-00000003.ckpt";
  const auto resumed = run(train_args(path("b"), 2, {"--resume=" + from}));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_CONTAINS(resumed.output, "resuming " + from + ": round 3");
  EXPECT_EQ(read_file(path("b") + "/model.ckpt"), read_file(path("a") + "/model.ckpt"))
      << "the resumed run's model differs from the straight run's";
  EXPECT_EQ(curve_without_seconds(path("b") + "/curve.csv"),
            curve_without_seconds(path("a") + "/curve.csv"));
  EXPECT_EQ(line_with(resumed.output, "test: accuracy"),
            line_with(straight.output, "test: accuracy"));
}

TEST_F(ResumeCli, TrainUnderOuterResumedFromARoundEndsAsTheStraightRunBitForBit) {
  // The run checkpoint holds every replica's own moments and the outer momentum.
  const std::vector<std::string> outer = {"--topology.sync_policy=outer"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), outer.begin(), outer.end());
    return more;
  };
  const auto straight = run(train_args(path("a"), 2, with({"--training.checkpoint_every=3"})));
  ASSERT_EQ(straight.code, 0) << straight.output;
  EXPECT_CONTAINS(straight.output, "(synced model, best ");
  EXPECT_CONTAINS(straight.output, "the synced model's best validation accuracy 0.");
  const std::string from = path("a") + "/run-00000003.ckpt";
  const auto resumed = run(train_args(path("b"), 2, with({"--resume=" + from})));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_EQ(read_file(path("b") + "/model.ckpt"), read_file(path("a") + "/model.ckpt"))
      << "the resumed run's model differs from the straight run's";
  EXPECT_EQ(curve_without_seconds(path("b") + "/curve.csv"),
            curve_without_seconds(path("a") + "/curve.csv"));
  // An average run refuses the checkpoint, naming the key (the config hash
  // differs). That the resumed run really needs the stored momentum is
  // OuterRunMachine.AResumeTakesTheMomentumFromTheRunCheckpoint's part.
  const auto other = run(train_args(path("c"), 2, {"--resume=" + from}));
  EXPECT_NE(other.code, 0);
  EXPECT_CONTAINS(other.output, "topology.sync_policy");
}

TEST_F(ResumeCli, TrainStoppedThenResumedWithMoreEpochsEndsAsTheLongerRun) {
  const auto longer = run(train_args(path("a"), 3));
  ASSERT_EQ(longer.code, 0) << longer.output;
  const auto shorter = run(train_args(path("b"), 1));
  ASSERT_EQ(shorter.code, 0) << shorter.output;
  EXPECT_CONTAINS(shorter.output, "run checkpoint " + path("b") + "/run-");
  const auto resumed = run(train_args(path("b"), 3, {"--resume=" + path("b")}));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_EQ(read_file(path("b") + "/model.ckpt"), read_file(path("a") + "/model.ckpt"));
}

TEST_F(ResumeCli, TrainResumedOnThreeSlicesPerLayerContinuesWithinFloatRounding) {
  const auto straight = run(train_args(path("a"), 2, {"--training.checkpoint_every=3"}));
  ASSERT_EQ(straight.code, 0) << straight.output;
  const std::string from = path("a") + "/run-00000003.ckpt";
  const auto resumed = run(train_args(path("b"), 2, {"--resume=" + from, "--topology.slices=3"}));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  // It continued (rounds 4 on), rather than training again from the start.
  EXPECT_CONTAINS(resumed.output, "resuming " + from + ": round 3");
  EXPECT_CONTAINS(resumed.output, "round 4  elapsed");
  EXPECT_EQ(resumed.output.find("round 2  elapsed"), std::string::npos) << resumed.output;
  const nt::model_checkpoint a = nt::load_checkpoint(path("a") + "/model.ckpt");
  const nt::model_checkpoint b = nt::load_checkpoint(path("b") + "/model.ckpt");
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    const auto& x = a.layers[l].params.w;
    const auto& y = b.layers[l].params.w;
    const double rel = (x - y).norm() / x.norm();
    EXPECT_LE(rel, 1e-4) << "layer " << l + 1;
    std::cout << "layer " << l + 1 << ": |dW|/|W| = " << rel << "\n";
  }
}

TEST_F(ResumeCli, TrainRefusesARunCheckpointOfAnotherRun) {
  ASSERT_EQ(run(train_args(path("a"), 1)).code, 0);
  const auto r =
      run(train_args(path("b"), 1, {"--resume=" + path("a"), "--optimizer.learning_rate=0.01"}));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_CONTAINS(r.output, "optimizer.learning_rate");
}

} // namespace

namespace {

// Epochs that do not end on a sync round: 640 samples per replica and epoch,
// a round every 192 (at 192, 384, 576; the end of epoch 1 comes 64 samples
// after the last round). The run checkpoint at the end keeps the last round
// on the grid, so that the run resumed with more epochs keeps the straight
// run's grid (768, 960, ...), under every sync policy.
class TrainOffGrid : public ResumeCli, public ::testing::WithParamInterface<const char*> {};

TEST_P(TrainOffGrid, StoppedOffTheSyncGridThenResumedWithMoreEpochsEndsAsTheLongerRun) {
  const std::vector<std::string> extra = {"--topology.sync_every=192",
                                          std::string{"--topology.sync_policy="} + GetParam(),
                                          "--training.keep_best=true"};
  const auto longer = run(train_args(path("a"), 3, extra));
  ASSERT_EQ(longer.code, 0) << longer.output;
  const auto shorter = run(train_args(path("b"), 1, extra));
  ASSERT_EQ(shorter.code, 0) << shorter.output;
  EXPECT_CONTAINS(shorter.output, "run checkpoint " + path("b") + "/run-00000003.ckpt");
  EXPECT_CONTAINS(shorter.output, "it holds sync round 3 (1152 samples), the last kept as the "
                                  "run state; a resumed run trains the 128 samples after it again");
  auto more = extra;
  more.push_back("--resume=" + path("b"));
  const auto resumed = run(train_args(path("b"), 3, more));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_CONTAINS(resumed.output, "resuming " + path("b") + "/run-00000003.ckpt: round 3");
  EXPECT_EQ(read_file(path("b") + "/model.ckpt"), read_file(path("a") + "/model.ckpt"))
      << "the resumed run's model differs from the longer run's";
  EXPECT_EQ(curve_without_seconds(path("b") + "/curve.csv"),
            curve_without_seconds(path("a") + "/curve.csv"));
  EXPECT_EQ(line_with(resumed.output, "test: accuracy"),
            line_with(longer.output, "test: accuracy"));
  // The end states agree too (weights, moments, positions, outer momentum).
  const auto last = run_files(path("a")).back();
  ASSERT_EQ(run_files(path("b")).back(), last);
  expect_same_actor_state(nt::load_run_checkpoint(path("b") + "/" + last).state,
                          nt::load_run_checkpoint(path("a") + "/" + last).state);
}

INSTANTIATE_TEST_SUITE_P(Policies, TrainOffGrid,
                         ::testing::Values("outer", "average", "best", "none"));

} // namespace

namespace {

// Elastic resume: a run checkpoint of R replicas resumed with another
// topology.replicas (membership.hpp). 1280 training samples, batches of 32,
// a round every 160 samples per replica; the resume comes inside epoch 1.
// NETTORRENT_SAMPLE_LOG makes every worker list the samples it trains, so
// the test counts how often each sample is trained in each epoch.
struct elastic_case {
  std::size_t from, to;
  std::uint64_t round; ///< the run checkpoint resumed from
  const char* policy;
};

class ElasticResume : public ResumeCli, public ::testing::WithParamInterface<elastic_case> {};

TEST_P(ElasticResume, TheRunContinuesDeterministicallyAndAnEpochTrainsEverySampleOnce) {
  const elastic_case c = GetParam();
  const std::size_t n = 1280, b = 32;
  const auto with = [&](std::size_t replicas, std::vector<std::string> more) {
    more.push_back("--topology.replicas=" + std::to_string(replicas));
    more.push_back(std::string{"--topology.sync_policy="} + c.policy);
    return more;
  };
  for (const char* d : {"la", "lb", "lc"})
    fs::create_directories(path(d));
  const auto first = run(train_args(path("a"), 2, with(c.from, {"--training.checkpoint_every=1"})),
                         "NETTORRENT_SAMPLE_LOG=" + path("la"));
  ASSERT_EQ(first.code, 0) << first.output;
  const std::string from = path("a") + "/" + nt::run_checkpoint_name(c.round);
  const nt::run_state saved = nt::load_run_checkpoint(from).state;
  ASSERT_EQ(saved.positions.size(), c.from);
  const auto resumed = run(train_args(path("b"), 2, with(c.to, {"--resume=" + from})),
                           "NETTORRENT_SAMPLE_LOG=" + path("lb"));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_CONTAINS(resumed.output, "resuming with " + std::to_string(c.to) + " replicas instead of "
                                      + std::to_string(c.from));
  EXPECT_CONTAINS(resumed.output, "training " + std::to_string(c.to) + " replicas");
  // Deterministic: the same resume again gives the same bits.
  const auto again = run(train_args(path("c"), 2, with(c.to, {"--resume=" + from})),
                         "NETTORRENT_SAMPLE_LOG=" + path("lc"));
  ASSERT_EQ(again.code, 0) << again.output;
  EXPECT_EQ(read_file(path("b") + "/model.ckpt"), read_file(path("c") + "/model.ckpt"));
  EXPECT_EQ(curve_without_seconds(path("b") + "/curve.csv"),
            curve_without_seconds(path("c") + "/curve.csv"));
  EXPECT_EQ(line_with(resumed.output, "test: accuracy"), line_with(again.output, "test: accuracy"));

  // Count: what the first run trained up to the kept round, then the resumed run.
  std::vector<std::uint64_t> upto;
  for (const auto& p : saved.positions) {
    EXPECT_EQ(p.epoch, 1u);
    upto.push_back(p.samples);
  }
  test_support::sample_counts times;
  test_support::count_trained_samples(path("la"), c.from, &upto, times);
  test_support::count_trained_samples(path("lb"), c.to, nullptr, times);
  ASSERT_EQ(times.size(), 2u);
  test_support::expect_each_sample_once(times);
  // Left out: in epoch 1 only the re-dealt rest's last partial batch; in
  // epoch 2, per replica, what follows its last whole batch.
  std::size_t rest = 0;
  for (std::size_t r = 0; r < c.from; ++r)
    rest += test_support::shard_size(n, c.from, r) - saved.positions[r].cursor;
  std::size_t tail = 0;
  for (std::size_t r = 0; r < c.to; ++r)
    tail += test_support::shard_size(n, c.to, r) % b;
  EXPECT_EQ(n - times[1].size(), rest % b);
  EXPECT_EQ(n - times[2].size(), tail);
  std::cout << c.from << " -> " << c.to << " replicas: epoch 1 trained " << times[1].size()
            << " of " << n << " samples once, epoch 2 " << times[2].size() << "\n";
}

INSTANTIATE_TEST_SUITE_P(Replicas, ElasticResume,
                         ::testing::Values(elastic_case{2, 3, 3, "average"},
                                           elastic_case{3, 2, 2, "outer"}),
                         [](const auto& p) {
                           return "From" + std::to_string(p.param.from) + "To"
                                  + std::to_string(p.param.to) + "Under"
                                  + std::string{p.param.policy};
                         });

} // namespace
