// Stale messages: a neuron slice and each relay role, all of incarnation 3,
// get messages of incarnations 2 and 4 in the middle of a batch. Each is
// dropped and counted as stale (not as malformed), and the batch then
// completes exactly as it does without them: the same messages, bit for bit,
// stamped with incarnation 3. (The shard worker's test is in test_worker.cpp.)
#include <type_traits>
#include <vector>

#include "fixture.hpp"
#include "nettorrent/dense.hpp"

namespace actor_tests {
namespace {

constexpr std::uint32_t inc = 3;       ///< the incarnation of every actor under test
constexpr std::uint32_t old = inc - 1; ///< a message from before a rollback
constexpr std::uint32_t newer = inc + 1;
constexpr std::uint64_t b1 = 1;
constexpr std::uint64_t b2 = 2;

/// What the test doubles around an actor received in one run of a script.
struct outcome {
  message_log prev, next, sink;
  std::uint64_t dropped = 0;
  std::uint64_t stale = 0;
};

/// Every message in `log` carries incarnation `inc`.
void expect_stamped(const message_log& log, const char* what) {
  for (const auto& m : log)
    EXPECT_EQ(m.incarnation, inc) << what << ": batch " << m.batch;
}

class StaleMessageValidation : public ActorTest {
protected:
  /// Runs `script(actor, stale)` once without and once with the stale
  /// messages, on fresh actors made by `make`, and checks that both runs
  /// send the same messages and that only the stale run counted any.
  template <class Make, class Script>
  void expect_unchanged_by_stale_messages(Make make, Script script, std::uint64_t stale_sent) {
    const outcome clean = run(make, script, false);
    const outcome stale = run(make, script, true);
    expect_same_log(stale.prev, clean.prev, "to the previous swarm");
    expect_same_log(stale.next, clean.next, "to the next swarm");
    expect_same_log(stale.sink, clean.sink, "to the shard worker");
    for (const auto* o : {&clean, &stale}) {
      expect_stamped(o->prev, "to the previous swarm");
      expect_stamped(o->next, "to the next swarm");
      expect_stamped(o->sink, "to the shard worker");
      EXPECT_EQ(o->dropped, 0u) << "stale messages are not malformed ones";
    }
    EXPECT_EQ(clean.stale, 0u);
    EXPECT_EQ(stale.stale, stale_sent);
    EXPECT_TRUE(no_message_waiting());
  }

  template <class Make, class Script>
  outcome run(Make make, Script script, bool stale) {
    outcome out;
    auto prev_log = std::make_shared<message_log>();
    auto next_log = std::make_shared<message_log>();
    auto sink_log = std::make_shared<message_log>();
    auto actor = make(prev_log, next_log, sink_log);
    script(actor, stale);
    if constexpr (std::is_same_v<decltype(actor), nt::neuron_slice_actor>) {
      const auto st = ask<nt::slice_stats>(actor, nt::atom::stats::value);
      out.dropped = st ? st->dropped : 99;
      out.stale = st ? st->stale : 99;
    } else {
      const auto st = ask<nt::drop_stats>(actor, nt::atom::stats::value);
      out.dropped = st ? st->dropped : 99;
      out.stale = st ? st->stale : 99;
    }
    out.prev = *prev_log;
    out.next = *next_log;
    out.sink = *sink_log;
    return out;
  }

  /// `n` fake slices recording into `log`.
  std::vector<nt::neuron_slice_actor> fake_slices(std::size_t n, std::shared_ptr<message_log> log) {
    std::vector<nt::neuron_slice_actor> out;
    for (std::uint32_t i = 0; i < n; ++i)
      out.push_back(spawn(fake_slice, log, i));
    return out;
  }

