// Run checkpoints (format version 2): bit-exact round trips of every field,
// the model section load_checkpoint() reads, refusal of truncated, corrupted,
// wrong-version and inconsistent files naming the file and the reason,
// retention, resume-path resolution, the resume compatibility check and the
// replay of a data order.
#include <gtest/gtest.h>

#include "test_support.hpp"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "nettorrent/centralised.hpp"
#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/hash.hpp"
#include "nettorrent/rng.hpp"
#include "nettorrent/run_checkpoint.hpp"
#include "nettorrent/session.hpp"

namespace nt = nettorrent;
using test_support::error_of;
using test_support::read_file;
using test_support::write_file;
namespace fs = std::filesystem;

namespace {

// A small run configuration (the hash and text go into every state).
nt::run_config small_config() {
  nt::run_config cfg;
  cfg.model.layers = {12, 8, 3};
  cfg.model.hidden = nt::activation::tanh;
  cfg.optimizer.learning_rate = 1e-2f;
  cfg.topology.replicas = 3;
  cfg.validate();
  return cfg;
}

// The layers of the small model after `batches` Adam steps on synthetic data
// (seed `seed`), so weights and both moments are non-trivial.
std::vector<nt::layer_state> trained_layers(int batches, std::uint64_t seed) {
  const nt::run_config cfg = small_config();
  nt::centralised_trainer trainer{cfg.model, cfg.optimizer, seed};
  test_support::train_on_synthetic(trainer, batches, 16, 0.3f, seed);
  return trainer.layers();
}

// A run state with every field set: three replicas with their own models.
nt::run_state full_state() {
  nt::run_state s = nt::initial_run_state(small_config(), 3);
  s.actor_run = true;
  s.round = 7;
  s.samples = 3 * 7 * 64;
  s.epoch = 2;
  s.elapsed_seconds = 12.25;
  for (std::size_t k = 1; k <= 7; ++k)
    s.curve.push_back({k / 4 + 1, k * 192, 1.5 * static_cast<double>(k),
                       1.0 / static_cast<double>(k), 0.9 / static_cast<double>(k),
                       0.1 * static_cast<double>(k)});
  s.loss_sum = 3.75;
  s.loss_samples = 64;
  s.best_validation_accuracy = 0.7;
  s.reached_target = true;
  s.time_to_target = 10.5;
  s.best_layers = trained_layers(2, 5);
  s.best_samples = 640;
  s.best_epoch = 1;
  s.best_rng = {1, 2, 3, 4};
  s.models = {trained_layers(3, 1), trained_layers(4, 2), trained_layers(5, 3)};
  for (std::uint64_t r = 0; r < 3; ++r)
    s.positions[r] = {2, 128 + r, 448 + r, 90 + r, {r, r + 10, r + 20, ~r}};
  return s;
}

nt::checkpoint_header header_for(const nt::run_state& s) {
  nt::checkpoint_header h = nt::checkpoint_header_of(small_config());
  h.samples = s.samples;
  h.epoch = s.epoch;
  h.step = 7;
  return h;
}

bool same_floats(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size()
         && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void expect_same_layers(const std::vector<nt::layer_state>& a,
                        const std::vector<nt::layer_state>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t l = 0; l < a.size(); ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    const auto& x = a[l].params;
    const auto& y = b[l].params;
    ASSERT_EQ(x.w.rows(), y.w.rows());
    ASSERT_EQ(x.w.cols(), y.w.cols());
    ASSERT_EQ(x.b.size(), y.b.size());
    EXPECT_EQ(std::memcmp(x.w.data(), y.w.data(), static_cast<std::size_t>(x.w.size()) * 4), 0);
    EXPECT_EQ(std::memcmp(x.b.data(), y.b.data(), static_cast<std::size_t>(x.b.size()) * 4), 0);
    EXPECT_TRUE(same_floats(a[l].w_state.m, b[l].w_state.m));
    EXPECT_TRUE(same_floats(a[l].w_state.v, b[l].w_state.v));
    EXPECT_TRUE(same_floats(a[l].b_state.m, b[l].b_state.m));
    EXPECT_TRUE(same_floats(a[l].b_state.v, b[l].b_state.v));
    EXPECT_TRUE(same_floats(a[l].w_state.r, b[l].w_state.r));
    EXPECT_TRUE(same_floats(a[l].b_state.r, b[l].b_state.r));
    EXPECT_EQ(a[l].w_state.steps, b[l].w_state.steps);
    EXPECT_EQ(a[l].b_state.steps, b[l].b_state.steps);
  }
}

void expect_same_state(const nt::run_state& a, const nt::run_state& b) {
  EXPECT_EQ(a.config_hash, b.config_hash);
  EXPECT_EQ(a.config_text, b.config_text);
  EXPECT_EQ(a.actor_run, b.actor_run);
  EXPECT_EQ(a.round, b.round);
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.elapsed_seconds, b.elapsed_seconds);
  ASSERT_EQ(a.curve.size(), b.curve.size());
  for (std::size_t i = 0; i < a.curve.size(); ++i) {
    EXPECT_EQ(a.curve[i].epoch, b.curve[i].epoch);
    EXPECT_EQ(a.curve[i].samples, b.curve[i].samples);
    EXPECT_EQ(a.curve[i].seconds, b.curve[i].seconds);
    EXPECT_EQ(a.curve[i].train_loss, b.curve[i].train_loss);
    EXPECT_EQ(a.curve[i].validation_loss, b.curve[i].validation_loss);
    EXPECT_EQ(a.curve[i].validation_accuracy, b.curve[i].validation_accuracy);
  }
  EXPECT_EQ(a.loss_sum, b.loss_sum);
  EXPECT_EQ(a.loss_samples, b.loss_samples);
  EXPECT_EQ(a.best_validation_accuracy, b.best_validation_accuracy);
  EXPECT_EQ(a.reached_target, b.reached_target);
  EXPECT_EQ(a.time_to_target, b.time_to_target);
  expect_same_layers(a.best_layers, b.best_layers);
  EXPECT_EQ(a.best_samples, b.best_samples);
  EXPECT_EQ(a.best_epoch, b.best_epoch);
  EXPECT_EQ(a.best_rng, b.best_rng);
  EXPECT_EQ(a.deal, b.deal);
  EXPECT_EQ(a.retired_samples, b.retired_samples);
  ASSERT_EQ(a.models.size(), b.models.size());
  for (std::size_t m = 0; m < a.models.size(); ++m) {
    SCOPED_TRACE("model " + std::to_string(m));
    expect_same_layers(a.models[m], b.models[m]);
  }
  test_support::expect_same_policy_states(a.policy_states, b.policy_states);
  ASSERT_EQ(a.positions.size(), b.positions.size());
  for (std::size_t r = 0; r < a.positions.size(); ++r) {
    EXPECT_EQ(a.positions[r].epoch, b.positions[r].epoch);
    EXPECT_EQ(a.positions[r].cursor, b.positions[r].cursor);
    EXPECT_EQ(a.positions[r].samples, b.positions[r].samples);
    EXPECT_EQ(a.positions[r].next_batch, b.positions[r].next_batch);
    EXPECT_EQ(a.positions[r].rng_state, b.positions[r].rng_state);
  }
}

