// Seeded mutation fuzzing of every parser that reads what a peer or a file
// hands NetTorrent: the CAF deserialiser of every message type that crosses
// nodes, the IDX reader, the checkpoint and run-checkpoint readers, and the
// INI / run-config / cluster-description readers. Each target starts from
// valid inputs and feeds mutated copies (bit flips, boundary bytes, cuts,
// growth, spliced chunks, announced sizes set huge); every input must be
// either accepted or refused with NetTorrent's or CAF's error — no crash,
// no other exception (std::bad_alloc would mean an announced size was
// trusted), and no input may take longer than a second.
//
// NETTORRENT_FUZZ_ITERATIONS sets the inputs per target (default 2000, the
// short run ctest does); the long run is documented in the README
// (100 000 per target in an ASan + UBSan build).
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "messages.hpp"
#include "nettorrent/checkpoint.hpp"
#include "nettorrent/cluster.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/ini.hpp"
#include "nettorrent/rng.hpp"
#include "nettorrent/run_checkpoint.hpp"
#include "nettorrent/session.hpp"
#include "nettorrent/wire.hpp"
#include "spawn.hpp"

namespace nt = nettorrent;
namespace fs = std::filesystem;

namespace {

using bytes = std::vector<std::uint8_t>;

std::size_t iterations() {
  if (const char* v = std::getenv("NETTORRENT_FUZZ_ITERATIONS"))
    return std::max<std::size_t>(1, std::strtoull(v, nullptr, 10));
  return 2000;
}

/// One mutation of `seed_input`, chosen by `gen`.
bytes mutate(const bytes& seed_input, nt::rng& gen) {
  bytes b = seed_input;
  auto pick = [&](std::uint64_t n) { return n == 0 ? 0 : gen.next() % n; };
  const int rounds = 1 + static_cast<int>(pick(4));
  for (int k = 0; k < rounds; ++k) {
    switch (pick(7)) {
    case 0: // flip a bit
      if (!b.empty())
        b[pick(b.size())] ^= static_cast<std::uint8_t>(1u << pick(8));
      break;
    case 1: { // a boundary byte
      static const std::uint8_t edge[] = {0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff};
      if (!b.empty())
        b[pick(b.size())] = edge[pick(sizeof edge)];
      break;
    }
    case 2: // cut
      b.resize(pick(b.size() + 1));
      break;
    case 3: // grow with random bytes
      for (std::uint64_t n = pick(64); n > 0; --n)
        b.push_back(static_cast<std::uint8_t>(gen.next()));
      break;
    case 4: { // splice a chunk of the input elsewhere
      if (b.size() < 2)
        break;
      const auto from = pick(b.size());
      const auto len = pick(std::min<std::uint64_t>(b.size() - from, 32));
      const auto to = pick(b.size());
      bytes chunk(b.begin() + static_cast<std::ptrdiff_t>(from),
                  b.begin() + static_cast<std::ptrdiff_t>(from + len));
      b.insert(b.begin() + static_cast<std::ptrdiff_t>(to), chunk.begin(), chunk.end());
      break;
    }
    case 5: { // an announced size or count set huge (8 bytes of 0xff..)
      if (b.size() < 8)
        break;
      const auto at = pick(b.size() - 7);
      for (int i = 0; i < 8; ++i)
        b[at + static_cast<std::size_t>(i)] = i < 4 ? 0xff : static_cast<std::uint8_t>(gen.next());
      break;
    }
    default: // random byte
      if (!b.empty())
        b[pick(b.size())] = static_cast<std::uint8_t>(gen.next());
      break;
    }
  }
  return b;
}

/// Runs `parse` on `iterations()` mutations of each seed input. `parse`
/// returns normally (accepted) or throws nettorrent::error (refused);
/// anything else fails the test.
void fuzz(const std::string& target, const std::vector<bytes>& seeds,
          const std::function<void(const bytes&)>& parse) {
  ASSERT_FALSE(seeds.empty());
  for (const auto& s : seeds) // every seed input itself is accepted
    ASSERT_NO_THROW(parse(s)) << target << ": a valid input was refused";
  nt::rng gen{0x5eed0000ULL + std::hash<std::string>{}(target)};
  std::size_t accepted = 0;
  std::size_t refused = 0;
  double slowest = 0;
  const std::size_t n = iterations();
  for (std::size_t i = 0; i < n; ++i) {
    const bytes input = mutate(seeds[i % seeds.size()], gen);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      parse(input);
      ++accepted;
    } catch (const nt::error&) {
      ++refused;
    } catch (const std::exception& e) {
      FAIL() << target << ": input " << i << " escaped as " << typeid(e).name() << ": " << e.what();
    }
    slowest = std::max(
        slowest, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    ASSERT_LT(slowest, 1.0) << target << ": input " << i << " took " << slowest << " s";
  }
  std::cout << target << ": " << n << " mutated inputs, " << accepted << " accepted, " << refused
            << " refused, slowest " << slowest * 1e3 << " ms\n";
  EXPECT_GT(refused, 0u) << target
                         << ": no mutation was refused: the fuzzer does not reach the checks";
}

class Fuzz : public ::testing::Test {
protected:
  Fuzz() {
    dir_ = fs::temp_directory_path() / ("nettorrent-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  ~Fuzz() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& p, const bytes& b) const {
    std::ofstream os{p, std::ios::binary | std::ios::trunc};
    os.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  static bytes text(const std::string& s) { return bytes(s.begin(), s.end()); }
  static bytes file(const std::string& p) {
    std::ifstream is{p, std::ios::binary};
    return bytes(std::istreambuf_iterator<char>{is}, {});
  }
  fs::path dir_;
};

// --- messages between nodes --------------------------------------------------

/// CAF's binary serialiser and deserialiser on an actor system that knows
/// NetTorrent's message types, as every node does.
struct wire {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  wire() {
    nt::register_message_types(cfg);
    sys = std::make_unique<caf::actor_system>(cfg);
  }
  template <class T>
  bytes encode(T x) {
    std::vector<char> buf;
    caf::binary_serializer sink{*sys, buf};
    if (auto err = sink(x))
      throw std::runtime_error("cannot serialise a seed input");
    return bytes(buf.begin(), buf.end());
  }
  /// Deserialises `b` as a T: accepted, or refused with nettorrent::error
  /// carrying CAF's error.
  template <class T>
  void decode(const bytes& b) {
    std::vector<char> buf(b.begin(), b.end());
    caf::binary_deserializer source{*sys, buf};
    T x;
    if (auto err = source(x))
      throw nt::error(caf::to_string(err));
  }
};

nt::layer_state some_layer(std::int64_t rows, std::int64_t cols) {
  nt::layer_state s;
  s.params.w = nt::matrix::Constant(rows, cols, 0.5f);
  s.params.b = nt::row_vector::Constant(cols, 0.25f);
  s.w_state.m.assign(static_cast<std::size_t>(rows * cols), 0.1f);
  s.w_state.v.assign(static_cast<std::size_t>(rows * cols), 0.2f);
  s.w_state.steps = 3;
  s.b_state.m.assign(static_cast<std::size_t>(cols), 0.1f);
  s.b_state.steps = 3;
  return s;
}

TEST_F(Fuzz, MessagesThatCrossNodes) {
  wire w;
  nt::barrier_report b;
  b.replica = 1;
  b.samples = 640;
  b.position.epoch = 2;
  // Activations and gradients also as bfloat16 (system.wire_precision = "bf16").
  const auto as_bf16 = [&](auto x) {
    nt::wire_precision_setting().store(nt::wire_precision::bf16);
    bytes seed = w.encode(std::move(x));
    nt::wire_precision_setting().store(nt::wire_precision::f32);
    return seed;
  };
  fuzz("shared_matrix",
       {w.encode(nt::shared_matrix{nt::matrix::Constant(4, 3, 1.0f)}),
        as_bf16(nt::shared_matrix{nt::matrix::Constant(4, 3, 1.0f)})},
       [&](const bytes& x) { w.decode<nt::shared_matrix>(x); });
  fuzz("owned_matrix",
       {w.encode(nt::owned_matrix{nt::matrix::Constant(2, 5, 2.0f)}),
        as_bf16(nt::owned_matrix{nt::matrix::Constant(2, 5, 2.0f)})},
       [&](const bytes& x) { w.decode<nt::owned_matrix>(x); });
  fuzz("layer_state", {w.encode(some_layer(3, 4))},
       [&](const bytes& x) { w.decode<nt::layer_state>(x); });
  fuzz("exchange_result",
       {w.encode(nt::exchange_result{{some_layer(2, 2)}, {}, 99, {}}),
        w.encode(
            nt::exchange_result{{some_layer(2, 2), some_layer(2, 2)},
                                nt::policy_state{{some_layer(2, 2).params}},
                                7,
                                nt::encode_params(some_layer(2, 2).params, some_layer(2, 2).params,
                                                  nt::sync_precision::int8)})},
       [&](const bytes& x) { w.decode<nt::exchange_result>(x); });
  fuzz("round_payload",
       {w.encode(
            nt::round_payload{nt::encode_params(some_layer(3, 2).params, some_layer(3, 2).params,
                                                nt::sync_precision::bf16),
                              true, some_layer(3, 2).w_state, some_layer(3, 2).b_state}),
        w.encode(
            nt::round_payload{nt::encode_params(some_layer(3, 2).params, some_layer(3, 2).params,
                                                nt::sync_precision::int8),
                              false,
                              {},
                              {}})},
       [&](const bytes& x) { w.decode<nt::round_payload>(x); });
  fuzz("sync_request",
       {w.encode(nt::sync_request{nt::outer_config{}, some_layer(3, 2).params,
                                  nt::policy_state{{nt::zero_velocity(some_layer(3, 2).params)}}})},
       [&](const bytes& x) { w.decode<nt::sync_request>(x); });
  fuzz("barrier_report", {w.encode(b)}, [&](const bytes& x) { w.decode<nt::barrier_report>(x); });
  fuzz("replica_score", {w.encode(nt::replica_score{0.5, 0.75, 4.0, 6, 8})},
       [&](const bytes& x) { w.decode<nt::replica_score>(x); });
  fuzz("actor_key", {w.encode(nt::actor_key::slice_of(1, 2, 3))},
       [&](const bytes& x) { w.decode<nt::actor_key>(x); });
  fuzz("worker_position", {w.encode(nt::worker_position{1, 2, 3, 4, {}})},
       [&](const bytes& x) { w.decode<nt::worker_position>(x); });
  fuzz("slice_stats", {w.encode(nt::slice_stats{5, 1, 0, 2, {3, 2}})},
       [&](const bytes& x) { w.decode<nt::slice_stats>(x); });
  fuzz("labels", {w.encode(nt::label_batch{std::vector<std::uint8_t>{1, 2, 3, 9}})},
       [&](const bytes& x) { w.decode<nt::label_batch>(x); });
  fuzz("node name", {w.encode(nt::to_node_name("n1"))},
       [&](const bytes& x) { w.decode<nt::node_name>(x); });
  fuzz("byte-order mark", {w.encode(nt::byte_mark{nt::byte_order_mark()})},
       [&](const bytes& x) { w.decode<nt::byte_mark>(x); });
}

// --- files -------------------------------------------------------------------

/// A small IDX image file (rank 3) and its label file (rank 1).
bytes idx_file(std::uint8_t type_rank, const std::vector<std::uint32_t>& dims,
               std::size_t payload) {
  bytes b{0, 0, 0x08, type_rank};
  for (auto d : dims)
    for (int s = 24; s >= 0; s -= 8)
      b.push_back(static_cast<std::uint8_t>(d >> s));
  for (std::size_t i = 0; i < payload; ++i)
    b.push_back(static_cast<std::uint8_t>(i % 10));
  return b;
}

TEST_F(Fuzz, IdxReader) {
  const std::string images = path("images.idx");
  const std::string labels = path("labels.idx");
  write(labels, idx_file(1, {6}, 6));
  fuzz("idx images", {idx_file(3, {6, 2, 2}, 24)}, [&](const bytes& x) {
    write(images, x);
    nt::read_idx_pair(images, labels);
  });
  write(images, idx_file(3, {6, 2, 2}, 24));
  fuzz("idx labels", {idx_file(1, {6}, 6)}, [&](const bytes& x) {
    write(labels, x);
    nt::read_idx_pair(images, labels);
  });
}

TEST_F(Fuzz, CheckpointReaders) {
  nt::run_config cfg;
  cfg.model.layers = {4, 3, 2};
  nt::model_checkpoint ck;
  ck.header = nt::checkpoint_header_of(cfg);
  ck.layers = {some_layer(4, 3), some_layer(3, 2)};
  nt::save_checkpoint(path("model.ckpt"), ck);
  const bytes model = file(path("model.ckpt"));
  nt::run_state st = nt::initial_run_state(cfg, 2);
  st.models.push_back(ck.layers);
  st.round = 2;
  st.curve.resize(2);
  nt::save_run_checkpoint(path("run.ckpt"), ck.header, st);
  const bytes run = file(path("run.ckpt"));
  // A run of sync_policy outer: its outer momentum follows the data positions.
  st.policy_states = {nt::policy_state{{some_layer(4, 3).params}},
                      nt::policy_state{{some_layer(3, 2).params}}};
  nt::save_run_checkpoint(path("outer.ckpt"), ck.header, st);
  const bytes outer = file(path("outer.ckpt"));
  const std::string p = path("fuzzed.ckpt");
  fuzz("checkpoint", {model, run}, [&](const bytes& x) {
    write(p, x);
    nt::load_checkpoint(p);
  });
  fuzz("run checkpoint", {run, outer}, [&](const bytes& x) {
    write(p, x);
    nt::load_run_checkpoint(p);
  });
}

TEST_F(Fuzz, ConfigAndClusterReaders) {
  const std::string run_ini =
      test_support::read_file(std::string{NETTORRENT_SOURCE_DIR} + "/config/local.ini");
  const std::string cluster_ini =
      test_support::read_file(std::string{NETTORRENT_SOURCE_DIR} + "/config/cluster/cluster.ini");
  ASSERT_FALSE(run_ini.empty());
  ASSERT_FALSE(cluster_ini.empty());
  const std::string p = path("fuzzed.ini");
  fuzz("run config", {text(run_ini)}, [&](const bytes& x) {
    write(p, x);
    nt::load_run_config({"--config-file=" + p});
  });
  fuzz("cluster description", {text(cluster_ini)}, [&](const bytes& x) {
    const std::string t(x.begin(), x.end());
    nt::parse_cluster_config(nt::parse_ini_text(t, "fuzzed.ini"));
  });
}

} // namespace
