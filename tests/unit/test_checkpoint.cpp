// Checkpoints: bit-exact round trips, refusal of every kind of bad file with
// an error naming the file and the reason, atomic writes; and the learning
// curve CSV; the FNV-1a 64 hash that checksums them.
#include <gtest/gtest.h>

#include "test_support.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include "nettorrent/centralised.hpp"
#include "nettorrent/checkpoint.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/hash.hpp"
#include "nettorrent/rng.hpp"
#include "nettorrent/run_support.hpp"

namespace nt = nettorrent;
using test_support::error_of;
using test_support::read_file;
using test_support::write_file;
namespace fs = std::filesystem;

namespace {

using test_support::temp_dir_test;

constexpr std::size_t prefix_bytes = 8 + 4 + 8; // magic, version, payload size

// A checkpoint of a small model after a few Adam steps, so parameters and
// both moments are non-trivial, with every header field set.
nt::model_checkpoint trained_checkpoint(std::vector<std::size_t> layers = {20, 16, 4},
                                        int batches = 5) {
  nt::model_config m;
  m.layers = layers;
  m.hidden = nt::activation::tanh;
  nt::optimizer_config opt;
  opt.kind = nt::optimizer_kind::adam;
  opt.learning_rate = 1e-2f;
  nt::centralised_trainer trainer{m, opt, 99};
  test_support::train_on_synthetic(trainer, batches, 32, 0.2f, 5);
  nt::model_checkpoint ck;
  ck.header.layers.assign(layers.begin(), layers.end());
  for (const auto& g : trainer.geometry())
    ck.header.activations.push_back(g.act);
  ck.header.optimizer = nt::optimizer_kind::adam;
  ck.header.config_hash = 0xfedcba9876543210ULL;
  ck.header.step = static_cast<std::uint64_t>(batches);
  ck.header.samples = 32 * static_cast<std::uint64_t>(batches);
  ck.header.epoch = 3;
  nt::rng gen{1234};
  gen.next();
  ck.header.rng_state = gen.state();
  ck.layers = trainer.layers();
  return ck;
}

template <class A, class B>
bool same_bits(const A& a, const B& b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0;
}

void expect_identical(const nt::model_checkpoint& a, const nt::model_checkpoint& b) {
  EXPECT_EQ(a.header.version, b.header.version);
  EXPECT_EQ(a.header.layers, b.header.layers);
  EXPECT_EQ(a.header.activations, b.header.activations);
  EXPECT_EQ(a.header.optimizer, b.header.optimizer);
  EXPECT_EQ(a.header.config_hash, b.header.config_hash);
  EXPECT_EQ(a.header.step, b.header.step);
  EXPECT_EQ(a.header.samples, b.header.samples);
  EXPECT_EQ(a.header.epoch, b.header.epoch);
  EXPECT_EQ(a.header.rng_state, b.header.rng_state);
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    const auto& x = a.layers[l];
    const auto& y = b.layers[l];
    ASSERT_EQ(x.params.w.rows(), y.params.w.rows());
    ASSERT_EQ(x.params.w.cols(), y.params.w.cols());
    ASSERT_EQ(x.params.b.size(), y.params.b.size());
    EXPECT_TRUE(same_bits(x.params.w.data(), y.params.w.data(),
                          static_cast<std::size_t>(x.params.w.size())));
    EXPECT_TRUE(same_bits(x.params.b.data(), y.params.b.data(),
                          static_cast<std::size_t>(x.params.b.size())));
    for (const auto* s : {&x.w_state, &x.b_state}) {
      const auto& t = s == &x.w_state ? y.w_state : y.b_state;
      ASSERT_EQ(s->m.size(), t.m.size());
      ASSERT_EQ(s->v.size(), t.v.size());
      EXPECT_TRUE(same_bits(s->m.data(), t.m.data(), s->m.size()));
      EXPECT_TRUE(same_bits(s->v.data(), t.v.data(), s->v.size()));
      EXPECT_EQ(s->steps, t.steps);
    }
  }
}

// ---------------------------------------------------------------------------
// Round trip

using CheckpointRoundTrip = temp_dir_test;

