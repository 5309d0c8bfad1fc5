#include "swarm_leader.hpp"

#include <memory>
#include <string>

#include <caf/all.hpp>

#include "fan_in.hpp"
#include "status.hpp"

#include "nettorrent/config.hpp"
#include "nettorrent/slice_ops.hpp"
#include "nettorrent/sync_policy.hpp"

namespace nettorrent {

namespace {

using self_ptr = swarm_leader_actor::stateful_pointer<swarm_leader_state>;

std::uint64_t policy_state_bytes(const policy_state& s) {
  std::uint64_t n = 0;
  for (const auto& p : s.parts)
    n += params_bytes(p);
  return n;
}

/// The post-exchange layer: the read replicas' slices glued into whole
/// layers (replica order), then the policy's exchange on them.
exchange_result post_exchange(const swarm_leader_state& s, std::vector<layer_state>& states,
                              std::size_t best, const sync_policy_def& policy,
                              sync_request& request) {
  const std::size_t R = s.spec.replicas();
  const std::size_t P = s.spec.slices();
  std::vector<layer_state> whole(R);
  for (std::size_t r = 0; r < R; ++r)
    if (!policy.picks_best || r == best)
      whole[r] = glue_slices(
          {std::make_move_iterator(states.begin() + static_cast<std::ptrdiff_t>(r * P)),
           std::make_move_iterator(states.begin() + static_cast<std::ptrdiff_t>((r + 1) * P))});
  exchange_input in{whole, best, request.cfg, request.theta, request.state};
  exchange_result out;
  out.post = policy.exchange(in);
  if (policy.keeps_state)
    out.state = std::move(request.state);
  return out;
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
          sync_request& req) -> caf::result<exchange_result> {
        auto& s = self->state;
        const sync_policy_def* def = policy_def_of_id(policy);
        if (best >= s.spec.replicas() || def == nullptr)
          return caf::make_error(caf::sec::invalid_argument, "sync: bad replica or policy");
        if (def->check_request != nullptr)
          if (auto why = def->check_request(req.cfg, req.theta, req.state); !why.empty())
            return caf::make_error(caf::sec::invalid_argument, std::move(why));
        if (const auto* m = s.spec.metrics) {
          m->sync_rounds->Increment();
          m->sync_winner->Set(best);
        }
        if (s.spec.replicas() == 1 || !def->exchanges)
          return caf::make_error(caf::sec::invalid_argument,
                                 "sync: nothing to exchange with one replica or policy none");
        const std::size_t R = s.spec.replicas();
        const std::size_t P = s.spec.slices();
        // A policy that picks the best replica reads only that one.
        std::vector<std::pair<std::size_t, std::size_t>> reads; // (replica, slice)
        for (std::size_t r = 0; r < R; ++r)
          if (!def->picks_best || r == best)
            for (std::size_t i = 0; i < P; ++i)
              reads.emplace_back(r, i);
        const std::uint64_t request_bytes = params_bytes(req.theta) + policy_state_bytes(req.state);
        auto request = std::make_shared<sync_request>(std::move(req));
        return fan_in<exchange_result, layer_state>(
            self, reads.size(), "sync",
            [=](std::size_t k) {
              const auto [r, i] = reads[k];
              return self->request(self->state.at(r, i), caf::infinite, atom::get_state::value);
            },
            [=](std::vector<layer_state>& got) {
              // Bytes the round moves through this leader: the slices' states
              // read, the outer state it was sent (policy outer) and the
              // result it sends back.
              std::uint64_t bytes = request_bytes;
              std::vector<layer_state> states(R * P);
              for (std::size_t k = 0; k < reads.size(); ++k) {
                bytes += state_bytes(got[k]);
                states[reads[k].first * P + reads[k].second] = std::move(got[k]);
              }
              exchange_result x = post_exchange(self->state, states, best, *def, *request);
              for (const auto& done : x.post)
                bytes += state_bytes(done);
              x.bytes = bytes + policy_state_bytes(x.state);
              return x;
            });
      },
      [=](atom::restore, std::uint32_t replica,
          const layer_state& full) -> caf::result<std::uint64_t> {
        auto& s = self->state;
        const std::size_t P = s.spec.slices();
        if (replica >= s.spec.replicas() || s.slices.empty())
          return caf::make_error(caf::sec::invalid_argument, "restore: no such replica");
        const auto cols = split_columns(static_cast<std::size_t>(full.params.w.cols()), P);
        auto parts = std::make_shared<std::vector<layer_state>>();
        std::uint64_t bytes = 0;
        for (std::size_t i = 0; i < P; ++i) {
          parts->push_back(cut_slice(full, cols[i]));
          bytes += state_bytes(parts->back());
        }
        return fan_in<std::uint64_t, atom::ok>(
            self, P, "restore",
            [=](std::size_t i) {
              return self->request(self->state.at(replica, i), caf::infinite,
                                   atom::set_state::value, std::move((*parts)[i]));
            },
            [=](std::vector<atom::ok>&) {
              if (const auto* m = self->state.spec.metrics)
                m->sync_bytes->Increment(static_cast<double>(bytes));
              return bytes;
            });
      },
      [=](atom::collect, std::uint32_t replica) -> caf::result<layer_state> {
        auto& s = self->state;
        if (replica >= s.spec.replicas())
          return caf::make_error(caf::sec::invalid_argument, "collect: no such replica");
        const std::size_t P = s.spec.slices();
        return fan_in<layer_state, layer_state>(
            self, P, "collect",
            [=](std::size_t i) {
              return self->request(self->state.at(replica, i), caf::infinite,
                                   atom::get_state::value);
            },
            [](std::vector<layer_state>& parts) { return glue_slices(parts); });
      },
      [=](atom::status) {
        const auto& s = self->state;
        return std::to_string(s.alive) + " of " + std::to_string(s.slices.size())
               + " slices alive";
      },
      [=](atom::stats) -> caf::result<slice_stats> {
        auto& s = self->state;
        return fan_in<slice_stats, slice_stats>(
            self, s.slices.size(), "stats",
            [=](std::size_t i) {
              return self->request(self->state.slices[i], caf::infinite, atom::stats::value);
            },
            [](std::vector<slice_stats>& all) {
              slice_stats total;
              for (const auto& x : all) {
                total.updates += x.updates;
                total.dropped += x.dropped;
                total.stale += x.stale;
                total.max_staleness = std::max(total.max_staleness, x.max_staleness);
                if (total.staleness.size() < x.staleness.size())
                  total.staleness.resize(x.staleness.size(), 0);
                for (std::size_t k = 0; k < x.staleness.size(); ++k)
                  total.staleness[k] += x.staleness[k];
              }
              return total;
            });
      },
  };
}

} // namespace nettorrent