constexpr std::size_t prefix_bytes = 8 + 4 + 8; // magic, version, payload size

// The byte where the run-state section of a run checkpoint starts.
std::size_t run_section_start(const std::string& file) {
  std::uint64_t size = 0;
  for (int i = 0; i < 8; ++i)
    size |= std::uint64_t{static_cast<unsigned char>(file[12 + static_cast<std::size_t>(i)])}
            << (8 * i);
  return prefix_bytes + static_cast<std::size_t>(size) + 8;
}

using RunCheckpoint = test_support::temp_dir_test;

// ---------------------------------------------------------------------------
// Round trip and the model section

TEST_F(RunCheckpoint, EveryFieldOfEveryReplicaIsBitExact) {
  const nt::run_state s = full_state();
  const nt::checkpoint_header h = header_for(s);
  nt::save_run_checkpoint(path("run.ckpt"), h, s);
  const nt::run_checkpoint back = nt::load_run_checkpoint(path("run.ckpt"));
  EXPECT_EQ(back.path, path("run.ckpt"));
  expect_same_state(back.state, s);
  EXPECT_EQ(back.model.header.layers, h.layers);
  EXPECT_EQ(back.model.header.config_hash, s.config_hash);
  EXPECT_EQ(back.model.header.samples, h.samples);
  // Written twice, the same bytes; no temp file left.
  const std::string bytes = read_file(path("run.ckpt"));
  nt::save_run_checkpoint(path("run.ckpt"), h, s);
  EXPECT_EQ(read_file(path("run.ckpt")), bytes);
  EXPECT_EQ(listing(), (std::vector<std::string>{"run.ckpt"}));
}

