#include "input_relay.hpp"

#include <caf/all.hpp>

#include "status.hpp"

#include "validation.hpp"

namespace nettorrent {

input_relay_actor::behavior_type
input_relay(input_relay_actor::stateful_pointer<input_relay_state> self, relay_spec spec) {
  self->state.spec = std::move(spec);
  drop_other_roles_messages(self);
  return {
      // A batch from the shard worker.
      [=](atom::forward, std::uint32_t inc, std::uint64_t batch, bool train,
          const shared_matrix& x) {
        auto& s = self->state;
        if (drop_if_stale(self, s.counts.stale, inc, s.spec.incarnation, "forward", batch,
                          s.spec.metrics))
          return;
        if (!x
            || !valid_batch(x.get(), static_cast<Eigen::Index>(s.spec.prev_width), s.spec.max_batch)
            || (train && s.acks.count(batch) != 0)) {
          drop_message(self, s.counts.dropped, "forward", batch, s.spec.metrics, msg_kind::forward);
          return;
        }
        if (train)
          s.acks.emplace(batch, input_relay_state::ack_set{std::vector<bool>(s.next.size()), 0});
        if (const auto* m = s.spec.metrics) {
          m->received_msg(msg_kind::forward, payload_bytes(x.get()));
          if (train) {
            m->samples->Increment(static_cast<double>(x.get().rows()));
            m->batches->Increment();
          }
        }
        for (const auto& n : s.next) {
          if (const auto* m = s.spec.metrics)
            m->sent_msg(msg_kind::forward, payload_bytes(x.get()));
          self->send(n, atom::forward::value, s.spec.incarnation, batch, train, x);
        }
      },
      // Swarm-1 slice `slice` applied its update.
      [=](atom::ack, std::uint32_t inc, std::uint64_t batch, std::uint32_t slice) {
        auto& s = self->state;
        if (drop_if_stale(self, s.counts.stale, inc, s.spec.incarnation, "ack", batch,
                          s.spec.metrics))
          return;
        auto it = s.acks.find(batch);
        if (it == s.acks.end() || slice >= s.next.size() || it->second.got[slice]) {
          drop_message(self, s.counts.dropped, "ack", batch, s.spec.metrics, msg_kind::ack);
          return;
        }
        it->second.got[slice] = true;
        if (++it->second.count == s.next.size()) {
          s.acks.erase(it);
          if (const auto* m = s.spec.metrics)
            m->sent_msg(msg_kind::done, 0);
          self->send(s.sink, atom::done::value, s.spec.incarnation, batch);
        }
      },
      [=](atom::wire, std::vector<neuron_slice_actor>& next, batch_sink_actor sink) {
        auto& s = self->state;
        s.next = std::move(next);
        s.sink = std::move(sink);
        return atom::ok::value;
      },
      [=](atom::stats) { return self->state.counts; },
      [=](atom::status) {
        return "awaiting swarm-1 acks for " + batch_list(self->state.acks);
      },
  };
}

} // namespace nettorrent
