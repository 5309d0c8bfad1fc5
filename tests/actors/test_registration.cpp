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
  /// the slice of layer `skip_layer` (0-based), if any, by hand: the test
  /// stands in for the node actor.
  nt::coordinator_actor spawn_all_but(std::optional<std::uint32_t> skip_layer) {
    nt::coordinator_spec spec;
    spec.cfg = cfg;
    spec.verbose = false;
    spec.train_samples = data->train.size();
    auto coord = spawn(nt::coordinator, spec);
    const nt::run_layout layout{cfg};
    for (const auto& key : layout.actors()) {
      if (key.kind == nt::actor_kind::coordinator
          || (skip_layer && key.kind == nt::actor_kind::neuron_slice && key.layer == *skip_layer))
        continue;
      auto a = nt::spawn_run_actor(sys, cfg, data, key);
      manual.push_back(a);
      self->send(coord, nt::atom::reg::value, key, std::uint32_t{0}, a);
    }
    return coord;
  }

  /// The run report if one is waiting, else nullopt.
  std::optional<nt::run_result> report_waiting() {
    std::optional<nt::run_result> out;
    self->receive([&](nt::run_result& r) { out = std::move(r); },
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