/// full_state() of a run under sync_policy outer: an outer momentum per
/// layer (the trained layers' weights stand in for it, so it is non-trivial).
nt::run_state outer_state() {
  nt::run_state s = full_state();
  for (const auto& l : trained_layers(6, 9))
    s.policy_states.push_back(nt::policy_state{{l.params}});
  return s;
}

TEST_F(RunCheckpoint, TheOuterMomentumIsBitExactAndAbsentForOtherPolicies) {
  const nt::run_state s = outer_state();
  nt::save_run_checkpoint(path("outer.ckpt"), header_for(s), s);
  expect_same_state(nt::load_run_checkpoint(path("outer.ckpt")).state, s);
  // Without one the file is byte for byte what it was before the section
  // existed: the outer file is that plus the section.
  nt::save_run_checkpoint(path("plain.ckpt"), header_for(full_state()), full_state());
  const std::string plain = read_file(path("plain.ckpt"));
  const std::string outer = read_file(path("outer.ckpt"));
  std::size_t section = 1; // the flag
  for (const auto& st : s.policy_states)
    section += 2 * 16 + static_cast<std::size_t>(st.parts[0].w.size() + st.parts[0].b.size()) * 4;
  EXPECT_EQ(outer.size(), plain.size() + section);
  // A momentum of the wrong shape or count is refused, reading and writing.
  nt::run_state bad = s;
  bad.policy_states.pop_back();
  EXPECT_CONTAINS(
      error_of([&] { nt::save_run_checkpoint(path("bad.ckpt"), header_for(bad), bad); }),
      "sync policy state of 1 layers, header has 2");
  bad = s;
  bad.policy_states[1].parts[0].w.resize(8, 2);
  bad.policy_states[1].parts[0].b.resize(2);
  nt::save_run_checkpoint(path("shape.ckpt"), header_for(bad), bad);
  const std::string msg = error_of([&] { nt::load_run_checkpoint(path("shape.ckpt")); });
  EXPECT_CONTAINS(msg, path("shape.ckpt"));
  EXPECT_CONTAINS(msg, "the sync policy state of layer 1 has shape 8 x 2, the layer is 8 x 3");
}

TEST_F(RunCheckpoint, APolicyStateOfSeveralPartsPerLayerRoundTrips) {
  // A policy whose state is more than one matrix per layer is stored in the
  // general form, and read back bit for bit.
  nt::run_state s = full_state();
  for (const auto& l : trained_layers(6, 9))
    s.policy_states.push_back(nt::policy_state{{l.params, l.params, l.params}});
  s.policy_states[0].parts[1].w *= 0.5f;
  nt::save_run_checkpoint(path("general.ckpt"), header_for(s), s);
  expect_same_state(nt::load_run_checkpoint(path("general.ckpt")).state, s);
  nt::save_run_checkpoint(path("one.ckpt"), header_for(outer_state()), outer_state());
  EXPECT_GT(read_file(path("general.ckpt")).size(), read_file(path("one.ckpt")).size());
}

