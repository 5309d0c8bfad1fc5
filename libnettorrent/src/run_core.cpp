#include "nettorrent/run_core.hpp"

#include <algorithm>

#include "nettorrent/error.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/optimizer.hpp"

namespace nettorrent {

std::string_view to_string(run_phase p) noexcept {
  switch (p) {
  case run_phase::registering:
    return "registering";
  case run_phase::wiring:
    return "wiring";
  case run_phase::ready:
    return "ready";
  case run_phase::training:
    return "training";
  case run_phase::sync_round:
    return "sync round";
  case run_phase::recovering:
    return "recovering";
  case run_phase::finishing:
    return "finishing";
  case run_phase::done:
    return "done";
  }
  return "?";
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

void describe_waiting(std::string& out, const char* name, const fanout& f) {
  if (f.active() && f.missing() > 0)
    out += "  waiting for " + std::to_string(f.missing()) + " " + name + " replies (step "
           + std::to_string(f.step()) + ")\n";
}

// --- run_core ---------------------------------------------------------------

run_core::run_core(run_config c, run_backend& b, std::function<double()> clk, bool v,
                   std::vector<std::size_t> plan, std::vector<std::string> names)
    : cfg(std::move(c)), layout(cfg), backend(b), clock(std::move(clk)), verbose(v),
      placement(std::move(plan)), node_names(std::move(names)),
      ledger(cfg.training.target_accuracy) {
  result.actor_run = true;
  if (!placement.empty() && placement.size() != layout.size())
    throw error("run machine: the placement covers " + std::to_string(placement.size())
                + " actors, the layout has " + std::to_string(layout.size()));
  registered.assign(layout.size(), false);
  registered[0] = true; // the coordinator is there by construction
  node_joined.assign(node_names.size(), false);
  node_of = placement.empty() ? std::vector<std::size_t>(layout.size(), 0) : placement;
  alive.assign(std::max<std::size_t>(node_names.size(), 1), true);
  leaving.assign(alive.size(), false);
  const std::size_t R = layout.replicas();
  incarnation.assign(R, 0);
  positions.assign(R, worker_position{});
  // Before the first round every replica holds the initial weights: a pure
  // function of the seed, the same whatever the slicing.
  auto initial = std::make_shared<std::vector<layer_state>>();
  const auto opt = make_optimizer(cfg.optimizer);
  for (const auto& g : model_geometry(cfg.model)) {
    layer_state ls;
    ls.params = init_dense(cfg.training.seed, g);
    ls.w_state = opt->make_state(static_cast<std::size_t>(ls.params.w.size()));
    ls.b_state = opt->make_state(static_cast<std::size_t>(ls.params.b.size()));
    initial->push_back(std::move(ls));
  }
  snapshot.assign(R, initial);
  if (keeps_policy_state())
    for (const auto& ls : *initial)
      policy_states.push_back(policy().initial_state(ls.params));
  commit_state();
}

void run_core::say(const std::string& line) const {
  if (verbose)
    backend.log(line);
}

std::optional<fanout::verdict> run_core::take(fanout& f, bool open, std::uint64_t step,
                                              std::size_t slot) {
  const auto v = open ? f.reply(step, slot) : fanout::verdict::late;
  if (v == fanout::verdict::late || v == fanout::verdict::duplicate) {
    late();
    return std::nullopt;
  }
  ++events;
  return v;
}

std::size_t run_core::place(std::size_t actor) const {
  const std::size_t planned = placement.empty() ? 0 : placement[actor];
  const auto usable = [&](std::size_t n) { return alive[n] && !leaving[n]; };
  if (usable(planned))
    return planned;
  std::vector<std::size_t> live;
  for (std::size_t n = 0; n < alive.size(); ++n)
    if (usable(n))
      live.push_back(n);
  return live.empty() ? alive.size() : live[planned % live.size()];
}

void run_core::commit_state() {
  auto st = std::make_shared<run_state>();
  st->config_hash = cfg.hash();
  st->config_text = cfg.canonical();
  st->actor_run = true;
  st->round = snapshot_round;
  st->samples = retired_samples;
  st->retired_samples = retired_samples;
  for (const auto& p : positions) {
    if (!deal.empty() && p.epoch == deal.epoch)
      st->deal = deal; // a replica still trains the dealt epoch
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
  ledger.save(*st, static_cast<std::size_t>(snapshot_round));
  st->elapsed_seconds = st->curve.empty() ? 0 : st->curve.back().seconds;
  st->best_layers = best_layers;
  st->best_samples = best_samples;
  st->best_epoch = best_epoch;
  bool shared = true;
  for (const auto& x : snapshot)
    shared = shared && x == snapshot.front();
  if (shared)
    st->models.push_back(*snapshot.front());
  else
    for (const auto& x : snapshot)
      st->models.push_back(*x);
  st->policy_states = policy_states;
  committed = std::move(st);
}

void run_core::publish_round() {
  stalls_since_round = 0;
  commit_state();
  const auto every = cfg.training.checkpoint_every;
  if (every > 0 && snapshot_round % every == 0)
    backend.save(committed);
}

worker_position run_core::seek_position(std::size_t r) const {
  worker_position at = positions.at(r);
  if (!deal.empty() && at.epoch == deal.epoch)
    at.deal = deal;
  return at;
}

} // namespace nettorrent
