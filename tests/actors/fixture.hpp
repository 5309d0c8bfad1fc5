// Shared fixture of the deterministic actor tests: an actor system on CAF's
// test coordinator (one thread, no real time), a scoped actor to talk to the
// actors under test, synthetic data, run configurations, and test doubles
// that record what they receive and fail on anything they did not expect.
#pragma once

#include "test_support.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "actors.hpp"
#include "coordinator.hpp"
#include "hidden_relay.hpp"
#include "input_relay.hpp"
#include "loss_relay.hpp"
#include "neuron_slice.hpp"
#include "shard_worker.hpp"
#include "spawn.hpp"
#include "swarm_leader.hpp"

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/session.hpp"
#include "nettorrent/slice_ops.hpp"
#include "nettorrent/tensor.hpp"

namespace nt = nettorrent;

namespace actor_tests {

// ---------------------------------------------------------------------------
// Bitwise comparisons.

inline bool same_bits(const float* a, const float* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0;
}

inline bool same_bits(const nt::matrix& a, const nt::matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols()
         && same_bits(a.data(), b.data(), static_cast<std::size_t>(a.size()));
}

inline bool same_bits(const nt::row_vector& a, const nt::row_vector& b) {
  return a.size() == b.size() && same_bits(a.data(), b.data(), static_cast<std::size_t>(a.size()));
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && same_bits(a.data(), b.data(), a.size());
}

inline bool same_bits(const nt::optimizer_state& a, const nt::optimizer_state& b) {
  return same_bits(a.m, b.m) && same_bits(a.v, b.v) && a.steps == b.steps;
}

/// Weights, biases and both optimizer states, bit for bit. `what` names the
/// comparison in failure messages.
inline void expect_same_state(const nt::layer_state& actual, const nt::layer_state& expected,
                              const std::string& what) {
  EXPECT_TRUE(same_bits(actual.params.w, expected.params.w)) << what << ": W differs";
  EXPECT_TRUE(same_bits(actual.params.b, expected.params.b)) << what << ": b differs";
  EXPECT_TRUE(same_bits(actual.w_state, expected.w_state))
      << what << ": W's optimizer state differs";
  EXPECT_TRUE(same_bits(actual.b_state, expected.b_state))
      << what << ": b's optimizer state differs";
}

// ---------------------------------------------------------------------------
// Test doubles. Each records what it receives into a log the test owns (the
// test coordinator runs every actor on the test's thread, so plain shared
// memory is safe) and reports every message outside its script as a failure.

/// One message a test double received.
struct received {
  enum kind_t { block, grad, ack, forward, backward, done, loss } kind;
  std::uint32_t incarnation = 0; ///< the incarnation the message carried
  std::uint64_t batch = 0;
  bool train = false;
  std::uint32_t slice = 0;
  nt::matrix m;        ///< block / grad / forward / backward payload
  double loss_sum = 0; ///< loss
  std::uint64_t correct = 0;
};

using message_log = std::vector<received>;

/// Installs handlers that turn unexpected messages and errors into test failures.
template <class Self>
void fail_on_unexpected(Self* self, std::string who) {
  self->set_default_handler(
      [who](caf::scheduled_actor*, caf::message_view& x) -> caf::result<caf::message> {
        ADD_FAILURE() << who << " received an unexpected message: " << x.content().stringify();
        return caf::message{};
      });
  self->set_error_handler([who](caf::scheduled_actor*, caf::error& err) {
    ADD_FAILURE() << who << " received an unexpected error: " << caf::to_string(err);
  });
}

/// Everything a neuron slice sends to: the relays before and after it.
using fake_relay_actor = nt::block_sink_actor::extend_with<nt::grad_sink_actor, nt::ack_sink_actor>;

/// Stands in for the relays around a neuron slice: records blocks, grads
/// and acks (the test checks which kinds it expects).
inline fake_relay_actor::behavior_type fake_relay(fake_relay_actor::pointer self,
                                                  std::shared_ptr<message_log> log) {
  fail_on_unexpected(self, "fake relay");
  return {
      [=](nt::atom::block, std::uint32_t inc, std::uint64_t batch, bool train, std::uint32_t slice,
          const nt::shared_matrix& h) {
        log->push_back(
            {received::block, inc, batch, train, slice, h ? h.get() : nt::matrix{}, 0, 0});
      },
      [=](nt::atom::grad, std::uint32_t inc, std::uint64_t batch, std::uint32_t slice,
          nt::owned_matrix& dx) {
        log->push_back({received::grad, inc, batch, false, slice, std::move(dx.value), 0, 0});
      },
      [=](nt::atom::ack, std::uint32_t inc, std::uint64_t batch, std::uint32_t slice) {
        log->push_back({received::ack, inc, batch, false, slice, {}, 0, 0});
      },
  };
}

/// Stands in for a neuron slice as seen by a relay: records forward and
/// backward messages, fails on anything else.
inline nt::neuron_slice_actor::behavior_type fake_slice(nt::neuron_slice_actor::pointer self,
                                                        std::shared_ptr<message_log> log,
                                                        std::uint32_t index) {
  fail_on_unexpected(self, "fake slice " + std::to_string(index));
  auto unexpected = [index](const char* what) {
    ADD_FAILURE() << "fake slice " << index << " received an unexpected " << what << " message";
  };
  return {
      [=](nt::atom::forward, std::uint32_t inc, std::uint64_t batch, bool train,
          const nt::shared_matrix& x) {
        log->push_back(
            {received::forward, inc, batch, train, index, x ? x.get() : nt::matrix{}, 0, 0});
      },
      [=](nt::atom::backward, std::uint32_t inc, std::uint64_t batch, nt::owned_matrix& dh) {
        log->push_back({received::backward, inc, batch, false, index, std::move(dh.value), 0, 0});
      },
      [=](nt::atom::wire, nt::ack_sink_actor, nt::block_sink_actor) {
        unexpected("wire");
        return nt::atom::ok::value;
      },
      [=](nt::atom::wire, nt::grad_sink_actor, nt::block_sink_actor) {
        unexpected("wire");
        return nt::atom::ok::value;
      },
      [=](nt::atom::get_state) -> caf::result<nt::layer_state> {
        unexpected("get_state");
        return caf::make_error(caf::sec::unexpected_message);
      },
      [=](nt::atom::set_state, nt::layer_state&) -> caf::result<nt::atom::ok> {
        unexpected("set_state");
        return caf::make_error(caf::sec::unexpected_message);
      },
      [=](nt::atom::round_get, std::uint8_t, bool) -> caf::result<nt::round_payload> {
        unexpected("round_get");
        return caf::make_error(caf::sec::unexpected_message);
      },
      [=](nt::atom::round_set, nt::round_payload&) -> caf::result<nt::atom::ok> {
        unexpected("round_set");
        return caf::make_error(caf::sec::unexpected_message);
      },
      [=](nt::atom::stats) -> caf::result<nt::slice_stats> {
        unexpected("stats");
        return caf::make_error(caf::sec::unexpected_message);
      },
      [=](nt::atom::status) -> caf::result<std::string> {
        unexpected("status");
        return caf::make_error(caf::sec::unexpected_message);
      },
  };
}

/// Stands in for a shard worker as seen by a relay.
inline nt::batch_sink_actor::behavior_type fake_sink(nt::batch_sink_actor::pointer self,
                                                     std::shared_ptr<message_log> log) {
  fail_on_unexpected(self, "fake shard worker");
  return {
      [=](nt::atom::done, std::uint32_t inc, std::uint64_t batch) {
        log->push_back({received::done, inc, batch, false, 0, {}, 0, 0});
      },
      [=](nt::atom::loss, std::uint32_t inc, std::uint64_t batch, bool train, double loss_sum,
          std::uint64_t correct) {
        log->push_back({received::loss, inc, batch, train, 0, {}, loss_sum, correct});
      },
  };
}

/// Two logs are the same messages in the same order, payloads bit for bit.
inline void expect_same_log(const message_log& actual, const message_log& expected,
                            const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const auto& a = actual[i];
    const auto& e = expected[i];
    EXPECT_EQ(a.kind, e.kind) << what << ", message " << i;
    EXPECT_EQ(a.incarnation, e.incarnation) << what << ", message " << i;
    EXPECT_EQ(a.batch, e.batch) << what << ", message " << i;
    EXPECT_EQ(a.train, e.train) << what << ", message " << i;
    EXPECT_EQ(a.slice, e.slice) << what << ", message " << i;
    EXPECT_TRUE(same_bits(a.m, e.m)) << what << ", message " << i << ": payloads differ";
    EXPECT_EQ(std::memcmp(&a.loss_sum, &e.loss_sum, sizeof(double)), 0)
        << what << ", message " << i << ": loss " << a.loss_sum << " vs " << e.loss_sum;
    EXPECT_EQ(a.correct, e.correct) << what << ", message " << i;
  }
}