TEST_F(RunCheckpoint, FeedbackResidualsRoundTripInTheirOwnSectionAndStayOutOfTheModel) {
  // Every replica's residual of every layer (topology.sync_feedback),
  // after the policy state; the model section (model.ckpt) holds none.
  nt::run_state s = outer_state();
  float k = 0.001f;
  for (auto& m : s.models)
    for (auto& l : m) {
      l.w_state.r.resize(static_cast<std::size_t>(l.params.w.size()));
      l.b_state.r.resize(static_cast<std::size_t>(l.params.b.size()));
      for (auto& x : l.w_state.r)
        x = (k += 0.001f);
      for (auto& x : l.b_state.r)
        x = -(k += 0.001f);
    }
  nt::save_run_checkpoint(path("owed.ckpt"), header_for(s), s);
  const nt::run_checkpoint back = nt::load_run_checkpoint(path("owed.ckpt"));
  expect_same_state(back.state, s);
  EXPECT_TRUE(back.model.layers[0].w_state.r.empty()) << "model.ckpt's layers carry no residual";
  nt::save_run_checkpoint(path("outer.ckpt"), header_for(outer_state()), outer_state());
  std::size_t section = 1; // the flag
  for (const auto& m : s.models)
    for (const auto& l : m)
      section += 2 * 8 + (l.w_state.r.size() + l.b_state.r.size()) * 4;
  EXPECT_EQ(read_file(path("owed.ckpt")).size(), read_file(path("outer.ckpt")).size() + section);
  // A residual of the wrong size is refused on reading, naming it.
  nt::run_state bad = s;
  bad.models[2][1].b_state.r.pop_back();
  nt::save_run_checkpoint(path("bad.ckpt"), header_for(bad), bad);
  const std::string msg = error_of([&] { nt::load_run_checkpoint(path("bad.ckpt")); });
  EXPECT_CONTAINS(msg, path("bad.ckpt"));
  EXPECT_CONTAINS(msg, "model 2, layer 1: a sync feedback residual of the wrong size");
}

TEST_F(RunCheckpoint, AReplicaChangeRoundTripsAfterThePolicyStateAndIsAbsentOtherwise) {
  nt::run_state s = outer_state();
  s.deal = nt::epoch_deal{2, {{2, {64, 96}}, {4, {0, 32, 32, 0}}}};
  s.retired_samples = 1234;
  nt::save_run_checkpoint(path("dealt.ckpt"), header_for(s), s);
  expect_same_state(nt::load_run_checkpoint(path("dealt.ckpt")).state, s);
  nt::save_run_checkpoint(path("outer.ckpt"), header_for(outer_state()), outer_state());
  // The flag, retired samples, epoch, count, and per change from + cursors.
  EXPECT_EQ(read_file(path("dealt.ckpt")).size(),
            read_file(path("outer.ckpt")).size() + 1 + 3 * 8 + (1 + 2) * 8 + (1 + 4) * 8);
  // Without a policy state the section follows the positions directly.
  nt::run_state plain = full_state();
  plain.deal = s.deal;
  nt::save_run_checkpoint(path("plain.ckpt"), header_for(plain), plain);
  expect_same_state(nt::load_run_checkpoint(path("plain.ckpt")).state, plain);
  // A change from no replicas is refused on reading.
  plain.deal.changes[0].from = 0;
  plain.deal.changes[0].cursors.clear();
  nt::save_run_checkpoint(path("zero.ckpt"), header_for(plain), plain);
  const std::string msg = error_of([&] { nt::load_run_checkpoint(path("zero.ckpt")); });
  EXPECT_CONTAINS(msg, path("zero.ckpt"));
  EXPECT_CONTAINS(msg, "a replica change from 0 replicas");
}

