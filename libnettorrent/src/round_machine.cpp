#include "nettorrent/round_machine.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "nettorrent/run_machine.hpp"

namespace nettorrent {

namespace {

/// "r x c (bias n)", for messages about a layer's parameters.
std::string shape_of(const dense_params& p) {
  return std::to_string(p.w.rows()) + " x " + std::to_string(p.w.cols()) + " (bias "
         + std::to_string(p.b.size()) + ")";
}

bool same_weights(const dense_params& a, const dense_params& b) {
  return same_shape(a, b) && std::equal(a.w.data(), a.w.data() + a.w.size(), b.w.data())
         && std::equal(a.b.data(), a.b.data() + a.b.size(), b.b.data());
}

} // namespace

void round_machine::step_to(step next) {
  using rt = run_result::round_timing;
  static_assert(static_cast<std::size_t>(step::scoring) == rt::scoring
                    && static_cast<std::size_t>(step::keeping_best) == rt::keeping_best
                    && static_cast<std::size_t>(step::exchanging) == rt::exchanging
                    && static_cast<std::size_t>(step::applying) == rt::applying
                    && static_cast<std::size_t>(step::snapshotting) == rt::snapshotting,
                "round steps index round_timing::seconds");
  const double t = c_.now();
  if (step_ != step::none)
    c_.result.round_time.seconds[static_cast<std::size_t>(step_)] += t - step_t0_;
  step_ = next;
  step_t0_ = t;
}

void round_machine::start() {
  round_start_.sync_rounds = c_.result.sync_rounds;
  round_start_.scores = c_.ledger.marked();
  round_start_.epochs = c_.result.epochs;
  round_start_.samples = c_.result.samples;
  round_start_.best_layers.clear();
  round_start_.best_samples = c_.best_samples;
  round_start_.best_epoch = c_.best_epoch;
  round_start_.last_progress = c_.last_progress;
  best_moved_ = false;
  c_.phase = run_phase::sync_round;
  step_to(step::scoring);
  all_finished_ = true;
  bool on_grid = true;
  bool ends_next = false;
  std::uint64_t samples = 0;
  round_positions_.clear();
  for (const auto& b : c_.barriers) {
    ends_next = ends_next || b->ends_next;
    round_positions_.push_back(b->position);
    samples += b->samples;
    c_.ledger.add_training_loss(b->loss_sum, b->loss_samples);
    c_.result.epochs = std::max(c_.result.epochs, b->epoch);
    all_finished_ = all_finished_ && b->finished;
    on_grid = on_grid && b->on_grid;
  }
  final_off_grid_ = all_finished_ && !on_grid;
  // topology.round_moments = false: the moments come only when a run state
  // of this round may be written: a run checkpoint (not of a last round
  // off the grid, which is never the run state), or the end state when the
  // next round ends the epochs off the grid (the last round's moments are
  // collected at the end), or live actors move after this round (a leave,
  // a rebalance).
  const std::uint64_t every = c_.cfg.training.checkpoint_every;
  read_moments_ = c_.cfg.topology.round_moments || ends_next || c_.moves_pending()
                  || (every > 0 && (c_.result.sync_rounds + 1) % every == 0 && !final_off_grid_);
  c_.result.samples = samples + c_.retired_samples;
  // topology.validate_every: only every k-th round is scored (the last one
  // always); the others go straight to the exchange. Their training loss
  // carries into the next scored round's curve point.
  const std::uint64_t k = c_.cfg.topology.validate_every;
  const bool scored_round = k <= 1 || all_finished_ || (c_.result.sync_rounds + 1) % k == 0;
  improved_ = false;
  stop_after_round_ = false;
  if (c_.scores_synced()) {
    // Every replica holds the same weights after the exchange: score that
    // synced model once, after applying it (after_apply()).
    score_this_round_ = scored_round;
    start_exchange();
    return;
  }
  if (!scored_round) {
    ++c_.result.sync_rounds;
    after_keep_best();
    return;
  }
  start_scoring(1);
}

void round_machine::start_scoring(std::uint32_t parts) {
  // One part: every replica scores the whole subset; R parts: replica r
  // scores part r of the synced model.
  const std::size_t R = c_.layout.replicas();
  replica_scores_.assign(R, replica_score{});
  const std::uint64_t s = c_.new_step();
  scores_.start(s, R);
  for (std::size_t r = 0; r < R; ++r)
    c_.backend.validate(s, static_cast<std::uint32_t>(r),
                        parts == 1 ? 0 : static_cast<std::uint32_t>(r), parts);
}

void round_machine::on_scored(std::uint64_t s, std::uint32_t replica, const replica_score& sc) {
  const auto v =
      c_.take(scores_, c_.phase == run_phase::sync_round && step_ == step::scoring, s, replica);
  if (!v)
    return;
  // A score comes from a worker, possibly on another node: its counts must
  // add up before they are combined or compared.
  if (!std::isfinite(sc.loss) || !std::isfinite(sc.accuracy) || !std::isfinite(sc.loss_sum)
      || sc.correct > sc.samples || (c_.scores_synced() && sc.samples == 0)) {
    m_.fail("replica " + std::to_string(replica) + " sent an inconsistent validation score (loss "
            + format_value("%g", sc.loss) + ", accuracy " + format_value("%g", sc.accuracy) + ", "
            + std::to_string(sc.correct) + " of " + std::to_string(sc.samples) + " samples right)");
    return;
  }
  replica_scores_[replica] = sc;
  if (v == fanout::verdict::complete && !c_.over())
    scored();
}

void round_machine::scored() {
  const bool synced = c_.scores_synced(); // the round was counted at its exchange
  if (synced) // the replicas scored parts of the subset on the same model
    replica_scores_ = {combine_parts(replica_scores_)};
  best_ = static_cast<std::uint32_t>(pick_best(replica_scores_));
  if (!synced)
    ++c_.result.sync_rounds;
  c_.result.best_replica = best_;
  const replica_score& s = replica_scores_[best_];
  const score_ledger::entry e =
      c_.ledger.book(c_.result.epochs, c_.result.samples, c_.now(), s.loss, s.accuracy);
  improved_ = e.improved;
  stop_after_round_ = e.meets_target || all_finished_;
  report_round(e.point, synced);
  if (e.meets_target)
    c_.say("reached target validation accuracy "
           + format_value("%g", c_.cfg.training.target_accuracy) + " in sync round "
           + std::to_string(c_.result.sync_rounds) + " after " + format_duration(e.point.seconds));
  keep_best_pass(synced);
}

void round_machine::report_round(const curve_point& p, bool synced) {
  round_summary r;
  r.round = c_.result.sync_rounds;
  r.best = best_;
  r.point = p;
  r.scores = replica_scores_;
  r.best_validation_accuracy = c_.ledger.best();
  r.samples_per_second = static_cast<double>(c_.result.samples) / std::max(p.seconds, 1e-9);
  r.reached_target = c_.ledger.reached_target();
  r.time_to_target = c_.ledger.time_to_target();
  r.synced = synced;
  const double t = c_.now();
  r.elapsed = t;
  step_to(step_); // charge this round's scoring so far
  r.round_time = c_.result.round_time;
  const bool print = c_.verbose
                     && (ends_after_round() || c_.last_progress < 0
                         || t - c_.last_progress >= c_.cfg.training.progress_interval);
  if (print)
    c_.last_progress = t;
  c_.backend.round_done(r, print);
}

void round_machine::keep_best_pass(bool synced) {
  const bool keep = c_.cfg.training.keep_best && improved_;
  if (synced) {
    // Replica 0 holds the round's result, which the snapshot has already:
    // keep_best and the final model need no collecting.
    if (keep) {
      c_.best_layers = *c_.snapshot.front();
      // Without round moments, whether a round read them depends on where
      // the run ends: the kept pass holds none, so a resumed run keeps the
      // same bits as a straight one.
      if (!c_.cfg.topology.round_moments)
        for (auto& l : c_.best_layers) {
          l.w_state = {};
          l.b_state = {};
        }
      c_.best_samples = c_.result.samples;
      c_.best_epoch = c_.result.epochs;
    }
    end_synced_round();
    return;
  }
  if (!keep) {
    after_keep_best();
    return;
  }
  round_start_.best_layers = std::move(c_.best_layers);
  best_moved_ = true;
  c_.best_samples = c_.result.samples;
  c_.best_epoch = c_.result.epochs;
  step_to(step::keeping_best);
  collect_into_.assign(c_.layout.layers(), layer_state{});
  const std::uint64_t s = c_.new_step();
  collects_.start(s, c_.layout.layers());
  for (std::size_t l = 0; l < c_.layout.layers(); ++l)
    c_.backend.collect(s, static_cast<std::uint32_t>(l), best_);
}

bool round_machine::on_collected(std::uint64_t s, std::uint32_t layer, std::uint32_t replica,
                                 layer_state&& ls) {
  const bool in_round = c_.phase == run_phase::sync_round;
  const bool snapshotting = in_round && step_ == step::snapshotting;
  if (!snapshotting && !(in_round && step_ == step::keeping_best))
    return false;
  const std::size_t L = c_.layout.layers();
  const std::size_t slot = snapshotting ? replica * L + layer : layer;
  const auto v = c_.take(collects_, true, s, slot);
  if (!v)
    return true;
  (snapshotting ? snapshot_layers_[slot] : collect_into_[layer]) = std::move(ls);
  if (v != fanout::verdict::complete || c_.over())
    return true;
  if (!snapshotting) {
    c_.best_layers = std::move(collect_into_);
    after_keep_best();
    return true;
  }
  for (std::size_t r = 0; r < c_.layout.replicas(); ++r)
    c_.snapshot[r] = std::make_shared<const std::vector<layer_state>>(
        std::make_move_iterator(snapshot_layers_.begin() + static_cast<std::ptrdiff_t>(r * L)),
        std::make_move_iterator(snapshot_layers_.begin()
                                + static_cast<std::ptrdiff_t>((r + 1) * L)));
  commit_round();
  m_.resume_all();
  return true;
}

void round_machine::after_keep_best() {
  if (ends_after_round()) {
    m_.finish();
    return;
  }
  if (!c_.policy().exchanges || c_.layout.replicas() == 1) {
    start_snapshot();
    return;
  }
  start_exchange();
}

void round_machine::start_snapshot() {
  // Nothing is exchanged: keep every replica's own layers as its rollback state.
  step_to(step::snapshotting);
  const std::size_t L = c_.layout.layers();
  snapshot_layers_.assign(c_.layout.replicas() * L, layer_state{});
  const std::uint64_t s = c_.new_step();
  collects_.start(s, snapshot_layers_.size());
  for (std::size_t r = 0; r < c_.layout.replicas(); ++r)
    for (std::size_t l = 0; l < L; ++l)
      c_.backend.collect(s, static_cast<std::uint32_t>(l), static_cast<std::uint32_t>(r));
}

void round_machine::keep_round() {
  c_.positions = round_positions_;
  c_.snapshot_round = c_.result.sync_rounds;
}

void round_machine::commit_round() {
  keep_round();
  c_.publish_round();
}

void round_machine::after_apply() {
  if (!c_.scores_synced()) {
    m_.resume_all();
    return;
  }
  if (!score_this_round_) {
    end_synced_round();
    return;
  }
  step_to(step::scoring);
  start_scoring(static_cast<std::uint32_t>(c_.layout.replicas()));
}

void round_machine::end_synced_round() {
  // With this round's curve point and best pass; a last round off the sync
  // grid is kept for rollbacks but not published: the run state stays the
  // last round on the grid, which a resumed run with more epochs continues
  // exactly as a straight run does.
  if (!final_off_grid_)
    c_.publish_round();
  if (ends_after_round()) {
    m_.finish();
    return;
  }
  m_.resume_all();
}

void round_machine::start_apply() {
  c_.phase = run_phase::sync_round;
  step_to(step::applying);
  const std::size_t L = c_.layout.layers();
  const std::uint64_t s = c_.new_step();
  applies_.start(s, c_.layout.replicas() * L);
  std::vector<std::pair<std::uint32_t, std::uint32_t>> todo;
  for (std::size_t r = 0; r < c_.layout.replicas(); ++r)
    for (std::size_t l = 0; l < L; ++l) {
      // A policy that picks the best replica leaves that one as it is.
      if (c_.policy().picks_best && r == best_) {
        applies_.reply(s, r * L + l);
        continue;
      }
      todo.emplace_back(static_cast<std::uint32_t>(l), static_cast<std::uint32_t>(r));
    }
  if (!applies_.active()) {
    after_apply();
    return;
  }
  // The coded changes apply once; a second apply (after a recovery) sends
  // the weights themselves.
  std::vector<coded_params> coded = std::move(updates_);
  updates_.clear();
  const bool moments = round_sets_moments(c_.cfg.topology);
  for (const auto& [l, r] : todo) {
    const layer_state& mine = (*c_.snapshot[r])[l];
    round_payload p;
    p.weights =
        coded.empty() ? encode_params(mine.params, mine.params, sync_precision::f32) : coded[l];
    p.moments = moments;
    if (moments) {
      p.w_state = mine.w_state;
      p.b_state = mine.b_state;
    }
    c_.backend.apply(s, l, r, p);
  }
}

void round_machine::on_applied(std::uint64_t s, std::uint32_t layer, std::uint32_t replica,
                               std::uint64_t bytes) {
  const auto v = c_.take(applies_, c_.phase == run_phase::sync_round && step_ == step::applying,
                         s, replica * c_.layout.layers() + layer);
  if (!v)
    return;
  c_.result.sync_bytes += bytes;
  if (v == fanout::verdict::complete && !c_.over())
    after_apply();
}

void round_machine::start_exchange() {
  step_to(step::exchanging);
  const std::size_t L = c_.layout.layers();
  exchanged_.assign(L, {});
  policy_states_next_.assign(c_.keeps_policy_state() ? L : 0, policy_state{});
  const std::uint64_t s = c_.new_step();
  exchanges_.start(s, L);
  updates_.clear();
  const bool coded = c_.cfg.topology.sync_coding != sync_precision::f32;
  for (std::size_t l = 0; l < L; ++l) {
    dense_params theta;
    policy_state state;
    // theta: the last round's weights, the same in every replica (what
    // coded rounds send changes from).
    if (c_.keeps_policy_state() || coded)
      theta = (*c_.snapshot.front())[l].params;
    if (c_.keeps_policy_state())
      state = c_.policy_states[l];
    c_.backend.exchange(s, static_cast<std::uint32_t>(l), best_, c_.cfg.topology.policy,
                        std::move(theta), std::move(state), read_moments_);
  }
}

std::string round_machine::check_exchange(std::uint32_t layer,
                                          const std::vector<layer_state>& post,
                                          const policy_state& state) const {
  const std::size_t R = c_.layout.replicas();
  if (post.size() != 1 && post.size() != R)
    return std::to_string(post.size()) + " states for " + std::to_string(R) + " replicas";
  if (!c_.scores_synced())
    return {};
  // The kept state of the last round has the layer's shape.
  const dense_params& layer_params = (*c_.snapshot.front())[layer].params;
  for (const auto& st : post)
    if (!same_shape(st.params, layer_params))
      return "weights of " + shape_of(st.params) + " for a layer of " + shape_of(layer_params);
  if (!c_.keeps_policy_state()) // average: one mean for every replica
    return post.size() == 1
               ? std::string{}
               : std::to_string(post.size()) + " states (an average round gives every replica one)";
  if (std::string why = c_.policy().check_state(state, layer_params); !why.empty())
    return why;
  // Theta: every replica continues from the same weights.
  for (const auto& st : post)
    if (!same_weights(st.params, post.front().params))
      return "different weights for different replicas (an outer round gives all the same)";
  return {};
}

void round_machine::on_exchanged(std::uint64_t s, std::uint32_t layer,
                                 std::vector<layer_state>&& post, policy_state&& state,
                                 std::uint64_t bytes, coded_params&& update) {
  const auto v = c_.take(exchanges_,
                         c_.phase == run_phase::sync_round && step_ == step::exchanging, s, layer);
  if (!v)
    return;
  std::string why = check_exchange(layer, post, state);
  const sync_precision coding = c_.cfg.topology.sync_coding;
  if (why.empty() && coding != sync_precision::f32) {
    // The change must rebuild exactly the weights the leader reports.
    const dense_params& theta = (*c_.snapshot.front())[layer].params;
    if (update.w.precision != coding)
      why = "a change in another sync precision";
    else if (std::string bad = check_coded(update, theta); !bad.empty())
      why = "a change of " + bad;
    else if (!same_weights(decode_params(update, theta), post.front().params))
      why = "a change that does not give the weights it reports";
  }
  if (!why.empty()) {
    m_.fail("the swarm leader of layer " + std::to_string(layer + 1)
            + " answered the sync round with " + why);
    return;
  }
  if (coding != sync_precision::f32) {
    updates_.resize(c_.layout.layers());
    updates_[layer] = std::move(update);
  }
  c_.result.sync_bytes += bytes;
  exchanged_[layer] = std::move(post);
  if (c_.keeps_policy_state())
    policy_states_next_[layer] = std::move(state);
  if (v != fanout::verdict::complete || c_.over())
    return;
  keep_exchanged();
  if (c_.scores_synced()) {
    // The round counts from here; its curve point comes after the scoring,
    // so the run state is published at the round's end.
    ++c_.result.sync_rounds;
    keep_round();
  } else {
    commit_round();
  }
  start_apply();
}

void round_machine::keep_exchanged() {
  const std::size_t R = c_.layout.replicas();
  const std::size_t L = c_.layout.layers();
  bool shared = true;
  for (const auto& x : exchanged_)
    shared = shared && x.size() == 1;
  if (shared) { // every replica holds the same layers after the round
    auto all = std::make_shared<std::vector<layer_state>>();
    for (auto& x : exchanged_)
      all->push_back(std::move(x.front()));
    c_.snapshot.assign(R, std::move(all));
  } else {
    for (std::size_t r = 0; r < R; ++r) {
      auto mine = std::make_shared<std::vector<layer_state>>();
      for (std::size_t l = 0; l < L; ++l)
        mine->push_back(exchanged_[l].size() == 1 ? exchanged_[l].front()
                                                  : std::move(exchanged_[l][r]));
      c_.snapshot[r] = std::move(mine);
    }
  }
  exchanged_.clear();
  if (c_.keeps_policy_state())
    c_.policy_states = std::move(policy_states_next_);
}

bool round_machine::result_kept() const noexcept {
  return c_.phase == run_phase::sync_round
         && (step_ == step::applying || (step_ == step::scoring && c_.scores_synced()));
}

void round_machine::undo() {
  c_.result.sync_rounds = round_start_.sync_rounds;
  c_.ledger.undo(round_start_.scores);
  c_.result.epochs = round_start_.epochs;
  c_.result.samples = round_start_.samples;
  if (best_moved_)
    c_.best_layers = std::move(round_start_.best_layers);
  best_moved_ = false;
  c_.best_samples = round_start_.best_samples;
  c_.best_epoch = round_start_.best_epoch;
  c_.last_progress = round_start_.last_progress;
}

void round_machine::describe(std::string& out) const {
  const std::pair<const char*, const fanout*> fans[] = {{"score", &scores_},
                                                        {"collect", &collects_},
                                                        {"exchange", &exchanges_},
                                                        {"apply", &applies_}};
  for (const auto& [name, f] : fans)
    describe_waiting(out, name, *f);
}

} // namespace nettorrent
