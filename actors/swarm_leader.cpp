#include "swarm_leader.hpp"

#include <algorithm>
#include <memory>
#include <string>

#include <caf/all.hpp>

#include "fan_in.hpp"
#include "status.hpp"

#include "nettorrent/config.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/slice_ops.hpp"
#include "nettorrent/sync_codec.hpp"
#include "nettorrent/sync_policy.hpp"

namespace nettorrent {

namespace {

using self_ptr = swarm_leader_actor::stateful_pointer<swarm_leader_state>;

/// A slice's part of the round as a layer state: its weights rebuilt from
/// the last round's columns `base` (unread under f32).
layer_state rebuilt(round_payload&& p, const dense_params& base) {
  return layer_state{decode_params(p.weights, base), std::move(p.w_state), std::move(p.b_state)};
}

/// The post-exchange layer: the read replicas' slices glued into whole
/// layers (replica order), then the policy's exchange on them; under a sync
/// precision other than f32, the new weights coded as their change from
/// theta, and every post state holding exactly what that change gives.
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
  const sync_precision coding = request.coding;
  dense_params theta;
  if (coding != sync_precision::f32)
    theta = request.theta; // the exchange may take request.theta
  exchange_input in{whole, best, request.cfg, request.theta, request.state};
  exchange_result out;
  out.post = policy.exchange(in);
  if (policy.keeps_state)
    out.state = std::move(request.state);
  if (coding != sync_precision::f32 && !out.post.empty()) {
    out.update = encode_params(out.post.front().params, theta, coding);
    const dense_params applied = decode_params(out.update, theta);
    for (auto& p : out.post)
      p.params = applied;
  }
  return out;
}

/// What is wrong with a sync request's weights for its precision, or "".
std::string check_coding(const sync_request& req, std::size_t slices) {
  if (static_cast<unsigned>(req.coding) > static_cast<unsigned>(sync_precision::int8))
    return "sync: unknown sync precision " + std::to_string(static_cast<unsigned>(req.coding));
  if (req.coding == sync_precision::f32)
    return {};
  if (req.theta.w.size() == 0 || req.theta.w.cols() != req.theta.b.size()
      || static_cast<std::size_t>(req.theta.w.cols()) < slices)
    return "sync: a coded round needs the last round's weights of the layer";
  return {};
}

/// Sends slice i of replica `replica` its part `parts[i]` with the atom
/// `message` (set_state or round_set) and answers, once every slice acked, with the
/// bytes handed out (counted in the swarm's sync bytes).
template <class Atom, class Part>
caf::typed_response_promise<std::uint64_t> hand_out(self_ptr self, std::uint32_t replica, Atom message,
                                                    std::vector<Part> parts, std::uint64_t bytes,
                                                    const char* what) {
  auto shared = std::make_shared<std::vector<Part>>(std::move(parts));
  return fan_in<std::uint64_t, atom::ok>(
      self, shared->size(), what,
      [=](std::size_t i) {
        return self->request(self->state.at(replica, i), caf::infinite, message,
                             std::move((*shared)[i]));
      },
      [=](std::vector<atom::ok>&) {
        if (const auto* m = self->state.spec.metrics)
          m->sync_bytes->Increment(static_cast<double>(bytes));
        return bytes;
      });
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
        if (auto why = check_coding(req, P); !why.empty())
          return caf::make_error(caf::sec::invalid_argument, std::move(why));
        auto request = std::make_shared<sync_request>(std::move(req));
        // The columns of the last round's weights each slice's change starts from.
        auto bases = std::make_shared<std::vector<dense_params>>();
        if (request->coding != sync_precision::f32) {
          const layer_state theta{request->theta, {}, {}};
          for (const auto& cols : split_columns(static_cast<std::size_t>(theta.params.w.cols()), P))
            bases->push_back(cut_slice(theta, cols).params);
        }
        return fan_in<exchange_result, round_payload>(
            self, reads.size(), "sync",
            [=](std::size_t k) {
              const auto [r, i] = reads[k];
              return self->request(self->state.at(r, i), caf::infinite, atom::round_get::value,
                                   static_cast<std::uint8_t>(request->coding), request->moments);
            },
            [=](std::vector<round_payload>& got) {
              // The bytes the slices sent this leader (what crosses hosts when
              // the leader sits with the coordinator; the apply counts the way
              // back).
              std::uint64_t bytes = 0;
              std::vector<layer_state> states(R * P);
              for (std::size_t k = 0; k < reads.size(); ++k) {
                const std::size_t i = reads[k].second;
                // f32 carries the weights themselves: no base, the payload's own shape.
                static const dense_params none;
                const dense_params& base = bases->empty() ? none : (*bases)[i];
                const coded_matrix& w = got[k].weights.w;
                const auto why = bases->empty() ? check_payload(got[k], w.rows, w.cols)
                                                : check_payload(got[k], base.w.rows(),
                                                                base.w.cols());
                if (!why.empty())
                  throw error("slice " + std::to_string(i) + " of replica "
                              + std::to_string(reads[k].first) + " sent " + why);
                bytes += payload_bytes(got[k]);
                states[reads[k].first * P + i] = rebuilt(std::move(got[k]), base);
              }
              exchange_result x = post_exchange(self->state, states, best, *def, *request);
              x.bytes = bytes;
              if (const auto* m = self->state.spec.metrics)
                m->sync_bytes->Increment(static_cast<double>(bytes));
              return x;
            });
      },
      [=](atom::round_set, std::uint32_t replica,
          const round_payload& whole) -> caf::result<std::uint64_t> {
        auto& s = self->state;
        const std::size_t P = s.spec.slices();
        if (replica >= s.spec.replicas() || s.slices.empty())
          return caf::make_error(caf::sec::invalid_argument, "round_set: no such replica");
        const std::int64_t n = whole.weights.w.cols;
        if (auto why = check_payload(whole, whole.weights.w.rows, n);
            !why.empty() || n < 1 || static_cast<std::size_t>(n) < P)
          return caf::make_error(caf::sec::invalid_argument,
                                 "round_set: " + (why.empty() ? "too few columns" : why));
        std::vector<round_payload> parts;
        std::uint64_t bytes = 0;
        for (const auto& cols : split_columns(static_cast<std::size_t>(n), P)) {
          parts.push_back(cut_payload(whole, cols));
          bytes += payload_bytes(parts.back());
        }
        return hand_out(self, replica, atom::round_set::value, std::move(parts), bytes,
                        "round_set");
      },
      [=](atom::restore, std::uint32_t replica,
          const layer_state& full) -> caf::result<std::uint64_t> {
        auto& s = self->state;
        const std::size_t P = s.spec.slices();
        if (replica >= s.spec.replicas() || s.slices.empty())
          return caf::make_error(caf::sec::invalid_argument, "restore: no such replica");
        const auto cols = split_columns(static_cast<std::size_t>(full.params.w.cols()), P);
        std::vector<layer_state> parts;
        std::uint64_t bytes = 0;
        for (std::size_t i = 0; i < P; ++i) {
          parts.push_back(cut_slice(full, cols[i]));
          bytes += state_bytes(parts.back());
        }
        return hand_out(self, replica, atom::set_state::value, std::move(parts), bytes, "restore");
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
