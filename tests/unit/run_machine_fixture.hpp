// The run machine's test fixture: a recording backend stands in for the
// coordinator actor, a fake clock for time. Shared by the router's, the
// round's and the recovery's tests (each its own test binary).
#pragma once

#include "test_support.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "nettorrent/run_machine.hpp"

namespace nt = nettorrent;

namespace {

using phase = nt::run_machine::phase;
using step = nt::run_machine::round_step;
using test_support::error_of;

/// One command the machine issued.
struct command {
  std::string what; ///< "spawn", "wire", "resume", "validate", "collect", "exchange", "stats"
  std::uint64_t step = 0;
  nt::actor_key key;
  std::uint32_t replica = 0;
  std::uint32_t layer = 0;
  std::size_t node = 0;
};

class recorder : public nt::run_backend {
public:
  std::vector<command> commands;
  std::vector<std::string> lines;
  std::vector<nt::round_summary> rounds;
  std::optional<nt::run_result> result;
  std::vector<nt::worker_position> seeks;
  /// The weights and the policy state (its one part, the outer momentum) of
  /// every exchange command.
  struct outer_command {
    nt::dense_params theta;
    nt::dense_params velocity;
    std::size_t parts = 0;
  };
  std::vector<outer_command> outer_in;
  std::vector<bool> exchange_moments; ///< per exchange command: the slices send their moments
  std::vector<nt::layer_state> restored; ///< the state of every restore command
  std::vector<nt::round_payload> applied; ///< the payload of every apply command
  std::vector<std::pair<std::uint32_t, std::uint32_t>> validate_parts; ///< (part, parts)
  std::vector<nt::recovery_summary> recoveries;
  std::vector<std::shared_ptr<const nt::run_state>> saved;
  int finished_calls = 0;
  int stops = 0;

  void spawn(std::uint64_t s, std::size_t node, const nt::actor_key& a, std::uint32_t) override {
    commands.push_back({"spawn", s, a, 0, 0, node});
  }
  void wire(std::uint64_t s, const nt::actor_key& a) override {
    commands.push_back({"wire", s, a});
  }
  void resume(std::uint32_t r) override { commands.push_back({"resume", 0, {}, r}); }
  void validate(std::uint64_t s, std::uint32_t r, std::uint32_t part,
                std::uint32_t parts) override {
    commands.push_back({"validate", s, {}, r});
    validate_parts.emplace_back(part, parts);
  }
  void collect(std::uint64_t s, std::uint32_t l, std::uint32_t r) override {
    commands.push_back({"collect", s, {}, r, l});
  }
  void exchange(std::uint64_t s, std::uint32_t l, std::uint32_t best, nt::sync_policy,
                nt::dense_params theta, nt::policy_state st, bool moments) override {
    commands.push_back({"exchange", s, {}, best, l});
    exchange_moments.push_back(moments);
    const std::size_t parts = st.parts.size();
    outer_in.push_back(
        {std::move(theta), parts > 0 ? std::move(st.parts[0]) : nt::dense_params{}, parts});
  }
  void query_stats(std::uint64_t s, const nt::actor_key& a) override {
    commands.push_back({"stats", s, a});
  }
  void apply(std::uint64_t s, std::uint32_t l, std::uint32_t r,
             const nt::round_payload& p) override {
    commands.push_back({"apply", s, {}, r, l});
    applied.push_back(p);
  }
  void restore(std::uint64_t s, std::uint32_t l, std::uint32_t r,
               const nt::layer_state& st) override {
    commands.push_back({"restore", s, {}, r, l});
    restored.push_back(st);
  }
  void pause(std::uint64_t s, std::uint32_t r) override { commands.push_back({"pause", s, {}, r}); }
  void seek(std::uint64_t s, std::uint32_t r, const nt::worker_position& p) override {
    commands.push_back({"seek", s, {}, r});
    seeks.push_back(p);
  }
  void stop(const nt::actor_key& a) override { commands.push_back({"stop", 0, a}); }
  void release(std::size_t node) override { commands.push_back({"release", 0, {}, 0, 0, node}); }
  void settle(std::uint64_t s) override { commands.push_back({"settle", s, {}}); }
  void recovered(const nt::recovery_summary& r) override { recoveries.push_back(r); }
  void save(std::shared_ptr<const nt::run_state> st) override { saved.push_back(std::move(st)); }
  void round_done(const nt::round_summary& r, bool) override { rounds.push_back(r); }
  void log(const std::string& line) override { lines.push_back(line); }
  void finished(nt::run_result&& r) override {
    ++finished_calls;
    result = std::move(r);
  }
  void stop_all() override { ++stops; }