// ---------------------------------------------------------------------------
// Payloads.

/// A rows x cols matrix of distinct, exactly representable values.
inline nt::matrix filled(Eigen::Index rows, Eigen::Index cols, float base) {
  nt::matrix m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i)
    for (Eigen::Index j = 0; j < cols; ++j)
      m(i, j) = base + 0.25f * static_cast<float>(i) - 0.125f * static_cast<float>(j);
  return m;
}

/// `m` with a NaN in its last row.
inline nt::matrix with_nan(nt::matrix m) {
  m(m.rows() - 1, 0) = std::numeric_limits<float>::quiet_NaN();
  return m;
}

inline nt::shared_matrix share(nt::matrix m) {
  return nt::shared_matrix{std::move(m)};
}

// ---------------------------------------------------------------------------
// Data and configurations.

/// `train_n` training and `validation_n` validation samples from one
/// synthetic pool, and a test set drawn from the same blobs.
inline std::shared_ptr<const nt::data_splits>
synthetic_splits(std::size_t train_n, std::size_t validation_n, std::size_t features,
                 std::size_t classes, float noise, std::uint64_t seed = 7) {
  nt::data_splits d;
  d.train_pool = nt::make_synthetic(train_n + validation_n + 17, features, classes, noise, seed);
  // Same seed: the same class centres (the first samples repeat the pool's).
  d.test = nt::make_synthetic(300, features, classes, noise, seed);
  nt::split_validation(d.train_pool.size(), validation_n, train_n, seed + 1, d.train, d.validation);
  return std::make_shared<const nt::data_splits>(std::move(d));
}

