#include "coordinator.hpp"

#include <array>
#include <cmath>
#include <sstream>
#include <thread>

#include <caf/all.hpp>

#include "checkpoint_writer.hpp"
#include "status.hpp"
#include "nettorrent/cluster.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/placement.hpp"
#include "nettorrent/wire.hpp"

namespace nettorrent {

namespace {

using self_ptr = coordinator_actor::stateful_pointer<coordinator_state>;

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// True for the errors a request gets when its receiver is gone: the
/// receiver's down message starts a recovery, so the reply is no failure.
bool receiver_lost(const caf::error& err) {
  return err == caf::sec::request_receiver_down || err == caf::exit_reason::remote_link_unreachable
         || err == caf::exit_reason::kill || err == caf::exit_reason::user_shutdown;
}

/// An error reply ends the run naming what failed, unless its receiver was lost.
auto failure_handler(self_ptr self, std::string what) {
  return [self, what = std::move(what)](caf::error& err) {
    if (receiver_lost(err))
      return;
    self->state.machine->on_failure(what + ": " + caf::to_string(err));
  };
}

/// Seconds between the stall watchdog's ticks: a quarter of the timeout,
/// within [0.25 s, 5 s].
caf::timespan watchdog_period(const run_config& cfg) {
  const double s = std::clamp(cfg.system.stall_timeout / 4, 0.25, 5.0);
  return std::chrono::duration_cast<caf::timespan>(std::chrono::duration<double>(s));
}

/// The machine's commands as messages.
class actor_backend : public run_backend {
public:
  explicit actor_backend(self_ptr self) : self_(self) {}

  void spawn(std::uint64_t step, std::size_t node, const actor_key& a,
             std::uint32_t incarnation) override {
    if (node >= st().nodes.size() || !st().nodes[node]) {
      st().machine->on_failure("cannot spawn " + describe(a) + ": no node actor for node "
                               + std::to_string(node));
      return;
    }
    const std::string what = "spawning " + describe(a) + " on node " + st().spec.nodes[node];
    self_->request(st().nodes[node], caf::infinite, atom::spawn::value, a, incarnation)
        .then([s = self_, step, a](const caf::actor&) { s->state.machine->on_spawned(step, a); },
              failure_handler(self_, what));
  }

  void wire(std::uint64_t step, const actor_key& a) override {
    const run_layout& lay = st().machine->layout();
    const std::size_t L = lay.layers();
    auto ok = [s = self_, step, a](atom::ok) { s->state.machine->on_wired(step, a); };
    const std::string what = "wiring " + describe(a);
    switch (a.kind) {
    case actor_kind::swarm_leader:
      self_
          ->request(handle<swarm_leader_actor>(a), caf::infinite, atom::wire::value,
                    slices(lay.swarm(a.layer)))
          .then(ok, failure_handler(self_, what));
      break;
    case actor_kind::shard_worker:
      self_
          ->request(handle<shard_worker_actor>(a), caf::infinite, atom::wire::value,
                    handle<input_relay_actor>(actor_key::relay(a.replica, 0)),
                    handle<loss_relay_actor>(actor_key::relay(a.replica, L)),
                    barrier_sink_actor{self_})
          .then(ok, failure_handler(self_, what));
      break;
    case actor_kind::relay: {
      const auto sink = batch_sink_actor{handle<shard_worker_actor>(actor_key::worker(a.replica))};
      switch (relay_role_of(a.boundary, L)) {
      case relay_role::input:
        self_
            ->request(handle<input_relay_actor>(a), caf::infinite, atom::wire::value,
                      slices(lay.slices_of(a.replica, 0)), sink)
            .then(ok, failure_handler(self_, what));
        break;
      case relay_role::hidden:
        self_
            ->request(handle<hidden_relay_actor>(a), caf::infinite, atom::wire::value,
                      slices(lay.slices_of(a.replica, a.boundary - 1)),
                      slices(lay.slices_of(a.replica, a.boundary)), sink)
            .then(ok, failure_handler(self_, what));
        break;
      case relay_role::loss:
        self_
            ->request(handle<loss_relay_actor>(a), caf::infinite, atom::wire::value,
                      slices(lay.slices_of(a.replica, L - 1)), sink)
            .then(ok, failure_handler(self_, what));
        break;
      }
      break;
    }
    case actor_kind::neuron_slice: {
      const auto next = handle<block_sink_actor>(actor_key::relay(a.replica, a.layer + 1));
      const auto& prev = raw(actor_key::relay(a.replica, a.layer));
      auto sl = handle<neuron_slice_actor>(a);
      if (a.layer == 0)
        self_
            ->request(sl, caf::infinite, atom::wire::value, caf::actor_cast<ack_sink_actor>(prev),
                      next)
            .then(ok, failure_handler(self_, what));
      else
        self_
            ->request(sl, caf::infinite, atom::wire::value, caf::actor_cast<grad_sink_actor>(prev),
                      next)
            .then(ok, failure_handler(self_, what));
      break;
    }
    case actor_kind::coordinator:
      break;
    }
  }