  /// The commands named `what` issued since the last take(), removed from the log.
  std::vector<command> take(const std::string& what) {
    std::vector<command> out;
    std::vector<command> rest;
    for (auto& c : commands)
      (c.what == what ? out : rest).push_back(c);
    commands = std::move(rest);
    return out;
  }
};

/// 2 layers (16-8-4), `replicas` replicas, one slice per layer, policy
/// best: the round that scores every replica first and then exchanges
/// (average and outer score the synced model after the exchange:
/// OuterRunMachine, AverageRunMachine).
inline nt::run_config small_config(std::size_t replicas) {
  nt::run_config c;
  c.model.layers = {16, 8, 4};
  c.topology.replicas = replicas;
  c.topology.slices = {1};
  c.topology.policy = nt::sync_policy::best;
  c.training.keep_best = false;
  c.training.target_accuracy = 0;
  c.training.progress_interval = 0;
  c.system.registration_timeout = 5;
  return c;
}

inline nt::layer_state some_layer(float v) {
  nt::layer_state s;
  s.params.w = nt::matrix::Constant(2, 2, v);
  s.params.b = nt::row_vector::Constant(2, v);
  return s;
}

class RunMachine : public ::testing::Test {
protected:
  void make(nt::run_config c, std::vector<std::size_t> placement = {},
            std::vector<std::string> nodes = {}) {
    cfg = std::move(c);
    m.emplace(
        cfg, rec, [this] { return clock; }, /*verbose=*/true, std::move(placement),
        std::move(nodes));
  }

  void register_all() {
    for (const auto& a : m->layout().actors()) {
      if (a.kind != nt::actor_kind::coordinator) {
        EXPECT_TRUE(m->on_registered(a)) << nt::to_string(a);
      }
    }
  }

  /// Registers, wires and starts training.
  void start() {
    register_all();
    for (const auto& w : rec.take("wire"))
      m->on_wired(w.step, w.key);
    m->on_run_requested();
    ASSERT_EQ(m->current_phase(), phase::training);
  }

  /// Registers every actor the nodes were asked to spawn, wires them and
  /// starts training (a cluster run: the machine has a placement).
  void start_spawned() {
    for (const auto& sp : rec.take("spawn")) {
      m->on_registered(sp.key, 0);
      m->on_spawned(sp.step, sp.key);
    }
    for (const auto& w : rec.take("wire"))
      m->on_wired(w.step, w.key);
    m->on_run_requested();
    ASSERT_EQ(m->current_phase(), phase::training);
  }

  /// Every replica reports a barrier (finished = last; on_grid: a full
  /// sync interval since the last round; ends_next: the epochs end before
  /// the next sync point).
  void barrier_all(std::uint64_t samples, bool last, bool on_grid = true, bool ends_next = false) {
    for (std::uint32_t r = 0; r < cfg.topology.replicas; ++r) {
      nt::barrier_report b;
      b.replica = r;
      b.samples = samples;
      b.epoch = 1;
      b.finished = last;
      b.on_grid = on_grid;
      b.ends_next = ends_next;
      b.loss_sum = 1.0;
      b.loss_samples = 10;
      b.position.samples = samples;
      m->on_barrier(b);
    }
  }

  /// The replicas in `which` report a barrier at `samples` (their current
  /// incarnation).
  void barrier_all_at(std::uint64_t samples, bool last, const std::vector<std::uint32_t>& which) {
    for (std::uint32_t r : which) {
      nt::barrier_report b;
      b.replica = r;
      b.incarnation = m->incarnation(r);
      b.samples = samples;
      b.epoch = 1;
      b.finished = last;
      b.position.samples = samples;
      m->on_barrier(b);
    }
  }

  /// Answers every pending validate with accuracy acc[r].
  void score(const std::vector<double>& acc) {
    for (const auto& v : rec.take("validate"))
      m->on_scored(v.step, v.replica, nt::replica_score{1.0 - acc[v.replica], acc[v.replica]});
  }

  void answer_collects() {
    for (const auto& c : rec.take("collect"))
      m->on_collected(c.step, c.layer, c.replica, some_layer(static_cast<float>(c.layer)));
  }

  /// Answers every pending exchange (the leaders' computation), then every
  /// apply of its result; `bytes` per answer.
  void exchange_all(std::uint64_t bytes = 1) {
    for (const auto& e : rec.take("exchange"))
      m->on_exchanged(e.step, e.layer, some_layer(9.0f), bytes);
    for (const auto& r : rec.take("apply"))
      m->on_restored(r.step, r.layer, r.replica, bytes);
  }