TEST_F(RunCheckpoint, LoadCheckpointReadsReplicaZerosModel) {
  // `nettorrent evaluate` reads run checkpoints through load_checkpoint().
  const nt::run_state s = full_state();
  nt::save_run_checkpoint(path("run.ckpt"), header_for(s), s);
  const nt::model_checkpoint ck = nt::load_checkpoint(path("run.ckpt"));
  EXPECT_EQ(ck.header.version, nt::checkpoint_version);
  EXPECT_EQ(ck.header.samples, s.samples);
  expect_same_layers(ck.layers, s.models[0]);
  // Its leading bytes are exactly the model checkpoint of that model.
  nt::save_checkpoint(path("model.ckpt"), {header_for(s), s.models[0]});
  const std::string model = read_file(path("model.ckpt"));
  const std::string run = read_file(path("run.ckpt"));
  ASSERT_GT(run.size(), model.size());
  EXPECT_EQ(run.substr(0, model.size()), model);
  EXPECT_EQ(run_section_start(run), model.size());
  // The run-state section starts with "NTRUN\0\0\2".
  EXPECT_EQ(run.substr(model.size(), 8), std::string("NTRUN\0\0\2", 8));
  EXPECT_EQ(static_cast<unsigned char>(run[model.size() + 8]), 2u);
}

TEST_F(RunCheckpoint, ASharedModelIsStoredOnce) {
  nt::run_state shared = full_state();
  shared.models.resize(1);
  nt::run_state copies = shared;
  copies.models = {shared.models[0], shared.models[0], shared.models[0]};
  nt::save_run_checkpoint(path("shared.ckpt"), header_for(shared), shared);
  nt::save_run_checkpoint(path("copies.ckpt"), header_for(copies), copies);
  const nt::run_checkpoint back = nt::load_run_checkpoint(path("shared.ckpt"));
  ASSERT_EQ(back.state.models.size(), 1u);
  for (std::size_t r = 0; r < 3; ++r)
    expect_same_layers(back.state.model_of(r), shared.models[0]);
  // Two more copies of the model: 12x8 + 8 + 8x3 + 3 floats, 3 arrays each.
  const std::size_t model_floats = (12 * 8 + 8 + 8 * 3 + 3) * 3;
  const auto a = fs::file_size(path("shared.ckpt"));
  const auto b = fs::file_size(path("copies.ckpt"));
  EXPECT_GT(b, a + 2 * model_floats * sizeof(float));
}

TEST_F(RunCheckpoint, AModelCheckpointIsNoRunCheckpoint) {
  const nt::run_state s = full_state();
  nt::save_checkpoint(path("model.ckpt"), {header_for(s), s.models[0]});
  const std::string msg = error_of([&] { nt::load_run_checkpoint(path("model.ckpt")); });
  EXPECT_CONTAINS(msg, path("model.ckpt"));
  EXPECT_CONTAINS(msg, "not a run checkpoint");
}

TEST_F(RunCheckpoint, InconsistentStatesAreNotWritten) {
  const nt::run_state good = full_state();
  const nt::checkpoint_header h = header_for(good);
  auto save_error = [&](const nt::run_state& s, const nt::checkpoint_header& hh) {
    return error_of([&] { nt::save_run_checkpoint(path("bad.ckpt"), hh, s); });
  };
  nt::run_state s = good;
  s.models.clear();
  EXPECT_CONTAINS(save_error(s, h), "without a model");
  s = good;
  s.models.resize(2);
  EXPECT_CONTAINS(save_error(s, h), "2 models for 3 replicas");
  s = good;
  s.positions.clear();
  EXPECT_CONTAINS(save_error(s, h), "without a data position");
  nt::checkpoint_header other = h;
  other.config_hash ^= 1;
  EXPECT_CONTAINS(save_error(good, other), "config");
  s = good;
  s.models[1].pop_back();
  EXPECT_CONTAINS(save_error(s, h), "a model of 1 layers, header has 2");
  EXPECT_TRUE(listing().empty());
}

// ---------------------------------------------------------------------------
// Refusals

