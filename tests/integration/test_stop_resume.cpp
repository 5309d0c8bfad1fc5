// Stopping and resuming real runs of the binary: SIGTERM / SIGINT end a run
// at its next sync round with a run checkpoint and the outputs (exit 0), a
// second signal ends it at once, SIGUSR1 prints the status dump; and a run
// stopped anywhere (a signal, max_epochs off the sync grid) and resumed
// equals the straight run: the same model.ckpt bytes and the same curve but
// for its seconds. On small settings for every command and sync policy, and
// on the shipped config/local.ini (2 epochs, then 4, against 4 straight; and
// an elastic resume from 2 replicas to 3).
#include <gtest/gtest.h>

#include <signal.h>

#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "nettorrent/run_checkpoint.hpp"
#include "process_test.hpp"

namespace {

using integration::child_process;
using test_support::curve_without_seconds;
using test_support::line_with;
using test_support::read_file;
using namespace std::chrono_literals;

class StopResume : public integration::process_test {
protected:
  /// `nettorrent <args>` to its end; must exit 0 within `limit`.
  child_process& run_to_end(const std::string& name, std::vector<std::string> args,
                            std::chrono::duration<double> limit = 100s) {
    child_process& c = start_cli(name, std::move(args));
    EXPECT_TRUE(exits_within(c, limit));
    EXPECT_TRUE(c.exited_ok()) << c.log();
    return c;
  }

  /// The straight run's and the resumed run's outputs agree: model.ckpt
  /// byte for byte, the curve but for its seconds, the test score.
  /// Starts `nettorrent <args>`.
  child_process& start_cli(const std::string& name, std::vector<std::string> args) {
    args.insert(args.begin(), cli);
    return start(name, std::move(args));
  }

  /// `nettorrent <args>`, sent SIGTERM once it printed `line`; it must end
  /// with status 0 within 60 s.
  child_process& stopped_after(const std::string& line, std::vector<std::string> args) {
    child_process& c = start_cli("stopped", std::move(args));
    EXPECT_TRUE(prints_within(c, line, 60s));
    c.signal(SIGTERM);
    EXPECT_TRUE(exits_within(c, 60s));
    EXPECT_TRUE(c.exited_ok()) << c.log();
    return c;
  }

