#include "neuron_slice.hpp"

#include <chrono>
#include <string>

#include <caf/all.hpp>

#include "status.hpp"

#include "nettorrent/sync_codec.hpp"

#include "validation.hpp"

namespace nettorrent {

namespace {

bool same_moments(const optimizer_state& a, const optimizer_state& b) {
  return a.m.size() == b.m.size() && a.v.size() == b.v.size();
}

bool unread_moments(const layer_state& ls) {
  for (auto vec : state_vectors)
    if (!(ls.w_state.*vec).empty() || !(ls.b_state.*vec).empty())
      return false;
  return ls.w_state.steps == 0 && ls.b_state.steps == 0;
}

/// A residual of `n` (a state's own, or zeros when it has none: a round
/// that did not read it, or a run without feedback), or "" if wrong.
std::string take_residual(std::vector<float>& r, std::size_t n, bool feedback) {
  if (!feedback) {
    if (!r.empty())
      return "a feedback residual in a run without topology.sync_feedback";
    return {};
  }
  if (r.empty())
    r.assign(n, 0.0f);
  return r.size() == n ? std::string{} : "a feedback residual of the wrong size";
}

} // namespace

neuron_slice_actor::behavior_type
neuron_slice(neuron_slice_actor::stateful_pointer<neuron_slice_state> self, slice_spec spec) {
  auto& st = self->state;
  st.spec = spec;
  st.params = init_dense(spec.seed, spec.geometry);
  resize_grads(st.params, st.grads);
  st.opt = make_optimizer(spec.optimizer);
  st.w_state = st.opt->make_state(static_cast<std::size_t>(st.params.w.size()));
  st.b_state = st.opt->make_state(static_cast<std::size_t>(st.params.b.size()));
  if (spec.sync_coding != sync_precision::f32)
    st.round_weights = st.params;
  if (spec.sync_feedback) {
    st.w_state.r.assign(static_cast<std::size_t>(st.params.w.size()), 0.0f);
    st.b_state.r.assign(static_cast<std::size_t>(st.params.b.size()), 0.0f);
  }
  const auto fan_in = static_cast<Eigen::Index>(spec.geometry.fan_in);
  const auto width = static_cast<Eigen::Index>(spec.geometry.cols.size());
  return {
      [=](atom::forward, std::uint32_t inc, std::uint64_t batch, bool train,
          const shared_matrix& x) {
        auto& s = self->state;
        if (drop_if_stale(self, s.stats.stale, inc, s.spec.incarnation, "forward", batch,
                          s.spec.metrics))
          return;
        if (!x || !valid_batch(x.get(), fan_in, s.spec.max_batch)
            || (train && s.stash.count(batch) != 0)) {
          drop_message(self, s.stats.dropped, "forward", batch, s.spec.metrics, msg_kind::forward);
          return;
        }
        const auto t0 = std::chrono::steady_clock::now();
        matrix h;
        dense_forward(x.get(), s.params, s.spec.geometry.act, h);
        shared_matrix out{std::move(h)};
        if (const auto* m = s.spec.metrics) {
          m->forward_seconds->Observe(seconds_since(t0));
          m->received_msg(msg_kind::forward, payload_bytes(x.get()));
          m->sent_msg(msg_kind::block, payload_bytes(out.get()));
        }
        if (train) {
          auto& e = s.stash[batch];
          e.x = x;
          e.h = out;
          e.updates_at_forward = s.stats.updates;
          if (s.spec.weight_stashing)
            e.weights = std::make_unique<dense_params>(s.params);
        }
        self->send(s.next, atom::block::value, s.spec.incarnation, batch, train, s.spec.index,
                   std::move(out));
      },
      [=](atom::backward, std::uint32_t inc, std::uint64_t batch, owned_matrix& payload) {
        matrix& dh = payload.value;
        auto& s = self->state;
        if (drop_if_stale(self, s.stats.stale, inc, s.spec.incarnation, "backward", batch,
                          s.spec.metrics))
          return;
        auto it = s.stash.find(batch);
        if (it == s.stash.end() || !valid_batch(dh, width, s.spec.max_batch)
            || dh.rows() != it->second.x.get().rows()) {
          drop_message(self, s.stats.dropped, "backward", batch, s.spec.metrics,
                       msg_kind::backward);
          return;
        }
        const auto t0 = std::chrono::steady_clock::now();
        auto& e = it->second;
        const dense_params& forward_weights = e.weights ? *e.weights : s.params;
        const bool first_layer = s.spec.geometry.layer == 0;
        matrix dx;
        // dX from the weights the forward pass used, before this update.
        dense_backward(e.x.get(), e.h.get(), s.spec.geometry.act, forward_weights, dh, s.grads,
                       first_layer ? nullptr : &dx);
        if (const auto* m = s.spec.metrics) {
          m->received_msg(msg_kind::backward, payload_bytes(dh));
          if (first_layer)
            m->sent_msg(msg_kind::ack, 0);
          else
            m->sent_msg(msg_kind::grad, payload_bytes(dx));
        }
        if (first_layer)
          self->send(s.ack_sink, atom::ack::value, s.spec.incarnation, batch, s.spec.index);
        else
          self->send(s.grad_sink, atom::grad::value, s.spec.incarnation, batch, s.spec.index,
                     owned_matrix{std::move(dx)});
        const std::uint64_t staleness = s.stats.updates - e.updates_at_forward;
        if (s.stats.staleness.size() <= staleness)
          s.stats.staleness.resize(staleness + 1, 0);
        ++s.stats.staleness[staleness];
        s.stats.max_staleness = std::max(s.stats.max_staleness, staleness);
        s.opt->step(s.params.w.data(), s.grads.dw.data(),
                    static_cast<std::size_t>(s.params.w.size()), s.w_state);
        s.opt->step(s.params.b.data(), s.grads.db.data(),
                    static_cast<std::size_t>(s.params.b.size()), s.b_state);
        ++s.stats.updates;
        s.stash.erase(it);
        if (const auto* m = s.spec.metrics) {
          m->staleness->Observe(static_cast<double>(staleness));
          m->backward_seconds->Observe(seconds_since(t0));
        }
      },
      [=](atom::wire, ack_sink_actor prev, block_sink_actor next) -> caf::result<atom::ok> {
        auto& s = self->state;
        if (s.spec.geometry.layer != 0)
          return caf::make_error(caf::sec::invalid_argument,
                                 "wire: a slice of layer "
                                     + std::to_string(s.spec.geometry.layer + 1)
                                     + " sends input gradients to a hidden relay, not acks to "
                                       "the input relay");
        s.ack_sink = std::move(prev);
        s.next = std::move(next);
        return atom::ok::value;
      },
      [=](atom::wire, grad_sink_actor prev, block_sink_actor next) -> caf::result<atom::ok> {
        auto& s = self->state;
        if (s.spec.geometry.layer == 0)
          return caf::make_error(caf::sec::invalid_argument,
                                 "wire: a slice of layer 1 acks its updates to the input relay; "
                                 "it computes no input gradient");
        s.grad_sink = std::move(prev);
        s.next = std::move(next);
        return atom::ok::value;
      },
      [=](atom::get_state) {
        auto& s = self->state;
        return layer_state{s.params, s.w_state, s.b_state};
      },
      [=](atom::set_state, layer_state& ls) -> caf::result<atom::ok> {
        auto& s = self->state;
        // A state whose round read no moments (topology.round_moments =
        // false): the optimizer starts again from zero moments.
        if (unread_moments(ls) && same_shape(ls.params, s.params)) {
          ls.w_state = s.opt->make_state(static_cast<std::size_t>(s.params.w.size()));
          ls.b_state = s.opt->make_state(static_cast<std::size_t>(s.params.b.size()));
        }
        std::string why;
        if (!same_shape(ls.params, s.params) || !same_moments(ls.w_state, s.w_state)
            || !same_moments(ls.b_state, s.b_state) || !all_finite(ls.params.w)
            || !all_finite(ls.params.b))
          why = "wrong shape or non-finite";
        else if (auto bad = take_residual(ls.w_state.r, static_cast<std::size_t>(s.params.w.size()),
                                          s.spec.sync_feedback);
                 !bad.empty())
          why = bad;
        else
          why = take_residual(ls.b_state.r, static_cast<std::size_t>(s.params.b.size()),
                              s.spec.sync_feedback);
        if (!why.empty()) {
          drop_message(self, s.stats.dropped, "set_state", 0);
          return caf::make_error(caf::sec::invalid_argument, "set_state: " + why);
        }
        s.owes_pending = false;
        s.params = std::move(ls.params);
        s.w_state = std::move(ls.w_state);
        s.b_state = std::move(ls.b_state);
        if (s.spec.sync_coding != sync_precision::f32)
          s.round_weights = s.params;
        return atom::ok::value;
      },
      [=](atom::round_get, std::uint8_t coding, bool moments) -> caf::result<round_payload> {
        auto& s = self->state;
        if (coding != static_cast<std::uint8_t>(s.spec.sync_coding))
          return caf::make_error(caf::sec::invalid_argument,
                                 "round_get: a sync precision other than this run's");
        round_payload p;
        p.moments = moments;
        if (s.spec.sync_feedback) {
          // The residual this round leaves; it becomes the slice's when the
          // round's result arrives, and is the round's state for rollbacks.
          p.weights = encode_with_feedback(s.params, s.round_weights, s.spec.sync_coding,
                                           s.w_state.r, s.b_state.r, s.w_owed_next,
                                           s.b_owed_next);
          s.owes_pending = true;
        } else {
          p.weights = encode_params(s.params, s.round_weights, s.spec.sync_coding);
        }
        if (moments) {
          p.w_state = s.w_state;
          p.b_state = s.b_state;
          if (s.spec.sync_feedback) {
            p.w_state.r = s.w_owed_next;
            p.b_state.r = s.b_owed_next;
          }
        }
        return p;
      },
      [=](atom::round_set, round_payload& p) -> caf::result<atom::ok> {
        auto& s = self->state;
        // The weights themselves (f32) are always welcome: a recovery
        // applies a kept round again that way.
        const sync_precision got = p.weights.w.precision;
        std::string why = got != s.spec.sync_coding && got != sync_precision::f32
                              ? "weights in a sync precision other than this run's"
                              : check_coded(p.weights, s.params);
        if (why.empty() && p.moments
            && (!same_moments(p.w_state, s.w_state) || !same_moments(p.b_state, s.b_state)))
          why = "optimizer moments of the wrong size";
        dense_params next;
        if (why.empty()) {
          next = decode_params(p.weights, s.round_weights);
          if (!all_finite(next.w) || !all_finite(next.b))
            why = "non-finite weights";
        }
        if (!why.empty()) {
          drop_message(self, s.stats.dropped, "round_set", 0);
          return caf::make_error(caf::sec::invalid_argument, "round_set: " + why);
        }
        s.params = std::move(next);
        if (p.moments) { // the policy's (never the feedback residual: that is the slice's own)
          p.w_state.r = std::move(s.w_state.r);
          p.b_state.r = std::move(s.b_state.r);
          s.w_state = std::move(p.w_state);
          s.b_state = std::move(p.b_state);
        }
        if (s.owes_pending) { // the round read is applied: its residual stands
          s.w_state.r = std::move(s.w_owed_next);
          s.b_state.r = std::move(s.b_owed_next);
          s.owes_pending = false;
        }
        if (s.spec.sync_coding != sync_precision::f32)
          s.round_weights = s.params;
        return atom::ok::value;
      },
      [=](atom::stats) { return self->state.stats; },
      [=](atom::status) {
        return std::to_string(self->state.stats.updates) + " updates; awaiting backward for "
               + batch_list(self->state.stash);
      },
  };
}

} // namespace nettorrent