  void resume(std::uint32_t replica) override {
    self_->send(handle<shard_worker_actor>(actor_key::worker(replica)), atom::resume::value);
  }

  void validate(std::uint64_t step, std::uint32_t replica, std::uint32_t part,
                std::uint32_t parts) override {
    self_
        ->request(handle<shard_worker_actor>(actor_key::worker(replica)), caf::infinite,
                  atom::validate::value, part, parts)
        .then([s = self_, step,
               replica](replica_score& x) { s->state.machine->on_scored(step, replica, x); },
              failure_handler(self_, "validation pass"));
  }

  void collect(std::uint64_t step, std::uint32_t layer, std::uint32_t replica) override {
    self_
        ->request(handle<swarm_leader_actor>(actor_key::leader(layer)), caf::infinite,
                  atom::collect::value, replica)
        .then(
            [s = self_, step, layer, replica](layer_state& ls) {
              s->state.machine->on_collected(step, layer, replica, std::move(ls));
            },
            failure_handler(self_, "collecting a replica's weights"));
  }

  void exchange(std::uint64_t step, std::uint32_t layer, std::uint32_t best, sync_policy policy,
                dense_params theta, policy_state state, bool moments) override {
    sync_request req{outer_config::of(st().spec.cfg.topology), std::move(theta), std::move(state),
                     st().spec.cfg.topology.sync_coding, moments};
    self_
        ->request(handle<swarm_leader_actor>(actor_key::leader(layer)), caf::infinite,
                  atom::sync::value, best, static_cast<std::uint8_t>(policy), std::move(req))
        .then(
            [s = self_, step, layer](exchange_result& x) {
              s->state.machine->on_exchanged(step, layer, std::move(x.post), std::move(x.state),
                                             x.bytes, std::move(x.update));
            },
            failure_handler(self_, "sync round"));
  }

  void apply(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
             const round_payload& result) override {
    set_replica(step, layer, replica, atom::round_set::value, result,
                "handing a replica the sync round's result");
  }

  void restore(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
               const layer_state& state) override {
    set_replica(step, layer, replica, atom::restore::value, state, "setting a replica's weights");
  }

  /// Has layer l's leader hand replica r's slices `what` (a round's result
  /// or a rollback state); the reply is on_restored's.
  template <class Atom, class What>
  void set_replica(std::uint64_t step, std::uint32_t layer, std::uint32_t replica, Atom message,
                   const What& what, const char* doing) {
    self_
        ->request(handle<swarm_leader_actor>(actor_key::leader(layer)), caf::infinite, message,
                  replica, what)
        .then(
            [s = self_, step, layer, replica](std::uint64_t bytes) {
              s->state.machine->on_restored(step, layer, replica, bytes);
            },
            failure_handler(self_, doing));
  }

  void pause(std::uint64_t step, std::uint32_t replica) override {
    self_
        ->request(handle<shard_worker_actor>(actor_key::worker(replica)), caf::infinite,
                  atom::pause::value)
        .then([s = self_, step, replica](
                  const worker_position& p) { s->state.machine->on_paused(step, replica, p); },
              failure_handler(self_, "pausing a shard worker"));
  }