  void expect_same_outputs(const std::string& straight_dir, const child_process& straight,
                           const std::string& resumed_dir, const child_process& resumed) {
    const std::string a = read_file(straight_dir + "/model.ckpt");
    ASSERT_FALSE(a.empty()) << "no " << straight_dir << "/model.ckpt";
    EXPECT_TRUE(read_file(resumed_dir + "/model.ckpt") == a)
        << "the resumed run's model.ckpt differs from the straight run's";
    EXPECT_EQ(curve_without_seconds(resumed_dir + "/curve.csv"),
              curve_without_seconds(straight_dir + "/curve.csv"));
    EXPECT_EQ(line_with(resumed.out(), "test: accuracy"), line_with(straight.out(), "test: accuracy"));
  }
};

/// A small actor run: 2 replicas, max_in_flight 1 (deterministic), 640
/// samples per replica and epoch, a round every 192 (off the epoch's end).
std::vector<std::string> small_train(const std::string& out, int epochs, const std::string& policy) {
  return {"train",
          "--model.layers=[784, 32, 16, 10]",
          "--data.train_limit=1280",
          "--data.validation_size=500",
          "--data.test_limit=500",
          "--training.batch_size=32",
          "--training.max_epochs=" + std::to_string(epochs),
          "--training.keep_best=true",
          "--training.progress_interval=0",
          "--topology.replicas=2",
          "--topology.sync_every=192",
          "--topology.max_in_flight=1",
          "--topology.sync_policy=" + policy,
          "--system.metrics=false",
          "--training.output_dir=" + out};
}

class StopResumeTrain : public StopResume, public ::testing::WithParamInterface<const char*> {};

TEST_P(StopResumeTrain, SigtermEndsTheRoundWritesACheckpointAndResumeEqualsTheStraightRun) {
  const std::string policy = GetParam();
  const int epochs = 100;
  child_process& straight = run_to_end("straight", small_train(path("a"), epochs, policy));
  child_process& stopped = stopped_after("round 5 ", small_train(path("b"), epochs, policy));
  ASSERT_FALSE(HasFailure());
  EXPECT_CONTAINS(stopped.err(), "nettorrent train: caught SIGTERM: stopping");
  EXPECT_CONTAINS(stopped.out(), "coordinator: SIGTERM: stopping at the end of the next sync round");
  EXPECT_CONTAINS(stopped.out(), "nettorrent train: stopped early by SIGTERM");
  EXPECT_CONTAINS(stopped.out(), "run checkpoint " + path("b") + "/run-");
  EXPECT_CONTAINS(stopped.out(), "wrote " + path("b") + "/model.ckpt");
  EXPECT_EQ(stopped.out().find("round 30 "), std::string::npos) << "it did not stop early";
  auto args = small_train(path("b"), epochs, policy);
  args.push_back("--resume=" + path("b"));
  child_process& resumed = run_to_end("resumed", args);
  EXPECT_CONTAINS(resumed.out(), "resuming " + path("b") + "/run-");
  expect_same_outputs(path("a"), straight, path("b"), resumed);
}

INSTANTIATE_TEST_SUITE_P(Policies, StopResumeTrain,
                         ::testing::Values("outer", "average", "best", "none"));

TEST_F(StopResume, ASecondSignalEndsTheRunAtOnce) {
  child_process& c = start_cli("twice", small_train(path("a"), 400, "outer"));
  ASSERT_TRUE(prints_within(c, "round 2 ", 60s));
  c.signal(SIGINT);
  ASSERT_TRUE(prints_within(c, "caught SIGINT: stopping", 10s, /*from_err=*/true));
  c.signal(SIGINT);
  ASSERT_TRUE(exits_within(c, 10s));
  EXPECT_EQ(c.describe(), "exit status 130") << c.log();
  EXPECT_CONTAINS(c.err(), "caught SIGINT again: exiting at once");
}

TEST_F(StopResume, SigusrOnePrintsTheStatusDumpAndTheRunGoesOn) {
  child_process& c = start_cli("dumped", small_train(path("a"), 20, "outer"));
  ASSERT_TRUE(prints_within(c, "round 2 ", 60s));
  c.signal(SIGUSR1);
  ASSERT_TRUE(prints_within(c, "status dump (SIGUSR1)", 10s));
  ASSERT_TRUE(exits_within(c, 60s));
  EXPECT_TRUE(c.exited_ok()) << c.log();
  EXPECT_CONTAINS(c.out(), "shard worker");
  EXPECT_CONTAINS(c.out(), "test: accuracy");
}

TEST_F(StopResume, CentralisedStoppedBySigtermThenResumedEqualsTheStraightRun) {
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{"centralised",
                                    "--model.layers=[784, 32, 10]",
                                    "--data.train_limit=1200",
                                    "--data.validation_size=500",
                                    "--data.test_limit=500",
                                    "--training.batch_size=32",
                                    "--training.max_epochs=150",
                                    "--training.eval_every=320",
                                    "--training.progress_interval=0",
                                    "--training.output_dir=" + out};
  };
  child_process& straight = run_to_end("straight", args(path("a")));
  child_process& stopped = stopped_after("epoch 10/", args(path("b")));
  ASSERT_FALSE(HasFailure());
  EXPECT_CONTAINS(stopped.out(), "stopped in epoch ");
  EXPECT_CONTAINS(stopped.out(), "nettorrent centralised: stopped early by SIGTERM");
  EXPECT_EQ(stopped.out().find("epoch 150/"), std::string::npos) << "it did not stop early";
  auto a = args(path("b"));
  a.push_back("--resume=" + path("b"));
  child_process& resumed = run_to_end("resumed", a);
  EXPECT_CONTAINS(resumed.out(), "resuming " + path("b") + "/run-");
  expect_same_outputs(path("a"), straight, path("b"), resumed);
}

// --- the shipped config/local.ini ---------------------------------------------

