#include "nettorrent/run_machine.hpp"

#include <algorithm>
#include <cstdio>

#include "nettorrent/error.hpp"

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
         + fmt("%.4f", p.validation_accuracy) + " (replica " + std::to_string(r.best) + ", best "
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

run_machine::run_machine(run_config cfg, run_backend& backend, std::function<double()> clock,
                         bool verbose, std::vector<std::size_t> placement,
                         std::vector<std::string> node_names)
    : cfg_(std::move(cfg)), layout_(cfg_), backend_(backend), clock_(std::move(clock)),
      verbose_(verbose), placement_(std::move(placement)), node_names_(std::move(node_names)) {
  result_.actor_run = true;
  registered_.assign(layout_.size(), false);
  registered_[0] = true; // the coordinator is there by construction
  node_joined_.assign(node_names_.size(), false);
  if (!placement_.empty()) {
    if (placement_.size() != layout_.size())
      throw error("run machine: the placement covers " + std::to_string(placement_.size())
                  + " actors, the layout has " + std::to_string(layout_.size()));
    spawns_.start(next_step_++, layout_.size());
  }
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
  if (over() || node >= node_joined_.size() || node_joined_[node])
    return;
  node_joined_[node] = true;
  for (std::size_t i = 1; i < layout_.size(); ++i)
    if (placement_[i] == node)
      backend_.spawn(spawns_.step(), node, layout_.actors()[i], 0);
}

void run_machine::on_spawned(std::uint64_t step, const actor_key& a) {
  const auto i = layout_.find(a);
  if (!i || spawns_.reply(step, *i) == fanout::verdict::late)
    late();
}

