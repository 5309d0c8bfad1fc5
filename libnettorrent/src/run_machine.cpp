#include "nettorrent/run_machine.hpp"

#include <algorithm>
#include <cstdio>

#include "nettorrent/error.hpp"
#include "nettorrent/membership.hpp"

namespace nettorrent {

std::string progress_line(const round_summary& r, std::size_t max_epochs, double total_samples) {
  const auto& p = r.point;
  const double elapsed = r.elapsed;
  const double done = static_cast<double>(p.samples) / total_samples;
  return "epoch " + std::to_string(p.epoch) + "/" + std::to_string(max_epochs) + "  samples "
         + std::to_string(p.samples) + "  "
         + format_value("%.0f", static_cast<double>(p.samples) / elapsed) + " samples/s  loss "
         + format_value("%.4f", p.train_loss) + "  val acc "
         + format_value("%.4f", p.validation_accuracy)
         + (r.synced ? std::string{" (synced model, best "}
                     : " (replica " + std::to_string(r.best) + ", best ")
         + format_value("%.4f", r.best_validation_accuracy) + ")  round " + std::to_string(r.round)
         + "  elapsed " + format_duration(elapsed) + "  ETA "
         + format_duration(done > 0 ? elapsed / done * (1 - done) : -1);
}

run_machine::run_machine(run_config cfg, run_backend& backend, std::function<double()> clock,
                         bool verbose, std::vector<std::size_t> placement,
                         std::vector<std::string> node_names)
    : core_(std::move(cfg), backend, std::move(clock), verbose, std::move(placement),
            std::move(node_names)) {
  if (!core_.placement.empty())
    spawns_.start(core_.new_step(), core_.layout.size());
}

// --- resume -----------------------------------------------------------------

void run_machine::resume_from(const run_state& saved) {
  auto& c = core_;
  const std::size_t R = c.layout.replicas();
  // An elastic resume: the membership rules fit the kept round to R replicas.
  const run_state st = saved.positions.size() == R || saved.positions.empty()
                           ? saved
                           : change_replicas(saved, R, c.policy());
  if (st.positions.size() != saved.positions.size())
    c.say("coordinator: resuming with " + describe_replica_change(saved, st));
  if (st.positions.size() != R || (st.models.size() != 1 && st.models.size() != R))
    throw error("run checkpoint: it holds " + std::to_string(st.positions.size())
                + " data positions and " + std::to_string(st.models.size())
                + " models; this run has " + std::to_string(R) + " replicas");
  for (const auto& m : st.models)
    if (m.size() != c.layout.layers())
      throw error("run checkpoint: a model of " + std::to_string(m.size())
                  + " layers; this run has " + std::to_string(c.layout.layers()));
  resume_policy_state(st);
  for (std::size_t r = 0; r < R; ++r) {
    c.snapshot[r] = std::make_shared<const std::vector<layer_state>>(st.model_of(r));
    const auto& d = st.positions[r];
    c.positions[r] = worker_position{d.epoch, d.cursor, d.samples, d.next_batch, {}};
  }
  c.snapshot_round = st.round;
  c.result.sync_rounds = st.round;
  c.ledger.restore(st);
  c.result.samples = st.samples;
  c.result.epochs = st.epoch;
  c.best_layers = st.best_layers;
  c.best_samples = st.best_samples;
  c.best_epoch = st.best_epoch;
  c.resumed_elapsed = st.elapsed_seconds;
  c.deal = st.deal;
  c.retired_samples = st.retired_samples;
  c.resuming = true;
  c.commit_state();
}

void run_machine::resume_policy_state(const run_state& st) {
  auto& c = core_;
  const std::string policy_name{to_string(c.cfg.topology.policy)};
  const bool keeps = c.keeps_policy_state();
  if (keeps != !st.policy_states.empty())
    throw error(std::string{"run checkpoint: "}
                + (st.policy_states.empty()
                       ? "no sync policy state for this run's sync_policy " + policy_name
                       : "a sync policy state (an outer momentum), but this run's sync_policy is "
                             + policy_name + " with " + std::to_string(c.layout.replicas())
                             + " replicas"));
  if (!keeps)
    return;
  if (st.policy_states.size() != c.layout.layers())
    throw error("run checkpoint: a sync policy state of " + std::to_string(st.policy_states.size())
                + " layers; this run has " + std::to_string(c.layout.layers()));
  for (std::size_t l = 0; l < c.layout.layers(); ++l)
    if (const std::string why =
            c.policy().check_state(st.policy_states[l], st.models.front()[l].params);
        !why.empty())
      throw error("run checkpoint: layer " + std::to_string(l + 1) + " has " + why);
  c.policy_states = st.policy_states;
}

// --- registration and wiring ------------------------------------------------

bool run_machine::is_registered(const actor_key& a) const {
  const auto i = core_.layout.find(a);
  return i && core_.registered[*i];
}

std::string run_machine::missing_actors() const {
  const auto& c = core_;
  std::vector<std::string> names;
  for (std::size_t i = 1; i < c.layout.size(); ++i)
    if (!c.registered[i])
      names.push_back(describe(c.layout.actors()[i]));
  std::string out = std::to_string(names.size()) + " of " + std::to_string(expected())
                    + " actors did not register: ";
  for (std::size_t i = 0; i < names.size() && i < 20; ++i)
    out += (i > 0 ? ", " : "") + names[i];
  if (names.size() > 20)
    out += ", ...";
  std::string absent;
  for (std::size_t n = 0; n < c.node_joined.size(); ++n)
    if (!c.node_joined[n])
      absent += (absent.empty() ? "" : ", ") + c.node_names[n];
  if (!absent.empty())
    out += " (nodes that never joined: " + absent + ")";
  return out;
}

void run_machine::hold_placement() {
  if (core_.placement.empty() || std::find(core_.node_joined.begin(), core_.node_joined.end(), true)
                                     != core_.node_joined.end())
    throw error("run machine: a placement can be held only before any node joins");
  placement_held_ = true;
}

void run_machine::place(std::vector<std::size_t> placement) {
  auto& c = core_;
  if (!placement_held_)
    throw error("run machine: place() without a held placement");
  if (placement.size() != c.layout.size())
    throw error("run machine: the placement covers " + std::to_string(placement.size())
                + " actors, the layout has " + std::to_string(c.layout.size()));
  for (std::size_t n : placement)
    if (n >= c.node_names.size())
      throw error("run machine: the placement names node " + std::to_string(n) + " of "
                  + std::to_string(c.node_names.size()));
  placement_held_ = false;
  c.placement = std::move(placement);
  c.node_of = c.placement;
  if (c.over())
    return;
  for (std::size_t i = 1; i < c.layout.size(); ++i)
    if (c.node_joined[c.placement[i]])
      c.backend.spawn(spawns_.step(), c.placement[i], c.layout.actors()[i], 0);
}

void run_machine::on_node_joined(std::size_t node) {
  auto& c = core_;
  if (c.over() || node >= c.node_joined.size())
    return;
  if (c.node_joined[node]) {
    if (!c.alive[node]) { // a lost node started again: it takes actors at the next re-placement
      c.alive[node] = true;
      c.leaving[node] = false; // one that left may come back the same way
      c.rebalance_pending = true;
      c.say("coordinator: node " + c.node_names[node]
            + " rejoined; it hosts actors again from the next re-placement");
    }
    return;
  }
  c.node_joined[node] = true;
  if (placement_held_)
    return; // place() asks it
  for (std::size_t i = 1; i < c.layout.size(); ++i)
    if (c.placement[i] == node)
      c.backend.spawn(spawns_.step(), node, c.layout.actors()[i], 0);
}

void run_machine::on_spawned(std::uint64_t step, const actor_key& a) {
  const auto i = core_.layout.find(a);
  if (core_.phase == phase::recovering && recovery_.current() == recovery_step::respawning) {
    recovery_.on_spawned(step, i.value_or(no_slot));
    return;
  }
  if (!i || spawns_.reply(step, *i) == fanout::verdict::late)
    core_.late();
}

bool run_machine::on_registered(const actor_key& a, std::uint32_t incarnation) {
  auto& c = core_;
  const auto i = c.layout.find(a);
  const bool current = !i || a.kind == actor_kind::swarm_leader
                       || a.kind == actor_kind::coordinator
                       || incarnation == c.incarnation[a.replica];
  if (i && current && !c.registered[*i] && c.phase == phase::recovering && recovery_.replaces(*i)
      && !c.over()) {
    c.registered[*i] = true;
    ++c.registered_count;
    return true;
  }
  if (!i || !current || c.registered[*i] || c.phase != phase::registering || c.over()) {
    ++ignored_registrations_;
    c.backend.log("coordinator: ignored a duplicate, unknown or late registration of "
                  + (i ? describe(a) : to_string(a)));
    return false;
  }
  c.registered[*i] = true;
  if (++c.registered_count == expected())
    start_wiring();
  return true;
}

void run_machine::on_registration_deadline() {
  if (core_.phase == phase::registering && !core_.over())
    fail("registration deadline of " + format_value("%g", core_.cfg.system.registration_timeout)
         + "s passed: " + missing_actors()
         + (placement_held_ ? " (placement auto still waited for every node's start-up figures)"
                            : ""));
}

void run_machine::start_wiring() {
  auto& c = core_;
  c.phase = phase::wiring;
  const std::uint64_t step = c.new_step();
  wires_.start(step, c.layout.size());
  wires_.reply(step, 0); // the coordinator wires nothing
  for (std::size_t i = 1; i < c.layout.size(); ++i)
    c.backend.wire(step, c.layout.actors()[i]);
}

void run_machine::on_wired(std::uint64_t step, const actor_key& a) {
  const auto i = core_.layout.find(a);
  if (core_.phase == phase::recovering) {
    recovery_.on_wired(step, i.value_or(no_slot));
    return;
  }
  const auto v = core_.take(wires_, i && core_.phase == phase::wiring, step, i.value_or(no_slot));
  if (v == fanout::verdict::complete && !core_.over()) {
    core_.phase = phase::ready;
    maybe_start_training();
  }
}

// --- training ---------------------------------------------------------------

void run_machine::on_run_requested() {
  if (core_.run_requested)
    return;
  core_.run_requested = true;
  if (!core_.result.ok) { // failed before anyone asked
    deliver();
    return;
  }
  maybe_start_training();
}

void run_machine::maybe_start_training() {
  auto& c = core_;
  if (c.phase != phase::ready || !c.run_requested || c.over())
    return;
  c.phase = phase::training;
  c.t0 = c.clock() - c.resumed_elapsed;
  c.say("coordinator: " + std::to_string(expected()) + " actors registered and wired; training "
        + std::to_string(c.layout.replicas()) + " replicas");
  c.backend.training_started();
  if (c.resuming) { // put every replica where the run checkpoint left it
    recovery_.restore_checkpoint();
    return;
  }
  resume_all();
}

void run_machine::resume_all() {
  auto& c = core_;
  c.phase = phase::training;
  round_.step_to(round_step::none);
  c.barriers.assign(c.layout.replicas(), std::nullopt);
  c.at_barrier = 0;
  // After a round every replica holds the round's state: the moment to move
  // actors off a node that leaves, or back to a node that rejoined (nothing
  // is redone). Without round moments only a round that read them will do.
  std::vector<std::size_t> movers;
  std::size_t leavers = 0;
  const bool exact = c.cfg.topology.round_moments || round_.read_moments();
  const bool rebalance = exact && c.rebalance_pending && c.rebalance_on_rejoin;
  if (exact)
    for (std::size_t i = 1; i < c.layout.size(); ++i) {
      const bool off = c.leaving[c.node_of[i]];
      if (off || (rebalance && c.node_of[i] != c.place(i)))
        movers.push_back(i);
      leavers += off ? 1 : 0;
    }
  if (rebalance)
    c.rebalance_pending = false;
  std::vector<bool> moving(c.layout.replicas(), false);
  for (auto i : movers)
    if (c.layout.actors()[i].kind != actor_kind::swarm_leader)
      moving[c.layout.actors()[i].replica] = true;
  for (std::size_t r = 0; r < c.layout.replicas(); ++r)
    if (!moving[r])
      c.backend.resume(static_cast<std::uint32_t>(r));
  if (!movers.empty()) {
    if (leavers > 0)
      c.say("coordinator: " + std::to_string(leavers)
            + " actors move off the leaving nodes at this round; nothing is redone");
    if (movers.size() > leavers)
      c.say("coordinator: rebalancing: " + std::to_string(movers.size() - leavers)
            + " actors go back to the nodes the placement plan gives them");
    recovery_.rebalance(movers);
    return;
  }
  release_leavers();
}

std::string run_machine::on_leave_requested(std::size_t node) {
  auto& c = core_;
  const std::string name = node < c.node_names.size() ? c.node_names[node] : std::to_string(node);
  if (c.over())
    return "the run is over";
  if (node >= c.alive.size() || !c.alive[node])
    return "node " + name + " is not a live node of this run";
  if (!training_began())
    return "training has not begun: stop node " + name + " and start the run without it";
  if (c.stop_requested || c.phase == phase::finishing)
    return "the run ends at its next sync round anyway";
  if (node == c.node_of[0])
    return "node " + name
           + " holds the coordinator, which cannot move: SIGTERM to it ends the run at its next "
             "sync round";
  if (c.leaving[node])
    return ""; // asked again: it leaves at the next round already
  bool other = false;
  for (std::size_t n = 0; n < c.alive.size(); ++n)
    other = other || (n != node && c.alive[n] && !c.leaving[n]);
  if (!other)
    return "no other node is left to take its actors";
  c.leaving[node] = true;
  const std::size_t hosted = c.hosted_on(node);
  c.say("coordinator: node " + name + " asked to leave; its " + std::to_string(hosted)
        + " actors move to other nodes at the next sync round that reads the moments");
  if (hosted == 0)
    release_leavers();
  return "";
}

void run_machine::release_leavers() {
  auto& c = core_;
  for (std::size_t n = 0; n < c.leaving.size(); ++n) {
    if (!c.leaving[n] || c.hosted_on(n) > 0)
      continue;
    c.leaving[n] = false;
    c.alive[n] = false; // its node actor going down later is no loss
    ++c.result.nodes_left;
    c.say("coordinator: node " + c.node_names[n] + " left the run; it hosts nothing now");
    c.backend.release(n);
  }
}

void run_machine::on_barrier(const barrier_report& b) {
  auto& c = core_;
  if (c.over())
    return;
  if (b.diverged) {
    fail("training diverged: replica " + std::to_string(b.replica)
         + " saw a non-finite loss in epoch " + std::to_string(b.epoch) + " after "
         + std::to_string(b.samples)
         + " samples (lower optimizer.learning_rate); nothing was written");
    return;
  }
  const std::size_t R = c.layout.replicas();
  if (b.replica < R && b.incarnation != c.incarnation[b.replica]) {
    c.late(); // from a worker of a replica rolled back since
    return;
  }
  const bool open = c.phase == phase::training
                    || (c.phase == phase::recovering && b.replica < R
                        && !recovery_.rolls_back(b.replica));
  if (!open || b.replica >= R || c.barriers[b.replica]) {
    c.backend.log("coordinator: ignored an unexpected barrier report from replica "
                  + std::to_string(b.replica));
    return;
  }
  c.barriers[b.replica] = b;
  ++c.events;
  if (c.at_barrier == 0)
    c.drain_t0 = c.now();
  if (++c.at_barrier == R && c.phase == phase::training)
    barrier_complete();
}

void run_machine::barrier_complete() {
  core_.result.round_time.seconds[run_result::round_timing::draining] +=
      core_.now() - core_.drain_t0;
  round_.start();
}

void run_machine::on_scored(std::uint64_t step, std::uint32_t replica, const replica_score& s) {
  round_.on_scored(step, replica, s);
}

void run_machine::on_collected(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                               layer_state&& ls) {
  if (round_.on_collected(step, layer, replica, std::move(ls)))
    return;
  // The final collect of the best (or every) replica's layers.
  const std::size_t slot = finals_every_replica_ ? replica * core_.layout.layers() + layer : layer;
  const auto v = core_.take(finals_, core_.phase == phase::finishing, step, slot);
  if (!v)
    return;
  final_layers_[slot] = std::move(ls);
  if (v != fanout::verdict::complete || core_.over())
    return;
  if (finals_every_replica_)
    complete_moments(std::move(final_layers_));
  else
    core_.result.layers = std::move(final_layers_);
  start_stats();
}

void run_machine::complete_moments(std::vector<layer_state>&& all) {
  auto& c = core_;
  const std::size_t L = c.layout.layers();
  const std::size_t R = c.layout.replicas();
  // No training since the last round: every slice holds that round's
  // weights and the moments it left.
  if (!c.result.kept_best)
    c.result.layers.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(L));
  if (!c.committed || c.committed->round != c.snapshot_round)
    return; // the end state is an earlier round, read with its moments
  auto st = std::make_shared<run_state>(*c.committed);
  if (st->models.size() == 1)
    st->models.assign(R, st->models.front());
  for (std::size_t r = 0; r < R && r < st->models.size(); ++r)
    for (std::size_t l = 0; l < L; ++l) {
      auto& kept = st->models[r][l];
      kept.w_state = std::move(all[r * L + l].w_state);
      kept.b_state = std::move(all[r * L + l].b_state);
    }
  c.committed = std::move(st);
}

