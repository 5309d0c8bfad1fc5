// Malformed messages: a neuron slice or a relay (input, hidden, loss) drops
// them, counts them, and keeps working. Every actor under test is wired to test doubles
// that record what they get and fail on anything they did not expect.
#include <cmath>
#include <limits>

#include "fixture.hpp"
#include "nettorrent/dense.hpp"
#include "nettorrent/loss.hpp"

namespace actor_tests {
namespace {

constexpr float nan = std::numeric_limits<float>::quiet_NaN();
constexpr std::uint32_t inc = 0; ///< the incarnation of every actor under test

class Validation : public ActorTest {
protected:
  std::uint64_t slice_dropped(const nt::neuron_slice_actor& s) {
    return ask<nt::slice_stats>(s, nt::atom::stats::value).value_or(nt::slice_stats{}).dropped;
  }
  nt::slice_stats stats_of(const nt::neuron_slice_actor& s) {
    return ask<nt::slice_stats>(s, nt::atom::stats::value).value_or(nt::slice_stats{});
  }
  template <class Relay>
  std::uint64_t relay_dropped(const Relay& r) {
    return ask<nt::drop_stats>(r, nt::atom::stats::value).value_or(nt::drop_stats{99, 99}).dropped;
  }
};

// --- Neuron slice ----------------------------------------------------------

TEST_F(Validation, SliceDropsMalformedMessagesAndKeepsWorking) {
  nt::model_config model;
  model.layers = {6, 5, 4, 3};
  nt::slice_spec spec;
  spec.replica = 0;
  spec.index = 1;
  spec.geometry = nt::slice_of(model, 1, 2, 1); // 5 -> columns [2, 4) of 4, ReLU
  spec.optimizer.kind = nt::optimizer_kind::sgd;
  spec.optimizer.learning_rate = 0.1f;
  spec.seed = 9;
  spec.max_batch = 8;
  auto prev_log = std::make_shared<message_log>();
  auto next_log = std::make_shared<message_log>();
  auto prev = spawn(fake_relay, prev_log);
  auto next = spawn(fake_relay, next_log);
  auto slice = spawn(nt::neuron_slice, spec);
  ASSERT_TRUE(
      ask_ok(slice, nt::atom::wire::value, nt::grad_sink_actor{prev}, nt::block_sink_actor{next}));

  const nt::matrix x = filled(3, 5, 0.5f);
  std::uint64_t expected_drops = 0;
  // Forward: wrong width, NaN, too many rows, no matrix at all.
  deliver(slice, nt::atom::forward::value, inc, std::uint64_t{1}, true, share(filled(3, 4, 0.5f)));
  deliver(slice, nt::atom::forward::value, inc, std::uint64_t{2}, true, share(with_nan(x)));
  deliver(slice, nt::atom::forward::value, inc, std::uint64_t{3}, true, share(filled(9, 5, 0.5f)));
  deliver(slice, nt::atom::forward::value, inc, std::uint64_t{4}, true, nt::shared_matrix{});
  // Backward for a batch the slice never saw.
  deliver(slice, nt::atom::backward::value, inc, std::uint64_t{99},
          nt::owned_matrix{filled(3, 2, 0.1f)});
  expected_drops += 5;
  EXPECT_EQ(slice_dropped(slice), expected_drops);
  EXPECT_TRUE(next_log->empty());
  EXPECT_TRUE(prev_log->empty());

  // A valid training forward is processed: its block reaches the next relay.
  deliver(slice, nt::atom::forward::value, inc, std::uint64_t{10}, true, share(x));
  ASSERT_EQ(next_log->size(), 1u);
  const nt::dense_params init = nt::init_dense(spec.seed, spec.geometry);
  nt::matrix h;
  nt::dense_forward(x, init, spec.geometry.act, h);
  {
    const auto& got = next_log->at(0);
    EXPECT_EQ(got.kind, received::block);
    EXPECT_EQ(got.batch, 10u);
    EXPECT_TRUE(got.train);
    EXPECT_EQ(got.slice, 1u);
    EXPECT_TRUE(same_bits(got.m, h));
  }

  // The same training batch again, then bad backward messages for it:
  // wrong width, NaN, wrong number of rows.
  deliver(slice, nt::atom::forward::value, inc, std::uint64_t{10}, true, share(x));
  const nt::matrix dh = filled(3, 2, -0.2f);
  deliver(slice, nt::atom::backward::value, inc, std::uint64_t{10},
          nt::owned_matrix{filled(3, 3, 0.1f)});
  deliver(slice, nt::atom::backward::value, inc, std::uint64_t{10}, nt::owned_matrix{with_nan(dh)});
  deliver(slice, nt::atom::backward::value, inc, std::uint64_t{10},
          nt::owned_matrix{filled(2, 2, 0.1f)});
  expected_drops += 4;
  EXPECT_EQ(slice_dropped(slice), expected_drops);
  EXPECT_EQ(next_log->size(), 1u);
  EXPECT_TRUE(prev_log->empty());
  EXPECT_EQ(stats_of(slice).updates, 0u);

  // The valid backward still works: partial dX to the previous relay, one update.
  deliver(slice, nt::atom::backward::value, inc, std::uint64_t{10}, nt::owned_matrix{dh});
  ASSERT_EQ(prev_log->size(), 1u);
  {
    nt::dense_grads grads;
    nt::resize_grads(init, grads);
    nt::matrix dz = dh;
    nt::matrix dx;
    nt::dense_backward(x, h, spec.geometry.act, init, dz, grads, &dx);
    const auto& got = prev_log->at(0);
    EXPECT_EQ(got.kind, received::grad);
    EXPECT_EQ(got.batch, 10u);
    EXPECT_EQ(got.slice, 1u);
    EXPECT_TRUE(same_bits(got.m, dx));
  }
  const nt::slice_stats st = stats_of(slice);
  EXPECT_EQ(st.updates, 1u);
  EXPECT_EQ(st.dropped, expected_drops);

  // A second backward for the same batch: its stash entry is gone.
  deliver(slice, nt::atom::backward::value, inc, std::uint64_t{10}, nt::owned_matrix{dh});
  ++expected_drops;

  // set_state with the wrong shape is refused, counted, and changes nothing.
  nt::layer_state bad =
      ask<nt::layer_state>(slice, nt::atom::get_state::value).value_or(nt::layer_state{});
  const nt::layer_state good = bad;
  bad.params.w.resize(5, 3);
  bad.params.w.setZero();
  EXPECT_CONTAINS(ask_error(slice, nt::atom::set_state::value, bad), "wrong shape");
  ++expected_drops;
  nt::layer_state poisoned = good;
  poisoned.params.b(0) = nan;
  EXPECT_CONTAINS(ask_error(slice, nt::atom::set_state::value, poisoned), "non-finite");
  ++expected_drops;
  EXPECT_EQ(slice_dropped(slice), expected_drops);
  const auto now = ask<nt::layer_state>(slice, nt::atom::get_state::value);
  ASSERT_TRUE(now.has_value());
  expect_same_state(*now, good, "state after refused set_state");

  // And a validation forward after all that is still answered.
  deliver(slice, nt::atom::forward::value, inc, std::uint64_t{11}, false, share(x));
  ASSERT_EQ(next_log->size(), 2u);
  EXPECT_EQ(next_log->at(1).batch, 11u);
  EXPECT_FALSE(next_log->at(1).train);
  EXPECT_EQ(prev_log->size(), 1u);
  EXPECT_TRUE(no_message_waiting());
}

TEST_F(Validation, SliceRefusesTheWireOfAnotherLayer) {
  nt::model_config model;
  model.layers = {6, 5, 4, 3};
  auto log = std::make_shared<message_log>();
  auto relay = spawn(fake_relay, log);
  for (std::size_t layer : {0u, 1u}) {
    nt::slice_spec spec;
    spec.geometry = nt::slice_of(model, layer, 1, 0);
    spec.optimizer.kind = nt::optimizer_kind::sgd;
    spec.max_batch = 8;
    auto slice = spawn(nt::neuron_slice, spec);
    const nt::block_sink_actor next{relay};
    if (layer == 0) {
      EXPECT_CONTAINS(ask_error(slice, nt::atom::wire::value, nt::grad_sink_actor{relay}, next),
                      "layer 1 acks its updates to the input relay");
      EXPECT_TRUE(ask_ok(slice, nt::atom::wire::value, nt::ack_sink_actor{relay}, next));
    } else {
      EXPECT_CONTAINS(ask_error(slice, nt::atom::wire::value, nt::ack_sink_actor{relay}, next),
                      "layer 2 sends input gradients to a hidden relay");
      EXPECT_TRUE(ask_ok(slice, nt::atom::wire::value, nt::grad_sink_actor{relay}, next));
    }
  }
  EXPECT_TRUE(log->empty());
  EXPECT_TRUE(no_message_waiting());
}

// --- Relays ----------------------------------------------------------------

template <class Relay>
struct relay_rig {
  std::shared_ptr<message_log> prev_log = std::make_shared<message_log>();
  std::shared_ptr<message_log> next_log = std::make_shared<message_log>();
  std::shared_ptr<message_log> sink_log = std::make_shared<message_log>();
  std::vector<nt::neuron_slice_actor> prev;
  std::vector<nt::neuron_slice_actor> next;
  nt::batch_sink_actor sink;
  Relay relay;
};

class RelayValidation : public Validation {
protected:
  /// `prev_n` / `next_n` fake slices and a fake worker.
  template <class Relay>
  relay_rig<Relay> make_doubles(std::size_t prev_n, std::size_t next_n) {
    relay_rig<Relay> rig;
    for (std::uint32_t i = 0; i < prev_n; ++i)
      rig.prev.push_back(spawn(fake_slice, rig.prev_log, i));
    for (std::uint32_t i = 0; i < next_n; ++i)
      rig.next.push_back(spawn(fake_slice, rig.next_log, i));
    rig.sink = spawn(fake_sink, rig.sink_log);
    return rig;
  }
  /// An input relay of `spec` wired to `next_n` fake slices and a fake worker.
  relay_rig<nt::input_relay_actor> make_input_relay(const nt::relay_spec& spec,
                                                    std::size_t next_n) {
    auto rig = make_doubles<nt::input_relay_actor>(0, next_n);
    rig.relay = spawn(nt::input_relay, spec);
    EXPECT_TRUE(ask_ok(rig.relay, nt::atom::wire::value, rig.next, rig.sink));
    return rig;
  }
  /// A hidden relay of `spec` wired to `prev_n` / `next_n` fake slices and a fake worker.
  relay_rig<nt::hidden_relay_actor> make_hidden_relay(const nt::relay_spec& spec,
                                                      std::size_t prev_n, std::size_t next_n) {
    auto rig = make_doubles<nt::hidden_relay_actor>(prev_n, next_n);
    rig.relay = spawn(nt::hidden_relay, spec);
    EXPECT_TRUE(ask_ok(rig.relay, nt::atom::wire::value, rig.prev, rig.next, rig.sink));
    return rig;
  }
  /// A loss relay of `spec` wired to `prev_n` fake slices and a fake worker.
  relay_rig<nt::loss_relay_actor> make_loss_relay(const nt::relay_spec& spec, std::size_t prev_n) {
    auto rig = make_doubles<nt::loss_relay_actor>(prev_n, 0);
    rig.relay = spawn(nt::loss_relay, spec);
    EXPECT_TRUE(ask_ok(rig.relay, nt::atom::wire::value, rig.prev, rig.sink));
    return rig;
  }
};

TEST_F(RelayValidation, HiddenRelayDropsMalformedMessagesAndKeepsWorking) {
  nt::relay_spec spec;
  spec.replica = 0;
  spec.prev_width = 4;
  spec.prev_cols = nt::split_columns(4, 2); // [0, 2), [2, 4)
  spec.max_batch = 8;
  auto rig = make_hidden_relay(spec, 2, 2);
  auto& relay = rig.relay;
  const std::uint64_t b1 = 1;
  std::uint64_t expected_drops = 0;

  // Forward blocks: slice index out of range, wrong width, NaN, too many rows.
  deliver(relay, nt::atom::block::value, inc, b1, true, std::uint32_t{2}, share(filled(3, 2, 0.f)));
  deliver(relay, nt::atom::block::value, inc, b1, true, std::uint32_t{0}, share(filled(3, 3, 0.f)));
  deliver(relay, nt::atom::block::value, inc, b1, true, std::uint32_t{0},
          share(with_nan(filled(3, 2, 0.f))));
  deliver(relay, nt::atom::block::value, inc, b1, true, std::uint32_t{1}, share(filled(9, 2, 0.f)));
  // Backward partial for a batch never forwarded; messages meant for the
  // other roles (only a dynamically typed sender can send them).
  deliver(relay, nt::atom::grad::value, inc, std::uint64_t{77}, std::uint32_t{0},
          nt::owned_matrix{filled(3, 4, 0.f)});
  const auto untyped = caf::actor_cast<caf::actor>(relay);
  deliver(untyped, nt::atom::ack::value, inc, b1, std::uint32_t{0});
  deliver(untyped, nt::atom::forward::value, inc, b1, true, share(filled(3, 4, 0.f)));
  deliver(untyped, nt::atom::labels::value, inc, b1, true,
          nt::label_batch{std::vector<std::uint8_t>{0, 1, 2}});
  expected_drops += 8;
  // A request of another actor type is answered with an error (a requester
  // must not wait forever), and counted.
  {
    auto reply = self->request(untyped, caf::infinite, nt::atom::get_state::value);
    sched.run();
    std::string err;
    std::move(reply).receive([](nt::layer_state&) { ADD_FAILURE() << "got a layer state"; },
                             [&](caf::error& e) { err = sys.render(e); });
    EXPECT_CONTAINS(err, "unexpected_message");
    ++expected_drops;
  }
  EXPECT_EQ(relay_dropped(relay), expected_drops);
  EXPECT_TRUE(rig.next_log->empty());
  EXPECT_TRUE(rig.prev_log->empty());

  // A valid gather (blocks in reverse order, with a duplicate and a block of
  // the wrong height in between) reaches both next slices.
  const std::uint64_t b5 = 5;
  const nt::matrix a = filled(3, 2, 1.f);
  const nt::matrix c = filled(3, 2, -1.f);
  deliver(relay, nt::atom::block::value, inc, b5, true, std::uint32_t{1}, share(c));
  deliver(relay, nt::atom::block::value, inc, b5, true, std::uint32_t{1}, share(c));
  deliver(relay, nt::atom::block::value, inc, b5, true, std::uint32_t{0}, share(filled(2, 2, 1.f)));
  deliver(relay, nt::atom::block::value, inc, b5, false, std::uint32_t{0}, share(a));
  expected_drops += 3;
  EXPECT_TRUE(rig.next_log->empty());
  deliver(relay, nt::atom::block::value, inc, b5, true, std::uint32_t{0}, share(a));
  nt::matrix gathered(3, 4);
  gathered << a, c;
  ASSERT_EQ(rig.next_log->size(), 2u);
  for (const auto& got : *rig.next_log) {
    EXPECT_EQ(got.kind, received::forward);
    EXPECT_EQ(got.batch, b5);
    EXPECT_TRUE(got.train);
    EXPECT_TRUE(same_bits(got.m, gathered));
  }
  EXPECT_EQ(rig.next_log->at(0).slice + rig.next_log->at(1).slice, 1u); // slices 0 and 1

  // Backward partials: out of range, wrong width, wrong height, NaN, a
  // duplicate; then the valid second partial completes the sum.
  const nt::matrix p0 = filled(3, 4, 0.3f);
  const nt::matrix p1 = filled(3, 4, -0.7f);
  deliver(relay, nt::atom::grad::value, inc, b5, std::uint32_t{0}, nt::owned_matrix{p0});
  deliver(relay, nt::atom::grad::value, inc, b5, std::uint32_t{2}, nt::owned_matrix{p1});
  deliver(relay, nt::atom::grad::value, inc, b5, std::uint32_t{1},
          nt::owned_matrix{filled(3, 3, 0.f)});
  deliver(relay, nt::atom::grad::value, inc, b5, std::uint32_t{1},
          nt::owned_matrix{filled(2, 4, 0.f)});
  deliver(relay, nt::atom::grad::value, inc, b5, std::uint32_t{1}, nt::owned_matrix{with_nan(p1)});
  deliver(relay, nt::atom::grad::value, inc, b5, std::uint32_t{0}, nt::owned_matrix{p0});
  expected_drops += 5;
  EXPECT_TRUE(rig.prev_log->empty());
  deliver(relay, nt::atom::grad::value, inc, b5, std::uint32_t{1}, nt::owned_matrix{p1});
  const nt::matrix sum = p0 + p1;
  ASSERT_EQ(rig.prev_log->size(), 2u);
  for (const auto& got : *rig.prev_log) {
    EXPECT_EQ(got.kind, received::backward);
    EXPECT_EQ(got.batch, b5);
    ASSERT_LT(got.slice, 2u);
    const nt::matrix part = sum.middleCols(2 * static_cast<Eigen::Index>(got.slice), 2);
    EXPECT_TRUE(same_bits(got.m, part)) << "slice " << got.slice;
  }
  EXPECT_EQ(rig.prev_log->at(0).slice + rig.prev_log->at(1).slice, 1u);
  // The batch is finished: a late partial is unknown.
  deliver(relay, nt::atom::grad::value, inc, b5, std::uint32_t{1}, nt::owned_matrix{p1});
  ++expected_drops;
  // A late or repeated forward block of the finished batch opens no new
  // gather: it is dropped, and even a full set of blocks forwards nothing.
  deliver(relay, nt::atom::block::value, inc, b5, true, std::uint32_t{0}, share(a));
  deliver(relay, nt::atom::block::value, inc, b5, true, std::uint32_t{1}, share(c));
  expected_drops += 2;
  EXPECT_EQ(rig.next_log->size(), 2u);
  EXPECT_EQ(relay_dropped(relay), expected_drops);
  // The two non-finite payloads of training batches (the NaN block of b1 and
  // the NaN partial of b5) mean diverged weights: each is reported to the
  // worker as a non-finite loss so the run stops instead of waiting forever.
  // Shape errors are not reported.
  ASSERT_EQ(rig.sink_log->size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(rig.sink_log->at(i).kind, received::loss);
    EXPECT_TRUE(rig.sink_log->at(i).train);
    EXPECT_TRUE(std::isnan(rig.sink_log->at(i).loss_sum));
  }
  EXPECT_EQ(rig.sink_log->at(0).batch, b1);
  EXPECT_EQ(rig.sink_log->at(1).batch, b5);
  EXPECT_TRUE(no_message_waiting());
}

TEST_F(RelayValidation, InputRelayDropsMalformedMessagesAndKeepsWorking) {
  nt::relay_spec spec;
  spec.replica = 0;
  spec.prev_width = 6; // input width
  spec.max_batch = 8;
  auto rig = make_input_relay(spec, 2);
  auto& relay = rig.relay;
  std::uint64_t expected_drops = 0;

  // Inputs of the wrong width or with a NaN are dropped, not broadcast.
  deliver(relay, nt::atom::forward::value, inc, std::uint64_t{1}, true, share(filled(3, 5, 0.f)));
  deliver(relay, nt::atom::forward::value, inc, std::uint64_t{1}, true,
          share(with_nan(filled(3, 6, 0.f))));
  expected_drops += 2;
  deliver(relay, nt::atom::forward::value, inc, std::uint64_t{1}, true, share(filled(9, 6, 0.f)));
  deliver(relay, nt::atom::forward::value, inc, std::uint64_t{1}, true, nt::shared_matrix{});
  deliver(relay, nt::atom::ack::value, inc, std::uint64_t{42}, std::uint32_t{0});
  // Messages meant for the other roles.
  const auto untyped = caf::actor_cast<caf::actor>(relay);
  deliver(untyped, nt::atom::block::value, inc, std::uint64_t{1}, true, std::uint32_t{0},
          share(filled(3, 2, 0.f)));
  deliver(untyped, nt::atom::grad::value, inc, std::uint64_t{1}, std::uint32_t{0},
          nt::owned_matrix{filled(3, 6, 0.f)});
  expected_drops += 5;
  EXPECT_EQ(relay_dropped(relay), expected_drops);
  EXPECT_TRUE(rig.next_log->empty());

  const nt::matrix x = filled(3, 6, 0.2f);
  deliver(relay, nt::atom::forward::value, inc, std::uint64_t{2}, true, share(x));
  ASSERT_EQ(rig.next_log->size(), 2u);
  for (const auto& got : *rig.next_log) {
    EXPECT_EQ(got.kind, received::forward);
    EXPECT_EQ(got.batch, 2u);
    EXPECT_TRUE(same_bits(got.m, x));
  }
  // The same training batch twice, an ack from a slice that does not exist,
  // and a duplicate ack: none may free the batch before both slices acked.
  deliver(relay, nt::atom::forward::value, inc, std::uint64_t{2}, true, share(x));
  deliver(relay, nt::atom::ack::value, inc, std::uint64_t{2}, std::uint32_t{2});
  deliver(relay, nt::atom::ack::value, inc, std::uint64_t{2}, std::uint32_t{0});
  deliver(relay, nt::atom::ack::value, inc, std::uint64_t{2}, std::uint32_t{0});
  expected_drops += 3;
  EXPECT_TRUE(rig.sink_log->empty()) << "a batch was reported done before slice 1 acked";
  deliver(relay, nt::atom::ack::value, inc, std::uint64_t{2}, std::uint32_t{1});
  ASSERT_EQ(rig.sink_log->size(), 1u);
  EXPECT_EQ(rig.sink_log->at(0).kind, received::done);
  EXPECT_EQ(rig.sink_log->at(0).batch, 2u);
  // Finished: a late ack is for an unknown batch.
  deliver(relay, nt::atom::ack::value, inc, std::uint64_t{2}, std::uint32_t{1});
  ++expected_drops;
  EXPECT_EQ(relay_dropped(relay), expected_drops);
  EXPECT_EQ(rig.next_log->size(), 2u);
  EXPECT_TRUE(no_message_waiting());
}

TEST_F(RelayValidation, LossRelayDropsMalformedMessagesAndKeepsWorking) {
  nt::relay_spec spec;
  spec.replica = 0;
  spec.prev_width = 3;
  spec.prev_cols = nt::split_columns(3, 2); // [0, 2), [2, 3)
  spec.max_batch = 8;
  auto rig = make_loss_relay(spec, 2);
  auto& relay = rig.relay;
  std::uint64_t expected_drops = 0;

  // Labels: none, too many; a label out of range (found once the logits are here).
  deliver(relay, nt::atom::labels::value, inc, std::uint64_t{1}, true,
          nt::label_batch{std::vector<std::uint8_t>{}});
  deliver(relay, nt::atom::labels::value, inc, std::uint64_t{1}, true,
          nt::label_batch{std::vector<std::uint8_t>(9, 0)});
  deliver(relay, nt::atom::labels::value, inc, std::uint64_t{2}, true,
          nt::label_batch{std::vector<std::uint8_t>{0, 7, 1}});
  deliver(relay, nt::atom::block::value, inc, std::uint64_t{2}, true, std::uint32_t{0},
          share(filled(3, 2, 0.f)));
  deliver(relay, nt::atom::block::value, inc, std::uint64_t{2}, true, std::uint32_t{1},
          share(filled(3, 1, 0.f)));
  // Logits block of the wrong width, labels of the wrong count for a batch.
  deliver(relay, nt::atom::block::value, inc, std::uint64_t{3}, true, std::uint32_t{1},
          share(filled(3, 2, 0.f)));
  deliver(relay, nt::atom::labels::value, inc, std::uint64_t{4}, true,
          nt::label_batch{std::vector<std::uint8_t>{0, 1}});
  deliver(relay, nt::atom::block::value, inc, std::uint64_t{4}, true, std::uint32_t{0},
          share(filled(3, 2, 0.f)));
  deliver(relay, nt::atom::block::value, inc, std::uint64_t{4}, true, std::uint32_t{1},
          share(filled(3, 1, 0.f)));
  expected_drops += 5;
  EXPECT_EQ(relay_dropped(relay), expected_drops);
  EXPECT_TRUE(rig.sink_log->empty());
  EXPECT_TRUE(rig.prev_log->empty());

  // A valid batch: logits first, labels after.
  const nt::matrix l0 = filled(3, 2, 0.4f);
  const nt::matrix l1 = filled(3, 1, -0.3f);
  const std::vector<std::uint8_t> ys{2, 0, 1};
  deliver(relay, nt::atom::block::value, inc, std::uint64_t{5}, true, std::uint32_t{1}, share(l1));
  deliver(relay, nt::atom::block::value, inc, std::uint64_t{5}, true, std::uint32_t{0}, share(l0));
  EXPECT_TRUE(rig.sink_log->empty());
  deliver(relay, nt::atom::labels::value, inc, std::uint64_t{5}, true, nt::label_batch{ys});
  nt::matrix logits(3, 3);
  logits << l0, l1;
  nt::matrix grad;
  const nt::loss_result expected = nt::softmax_xent_backward(logits, ys.data(), grad);
  ASSERT_EQ(rig.sink_log->size(), 1u);
  EXPECT_EQ(rig.sink_log->at(0).kind, received::loss);
  EXPECT_EQ(rig.sink_log->at(0).batch, 5u);
  EXPECT_TRUE(rig.sink_log->at(0).train);
  EXPECT_EQ(rig.sink_log->at(0).loss_sum, expected.loss_sum);
  EXPECT_EQ(rig.sink_log->at(0).correct, static_cast<std::uint64_t>(expected.correct));
  ASSERT_EQ(rig.prev_log->size(), 2u);
  const auto cols = nt::split_columns(3, 2);
  for (const auto& got : *rig.prev_log) {
    EXPECT_EQ(got.kind, received::backward);
    EXPECT_EQ(got.batch, 5u);
    ASSERT_LT(got.slice, 2u);
    const auto& c = cols[got.slice];
    const nt::matrix part =
        grad.middleCols(static_cast<Eigen::Index>(c.begin), static_cast<Eigen::Index>(c.size()));
    EXPECT_TRUE(same_bits(got.m, part)) << "slice " << got.slice;
  }
  EXPECT_EQ(relay_dropped(relay), expected_drops);
  EXPECT_TRUE(no_message_waiting());
}

} // namespace
} // namespace actor_tests