  void answer_stats() {
    for (const auto& c : rec.take("stats"))
      m->on_stats(c.step, c.key, nt::peer_counters{1, 0, 0, {}});
  }

  nt::run_config cfg;
  recorder rec;
  double clock = 100;
  std::optional<nt::run_machine> m;
};

/// Drives a recovery from the settle timer to the end: answers pauses with
/// `paused` samples, registers and acknowledges every respawn, wire,
/// restore and seek. Returns the keys respawned.
inline std::vector<nt::actor_key> recover(nt::run_machine& m, recorder& rec, std::uint64_t paused) {
  auto settle = rec.take("settle");
  EXPECT_FALSE(settle.empty());
  if (settle.empty())
    return {};
  m.on_settled(settle.back().step);
  for (const auto& p : rec.take("pause")) {
    nt::worker_position pos;
    pos.samples = paused;
    m.on_paused(p.step, p.replica, pos);
  }
  rec.take("stop");
  std::vector<nt::actor_key> spawned;
  for (const auto& sp : rec.take("spawn")) {
    const bool leader = sp.key.kind == nt::actor_kind::swarm_leader;
    EXPECT_TRUE(m.on_registered(sp.key, leader ? 0 : m.incarnation(sp.key.replica)))
        << nt::to_string(sp.key);
    m.on_spawned(sp.step, sp.key);
    spawned.push_back(sp.key);
  }
  for (const auto& w : rec.take("wire"))
    m.on_wired(w.step, w.key);
  for (const auto& r : rec.take("restore"))
    m.on_restored(r.step, r.layer, r.replica, 1);
  for (const auto& sk : rec.take("seek"))
    m.on_seeked(sk.step, sk.replica);
  return spawned;
}

/// The outer-policy run of small_config(2): keep_best, a run checkpoint
/// every round.
inline nt::run_config outer_config() {
  auto c = small_config(2);
  c.topology.policy = nt::sync_policy::outer;
  c.training.keep_best = true;
  c.training.checkpoint_every = 1;
  return c;
}

class OuterRunMachine : public RunMachine {
protected:
  /// A state of layer l of small_config (16-8-4) with every weight `w` and
  /// every first moment `m`.
  static nt::layer_state layer_of(std::uint32_t l, float w, float m = 0) {
    const Eigen::Index in = l == 0 ? 16 : 8;
    const Eigen::Index out = l == 0 ? 8 : 4;
    nt::layer_state s;
    s.params.w = nt::matrix::Constant(in, out, w);
    s.params.b = nt::row_vector::Constant(out, w);
    s.w_state.m.assign(static_cast<std::size_t>(in * out), m);
    return s;
  }

  /// Answers every pending exchange as an outer leader: replica r's state
  /// of layer l has weights base + l (the same for every replica) and
  /// moments 10 r (its own); the new momentum is vel + l.
  void outer_exchange_all(float base, float vel) {
    for (const auto& e : rec.take("exchange")) {
      std::vector<nt::layer_state> post;
      for (std::size_t r = 0; r < 2; ++r)
        post.push_back(
            layer_of(e.layer, base + static_cast<float>(e.layer), 10.0f * static_cast<float>(r)));
      m->on_exchanged(e.step, e.layer, std::move(post),
                      nt::policy_state{{layer_of(e.layer, vel + static_cast<float>(e.layer)).params}},
                      1);
    }
  }
  /// Answers every pending restore (rollback, resume) and apply (a round's result).
  void restore_all() {
    for (const char* what : {"restore", "apply"})
      for (const auto& r : rec.take(what))
        m->on_restored(r.step, r.layer, r.replica, 1);
  }
  /// Answers the pending validations (one part of the subset per replica)
  /// of `v`: part r scores 100 samples, `correct[r]` of them right, loss
  /// sum 100 - correct[r].
  void score_parts(const std::vector<command>& v, const std::vector<std::uint64_t>& correct) {
    for (const auto& c : v) {
      const auto k = correct[c.replica];
      m->on_scored(c.step, c.replica,
                   nt::replica_score{1.0 - static_cast<double>(k) / 100.0,
                                     static_cast<double>(k) / 100.0, 100.0 - static_cast<double>(k),
                                     k, 100});
    }
  }
};

using AverageRunMachine = OuterRunMachine;


} // namespace