void run_machine::on_exchanged(std::uint64_t step, std::uint32_t layer, layer_state&& post,
                               std::uint64_t bytes) {
  std::vector<layer_state> one;
  one.push_back(std::move(post));
  on_exchanged(step, layer, std::move(one), policy_state{}, bytes);
}

void run_machine::on_exchanged(std::uint64_t step, std::uint32_t layer,
                               std::vector<layer_state>&& post, policy_state&& state,
                               std::uint64_t bytes, coded_params&& update) {
  round_.on_exchanged(step, layer, std::move(post), std::move(state), bytes, std::move(update));
}

void run_machine::on_restored(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                              std::uint64_t bytes) {
  if (core_.phase == phase::recovering)
    recovery_.on_restored(step, layer, replica);
  else
    round_.on_applied(step, layer, replica, bytes);
}

void run_machine::on_paused(std::uint64_t step, std::uint32_t replica, const worker_position& p) {
  recovery_.on_paused(step, replica, p);
}

void run_machine::on_seeked(std::uint64_t step, std::uint32_t replica) {
  recovery_.on_seeked(step, replica);
}

void run_machine::on_settled(std::uint64_t step) {
  recovery_.on_settled(step);
}

// --- the end ----------------------------------------------------------------

void run_machine::finish() {
  auto& c = core_;
  c.phase = phase::finishing;
  round_.step_to(round_step::none);
  c.result.seconds = c.now();
  c.result.samples_per_second = static_cast<double>(c.result.samples) / c.result.seconds;
  c.result.best_replica = round_.best();
  c.result.synced_model = c.scores_synced();
  const bool from_best_pass = c.cfg.training.keep_best && !c.best_layers.empty();
  c.result.kept_best = from_best_pass;
  c.result.saved_samples = from_best_pass ? c.best_samples : c.result.samples;
  c.result.saved_epoch = from_best_pass ? c.best_epoch : c.result.epochs;
  if (from_best_pass) {
    c.say("keeping the weights of the best validation pass (after "
          + std::to_string(c.best_samples) + " samples)");
    c.result.layers = c.best_layers;
  }
  if (c.scores_synced() && !c.cfg.topology.round_moments) {
    // The last round may have read no moments: the slices still hold them.
    start_final_collect(true);
    return;
  }
  if (from_best_pass) {
    start_stats();
    return;
  }
  if (c.scores_synced()) { // replica 0 holds the last round's result
    c.result.layers = *c.snapshot.front();
    start_stats();
    return;
  }
  start_final_collect();
}

