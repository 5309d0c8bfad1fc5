#include "nettorrent/run_machine.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "nettorrent/error.hpp"
#include "nettorrent/membership.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/optimizer.hpp"

namespace nettorrent {

namespace {

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

} // namespace

std::string_view to_string(run_machine::phase p) noexcept {
  switch (p) {
  case run_machine::phase::registering:
    return "registering";
  case run_machine::phase::wiring:
    return "wiring";
  case run_machine::phase::ready:
    return "ready";
  case run_machine::phase::training:
    return "training";
  case run_machine::phase::sync_round:
    return "sync round";
  case run_machine::phase::recovering:
    return "recovering";
  case run_machine::phase::finishing:
    return "finishing";
  case run_machine::phase::done:
    return "done";
  }
  return "?";
}

std::string progress_line(const round_summary& r, std::size_t max_epochs, double total_samples) {
  const auto& p = r.point;
  const double elapsed = r.elapsed;
  const double done = static_cast<double>(p.samples) / total_samples;
  return "epoch " + std::to_string(p.epoch) + "/" + std::to_string(max_epochs) + "  samples "
         + std::to_string(p.samples) + "  " + fmt("%.0f", static_cast<double>(p.samples) / elapsed)
         + " samples/s  loss " + fmt("%.4f", p.train_loss) + "  val acc "
         + fmt("%.4f", p.validation_accuracy)
         + (r.synced ? std::string{" (synced model, best "}
                     : " (replica " + std::to_string(r.best) + ", best ")
         + fmt("%.4f", r.best_validation_accuracy) + ")  round " + std::to_string(r.round)
         + "  elapsed " + format_duration(elapsed) + "  ETA "
         + format_duration(done > 0 ? elapsed / done * (1 - done) : -1);
}

// --- fanout -----------------------------------------------------------------

void fanout::start(std::uint64_t step, std::size_t n) {
  step_ = step;
  got_.assign(n, false);
  count_ = 0;
  active_ = n > 0;
}

fanout::verdict fanout::reply(std::uint64_t step, std::size_t slot) {
  if (!active_ || step != step_ || slot >= got_.size())
    return verdict::late;
  if (got_[slot])
    return verdict::duplicate;
  got_[slot] = true;
  if (++count_ < got_.size())
    return verdict::counted;
  active_ = false;
  return verdict::complete;
}

// --- run_machine ------------------------------------------------------------

namespace {

/// A slot no fan-out has: a reply for it is late.
constexpr std::size_t no_slot = std::numeric_limits<std::size_t>::max();

/// "r x c (bias n)", for messages about a layer's parameters.
std::string shape_of(const dense_params& p) {
  return std::to_string(p.w.rows()) + " x " + std::to_string(p.w.cols()) + " (bias "
         + std::to_string(p.b.size()) + ")";
}

} // namespace

std::optional<fanout::verdict> run_machine::take(fanout& f, bool open, std::uint64_t step,
                                                 std::size_t slot) {
  const auto v = open ? f.reply(step, slot) : fanout::verdict::late;
  if (v == fanout::verdict::late || v == fanout::verdict::duplicate) {
    late();
    return std::nullopt;
  }
  ++events_;
  return v;
}

run_machine::run_machine(run_config cfg, run_backend& backend, std::function<double()> clock,
                         bool verbose, std::vector<std::size_t> placement,
                         std::vector<std::string> node_names)
    : cfg_(std::move(cfg)), layout_(cfg_), backend_(backend), clock_(std::move(clock)),
      verbose_(verbose), placement_(std::move(placement)), node_names_(std::move(node_names)) {
  result_.actor_run = true;
  ledger_ = score_ledger{cfg_.training.target_accuracy};
  registered_.assign(layout_.size(), false);
  registered_[0] = true; // the coordinator is there by construction
  node_joined_.assign(node_names_.size(), false);
  if (!placement_.empty()) {
    if (placement_.size() != layout_.size())
      throw error("run machine: the placement covers " + std::to_string(placement_.size())
                  + " actors, the layout has " + std::to_string(layout_.size()));
    spawns_.start(next_step_++, layout_.size());
  }
  node_of_ = placement_.empty() ? std::vector<std::size_t>(layout_.size(), 0) : placement_;
  alive_.assign(std::max<std::size_t>(node_names_.size(), 1), true);
  lost_.assign(layout_.size(), false);
  replaced_.assign(layout_.size(), false);
  const std::size_t R = layout_.replicas();
  rolled_back_.assign(R, false);
  incarnation_.assign(R, 0);
  positions_.assign(R, worker_position{});
  round_positions_.assign(R, worker_position{});
  // Before the first round every replica holds the initial weights: a pure
  // function of the seed, the same whatever the slicing.
  auto initial = std::make_shared<std::vector<layer_state>>();
  const auto opt = make_optimizer(cfg_.optimizer);
  for (const auto& g : model_geometry(cfg_.model)) {
    layer_state ls;
    ls.params = init_dense(cfg_.training.seed, g);
    ls.w_state = opt->make_state(static_cast<std::size_t>(ls.params.w.size()));
    ls.b_state = opt->make_state(static_cast<std::size_t>(ls.params.b.size()));
    initial->push_back(std::move(ls));
  }
  snapshot_.assign(R, initial);
  if (keeps_policy_state())
    for (const auto& ls : *initial)
      policy_states_.push_back(policy().initial_state(ls.params));
  commit_state();
}

void run_machine::commit_state() {
  auto st = std::make_shared<run_state>();
  st->config_hash = cfg_.hash();
  st->config_text = cfg_.canonical();
  st->actor_run = true;
  st->round = snapshot_round_;
  st->samples = retired_samples_;
  st->retired_samples = retired_samples_;
  for (const auto& p : positions_) {
    if (!deal_.empty() && p.epoch == deal_.epoch)
      st->deal = deal_; // a replica still trains the dealt epoch
    st->samples += p.samples;
    st->epoch = std::max(st->epoch, p.epoch);
    data_position d;
    d.epoch = p.epoch;
    d.cursor = p.cursor;
    d.samples = p.samples;
    d.next_batch = p.next_batch;
    st->positions.push_back(d); // the order is replayed from the seed (epoch shuffles)
  }
  // The curve up to the kept round; validate_every > 1: the training loss
  // of unscored rounds since its last point.
  ledger_.save(*st, static_cast<std::size_t>(snapshot_round_));
  st->elapsed_seconds = st->curve.empty() ? 0 : st->curve.back().seconds;
  st->best_layers = best_layers_;
  st->best_samples = best_samples_;
  st->best_epoch = best_epoch_;
  bool shared = true;
  for (const auto& x : snapshot_)
    shared = shared && x == snapshot_.front();
  if (shared)
    st->models.push_back(*snapshot_.front());
  else
    for (const auto& x : snapshot_)
      st->models.push_back(*x);
  st->policy_states = policy_states_;
  committed_ = std::move(st);
}

void run_machine::resume_from(const run_state& saved) {
  const std::size_t R = layout_.replicas();
  // An elastic resume: the membership rules fit the kept round to R replicas.
  const run_state st = saved.positions.size() == R || saved.positions.empty()
                           ? saved
                           : change_replicas(saved, R, policy());
  if (st.positions.size() != saved.positions.size())
    say("coordinator: resuming with " + describe_replica_change(saved, st));
  if (st.positions.size() != R || (st.models.size() != 1 && st.models.size() != R))
    throw error("run checkpoint: it holds " + std::to_string(st.positions.size())
                + " data positions and " + std::to_string(st.models.size())
                + " models; this run has " + std::to_string(R) + " replicas");
  for (const auto& m : st.models)
    if (m.size() != layout_.layers())
      throw error("run checkpoint: a model of " + std::to_string(m.size())
                  + " layers; this run has " + std::to_string(layout_.layers()));
  const std::string policy_name{to_string(cfg_.topology.policy)};
  if (keeps_policy_state() != !st.policy_states.empty())
    throw error(std::string{"run checkpoint: "}
                + (st.policy_states.empty()
                       ? "no sync policy state for this run's sync_policy " + policy_name
                       : "a sync policy state (an outer momentum), but this run's sync_policy is "
                             + policy_name + " with " + std::to_string(R) + " replicas"));
  if (keeps_policy_state()) {
    if (st.policy_states.size() != layout_.layers())
      throw error("run checkpoint: a sync policy state of " + std::to_string(st.policy_states.size())
                  + " layers; this run has " + std::to_string(layout_.layers()));
    for (std::size_t l = 0; l < layout_.layers(); ++l)
      if (const std::string why =
              policy().check_state(st.policy_states[l], st.models.front()[l].params);
          !why.empty())
        throw error("run checkpoint: layer " + std::to_string(l + 1) + " has " + why);
    policy_states_ = st.policy_states;
  }
  for (std::size_t r = 0; r < R; ++r) {
    snapshot_[r] = std::make_shared<const std::vector<layer_state>>(st.model_of(r));
    const auto& d = st.positions[r];
    positions_[r] = worker_position{d.epoch, d.cursor, d.samples, d.next_batch, {}};
  }
  round_positions_ = positions_;
  snapshot_round_ = st.round;
  result_.sync_rounds = st.round;
  ledger_.restore(st);
  result_.samples = st.samples;
  result_.epochs = st.epoch;
  best_layers_ = st.best_layers;
  best_samples_ = st.best_samples;
  best_epoch_ = st.best_epoch;
  resumed_elapsed_ = st.elapsed_seconds;
  deal_ = st.deal;
  retired_samples_ = st.retired_samples;
  resuming_ = true;
  commit_state();
}

void run_machine::say(const std::string& line) {
  if (verbose_)
    backend_.log(line);
}

void run_machine::late() {
  ++result_.late_replies;
}

bool run_machine::is_registered(const actor_key& a) const {
  const auto i = layout_.find(a);
  return i && registered_[*i];
}

std::string run_machine::missing_actors() const {
  std::vector<std::string> names;
  for (std::size_t i = 1; i < layout_.size(); ++i)
    if (!registered_[i])
      names.push_back(describe(layout_.actors()[i]));
  std::string out = std::to_string(names.size()) + " of " + std::to_string(expected())
                    + " actors did not register: ";
  for (std::size_t i = 0; i < names.size() && i < 20; ++i)
    out += (i > 0 ? ", " : "") + names[i];
  if (names.size() > 20)
    out += ", ...";
  std::string absent;
  for (std::size_t n = 0; n < node_joined_.size(); ++n)
    if (!node_joined_[n])
      absent += (absent.empty() ? "" : ", ") + node_names_[n];
  if (!absent.empty())
    out += " (nodes that never joined: " + absent + ")";
  return out;
}

void run_machine::on_node_joined(std::size_t node) {
  if (over() || node >= node_joined_.size())
    return;
  if (node_joined_[node]) {
    if (!alive_[node]) { // a lost node started again: it takes actors at the next re-placement
      alive_[node] = true;
      rebalance_pending_ = true;
      say("coordinator: node " + node_names_[node]
          + " rejoined; it hosts actors again from the "
            "next re-placement");
    }
    return;
  }
  node_joined_[node] = true;
  for (std::size_t i = 1; i < layout_.size(); ++i)
    if (placement_[i] == node)
      backend_.spawn(spawns_.step(), node, layout_.actors()[i], 0);
}

void run_machine::on_spawned(std::uint64_t step, const actor_key& a) {
  const auto i = layout_.find(a);
  if (phase_ == phase::recovering && recovery_step_ == recovery_step::respawning) {
    if (const auto v = take(recovering_, i.has_value(), step, i.value_or(no_slot));
        v == fanout::verdict::complete)
      start_recovery_wiring();
    return;
  }
  if (!i || spawns_.reply(step, *i) == fanout::verdict::late)
    late();
}

bool run_machine::on_registered(const actor_key& a, std::uint32_t incarnation) {
  const auto i = layout_.find(a);
  const bool current = !i || a.kind == actor_kind::swarm_leader || a.kind == actor_kind::coordinator
                       || incarnation == incarnation_[a.replica];
  if (i && current && !registered_[*i] && phase_ == phase::recovering && replaced_[*i] && !over()) {
    registered_[*i] = true;
    ++registered_count_;
    return true;
  }
  if (!i || !current || registered_[*i] || phase_ != phase::registering || over()) {
    ++ignored_registrations_;
    backend_.log("coordinator: ignored a duplicate, unknown or late registration of "
                 + (i ? describe(a) : to_string(a)));
    return false;
  }
  registered_[*i] = true;
  if (++registered_count_ == expected())
    start_wiring();
  return true;
}

void run_machine::on_registration_deadline() {
  if (phase_ == phase::registering && !over())
    fail("registration deadline of " + fmt("%g", cfg_.system.registration_timeout)
         + "s passed: " + missing_actors());
}

void run_machine::start_wiring() {
  phase_ = phase::wiring;
  const std::uint64_t step = next_step_++;
  wires_.start(step, layout_.size());
  wires_.reply(step, 0); // the coordinator wires nothing
  for (std::size_t i = 1; i < layout_.size(); ++i)
    backend_.wire(step, layout_.actors()[i]);
}

void run_machine::on_wired(std::uint64_t step, const actor_key& a) {
  const auto i = layout_.find(a);
  if (phase_ == phase::recovering) {
    if (const auto v = take(recovering_, i && recovery_step_ == recovery_step::wiring, step,
                            i.value_or(no_slot));
        v == fanout::verdict::complete)
      start_restoring();
    return;
  }
  const auto v = take(wires_, i && phase_ == phase::wiring, step, i.value_or(no_slot));
  if (!v)
    return;
  if (v == fanout::verdict::complete && !over()) {
    phase_ = phase::ready;
    maybe_start_training();
  }
}

void run_machine::on_run_requested() {
  if (run_requested_)
    return;
  run_requested_ = true;
  if (!result_.ok) { // failed before anyone asked
    deliver();
    return;
  }
  maybe_start_training();
}

void run_machine::maybe_start_training() {
  if (phase_ != phase::ready || !run_requested_ || over())
    return;
  phase_ = phase::training;
  t0_ = clock_() - resumed_elapsed_;
  say("coordinator: " + std::to_string(expected()) + " actors registered and wired; training "
      + std::to_string(layout_.replicas()) + " replicas");
  backend_.training_started();
  if (resuming_) { // put every replica where the run checkpoint left it
    phase_ = phase::recovering;
    rolled_back_.assign(layout_.replicas(), true);
    barriers_.assign(layout_.replicas(), std::nullopt);
    at_barrier_ = 0;
    start_restoring();
    return;
  }
  resume_all();
}

void run_machine::step_to(round_step next) {
  using rt = run_result::round_timing;
  static_assert(static_cast<std::size_t>(round_step::scoring) == rt::scoring
                    && static_cast<std::size_t>(round_step::keeping_best) == rt::keeping_best
                    && static_cast<std::size_t>(round_step::exchanging) == rt::exchanging
                    && static_cast<std::size_t>(round_step::applying) == rt::applying
                    && static_cast<std::size_t>(round_step::snapshotting) == rt::snapshotting,
                "round steps index round_timing::seconds");
  const double t = now();
  if (round_step_ != round_step::none)
    result_.round_time.seconds[static_cast<std::size_t>(round_step_)] += t - step_t0_;
  round_step_ = next;
  step_t0_ = t;
}

void run_machine::resume_all() {
  phase_ = phase::training;
  step_to(round_step::none);
  barriers_.assign(layout_.replicas(), std::nullopt);
  at_barrier_ = 0;
  // After a round every replica holds the round's state: the moment to move
  // actors back to a node that rejoined (nothing is redone).
  std::vector<std::size_t> movers;
  if (rebalance_pending_ && rebalance_on_rejoin_)
    for (std::size_t i = 1; i < layout_.size(); ++i)
      if (node_of_[i] != place(i))
        movers.push_back(i);
  rebalance_pending_ = false;
  std::vector<bool> moving(layout_.replicas(), false);
  for (auto i : movers)
    if (layout_.actors()[i].kind != actor_kind::swarm_leader)
      moving[layout_.actors()[i].replica] = true;
  for (std::size_t r = 0; r < layout_.replicas(); ++r)
    if (!moving[r])
      backend_.resume(static_cast<std::uint32_t>(r));
  if (!movers.empty()) {
    say("coordinator: rebalancing: " + std::to_string(movers.size())
        + " actors go back to the nodes the placement plan gives them");
    rebalancing_ = true;
    lose(movers, "moved back to its planned node");
  }
}

void run_machine::on_barrier(const barrier_report& b) {
  if (over())
    return;
  if (b.diverged) {
    fail("training diverged: replica " + std::to_string(b.replica)
         + " saw a non-finite loss in epoch " + std::to_string(b.epoch) + " after "
         + std::to_string(b.samples)
         + " samples (lower optimizer.learning_rate); nothing was written");
    return;
  }
  if (b.replica < layout_.replicas() && b.incarnation != incarnation_[b.replica]) {
    late(); // from a worker of a replica rolled back since
    return;
  }
  const bool open = phase_ == phase::training
                    || (phase_ == phase::recovering && b.replica < rolled_back_.size() && !rolled_back_[b.replica]);
  if (!open || b.replica >= layout_.replicas() || barriers_[b.replica]) {
    backend_.log("coordinator: ignored an unexpected barrier report from replica "
                 + std::to_string(b.replica));
    return;
  }
  barriers_[b.replica] = b;
  ++events_;
  if (at_barrier_ == 0)
    drain_t0_ = now();
  if (++at_barrier_ == layout_.replicas() && phase_ == phase::training) {
    result_.round_time.seconds[run_result::round_timing::draining] += now() - drain_t0_;
    start_round();
  }
}

void run_machine::start_round() {
  round_start_.sync_rounds = result_.sync_rounds;
  round_start_.scores = ledger_.marked();
  round_start_.epochs = result_.epochs;
  round_start_.samples = result_.samples;
  round_start_.best_layers.clear();
  round_start_.best_samples = best_samples_;
  round_start_.best_epoch = best_epoch_;
  round_start_.last_progress = last_progress_;
  best_moved_ = false;
  phase_ = phase::sync_round;
  step_to(round_step::scoring);
  all_finished_ = true;
  bool on_grid = true;
  for (std::size_t r = 0; r < layout_.replicas(); ++r)
    round_positions_[r] = barriers_[r]->position;
  std::uint64_t samples = 0;
  for (const auto& b : barriers_) {
    samples += b->samples;
    ledger_.add_training_loss(b->loss_sum, b->loss_samples);
    result_.epochs = std::max(result_.epochs, b->epoch);
    all_finished_ = all_finished_ && b->finished;
    on_grid = on_grid && b->on_grid;
  }
  final_off_grid_ = all_finished_ && !on_grid;
  result_.samples = samples + retired_samples_;
  // topology.validate_every: only every k-th round is scored (the last one
  // always); the others go straight to the exchange. Their training loss
  // carries into the next scored round's curve point.
  const std::uint64_t k = cfg_.topology.validate_every;
  const bool scored_round = k <= 1 || all_finished_ || (result_.sync_rounds + 1) % k == 0;
  if (scores_synced()) {
    // Every replica holds the same weights after the exchange: score that
    // synced model once, after applying it (after_apply()).
    score_this_round_ = scored_round;
    improved_ = false;
    stop_after_round_ = false;
    start_exchange();
    return;
  }
  if (!scored_round) {
    ++result_.sync_rounds;
    improved_ = false;
    stop_after_round_ = false;
    after_keep_best();
    return;
  }
  replica_scores_.assign(layout_.replicas(), replica_score{});
  const std::uint64_t step = next_step_++;
  scores_.start(step, layout_.replicas());
  for (std::size_t r = 0; r < layout_.replicas(); ++r)
    backend_.validate(step, static_cast<std::uint32_t>(r), 0, 1);
}

void run_machine::on_scored(std::uint64_t step, std::uint32_t replica, const replica_score& s) {
  const auto v = take(scores_, phase_ == phase::sync_round && round_step_ == round_step::scoring,
                      step, replica);
  if (!v)
    return;
  // A score comes from a worker, possibly on another node: its counts must
  // add up before they are combined or compared.
  if (!std::isfinite(s.loss) || !std::isfinite(s.accuracy) || !std::isfinite(s.loss_sum)
      || s.correct > s.samples || (scores_synced() && s.samples == 0)) {
    fail("replica " + std::to_string(replica) + " sent an inconsistent validation score (loss "
         + fmt("%g", s.loss) + ", accuracy " + fmt("%g", s.accuracy) + ", "
         + std::to_string(s.correct) + " of " + std::to_string(s.samples) + " samples right)");
    return;
  }
  replica_scores_[replica] = s;
  if (v == fanout::verdict::complete && !over())
    scored();
}

void run_machine::scored() {
  const bool synced = scores_synced(); // the round was counted at its exchange
  if (synced)                          // the replicas scored parts of the subset on the same model
    replica_scores_ = {combine_parts(replica_scores_)};
  best_ = static_cast<std::uint32_t>(pick_best(replica_scores_));
  if (!synced)
    ++result_.sync_rounds;
  result_.best_replica = best_;
  const replica_score& s = replica_scores_[best_];
  const score_ledger::entry e =
      ledger_.book(result_.epochs, result_.samples, now(), s.loss, s.accuracy);
  improved_ = e.improved;
  stop_after_round_ = e.meets_target || all_finished_;
  report_round(e.point, synced);
  if (e.meets_target)
    say("reached target validation accuracy " + fmt("%g", cfg_.training.target_accuracy)
        + " in sync round " + std::to_string(result_.sync_rounds) + " after "
        + format_duration(e.point.seconds));
  keep_best_pass(synced);
}

void run_machine::report_round(const curve_point& p, bool synced) {
  round_summary r;
  r.round = result_.sync_rounds;
  r.best = best_;
  r.point = p;
  r.scores = replica_scores_;
  r.best_validation_accuracy = ledger_.best();
  r.samples_per_second = static_cast<double>(result_.samples) / std::max(p.seconds, 1e-9);
  r.reached_target = ledger_.reached_target();
  r.time_to_target = ledger_.time_to_target();
  r.synced = synced;
  const double t = now();
  r.elapsed = t;
  step_to(round_step_); // charge this round's scoring so far
  r.round_time = result_.round_time;
  const bool print = verbose_
                     && (ends_after_round() || last_progress_ < 0
                         || t - last_progress_ >= cfg_.training.progress_interval);
  if (print)
    last_progress_ = t;
  backend_.round_done(r, print);
}

void run_machine::keep_best_pass(bool synced) {
  const auto& tc = cfg_.training;
  if (synced) {
    // Replica 0 holds the round's result, which the snapshot has already:
    // keep_best and the final model need no collecting.
    if (tc.keep_best && improved_) {
      best_layers_ = *snapshot_.front();
      best_samples_ = result_.samples;
      best_epoch_ = result_.epochs;
    }
    end_synced_round();
    return;
  }
  if (tc.keep_best && improved_) {
    round_start_.best_layers = std::move(best_layers_);
    best_moved_ = true;
    best_samples_ = result_.samples;
    best_epoch_ = result_.epochs;
    step_to(round_step::keeping_best);
    collecting_final_ = false;
    collect_into_.assign(layout_.layers(), layer_state{});
    const std::uint64_t step = next_step_++;
    collects_.start(step, layout_.layers());
    for (std::size_t l = 0; l < layout_.layers(); ++l)
      backend_.collect(step, static_cast<std::uint32_t>(l), best_);
    return;
  }
  after_keep_best();
}

void run_machine::on_collected(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                               layer_state&& ls) {
  const bool snapshotting = phase_ == phase::sync_round && round_step_ == round_step::snapshotting;
  const bool open = snapshotting
                    || (phase_ == phase::sync_round && round_step_ == round_step::keeping_best)
                    || (phase_ == phase::finishing && collecting_final_);
  const std::size_t slot = snapshotting ? replica * layout_.layers() + layer : layer;
  const auto v = take(collects_, open, step, slot);
  if (!v)
    return;
  if (snapshotting) {
    snapshot_layers_[slot] = std::move(ls);
    if (v != fanout::verdict::complete || over())
      return;
    const std::size_t L = layout_.layers();
    for (std::size_t r = 0; r < layout_.replicas(); ++r)
      snapshot_[r] = std::make_shared<const std::vector<layer_state>>(
          std::make_move_iterator(snapshot_layers_.begin() + static_cast<std::ptrdiff_t>(r * L)),
          std::make_move_iterator(snapshot_layers_.begin() + static_cast<std::ptrdiff_t>((r + 1) * L)));
    commit_round();
    resume_all();
    return;
  }
  collect_into_[layer] = std::move(ls);
  if (v != fanout::verdict::complete || over())
    return;
  if (collecting_final_) {
    result_.layers = std::move(collect_into_);
    start_stats();
    return;
  }
  best_layers_ = std::move(collect_into_);
  after_keep_best();
}

void run_machine::after_keep_best() {
  if (ends_after_round()) {
    finish();
    return;
  }
  if (!policy().exchanges || layout_.replicas() == 1) {
    start_snapshot();
    return;
  }
  start_exchange();
}

void run_machine::start_snapshot() {
  // Nothing is exchanged: keep every replica's own layers as its rollback state.
  step_to(round_step::snapshotting);
  const std::size_t L = layout_.layers();
  snapshot_layers_.assign(layout_.replicas() * L, layer_state{});
  const std::uint64_t step = next_step_++;
  collects_.start(step, snapshot_layers_.size());
  for (std::size_t r = 0; r < layout_.replicas(); ++r)
    for (std::size_t l = 0; l < L; ++l)
      backend_.collect(step, static_cast<std::uint32_t>(l), static_cast<std::uint32_t>(r));
}

void run_machine::keep_round() {
  positions_ = round_positions_;
  snapshot_round_ = result_.sync_rounds;
}

void run_machine::publish_round() {
  stalls_since_round_ = 0;
  commit_state();
  const auto every = cfg_.training.checkpoint_every;
  if (every > 0 && snapshot_round_ % every == 0)
    backend_.save(committed_);
}

void run_machine::commit_round() {
  keep_round();
  publish_round();
}

void run_machine::after_apply() {
  if (!scores_synced()) {
    resume_all();
    return;
  }
  if (!score_this_round_) {
    end_synced_round();
    return;
  }
  step_to(round_step::scoring);
  const std::size_t R = layout_.replicas();
  replica_scores_.assign(R, replica_score{});
  const std::uint64_t step = next_step_++;
  scores_.start(step, R);
  for (std::size_t r = 0; r < R; ++r)
    backend_.validate(step, static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(r),
                      static_cast<std::uint32_t>(R));
}

void run_machine::end_synced_round() {
  // With this round's curve point and best pass; a last round off the sync
  // grid is kept for rollbacks but not published: the run state stays the
  // last round on the grid, which a resumed run with more epochs continues
  // exactly as a straight run does.
  if (!final_off_grid_)
    publish_round();
  if (ends_after_round()) {
    finish();
    return;
  }
  resume_all();
}

void run_machine::start_apply() {
  step_to(round_step::applying);
  const std::size_t L = layout_.layers();
  const std::uint64_t step = next_step_++;
  applies_.start(step, layout_.replicas() * L);
  std::vector<std::pair<std::uint32_t, std::uint32_t>> todo;
  for (std::size_t r = 0; r < layout_.replicas(); ++r)
    for (std::size_t l = 0; l < L; ++l) {
      // A policy that picks the best replica leaves that one as it is.
      if (policy().picks_best && r == best_) {
        applies_.reply(step, r * L + l);
        continue;
      }
      todo.emplace_back(static_cast<std::uint32_t>(l), static_cast<std::uint32_t>(r));
    }
  if (!applies_.active()) {
    after_apply();
    return;
  }
  for (const auto& [l, r] : todo)
    backend_.restore(step, l, r, (*snapshot_[r])[l]);
}

void run_machine::start_exchange() {
  step_to(round_step::exchanging);
  const std::size_t L = layout_.layers();
  exchanged_.assign(L, {});
  policy_states_next_.assign(keeps_policy_state() ? L : 0, policy_state{});
  const std::uint64_t step = next_step_++;
  exchanges_.start(step, L);
  for (std::size_t l = 0; l < L; ++l) {
    dense_params theta;
    policy_state state;
    if (keeps_policy_state()) { // theta: the last round's weights, the same in every replica
      theta = (*snapshot_.front())[l].params;
      state = policy_states_[l];
    }
    backend_.exchange(step, static_cast<std::uint32_t>(l), best_, cfg_.topology.policy,
                      std::move(theta), std::move(state));
  }
}

namespace {

bool same_weights(const dense_params& a, const dense_params& b) {
  return same_shape(a, b) && std::equal(a.w.data(), a.w.data() + a.w.size(), b.w.data())
         && std::equal(a.b.data(), a.b.data() + a.b.size(), b.b.data());
}

} // namespace

std::string run_machine::check_exchange(std::uint32_t layer, const std::vector<layer_state>& post,
                                        const policy_state& state) const {
  if (!scores_synced())
    return {};
  // The kept state of the last round has the layer's shape.
  const dense_params& layer_params = (*snapshot_.front())[layer].params;
  for (const auto& st : post)
    if (!same_shape(st.params, layer_params))
      return "weights of " + shape_of(st.params) + " for a layer of " + shape_of(layer_params);
  if (!keeps_policy_state()) // average: one mean for every replica
    return post.size() == 1
               ? std::string{}
               : std::to_string(post.size()) + " states (an average round gives every replica one)";
  if (std::string why = policy().check_state(state, layer_params); !why.empty())
    return why;
  // Theta: every replica continues from the same weights.
  for (const auto& st : post)
    if (!same_weights(st.params, post.front().params))
      return "different weights for different replicas (an outer round gives all the same)";
  return {};
}

void run_machine::on_exchanged(std::uint64_t step, std::uint32_t layer, layer_state&& post,
                               std::uint64_t bytes) {
  std::vector<layer_state> one;
  one.push_back(std::move(post));
  on_exchanged(step, layer, std::move(one), policy_state{}, bytes);
}

void run_machine::on_exchanged(std::uint64_t step, std::uint32_t layer,
                               std::vector<layer_state>&& post, policy_state&& state,
                               std::uint64_t bytes) {
  const auto v =
      take(exchanges_, phase_ == phase::sync_round && round_step_ == round_step::exchanging, step,
           layer);
  if (!v)
    return;
  const std::size_t R = layout_.replicas();
  if (post.size() != 1 && post.size() != R) {
    fail("the swarm leader of layer " + std::to_string(layer + 1) + " answered the sync round with "
         + std::to_string(post.size()) + " states for " + std::to_string(R) + " replicas");
    return;
  }
  if (const std::string why = check_exchange(layer, post, state); !why.empty()) {
    fail("the swarm leader of layer " + std::to_string(layer + 1) + " answered the sync round with "
         + why);
    return;
  }
  result_.sync_bytes += bytes;
  exchanged_[layer] = std::move(post);
  if (keeps_policy_state())
    policy_states_next_[layer] = std::move(state);
  if (v != fanout::verdict::complete || over())
    return;
  // Keep the round's result (the rollback state), then apply it.
  const std::size_t L = layout_.layers();
  bool shared = true;
  for (const auto& x : exchanged_)
    shared = shared && x.size() == 1;
  if (shared) { // every replica holds the same layers after the round
    auto all = std::make_shared<std::vector<layer_state>>();
    for (auto& x : exchanged_)
      all->push_back(std::move(x.front()));
    snapshot_.assign(R, std::move(all));
  } else {
    for (std::size_t r = 0; r < R; ++r) {
      auto mine = std::make_shared<std::vector<layer_state>>();
      for (std::size_t l = 0; l < L; ++l)
        mine->push_back(exchanged_[l].size() == 1 ? exchanged_[l].front()
                                                  : std::move(exchanged_[l][r]));
      snapshot_[r] = std::move(mine);
    }
  }
  exchanged_.clear();
  if (keeps_policy_state())
    policy_states_ = std::move(policy_states_next_);
  if (scores_synced()) {
    // The round counts from here; its curve point comes after the scoring,
    // so the run state is published at the round's end.
    ++result_.sync_rounds;
    keep_round();
  } else {
    commit_round();
  }
  start_apply();
}

void run_machine::on_restored(std::uint64_t step, std::uint32_t layer, std::uint32_t replica,
                              std::uint64_t bytes) {
  const std::size_t L = layout_.layers();
  if (phase_ == phase::recovering) {
    if (const auto v = take(recovering_, recovery_step_ == recovery_step::restoring, step,
                            replica * (L + 1) + layer);
        v == fanout::verdict::complete)
      finish_recovery();
    return;
  }
  const auto v = take(applies_, phase_ == phase::sync_round && round_step_ == round_step::applying,
                      step, replica * L + layer);
  if (!v)
    return;
  result_.sync_bytes += bytes;
  if (v == fanout::verdict::complete && !over())
    after_apply();
}

void run_machine::finish() {
  phase_ = phase::finishing;
  step_to(round_step::none);
  result_.seconds = now();
  result_.samples_per_second = static_cast<double>(result_.samples) / result_.seconds;
  result_.best_replica = best_;
  result_.synced_model = scores_synced();
  const bool from_best_pass = cfg_.training.keep_best && !best_layers_.empty();
  result_.kept_best = from_best_pass;
  result_.saved_samples = from_best_pass ? best_samples_ : result_.samples;
  result_.saved_epoch = from_best_pass ? best_epoch_ : result_.epochs;
  if (from_best_pass) {
    say("keeping the weights of the best validation pass (after " + std::to_string(best_samples_)
        + " samples)");
    result_.layers = best_layers_;
    start_stats();
    return;
  }
  if (scores_synced()) { // replica 0 holds the last round's result
    result_.layers = *snapshot_.front();
    start_stats();
    return;
  }
  collecting_final_ = true;
  collect_into_.assign(layout_.layers(), layer_state{});
  const std::uint64_t step = next_step_++;
  collects_.start(step, layout_.layers());
  for (std::size_t l = 0; l < layout_.layers(); ++l)
    backend_.collect(step, static_cast<std::uint32_t>(l), best_);
}

void run_machine::start_stats() {
  // Leaders report their swarm's slices; relays and workers themselves.
  stats_keys_.clear();
  for (const auto& a : layout_.actors())
    if (a.kind == actor_kind::swarm_leader || a.kind == actor_kind::relay
        || a.kind == actor_kind::shard_worker)
      stats_keys_.push_back(a);
  const std::uint64_t step = next_step_++;
  stats_.start(step, layout_.size());
  for (std::size_t i = 0; i < layout_.size(); ++i) {
    const auto k = layout_.actors()[i].kind;
    if (k == actor_kind::coordinator || k == actor_kind::neuron_slice)
      stats_.reply(step, i); // not asked
  }
  for (const auto& a : stats_keys_)
    backend_.query_stats(step, a);
}

void run_machine::on_stats(std::uint64_t step, const actor_key& a, const peer_counters& c) {
  const auto i = layout_.find(a);
  const auto v = take(stats_, i && phase_ == phase::finishing, step, i.value_or(no_slot));
  if (!v)
    return;
  result_.dropped += c.dropped;
  result_.stale_dropped += c.stale;
  result_.max_staleness = std::max(result_.max_staleness, c.max_staleness);
  if (result_.staleness.size() < c.staleness.size())
    result_.staleness.resize(c.staleness.size(), 0);
  for (std::size_t k = 0; k < c.staleness.size(); ++k)
    result_.staleness[k] += c.staleness[k];
  if (v == fanout::verdict::complete && !over()) {
    phase_ = phase::done;
    deliver();
  }
}

std::string run_machine::describe_state() const {
  static constexpr const char* round_steps[] = {"none",      "scoring",  "keeping best",
                                                "exchanging", "applying", "snapshotting"};
  static constexpr const char* recovery_steps[] = {"none",       "settling", "pausing",
                                                   "respawning", "wiring",   "restoring"};
  std::string out = "run: phase " + std::string{to_string(phase_)} + ", round step "
                    + round_steps[static_cast<int>(round_step_)] + ", recovery step "
                    + recovery_steps[static_cast<int>(recovery_step_)] + ", "
                    + std::to_string(result_.sync_rounds) + " rounds done, "
                    + std::to_string(result_.samples) + " samples\n";
  const std::pair<const char*, const fanout*> fans[] = {
      {"spawn", &spawns_},       {"wire", &wires_},           {"score", &scores_},
      {"collect", &collects_},   {"exchange", &exchanges_},   {"apply", &applies_},
      {"statistics", &stats_},   {"recovery step", &recovering_}};
  for (const auto& [name, f] : fans)
    if (f->active() && f->missing() > 0)
      out += "  waiting for " + std::to_string(f->missing()) + " " + name + " replies (step "
             + std::to_string(f->step()) + ")\n";
  out += "  replicas at the barrier:";
  for (std::size_t r = 0; r < barriers_.size(); ++r)
    out += " " + std::to_string(r) + (barriers_[r] ? "=yes" : "=no");
  out += "\n  nodes alive:";
  for (std::size_t n = 0; n < alive_.size(); ++n)
    out += " " + (n < node_names_.size() ? node_names_[n] : std::to_string(n))
           + (alive_[n] ? "=yes" : "=no");
  return out + "\n";
}

void run_machine::on_stalled(const std::vector<std::size_t>& silent,
                             const std::string& waiting_for) {
  if (over() || phase_ == phase::registering || phase_ == phase::wiring
      || phase_ == phase::ready)
    return;
  ++stalls_;
  if (++stalls_since_round_ > 2) {
    fail("stalled: no progress for system.stall_timeout = " + fmt("%g", cfg_.system.stall_timeout)
         + " s three times without a completed round (rolled back twice); waiting for "
         + waiting_for);
    return;
  }
  if (!silent.empty()) {
    lose(silent, "stalled: no answer to the stall watchdog");
    return;
  }
  std::vector<std::size_t> stuck;
  for (std::size_t r = 0; r < layout_.replicas(); ++r)
    if (phase_ != phase::training || !barriers_[r])
      stuck.push_back(layout_.index(actor_key::worker(static_cast<std::uint32_t>(r))));
  if (stuck.empty())
    return;
  lose(stuck, "stalled: no batch completed for " + fmt("%g", cfg_.system.stall_timeout) + " s");
}

void run_machine::on_failure(const std::string& what) {
  if (!over())
    fail(what);
}

void run_machine::on_lost(const actor_key& a, const std::string& reason) {
  const auto i = layout_.find(a);
  if (over() || !i || !registered_[*i])
    return; // the run is over, or an actor the machine stopped itself
  lose({*i}, reason);
}

void run_machine::on_node_lost(std::size_t node, const std::string& reason) {
  if (over() || node >= alive_.size())
    return;
  if (phase_ == phase::registering || phase_ == phase::wiring || phase_ == phase::ready) {
    fail("lost node " + (node < node_names_.size() ? node_names_[node] : std::to_string(node))
         + " (" + reason + ") before training started");
    return;
  }
  alive_[node] = false;
  std::vector<std::size_t> actors;
  for (std::size_t i = 1; i < layout_.size(); ++i)
    if (node_of_[i] == node && registered_[i])
      actors.push_back(i);
  if (actors.empty()) {
    say("coordinator: lost node " + node_names_[node] + " (" + reason + "); it hosted no actor");
    return;
  }
  lose(actors, reason + ", with node " + node_names_[node]);
}

void run_machine::lose(const std::vector<std::size_t>& actors, const std::string& why) {
  if (phase_ == phase::registering || phase_ == phase::wiring || phase_ == phase::ready) {
    fail("lost " + describe(layout_.actors()[actors.front()]) + " (" + why
         + ") before training started: its node crashed, froze past the heartbeat timeout, or "
           "shut down");
    return;
  }
  if (phase_ == phase::finishing && stats_.active()) {
    // The model is in hand: a lost actor only takes its counters with it.
    for (auto i : actors)
      if (stats_.reply(stats_.step(), i) == fanout::verdict::complete) {
        phase_ = phase::done;
        deliver();
      }
    return;
  }
  std::string names;
  for (std::size_t k = 0; k < actors.size() && k < 4; ++k)
    names += (k > 0 ? ", " : "") + describe(layout_.actors()[actors[k]]);
  if (actors.size() > 4)
    names += " and " + std::to_string(actors.size() - 4) + " more";
  if (!rebalancing_)
    backend_.log("coordinator: lost " + names + " (" + why + "); recovering");
  for (auto i : actors)
    lost_[i] = true;
  if (phase_ != phase::recovering) {
    recovery_ = recovery_summary{};
    recovery_t0_ = now();
    redone_counted_.assign(layout_.replicas(), false);
    if (!rebalancing_)
      ++result_.recoveries;
    after_recovery_ = after_recovery::train;
    if (phase_ == phase::sync_round
        && (round_step_ == round_step::applying
            || (round_step_ == round_step::scoring && scores_synced()))) {
      // The round's result is kept: finish applying it (and score it again).
      after_recovery_ = after_recovery::apply;
    } else if (phase_ == phase::sync_round || phase_ == phase::finishing) {
      // Undo the interrupted round; it runs again once every replica is back.
      result_.sync_rounds = round_start_.sync_rounds;
      ledger_.undo(round_start_.scores);
      result_.epochs = round_start_.epochs;
      result_.samples = round_start_.samples;
      if (best_moved_)
        best_layers_ = std::move(round_start_.best_layers);
      best_moved_ = false;
      best_samples_ = round_start_.best_samples;
      best_epoch_ = round_start_.best_epoch;
      last_progress_ = round_start_.last_progress;
      collecting_final_ = false;
    }
    phase_ = phase::recovering;
    step_to(round_step::none);
  }
  // More losses may follow at once (a node's actors go down one by one):
  // wait a moment, then plan with all of them.
  recovery_step_ = recovery_step::settling;
  settle_step_ = next_step_++;
  backend_.settle(settle_step_);
}

void run_machine::on_settled(std::uint64_t step) {
  if (phase_ != phase::recovering || recovery_step_ != recovery_step::settling
      || step != settle_step_) {
    late();
    return;
  }
  plan_recovery();
}

std::size_t run_machine::place(std::size_t actor) const {
  // A pure function of the description (the plan) and the live nodes: an
  // actor stays on its planned node while that node lives, else it goes to
  // the live node at (planned index mod live count) in canonical order.
  const std::size_t planned = placement_.empty() ? 0 : placement_[actor];
  if (alive_[planned])
    return planned;
  std::vector<std::size_t> live;
  for (std::size_t n = 0; n < alive_.size(); ++n)
    if (alive_[n])
      live.push_back(n);
  return live.empty() ? alive_.size() : live[planned % live.size()];
}

void run_machine::plan_recovery() {
  const std::size_t R = layout_.replicas();
  const auto& all = layout_.actors();
  for (std::size_t i = 1; i < all.size(); ++i)
    if (lost_[i] && all[i].kind != actor_kind::swarm_leader)
      rolled_back_[all[i].replica] = true;
  std::vector<std::string> moved;
  recovery_.lost.clear();
  for (std::size_t i = 1; i < all.size(); ++i) {
    replaced_[i] = lost_[i] || (all[i].kind != actor_kind::swarm_leader && rolled_back_[all[i].replica]);
    if (!lost_[i])
      continue;
    recovery_.lost.push_back(all[i]);
    const std::size_t to = place(i);
    if (to >= alive_.size()) {
      fail("no live node is left to host " + describe(all[i]));
      return;
    }
    if (to != node_of_[i] && moved.size() < 8)
      moved.push_back(describe(all[i]) + " -> "
                      + (to < node_names_.size() ? node_names_[to] : std::string{"local"}));
    node_of_[i] = to;
  }
  recovery_.rolled_back.clear();
  for (std::size_t r = 0; r < R; ++r)
    if (rolled_back_[r])
      recovery_.rolled_back.push_back(static_cast<std::uint32_t>(r));
  recovery_.round = snapshot_round_;
  recovery_.moved = recovery_.lost.size();
  recovery_.restarted = 0;
  for (std::size_t i = 1; i < all.size(); ++i)
    recovery_.restarted += replaced_[i] && !lost_[i] ? 1 : 0;
  std::string line = "coordinator: recovery: ";
  if (recovery_.rolled_back.empty()) {
    line += "no replica lost training state";
  } else {
    line += "replica";
    line += recovery_.rolled_back.size() > 1 ? "s" : "";
    for (std::size_t k = 0; k < recovery_.rolled_back.size(); ++k)
      line += (k > 0 ? ", " : " ") + std::to_string(recovery_.rolled_back[k]);
    line += " go back to sync round " + std::to_string(snapshot_round_);
  }
  if (!node_names_.empty()) {
    std::vector<std::size_t> count(alive_.size(), 0);
    for (std::size_t i = 1; i < all.size(); ++i)
      ++count[node_of_[i]];
    line += "; placement now:";
    for (std::size_t n = 0; n < alive_.size(); ++n)
      if (alive_[n])
        line += " " + node_names_[n] + " " + std::to_string(count[n]);
  }
  for (const auto& m : moved)
    line += "; " + m;
  say(line);

  // Where did the rolled-back replicas stand? A live worker says; for a
  // lost one the interval since the last round is counted.
  recovery_step_ = recovery_step::pausing;
  const std::uint64_t step = next_step_++;
  recovering_.start(step, R);
  for (std::size_t r = 0; r < R; ++r) {
    const std::size_t w = layout_.index(actor_key::worker(static_cast<std::uint32_t>(r)));
    if (!rolled_back_[r] || redone_counted_[r] || lost_[w] || !registered_[w]) {
      if (rolled_back_[r] && !redone_counted_[r]) {
        redone_counted_[r] = true;
        if (barriers_[r]) {
          recovery_.samples_redone += barriers_[r]->samples - positions_[r].samples;
        } else {
          recovery_.samples_redone += cfg_.topology.sync_every;
          recovery_.redone_exact = false;
        }
      }
      recovering_.reply(step, r);
      continue;
    }
    backend_.pause(step, static_cast<std::uint32_t>(r));
  }
  if (!recovering_.active())
    start_respawn();
}

void run_machine::on_paused(std::uint64_t step, std::uint32_t replica, const worker_position& p) {
  const auto v =
      take(recovering_, phase_ == phase::recovering && recovery_step_ == recovery_step::pausing,
           step, replica);
  if (!v)
    return;
  if (!redone_counted_[replica]) {
    redone_counted_[replica] = true;
    recovery_.samples_redone += p.samples - positions_[replica].samples;
  }
  if (v == fanout::verdict::complete)
    start_respawn();
}

void run_machine::start_respawn() {
  const auto& all = layout_.actors();
  for (std::size_t r = 0; r < layout_.replicas(); ++r)
    if (rolled_back_[r]) {
      ++incarnation_[r];
      barriers_[r].reset();
    }
  at_barrier_ = 0;
  for (const auto& b : barriers_)
    at_barrier_ += b ? 1 : 0;
  // The recovery is not draining (it has its own seconds): the replicas
  // still waiting start draining again when training resumes.
  drain_t0_ = now();
  recovery_step_ = recovery_step::respawning;
  const std::uint64_t step = next_step_++;
  recovering_.start(step, all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (!replaced_[i]) {
      recovering_.reply(step, i);
      continue;
    }
    if (registered_[i]) {
      registered_[i] = false;
      --registered_count_;
      backend_.stop(all[i]);
    }
  }
  for (std::size_t i = 1; i < all.size(); ++i)
    if (replaced_[i]) {
      const bool leader = all[i].kind == actor_kind::swarm_leader;
      backend_.spawn(step, node_of_[i], all[i], leader ? 0 : incarnation_[all[i].replica]);
    }
}

void run_machine::start_recovery_wiring() {
  const auto& all = layout_.actors();
  recovery_step_ = recovery_step::wiring;
  const std::uint64_t step = next_step_++;
  recovering_.start(step, all.size());
  recovering_.reply(step, 0);
  std::vector<actor_key> todo;
  for (std::size_t i = 1; i < all.size(); ++i) {
    // Every replaced actor, and every leader: its swarm has new members.
    if (replaced_[i] || all[i].kind == actor_kind::swarm_leader)
      todo.push_back(all[i]);
    else
      recovering_.reply(step, i);
  }
  for (const auto& a : todo)
    backend_.wire(step, a);
}

void run_machine::start_restoring() {
  const std::size_t L = layout_.layers();
  const std::size_t R = layout_.replicas();
  recovery_step_ = recovery_step::restoring;
  const std::uint64_t step = next_step_++;
  recovering_.start(step, R * (L + 1));
  for (std::size_t r = 0; r < R; ++r) {
    if (!rolled_back_[r]) {
      for (std::size_t k = 0; k <= L; ++k)
        recovering_.reply(step, r * (L + 1) + k);
      continue;
    }
    for (std::size_t l = 0; l < L; ++l)
      backend_.restore(step, static_cast<std::uint32_t>(l), static_cast<std::uint32_t>(r),
                       (*snapshot_[r])[l]);
    worker_position at = positions_[r];
    if (!deal_.empty() && at.epoch == deal_.epoch)
      at.deal = deal_;
    backend_.seek(step, static_cast<std::uint32_t>(r), at);
  }
  if (!recovering_.active())
    finish_recovery();
}

void run_machine::on_seeked(std::uint64_t step, std::uint32_t replica) {
  const std::size_t L = layout_.layers();
  if (const auto v = take(recovering_,
                          phase_ == phase::recovering && recovery_step_ == recovery_step::restoring,
                          step, replica * (L + 1) + L);
      v == fanout::verdict::complete)
    finish_recovery();
}

void run_machine::finish_recovery() {
  if (resuming_) {
    resuming_ = false;
    rolled_back_.assign(layout_.replicas(), false);
    recovery_step_ = recovery_step::none;
    resume_all();
    return;
  }
  if (rebalancing_) {
    rebalancing_ = false;
    say("coordinator: rebalanced: " + std::to_string(recovery_.moved) + " actors moved, "
        + std::to_string(recovery_.restarted) + " restarted");
    result_.actors_moved += recovery_.moved;
    result_.actors_restarted += recovery_.restarted;
    lost_.assign(layout_.size(), false);
    replaced_.assign(layout_.size(), false);
    const std::vector<bool> hit = rolled_back_;
    rolled_back_.assign(layout_.replicas(), false);
    recovery_step_ = recovery_step::none;
    phase_ = phase::training;
    for (std::size_t r = 0; r < layout_.replicas(); ++r)
      if (hit[r])
        backend_.resume(static_cast<std::uint32_t>(r));
    return;
  }
  recovery_.seconds = now() - recovery_t0_;
  recovery_.nodes_alive = static_cast<std::size_t>(std::count(alive_.begin(), alive_.end(), true));
  result_.recovery_seconds += recovery_.seconds;
  result_.samples_redone += recovery_.samples_redone;
  result_.replicas_rolled_back += recovery_.rolled_back.size();
  result_.actors_moved += recovery_.moved;
  result_.actors_restarted += recovery_.restarted;
  say("coordinator: recovered in " + format_duration(recovery_.seconds) + ": "
      + std::to_string(recovery_.samples_redone) + " samples to redo"
      + (recovery_.redone_exact ? "" : " (at most)") + ", " + std::to_string(recovery_.moved)
      + " actors moved, " + std::to_string(recovery_.restarted) + " restarted");
  backend_.recovered(recovery_);
  const std::vector<bool> hit = rolled_back_;
  lost_.assign(layout_.size(), false);
  replaced_.assign(layout_.size(), false);
  rolled_back_.assign(layout_.replicas(), false);
  recovery_step_ = recovery_step::none;
  if (after_recovery_ == after_recovery::apply) {
    phase_ = phase::sync_round;
    start_apply();
    return;
  }
  phase_ = phase::training;
  step_to(round_step::none);
  for (std::size_t r = 0; r < layout_.replicas(); ++r)
    if (hit[r])
      backend_.resume(static_cast<std::uint32_t>(r));
  if (at_barrier_ == layout_.replicas()) { // nobody was hit (a lost leader only)
    result_.round_time.seconds[run_result::round_timing::draining] += now() - drain_t0_;
    start_round();
  }
}

void run_machine::request_stop(const std::string& why) {
  if (over() || stop_requested_)
    return;
  if (!training_began()) {
    fail("stopped by " + why + " before training began; nothing was written");
    return;
  }
  stop_requested_ = true;
  say("coordinator: " + why + ": stopping at the end of the next sync round");
}

void run_machine::fail(const std::string& what) {
  result_.ok = false;
  result_.error = what;
  result_.layers.clear();
  say("coordinator: error: " + what);
  phase_ = phase::done;
  step_to(round_step::none);
  backend_.stop_all();
  if (run_requested_)
    deliver();
}

void run_machine::deliver() {
  if (delivered_)
    return;
  delivered_ = true;
  phase_ = phase::done;
  result_.curve = ledger_.curve();
  result_.best_validation_accuracy = ledger_.best();
  result_.reached_target = ledger_.reached_target();
  result_.time_to_target = ledger_.time_to_target();
  if (result_.ok)
    result_.end_state = committed_;
  if (result_.ok)
    backend_.stop_all();
  backend_.finished(std::move(result_));
}

} // namespace nettorrent