  void seek(std::uint64_t step, std::uint32_t replica, const worker_position& p) override {
    self_
        ->request(handle<shard_worker_actor>(actor_key::worker(replica)), caf::infinite,
                  atom::seek::value, p)
        .then([s = self_, step, replica](atom::ok) { s->state.machine->on_seeked(step, replica); },
              failure_handler(self_, "moving a shard worker to its last sync round"));
  }

  void stop(const actor_key& a) override {
    auto& s = st();
    auto& h = s.handles[s.machine->layout().index(a)];
    if (!h)
      return;
    s.index_of.erase(h.address());
    self_->send_exit(h, caf::exit_reason::user_shutdown);
    h = nullptr;
  }

  void release(std::size_t node) override {
    auto& s = st();
    if (node < s.nodes.size() && s.nodes[node])
      self_->send(s.nodes[node], atom::released::value);
    if (const auto* m = s.spec.metrics) {
      m->nodes_alive->Set(static_cast<double>(s.machine->nodes_alive()));
      m->nodes_left->Increment();
    }
  }

  void settle(std::uint64_t step) override {
    self_->delayed_send(self_, std::chrono::milliseconds(250), atom::settled::value, step);
  }

  void save(std::shared_ptr<const run_state> state) override {
    auto& s = st();
    if (!s.writer)
      s.writer = self_->spawn(checkpoint_writer, s.spec.cfg);
    self_->send(s.writer, atom::save::value, run_state_ref{std::move(state)});
  }

  void recovered(const recovery_summary& r) override {
    if (const auto* m = st().spec.metrics) {
      m->recoveries->Increment();
      m->recovery_seconds->Observe(r.seconds);
      m->samples_redone->Increment(static_cast<double>(r.samples_redone));
      m->nodes_alive->Set(static_cast<double>(r.nodes_alive));
    }
  }

  void query_stats(std::uint64_t step, const actor_key& a) override {
    const std::string what = "collecting the statistics of " + describe(a);
    auto counted = [s = self_, step, a](const drop_stats& x) {
      s->state.machine->on_stats(step, a, peer_counters{x.dropped, x.stale, 0, {}});
    };
    switch (a.kind) {
    case actor_kind::swarm_leader:
      self_->request(handle<swarm_leader_actor>(a), caf::infinite, atom::stats::value)
          .then(
              [s = self_, step, a](slice_stats& x) {
                s->state.machine->on_stats(
                    step, a,
                    peer_counters{x.dropped, x.stale, x.max_staleness, std::move(x.staleness)});
              },
              failure_handler(self_, what));
      break;
    case actor_kind::shard_worker:
      self_->request(handle<shard_worker_actor>(a), caf::infinite, atom::stats::value)
          .then(counted, failure_handler(self_, what));
      break;
    case actor_kind::relay:
      switch (relay_role_of(a.boundary, st().machine->layout().layers())) {
      case relay_role::input:
        self_->request(handle<input_relay_actor>(a), caf::infinite, atom::stats::value)
            .then(counted, failure_handler(self_, what));
        break;
      case relay_role::hidden:
        self_->request(handle<hidden_relay_actor>(a), caf::infinite, atom::stats::value)
            .then(counted, failure_handler(self_, what));
        break;
      case relay_role::loss:
        self_->request(handle<loss_relay_actor>(a), caf::infinite, atom::stats::value)
            .then(counted, failure_handler(self_, what));
        break;
      }
      break;
    case actor_kind::neuron_slice:
    case actor_kind::coordinator:
      break;
    }
  }

  void round_done(const round_summary& r, bool print) override {
    const auto& s = st();
    if (const auto* m = s.spec.metrics) {
      m->training_loss->Set(r.point.train_loss);
      // Under average and outer every replica holds the synced model: its
      // one score is each replica's.
      for (std::size_t i = 0; i < m->validation_accuracy.size(); ++i)
        if (r.synced && !r.scores.empty())
          m->validation_accuracy[i]->Set(r.scores.front().accuracy);
        else if (i < r.scores.size())
          m->validation_accuracy[i]->Set(r.scores[i].accuracy);
      m->best_validation_accuracy->Set(r.best_validation_accuracy);
      m->samples_per_second->Set(r.samples_per_second);
      m->epoch->Set(static_cast<double>(r.point.epoch));
      if (r.reached_target)
        m->time_to_target->Set(r.time_to_target);
      export_round_time(*m, r.round_time);
    }
    if (print) {
      const auto& tc = s.spec.cfg.training;
      caf::aout(self_) << progress_line(r, tc.max_epochs,
                                        static_cast<double>(s.spec.train_samples * tc.max_epochs))
                       << std::endl;
    }
  }