void run_machine::start_final_collect(bool every_replica) {
  const std::size_t L = core_.layout.layers();
  const std::size_t R = every_replica ? core_.layout.replicas() : 1;
  finals_every_replica_ = every_replica;
  final_layers_.assign(R * L, layer_state{});
  const std::uint64_t step = core_.new_step();
  finals_.start(step, R * L);
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t l = 0; l < L; ++l)
      core_.backend.collect(step, static_cast<std::uint32_t>(l),
                            every_replica ? static_cast<std::uint32_t>(r) : round_.best());
}

void run_machine::start_stats() {
  auto& c = core_;
  // Leaders report their swarm's slices; relays and workers themselves.
  stats_keys_.clear();
  for (const auto& a : c.layout.actors())
    if (a.kind == actor_kind::swarm_leader || a.kind == actor_kind::relay
        || a.kind == actor_kind::shard_worker)
      stats_keys_.push_back(a);
  const std::uint64_t step = c.new_step();
  stats_.start(step, c.layout.size());
  for (std::size_t i = 0; i < c.layout.size(); ++i) {
    const auto k = c.layout.actors()[i].kind;
    if (k == actor_kind::coordinator || k == actor_kind::neuron_slice)
      stats_.reply(step, i); // not asked
  }
  for (const auto& a : stats_keys_)
    c.backend.query_stats(step, a);
}