TEST_F(RunCheckpoint, TruncatedAnywhereIsRefusedNamingTheFile) {
  const nt::run_state s = full_state();
  nt::save_run_checkpoint(path("run.ckpt"), header_for(s), s);
  const std::string good = read_file(path("run.ckpt"));
  const std::size_t run = run_section_start(good);
  for (std::size_t n :
       {std::size_t{3}, prefix_bytes - 1, run / 2, run - 1, run, run + 3, run + prefix_bytes - 1,
        run + prefix_bytes + 10, good.size() - 8, good.size() - 1}) {
    SCOPED_TRACE("first " + std::to_string(n) + " of " + std::to_string(good.size()) + " bytes");
    write_file(path("cut.ckpt"), good.substr(0, n));
    const std::string msg = error_of([&] { nt::load_run_checkpoint(path("cut.ckpt")); });
    EXPECT_CONTAINS(msg, path("cut.ckpt"));
    if (n == run) {
      EXPECT_CONTAINS(msg, "no run state"); // what is left is a whole model checkpoint
    } else {
      EXPECT_CONTAINS(msg, "truncated");
      // A run checkpoint cut inside its run state is no model checkpoint either.
      EXPECT_CONTAINS(error_of([&] { nt::load_checkpoint(path("cut.ckpt")); }), "truncated");
    }
  }
}

TEST_F(RunCheckpoint, CorruptedRunStateFailsItsChecksum) {
  const nt::run_state s = full_state();
  nt::save_run_checkpoint(path("run.ckpt"), header_for(s), s);
  const std::string good = read_file(path("run.ckpt"));
  const std::size_t run = run_section_start(good);
  for (std::size_t at :
       {run + prefix_bytes, (run + good.size()) / 2, good.size() - 9, good.size() - 1}) {
    SCOPED_TRACE("flip at " + std::to_string(at));
    std::string f = good;
    f[at] = static_cast<char>(f[at] ^ 0x20);
    write_file(path("flip.ckpt"), f);
    for (const auto& msg : {error_of([&] { nt::load_run_checkpoint(path("flip.ckpt")); }),
                            error_of([&] { nt::load_checkpoint(path("flip.ckpt")); })}) {
      EXPECT_CONTAINS(msg, path("flip.ckpt"));
      EXPECT_CONTAINS(msg, "corrupted run checkpoint");
      EXPECT_CONTAINS(msg, "checksum");
    }
  }
}

TEST_F(RunCheckpoint, UnknownRunStateVersionAndTrailingBytes) {
  const nt::run_state s = full_state();
  nt::save_run_checkpoint(path("run.ckpt"), header_for(s), s);
  const std::string good = read_file(path("run.ckpt"));
  std::string f = good;
  f[run_section_start(good) + 8] = 3;
  write_file(path("v3.ckpt"), f);
  std::string msg = error_of([&] { nt::load_run_checkpoint(path("v3.ckpt")); });
  EXPECT_CONTAINS(msg, path("v3.ckpt"));
  EXPECT_CONTAINS(msg, "unsupported run-state format version 3 (this build reads version 2)");
  write_file(path("long.ckpt"), good + "xyz");
  msg = error_of([&] { nt::load_run_checkpoint(path("long.ckpt")); });
  EXPECT_CONTAINS(msg, path("long.ckpt"));
  EXPECT_CONTAINS(msg, "3 unexpected trailing bytes");
}

