#include "gradient_relay.hpp"

#include <limits>

#include <caf/all.hpp>

#include "nettorrent/loss.hpp"
#include "validation.hpp"

namespace nettorrent {

namespace {

using self_ptr = gradient_relay_actor::stateful_pointer<gradient_relay_state>;

/// Splits `full` (B x width) into the column blocks `cols` and sends block s
/// to slice s as a backward message. One slice takes the whole matrix as is.
void send_backward(self_ptr self, std::uint64_t batch, matrix&& full) {
  auto& s = self->state;
  if (s.prev.size() == 1) {
    if (const auto* m = s.spec.metrics)
      m->sent_msg(msg_kind::backward, payload_bytes(full));
    self->send(s.prev[0], atom::backward::value, batch, owned_matrix{std::move(full)});
    return;
  }
  for (std::size_t i = 0; i < s.prev.size(); ++i) {
    const auto& c = s.spec.prev_cols[i];
    matrix part =
        full.middleCols(static_cast<Eigen::Index>(c.begin), static_cast<Eigen::Index>(c.size()));
    if (const auto* m = s.spec.metrics)
      m->sent_msg(msg_kind::backward, payload_bytes(part));
    self->send(s.prev[i], atom::backward::value, batch, owned_matrix{std::move(part)});
  }
}

/// A training batch carried non-finite values: the weights diverged. The
/// batch can never complete, so report a non-finite loss for it; the worker
/// then stops the run with an error instead of waiting forever.
void report_divergence(self_ptr self, std::uint64_t batch) {
  self->send(self->state.sink, atom::loss::value, batch, true,
             std::numeric_limits<double>::quiet_NaN(), std::uint64_t{0});
}

/// Loss relay: both logits and labels of `batch` are here.
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
  self->send(s.sink, atom::loss::value, batch, train, res.loss_sum,
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

/// A complete forward gather: pass it on (k < L) or compute the loss (k = L).
void gathered(self_ptr self, std::uint64_t batch, gradient_relay_state::gather&& g) {
  auto& s = self->state;
  shared_matrix h = g.single ? std::move(g.single) : shared_matrix{std::move(g.buf)};
  if (const auto* m = s.spec.metrics; m != nullptr && g.train) {
    m->samples->Increment(static_cast<double>(h.get().rows()));
    m->batches->Increment();
  }
  if (s.spec.boundary == s.spec.layers) {
    auto it = s.labels.find(batch);
    if (it == s.labels.end()) { // labels still on their way
      g.single = std::move(h);
      s.logits.emplace(batch, std::move(g));
      return;
    }
    if (it->second.first != g.train || !labels_fit(it->second.second, h.get())) {
      drop_message(self, s.dropped, "labels", batch, s.spec.metrics, msg_kind::labels);
    } else {
      compute_loss(self, batch, h.get(), g.train, it->second.second);
    }
    s.labels.erase(it);
    return;
  }
  if (g.train) {
    auto& p = s.backward[batch];
    p.parts.resize(s.next.size());
    p.count = 0;
    p.rows = h.get().rows();
  }
  for (const auto& n : s.next) {
    if (const auto* m = s.spec.metrics)
      m->sent_msg(msg_kind::forward, payload_bytes(h.get()));
    self->send(n, atom::forward::value, batch, g.train, h);
  }
}

} // namespace

gradient_relay_actor::behavior_type
gradient_relay(gradient_relay_actor::stateful_pointer<gradient_relay_state> self, relay_spec spec) {
  prepare_math_thread();
  self->state.spec = std::move(spec);
  // Sized once so the finished-batch memory never rehashes in steady state.
  self->state.finished.reserve(gradient_relay_state::finished_capacity + 1);
  return {
      // Swarm k's slice `slice` sends its output columns.
      [=](atom::block, std::uint64_t batch, bool train, std::uint32_t slice,
          const shared_matrix& h) {
        auto& s = self->state;
        if (s.spec.boundary == 0 || slice >= s.spec.prev_cols.size() || !h
            || !valid_batch(h.get(), static_cast<Eigen::Index>(s.spec.prev_cols[slice].size()),
                            s.spec.max_batch)) {
          drop_message(self, s.dropped, "block", batch, s.spec.metrics, msg_kind::block);
          if (train && h && !all_finite(h.get()))
            report_divergence(self, batch);
          return;
        }
        if (s.finished.count(batch) != 0) {
          drop_message(self, s.dropped, "block", batch, s.spec.metrics, msg_kind::block);
          return;
        }
        if (const auto* m = s.spec.metrics)
          m->received_msg(msg_kind::block, payload_bytes(h.get()));
        auto& g = s.forward[batch];
        if (g.got.empty()) {
          g.got.assign(s.spec.prev_cols.size(), false);
          g.train = train;
          if (s.spec.prev_cols.size() > 1)
            g.buf.resize(h.get().rows(), static_cast<Eigen::Index>(s.spec.prev_width));
        } else if (g.got[slice] || g.train != train
                   || (g.buf.size() > 0 && g.buf.rows() != h.get().rows())) {
          drop_message(self, s.dropped, "block", batch, s.spec.metrics, msg_kind::block);
          return;
        }
        g.got[slice] = true;
        ++g.count;
        if (s.spec.prev_cols.size() == 1) {
          g.single = h;
        } else {
          const auto& c = s.spec.prev_cols[slice];
          g.buf.middleCols(static_cast<Eigen::Index>(c.begin),
                           static_cast<Eigen::Index>(c.size())) = h.get();
        }
        if (g.count == s.spec.prev_cols.size()) {
          s.mark_finished(batch);
          auto node = s.forward.extract(batch);
          gathered(self, batch, std::move(node.mapped()));
        }
      },
      // Swarm k+1's slice `slice` sends its partial dX.
      [=](atom::grad, std::uint64_t batch, std::uint32_t slice, owned_matrix& payload) {
        matrix& dx = payload.value;
        auto& s = self->state;
        auto it = s.backward.find(batch);
        if (it == s.backward.end() || s.spec.boundary == 0 || slice >= s.next.size()
            || !valid_batch(dx, static_cast<Eigen::Index>(s.spec.prev_width), s.spec.max_batch)
            || dx.rows() != it->second.rows || it->second.parts[slice].size() != 0) {
          drop_message(self, s.dropped, "grad", batch, s.spec.metrics, msg_kind::grad);
          if (it != s.backward.end() && !all_finite(dx))
            report_divergence(self, batch);
          return;
        }
        if (const auto* m = s.spec.metrics)
          m->received_msg(msg_kind::grad, payload_bytes(dx));
        auto& p = it->second;
        p.parts[slice] = std::move(dx);
        if (++p.count < p.parts.size())
          return;
        matrix sum = std::move(p.parts[0]);
        for (std::size_t i = 1; i < p.parts.size(); ++i)
          sum += p.parts[i];
        s.backward.erase(it);
        send_backward(self, batch, std::move(sum));
      },
      // Input relay: swarm-1 slice `slice` applied its update.
      [=](atom::ack, std::uint64_t batch, std::uint32_t slice) {
        auto& s = self->state;
        auto it = s.acks.find(batch);
        if (s.spec.boundary != 0 || it == s.acks.end() || slice >= s.next.size()
            || it->second.got[slice]) {
          drop_message(self, s.dropped, "ack", batch, s.spec.metrics, msg_kind::ack);
          return;
        }
        it->second.got[slice] = true;
        if (++it->second.count == s.next.size()) {
          s.acks.erase(it);
          if (const auto* m = s.spec.metrics)
            m->sent_msg(msg_kind::done, 0);
          self->send(s.sink, atom::done::value, batch);
        }
      },
      // Input relay: a batch from the shard worker.
      [=](atom::forward, std::uint64_t batch, bool train, const shared_matrix& x) {
        auto& s = self->state;
        if (s.spec.boundary != 0 || !x
            || !valid_batch(x.get(), static_cast<Eigen::Index>(s.spec.prev_width), s.spec.max_batch)
            || (train && s.acks.count(batch) != 0)) {
          drop_message(self, s.dropped, "forward", batch, s.spec.metrics, msg_kind::forward);
          return;
        }
        if (train)
          s.acks.emplace(batch, gradient_relay_state::ack_set{std::vector<bool>(s.next.size()), 0});
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
          self->send(n, atom::forward::value, batch, train, x);
        }
      },
      // Loss relay: a batch's labels.
      [=](atom::labels, std::uint64_t batch, bool train, std::vector<std::uint8_t>& ys) {
        auto& s = self->state;
        if (s.spec.boundary != s.spec.layers || ys.empty() || ys.size() > s.spec.max_batch
            || s.labels.count(batch) != 0) {
          drop_message(self, s.dropped, "labels", batch, s.spec.metrics, msg_kind::labels);
          return;
        }
        auto it = s.logits.find(batch);
        if (it == s.logits.end() && s.finished.count(batch) != 0) {
          drop_message(self, s.dropped, "labels", batch, s.spec.metrics,
                       msg_kind::labels); // its loss was computed already
          return;
        }
        if (it == s.logits.end()) {
          s.labels.emplace(batch, std::make_pair(train, std::move(ys)));
          return;
        }
        if (it->second.train != train || !labels_fit(ys, it->second.single.get()))
          drop_message(self, s.dropped, "labels", batch, s.spec.metrics, msg_kind::labels);
        else
          compute_loss(self, batch, it->second.single.get(), train, ys);
        s.logits.erase(it);
      },
      [=](atom::wire, std::vector<neuron_slice_actor>& prev, std::vector<neuron_slice_actor>& next,
          batch_sink_actor sink) {
        auto& s = self->state;
        s.prev = std::move(prev);
        s.next = std::move(next);
        s.sink = std::move(sink);
        return atom::ok::value;
      },
      [=](atom::stats) { return self->state.dropped; },
  };
}

} // namespace nettorrent