  static nt::relay_spec relay_spec(std::size_t width, std::size_t prev_slices) {
    nt::relay_spec spec;
    spec.incarnation = inc;
    spec.prev_width = width;
    if (prev_slices > 0)
      spec.prev_cols = nt::split_columns(width, prev_slices);
    spec.max_batch = 8;
    return spec;
  }
};

// --- Neuron slice ----------------------------------------------------------

TEST_F(StaleMessageValidation, SliceDropsStaleMessagesMidBatch) {
  nt::model_config model;
  model.layers = {6, 5, 4, 3};
  for (std::size_t layer : {0u, 1u}) { // acks to the input relay; dX to a hidden relay
    nt::slice_spec spec;
    spec.index = 1;
    spec.incarnation = inc;
    spec.geometry = nt::slice_of(model, layer, 2, 1);
    spec.optimizer.kind = nt::optimizer_kind::sgd;
    spec.optimizer.learning_rate = 0.1f;
    spec.seed = 9;
    spec.max_batch = 8;
    const auto fan_in = static_cast<Eigen::Index>(spec.geometry.fan_in);
    const auto width = static_cast<Eigen::Index>(spec.geometry.cols.size());
    auto states = std::make_shared<std::vector<nt::layer_state>>();
    auto make = [&](auto prev_log, auto next_log, auto) {
      auto prev = spawn(fake_relay, prev_log);
      auto next = spawn(fake_relay, next_log);
      auto slice = spawn(nt::neuron_slice, spec);
      if (layer == 0)
        EXPECT_TRUE(ask_ok(slice, nt::atom::wire::value, nt::ack_sink_actor{prev},
                           nt::block_sink_actor{next}));
      else
        EXPECT_TRUE(ask_ok(slice, nt::atom::wire::value, nt::grad_sink_actor{prev},
                           nt::block_sink_actor{next}));
      return slice;
    };
    auto script = [&](const nt::neuron_slice_actor& slice, bool stale) {
      const nt::matrix x = filled(3, fan_in, 0.5f);
      const nt::matrix dh = filled(3, width, -0.2f);
      deliver(slice, nt::atom::forward::value, inc, b1, true, share(x));
      if (stale) {
        // Would be a duplicate of b1 (or replace its stash).
        deliver(slice, nt::atom::forward::value, old, b1, true, share(filled(3, fan_in, 0.75f)));
        // Would update the weights with another gradient, or with the right one twice.
        deliver(slice, nt::atom::backward::value, old, b1,
                nt::owned_matrix{filled(3, width, 0.3f)});
        deliver(slice, nt::atom::backward::value, newer, b1, nt::owned_matrix{dh});
        // Would be answered.
        deliver(slice, nt::atom::forward::value, newer, b2, false, share(x));
      }
      deliver(slice, nt::atom::backward::value, inc, b1, nt::owned_matrix{dh});
      deliver(slice, nt::atom::forward::value, inc, b2, false, share(x));
      const auto state = ask<nt::layer_state>(slice, nt::atom::get_state::value);
      const auto st = ask<nt::slice_stats>(slice, nt::atom::stats::value);
      ASSERT_TRUE(state && st);
      EXPECT_EQ(st->updates, 1u);
      states->push_back(*state);
    };
    SCOPED_TRACE("layer " + std::to_string(layer + 1));
    expect_unchanged_by_stale_messages(make, script, 4);
    ASSERT_EQ(states->size(), 2u);
    expect_same_state(states->at(1), states->at(0), "weights after the batch");
  }
}

// --- Relays ----------------------------------------------------------------

TEST_F(StaleMessageValidation, InputRelayDropsStaleMessagesMidBatch) {
  auto make = [&](auto, auto next_log, auto sink_log) {
    auto relay = spawn(nt::input_relay, relay_spec(6, 0));
    EXPECT_TRUE(ask_ok(relay, nt::atom::wire::value, fake_slices(2, next_log),
                       nt::batch_sink_actor{spawn(fake_sink, sink_log)}));
    return relay;
  };
  auto script = [&](const nt::input_relay_actor& relay, bool stale) {
    deliver(relay, nt::atom::forward::value, inc, b1, true, share(filled(3, 6, 0.2f)));
    if (stale) { // both acks: would finish the batch before its slices did
      deliver(relay, nt::atom::ack::value, old, b1, std::uint32_t{0});
      deliver(relay, nt::atom::ack::value, old, b1, std::uint32_t{1});
    }
    deliver(relay, nt::atom::ack::value, inc, b1, std::uint32_t{0});
    if (stale) { // would be broadcast; would finish the batch
      deliver(relay, nt::atom::forward::value, newer, b2, true, share(filled(3, 6, 0.4f)));
      deliver(relay, nt::atom::ack::value, newer, b1, std::uint32_t{1});
    }
    deliver(relay, nt::atom::ack::value, inc, b1, std::uint32_t{1});
  };
  expect_unchanged_by_stale_messages(make, script, 4);
}

TEST_F(StaleMessageValidation, HiddenRelayDropsStaleMessagesMidBatch) {
  auto make = [&](auto prev_log, auto next_log, auto sink_log) {
    auto relay = spawn(nt::hidden_relay, relay_spec(4, 2));
    EXPECT_TRUE(ask_ok(relay, nt::atom::wire::value, fake_slices(2, prev_log),
                       fake_slices(2, next_log), nt::batch_sink_actor{spawn(fake_sink, sink_log)}));
    return relay;
  };
  auto script = [&](const nt::hidden_relay_actor& relay, bool stale) {
    const nt::matrix a = filled(3, 2, 1.f);
    deliver(relay, nt::atom::block::value, inc, b1, true, std::uint32_t{0}, share(a));
    if (stale) { // would complete the gather with another block; would be a duplicate
      deliver(relay, nt::atom::block::value, old, b1, true, std::uint32_t{1},
              share(filled(3, 2, 7.f)));
      deliver(relay, nt::atom::block::value, old, b1, true, std::uint32_t{0}, share(a));
    }
    deliver(relay, nt::atom::block::value, inc, b1, true, std::uint32_t{1},
            share(filled(3, 2, -1.f)));
    deliver(relay, nt::atom::grad::value, inc, b1, std::uint32_t{0},
            nt::owned_matrix{filled(3, 4, 0.3f)});
    if (stale) { // would complete the sum; would be reported as divergence
      deliver(relay, nt::atom::grad::value, old, b1, std::uint32_t{1},
              nt::owned_matrix{filled(3, 4, 5.f)});
      deliver(relay, nt::atom::grad::value, newer, b1, std::uint32_t{1},
              nt::owned_matrix{with_nan(filled(3, 4, 0.f))});
    }
    deliver(relay, nt::atom::grad::value, inc, b1, std::uint32_t{1},
            nt::owned_matrix{filled(3, 4, -0.7f)});
  };
  expect_unchanged_by_stale_messages(make, script, 4);
}

TEST_F(StaleMessageValidation, LossRelayDropsStaleMessagesMidBatch) {
  auto make = [&](auto prev_log, auto, auto sink_log) {
    auto relay = spawn(nt::loss_relay, relay_spec(3, 2));
    EXPECT_TRUE(ask_ok(relay, nt::atom::wire::value, fake_slices(2, prev_log),
                       nt::batch_sink_actor{spawn(fake_sink, sink_log)}));
    return relay;
  };
  auto script = [&](const nt::loss_relay_actor& relay, bool stale) {
    deliver(relay, nt::atom::labels::value, inc, b1, true,
            nt::label_batch{std::vector<std::uint8_t>{2, 0, 1}});
    deliver(relay, nt::atom::block::value, inc, b1, true, std::uint32_t{1},
            share(filled(3, 1, -0.3f)));
    if (stale) {
      // Would be a duplicate; would complete the logits; would be reported as divergence.
      deliver(relay, nt::atom::labels::value, old, b1, true,
              nt::label_batch{std::vector<std::uint8_t>{0, 0, 0}});
      deliver(relay, nt::atom::block::value, old, b1, true, std::uint32_t{0},
              share(filled(3, 2, 9.f)));
      deliver(relay, nt::atom::block::value, newer, b1, true, std::uint32_t{0},
              share(with_nan(filled(3, 2, 0.f))));
      // A whole validation batch of another incarnation: no loss for it.
      deliver(relay, nt::atom::labels::value, newer, b2, false,
              nt::label_batch{std::vector<std::uint8_t>{1}});
      deliver(relay, nt::atom::block::value, newer, b2, false, std::uint32_t{0},
              share(filled(1, 2, 0.f)));
      deliver(relay, nt::atom::block::value, newer, b2, false, std::uint32_t{1},
              share(filled(1, 1, 0.f)));
    }
    deliver(relay, nt::atom::block::value, inc, b1, true, std::uint32_t{0},
            share(filled(3, 2, 0.4f)));
  };
  expect_unchanged_by_stale_messages(make, script, 6);
}

} // namespace
} // namespace actor_tests