class ShippedLocal : public StopResume, public ::testing::WithParamInterface<const char*> {
protected:
  void SetUp() override {
    StopResume::SetUp();
    deadline_ = t0_ + 600s; // three real runs of the shipped configuration
  }
  std::vector<std::string> local(const std::string& command, const std::string& out, int epochs) {
    return {command,
            "--config-file=" + source_dir + "/config/local.ini",
            "--training.max_epochs=" + std::to_string(epochs),
            "--training.output_dir=" + out,
            "--system.metrics=false"};
  }
};

// 2 epochs, then --resume with 4, against 4 straight. The 2-epoch run ends
// off the 5000-samples-per-replica grid (27 456 samples per replica and
// epoch), so its last round is not the run state it leaves. "outer+int8":
// the shipped run with int8 sync rounds, whose slices rebuild each round
// from the resumed round's weights. "outer+light": rounds that leave the
// moments on the slices; the shorter run's end state still has its round's
// (the round before the off-grid end reads them). "outer+int8+feedback":
// every replica's residual goes into the run checkpoint and back.
TEST_P(ShippedLocal, TwoEpochsThenFourEqualFourStraight) {
  const std::string param = GetParam();
  const std::string command = param[0] == 'c' ? "centralised" : "train";
  std::vector<std::string> policy;
  if (command == "train")
    policy = {"--topology.sync_policy=" + param.substr(0, param.find('+'))};
  if (param.find("+int8") != std::string::npos)
    policy.push_back("--topology.sync_precision=int8");
  if (param.find("+feedback") != std::string::npos)
    policy.push_back("--topology.sync_feedback=true");
  if (param.find("+light") != std::string::npos)
    policy.push_back("--topology.round_moments=false");
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), policy.begin(), policy.end());
    return a;
  };
  child_process& straight = run_to_end("straight", with(local(command, path("a"), 4)), 300s);
  run_to_end("shorter", with(local(command, path("b"), 2)), 300s);
  auto more = with(local(command, path("b"), 4));
  more.push_back("--resume=" + path("b"));
  child_process& resumed = run_to_end("resumed", more, 300s);
  EXPECT_CONTAINS(resumed.out(), "resuming " + path("b") + "/run-");
  expect_same_outputs(path("a"), straight, path("b"), resumed);
}

INSTANTIATE_TEST_SUITE_P(Commands, ShippedLocal,
                         ::testing::Values("outer", "average", "best", "none", "centralised",
                                           "outer+int8", "outer+light",
                                           "outer+int8+feedback"));

// Rounds that leave the moments on the slices change what a round moves,
// not what it computes: the shipped run (keep_best off, so the saved model
// is the last round's, moments included) gives the same bits. A round reads
// each replica's weights without its Adam moments (twice the weights) and
// applies the weights alone, so it moves half the bytes; the round before
// the off-grid end reads them for the end state (4.39 of 7.52 MB per round
// over the epoch's 6 rounds).
TEST_F(ShippedLocal, RoundsWithoutMomentsTrainTheSameBitsWithHalfTheBytes) {
  auto with = [&](const std::string& out, bool light) {
    auto a = local("train", out, 1);
    a.push_back("--training.keep_best=false");
    if (light)
      a.push_back("--topology.round_moments=false");
    return a;
  };
  child_process& full = run_to_end("full", with(path("a"), false), 300s);
  child_process& light = run_to_end("light", with(path("b"), true), 300s);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(curve_without_seconds(path("b") + "/curve.csv"),
            curve_without_seconds(path("a") + "/curve.csv"));
  EXPECT_EQ(line_with(light.out(), "test: accuracy"), line_with(full.out(), "test: accuracy"));
  // model.ckpt: its header names the run's settings (their hash) and its
  // last 8 bytes are the checksum; the layers between (weights and
  // moments) are the same bytes.
  const std::string a = read_file(path("a") + "/model.ckpt");
  const std::string b = read_file(path("b") + "/model.ckpt");
  ASSERT_GT(a.size(), 1000000u);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_TRUE(a.substr(a.size() - 1000000, 1000000 - 8) == b.substr(b.size() - 1000000, 1000000 - 8))
      << "the layers in model.ckpt differ";
  auto per_round = [](const std::string& out) {
    const std::string l = line_with(out, "done: ");
    const auto end = l.find(" MB per round");
    const auto at = l.rfind(", ", end);
    return end == std::string::npos || at == std::string::npos ? 0.0
                                                               : std::stod(l.substr(at + 2));
  };
  const double f = per_round(full.out()), g = per_round(light.out());
  ASSERT_GT(f, 0) << full.out();
  EXPECT_LT(g, 0.6 * f) << "MB per round: " << g << " without moments, " << f << " with";
}

