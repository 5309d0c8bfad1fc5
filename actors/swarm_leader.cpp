#include "swarm_leader.hpp"

#include <memory>
#include <string>

#include <caf/all.hpp>

#include "status.hpp"

#include "nettorrent/config.hpp"
#include "nettorrent/slice_ops.hpp"

namespace nettorrent {

namespace {

using self_ptr = swarm_leader_actor::stateful_pointer<swarm_leader_state>;

/// Gathers slice states of one exchange; when the last arrives, computes the
/// post-exchange layer and answers the coordinator. Reads only: no slice is
/// changed until the coordinator has the result and sends `restore`.
struct exchange_tracker {
  caf::typed_response_promise<exchange_result> promise;
  std::vector<layer_state> states; ///< [r * P + i], as they arrive
  std::size_t pending = 0;
  std::uint64_t bytes = 0;
  bool failed = false;

  void fail(const caf::error& err) {
    if (!failed) {
      failed = true;
      promise.deliver(err);
    }
  }
};

/// Policy best: the best replica's slices, glued. Policy average: per slice
/// i, the element-wise mean over replicas of weights and optimizer moments
/// (summed in replica order), glued. Policy outer: every replica's slices
/// glued, then the outer step on the whole layer (nettorrent/outer.hpp).
exchange_result post_exchange(const swarm_leader_state& s, std::vector<layer_state>& states,
                              std::size_t best, sync_policy p, outer_request& outer) {
  const std::size_t R = s.spec.replicas();
  const std::size_t P = s.spec.slices();
  exchange_result out;
  if (p == sync_policy::outer) {
    std::vector<layer_state> whole(R);
    std::vector<const layer_state*> ptrs;
    for (std::size_t r = 0; r < R; ++r) {
      whole[r] = glue_slices(
          {std::make_move_iterator(states.begin() + static_cast<std::ptrdiff_t>(r * P)),
           std::make_move_iterator(states.begin() + static_cast<std::ptrdiff_t>((r + 1) * P))});
      ptrs.push_back(&whole[r]);
    }
    out.post = outer_exchange(outer.cfg, ptrs, outer.state);
    out.velocity = std::move(outer.state.velocity);
    return out;
  }
  std::vector<layer_state> parts(P);
  for (std::size_t i = 0; i < P; ++i) {
    if (p == sync_policy::best) {
      parts[i] = std::move(states[best * P + i]);
      continue;
    }
    std::vector<const layer_state*> ptrs;
    for (std::size_t r = 0; r < R; ++r)
      ptrs.push_back(&states[r * P + i]);
    parts[i] = average_states(ptrs);
  }
  out.post.push_back(glue_slices(parts));
  return out;
}

/// The outer request's hyper-parameters and shapes (a request may come over
/// the network; the layer's shape is checked by the outer step): "" if
/// fine, else what is wrong.
std::string check_outer(const outer_request& o) {
  const auto& c = o.cfg;
  if (!(c.learning_rate > 0 && c.learning_rate <= 10))
    return "sync: outer learning rate " + std::to_string(c.learning_rate)
           + " is out of range (0, 10]";
  if (!(c.momentum >= 0 && c.momentum < 1))
    return "sync: outer momentum " + std::to_string(c.momentum) + " is out of range [0, 1)";
  const auto& t = o.state.theta;
  const auto& v = o.state.velocity;
  if (t.w.cols() != t.b.size() || !same_shape(t, v) || t.w.size() == 0)
    return "sync: the outer state's weights (" + std::to_string(t.w.rows()) + " x "
           + std::to_string(t.w.cols()) + ", bias " + std::to_string(t.b.size())
           + ") and momentum (" + std::to_string(v.w.rows()) + " x " + std::to_string(v.w.cols())
           + ", bias " + std::to_string(v.b.size()) + ") do not match";
  return {};
}

} // namespace

swarm_leader_actor::behavior_type
swarm_leader(swarm_leader_actor::stateful_pointer<swarm_leader_state> self, leader_spec spec) {
  self->state.spec = spec;
  self->set_down_handler([=](caf::down_msg& msg) {
    auto& s = self->state;
    if (s.alive > 0)
      --s.alive;
    if (const auto* m = s.spec.metrics) {
      m->peers_alive->Set(static_cast<double>(s.alive));
      if (msg.reason != caf::exit_reason::user_shutdown)
        m->peer_failures->Increment();
    }
    // The coordinator stops every actor with user_shutdown at the end of a
    // run: that is no failure worth a line.
    if (msg.reason != caf::exit_reason::user_shutdown)
      caf::aout(self) << "swarm leader " << s.spec.layer + 1 << ": a slice went down ("
                      << caf::to_string(msg.reason) << "), " << s.alive << " of " << s.slices.size()
                      << " alive" << std::endl;
  });
  return {
      [=](atom::wire, std::vector<neuron_slice_actor>& slices) -> caf::result<atom::ok> {
        auto& s = self->state;
        if (slices.size() != s.spec.replicas() * s.spec.slices())
          return caf::make_error(caf::sec::invalid_argument,
                                 "swarm leader: wrong number of slices");
        s.slices = std::move(slices);
        s.alive = s.slices.size();
        if (const auto* m = s.spec.metrics)
          m->peers_alive->Set(static_cast<double>(s.alive));
        for (const auto& sl : s.slices)
          self->monitor(sl);
        return atom::ok::value;
      },
      [=](atom::sync, std::uint32_t best, std::uint8_t policy,
          outer_request& outer) -> caf::result<exchange_result> {
        auto& s = self->state;
        if (best >= s.spec.replicas() || policy > static_cast<std::uint8_t>(sync_policy::outer))
          return caf::make_error(caf::sec::invalid_argument, "sync: bad replica or policy");
        const auto p = static_cast<sync_policy>(policy);
        if (p == sync_policy::outer)
          if (auto why = check_outer(outer); !why.empty())
            return caf::make_error(caf::sec::invalid_argument, std::move(why));
        if (const auto* m = s.spec.metrics) {
          m->sync_rounds->Increment();
          m->sync_winner->Set(best);
        }
        if (s.spec.replicas() == 1 || p == sync_policy::none)
          return caf::make_error(caf::sec::invalid_argument,
                                 "sync: nothing to exchange with one replica or policy none");
        const std::size_t R = s.spec.replicas();
        const std::size_t P = s.spec.slices();
        auto t = std::make_shared<exchange_tracker>();
        t->promise = self->make_response_promise<exchange_result>();
        // best reads the best replica only; average and outer every replica.
        std::vector<std::size_t> read;
        for (std::size_t r = 0; r < R; ++r)
          if (p != sync_policy::best || r == best)
            read.push_back(r);
        const std::uint64_t request_bytes =
            params_bytes(outer.state.theta) + params_bytes(outer.state.velocity);
        auto request = std::make_shared<outer_request>(std::move(outer));
        t->states.resize(R * P);
        t->pending = read.size() * P;
        for (std::size_t r : read)
          for (std::size_t i = 0; i < P; ++i)
            self->request(s.at(r, i), caf::infinite, atom::get_state::value)
                .then(
                    [=](layer_state& st) {
                      t->bytes += state_bytes(st);
                      t->states[r * P + i] = std::move(st);
                      if (--t->pending > 0 || t->failed)
                        return;
                      try {
                        auto x = post_exchange(self->state, t->states, best, p, *request);
                        // Bytes the round moves through this leader: the slices'
                        // states read, the outer state it was sent (policy outer)
                        // and the result it sends back.
                        x.bytes = t->bytes + request_bytes;
                        for (const auto& done : x.post)
                          x.bytes += state_bytes(done);
                        x.bytes += params_bytes(x.velocity);
                        t->promise.deliver(std::move(x));
                      } catch (const std::exception& e) { // slices of mismatched shapes
                        t->fail(caf::make_error(caf::sec::invalid_argument,
                                                std::string{"sync: "} + e.what()));
                      }
                    },
                    [t](caf::error& err) { t->fail(err); });
        return t->promise;
      },
      [=](atom::restore, std::uint32_t replica,
          const layer_state& full) -> caf::result<std::uint64_t> {
        auto& s = self->state;
        const std::size_t P = s.spec.slices();
        if (replica >= s.spec.replicas() || s.slices.empty())
          return caf::make_error(caf::sec::invalid_argument, "restore: no such replica");
        const auto cols = split_columns(static_cast<std::size_t>(full.params.w.cols()), P);
        auto rp = self->make_response_promise<std::uint64_t>();
        auto pending = std::make_shared<std::size_t>(P);
        auto bytes = std::make_shared<std::uint64_t>(0);
        auto failed = std::make_shared<bool>(false);
        for (std::size_t i = 0; i < P; ++i) {
          layer_state part = cut_slice(full, cols[i]);
          *bytes += state_bytes(part);
          self->request(s.at(replica, i), caf::infinite, atom::set_state::value, std::move(part))
              .then(
                  [=](atom::ok) mutable {
                    if (--*pending == 0 && !*failed) {
                      if (const auto* m = self->state.spec.metrics)
                        m->sync_bytes->Increment(static_cast<double>(*bytes));
                      rp.deliver(*bytes);
                    }
                  },
                  [=](caf::error& err) mutable {
                    if (!*failed) {
                      *failed = true;
                      rp.deliver(err);
                    }
                  });
        }
        return rp;
      },
      [=](atom::collect, std::uint32_t replica) -> caf::result<layer_state> {
        auto& s = self->state;
        if (replica >= s.spec.replicas())
          return caf::make_error(caf::sec::invalid_argument, "collect: no such replica");
        const std::size_t P = s.spec.slices();
        auto rp = self->make_response_promise<layer_state>();
        auto parts = std::make_shared<std::vector<layer_state>>(P);
        auto arrived = std::make_shared<std::size_t>(0);
        for (std::size_t i = 0; i < P; ++i)
          self->request(s.at(replica, i), caf::infinite, atom::get_state::value)
              .then(
                  [=](layer_state& st) mutable {
                    (*parts)[i] = std::move(st);
                    if (++*arrived == P)
                      rp.deliver(glue_slices(*parts));
                  },
                  [=](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
      [=](atom::status) {
        const auto& s = self->state;
        return std::to_string(s.alive) + " of " + std::to_string(s.slices.size())
               + " slices alive";
      },
      [=](atom::stats) -> caf::result<slice_stats> {
        auto& s = self->state;
        auto rp = self->make_response_promise<slice_stats>();
        auto total = std::make_shared<slice_stats>();
        auto arrived = std::make_shared<std::size_t>(0);
        const std::size_t n = s.slices.size();
        for (const auto& sl : s.slices)
          self->request(sl, caf::infinite, atom::stats::value)
              .then(
                  [=](slice_stats& x) mutable {
                    total->updates += x.updates;
                    total->dropped += x.dropped;
                    total->stale += x.stale;
                    total->max_staleness = std::max(total->max_staleness, x.max_staleness);
                    if (total->staleness.size() < x.staleness.size())
                      total->staleness.resize(x.staleness.size(), 0);
                    for (std::size_t k = 0; k < x.staleness.size(); ++k)
                      total->staleness[k] += x.staleness[k];
                    if (++*arrived == n)
                      rp.deliver(*total);
                  },
                  [=](caf::error& err) mutable { rp.deliver(err); });
        return rp;
      },
  };
}

} // namespace nettorrent