bool run_machine::on_registered(const actor_key& a) {
  const auto i = layout_.find(a);
  if (!i || registered_[*i] || phase_ != phase::registering || over()) {
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
  const auto v = i ? wires_.reply(step, *i) : fanout::verdict::late;
  if (v == fanout::verdict::late || v == fanout::verdict::duplicate) {
    late();
    return;
  }
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
  t0_ = clock_();
  say("coordinator: " + std::to_string(expected()) + " actors registered and wired; training "
      + std::to_string(layout_.replicas()) + " replicas");
  resume_all();
}

void run_machine::resume_all() {
  phase_ = phase::training;
  round_step_ = round_step::none;
  barriers_.assign(layout_.replicas(), std::nullopt);
  at_barrier_ = 0;
  for (std::size_t r = 0; r < layout_.replicas(); ++r)
    backend_.resume(static_cast<std::uint32_t>(r));
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
  if (phase_ != phase::training || b.replica >= layout_.replicas() || barriers_[b.replica]) {
    backend_.log("coordinator: ignored an unexpected barrier report from replica "
                 + std::to_string(b.replica));
    return;
  }
  barriers_[b.replica] = b;
  if (++at_barrier_ == layout_.replicas())
    start_round();
}

void run_machine::start_round() {
  phase_ = phase::sync_round;
  round_step_ = round_step::scoring;
  all_finished_ = true;
  std::uint64_t samples = 0;
  for (const auto& b : barriers_) {
    samples += b->samples;
    loss_sum_ += b->loss_sum;
    loss_samples_ += b->loss_samples;
    result_.epochs = std::max(result_.epochs, b->epoch);
    all_finished_ = all_finished_ && b->finished;
  }
  result_.samples = samples;
  scores_v_.assign(layout_.replicas(), replica_score{});
  const std::uint64_t step = next_step_++;
  scores_.start(step, layout_.replicas());
  for (std::size_t r = 0; r < layout_.replicas(); ++r)
    backend_.validate(step, static_cast<std::uint32_t>(r));
}

void run_machine::on_scored(std::uint64_t step, std::uint32_t replica, const replica_score& s) {
  const auto v = scores_.reply(step, replica);
  if (v == fanout::verdict::late || v == fanout::verdict::duplicate) {
    late();
    return;
  }
  scores_v_[replica] = s;
  if (v == fanout::verdict::complete && !over())
    scored();
}

void run_machine::scored() {
  const auto& tc = cfg_.training;
  best_ = static_cast<std::uint32_t>(pick_best(scores_v_));
  const double acc = scores_v_[best_].accuracy;
  improved_ = result_.sync_rounds == 0 || acc > result_.best_validation_accuracy;
  ++result_.sync_rounds;
  result_.best_replica = best_;
  result_.best_validation_accuracy = std::max(result_.best_validation_accuracy, acc);
  curve_point p;
  p.epoch = result_.epochs;
  p.samples = result_.samples;
  p.seconds = now();
  p.train_loss = loss_samples_ > 0 ? loss_sum_ / static_cast<double>(loss_samples_) : 0;
  p.validation_loss = scores_v_[best_].loss;
  p.validation_accuracy = acc;
  result_.curve.push_back(p);
  loss_sum_ = 0;
  loss_samples_ = 0;
  const bool reached = tc.target_accuracy > 0 && acc >= tc.target_accuracy;
  if (reached && !result_.reached_target) {
    result_.reached_target = true;
    result_.time_to_target = p.seconds;
  }
  stop_after_round_ = reached || all_finished_;

  round_summary r;
  r.round = result_.sync_rounds;
  r.best = best_;
  r.point = p;
  r.scores = scores_v_;
  r.best_validation_accuracy = result_.best_validation_accuracy;
  r.samples_per_second = static_cast<double>(result_.samples) / std::max(p.seconds, 1e-9);
  r.reached_target = result_.reached_target;
  r.time_to_target = result_.time_to_target;
  const double t = now();
  r.elapsed = t;
  const bool print =
      verbose_
      && (stop_after_round_ || last_progress_ < 0 || t - last_progress_ >= tc.progress_interval);
  if (print)
    last_progress_ = t;
  backend_.round_done(r, print);
  if (reached)
    say("reached target validation accuracy " + fmt("%g", tc.target_accuracy) + " in sync round "
        + std::to_string(result_.sync_rounds) + " after " + format_duration(p.seconds));

  if (tc.keep_best && improved_) {
    best_samples_ = result_.samples;
    best_epoch_ = result_.epochs;
    round_step_ = round_step::keeping_best;
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

void run_machine::on_collected(std::uint64_t step, std::uint32_t layer, layer_state&& ls) {
  const auto v = collects_.reply(step, layer);
  if (v == fanout::verdict::late || v == fanout::verdict::duplicate) {
    late();
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
  if (stop_after_round_) {
    finish();
    return;
  }
  if (cfg_.topology.policy == sync_policy::none || layout_.replicas() == 1) {
    resume_all();
    return;
  }
  start_exchange();
}

void run_machine::start_exchange() {
  round_step_ = round_step::exchanging;
  const std::uint64_t step = next_step_++;
  exchanges_.start(step, layout_.layers());
  for (std::size_t l = 0; l < layout_.layers(); ++l)
    backend_.exchange(step, static_cast<std::uint32_t>(l), best_, cfg_.topology.policy);
}

void run_machine::on_exchanged(std::uint64_t step, std::uint32_t layer, std::uint64_t bytes) {
  const auto v = exchanges_.reply(step, layer);
  if (v == fanout::verdict::late || v == fanout::verdict::duplicate) {
    late();
    return;
  }
  result_.sync_bytes += bytes;
  if (v == fanout::verdict::complete && !over())
    resume_all();
}

void run_machine::finish() {
  phase_ = phase::finishing;
  round_step_ = round_step::none;
  result_.seconds = now();
  result_.samples_per_second = static_cast<double>(result_.samples) / result_.seconds;
  result_.best_replica = best_;
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
    if (a.kind == actor_kind::swarm_leader || a.kind == actor_kind::gradient_relay
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
  const auto v = i ? stats_.reply(step, *i) : fanout::verdict::late;
  if (v == fanout::verdict::late || v == fanout::verdict::duplicate) {
    late();
    return;
  }
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

void run_machine::on_failure(const std::string& what) {
  if (!over())
    fail(what);
}

void run_machine::on_lost(const actor_key& a, const std::string& reason) {
  if (!over())
    fail("lost " + describe(a) + " (" + reason
         + "): its node crashed, froze past the heartbeat timeout, or shut down");
}

void run_machine::fail(const std::string& what) {
  result_.ok = false;
  result_.error = what;
  result_.layers.clear();
  say("coordinator: error: " + what);
  phase_ = phase::done;
  round_step_ = round_step::none;
  backend_.stop_all();
  if (run_requested_)
    deliver();
}

void run_machine::deliver() {
  if (delivered_)
    return;
  delivered_ = true;
  phase_ = phase::done;
  if (result_.ok)
    backend_.stop_all();
  backend_.finished(std::move(result_));
}

} // namespace nettorrent