void run_machine::on_stats(std::uint64_t step, const actor_key& a, const peer_counters& pc) {
  auto& c = core_;
  const auto i = c.layout.find(a);
  const auto v = c.take(stats_, i && c.phase == phase::finishing, step, i.value_or(no_slot));
  if (!v)
    return;
  c.result.dropped += pc.dropped;
  c.result.stale_dropped += pc.stale;
  c.result.max_staleness = std::max(c.result.max_staleness, pc.max_staleness);
  if (c.result.staleness.size() < pc.staleness.size())
    c.result.staleness.resize(pc.staleness.size(), 0);
  for (std::size_t k = 0; k < pc.staleness.size(); ++k)
    c.result.staleness[k] += pc.staleness[k];
  if (v == fanout::verdict::complete && !c.over()) {
    c.phase = phase::done;
    deliver();
  }
}

void run_machine::request_stop(const std::string& why) {
  if (core_.over() || core_.stop_requested)
    return;
  if (!training_began()) {
    fail("stopped by " + why + " before training began; nothing was written");
    return;
  }
  core_.stop_requested = true;
  core_.say("coordinator: " + why + ": stopping at the end of the next sync round");
}

void run_machine::fail(const std::string& what) {
  auto& c = core_;
  c.result.ok = false;
  c.result.error = what;
  c.result.layers.clear();
  c.say("coordinator: error: " + what);
  c.phase = phase::done;
  round_.step_to(round_step::none);
  c.backend.stop_all();
  if (c.run_requested)
    deliver();
}

