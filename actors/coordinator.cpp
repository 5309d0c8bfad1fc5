#include "coordinator.hpp"

#include <cstdio>

#include <caf/all.hpp>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/cluster.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/slice_ops.hpp"

namespace nettorrent {

std::string describe_slice(std::size_t r, std::size_t l, std::size_t s) {
  return "neuron slice (replica " + std::to_string(r) + ", layer " + std::to_string(l + 1)
         + ", slice " + std::to_string(s) + ")";
}

std::string describe_relay(std::size_t r, std::size_t k, std::size_t layers) {
  const std::string replica = "(replica " + std::to_string(r);
  switch (relay_role_of(static_cast<std::uint32_t>(k), layers)) {
  case relay_role::input:
    return "input relay " + replica + ")";
  case relay_role::hidden:
    return "hidden relay " + replica + ", boundary " + std::to_string(k) + ")";
  case relay_role::loss:
    return "loss relay " + replica + ")";
  }
  return "relay " + replica + ")";
}

namespace {

using self_ptr = coordinator_actor::stateful_pointer<coordinator_state>;
using phase = coordinator_state::phase;

double elapsed(const coordinator_state& s) {
  return std::chrono::duration<double>(coordinator_state::clock_type::now() - s.t0).count();
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

/// Sends an exit to every registered actor.
void stop_peers(self_ptr self) {
  auto& s = self->state;
  auto bye = [&](const auto& handles) {
    for (const auto& h : handles)
      if (h)
        self->send_exit(h, caf::exit_reason::user_shutdown);
  };
  bye(s.slices);
  bye(s.relays);
  bye(s.workers);
  bye(s.leaders);
  s.state = phase::done;
}

/// Stops every registered actor and the coordinator itself. Nodes that
/// watch the coordinator see `normal` only when the run succeeded.
void shut_down(self_ptr self) {
  stop_peers(self);
  if (self->state.report.ok)
    self->quit();
  else
    self->quit(caf::exit_reason::user_shutdown);
}

/// Ends the run with an error that the `run` requester receives.
void fail(self_ptr self, const std::string& what) {
  auto& s = self->state;
  s.report.ok = false;
  s.report.error = what;
  if (s.spec.verbose)
    caf::aout(self) << "coordinator: error: " << what << std::endl;
  if (s.run_requested) {
    s.run_promise.deliver(s.report);
    shut_down(self);
    return;
  }
  // Nobody asked yet: stop the others, stay alive to answer `run` with the
  // error, then quit.
  stop_peers(self);
}

std::string missing_actors(const coordinator_state& s) {
  std::vector<std::string> names;
  for (std::size_t r = 0; r < s.replicas; ++r) {
    if (!s.workers[r])
      names.push_back("shard worker (replica " + std::to_string(r) + ")");
    for (std::size_t k = 0; k <= s.layers; ++k)
      if (!s.relays[r * (s.layers + 1) + k])
        names.push_back(describe_relay(r, k, s.layers));
    for (std::size_t l = 0; l < s.layers; ++l)
      for (std::size_t i = 0; i < s.spec.cfg.topology.slices_of(l); ++i)
        if (!s.slices[r * s.slices_per_replica + s.slice_offset[l] + i])
          names.push_back(describe_slice(r, l, i));
  }
  for (std::size_t l = 0; l < s.layers; ++l)
    if (!s.leaders[l])
      names.push_back("swarm leader (layer " + std::to_string(l + 1) + ")");
  std::string out = std::to_string(names.size()) + " of " + std::to_string(s.expected)
                    + " actors did not register: ";
  for (std::size_t i = 0; i < names.size() && i < 20; ++i)
    out += (i > 0 ? ", " : "") + names[i];
  if (names.size() > 20)
    out += ", ...";
  return out;
}

void resume_workers(self_ptr self) {
  auto& s = self->state;
  s.barriers.assign(s.replicas, std::nullopt);
  s.at_barrier = 0;
  for (const auto& w : s.workers)
    self->send(w, atom::resume::value);
}

void maybe_start(self_ptr self) {
  auto& s = self->state;
  if (s.state != phase::wired || !s.run_requested)
    return;
  s.state = phase::training;
  s.t0 = coordinator_state::clock_type::now();
  if (s.spec.verbose)
    caf::aout(self) << "coordinator: " << s.expected << " actors registered and wired; training "
                    << s.replicas << " replicas" << std::endl;
  resume_workers(self);
}

/// Counts one `ok` reply of the current step; runs `next` after the last one.
template <class F>
auto step_reply(self_ptr self, F next) {
  return [self, next](atom::ok) {
    if (--self->state.pending == 0)
      next();
  };
}

auto on_error(self_ptr self, std::string what) {
  return [self, what](caf::error& err) {
    if (self->state.state != phase::done)
      fail(self, what + ": " + caf::to_string(err));
  };
}

/// Relay (r, k) as the interface of its role (relay_role_of), or as a
/// narrower sink of that interface.
template <class Handle>
Handle relay_as(const coordinator_state& s, std::size_t r, std::size_t k) {
  return caf::actor_cast<Handle>(s.relays[r * (s.layers + 1) + k]);
}

void wire(self_ptr self) {
  auto& s = self->state;
  s.state = phase::wiring;
  const std::size_t L = s.layers;
  auto slices_of = [&](std::size_t r, std::size_t l) {
    std::vector<neuron_slice_actor> out;
    if (l >= L)
      return out;
    for (std::size_t i = 0; i < s.spec.cfg.topology.slices_of(l); ++i)
      out.push_back(s.slices[r * s.slices_per_replica + s.slice_offset[l] + i]);
    return out;
  };
  auto done = [self] {
    self->state.state = phase::wired;
    maybe_start(self);
  };
  s.pending = s.expected;
  for (std::size_t r = 0; r < s.replicas; ++r) {
    const batch_sink_actor worker{s.workers[r]};
    self->request(relay_as<input_relay_actor>(s, r, 0), caf::infinite, atom::wire::value,
                  slices_of(r, 0), worker)
        .then(step_reply(self, done), on_error(self, "wiring an input relay"));
    for (std::size_t k = 1; k < L; ++k)
      self->request(relay_as<hidden_relay_actor>(s, r, k), caf::infinite, atom::wire::value,
                    slices_of(r, k - 1), slices_of(r, k), worker)
          .then(step_reply(self, done), on_error(self, "wiring a hidden relay"));
    self->request(relay_as<loss_relay_actor>(s, r, L), caf::infinite, atom::wire::value,
                  slices_of(r, L - 1), worker)
        .then(step_reply(self, done), on_error(self, "wiring a loss relay"));
    // Slices of layer 1 ack to the input relay, the others send input
    // gradients to the hidden relay before them; all send blocks to the
    // relay after them.
    for (std::size_t l = 0; l < L; ++l)
      for (const auto& sl : slices_of(r, l)) {
        const auto next = relay_as<block_sink_actor>(s, r, l + 1);
        if (l == 0)
          self->request(sl, caf::infinite, atom::wire::value, relay_as<ack_sink_actor>(s, r, 0),
                        next)
              .then(step_reply(self, done), on_error(self, "wiring a neuron slice"));
        else
          self->request(sl, caf::infinite, atom::wire::value, relay_as<grad_sink_actor>(s, r, l),
                        next)
              .then(step_reply(self, done), on_error(self, "wiring a neuron slice"));
      }
    self->request(s.workers[r], caf::infinite, atom::wire::value,
                  relay_as<input_relay_actor>(s, r, 0), relay_as<loss_relay_actor>(s, r, L),
                  barrier_sink_actor{self})
        .then(step_reply(self, done), on_error(self, "wiring a shard worker"));
  }
  for (std::size_t l = 0; l < L; ++l) {
    std::vector<neuron_slice_actor> swarm;
    for (std::size_t r = 0; r < s.replicas; ++r)
      for (auto& sl : slices_of(r, l))
        swarm.push_back(sl);
    self->request(s.leaders[l], caf::infinite, atom::wire::value, swarm)
        .then(step_reply(self, done), on_error(self, "wiring a swarm leader"));
  }
}

void registered_one(self_ptr self, bool fresh) {
  auto& s = self->state;
  if (!fresh)
    return;
  if (++s.registered == s.expected && s.state == phase::registering)
    wire(self);
}

void progress(self_ptr self, std::size_t best, bool force) {
  auto& s = self->state;
  const auto& tc = s.spec.cfg.training;
  const double t = elapsed(s);
  if (!s.spec.verbose)
    return;
  if (!force && s.last_progress >= 0 && t - s.last_progress < tc.progress_interval)
    return;
  s.last_progress = t;
  const double total = static_cast<double>(s.spec.data->train.size() * tc.max_epochs);
  const double done = static_cast<double>(s.samples) / total;
  const auto& p = s.curve.back();
  caf::aout(self) << "epoch " << s.epoch << "/" << tc.max_epochs << "  samples " << s.samples
                  << "  " << fmt("%.0f", static_cast<double>(s.samples) / t) << " samples/s  loss "
                  << fmt("%.4f", p.train_loss) << "  val acc " << fmt("%.4f", p.validation_accuracy)
                  << " (replica " << best << ", best "
                  << fmt("%.4f", s.report.best_validation_accuracy) << ")  round "
                  << s.report.sync_rounds << "  elapsed " << format_duration(t) << "  ETA "
                  << format_duration(done > 0 ? t / done * (1 - done) : -1) << std::endl;
}

void finish(self_ptr self, std::size_t best);

/// Gathers replica `best`'s layers from the leaders into `dst`, then runs `next`.
template <class F>
void collect_layers(self_ptr self, std::size_t best, std::vector<layer_state>* dst, F next) {
  auto& s = self->state;
  dst->assign(s.layers, layer_state{});
  s.pending = s.layers;
  for (std::size_t l = 0; l < s.layers; ++l)
    self->request(s.leaders[l], caf::infinite, atom::collect::value,
                  static_cast<std::uint32_t>(best))
        .then(
            [self, l, dst, next](layer_state& ls) {
              (*dst)[l] = std::move(ls);
              if (--self->state.pending == 0)
                next();
            },
            on_error(self, "collecting the best replica's weights"));
}

/// After scoring: stop, or run the exchange and resume the workers.
void continue_round(self_ptr self, std::size_t best, bool stop) {
  auto& s = self->state;
  if (stop) {
    finish(self, best);
    return;
  }
  const auto policy = s.spec.cfg.topology.policy;
  if (policy == sync_policy::none || s.replicas == 1) {
    resume_workers(self);
    return;
  }
  s.pending = s.leaders.size();
  for (const auto& leader : s.leaders)
    self->request(leader, caf::infinite, atom::sync::value, static_cast<std::uint32_t>(best),
                  static_cast<std::uint8_t>(policy))
        .then(
            [self](std::uint64_t bytes) {
              self->state.report.sync_bytes += bytes;
              if (--self->state.pending == 0)
                resume_workers(self);
            },
            on_error(self, "sync round"));
}

/// All replicas are scored: record, decide, snapshot, then continue.
void scored(self_ptr self) {
  auto& s = self->state;
  const auto& tc = s.spec.cfg.training;
  const std::size_t best = pick_best(s.scores);
  const double acc = s.scores[best].accuracy;
  const bool improved = s.report.sync_rounds == 0 || acc > s.report.best_validation_accuracy;
  ++s.report.sync_rounds;
  s.report.best_replica = static_cast<std::uint32_t>(best);
  s.report.best_validation_accuracy = std::max(s.report.best_validation_accuracy, acc);
  curve_point p;
  p.epoch = s.epoch;
  p.samples = s.samples;
  p.seconds = elapsed(s);
  p.train_loss = s.loss_samples > 0 ? s.loss_sum / static_cast<double>(s.loss_samples) : 0;
  p.validation_loss = s.scores[best].loss;
  p.validation_accuracy = acc;
  s.curve.push_back(p);
  s.loss_sum = 0;
  s.loss_samples = 0;
  const bool reached = tc.target_accuracy > 0 && acc >= tc.target_accuracy;
  if (reached && !s.report.reached_target) {
    s.report.reached_target = true;
    s.report.time_to_target = p.seconds;
  }
  const bool stop = reached || s.all_finished;
  if (const auto* m = s.spec.metrics) {
    m->training_loss->Set(p.train_loss);
    for (std::size_t r = 0; r < s.scores.size() && r < m->validation_accuracy.size(); ++r)
      m->validation_accuracy[r]->Set(s.scores[r].accuracy);
    m->best_validation_accuracy->Set(s.report.best_validation_accuracy);
    m->samples_per_second->Set(static_cast<double>(s.samples) / std::max(p.seconds, 1e-9));
    m->epoch->Set(static_cast<double>(s.epoch));
    if (s.report.reached_target)
      m->time_to_target->Set(s.report.time_to_target);
  }
  progress(self, best, stop);
  if (reached && s.spec.verbose)
    caf::aout(self) << "reached target validation accuracy " << tc.target_accuracy
                    << " in sync round " << s.report.sync_rounds << " after "
                    << format_duration(p.seconds) << std::endl;
  if (tc.keep_best && improved) {
    s.best_samples = s.samples;
    s.best_epoch = s.epoch;
    collect_layers(self, best, &s.best_layers,
                   [self, best, stop] { continue_round(self, best, stop); });
    return;
  }
  continue_round(self, best, stop);
}

/// Every replica is at the barrier: score them all.
void sync_round(self_ptr self) {
  auto& s = self->state;
  s.all_finished = true;
  std::uint64_t samples = 0;
  for (const auto& b : s.barriers) {
    samples += b->samples;
    s.loss_sum += b->loss_sum;
    s.loss_samples += b->loss_samples;
    s.epoch = std::max(s.epoch, b->epoch);
    s.all_finished = s.all_finished && b->finished;
  }
  s.samples = samples;
  s.scores.assign(s.replicas, replica_score{});
  s.pending = s.replicas;
  for (std::size_t r = 0; r < s.replicas; ++r)
    self->request(s.workers[r], caf::infinite, atom::validate::value)
        .then(
            [self, r](replica_score& score) {
              self->state.scores[r] = score;
              if (--self->state.pending == 0)
                scored(self);
            },
            on_error(self, "validation pass"));
}

void write_results(self_ptr self, std::size_t best) {
  auto& s = self->state;
  const auto& cfg = s.spec.cfg;
  auto& rep = s.report;
  rep.seconds = elapsed(s);
  rep.samples = s.samples;
  rep.epochs = s.epoch;
  rep.samples_per_second = static_cast<double>(s.samples) / rep.seconds;
  rep.best_replica = static_cast<std::uint32_t>(best);
  std::vector<slice_geometry> geometry = model_geometry(cfg.model);
  std::vector<dense_params> params;
  model_checkpoint ck;
  for (std::size_t l = 0; l < s.layers; ++l) {
    params.push_back(s.final_layers[l].params);
    ck.header.activations.push_back(geometry[l].act);
  }
  std::vector<std::uint32_t> test_idx;
  const std::vector<std::uint32_t>* sel = nullptr;
  if (cfg.data.test_limit != 0 && cfg.data.test_limit < s.spec.data->test.size()) {
    for (std::uint32_t i = 0; i < cfg.data.test_limit; ++i)
      test_idx.push_back(i);
    sel = &test_idx;
  }
  const evaluation ev = evaluate_model(geometry, params, s.spec.data->test, sel);
  rep.test_accuracy = ev.accuracy;
  if (const auto* m = s.spec.metrics)
    m->test_accuracy->Set(ev.accuracy);
  rep.test_loss = ev.loss;
  ck.header.layers.assign(cfg.model.layers.begin(), cfg.model.layers.end());
  ck.header.optimizer = cfg.optimizer.kind;
  ck.header.config_hash = cfg.hash();
  const bool from_best_pass = cfg.training.keep_best && !s.best_layers.empty();
  const std::uint64_t saved = from_best_pass ? s.best_samples : s.samples;
  ck.header.samples = saved;
  ck.header.step = saved / cfg.training.batch_size;
  ck.header.epoch = from_best_pass ? s.best_epoch : s.epoch;
  ck.layers = std::move(s.final_layers);
  rep.checkpoint_path = cfg.training.output_dir + "/model.ckpt";
  rep.curve_path = cfg.training.output_dir + "/curve.csv";
  save_checkpoint(rep.checkpoint_path, ck);
  write_curve_csv(rep.curve_path, s.curve);
}

void collect_stats(self_ptr self) {
  auto& s = self->state;
  s.pending = s.leaders.size() + s.relays.size() + s.workers.size();
  auto done = [self] {
    auto& st = self->state;
    st.report.ok = true;
    st.run_promise.deliver(st.report);
    shut_down(self);
  };
  for (const auto& leader : s.leaders)
    self->request(leader, caf::infinite, atom::stats::value)
        .then(
            [self, done](slice_stats& x) {
              auto& rep = self->state.report;
              rep.dropped += x.dropped;
              rep.stale_dropped += x.stale;
              rep.max_staleness = std::max(rep.max_staleness, x.max_staleness);
              if (rep.staleness.size() < x.staleness.size())
                rep.staleness.resize(x.staleness.size(), 0);
              for (std::size_t k = 0; k < x.staleness.size(); ++k)
                rep.staleness[k] += x.staleness[k];
              if (--self->state.pending == 0)
                done();
            },
            on_error(self, "collecting swarm statistics"));
  auto add_drops = [self, done](drop_stats& x) {
    self->state.report.dropped += x.dropped;
    self->state.report.stale_dropped += x.stale;
    if (--self->state.pending == 0)
      done();
  };
  for (const auto& worker : s.workers)
    self->request(worker, caf::infinite, atom::stats::value)
        .then(add_drops, on_error(self, "collecting worker statistics"));
  for (const auto& relay : s.relays)
    self->request(relay, caf::infinite, atom::stats::value)
        .then(add_drops, on_error(self, "collecting relay statistics"));
}

void finish(self_ptr self, std::size_t best) {
  auto& s = self->state;
  s.state = phase::finishing;
  auto write = [self, best] {
    try {
      write_results(self, best);
    } catch (const std::exception& e) {
      fail(self, e.what());
      return;
    }
    collect_stats(self);
  };
  if (s.spec.cfg.training.keep_best && !s.best_layers.empty()) {
    if (s.spec.verbose)
      caf::aout(self) << "keeping the weights of the best validation pass (after " << s.best_samples
                      << " samples)" << std::endl;
    s.final_layers = s.best_layers;
    write();
    return;
  }
  collect_layers(self, best, &s.final_layers, write);
}

/// Registrations come from this process, or (cluster runs) from a node that
/// was admitted by `hello`; anonymous ones only in embedded runs.
bool trusted_sender(self_ptr self) {
  const auto& sender = self->current_sender();
  if (!sender)
    return self->state.spec.cluster_hash == 0;
  return sender->node() == self->node() || self->state.admitted.count(sender->node()) != 0;
}

/// Stores a registered actor in its slot and monitors it: a lost actor
/// ends the run with an error naming it.
template <class Handle>
bool put(self_ptr self, std::vector<Handle>& slots, std::size_t i, Handle h, std::string name) {
  if (!trusted_sender(self)) {
    caf::aout(self) << "coordinator: refused a registration of " << name
                    << " from a node that was not admitted" << std::endl;
    return false;
  }
  if (i >= slots.size() || slots[i] || !h) {
    caf::aout(self) << "coordinator: ignored a duplicate or unknown registration of " << name
                    << std::endl;
    return false;
  }
  self->monitor(h);
  self->state.names[h.address()] = std::move(name);
  slots[i] = std::move(h);
  return true;
}

} // namespace

coordinator_actor::behavior_type
coordinator(coordinator_actor::stateful_pointer<coordinator_state> self, coordinator_spec spec) {
  auto& s = self->state;
  s.spec = std::move(spec);
  const auto& cfg = s.spec.cfg;
  s.layers = cfg.model.layers.size() - 1;
  s.replicas = cfg.topology.replicas;
  for (std::size_t l = 0; l < s.layers; ++l) {
    s.slice_offset.push_back(s.slices_per_replica);
    s.slices_per_replica += cfg.topology.slices_of(l);
  }
  s.slices.resize(s.replicas * s.slices_per_replica);
  s.relays.resize(s.replicas * (s.layers + 1));
  s.workers.resize(s.replicas);
  s.leaders.resize(s.layers);
  s.expected = s.slices.size() + s.relays.size() + s.workers.size() + s.leaders.size();
  self->delayed_send(self,
                     std::chrono::duration_cast<caf::timespan>(
                         std::chrono::duration<double>(cfg.system.registration_timeout)),
                     atom::deadline::value);
  self->set_down_handler([=](caf::down_msg& msg) {
    auto& st = self->state;
    if (st.state == phase::done)
      return;
    auto it = st.names.find(msg.source);
    const std::string who = it != st.names.end() ? it->second : std::string{"an actor"};
    fail(self, "lost " + who + " (" + caf::to_string(msg.reason)
                   + "): its node crashed, froze past the heartbeat timeout, or shut down");
  });
  return {
      [=](atom::hello, const std::string& node, std::uint64_t hash) -> caf::result<atom::ok> {
        auto& st = self->state;
        if (hash != st.spec.cluster_hash) {
          // A std::string, not a char array: actor_ostream prints an array
          // through deep_to_string, in quotes.
          std::string msg = "refused node " + node + ": its cluster description hashes to "
                            + hash_hex(hash) + ", the coordinator's to "
                            + hash_hex(st.spec.cluster_hash);
          caf::aout(self) << "coordinator: " << msg << std::endl;
          return caf::make_error(caf::sec::invalid_argument, std::move(msg));
        }
        if (const auto& sender = self->current_sender())
          st.admitted.insert(sender->node());
        if (st.spec.verbose)
          caf::aout(self) << "coordinator: node " << node << " joined" << std::endl;
        return atom::ok::value;
      },
      [=](atom::run) -> caf::result<run_report> {
        auto& st = self->state;
        if (st.run_requested)
          return caf::make_error(caf::sec::invalid_argument, "run requested twice");
        if (st.state == phase::done) { // failed before anyone asked
          st.run_requested = true;
          self->quit();
          return st.report;
        }
        st.run_requested = true;
        st.run_promise = self->make_response_promise<run_report>();
        maybe_start(self);
        return st.run_promise;
      },
      [=](atom::reg, std::uint32_t r, std::uint32_t l, std::uint32_t i, neuron_slice_actor a) {
        auto& st = self->state;
        const bool in_range =
            r < st.replicas && l < st.layers && i < st.spec.cfg.topology.slices_of(l);
        registered_one(self, in_range
                                 && put(self, st.slices,
                                        r * st.slices_per_replica + st.slice_offset[l] + i,
                                        std::move(a), describe_slice(r, l, i)));
      },
      [=](atom::reg, std::uint32_t r, std::uint32_t k, caf::actor a) {
        auto& st = self->state;
        registered_one(self, r < st.replicas && k <= st.layers
                                 && put(self, st.relays, r * (st.layers + 1) + k, std::move(a),
                                        describe_relay(r, k, st.layers)));
      },
      [=](atom::reg, std::uint32_t r, shard_worker_actor a) {
        registered_one(self, put(self, self->state.workers, r, std::move(a),
                                 "shard worker (replica " + std::to_string(r) + ")"));
      },
      [=](atom::reg, std::uint32_t l, swarm_leader_actor a) {
        registered_one(self, put(self, self->state.leaders, l, std::move(a),
                                 "swarm leader (layer " + std::to_string(l + 1) + ")"));
      },
      [=](atom::deadline) {
        auto& st = self->state;
        if (self->current_sender() != self->ctrl()) // only our own timer may end registration
          return;
        if (st.state == phase::registering)
          fail(self, "registration deadline of "
                         + fmt("%g", st.spec.cfg.system.registration_timeout)
                         + "s passed: " + missing_actors(st));
      },
      [=](atom::barrier, barrier_report& r) {
        auto& st = self->state;
        if (r.diverged && st.state != phase::done) {
          fail(self, "training diverged: replica " + std::to_string(r.replica)
                         + " saw a non-finite loss in epoch " + std::to_string(r.epoch) + " after "
                         + std::to_string(r.samples)
                         + " samples (lower optimizer.learning_rate); nothing was written");
          return;
        }
        if (st.state != phase::training || r.replica >= st.replicas || st.barriers[r.replica]) {
          caf::aout(self) << "coordinator: ignored an unexpected barrier report from replica "
                          << r.replica << std::endl;
          return;
        }
        st.barriers[r.replica] = r;
        if (++st.at_barrier == st.replicas)
          sync_round(self);
      },
  };
}

} // namespace nettorrent