/// A one-replica, one-slice, synchronous configuration of a 16-12-8-4 model.
inline nt::run_config base_config(const std::string& output_dir) {
  nt::run_config c;
  c.model.layers = {16, 12, 8, 4};
  c.model.hidden = nt::activation::relu;
  c.training.batch_size = 8;
  c.training.max_epochs = 1;
  c.training.seed = 42;
  c.training.output_dir = output_dir;
  c.training.progress_interval = 0;
  c.training.keep_best = false;
  c.training.target_accuracy = 0;
  c.optimizer.kind = nt::optimizer_kind::sgd;
  c.optimizer.learning_rate = 0.05f;
  c.topology.replicas = 1;
  c.topology.slices = {1};
  c.topology.max_in_flight = 1;
  c.topology.sync_every = 1000000;
  c.topology.policy = nt::sync_policy::best;
  c.topology.validation_subset = 0;
  c.topology.weight_stashing = false;
  c.system.registration_timeout = 10;
  c.data.test_limit = 0;
  return c;
}

// ---------------------------------------------------------------------------
// The fixture.

inline caf::actor_system_config& testing_config(caf::actor_system_config& c) {
  c.set("scheduler.policy", caf::atom("testing"));
  return c;
}

class ActorTest : public ::testing::Test {
protected:
  ActorTest()
      : sys(testing_config(sys_cfg)),
        sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())), self(sys) {
    nt::prepare_math_thread();
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = std::filesystem::temp_directory_path()
          / ("nettorrent-actors-" + std::to_string(::getpid()) + "-" + info->test_suite_name() + "-"
             + info->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }

  ~ActorTest() override {
    // Actors spawned by hand are told to leave; runs shut their own actors down.
    for (const auto& h : manual)
      caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
    // Pending messages or timers (the coordinator's registration deadline)
    // would otherwise hang ~actor_system.
    while (sched.run() + sched.trigger_timeouts() > 0) {
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  /// Spawns `f(args...)` and remembers it for the exit in the destructor.
  template <class F, class... Ts>
  auto spawn(F f, Ts&&... xs) {
    auto h = sys.spawn(f, std::forward<Ts>(xs)...);
    manual.push_back(caf::actor_cast<caf::actor>(h));
    return h;
  }

  /// Sends a message and runs the scheduler to quiescence.
  template <class Handle, class... Ts>
  void deliver(const Handle& dest, Ts&&... xs) {
    self->send(dest, std::forward<Ts>(xs)...);
    sched.run();
  }

  /// Sends a message, runs the scheduler to quiescence and returns the single
  /// reply of type T (nullopt and a test failure if there is none or an error).
  template <class T, class Handle, class... Ts>
  std::optional<T> ask(const Handle& dest, Ts&&... xs) {
    self->send(dest, std::forward<Ts>(xs)...);
    sched.run();
    std::optional<T> out;
    self->receive([&](T& x) { out = std::move(x); },
                  [&](caf::error& err) {
                    ADD_FAILURE() << "expected a reply, got the error " << sys.render(err);
                  },
                  caf::after(std::chrono::milliseconds(0)) >>
                      [&] { ADD_FAILURE() << "expected a reply, got nothing"; });
    return out;
  }

  /// Sends a message and expects the reply `ok`.
  template <class Handle, class... Ts>
  bool ask_ok(const Handle& dest, Ts&&... xs) {
    self->send(dest, std::forward<Ts>(xs)...);
    sched.run();
    bool ok = false;
    self->receive(
        [&](nt::atom::ok) { ok = true; },
        [&](caf::error& err) { ADD_FAILURE() << "expected ok, got the error " << sys.render(err); },
        caf::after(std::chrono::milliseconds(0)) >>
            [&] { ADD_FAILURE() << "expected ok, got nothing"; });
    return ok;
  }

  /// Like ask, but expects an error reply; returns its rendering.
  template <class Handle, class... Ts>
  std::string ask_error(const Handle& dest, Ts&&... xs) {
    self->send(dest, std::forward<Ts>(xs)...);
    sched.run();
    std::string out;
    self->receive([&](caf::error& err) { out = sys.render(err); },
                  caf::after(std::chrono::milliseconds(0)) >>
                      [&] { ADD_FAILURE() << "expected an error reply, got nothing"; });
    return out;
  }

  /// True if no message waits at the scoped actor (including messages that
  /// an earlier receive skipped because no handler matched); reports and
  /// removes every one it finds.
  bool no_message_waiting() {
    bool none = true;
    for (bool more = true; more;)
      self->receive(
          caf::others >> [&](caf::message_view& x) -> caf::result<caf::message> {
            none = false;
            ADD_FAILURE() << "unexpected message at the test actor: " << x.content().stringify();
            return caf::message{};
          },
          caf::after(std::chrono::milliseconds(0)) >> [&] { more = false; });
    return none;
  }

  /// Spawns an embedded run of `cfg` on `data` (a coordinator and a node
  /// actor, as `nettorrent train` does), runs it to the end, writes its
  /// outputs the way the process session does, and returns the result.
  nt::run_result run(const nt::run_config& cfg, std::shared_ptr<const nt::data_splits> data) {
    cfg.validate();
    auto coord = nt::spawn_embedded(sys, cfg, data, /*verbose=*/false);
    self->send(coord, nt::atom::run::value);
    sched.run();
    nt::run_result report;
    bool got = false;
    self->receive(
        [&](nt::run_result& r) {
          report = std::move(r);
          got = true;
        },
        [&](caf::error& err) { ADD_FAILURE() << "run failed: " << sys.render(err); },
        caf::after(std::chrono::milliseconds(0)) >>
            [&] { ADD_FAILURE() << "the run did not reply"; });
    if (got && !report.ok)
      ADD_FAILURE() << "run reported an error: " << report.error;
    if (got && report.ok) {
      std::ostringstream sink;
      nt::write_outputs(cfg, *data, report, sink);
    }
    return report;
  }

  std::string out_dir(const std::string& name) const { return (dir / name).string(); }

  caf::actor_system_config sys_cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  caf::scoped_actor self;
  std::vector<caf::actor> manual;
  std::filesystem::path dir;
};

} // namespace actor_tests