void run_machine::deliver() {
  auto& c = core_;
  if (c.delivered)
    return;
  c.delivered = true;
  c.phase = phase::done;
  c.result.curve = c.ledger.curve();
  c.result.best_validation_accuracy = c.ledger.best();
  c.result.reached_target = c.ledger.reached_target();
  c.result.time_to_target = c.ledger.time_to_target();
  if (c.result.ok) {
    c.result.end_state = c.committed;
    c.backend.stop_all();
  }
  c.backend.finished(std::move(c.result));
}

// --- losses and stalls ------------------------------------------------------

void run_machine::on_failure(const std::string& what) {
  if (!core_.over())
    fail(what);
}

void run_machine::on_lost(const actor_key& a, const std::string& reason) {
  const auto i = core_.layout.find(a);
  if (core_.over() || !i || !core_.registered[*i])
    return; // the run is over, or an actor the machine stopped itself
  lose({*i}, reason);
}

void run_machine::on_node_lost(std::size_t node, const std::string& reason) {
  auto& c = core_;
  if (c.over() || node >= c.alive.size())
    return;
  if (!c.alive[node]) // released after a graceful leave: it hosts nothing
    return;
  if (!training_began()) {
    fail("lost node " + (node < c.node_names.size() ? c.node_names[node] : std::to_string(node))
         + " (" + reason + ") before training started");
    return;
  }
  c.alive[node] = false;
  c.leaving[node] = false; // its actors are lost, not moved: recovery places them
  std::vector<std::size_t> actors;
  for (std::size_t i = 1; i < c.layout.size(); ++i)
    if (c.node_of[i] == node && c.registered[i])
      actors.push_back(i);
  if (actors.empty()) {
    c.say("coordinator: lost node " + c.node_names[node] + " (" + reason
          + "); it hosted no actor");
    return;
  }
  lose(actors, reason + ", with node " + c.node_names[node]);
}

