#include "hidden_relay.hpp"

#include <caf/all.hpp>

#include "status.hpp"

#include "validation.hpp"

namespace nettorrent {

namespace {

using self_ptr = hidden_relay_actor::stateful_pointer<hidden_relay_state>;

/// Swarm k's blocks of `batch` are all here: broadcast H to swarm k+1 and,
/// for a training batch, wait for its partial input gradients.
void forward_gathered(self_ptr self, std::uint64_t batch, bool train, shared_matrix&& h) {
  auto& s = self->state;
  if (train)
    s.backward.insert_or_assign(batch, ordered_sum{s.next.size(), h.get().rows(),
                                                   static_cast<Eigen::Index>(s.spec.prev_width)});
  for (const auto& n : s.next) {
    if (const auto* m = s.spec.metrics)
      m->sent_msg(msg_kind::forward, payload_bytes(h.get()));
    self->send(n, atom::forward::value, s.spec.incarnation, batch, train, h);
  }
}

} // namespace

hidden_relay_actor::behavior_type
hidden_relay(hidden_relay_actor::stateful_pointer<hidden_relay_state> self, relay_spec spec) {
  self->state.start(std::move(spec));
  drop_other_roles_messages(self);
  return {
      // Swarm k's slice `slice` sends its output columns.
      [=](atom::block, std::uint32_t inc, std::uint64_t batch, bool train, std::uint32_t slice,
          const shared_matrix& h) {
        on_block(self, inc, batch, train, slice, h,
                 [](auto* me, std::uint64_t b, bool t, shared_matrix&& full) {
                   forward_gathered(me, b, t, std::move(full));
                 });
      },
      // Swarm k+1's slice `slice` sends its partial dX.
      [=](atom::grad, std::uint32_t inc, std::uint64_t batch, std::uint32_t slice,
          owned_matrix& payload) {
        matrix& dx = payload.value;
        auto& s = self->state;
        if (drop_if_stale(self, s.counts.stale, inc, s.spec.incarnation, "grad", batch,
                          s.spec.metrics))
          return;
        auto it = s.backward.find(batch);
        if (it == s.backward.end()
            || !valid_batch(dx, static_cast<Eigen::Index>(s.spec.prev_width), s.spec.max_batch)) {
          drop_message(self, s.counts.dropped, "grad", batch, s.spec.metrics, msg_kind::grad);
          if (it != s.backward.end() && !all_finite(dx))
            report_divergence(self, batch);
          return;
        }
        const std::size_t bytes = payload_bytes(dx);
        const part_status st = it->second.add(slice, std::move(dx));
        if (st != part_status::accepted && st != part_status::complete) {
          // Out of range, a duplicate or of another height.
          drop_message(self, s.counts.dropped, "grad", batch, s.spec.metrics, msg_kind::grad);
          return;
        }
        if (const auto* m = s.spec.metrics)
          m->received_msg(msg_kind::grad, bytes);
        if (st == part_status::accepted)
          return;
        matrix sum = it->second.take();
        s.backward.erase(it);
        send_backward(self, batch, std::move(sum));
      },
      [=](atom::wire, std::vector<neuron_slice_actor>& prev, std::vector<neuron_slice_actor>& next,
          batch_sink_actor sink) {
        auto& s = self->state;
        s.prev = std::move(prev);
        s.next = std::move(next);
        s.sink = std::move(sink);
        return atom::ok::value;
      },
      [=](atom::stats) { return self->state.counts; },
      [=](atom::status) {
        return "gathering blocks of " + batch_list(self->state.forward)
               + "; awaiting the next swarm's partial gradients for "
               + batch_list(self->state.backward);
      },
  };
}

} // namespace nettorrent
