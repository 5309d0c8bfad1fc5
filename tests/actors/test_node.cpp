// The node actor (join, spawn on request, registration, hosts, stop) and the
// coordinator's admission of nodes, on the deterministic test coordinator.
#include "fixture.hpp"

#include "nettorrent/wire.hpp"
#include "node_actor.hpp"

namespace actor_tests {
namespace {

/// What a fake coordinator saw.
struct coordinator_log {
  std::vector<std::pair<std::string, std::uint64_t>> hellos;
  std::vector<std::pair<nt::actor_key, caf::actor>> registrations;
  std::vector<std::string> leaves; ///< nodes that asked to leave
};

/// Stands in for the coordinator as seen by a node actor: admits every
/// hello and records registrations; anything else is a test failure.
nt::coordinator_actor::behavior_type fake_coordinator(nt::coordinator_actor::pointer self,
                                                      std::shared_ptr<coordinator_log> log) {
  fail_on_unexpected(self, "fake coordinator");
  auto unexpected = [](const char* what) {
    ADD_FAILURE() << "fake coordinator received an unexpected " << what << " message";
  };
  return {
      [=](nt::atom::hello, const nt::node_name& id, std::uint64_t hash, std::uint32_t version,
          const nt::byte_mark& mark) {
        EXPECT_EQ(nt::check_wire(version, mark.data), "") << "the node actor announces this build";
        log->hellos.emplace_back(nt::to_string(id), hash);
        return nt::atom::ok::value;
      },
      [=](nt::atom::reg, const nt::actor_key& key, std::uint32_t incarnation, caf::actor& a) {
        EXPECT_EQ(incarnation, 0u);
        log->registrations.emplace_back(key, std::move(a));
      },
      [=](nt::atom::run) -> caf::result<nt::run_result> {
        unexpected("run");
        return caf::make_error(caf::sec::unexpected_message);
      },
      [=](nt::atom::deadline) { unexpected("deadline"); },
      [=](nt::atom::settled, std::uint64_t) { unexpected("settled"); },
      [=](nt::atom::watchdog) { unexpected("watchdog"); },
      [=](nt::atom::dump) { unexpected("dump"); },
      [=](nt::atom::halt, std::uint64_t, const std::string&) { unexpected("halt"); },
      [=](nt::atom::peers) -> caf::result<nt::node_states, bool> {
        unexpected("peers");
        return caf::make_error(caf::sec::unexpected_message);
      },
      [=](nt::atom::probe, const nt::probe_bytes&) -> caf::result<std::uint64_t> {
        unexpected("probe");
        return caf::make_error(caf::sec::unexpected_message);
      },
      [=](nt::atom::probe, const nt::node_name&, double, double, std::uint32_t) {
        unexpected("probe figures");
      },
      [=](nt::atom::barrier, const nt::barrier_report&) { unexpected("barrier"); },
      [=](nt::atom::leave, const nt::node_name& id) {
        // Accepts at once: the node's actors "moved", it may go.
        log->leaves.push_back(nt::to_string(id));
        self->send(caf::actor_cast<nt::node_actor>(self->current_sender()),
                   nt::atom::released::value);
        return std::string{};
      },
  };
}

class Node : public ActorTest {
protected:
  Node() {
    cfg = base_config(out_dir("run"));
    cfg.model.layers = {16, 8, 4};
    cfg.topology.replicas = 2;
    data = synthetic_splits(64, 32, 16, 4, 0.3f);
    log = std::make_shared<coordinator_log>();
    coord = spawn(fake_coordinator, log);
  }

  nt::node_actor make_node(std::shared_ptr<const nt::data_splits> d) {
    return spawn(nt::node, nt::node_spec{"n1", 0xabcdef, cfg, std::move(d), nullptr});
  }