void run_machine::lose(const std::vector<std::size_t>& actors, const std::string& why) {
  if (!training_began()) {
    fail("lost " + describe(core_.layout.actors()[actors.front()]) + " (" + why
         + ") before training started: its node crashed, froze past the heartbeat timeout, or "
           "shut down");
    return;
  }
  if (core_.phase == phase::finishing && stats_.active()) {
    // The model is in hand: a lost actor only takes its counters with it.
    for (auto i : actors)
      if (stats_.reply(stats_.step(), i) == fanout::verdict::complete) {
        core_.phase = phase::done;
        deliver();
      }
    return;
  }
  if (core_.phase == phase::finishing)
    finals_ = fanout{}; // the final collect runs again after the recovery
  recovery_.lose(actors, why);
}

void run_machine::on_stalled(const std::vector<std::size_t>& silent,
                             const std::string& waiting_for) {
  auto& c = core_;
  if (c.over() || !training_began())
    return;
  ++c.stalls;
  if (++c.stalls_since_round > 2) {
    fail("stalled: no progress for system.stall_timeout = "
         + format_value("%g", c.cfg.system.stall_timeout)
         + " s three times without a completed round (rolled back twice); waiting for "
         + waiting_for);
    return;
  }
  if (!silent.empty()) {
    lose(silent, "stalled: no answer to the stall watchdog");
    return;
  }
  std::vector<std::size_t> stuck;
  for (std::size_t r = 0; r < c.layout.replicas(); ++r)
    if (c.phase != phase::training || !c.barriers[r])
      stuck.push_back(c.layout.index(actor_key::worker(static_cast<std::uint32_t>(r))));
  if (stuck.empty())
    return;
  lose(stuck,
       "stalled: no batch completed for " + format_value("%g", c.cfg.system.stall_timeout) + " s");
}

