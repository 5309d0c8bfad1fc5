#include "loss_relay.hpp"

#include <caf/all.hpp>

#include "status.hpp"

#include "nettorrent/loss.hpp"
#include "validation.hpp"

namespace nettorrent {

namespace {

using self_ptr = loss_relay_actor::stateful_pointer<loss_relay_state>;

/// Both logits and labels of `batch` are here.
void compute_loss(self_ptr self, std::uint64_t batch, const matrix& logits, bool train,
                  const std::vector<std::uint8_t>& labels) {
  auto& s = self->state;
  loss_result res;
  if (train) {
    matrix grad;
    res = softmax_xent_backward(logits, labels.data(), grad);
    send_backward(self, batch, std::move(grad));
  } else {
    res = softmax_xent(logits, labels.data());
  }
  if (const auto* m = s.spec.metrics)
    m->sent_msg(msg_kind::loss, 0);
  self->send(s.sink, atom::loss::value, s.spec.incarnation, batch, train, res.loss_sum,
             static_cast<std::uint64_t>(res.correct));
}

bool labels_fit(const std::vector<std::uint8_t>& labels, const matrix& logits) {
  if (labels.size() != static_cast<std::size_t>(logits.rows()))
    return false;
  for (auto y : labels)
    if (y >= logits.cols())
      return false;
  return true;
}

/// Swarm L's blocks of `batch` are all here: compute the loss if the labels
/// are, else wait for them.
void logits_gathered(self_ptr self, std::uint64_t batch, bool train, shared_matrix&& h) {
  auto& s = self->state;
  auto it = s.labels.find(batch);
  if (it == s.labels.end()) { // labels still on their way
    s.logits.emplace(batch, loss_relay_state::waiting_logits{std::move(h), train});
    return;
  }
  if (it->second.first != train || !labels_fit(it->second.second, h.get()))
    drop_message(self, s.counts.dropped, "labels", batch, s.spec.metrics, msg_kind::labels);
  else
    compute_loss(self, batch, h.get(), train, it->second.second);
  s.labels.erase(it);
}

} // namespace

loss_relay_actor::behavior_type
loss_relay(loss_relay_actor::stateful_pointer<loss_relay_state> self, relay_spec spec) {
  self->state.start(std::move(spec));
  drop_other_roles_messages(self);
  return {
      // Swarm L's slice `slice` sends its logit columns.
      [=](atom::block, std::uint32_t inc, std::uint64_t batch, bool train, std::uint32_t slice,
          const shared_matrix& h) {
        on_block(self, inc, batch, train, slice, h,
                 [](auto* me, std::uint64_t b, bool t, shared_matrix&& full) {
                   logits_gathered(me, b, t, std::move(full));
                 });
      },
      // A batch's labels from the shard worker.
      [=](atom::labels, std::uint32_t inc, std::uint64_t batch, bool train, label_batch& lb) {
        std::vector<std::uint8_t>& ys = lb.data;
        auto& s = self->state;
        if (drop_if_stale(self, s.counts.stale, inc, s.spec.incarnation, "labels", batch,
                          s.spec.metrics))
          return;
        if (ys.empty() || ys.size() > s.spec.max_batch || s.labels.count(batch) != 0) {
          drop_message(self, s.counts.dropped, "labels", batch, s.spec.metrics, msg_kind::labels);
          return;
        }
        auto it = s.logits.find(batch);
        if (it == s.logits.end() && s.finished.contains(batch)) {
          drop_message(self, s.counts.dropped, "labels", batch, s.spec.metrics,
                       msg_kind::labels); // its loss was computed already
          return;
        }
        if (it == s.logits.end()) {
          s.labels.emplace(batch, std::make_pair(train, std::move(ys)));
          return;
        }
        if (it->second.train != train || !labels_fit(ys, it->second.logits.get()))
          drop_message(self, s.counts.dropped, "labels", batch, s.spec.metrics, msg_kind::labels);
        else
          compute_loss(self, batch, it->second.logits.get(), train, ys);
        s.logits.erase(it);
      },
      [=](atom::wire, std::vector<neuron_slice_actor>& prev, batch_sink_actor sink) {
        auto& s = self->state;
        s.prev = std::move(prev);
        s.sink = std::move(sink);
        return atom::ok::value;
      },
      [=](atom::stats) { return self->state.counts; },
      [=](atom::status) { return "gathering blocks of " + batch_list(self->state.forward); },
  };
}

} // namespace nettorrent
