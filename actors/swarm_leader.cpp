#include "swarm_leader.hpp"

#include <memory>

#include <caf/all.hpp>

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
/// (summed in replica order), glued.
layer_state post_exchange(const swarm_leader_state& s, std::vector<layer_state>& states,
                          std::size_t best, sync_policy p) {
  const std::size_t R = s.spec.replicas();
  const std::size_t P = s.spec.slices();
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
  return glue_slices(parts);
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
      [=](atom::sync, std::uint32_t best, std::uint8_t policy) -> caf::result<exchange_result> {
        auto& s = self->state;
        if (best >= s.spec.replicas() || policy > static_cast<std::uint8_t>(sync_policy::none))
          return caf::make_error(caf::sec::invalid_argument, "sync: bad replica or policy");
        const auto p = static_cast<sync_policy>(policy);
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
        // best reads the best replica only; average reads every replica.
        std::vector<std::size_t> read;
        for (std::size_t r = 0; r < R; ++r)
          if (p == sync_policy::average || r == best)
            read.push_back(r);
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
                      t->promise.deliver(exchange_result{
                          post_exchange(self->state, t->states, best, p), t->bytes});
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