std::string run_machine::describe_state() const {
  const auto& c = core_;
  static constexpr const char* round_steps[] = {"none",       "scoring",  "keeping best",
                                                "exchanging", "applying", "snapshotting"};
  static constexpr const char* recovery_steps[] = {"none",       "settling", "pausing",
                                                   "respawning", "wiring",   "restoring"};
  std::string out = "run: phase " + std::string{to_string(c.phase)} + ", round step "
                    + round_steps[static_cast<int>(round_.current())] + ", recovery step "
                    + recovery_steps[static_cast<int>(recovery_.current())] + ", "
                    + std::to_string(c.result.sync_rounds) + " rounds done, "
                    + std::to_string(c.result.samples) + " samples\n";
  const std::pair<const char*, const fanout*> fans[] = {{"spawn", &spawns_},
                                                        {"wire", &wires_},
                                                        {"final collect", &finals_},
                                                        {"statistics", &stats_}};
  for (const auto& [name, f] : fans)
    describe_waiting(out, name, *f);
  round_.describe(out);
  recovery_.describe(out);
  out += "  replicas at the barrier:";
  for (std::size_t r = 0; r < c.barriers.size(); ++r)
    out += " " + std::to_string(r) + (c.barriers[r] ? "=yes" : "=no");
  out += "\n  nodes alive:";
  for (std::size_t n = 0; n < c.alive.size(); ++n)
    out += " " + (n < c.node_names.size() ? c.node_names[n] : std::to_string(n))
           + (c.alive[n] ? "=yes" : "=no");
  return out + "\n";
}

} // namespace nettorrent