namespace actor_tests {
namespace {

// Weight stashing: a slice computes a batch's input gradient dX from the
// weights its forward pass used, even when another batch's update landed in
// between; without stashing it uses the current weights.
class WeightStashing : public Validation, public ::testing::WithParamInterface<bool> {};

TEST_P(WeightStashing, InputGradientUsesTheForwardTimeWeights) {
  const bool stashing = GetParam();
  nt::model_config model;
  model.layers = {6, 5, 4, 3};
  nt::slice_spec spec;
  spec.geometry = nt::slice_of(model, 1, 1, 0); // 5 -> 4, ReLU, computes dX
  spec.optimizer.kind = nt::optimizer_kind::sgd;
  spec.optimizer.learning_rate = 0.5f;
  spec.seed = 11;
  spec.max_batch = 8;
  spec.weight_stashing = stashing;
  auto prev_log = std::make_shared<message_log>();
  auto next_log = std::make_shared<message_log>();
  auto prev = spawn(fake_relay, prev_log);
  auto next = spawn(fake_relay, next_log);
  auto slice = spawn(nt::neuron_slice, spec);
  ASSERT_TRUE(
      ask_ok(slice, nt::atom::wire::value, nt::grad_sink_actor{prev}, nt::block_sink_actor{next}));
  const auto w0 = ask<nt::layer_state>(slice, nt::atom::get_state::value);
  ASSERT_TRUE(w0.has_value());

  const nt::matrix x1 = filled(3, 5, 0.5f);
  const nt::matrix x2 = filled(3, 5, 0.75f);
  const nt::matrix dh1 = filled(3, 4, 0.3f);
  const nt::matrix dh2 = filled(3, 4, -0.2f);
  // Both forwards first (two batches in flight), then both backwards.
  deliver(slice, nt::atom::forward::value, inc, std::uint64_t{1}, true, share(x1));
  deliver(slice, nt::atom::forward::value, inc, std::uint64_t{2}, true, share(x2));
  deliver(slice, nt::atom::backward::value, inc, std::uint64_t{1}, nt::owned_matrix{dh1});
  const auto w1 = ask<nt::layer_state>(slice, nt::atom::get_state::value);
  ASSERT_TRUE(w1.has_value());
  ASSERT_FALSE(same_bits(w1->params.w, w0->params.w)) << "batch 1's update did not land";
  deliver(slice, nt::atom::backward::value, inc, std::uint64_t{2}, nt::owned_matrix{dh2});
  ASSERT_EQ(prev_log->size(), 2u);
  ASSERT_EQ(next_log->size(), 2u);
  const nt::matrix& h2 = next_log->at(1).m; // batch 2's forward output (from W0)

  // dX of batch 2 from W0 (forward-time) and from W1 (current at backward).
  auto dx_with = [&](const nt::dense_params& p) {
    nt::matrix dz = dh2;
    nt::dense_grads g;
    nt::matrix dx;
    nt::dense_backward(x2, h2, spec.geometry.act, p, dz, g, &dx);
    return dx;
  };
  const nt::matrix from_w0 = dx_with(w0->params);
  const nt::matrix from_w1 = dx_with(w1->params);
  ASSERT_FALSE(same_bits(from_w0, from_w1)) << "the two weight versions give the same dX";
  EXPECT_EQ(prev_log->at(1).batch, 2u);
  EXPECT_TRUE(same_bits(prev_log->at(1).m, stashing ? from_w0 : from_w1))
      << (stashing ? "stashing on: dX must come from the forward-time weights"
                   : "stashing off: dX must come from the current weights");
}

INSTANTIATE_TEST_SUITE_P(Slice, WeightStashing, ::testing::Values(true, false));

} // namespace
} // namespace actor_tests
