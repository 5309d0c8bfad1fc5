#include "nettorrent/recovery_machine.hpp"

#include <algorithm>

#include "nettorrent/round_machine.hpp"
#include "nettorrent/run_machine.hpp"

namespace nettorrent {

recovery_machine::recovery_machine(run_core& core, run_machine& router, round_machine& round)
    : c_(core), m_(router), round_(round) {
  clear();
}

void recovery_machine::clear() {
  lost_.assign(c_.layout.size(), false);
  replaced_.assign(c_.layout.size(), false);
  rolled_back_.assign(c_.layout.replicas(), false);
  step_ = step::none;
}

void recovery_machine::rebalance(const std::vector<std::size_t>& actors) {
  rebalancing_ = true;
  move(actors, "moved at a sync round");
}

void recovery_machine::lose(const std::vector<std::size_t>& actors, const std::string& why) {
  if (rebalancing_ && c_.phase == run_phase::recovering) {
    // A real loss during a move: from here on it is a recovery, booked as one.
    rebalancing_ = false;
    ++c_.result.recoveries;
  }
  move(actors, why);
}

void recovery_machine::move(const std::vector<std::size_t>& actors, const std::string& why) {
  const auto& all = c_.layout.actors();
  std::string names;
  for (std::size_t k = 0; k < actors.size() && k < 4; ++k)
    names += (k > 0 ? ", " : "") + nettorrent::describe(all[actors[k]]);
  if (actors.size() > 4)
    names += " and " + std::to_string(actors.size() - 4) + " more";
  if (!rebalancing_)
    c_.backend.log("coordinator: lost " + names + " (" + why + "); recovering");
  for (auto i : actors)
    lost_[i] = true;
  if (c_.phase != run_phase::recovering)
    begin();
  // More losses may follow at once (a node's actors go down one by one):
  // wait a moment, then plan with all of them.
  step_ = step::settling;
  settle_step_ = c_.new_step();
  c_.backend.settle(settle_step_);
}

void recovery_machine::begin() {
  summary_ = recovery_summary{};
  t0_ = c_.now();
  redone_counted_.assign(c_.layout.replicas(), false);
  if (!rebalancing_)
    ++c_.result.recoveries;
  // A round whose result is kept goes on applying it (and scores it
  // again); any other round (or the finishing) is undone and runs again
  // once every replica is back.
  apply_after_ = round_.result_kept();
  if (!apply_after_ && (c_.phase == run_phase::sync_round || c_.phase == run_phase::finishing))
    round_.undo();
  c_.phase = run_phase::recovering;
  round_.step_to(round_machine::step::none);
}

void recovery_machine::on_settled(std::uint64_t s) {
  if (c_.phase != run_phase::recovering || step_ != step::settling || s != settle_step_) {
    c_.late();
    return;
  }
  plan();
}

bool recovery_machine::place_lost(std::vector<std::string>& moved) {
  const auto& all = c_.layout.actors();
  for (std::size_t i = 1; i < all.size(); ++i)
    if (lost_[i] && all[i].kind != actor_kind::swarm_leader)
      rolled_back_[all[i].replica] = true;
  summary_.lost.clear();
  for (std::size_t i = 1; i < all.size(); ++i) {
    const bool leader = all[i].kind == actor_kind::swarm_leader;
    replaced_[i] = lost_[i] || (!leader && rolled_back_[all[i].replica]);
    if (!lost_[i])
      continue;
    summary_.lost.push_back(all[i]);
    const std::size_t to = c_.place(i);
    if (to >= c_.alive.size()) {
      m_.fail("no live node is left to host " + nettorrent::describe(all[i]));
      return false;
    }
    if (to != c_.node_of[i] && moved.size() < 8)
      moved.push_back(nettorrent::describe(all[i]) + " -> "
                      + (to < c_.node_names.size() ? c_.node_names[to] : std::string{"local"}));
    c_.node_of[i] = to;
  }
  return true;
}

std::string recovery_machine::plan_line(const std::vector<std::string>& moved) const {
  std::string line = rebalancing_ ? "coordinator: moving: " : "coordinator: recovery: ";
  const auto& back = summary_.rolled_back;
  if (rebalancing_) {
    line += back.size() > 1 ? "replicas" : "replica";
    for (std::size_t k = 0; k < back.size(); ++k)
      line += (k > 0 ? ", " : " ") + std::to_string(back[k]);
    line += " restart from sync round " + std::to_string(c_.snapshot_round)
            + ", where they stand";
  } else if (back.empty()) {
    line += "no replica lost training state";
  } else {
    line += back.size() > 1 ? "replicas" : "replica";
    for (std::size_t k = 0; k < back.size(); ++k)
      line += (k > 0 ? ", " : " ") + std::to_string(back[k]);
    line += " go back to sync round " + std::to_string(c_.snapshot_round);
  }
  if (!c_.node_names.empty()) {
    std::vector<std::size_t> count(c_.alive.size(), 0);
    for (std::size_t i = 1; i < c_.layout.size(); ++i)
      ++count[c_.node_of[i]];
    line += "; placement now:";
    for (std::size_t n = 0; n < c_.alive.size(); ++n)
      if (c_.alive[n])
        line += " " + c_.node_names[n] + " " + std::to_string(count[n]);
  }
  for (const auto& m : moved)
    line += "; " + m;
  return line;
}

void recovery_machine::plan() {
  std::vector<std::string> moved;
  if (!place_lost(moved))
    return;
  summary_.rolled_back.clear();
  for (std::size_t r = 0; r < c_.layout.replicas(); ++r)
    if (rolled_back_[r])
      summary_.rolled_back.push_back(static_cast<std::uint32_t>(r));
  summary_.round = c_.snapshot_round;
  summary_.moved = summary_.lost.size();
  summary_.restarted = 0;
  for (std::size_t i = 1; i < c_.layout.size(); ++i)
    summary_.restarted += replaced_[i] && !lost_[i] ? 1 : 0;
  c_.say(plan_line(moved));
  start_pausing();
}

void recovery_machine::count_redone(std::size_t r, const worker_position* at) {
  if (redone_counted_[r])
    return;
  redone_counted_[r] = true;
  if (at != nullptr) {
    summary_.samples_redone += at->samples - c_.positions[r].samples;
  } else if (c_.barriers[r]) {
    summary_.samples_redone += c_.barriers[r]->samples - c_.positions[r].samples;
  } else {
    summary_.samples_redone += c_.cfg.topology.sync_every;
    summary_.redone_exact = false;
  }
}

void recovery_machine::start_pausing() {
  // Where did the rolled-back replicas stand? A live worker says; for a
  // lost one the interval since the last round is counted.
  const std::size_t R = c_.layout.replicas();
  step_ = step::pausing;
  const std::uint64_t s = c_.new_step();
  replies_.start(s, R);
  for (std::size_t r = 0; r < R; ++r) {
    const std::size_t w = c_.layout.index(actor_key::worker(static_cast<std::uint32_t>(r)));
    if (!rolled_back_[r] || redone_counted_[r] || lost_[w] || !c_.registered[w]) {
      if (rolled_back_[r])
        count_redone(r, nullptr);
      replies_.reply(s, r);
      continue;
    }
    c_.backend.pause(s, static_cast<std::uint32_t>(r));
  }
  if (!replies_.active())
    start_respawn();
}

void recovery_machine::on_paused(std::uint64_t s, std::uint32_t replica,
                                 const worker_position& p) {
  const auto v = c_.take(replies_, c_.phase == run_phase::recovering && step_ == step::pausing, s,
                         replica);
  if (!v)
    return;
  count_redone(replica, &p);
  if (v == fanout::verdict::complete)
    start_respawn();
}

void recovery_machine::start_respawn() {
  const auto& all = c_.layout.actors();
  for (std::size_t r = 0; r < c_.layout.replicas(); ++r)
    if (rolled_back_[r]) {
      ++c_.incarnation[r];
      c_.barriers[r].reset();
    }
  c_.at_barrier = 0;
  for (const auto& b : c_.barriers)
    c_.at_barrier += b ? 1 : 0;
  // The recovery is not draining (it has its own seconds): the replicas
  // still waiting start draining again when training resumes.
  c_.drain_t0 = c_.now();
  step_ = step::respawning;
  const std::uint64_t s = c_.new_step();
  replies_.start(s, all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (!replaced_[i]) {
      replies_.reply(s, i);
      continue;
    }
    if (c_.registered[i]) {
      c_.registered[i] = false;
      --c_.registered_count;
      c_.backend.stop(all[i]);
    }
  }
  for (std::size_t i = 1; i < all.size(); ++i)
    if (replaced_[i]) {
      const bool leader = all[i].kind == actor_kind::swarm_leader;
      c_.backend.spawn(s, c_.node_of[i], all[i], leader ? 0 : c_.incarnation[all[i].replica]);
    }
}

void recovery_machine::on_spawned(std::uint64_t s, std::size_t actor) {
  if (const auto v = c_.take(replies_, actor != no_slot, s, actor); v == fanout::verdict::complete)
    start_wiring();
}

void recovery_machine::start_wiring() {
  const auto& all = c_.layout.actors();
  step_ = step::wiring;
  const std::uint64_t s = c_.new_step();
  replies_.start(s, all.size());
  replies_.reply(s, 0);
  std::vector<actor_key> todo;
  for (std::size_t i = 1; i < all.size(); ++i) {
    // Every replaced actor, and every leader: its swarm has new members.
    if (replaced_[i] || all[i].kind == actor_kind::swarm_leader)
      todo.push_back(all[i]);
    else
      replies_.reply(s, i);
  }
  for (const auto& a : todo)
    c_.backend.wire(s, a);
}

void recovery_machine::on_wired(std::uint64_t s, std::size_t actor) {
  if (const auto v = c_.take(replies_, actor != no_slot && step_ == step::wiring, s, actor);
      v == fanout::verdict::complete)
    start_restoring();
}

void recovery_machine::restore_checkpoint() {
  c_.phase = run_phase::recovering;
  rolled_back_.assign(c_.layout.replicas(), true);
  c_.barriers.assign(c_.layout.replicas(), std::nullopt);
  c_.at_barrier = 0;
  start_restoring();
}

void recovery_machine::start_restoring() {
  const std::size_t L = c_.layout.layers();
  const std::size_t R = c_.layout.replicas();
  step_ = step::restoring;
  const std::uint64_t s = c_.new_step();
  replies_.start(s, R * (L + 1));
  std::string fresh; // replicas whose kept round read no moments
  std::size_t n_fresh = 0;
  for (std::size_t r = 0; r < R; ++r) {
    const auto& kept = *c_.snapshot[r];
    if (rolled_back_[r] && !kept.empty() && kept.front().w_state.steps == 0
        && kept.front().w_state.m.empty() && kept.front().w_state.v.empty()
        && c_.cfg.optimizer.kind != optimizer_kind::sgd) {
      fresh += (fresh.empty() ? "" : ", ") + std::to_string(r);
      ++n_fresh;
    }
  }
  if (n_fresh > 0)
    c_.say("coordinator: " + std::string{n_fresh == 1 ? "replica " : "replicas "} + fresh
           + (n_fresh == 1 ? " goes" : " go") + " on from round "
           + std::to_string(c_.snapshot_round)
           + "'s weights with the optimizer from zero moments (topology.round_moments = false: "
             "the round left them on the slices)");
  for (std::size_t r = 0; r < R; ++r) {
    if (!rolled_back_[r]) {
      for (std::size_t k = 0; k <= L; ++k)
        replies_.reply(s, r * (L + 1) + k);
      continue;
    }
    for (std::size_t l = 0; l < L; ++l)
      c_.backend.restore(s, static_cast<std::uint32_t>(l), static_cast<std::uint32_t>(r),
                         (*c_.snapshot[r])[l]);
    c_.backend.seek(s, static_cast<std::uint32_t>(r), c_.seek_position(r));
  }
  if (!replies_.active())
    finish();
}

void recovery_machine::on_restored(std::uint64_t s, std::uint32_t layer, std::uint32_t replica) {
  const std::size_t L = c_.layout.layers();
  if (const auto v = c_.take(replies_, step_ == step::restoring, s, replica * (L + 1) + layer);
      v == fanout::verdict::complete)
    finish();
}

void recovery_machine::on_seeked(std::uint64_t s, std::uint32_t replica) {
  const std::size_t L = c_.layout.layers();
  if (const auto v =
          c_.take(replies_, c_.phase == run_phase::recovering && step_ == step::restoring, s,
                  replica * (L + 1) + L);
      v == fanout::verdict::complete)
    finish();
}

void recovery_machine::resume_hit(const std::vector<bool>& hit) {
  for (std::size_t r = 0; r < c_.layout.replicas(); ++r)
    if (hit[r])
      c_.backend.resume(static_cast<std::uint32_t>(r));
}

void recovery_machine::book() {
  summary_.seconds = c_.now() - t0_;
  summary_.nodes_alive = c_.nodes_alive();
  c_.result.recovery_seconds += summary_.seconds;
  c_.result.samples_redone += summary_.samples_redone;
  c_.result.replicas_rolled_back += summary_.rolled_back.size();
  c_.result.actors_moved += summary_.moved;
  c_.result.actors_restarted += summary_.restarted;
  c_.say("coordinator: recovered in " + format_duration(summary_.seconds) + ": "
         + std::to_string(summary_.samples_redone) + " samples to redo"
         + (summary_.redone_exact ? "" : " (at most)") + ", " + std::to_string(summary_.moved)
         + " actors moved, " + std::to_string(summary_.restarted) + " restarted");
  c_.backend.recovered(summary_);
}

void recovery_machine::finish() {
  const std::vector<bool> hit = rolled_back_;
  if (c_.resuming) { // the run checkpoint is restored: every replica trains
    c_.resuming = false;
    clear();
    m_.resume_all();
    return;
  }
  if (rebalancing_) {
    rebalancing_ = false;
    c_.say("coordinator: rebalanced: " + std::to_string(summary_.moved) + " actors moved, "
           + std::to_string(summary_.restarted) + " restarted");
    c_.result.actors_moved += summary_.moved;
    c_.result.actors_restarted += summary_.restarted;
    clear();
    c_.phase = run_phase::training;
    resume_hit(hit);
    m_.release_leavers();
    if (c_.at_barrier == c_.layout.replicas()) // only leaders moved: the others wait there
      m_.barrier_complete();
    return;
  }
  book();
  clear();
  if (apply_after_) {
    round_.start_apply();
    return;
  }
  c_.phase = run_phase::training;
  round_.step_to(round_machine::step::none);
  resume_hit(hit);
  m_.release_leavers(); // a move that a loss turned into a recovery
  if (c_.at_barrier == c_.layout.replicas()) // nobody was hit (a lost leader only)
    m_.barrier_complete();
}

void recovery_machine::describe(std::string& out) const {
  describe_waiting(out, "recovery step", replies_);
}

} // namespace nettorrent

