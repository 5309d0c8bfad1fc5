// The shard worker: in-flight accounting when a batch's `done` (from the
// input relay) and its `loss` (from the loss relay) arrive in either order,
// and the barrier that waits for both; messages of another incarnation dropped
// as stale in the middle of it.
#include <limits>

#include "fixture.hpp"

namespace actor_tests {
namespace {

/// Stands in for the input relay as seen by a shard worker: records the
/// batches fed, and checks they carry the worker's incarnation `inc`.
nt::input_relay_actor::behavior_type
fake_input_relay(nt::input_relay_actor::pointer self,
                 std::shared_ptr<std::vector<std::uint64_t>> fed, std::uint32_t inc) {
  fail_on_unexpected(self, "fake input relay");
  auto unexpected = [](const char* what) {
    ADD_FAILURE() << "fake input relay received an unexpected " << what << " message";
  };
  return {
      [=](nt::atom::forward, std::uint32_t incarnation, std::uint64_t batch, bool train,
          const nt::shared_matrix& x) {
        EXPECT_EQ(incarnation, inc);
        EXPECT_TRUE(train);
        EXPECT_TRUE(static_cast<bool>(x));
        fed->push_back(batch);
      },
      [=](nt::atom::ack, std::uint32_t, std::uint64_t, std::uint32_t) { unexpected("ack"); },
      [=](nt::atom::wire, std::vector<nt::neuron_slice_actor>&, nt::batch_sink_actor) {
        unexpected("wire");
        return nt::atom::ok::value;
      },
      [=](nt::atom::stats) -> nt::drop_stats {
        unexpected("stats");
        return {};
      },
      [=](nt::atom::status) -> std::string {
        unexpected("status");
        return {};
      },
  };
}

/// Stands in for the input relay during validation passes: records each
/// forward's batch id and rows (never a training batch).
nt::input_relay_actor::behavior_type
validation_input_relay(nt::input_relay_actor::pointer self,
                       std::shared_ptr<std::vector<std::pair<std::uint64_t, long>>> fed) {
  fail_on_unexpected(self, "validation input relay");
  return {
      [=](nt::atom::forward, std::uint32_t, std::uint64_t batch, bool train,
          const nt::shared_matrix& x) {
        EXPECT_FALSE(train);
        fed->emplace_back(batch, static_cast<long>(x.get().rows()));
      },
      [=](nt::atom::ack, std::uint32_t, std::uint64_t, std::uint32_t) { ADD_FAILURE(); },
      [=](nt::atom::wire, std::vector<nt::neuron_slice_actor>&, nt::batch_sink_actor) {
        return nt::atom::ok::value;
      },
      [=](nt::atom::stats) -> nt::drop_stats { return {}; },
      [=](nt::atom::status) -> std::string { return {}; },
  };
}

/// Stands in for the loss relay as seen by a shard worker (labels of
/// incarnation `inc`, `rows` per batch; 0: any).
nt::loss_relay_actor::behavior_type fake_loss_relay(nt::loss_relay_actor::pointer self,
                                                    std::uint32_t inc, std::size_t rows) {
  fail_on_unexpected(self, "fake loss relay");
  auto unexpected = [](const char* what) {
    ADD_FAILURE() << "fake loss relay received an unexpected " << what << " message";
  };
  return {
      [=](nt::atom::block, std::uint32_t, std::uint64_t, bool, std::uint32_t,
          const nt::shared_matrix&) { unexpected("block"); },
      [=](nt::atom::labels, std::uint32_t incarnation, std::uint64_t, bool, nt::label_batch& ys) {
        EXPECT_EQ(incarnation, inc);
        if (rows > 0) {
          EXPECT_EQ(ys.data.size(), rows);
        }
      },
      [=](nt::atom::wire, std::vector<nt::neuron_slice_actor>&, nt::batch_sink_actor) {
        unexpected("wire");
        return nt::atom::ok::value;
      },
      [=](nt::atom::stats) -> nt::drop_stats {
        unexpected("stats");
        return {};
      },
      [=](nt::atom::status) -> std::string {
        unexpected("status");
        return {};
      },
  };
}

/// Stands in for the coordinator as seen by a shard worker.
nt::barrier_sink_actor::behavior_type
fake_coordinator(nt::barrier_sink_actor::pointer self,
                 std::shared_ptr<std::vector<nt::barrier_report>> reports) {
  fail_on_unexpected(self, "fake coordinator");
  return {[=](nt::atom::barrier, nt::barrier_report& r) { reports->push_back(r); }};
}

class Worker : public ActorTest {
protected:
  /// A worker of incarnation `incarnation` wired to fake relays and a fake coordinator.
  explicit Worker(std::uint32_t incarnation = 0) : inc(incarnation) {
    data = synthetic_splits(32, 16, 16, 4, 0.3f); // one replica: 32 samples, 4 batches of 8
    nt::worker_spec w;
    w.replica = 0;
    w.data = data;
    w.validation = data->validation;
    w.batch_size = 8;
    w.eval_batch_size = 1000;
    w.max_in_flight = 2;
    w.sync_every = 32;
    w.max_epochs = 1;
    w.seed = 3;
    w.incarnation = inc;
    worker = spawn(nt::shard_worker, w);
    auto input = spawn(fake_input_relay, fed, inc);
    auto loss = spawn(fake_loss_relay, inc, std::size_t{8});
    auto coord = spawn(fake_coordinator, reports);
    EXPECT_TRUE(ask_ok(worker, nt::atom::wire::value, input, loss, nt::barrier_sink_actor{coord}));
  }