  nt::run_config cfg;
  std::shared_ptr<const nt::data_splits> data;
  std::shared_ptr<coordinator_log> log;
  nt::coordinator_actor coord;
};

TEST_F(Node, JoinsSpawnsOnRequestRegistersReportsAndStops) {
  auto n = make_node(data);
  EXPECT_TRUE(ask_ok(n, nt::atom::join::value, coord));
  ASSERT_EQ(log->hellos.size(), 1u);
  EXPECT_EQ(log->hellos[0].first, "n1");
  EXPECT_EQ(log->hellos[0].second, 0xabcdefu);

  const std::vector<nt::actor_key> keys{nt::actor_key::worker(1), nt::actor_key::relay(0, 1),
                                        nt::actor_key::slice_of(1, 0, 0), nt::actor_key::leader(1)};
  std::vector<caf::actor> spawned;
  for (const auto& k : keys) {
    auto a = ask<caf::actor>(n, nt::atom::spawn::value, k, std::uint32_t{0});
    ASSERT_TRUE(a && *a) << nt::to_string(k);
    spawned.push_back(*a);
  }
  // Each one registered with the coordinator under its key, before the reply.
  ASSERT_EQ(log->registrations.size(), keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(log->registrations[i].first, keys[i]);
    EXPECT_EQ(log->registrations[i].second, spawned[i]);
  }
  const auto hosted = ask<std::vector<nt::actor_key>>(n, nt::atom::hosts::value);
  ASSERT_TRUE(hosted);
  EXPECT_EQ(*hosted, keys);

  for (const auto& a : spawned)
    self->monitor(a);
  EXPECT_TRUE(ask_ok(n, nt::atom::stop::value));
  sched.run();
  std::size_t downs = 0;
  for (bool more = true; more;)
    self->receive(
        [&](caf::down_msg& d) {
          EXPECT_EQ(d.reason, caf::exit_reason::user_shutdown);
          ++downs;
        },
        caf::after(std::chrono::milliseconds(0)) >> [&] { more = false; });
  EXPECT_EQ(downs, keys.size()) << "stop must end every hosted actor";
  const auto after = ask<std::vector<nt::actor_key>>(n, nt::atom::hosts::value);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->empty());
}

TEST_F(Node, RefusesToSpawnBeforeJoiningOrWhatIsNotInTheRun) {
  auto n = make_node(data);
  EXPECT_CONTAINS(ask_error(n, nt::atom::spawn::value, nt::actor_key::worker(0), std::uint32_t{0}),
                  "has not joined a run");
  EXPECT_TRUE(ask_ok(n, nt::atom::join::value, coord));
  EXPECT_CONTAINS(ask_error(n, nt::atom::join::value, coord), "joined a run already");
  EXPECT_CONTAINS(ask_error(n, nt::atom::spawn::value, nt::actor_key::worker(2), std::uint32_t{0}),
                  "worker r2");
  EXPECT_CONTAINS(
      ask_error(n, nt::atom::spawn::value, nt::actor_key::coordinator(), std::uint32_t{0}),
      "not an actor a node spawns");
  EXPECT_CONTAINS(
      ask_error(n, nt::atom::spawn::value, nt::actor_key::slice_of(0, 0, 1), std::uint32_t{0}),
      "slice r0 l0 i1");
  EXPECT_TRUE(log->registrations.empty()) << "nothing was spawned, nothing registered";
}

TEST_F(Node, ANodeWithoutDataCannotHostAShardWorker) {
  auto n = make_node(nullptr);
  EXPECT_TRUE(ask_ok(n, nt::atom::join::value, coord));
  EXPECT_CONTAINS(ask_error(n, nt::atom::spawn::value, nt::actor_key::worker(0), std::uint32_t{0}),
                  "loaded no data");
  // Everything else needs no data.
  EXPECT_TRUE(
      ask<caf::actor>(n, nt::atom::spawn::value, nt::actor_key::leader(0), std::uint32_t{0}));
}

TEST_F(Node, LeavesWithItsActorsWhenTheCoordinatorGoesDown) {
  auto n = make_node(data);
  EXPECT_TRUE(ask_ok(n, nt::atom::join::value, coord));
  auto a = ask<caf::actor>(n, nt::atom::spawn::value, nt::actor_key::relay(1, 2), std::uint32_t{0});
  ASSERT_TRUE(a);
  self->monitor(n);
  self->monitor(*a);
  self->send_exit(coord, caf::exit_reason::user_shutdown);
  sched.run();
  std::size_t downs = 0;
  for (bool more = true; more;)
    self->receive([&](caf::down_msg&) { ++downs; },
                  caf::after(std::chrono::milliseconds(0)) >> [&] { more = false; });
  EXPECT_EQ(downs, 2u) << "the node actor and its relay must both have ended";
}

TEST_F(Node, SigtermAsksTheCoordinatorToLeaveAndTheNodeQuitsOnceReleased) {
  auto n = make_node(data);
  EXPECT_TRUE(ask_ok(n, nt::atom::join::value, coord));
  auto a = ask<caf::actor>(n, nt::atom::spawn::value, nt::actor_key::relay(1, 2), std::uint32_t{0});
  ASSERT_TRUE(a);
  self->monitor(n);
  // A release from anyone but its coordinator is ignored.
  self->send(n, nt::atom::released::value);
  sched.run();
  EXPECT_TRUE(ask<std::vector<nt::actor_key>>(n, nt::atom::hosts::value));
  // What the process sends on SIGTERM.
  self->send(n, nt::atom::leave::value);
  sched.run();
  ASSERT_EQ(log->leaves, std::vector<std::string>{"n1"});
  std::optional<caf::error> reason;
  bool told = false;
  for (bool more = true; more;)
    self->receive(
        [&](caf::down_msg& d) {
          if (d.source == n.address())
            reason = d.reason;
        },
        [&](nt::atom::released) { told = true; },
        caf::after(std::chrono::milliseconds(0)) >> [&] { more = false; });
  ASSERT_TRUE(reason) << "the released node actor did not quit";
  EXPECT_EQ(*reason, caf::exit_reason::normal);
  EXPECT_TRUE(told) << "the process that joined was not told of the release";
}

class Admission : public ActorTest {
protected:
  Admission() {
    cfg = base_config(out_dir("run"));
    cfg.model.layers = {16, 8, 4};
    data = synthetic_splits(64, 32, 16, 4, 0.3f);
    const nt::run_layout layout{cfg};
    nt::coordinator_spec spec;
    spec.cfg = cfg;
    spec.verbose = false;
    spec.cluster_hash = 0x1234;
    spec.nodes = {"a", "b"};
    // Slices on "b", everything else on "a".
    for (const auto& k : layout.actors())
      spec.placement.push_back(k.kind == nt::actor_kind::neuron_slice ? 1 : 0);
    coord = spawn(nt::coordinator, spec);
  }