TEST_F(RunCheckpoint, ValidChecksumInconsistentRunState) {
  // A writer that got the state wrong (or a hostile one) is refused too.
  nt::run_state s = full_state();
  s.config_text += "extra.key=1\n"; // no longer hashes to config_hash
  nt::save_run_checkpoint(path("text.ckpt"), header_for(s), s);
  std::string msg = error_of([&] { nt::load_run_checkpoint(path("text.ckpt")); });
  EXPECT_CONTAINS(msg, path("text.ckpt"));
  EXPECT_CONTAINS(msg, "malformed run state");
  EXPECT_CONTAINS(msg, "does not hash");
  // A best pass of the wrong shape.
  s = full_state();
  s.best_layers = trained_layers(1, 1);
  s.best_layers[0].params.w.resize(12, 5);
  nt::save_run_checkpoint(path("best.ckpt"), header_for(s), s);
  msg = error_of([&] { nt::load_run_checkpoint(path("best.ckpt")); });
  EXPECT_CONTAINS(msg, "layer 0 has shape 12 x 5, header says 12 x 8");
}

// ---------------------------------------------------------------------------
// Retention and resolution

using RunCheckpointFiles = test_support::temp_dir_test;

TEST_F(RunCheckpointFiles, RetentionKeepsTheNewestAndTheOneJustWritten) {
  nt::run_state s = full_state();
  const nt::checkpoint_header h = header_for(s);
  write_file(path("model.ckpt"), "other files stay");
  write_file(path("run-x.ckpt"), "not a round");
  for (std::uint64_t round = 1; round <= 5; ++round) {
    s.round = round;
    EXPECT_EQ(nt::write_run_checkpoint(dir_.string(), 2, h, s),
              path(nt::run_checkpoint_name(round)));
  }
  EXPECT_EQ(listing(), (std::vector<std::string>{"model.ckpt", "run-00000004.ckpt",
                                                 "run-00000005.ckpt", "run-x.ckpt"}));
  // An older round (a run resumed from an earlier checkpoint) is kept, with
  // the newest other one.
  s.round = 3;
  nt::write_run_checkpoint(dir_.string(), 2, h, s);
  EXPECT_EQ(listing(), (std::vector<std::string>{"model.ckpt", "run-00000003.ckpt",
                                                 "run-00000005.ckpt", "run-x.ckpt"}));
  s.round = 6;
  nt::write_run_checkpoint(dir_.string(), 1, h, s);
  EXPECT_EQ(listing(), (std::vector<std::string>{"model.ckpt", "run-00000006.ckpt", "run-x.ckpt"}));
  EXPECT_EQ(nt::load_run_checkpoint(path("run-00000006.ckpt")).state.round, 6u);
}

TEST_F(RunCheckpointFiles, ResolveTakesAFileOrTheDirectorysHighestRound) {
  nt::run_state s = full_state();
  const nt::checkpoint_header h = header_for(s);
  const std::string msg = error_of([&] { nt::resolve_resume_path(dir_.string()); });
  EXPECT_CONTAINS(msg, dir_.string());
  EXPECT_CONTAINS(msg, "no run checkpoint");
  EXPECT_CONTAINS(error_of([&] { nt::resolve_resume_path(path("missing")); }), path("missing"));
  s.round = 9;
  nt::write_run_checkpoint(dir_.string(), 5, h, s);
  s.round = 123456789; // more digits than the padding: compared as numbers
  nt::write_run_checkpoint(dir_.string(), 5, h, s);
  EXPECT_EQ(nt::run_checkpoint_name(123456789), "run-123456789.ckpt");
  write_file(path("run-99999999.ckpt.tmp.123"), "a crashed write");
  EXPECT_EQ(nt::resolve_resume_path(dir_.string()), path("run-123456789.ckpt"));
  EXPECT_EQ(nt::resolve_resume_path(path("run-00000009.ckpt")), path("run-00000009.ckpt"));
}

// ---------------------------------------------------------------------------
// Compatibility

