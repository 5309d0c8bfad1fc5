#include "swarm_leader.hpp"

#include <memory>

#include <caf/all.hpp>

#include "nettorrent/config.hpp"
#include "nettorrent/slice_ops.hpp"

namespace nettorrent {

namespace {

using self_ptr = swarm_leader_actor::stateful_pointer<swarm_leader_state>;

/// Counts outstanding replies of one sync round and answers the coordinator
/// with the bytes moved when the last one arrives.
struct round_tracker {
  caf::typed_response_promise<std::uint64_t> promise;
  std::size_t pending = 0;
  std::uint64_t bytes = 0;
  bool failed = false;

  const swarm_metrics* metrics = nullptr;

  void finish_one() {
    if (--pending == 0 && !failed) {
      if (metrics != nullptr)
        metrics->sync_bytes->Increment(static_cast<double>(bytes));
      promise.deliver(bytes);
    }
  }
  void fail(const caf::error& err) {
    if (!failed) {
      failed = true;
      promise.deliver(err);
    }
  }
};

void push_state(self_ptr self, std::shared_ptr<round_tracker> t, const neuron_slice_actor& dst,
                const layer_state& st) {
  t->bytes += state_bytes(st);
  self->request(dst, caf::infinite, atom::set_state::value, st)
      .then([t](atom::ok) { t->finish_one(); }, [t](caf::error& err) { t->fail(err); });
}

/// Policy best: slice i of `best` sends its state to slice i of every other replica.
void sync_best(self_ptr self, std::shared_ptr<round_tracker> t, std::size_t best) {
  auto& s = self->state;
  const std::size_t R = s.spec.replicas();
  const std::size_t P = s.spec.slices();
  t->pending = P * (R - 1);
  for (std::size_t i = 0; i < P; ++i) {
    self->request(s.at(best, i), caf::infinite, atom::get_state::value)
        .then(
            [=](layer_state& st) {
              t->bytes += state_bytes(st);
              for (std::size_t r = 0; r < R; ++r)
                if (r != best)
                  push_state(self, t, self->state.at(r, i), st);
            },
            [t](caf::error& err) { t->fail(err); });
  }
}

/// Policy average: every replica's slice i gets the element-wise mean of all
/// replicas' slice i (weights and optimizer moments), summed in replica order.
void sync_average(self_ptr self, std::shared_ptr<round_tracker> t) {
  auto& s = self->state;
  const std::size_t R = s.spec.replicas();
  const std::size_t P = s.spec.slices();
  t->pending = P * R;
  for (std::size_t i = 0; i < P; ++i) {
    auto states = std::make_shared<std::vector<layer_state>>(R);
    auto arrived = std::make_shared<std::size_t>(0);
    for (std::size_t r = 0; r < R; ++r) {
      self->request(s.at(r, i), caf::infinite, atom::get_state::value)
          .then(
              [=](layer_state& st) {
                t->bytes += state_bytes(st);
                (*states)[r] = std::move(st);
                if (++*arrived < R)
                  return;
                std::vector<const layer_state*> ptrs;
                for (const auto& x : *states)
                  ptrs.push_back(&x);
                const layer_state mean = average_states(ptrs);
                for (std::size_t q = 0; q < R; ++q)
                  push_state(self, t, self->state.at(q, i), mean);
              },
              [t](caf::error& err) { t->fail(err); });
    }
  }
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
      [=](atom::sync, std::uint32_t best, std::uint8_t policy) -> caf::result<std::uint64_t> {
        auto& s = self->state;
        if (best >= s.spec.replicas() || policy > static_cast<std::uint8_t>(sync_policy::none))
          return caf::make_error(caf::sec::invalid_argument, "sync: bad replica or policy");
        const auto p = static_cast<sync_policy>(policy);
        if (const auto* m = s.spec.metrics) {
          m->sync_rounds->Increment();
          m->sync_winner->Set(best);
        }
        if (s.spec.replicas() == 1 || p == sync_policy::none)
          return std::uint64_t{0};
        auto t = std::make_shared<round_tracker>();
        t->promise = self->make_response_promise<std::uint64_t>();
        t->metrics = s.spec.metrics;
        if (p == sync_policy::best)
          sync_best(self, t, best);
        else
          sync_average(self, t);
        return t->promise;
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