  nt::node_actor make_node(const std::string& id, std::uint64_t hash) {
    return spawn(nt::node, nt::node_spec{id, hash, cfg, data, nullptr});
  }

  /// The coordinator's answer to `peers`: one state per node, and whether
  /// training began ("u" unseen, "a" alive, "l" lost).
  std::string peers() {
    self->send(coord, nt::atom::peers::value);
    sched.run();
    std::string out = "(no reply)";
    self->receive(
        [&](const nt::node_states& v, bool began) {
          out.clear();
          for (const auto b : v.data)
            out += b == 0 ? 'u' : b == 1 ? 'a' : b == 2 ? 'l' : '?';
          out += began ? " training" : " registering";
        },
        [&](caf::error& err) { out = "error " + sys.render(err); },
        caf::after(std::chrono::milliseconds(0)) >> [] {});
    return out;
  }

  nt::run_config cfg;
  std::shared_ptr<const nt::data_splits> data;
  nt::coordinator_actor coord;
};

TEST_F(Admission, ANodeWithAnotherHashOrAnUnknownIdIsRefused) {
  const std::string other = ask_error(make_node("b", 0x9999), nt::atom::join::value, coord);
  EXPECT_CONTAINS(other, "refused node b");
  EXPECT_CONTAINS(other, nt::hash_hex(0x9999));
  EXPECT_CONTAINS(other, nt::hash_hex(0x1234));
  EXPECT_CONTAINS(ask_error(make_node("z", 0x1234), nt::atom::join::value, coord),
                  "not in the cluster description");
}

TEST_F(Admission, APeerOfAnotherByteOrderOrWireFormatIsRefused) {
  auto mark = nt::byte_order_mark();
  std::vector<std::uint8_t> reversed(mark.rbegin(), mark.rend());
  EXPECT_CONTAINS(ask_error(coord, nt::atom::hello::value, nt::to_node_name("a"),
                            std::uint64_t{0x1234}, nt::wire_version, nt::byte_mark{reversed}),
                  "other byte order");
  EXPECT_CONTAINS(ask_error(coord, nt::atom::hello::value, nt::to_node_name("a"),
                            std::uint64_t{0x1234}, nt::wire_version + 1, nt::byte_mark{mark}),
                  "wire format");
  EXPECT_CONTAINS(ask_error(coord, nt::atom::hello::value, nt::to_node_name("a"),
                            std::uint64_t{0x1234}, nt::wire_version,
                            nt::byte_mark{std::vector<std::uint8_t>{1, 2}}),
                  "malformed");
  // The same hello with this build's identity is admitted.
  EXPECT_TRUE(ask_ok(make_node("a", 0x1234), nt::atom::join::value, coord));
}

TEST_F(Admission, ALeaveComesOnlyFromTheNodeItselfAndNotBeforeTraining) {
  auto b = make_node("b", 0x1234);
  EXPECT_TRUE(ask_ok(b, nt::atom::join::value, coord));
  sched.run();
  // Asked by someone else (this test's actor) for node b: refused.
  const auto other = ask<std::string>(coord, nt::atom::leave::value, nt::to_node_name("b"));
  ASSERT_TRUE(other);
  EXPECT_CONTAINS(*other, "only for itself");
  EXPECT_CONTAINS(*ask<std::string>(coord, nt::atom::leave::value, nt::to_node_name("z")),
                  "not in this run");
  // Asked by b itself, before training began: refused, b goes on.
  self->monitor(b);
  self->send(b, nt::atom::leave::value);
  sched.run();
  EXPECT_TRUE(ask<std::vector<nt::actor_key>>(b, nt::atom::hosts::value))
      << "a refused leave must leave the node in the run";
}

TEST_F(Admission, EachNodeIsAskedForWhatThePlacementPutsOnItAndTheRunCompletes) {
  // `peers` tells a node about to join which nodes have (lost ones are "l":
  // LostNode.ARestartedNodeDoesNotWaitForALostOneToLinkTo runs processes).
  EXPECT_EQ(peers(), "uu registering");
  auto b = make_node("b", 0x1234);
  EXPECT_TRUE(ask_ok(b, nt::atom::join::value, coord));
  sched.run();
  EXPECT_EQ(peers(), "ua registering");
  const auto on_b = ask<std::vector<nt::actor_key>>(b, nt::atom::hosts::value);
  ASSERT_TRUE(on_b);
  ASSERT_EQ(on_b->size(), 2u);
  for (const auto& k : *on_b)
    EXPECT_EQ(k.kind, nt::actor_kind::neuron_slice);
  auto a = make_node("a", 0x1234);
  EXPECT_TRUE(ask_ok(a, nt::atom::join::value, coord));
  sched.run();
  const auto on_a = ask<std::vector<nt::actor_key>>(a, nt::atom::hosts::value);
  ASSERT_TRUE(on_a);
  EXPECT_EQ(on_a->size(), nt::run_layout{cfg}.size() - 1 - 2);
  EXPECT_EQ(peers(), "aa registering");
  // Everything registered and was wired: the run goes through.
  self->send(coord, nt::atom::run::value);
  sched.run();
  std::optional<nt::run_result> r;
  self->receive([&](nt::run_result& x) { r = std::move(x); },
                caf::after(std::chrono::milliseconds(0)) >> [] {});
  ASSERT_TRUE(r) << "the run did not reply";
  EXPECT_TRUE(r->ok) << r->error;
  EXPECT_EQ(r->samples, 64u);
  EXPECT_EQ(r->layers.size(), 2u);
}

} // namespace
} // namespace actor_tests