  void log(const std::string& line) override { caf::aout(self_) << line << std::endl; }

  void training_started() override {
    st().watchdog.moved = steady_seconds();
    st().watchdog.events = st().machine->events();
    self_->delayed_send(self_, watchdog_period(st().spec.cfg), atom::watchdog::value);
  }

  void finished(run_result&& result) override {
    const bool ok = result.ok;
    if (const auto* m = st().spec.metrics) // the last round's later steps
      export_round_time(*m, result.round_time);
    if (ok && result.end_state) {
      // The run checkpoint at the end: the last round's state (resuming
      // from it replays the last interval, exactly).
      result.run_checkpoint_path =
          st().spec.cfg.training.output_dir + "/" + run_checkpoint_name(result.end_state->round);
      save(result.end_state);
    }
    if (st().writer) // after the checkpoints it still has to write
      self_->send(st().writer, atom::stop::value);
    st().promise.deliver(std::move(result));
    // Nodes that watch the coordinator see `normal` only when the run succeeded.
    if (ok)
      self_->quit();
    else
      self_->quit(caf::exit_reason::user_shutdown);
  }

  void stop_all() override {
    for (const auto& h : st().handles)
      if (h)
        self_->send_exit(h, caf::exit_reason::user_shutdown);
  }

private:
  /// The round-step seconds already added to the metrics' counters.
  std::array<double, run_result::round_timing::parts> exported_round_time_{};

  /// Counters take increments: adds the growth of each step since last time.
  void export_round_time(const run_metrics& m, const run_result::round_timing& t) {
    for (std::size_t i = 0; i < t.seconds.size(); ++i)
      if (t.seconds[i] > exported_round_time_[i]) {
        m.round_step_seconds[i]->Increment(t.seconds[i] - exported_round_time_[i]);
        exported_round_time_[i] = t.seconds[i];
      }
  }

  coordinator_state& st() { return self_->state; }

  const caf::actor& raw(const actor_key& a) {
    return st().handles[st().machine->layout().index(a)];
  }

  template <class Handle>
  Handle handle(const actor_key& a) {
    return caf::actor_cast<Handle>(raw(a));
  }

  std::vector<neuron_slice_actor> slices(const std::vector<actor_key>& keys) {
    std::vector<neuron_slice_actor> out;
    for (const auto& k : keys)
      out.push_back(handle<neuron_slice_actor>(k));
    return out;
  }