// An elastic resume on the shipped settings: 2 replicas train epoch 1 with
// a run checkpoint every round; the run resumed from round 3 (15 168 of the
// epoch's 27 456 samples per replica) on 3 replicas for 2 epochs repeats
// bit for bit, and, counted from NETTORRENT_SAMPLE_LOG, trains each sample
// once per epoch and leaves out exactly what the deal says.
TEST_F(StopResume, TheShippedRunResumedOnThreeReplicasTrainsEachSampleOncePerEpoch) {
  deadline_ = t0_ + 600s;
  const auto local = [&](const std::string& out, int epochs, std::vector<std::string> more) {
    std::vector<std::string> a = {"train", "--config-file=" + source_dir + "/config/local.ini",
                                  "--training.max_epochs=" + std::to_string(epochs),
                                  "--training.output_dir=" + out, "--system.metrics=false"};
    a.insert(a.end(), more.begin(), more.end());
    a.insert(a.begin(), cli);
    return a;
  };
  const auto logged = [&](const std::string& name, std::vector<std::string> args) -> child_process& {
    std::filesystem::create_directories(path("log-" + name));
    child_process& c = start(name, std::move(args), {{"NETTORRENT_SAMPLE_LOG", path("log-" + name)}});
    EXPECT_TRUE(exits_within(c, 300s));
    EXPECT_TRUE(c.exited_ok()) << c.log();
    return c;
  };
  logged("two", local(path("a"), 1, {"--training.checkpoint_every=1"}));
  const std::string from = path("a") + "/run-00000003.ckpt";
  const nettorrent::run_state saved = nettorrent::load_run_checkpoint(from).state;
  ASSERT_EQ(saved.positions.size(), 2u);
  const std::vector<std::string> three = {"--resume=" + from, "--topology.replicas=3"};
  child_process& b = logged("three", local(path("b"), 2, three));
  EXPECT_CONTAINS(b.out(), "resuming with 3 replicas instead of 2");
  child_process& c = logged("again", local(path("c"), 2, three));
  EXPECT_TRUE(read_file(path("b") + "/model.ckpt") == read_file(path("c") + "/model.ckpt"))
      << "the elastic resume does not repeat bit for bit";
  EXPECT_EQ(curve_without_seconds(path("b") + "/curve.csv"),
            curve_without_seconds(path("c") + "/curve.csv"));
  EXPECT_EQ(line_with(b.out(), "test: accuracy"), line_with(c.out(), "test: accuracy"));

  const std::size_t n = 55000, batch = 64;
  std::vector<std::uint64_t> upto;
  std::size_t rest = 0;
  for (std::size_t r = 0; r < 2; ++r) {
    EXPECT_EQ(saved.positions[r].epoch, 1u);
    upto.push_back(saved.positions[r].samples);
    rest += test_support::shard_size(n, 2, r) - saved.positions[r].cursor;
  }
  test_support::sample_counts times;
  test_support::count_trained_samples(path("log-two"), 2, &upto, times);
  test_support::count_trained_samples(path("log-three"), 3, nullptr, times);
  test_support::expect_each_sample_once(times);
  std::size_t tail = 0;
  for (std::size_t r = 0; r < 3; ++r)
    tail += test_support::shard_size(n, 3, r) % batch;
  EXPECT_EQ(n - times[1].size(), rest % batch);
  EXPECT_EQ(n - times[2].size(), tail);
  std::cout << "epoch 1: " << times[1].size() << " of " << n << " samples, each once; epoch 2: "
            << times[2].size() << "\n";
}

} // namespace
