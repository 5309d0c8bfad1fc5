// The coordinator's registration deadline, on simulated time.
#include "fixture.hpp"

namespace actor_tests {
namespace {

using namespace std::chrono_literals;

class Registration : public ActorTest {
protected:
  Registration() {
    cfg = base_config(out_dir("run"));
    cfg.model.layers = {16, 8, 4}; // 2 layers
    cfg.topology.replicas = 1;
    cfg.topology.slices = {1};
    cfg.system.registration_timeout = 5;
    data = synthetic_splits(64, 32, 16, 4, 0.3f);
  }

  /// Spawns the coordinator and registers every actor of the run except
  /// the slice of layer `skip_layer` (0-based), if any.
  nt::coordinator_actor spawn_all_but(std::optional<std::uint32_t> skip_layer) {
    auto coord = spawn(nt::coordinator, nt::coordinator_spec{cfg, data, false});
    const std::uint32_t L = 2;
    for (std::uint32_t l = 0; l < L; ++l)
      self->send(coord, nt::atom::reg::value, l, spawn(nt::swarm_leader, nt::leader_spec{l, 1, 1}));
    nt::worker_spec w;
    w.replica = 0;
    w.data = data;
    w.shard = data->train;
    w.validation = data->validation;
    w.batch_size = cfg.training.batch_size;
    w.eval_batch_size = nt::eval_batch_size(cfg);
    w.max_in_flight = 1;
    w.sync_every = cfg.topology.sync_every;
    w.max_epochs = 1;
    w.seed = cfg.training.seed;
    self->send(coord, nt::atom::reg::value, std::uint32_t{0}, spawn(nt::shard_worker, w));
    for (std::uint32_t k = 0; k <= L; ++k) {
      nt::relay_spec rs;
      rs.prev_width = cfg.model.layers[k];
      if (k > 0) {
        rs.prev_cols = nt::split_columns(cfg.model.layers[k], 1);
      }
      rs.max_batch = nt::max_batch_rows(cfg);
      caf::actor relay;
      switch (nt::relay_role_of(k, L)) {
      case nt::relay_role::input:
        relay = caf::actor_cast<caf::actor>(spawn(nt::input_relay, rs));
        break;
      case nt::relay_role::hidden:
        relay = caf::actor_cast<caf::actor>(spawn(nt::hidden_relay, rs));
        break;
      case nt::relay_role::loss:
        relay = caf::actor_cast<caf::actor>(spawn(nt::loss_relay, rs));
        break;
      }
      self->send(coord, nt::atom::reg::value, std::uint32_t{0}, k, relay);
    }
    for (std::uint32_t l = 0; l < L; ++l) {
      if (skip_layer && *skip_layer == l)
        continue;
      nt::slice_spec ss;
      ss.geometry = nt::slice_of(cfg.model, l, 1, 0);
      ss.optimizer = cfg.optimizer;
      ss.seed = cfg.training.seed;
      ss.max_batch = nt::max_batch_rows(cfg);
      self->send(coord, nt::atom::reg::value, std::uint32_t{0}, l, std::uint32_t{0},
                 spawn(nt::neuron_slice, ss));
    }
    return coord;
  }

  /// The run report if one is waiting, else nullopt.
  std::optional<nt::run_report> report_waiting() {
    std::optional<nt::run_report> out;
    self->receive([&](nt::run_report& r) { out = std::move(r); },
                  [&](caf::error& err) { ADD_FAILURE() << "run failed: " << sys.render(err); },
                  caf::after(std::chrono::milliseconds(0)) >> [] {});
    return out;
  }

  nt::run_config cfg;
  std::shared_ptr<const nt::data_splits> data;
};

TEST_F(Registration, AMissingSliceAtTheDeadlineIsNamed) {
  auto coord = spawn_all_but(1u); // layer 2's slice never registers
  self->send(coord, nt::atom::run::value);
  sched.run();
  EXPECT_FALSE(report_waiting()) << "the run answered before the deadline";
  // Just before the deadline nothing happens.
  sched.advance_time(4900ms);
  sched.run();
  EXPECT_FALSE(report_waiting()) << "the deadline fired early";
  // Past it, the run fails naming what is missing.
  EXPECT_EQ(sched.advance_time(200ms), 1u);
  sched.run();
  const auto report = report_waiting();
  ASSERT_TRUE(report.has_value()) << "no run report after the registration deadline";
  EXPECT_FALSE(report->ok);
  EXPECT_CONTAINS(report->error, "deadline");
  EXPECT_CONTAINS(report->error, "neuron slice (replica 0, layer 2, slice 0)");
  EXPECT_CONTAINS(report->error, "1 of 8 actors did not register");
  EXPECT_EQ(report->error.find("layer 1"), std::string::npos) << report->error;
  EXPECT_EQ(report->error.find("shard worker"), std::string::npos) << report->error;
  EXPECT_EQ(report->error.find("relay"), std::string::npos) << report->error;
  EXPECT_EQ(report->error.find("leader"), std::string::npos) << report->error;
}

TEST_F(Registration, ARunRequestedAfterTheDeadlineStillHearsTheError) {
  auto coord = spawn_all_but(0u); // layer 1's slice never registers
  sched.run();
  EXPECT_EQ(sched.advance_time(5100ms), 1u);
  sched.run();
  EXPECT_FALSE(report_waiting()) << "a report arrived before anyone asked";
  self->send(coord, nt::atom::run::value);
  sched.run();
  const auto report = report_waiting();
  ASSERT_TRUE(report.has_value()) << "a late run request got no answer";
  EXPECT_FALSE(report->ok);
  EXPECT_CONTAINS(report->error, "neuron slice (replica 0, layer 1, slice 0)");
}

TEST_F(Registration, TheDeadlineDoesNotFireOnceEveryoneRegistered) {
  auto coord = spawn_all_but(std::nullopt);
  sched.run(); // registration and wiring
  sched.advance_time(60s);
  sched.run();
  self->send(coord, nt::atom::run::value);
  sched.run();
  const auto report = report_waiting();
  ASSERT_TRUE(report.has_value());
  EXPECT_TRUE(report->ok) << report->error;
  EXPECT_EQ(report->samples, 64u);
}

} // namespace
} // namespace actor_tests