TEST_F(CheckpointRoundTrip, EveryFieldAndFloatIsBitExact) {
  const nt::model_checkpoint ck = trained_checkpoint();
  // The state really is non-trivial: trained weights, both Adam moments.
  ASSERT_EQ(ck.layers.size(), 2u);
  ASSERT_EQ(ck.layers[0].w_state.m.size(), 20u * 16u);
  ASSERT_EQ(ck.layers[0].w_state.v.size(), 20u * 16u);
  EXPECT_EQ(ck.layers[0].w_state.steps, 5u);
  EXPECT_NE(ck.layers[1].b_state.m[0], 0.0f);
  EXPECT_NE(ck.layers[1].b_state.v[0], 0.0f);
  EXPECT_NE(ck.layers[1].params.b[0], 0.0f);

  nt::save_checkpoint(path("model.ckpt"), ck);
  const nt::model_checkpoint back = nt::load_checkpoint(path("model.ckpt"));
  expect_identical(ck, back);
  // Saving what was loaded reproduces the file byte for byte.
  nt::save_checkpoint(path("again.ckpt"), back);
  EXPECT_EQ(read_file(path("model.ckpt")), read_file(path("again.ckpt")));
}

TEST_F(CheckpointRoundTrip, SpecialFloatsAndEmptyOptimizerState) {
  nt::model_checkpoint ck;
  ck.header.layers = {3, 2};
  ck.header.activations = {nt::activation::identity};
  ck.header.optimizer = nt::optimizer_kind::sgd;
  ck.header.rng_state = {~0ULL, 0, 1, 0x8000000000000000ULL};
  ck.layers.resize(1);
  auto& p = ck.layers[0].params;
  p.w.resize(3, 2);
  p.w << -0.0f, 1e-40f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::max(),
      std::numeric_limits<float>::quiet_NaN(), 3.25f;
  p.b.resize(2);
  p.b << std::numeric_limits<float>::min(), -1.5f;
  ck.layers[0].w_state.steps = 7; // sgd: no moments
  nt::save_checkpoint(path("special.ckpt"), ck);
  const nt::model_checkpoint back = nt::load_checkpoint(path("special.ckpt"));
  expect_identical(ck, back);
  EXPECT_TRUE(back.layers[0].w_state.m.empty());
  EXPECT_TRUE(back.layers[0].w_state.v.empty());
}

TEST_F(CheckpointRoundTrip, FileStartsWithMagicAndVersionLittleEndian) {
  nt::save_checkpoint(path("model.ckpt"), trained_checkpoint());
  const std::string f = read_file(path("model.ckpt"));
  ASSERT_GT(f.size(), prefix_bytes + 8);
  EXPECT_EQ(f.substr(0, 8), std::string("NTCKPT\0\1", 8));
  EXPECT_EQ(f.substr(8, 4), std::string("\1\0\0\0", 4));
  std::uint64_t size = 0;
  for (int i = 7; i >= 0; --i)
    size = (size << 8) | static_cast<unsigned char>(f[12 + static_cast<std::size_t>(i)]);
  EXPECT_EQ(size, f.size() - prefix_bytes - 8);
  // The last 8 bytes: FNV-1a 64 of the payload, little-endian.
  std::uint64_t sum = 0;
  for (int i = 7; i >= 0; --i)
    sum = (sum << 8) | static_cast<unsigned char>(f[f.size() - 8 + static_cast<std::size_t>(i)]);
  EXPECT_EQ(sum, nt::fnv1a64(std::string_view{f}.substr(prefix_bytes, size)));
}