TEST(ResumeCheck, NamesEveryDifferingKeyWithBothValues) {
  const nt::run_config saved = small_config();
  const nt::run_state s = nt::initial_run_state(saved, 1);
  nt::run_config now = saved;
  now.optimizer.learning_rate = 0.002f;
  now.training.seed = 2;
  const std::string msg = error_of([&] { nt::check_resume_compatible(now, s, "/x/run.ckpt"); });
  EXPECT_CONTAINS(msg, "/x/run.ckpt: cannot resume");
  EXPECT_CONTAINS(msg, "in 2 keys");
  EXPECT_CONTAINS(msg, "optimizer.learning_rate: the run had 0.01, now 0.002");
  EXPECT_CONTAINS(msg, "training.seed: the run had 1, now 2");
  EXPECT_EQ(msg.find("model.layers"), std::string::npos) << msg;
  // One key.
  now = saved;
  now.model.layers = {12, 9, 3};
  EXPECT_CONTAINS(error_of([&] { nt::check_resume_compatible(now, s, "f"); }),
                  "in 1 key: model.layers: the run had [12, 8, 3], now [12, 9, 3]");
  // A key the saved run did not know (or no longer exists).
  nt::run_state older = s;
  older.config_text += "zz.gone=1\n";
  EXPECT_CONTAINS(error_of([&] { nt::check_resume_compatible(saved, older, "f"); }),
                  "zz.gone: the run had 1, now no such key");
}

TEST(ResumeCheck, AllowedChangesPass) {
  const nt::run_config saved = small_config();
  const nt::run_state s = nt::initial_run_state(saved, 1);
  nt::run_config now = saved;
  now.training.max_epochs = 40;
  now.training.target_accuracy = 0.9;
  now.training.output_dir = "elsewhere";
  now.training.progress_interval = 0;
  now.training.checkpoint_every = 2;
  now.training.checkpoint_keep = 9;
  now.topology.slices = {2, 1};
  now.topology.replicas = 2; // an elastic resume (membership.hpp)
  now.system.scheduler_threads = 7;
  now.system.metrics = true;
  EXPECT_NO_THROW(nt::check_resume_compatible(now, s, "f"));
  for (const char* k :
       {"training.max_epochs", "training.target_accuracy", "training.output_dir", "topology.slices",
        "topology.replicas", "system.metrics", "placement.strategy", "nodes.ports", "node.id"})
    EXPECT_TRUE(nt::may_change_on_resume(k)) << k;
  for (const char* k : {"training.seed", "training.batch_size", "topology.sync_policy",
                        "topology.sync_every", "data.train_limit", "optimizer.kind", "systems.x"})
    EXPECT_FALSE(nt::may_change_on_resume(k)) << k;
}

// ---------------------------------------------------------------------------
// Data order

TEST(ReplayDataOrder, EqualsShufflingInPlaceEveryEpoch) {
  std::vector<std::uint32_t> indices(50);
  for (std::uint32_t i = 0; i < 50; ++i)
    indices[i] = 3 * i;
  std::vector<std::uint32_t> order = indices;
  nt::rng gen = nt::shard_rng(7, 1);
  for (std::uint64_t epoch = 0; epoch <= 4; ++epoch) {
    SCOPED_TRACE(epoch);
    if (epoch > 0)
      nt::shuffle(order, gen);
    const nt::data_position pos{epoch, 10, 0, 0, gen.state()};
    const nt::data_order replay = nt::replay_data_order(indices, nt::shard_rng(7, 1), pos);
    EXPECT_EQ(replay.order, order);
    EXPECT_EQ(replay.gen.state(), gen.state());
  }
  // Other data (or another seed) cannot reach the saved generator.
  const nt::data_position pos{4, 10, 0, 0, gen.state()};
  std::vector<std::uint32_t> fewer(indices.begin(), indices.end() - 1);
  EXPECT_CONTAINS(error_of([&] { nt::replay_data_order(fewer, nt::shard_rng(7, 1), pos); }),
                  "cannot be replayed");
  EXPECT_CONTAINS(error_of([&] { nt::replay_data_order(indices, nt::shard_rng(8, 1), pos); }),
                  "cannot be replayed");
  EXPECT_CONTAINS(error_of([&] {
                    nt::replay_data_order(indices, nt::shard_rng(7, 1),
                                          nt::data_position{4, 51, 0, 0, gen.state()});
                  }),
                  "beyond the 50 samples");
}

} // namespace