  self_ptr self_;
};

/// Every registered actor of the run with its name and node, for a status query.
std::vector<std::pair<std::string, caf::actor>> status_targets(self_ptr self, bool workers_only) {
  auto& st = self->state;
  const auto& lay = st.machine->layout();
  std::vector<std::pair<std::string, caf::actor>> who;
  for (std::size_t i = 1; i < lay.size(); ++i) {
    const actor_key& a = lay.actors()[i];
    if (workers_only && a.kind != actor_kind::shard_worker)
      continue;
    const std::size_t n = st.machine->node_of(a);
    who.emplace_back(describe(a) + (n < st.spec.nodes.size() && st.spec.nodes.size() > 1
                                        ? " on node " + st.spec.nodes[n]
                                        : ""),
                     st.handles[i]);
  }
  return who;
}

/// Prints what the run and every actor wait for. With `act` (a stall), the
/// actors that do not answer are handed to the machine: a node none of whose
/// actors answers is lost; otherwise the machine rolls the stuck replicas back.
void dump_status(self_ptr self, bool act, const std::string& headline) {
  if (self->state.watchdog.dumping)
    return;
  self->state.watchdog.dumping = true;
  query_status(
      self, status_targets(self, false), std::chrono::seconds(5),
      [self, act, headline](std::vector<status_line>&& lines) {
        auto& st = self->state;
        st.watchdog.dumping = false;
        st.watchdog.moved = steady_seconds();
        if (st.machine->current_phase() == run_machine::phase::done)
          return;
        std::string out = "coordinator: " + headline + "\n" + st.machine->describe_state();
        const auto& lay = st.machine->layout();
        std::vector<std::size_t> silent;
        std::vector<std::size_t> asked(st.spec.nodes.size(), 0);
        std::vector<std::size_t> quiet(st.spec.nodes.size(), 0);
        std::string waiting;
        for (std::size_t k = 0; k < lines.size(); ++k) {
          const std::size_t i = k + 1; // layout index (0 is the coordinator)
          const std::size_t n = st.machine->node_of(lay.actors()[i]);
          out += "  " + lines[k].who + ": " + lines[k].what + "\n";
          if (n < asked.size())
            ++asked[n];
          if (!lines[k].answered && st.handles[i]) {
            silent.push_back(i);
            if (n < quiet.size())
              ++quiet[n];
            if (waiting.size() < 200)
              waiting += (waiting.empty() ? "" : ", ") + lines[k].who;
          }
        }
        std::vector<std::size_t> lost_nodes;
        for (std::size_t n = 0; n < asked.size(); ++n)
          if (asked[n] > 0 && quiet[n] == asked[n] && st.nodes[n]
              && st.nodes[n]->node() != self->node())
            lost_nodes.push_back(n);
        if (!lost_nodes.empty()) {
          out += "  not heard from:";
          for (auto n : lost_nodes)
            out += " node " + st.spec.nodes[n];
          out += "\n";
        }
        caf::aout(self) << out << std::flush;
        if (!act)
          return;
        if (!lost_nodes.empty()) {
          for (auto n : lost_nodes) {
            st.node_of.erase(st.nodes[n].address());
            st.machine->on_node_lost(n, "no answer to the stall watchdog");
          }
          return;
        }
        st.machine->on_stalled(silent, waiting.empty() ? "the actors listed above" : waiting);
      });
}

/// The stall watchdog's tick: polls every worker; when neither the machine
/// nor any worker moved for system.stall_timeout, dumps and acts.
void watchdog_tick(self_ptr self) {
  auto& s = self->state;
  const auto phase = s.machine->current_phase();
  if (phase == run_machine::phase::done)
    return;
  self->delayed_send(self, watchdog_period(s.spec.cfg), atom::watchdog::value);
  const double now = steady_seconds();
  const bool watched = phase == run_machine::phase::training
                       || phase == run_machine::phase::sync_round
                       || phase == run_machine::phase::recovering
                       || phase == run_machine::phase::finishing;
  if (!watched || s.machine->events() != s.watchdog.events) {
    s.watchdog.events = s.machine->events();
    s.watchdog.moved = now;
  }
  const auto tick =
      std::chrono::duration_cast<std::chrono::milliseconds>(watchdog_period(s.spec.cfg));
  query_status(self, status_targets(self, true), tick,
               [self](std::vector<status_line>&& lines) {
                 auto& st = self->state;
                 std::vector<std::string> now_status;
                 for (auto& l : lines)
                   now_status.push_back(l.answered ? std::move(l.what) : std::string{});
                 if (now_status != st.watchdog.workers)
                   st.watchdog.moved = steady_seconds();
                 st.watchdog.workers = std::move(now_status);
                 const double quiet = steady_seconds() - st.watchdog.moved;
                 if (quiet >= st.spec.cfg.system.stall_timeout && !st.watchdog.dumping)
                   dump_status(self, true,
                               "stall watchdog: no progress for " + std::to_string(int(quiet))
                                   + " s (system.stall_timeout = "
                                   + std::to_string(int(st.spec.cfg.system.stall_timeout))
                                   + "); what every actor waits for:");
               });
}

/// Registrations come from this process, or (cluster runs) from a node that
/// was admitted by `hello`; anonymous ones only in embedded runs.
bool trusted_sender(self_ptr self) {
  const auto& sender = self->current_sender();
  if (!sender)
    return self->state.spec.cluster_hash == 0;
  return sender->node() == self->node() || self->state.admitted.count(sender->node()) != 0;
}

} // namespace

namespace {

/// Plans placement "auto" on every node's start-up figures `all`, hands the
/// plan to the run machine (which asks the nodes for their actors) and to
/// every node, and returns it.
placement_plan place_on_figures(coordinator_actor::stateful_pointer<coordinator_state> self,
                                const std::vector<node_figures>& all) {
  auto& st = self->state;
  const placement_plan plan = plan_placement(*st.spec.cluster, &all);
  if (plan.nodes != st.spec.nodes)
    throw error("placement auto: the plan's nodes differ from the coordinator's");
  std::vector<std::size_t> placement;
  for (const auto& a : plan.actors())
    placement.push_back(plan.node_index(a));
  const std::string text = "placement planned on every node's start-up figures:\n" + describe(plan);
  std::istringstream lines{text};
  for (std::string line; std::getline(lines, line);)
    caf::aout(self) << "coordinator: " << line << std::endl;
  st.machine->place(std::move(placement));
  for (std::size_t n = 0; n < st.nodes.size(); ++n)
    if (st.nodes[n] && n != plan.coordinator_node) // this node printed it above
      self->send(st.nodes[n], atom::placed::value, text);
  return plan;
}

/// Keeps what node `node` measured at start; once every other node has,
/// plans placement "auto" on the figures (if the run waits for it) and
/// prints them with the cost model's predictions (once per run). This
/// node's own link is not measured: it counts as fast as the fastest
/// measured one.
void take_figures(coordinator_actor::stateful_pointer<coordinator_state> self,
                  const std::string& node, node_figures f) {
  auto& st = self->state;
  const auto it = std::find(st.spec.nodes.begin(), st.spec.nodes.end(), node);
  const auto& sender = self->current_sender();
  if (!st.spec.cluster || it == st.spec.nodes.end() || !sender
      || st.admitted.count(sender->node()) == 0 || !std::isfinite(f.mbit) || !(f.mbit >= 0)
      || !std::isfinite(f.gflops) || !(f.gflops > 0) || !(f.cores >= 1 && f.cores <= 4096)) {
    caf::aout(self) << "coordinator: ignored start-up figures from " << node
                    << " (not an admitted node of this run, or not finite and in range)"
                    << std::endl;
    return;
  }
  if (st.figures_printed)
    return; // a node that rejoins measures again
  const std::size_t N = st.spec.nodes.size();
  st.figures.resize(N);
  st.figures[static_cast<std::size_t>(it - st.spec.nodes.begin())] = f;
  const std::size_t me = plan_placement(*st.spec.cluster).coordinator_node;
  double fastest = 0;
  for (std::size_t i = 0; i < N; ++i) {
    if (i == me)
      continue;
    if (!st.figures[i])
      return;
    fastest = std::max(fastest, st.figures[i]->mbit);
  }
  std::vector<node_figures> all(N);
  for (std::size_t i = 0; i < N; ++i)
    all[i] = i != me ? *st.figures[i]
                     : node_figures{fastest, st.spec.own_gflops,
                                    static_cast<double>(
                                        std::max(1u, std::thread::hardware_concurrency()))};
  st.figures_printed = true;
  caf::aout(self) << "coordinator: every node's start-up figures (" << st.spec.nodes[me]
                  << ", this node, measures no link: taken as the fastest measured)" << std::endl;
  try {
    const placement_plan plan = st.machine->placement_held()
                                    ? place_on_figures(self, all)
                                    : plan_placement(*st.spec.cluster);
    std::vector<node_figures> used(N);
    std::string given;
    for (std::size_t i = 0; i < N; ++i) {
      used[i] = planning_figures(*st.spec.cluster, st.spec.nodes[i], &all[i]);
      const node_address* d = st.spec.cluster->find_node(st.spec.nodes[i]);
      if (d != nullptr && (d->bandwidth_mbit != 0 || d->cores != 0))
        given += (given.empty() ? "" : ", ") + st.spec.nodes[i];
    }
    if (!given.empty())
      caf::aout(self) << "coordinator: the description's nodes.bandwidth_mbit or nodes.cores "
                      << "stand for what was measured on " << given << std::endl;
    std::istringstream lines{measured_report(*st.spec.cluster, used, plan)};
    for (std::string line; std::getline(lines, line);)
      caf::aout(self) << "coordinator: " << line << std::endl;
  } catch (const nettorrent::error& e) {
    caf::aout(self) << "coordinator: no prediction on the start-up figures: " << e.what()
                    << std::endl;
    if (st.machine->placement_held()) {
      caf::aout(self) << "coordinator: placement auto falls back to the plan of the description"
                      << std::endl;
      st.machine->place(st.spec.placement);
    }
  }
}

} // namespace

coordinator_actor::behavior_type
coordinator(coordinator_actor::stateful_pointer<coordinator_state> self, coordinator_spec spec) {
  auto& s = self->state;
  s.spec = std::move(spec);
  s.backend = std::make_unique<actor_backend>(self);
  s.machine = std::make_unique<run_machine>(s.spec.cfg, *s.backend, steady_seconds, s.spec.verbose,
                                            s.spec.placement, s.spec.nodes);
  s.machine->set_rebalance_on_rejoin(s.spec.rebalance_on_rejoin);
  // Placement auto on several nodes waits for what every node measures at
  // start (take_figures).
  if (s.spec.cluster && planned_at_start(*s.spec.cluster) && !s.spec.placement.empty())
    s.machine->hold_placement();
  if (s.spec.resume)
    s.machine->resume_from(*s.spec.resume);
  s.handles.resize(s.machine->layout().size());
  s.nodes.resize(s.spec.nodes.size());
  self->delayed_send(self,
                     std::chrono::duration_cast<caf::timespan>(
                         std::chrono::duration<double>(s.spec.cfg.system.registration_timeout)),
                     atom::deadline::value);
  self->set_down_handler([=](caf::down_msg& msg) {
    auto& st = self->state;
    const std::string reason = caf::to_string(msg.reason);
    if (auto it = st.index_of.find(msg.source); it != st.index_of.end()) {
      const std::size_t i = it->second;
      st.index_of.erase(it);
      st.machine->on_lost(st.machine->layout().actors()[i], reason);
      return;
    }
    if (auto it = st.node_of.find(msg.source); it != st.node_of.end()) {
      const std::size_t n = it->second;
      st.node_of.erase(it);
      st.machine->on_node_lost(n, reason);
      return;
    }
    // Otherwise an actor the coordinator stopped itself (a rolled-back replica's).
  });
  return {
      [=](atom::hello, const node_name& name, std::uint64_t hash, std::uint32_t version,
          const byte_mark& mark) -> caf::result<atom::ok> {
        const std::string node = to_string(name);
        auto& st = self->state;
        const auto refuse = [&](std::string msg) -> caf::result<atom::ok> {
          caf::aout(self) << "coordinator: " << msg << std::endl;
          return caf::make_error(caf::sec::invalid_argument, std::move(msg));
        };
        if (const std::string why = check_wire(version, mark.data); !why.empty())
          return refuse("refused node " + node + ": " + why);
        if (hash != st.spec.cluster_hash)
          return refuse("refused node " + node + ": its cluster description hashes to "
                        + hash_hex(hash) + ", the coordinator's to "
                        + hash_hex(st.spec.cluster_hash));
        const auto it = std::find(st.spec.nodes.begin(), st.spec.nodes.end(), node);
        if (it == st.spec.nodes.end())
          return refuse("refused node " + node + ": it is not in the cluster description");
        const auto idx = static_cast<std::size_t>(it - st.spec.nodes.begin());
        const auto& sender = self->current_sender();
        if (!sender)
          return refuse("refused node " + node + ": an anonymous hello has no node actor");
        const bool rejoin = st.nodes[idx] && st.nodes[idx].address() != sender->address();
        if (rejoin && st.machine->node_alive(idx))
          return refuse("refused node " + node + ": a node of that name already joined");
        st.admitted.insert(sender->node());
        if (!st.nodes[idx] || rejoin) {
          st.nodes[idx] = caf::actor_cast<node_actor>(sender);
          st.node_of[st.nodes[idx].address()] = idx;
          self->monitor(st.nodes[idx]);
          if (st.spec.verbose && st.spec.nodes.size() > 1)
            caf::aout(self) << "coordinator: node " << node << " joined" << std::endl;
        }
        st.machine->on_node_joined(idx);
        if (rejoin && st.spec.metrics != nullptr)
          st.spec.metrics->nodes_alive->Set(static_cast<double>(st.machine->nodes_alive()));
        return atom::ok::value;
      },
      [=](atom::peers) -> caf::result<node_states, bool> {
        const auto& m = *self->state.machine;
        node_states v;
        for (std::size_t n = 0; n < self->state.spec.nodes.size(); ++n)
          v.data.push_back(static_cast<std::uint8_t>(
              !m.node_ever_joined(n) ? peer_state::unseen
                                     : m.node_alive(n) ? peer_state::alive : peer_state::lost));
        return {std::move(v), m.training_began()};
      },
      [=](atom::probe, const probe_bytes& b) { return static_cast<std::uint64_t>(b.data.size()); },
      [=](atom::leave, const node_name& name) -> std::string {
        auto& st = self->state;
        const std::string node = to_string(name);
        const auto it = std::find(st.spec.nodes.begin(), st.spec.nodes.end(), node);
        const auto& sender = self->current_sender();
        if (it == st.spec.nodes.end() || !sender)
          return "node " + node + " is not in this run";
        const auto idx = static_cast<std::size_t>(it - st.spec.nodes.begin());
        // Only the node itself, through its node actor, may ask.
        if (!st.nodes[idx] || sender->address() != st.nodes[idx].address()) {
          caf::aout(self) << "coordinator: refused a leave request for node " << node
                          << " that did not come from that node" << std::endl;
          return "a node may ask to leave only for itself";
        }
        std::string why = st.machine->on_leave_requested(idx);
        if (!why.empty())
          caf::aout(self) << "coordinator: node " << node << " cannot leave: " << why << std::endl;
        return why;
      },
      [=](atom::probe, const node_name& name, double mbit, double gflops, std::uint32_t cores) {
        take_figures(self, to_string(name), node_figures{mbit, gflops, static_cast<double>(cores)});
      },
      [=](atom::run) -> caf::result<run_result> {
        auto& st = self->state;
        if (st.machine->run_requested())
          return caf::make_error(caf::sec::invalid_argument, "run requested twice");
        st.promise = self->make_response_promise<run_result>();
        st.machine->on_run_requested();
        return st.promise;
      },
      [=](atom::reg, const actor_key& key, std::uint32_t incarnation, caf::actor& a) {
        auto& st = self->state;
        if (!trusted_sender(self)) {
          caf::aout(self) << "coordinator: refused a registration of " << describe(key)
                          << " from a node that was not admitted" << std::endl;
          return;
        }
        const auto idx = st.machine->layout().find(key);
        if (!a || !idx || st.handles[*idx]) {
          st.machine->on_registered(key, incarnation); // refused and counted
          if (a && (!idx || st.handles[*idx] != a))
            self->send_exit(a, caf::exit_reason::user_shutdown);
          return;
        }
        // Stored first: the last registration starts the wiring at once.
        st.handles[*idx] = a;
        if (!st.machine->on_registered(key, incarnation)) {
          st.handles[*idx] = nullptr;
          self->send_exit(a, caf::exit_reason::user_shutdown);
          return;
        }
        self->monitor(a);
        st.index_of[a.address()] = *idx;
      },
      [=](atom::deadline) {
        if (self->current_sender() != self->ctrl()) // only our own timer may end registration
          return;
        self->state.machine->on_registration_deadline();
      },
      [=](atom::barrier, barrier_report& r) { self->state.machine->on_barrier(r); },
      [=](atom::watchdog) {
        if (self->current_sender() != self->ctrl()) // only our own timer
          return;
        watchdog_tick(self);
      },
      [=](atom::halt, std::uint64_t token, const std::string& why) {
        if (token != self->state.spec.halt_token || token == 0) {
          caf::aout(self) << "coordinator: ignored a stop request without this process's token"
                          << std::endl;
          return;
        }
        self->state.machine->request_stop(why);
      },
      [=](atom::dump) {
        dump_status(self, false, "status dump (SIGUSR1); what every actor waits for:");
      },
      [=](atom::settled, std::uint64_t step) {
        if (self->current_sender() != self->ctrl()) // only our own timer
          return;
        self->state.machine->on_settled(step);
      },
  };
}

} // namespace nettorrent