TEST(Fnv1a64, PublishedTestVectors) {
  // From the FNV reference (isthe.com/chongo/tech/comp/fnv): the offset
  // basis for no input, then one and six bytes.
  EXPECT_EQ(nt::fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(nt::fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(nt::fnv1a64("foobar"), 0x85944171f73967e8ULL);
  // Bytes above 0x7f and NUL count like any other byte.
  EXPECT_NE(nt::fnv1a64(std::string("\0", 1)), nt::fnv1a64(""));
  EXPECT_NE(nt::fnv1a64("\xff"), nt::fnv1a64("\x7f"));
}

TEST(Fnv1a64, HashHexIsSixteenLowerCaseDigits) {
  EXPECT_EQ(nt::hash_hex(0), "0000000000000000");
  EXPECT_EQ(nt::hash_hex(0xcbf29ce484222325ULL), "cbf29ce484222325");
  EXPECT_EQ(nt::hash_hex(~0ULL), "ffffffffffffffff");
}

// ---------------------------------------------------------------------------
// Bad checkpoints

class BadCheckpoint : public temp_dir_test {
protected:
  void SetUp() override {
    temp_dir_test::SetUp();
    nt::save_checkpoint(path("good.ckpt"), trained_checkpoint());
    good_ = read_file(path("good.ckpt"));
    ASSERT_GT(good_.size(), 1000u);
  }
  // Writes `bytes` as `name` and returns the load error.
  std::string load_error(const std::string& name, const std::string& bytes) {
    write_file(path(name), bytes);
    return error_of([&] { nt::load_checkpoint(path(name)); });
  }

  std::string good_;
};

TEST_F(BadCheckpoint, MissingFile) {
  const std::string msg = error_of([&] { nt::load_checkpoint(path("nope.ckpt")); });
  EXPECT_CONTAINS(msg, path("nope.ckpt"));
  EXPECT_CONTAINS(msg, "cannot open");
}

TEST_F(BadCheckpoint, EmptyFile) {
  const std::string msg = load_error("empty.ckpt", "");
  EXPECT_CONTAINS(msg, path("empty.ckpt"));
}

TEST_F(BadCheckpoint, TruncatedAtSeveralLengths) {
  const std::size_t payload = good_.size() - prefix_bytes - 8;
  const std::size_t cuts[] = {
      4,                          // inside the magic number
      10,                         // inside the version
      prefix_bytes - 3,           // inside the payload size
      prefix_bytes,               // no payload at all
      prefix_bytes + payload / 2, // inside the payload
      prefix_bytes + payload,     // just before the checksum
      good_.size() - 1,           // inside the checksum
  };
  for (std::size_t cut : cuts) {
    SCOPED_TRACE("cut at " + std::to_string(cut) + " of " + std::to_string(good_.size()));
    const std::string name = "cut" + std::to_string(cut) + ".ckpt";
    const std::string msg = load_error(name, good_.substr(0, cut));
    EXPECT_CONTAINS(msg, path(name));
    EXPECT_CONTAINS(msg, "truncated");
  }
}

TEST_F(BadCheckpoint, ForeignFiles) {
  // An IDX labels file, a text file and an INI file are no checkpoints.
  const std::string idx("\0\0\x08\x01\0\0\0\x03\x01\x02\x03", 11);
  const std::string text = "hello, this is not a checkpoint\n";
  const std::string ini = "[model]\nlayers = [784, 10]\n";
  for (const auto& [name, bytes] :
       {std::pair{"labels.idx", idx}, std::pair{"notes.txt", text}, std::pair{"c.ini", ini}}) {
    SCOPED_TRACE(name);
    const std::string msg = load_error(name, bytes);
    EXPECT_CONTAINS(msg, path(name));
    EXPECT_CONTAINS(msg, "not a NetTorrent checkpoint");
    EXPECT_CONTAINS(msg, "magic");
  }
}

TEST_F(BadCheckpoint, WrongVersion) {
  std::string f = good_;
  f[8] = 2; // u32 version, little-endian, at byte 8
  std::string msg = load_error("v2.ckpt", f);
  EXPECT_CONTAINS(msg, path("v2.ckpt"));
  EXPECT_CONTAINS(msg, "unsupported checkpoint format version 2");
  f[8] = 0;
  f[11] = 1; // 0x01000000: a big-endian writer's 1
  msg = load_error("vbig.ckpt", f);
  EXPECT_CONTAINS(msg, path("vbig.ckpt"));
  EXPECT_CONTAINS(msg, "version 16777216");
}

TEST_F(BadCheckpoint, CorruptedPayloadFailsTheChecksum) {
  for (std::size_t at : {prefix_bytes, good_.size() / 2, good_.size() - 9}) {
    SCOPED_TRACE("flip at " + std::to_string(at));
    std::string f = good_;
    f[at] = static_cast<char>(f[at] ^ 0x10);
    const std::string msg = load_error("flip.ckpt", f);
    EXPECT_CONTAINS(msg, path("flip.ckpt"));
    EXPECT_CONTAINS(msg, "checksum");
  }
  // A damaged checksum itself.
  std::string f = good_;
  f.back() = static_cast<char>(f.back() ^ 0x01);
  const std::string msg = load_error("sum.ckpt", f);
  EXPECT_CONTAINS(msg, "checksum");
}

TEST_F(BadCheckpoint, TrailingBytes) {
  for (const auto& extra : {std::string(1, '\0'), std::string("garbage after the end")}) {
    SCOPED_TRACE(extra.size());
    const std::string msg = load_error("long.ckpt", good_ + extra);
    EXPECT_CONTAINS(msg, path("long.ckpt"));
    EXPECT_CONTAINS(msg, "trailing");
    EXPECT_CONTAINS(msg, std::to_string(extra.size()));
  }
}

// Payloads that pass the checksum but do not describe a valid model (a
// buggy or hostile writer) are refused too, never crash or throw foreign
// exceptions.
TEST_F(BadCheckpoint, ValidChecksumInconsistentShapes) {
  nt::model_checkpoint ck = trained_checkpoint({20, 16, 4});
  ck.header.layers = {20, 8, 4};
  nt::save_checkpoint(path("shape.ckpt"), ck);
  std::string msg = error_of([&] { nt::load_checkpoint(path("shape.ckpt")); });
  EXPECT_CONTAINS(msg, path("shape.ckpt"));
  EXPECT_CONTAINS(msg, "malformed");
  EXPECT_CONTAINS(msg, "layer 0 has shape 20 x 16, header says 20 x 8");

  ck = trained_checkpoint({20, 16, 4});
  ck.header.activations.pop_back();
  nt::save_checkpoint(path("acts.ckpt"), ck);
  msg = error_of([&] { nt::load_checkpoint(path("acts.ckpt")); });
  EXPECT_CONTAINS(msg, path("acts.ckpt"));
  EXPECT_CONTAINS(msg, "3 widths, 1 activations");

  ck = trained_checkpoint({20, 16, 4});
  ck.layers[1].w_state.v.pop_back();
  nt::save_checkpoint(path("state.ckpt"), ck);
  msg = error_of([&] { nt::load_checkpoint(path("state.ckpt")); });
  EXPECT_CONTAINS(msg, path("state.ckpt"));
  EXPECT_CONTAINS(msg, "optimizer state of W");
}

TEST_F(BadCheckpoint, ValidChecksumAbsurdLengths) {
  // Re-seal a patched payload with a correct checksum.
  auto reseal = [&](std::string payload) {
    std::string f = good_.substr(0, prefix_bytes) + payload;
    const std::uint64_t sum = nt::fnv1a64(payload);
    for (int i = 0; i < 8; ++i)
      f.push_back(static_cast<char>((sum >> (8 * i)) & 0xff));
    return f;
  };
  const std::string payload = good_.substr(prefix_bytes, good_.size() - prefix_bytes - 8);
  // Byte 0 of the Cereal payload is its endianness flag, bytes 1..8 the
  // number of layer widths.
  ASSERT_EQ(static_cast<unsigned char>(payload[1]), 3u);
  for (const std::uint64_t n : {std::uint64_t{1} << 62, std::uint64_t{1000}}) {
    SCOPED_TRACE(n);
    std::string p = payload;
    for (int i = 0; i < 8; ++i)
      p[1 + static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    const std::string msg = load_error("absurd.ckpt", reseal(p));
    EXPECT_CONTAINS(msg, path("absurd.ckpt"));
    EXPECT_CONTAINS(msg, "malformed");
  }
  // An unknown activation code.
  nt::model_checkpoint ck = trained_checkpoint();
  ck.header.activations[0] = static_cast<nt::activation>(9);
  nt::save_checkpoint(path("act.ckpt"), ck);
  const std::string msg = error_of([&] { nt::load_checkpoint(path("act.ckpt")); });
  EXPECT_CONTAINS(msg, "unknown activation code 9");
}

// ---------------------------------------------------------------------------
// Atomic writes

using AtomicWrite = temp_dir_test;

TEST_F(AtomicWrite, NoTemporaryFileIsLeftBehind) {
  nt::save_checkpoint(path("model.ckpt"), trained_checkpoint());
  nt::save_checkpoint(path("model.ckpt"), trained_checkpoint());
  EXPECT_EQ(recursive_listing(), (std::vector<std::string>{"model.ckpt"}));
}

TEST_F(AtomicWrite, CreatesMissingParentDirectories) {
  nt::save_checkpoint(path("a/b/model.ckpt"), trained_checkpoint());
  EXPECT_NO_THROW(nt::load_checkpoint(path("a/b/model.ckpt")));
  EXPECT_EQ(recursive_listing(), (std::vector<std::string>{"a", "a/b", "a/b/model.ckpt"}));
}

TEST_F(AtomicWrite, ParentIsARegularFile) {
  nt::save_checkpoint(path("model.ckpt"), trained_checkpoint());
  const std::string before = read_file(path("model.ckpt"));
  write_file(path("plain"), "I am a file\n");
  const std::string target = path("plain/model.ckpt");
  const std::string msg = error_of([&] {
    nt::save_checkpoint(target, trained_checkpoint({20, 8, 4}));
  });
  EXPECT_CONTAINS(msg, target);
  EXPECT_EQ(recursive_listing(), (std::vector<std::string>{"model.ckpt", "plain"}));
  EXPECT_EQ(read_file(path("plain")), "I am a file\n");
  EXPECT_EQ(read_file(path("model.ckpt")), before);
  // Deeper below the file, too.
  EXPECT_THROW(nt::save_checkpoint(path("plain/x/y/model.ckpt"), trained_checkpoint()), nt::error);
  EXPECT_EQ(recursive_listing(), (std::vector<std::string>{"model.ckpt", "plain"}));
}

TEST_F(AtomicWrite, FailedSaveLeavesThePreviousCheckpointIntact) {
  const nt::model_checkpoint old_ck = trained_checkpoint({20, 16, 4}, 2);
  nt::save_checkpoint(path("model.ckpt"), old_ck);
  const std::string before = read_file(path("model.ckpt"));
  // Block the temp file's name with a directory so the write cannot start.
  const std::string blocker = path("model.ckpt") + ".tmp." + std::to_string(::getpid());
  ASSERT_TRUE(fs::create_directory(blocker));
  const std::string msg =
      error_of([&] { nt::save_checkpoint(path("model.ckpt"), trained_checkpoint()); });
  EXPECT_CONTAINS(msg, path("model.ckpt"));
  EXPECT_EQ(read_file(path("model.ckpt")), before);
  expect_identical(nt::load_checkpoint(path("model.ckpt")), old_ck);
  fs::remove(blocker);

  // A writer that fails half-way leaves the target untouched and no temp file.
  EXPECT_THROW(nt::write_file_atomically(path("model.ckpt"),
                                         [](std::ostream& os) {
                                           os << "partial";
                                           throw nt::error("writer failed");
                                         }),
               nt::error);
  EXPECT_EQ(read_file(path("model.ckpt")), before);
  EXPECT_EQ(recursive_listing(), (std::vector<std::string>{"model.ckpt"}));
}

TEST_F(AtomicWrite, OverwriteReplacesTheWholeFile) {
  const nt::model_checkpoint big = trained_checkpoint({20, 32, 16, 4}, 3);
  const nt::model_checkpoint small = trained_checkpoint({20, 8, 4}, 2);
  nt::save_checkpoint(path("model.ckpt"), big);
  const auto big_size = fs::file_size(path("model.ckpt"));
  nt::save_checkpoint(path("model.ckpt"), small);
  nt::save_checkpoint(path("fresh.ckpt"), small);
  EXPECT_LT(fs::file_size(path("model.ckpt")), big_size);
  EXPECT_EQ(read_file(path("model.ckpt")), read_file(path("fresh.ckpt")));
  expect_identical(nt::load_checkpoint(path("model.ckpt")), small);
}

TEST_F(AtomicWrite, TargetIsADirectory) {
  fs::create_directories(path("model.ckpt/inside"));
  const std::string msg =
      error_of([&] { nt::save_checkpoint(path("model.ckpt"), trained_checkpoint()); });
  EXPECT_CONTAINS(msg, path("model.ckpt"));
  EXPECT_EQ(recursive_listing(), (std::vector<std::string>{"model.ckpt", "model.ckpt/inside"}));
}

// ---------------------------------------------------------------------------
// Learning curve

using CurveCsv = temp_dir_test;

TEST_F(CurveCsv, HeaderAndOneRowPerPoint) {
  std::vector<nt::curve_point> curve;
  curve.push_back({1, 640, 0.5, 2.25, 1.5, 0.75});
  curve.push_back({2, 1280, 1.25, 1.0, 0.875, 0.8125});
  nt::write_curve_csv(path("out/curve.csv"), curve);
  EXPECT_EQ(read_file(path("out/curve.csv")),
            "epoch,samples,seconds,train_loss,validation_loss,validation_accuracy\n"
            "1,640,0.5,2.25,1.5,0.75\n"
            "2,1280,1.25,1,0.875,0.8125\n");
  EXPECT_EQ(recursive_listing(), (std::vector<std::string>{"out", "out/curve.csv"}));
}

TEST_F(CurveCsv, EmptyCurveHasOnlyTheHeader) {
  nt::write_curve_csv(path("curve.csv"), {});
  EXPECT_EQ(read_file(path("curve.csv")),
            "epoch,samples,seconds,train_loss,validation_loss,validation_accuracy\n");
}

TEST_F(CurveCsv, UnwritableLocationIsAnError) {
  write_file(path("plain"), "x");
  const std::string msg = error_of([&] { nt::write_curve_csv(path("plain/curve.csv"), {}); });
  EXPECT_CONTAINS(msg, path("plain/curve.csv"));
}

} // namespace