  template <class... Ts>
  void deliver(Ts&&... xs) {
    ActorTest::deliver(worker, std::forward<Ts>(xs)...);
  }

  nt::drop_stats counts() {
    return ask<nt::drop_stats>(worker, nt::atom::stats::value).value_or(nt::drop_stats{99, 99});
  }
  std::uint64_t dropped() { return counts().dropped; }

  const std::uint32_t inc; ///< the worker's incarnation
  std::shared_ptr<const nt::data_splits> data;
  std::shared_ptr<std::vector<std::uint64_t>> fed = std::make_shared<std::vector<std::uint64_t>>();
  std::shared_ptr<std::vector<nt::barrier_report>> reports =
      std::make_shared<std::vector<nt::barrier_report>>();
  nt::shard_worker_actor worker;
};

TEST_F(Worker, DoneAndLossInEitherOrderAndTheBarrierWaitsForBoth) {
  deliver(nt::atom::resume::value);
  ASSERT_EQ(*fed, (std::vector<std::uint64_t>{0, 1})) << "max_in_flight = 2";
  // Batch 0: done before loss. The slot frees at done: batch 2 is fed.
  deliver(nt::atom::done::value, inc, std::uint64_t{0});
  EXPECT_EQ(fed->size(), 3u);
  deliver(nt::atom::loss::value, inc, std::uint64_t{0}, true, 1.0, std::uint64_t{4});
  // Batch 1: loss before done.
  deliver(nt::atom::loss::value, inc, std::uint64_t{1}, true, 2.0, std::uint64_t{4});
  EXPECT_EQ(fed->size(), 3u);
  deliver(nt::atom::done::value, inc, std::uint64_t{1});
  ASSERT_EQ(*fed, (std::vector<std::uint64_t>{0, 1, 2, 3}));
  // Both remaining batches done, their losses still due: no barrier yet.
  deliver(nt::atom::done::value, inc, std::uint64_t{3});
  deliver(nt::atom::done::value, inc, std::uint64_t{2});
  EXPECT_TRUE(reports->empty()) << "the barrier must wait for every loss";
  deliver(nt::atom::loss::value, inc, std::uint64_t{3}, true, 4.0, std::uint64_t{4});
  EXPECT_TRUE(reports->empty());
  deliver(nt::atom::loss::value, inc, std::uint64_t{2}, true, 8.0, std::uint64_t{4});
  ASSERT_EQ(reports->size(), 1u);
  const auto& r = reports->front();
  EXPECT_EQ(r.samples, 32u);
  EXPECT_DOUBLE_EQ(r.loss_sum, 15.0);
  EXPECT_EQ(r.loss_samples, 32u);
  EXPECT_TRUE(r.finished);
  EXPECT_EQ(dropped(), 0u);
  // Late duplicates are dropped and counted.
  deliver(nt::atom::loss::value, inc, std::uint64_t{2}, true, 8.0, std::uint64_t{4});
  deliver(nt::atom::done::value, inc, std::uint64_t{2});
  EXPECT_EQ(dropped(), 2u);
  EXPECT_EQ(reports->size(), 1u);
  EXPECT_TRUE(no_message_waiting());
}

// A worker of incarnation 3 gets done and loss messages of incarnations 2
// and 4 in the middle of the same script: each is dropped and counted as
// stale, frees no slot, adds no loss, and the run ends exactly as above.
class StaleWorker : public Worker {
protected:
  StaleWorker() : Worker(3) {}
};

TEST_F(StaleWorker, StaleDoneAndLossAreDroppedAndTheBatchesCompleteAsWithout) {
  const std::uint32_t old = inc - 1;
  const std::uint32_t newer = inc + 1;
  deliver(nt::atom::resume::value);
  ASSERT_EQ(*fed, (std::vector<std::uint64_t>{0, 1}));
  // A stale done would free batch 0's slot; a stale loss would count.
  deliver(nt::atom::done::value, old, std::uint64_t{0});
  deliver(nt::atom::loss::value, newer, std::uint64_t{0}, true, 100.0, std::uint64_t{4});
  EXPECT_EQ(fed->size(), 2u) << "a stale done freed a slot";
  deliver(nt::atom::done::value, inc, std::uint64_t{0});
  EXPECT_EQ(fed->size(), 3u);
  deliver(nt::atom::loss::value, inc, std::uint64_t{0}, true, 1.0, std::uint64_t{4});
  // A stale NaN loss would stop the run as diverged.
  deliver(nt::atom::loss::value, old, std::uint64_t{1}, true,
          std::numeric_limits<double>::quiet_NaN(), std::uint64_t{0});
  deliver(nt::atom::loss::value, inc, std::uint64_t{1}, true, 2.0, std::uint64_t{4});
  EXPECT_EQ(fed->size(), 3u);
  deliver(nt::atom::done::value, inc, std::uint64_t{1});
  ASSERT_EQ(*fed, (std::vector<std::uint64_t>{0, 1, 2, 3}));
  deliver(nt::atom::done::value, inc, std::uint64_t{3});
  deliver(nt::atom::done::value, inc, std::uint64_t{2});
  // Stale losses of the last two batches would complete the barrier early.
  deliver(nt::atom::loss::value, newer, std::uint64_t{3}, true, 4.0, std::uint64_t{4});
  deliver(nt::atom::loss::value, old, std::uint64_t{2}, true, 8.0, std::uint64_t{4});
  EXPECT_TRUE(reports->empty()) << "stale losses reached the barrier";
  deliver(nt::atom::loss::value, inc, std::uint64_t{3}, true, 4.0, std::uint64_t{4});
  EXPECT_TRUE(reports->empty());
  deliver(nt::atom::loss::value, inc, std::uint64_t{2}, true, 8.0, std::uint64_t{4});
  ASSERT_EQ(reports->size(), 1u);
  const auto& r = reports->front();
  EXPECT_EQ(r.samples, 32u);
  EXPECT_DOUBLE_EQ(r.loss_sum, 15.0);
  EXPECT_EQ(r.loss_samples, 32u);
  EXPECT_TRUE(r.finished);
  EXPECT_FALSE(r.diverged);
  const nt::drop_stats c = counts();
  EXPECT_EQ(c.dropped, 0u) << "stale messages are not malformed ones";
  EXPECT_EQ(c.stale, 5u);
  EXPECT_TRUE(no_message_waiting());
}

TEST_F(Worker, AValidationPartScoresItsShareOfTheSubsetAndReportsCounts) {
  // Policy outer scores the synced model once: replica r takes part r of R.
  auto fed_eval = std::make_shared<std::vector<std::pair<std::uint64_t, long>>>();
  auto w = spawn(nt::shard_worker, [&] {
    nt::worker_spec spec;
    spec.data = data;
    spec.validation = data->validation; // 16 samples
    spec.batch_size = 8;
    spec.eval_batch_size = 5;
    spec.sync_every = 32;
    spec.max_epochs = 1;
    return spec;
  }());
  auto coord = spawn(fake_coordinator, reports);
  EXPECT_TRUE(ask_ok(w, nt::atom::wire::value, spawn(validation_input_relay, fed_eval),
                     spawn(fake_loss_relay, 0u, std::size_t{0}), nt::barrier_sink_actor{coord}));
  EXPECT_CONTAINS(ask_error(w, nt::atom::validate::value, std::uint32_t{2}, std::uint32_t{2}),
                  "part 2 of 2 of 16 validation samples");
  EXPECT_CONTAINS(ask_error(w, nt::atom::validate::value, std::uint32_t{0}, std::uint32_t{0}),
                  "part 0 of 0");
  EXPECT_CONTAINS(ask_error(w, nt::atom::validate::value, std::uint32_t{0}, std::uint32_t{17}),
                  "part 0 of 17");
  // Part 1 of 2: samples 8..15 in batches of at most 5 (5 + 3 rows).
  self->send(w, nt::atom::validate::value, std::uint32_t{1}, std::uint32_t{2});
  sched.run();
  ASSERT_EQ(fed_eval->size(), 2u);
  EXPECT_EQ((*fed_eval)[0].second, 5);
  EXPECT_EQ((*fed_eval)[1].second, 3);
  ActorTest::deliver(w, nt::atom::loss::value, 0u, std::uint64_t{(*fed_eval)[1].first}, false, 1.5,
                     std::uint64_t{2});
  ActorTest::deliver(w, nt::atom::loss::value, 0u, std::uint64_t{(*fed_eval)[0].first}, false, 2.5,
                     std::uint64_t{4});
  std::optional<nt::replica_score> got;
  self->receive([&](nt::replica_score& x) { got = x; },
                caf::after(std::chrono::milliseconds(0)) >> [&] { ADD_FAILURE() << "no score"; });
  ASSERT_TRUE(got);
  EXPECT_EQ(got->samples, 8u);
  EXPECT_EQ(got->correct, 6u);
  EXPECT_DOUBLE_EQ(got->loss_sum, 4.0);
  EXPECT_DOUBLE_EQ(got->loss, 0.5);
  EXPECT_DOUBLE_EQ(got->accuracy, 0.75);
  // Asked again while a pass runs (the coordinator after a recovery): the
  // newest request waits for the running pass; one queued before it is
  // superseded and answered with an empty score (a late reply to the
  // coordinator); the running pass and the newest each get their own answer.
  fed_eval->clear();
  self->send(w, nt::atom::validate::value, std::uint32_t{0}, std::uint32_t{2});
  self->send(w, nt::atom::validate::value, std::uint32_t{0}, std::uint32_t{2});
  self->send(w, nt::atom::validate::value, std::uint32_t{1}, std::uint32_t{2});
  sched.run();
  ASSERT_EQ(fed_eval->size(), 2u) << "only the first pass is fed";
  std::optional<nt::replica_score> superseded;
  self->receive([&](nt::replica_score& x) { superseded = x; },
                caf::after(std::chrono::milliseconds(0)) >> [&] { ADD_FAILURE() << "no answer"; });
  ASSERT_TRUE(superseded);
  EXPECT_EQ(superseded->samples, 0u) << "the superseded request's empty score";
  for (const auto& [id, rows] : std::vector<std::pair<std::uint64_t, long>>(*fed_eval))
    ActorTest::deliver(w, nt::atom::loss::value, 0u, std::uint64_t{id}, false, 1.0,
                       std::uint64_t{1});
  ASSERT_EQ(fed_eval->size(), 4u) << "the queued pass starts when the first ends";
  for (std::size_t k = 2; k < 4; ++k)
    ActorTest::deliver(w, nt::atom::loss::value, 0u, std::uint64_t{(*fed_eval)[k].first}, false,
                       0.5, std::uint64_t{3});
  std::vector<nt::replica_score> answers;
  for (int k = 0; k < 2; ++k)
    self->receive([&](nt::replica_score& x) { answers.push_back(x); },
                  caf::after(std::chrono::milliseconds(0)) >>
                      [&] { ADD_FAILURE() << "no answer"; });
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(answers[0].correct, 2u) << "the first pass's own losses";
  EXPECT_EQ(answers[1].correct, 6u) << "the second pass's own losses";
  EXPECT_EQ(answers[1].samples, 8u);
  // Combined with part 0's, the whole subset's score.
  const auto all = nt::combine_parts({nt::replica_score{0, 0, 4.0, 2, 8}, *got});
  EXPECT_EQ(all.samples, 16u);
  EXPECT_DOUBLE_EQ(all.accuracy, 0.5);
  EXPECT_DOUBLE_EQ(all.loss, 0.5);
  EXPECT_TRUE(no_message_waiting());
}

} // namespace
} // namespace actor_tests
