#include "shard_worker.hpp"

#include <cmath>

#include <caf/all.hpp>

#include "status.hpp"

#include "validation.hpp"

namespace nettorrent {

namespace {

using self_ptr = shard_worker_actor::stateful_pointer<shard_worker_state>;

/// Sends one batch (samples idx[0..n)) into the pipeline: labels to the loss
/// relay, the input to the input relay.
void send_batch(self_ptr self, std::uint64_t id, bool train, const std::uint32_t* idx,
                std::size_t n) {
  auto& s = self->state;
  const image_set& set = s.spec.data->train_pool;
  matrix x;
  label_batch labels;
  labels.data.resize(n);
  gather_batch(set, idx, n, x, labels.data.data());
  if (const auto* m = s.spec.metrics) {
    m->sent_msg(msg_kind::labels, n);
    m->sent_msg(msg_kind::forward, payload_bytes(x));
  }
  const std::uint32_t inc = s.spec.incarnation;
  self->send(s.loss_relay, atom::labels::value, inc, id, train, std::move(labels));
  self->send(s.input, atom::forward::value, inc, id, train, shared_matrix{std::move(x)});
}

/// Sends the validation batches of part `part` of `parts` of the subset.
void start_validation(self_ptr self, std::uint32_t part, std::uint32_t parts) {
  auto& s = self->state;
  const auto& v = s.spec.validation;
  s.eval_loss = 0;
  s.eval_correct = 0;
  const column_range range = split_columns(v.size(), parts)[part];
  s.eval_samples = range.size();
  for (std::size_t start = range.begin; start < range.end; start += s.spec.eval_batch_size) {
    const std::size_t n = std::min(s.spec.eval_batch_size, range.end - start);
    const std::uint64_t id = s.next_batch++;
    s.eval_pending.insert(id);
    send_batch(self, id, false, v.data() + start, n);
  }
}

worker_position position_of(const shard_worker_state& s) {
  return {s.epoch, s.cursor, s.samples, s.next_batch};
}

/// Starts the next epoch; false when all epochs are done.
bool next_epoch(shard_worker_state& s) {
  if (s.epoch >= s.spec.max_epochs)
    return false;
  ++s.epoch;
  shuffle(s.order, s.gen);
  s.cursor = 0;
  return true;
}

/// Fills the pipeline up to max_in_flight, and reports the barrier once the
/// sync point (or the end of training) is reached and the pipeline is empty.
void feed(self_ptr self) {
  auto& s = self->state;
  const std::size_t b = s.spec.batch_size;
  while (s.running && !s.finished && s.in_flight.size() < s.spec.max_in_flight
         && s.since_sync < s.spec.sync_every) {
    if (s.epoch == 0 || s.cursor + b > s.order.size()) {
      // A shard smaller than one batch has nothing to feed (the run's
      // configuration check refuses that; this keeps the worker safe).
      if (s.order.size() < b || !next_epoch(s)) {
        s.finished = true;
        break;
      }
    }
    const std::uint64_t id = s.next_batch++;
    send_batch(self, id, true, s.order.data() + s.cursor, b);
    s.in_flight.insert(id);
    s.awaiting_loss.insert(id);
    s.cursor += b;
    s.samples += b;
    s.since_sync += b;
  }
  if (s.running && s.in_flight.empty() && s.awaiting_loss.empty()
      && (s.finished || s.since_sync >= s.spec.sync_every)) {
    s.running = false;
    barrier_report r;
    r.replica = s.spec.replica;
    r.incarnation = s.spec.incarnation;
    r.position = position_of(s);
    r.finished = s.finished || (s.epoch >= s.spec.max_epochs && s.cursor + b > s.order.size());
    r.on_grid = s.since_sync >= s.spec.sync_every;
    r.samples = s.samples;
    r.epoch = s.epoch;
    r.loss_sum = s.loss_sum;
    r.loss_samples = s.loss_samples;
    s.loss_sum = 0;
    s.loss_samples = 0;
    self->send(s.coordinator, atom::barrier::value, r);
  }
}

} // namespace

shard_worker_actor::behavior_type
shard_worker(shard_worker_actor::stateful_pointer<shard_worker_state> self, worker_spec spec) {
  auto& st = self->state;
  st.gen = shard_rng(spec.seed, spec.replica);
  st.order = spec.shard;
  st.spec = std::move(spec);
  return {
      [=](atom::done, std::uint32_t inc, std::uint64_t batch) {
        auto& s = self->state;
        if (drop_if_stale(self, s.counts.stale, inc, s.spec.incarnation, "done", batch,
                          s.spec.metrics))
          return;
        if (const auto* m = s.spec.metrics)
          m->received_msg(msg_kind::done, 0);
        if (s.in_flight.erase(batch) == 0) {
          drop_message(self, s.counts.dropped, "done", batch, s.spec.metrics, msg_kind::done);
          return;
        }
        feed(self);
      },
      [=](atom::loss, std::uint32_t inc, std::uint64_t batch, bool train, double loss_sum,
          std::uint64_t correct) {
        auto& s = self->state;
        if (drop_if_stale(self, s.counts.stale, inc, s.spec.incarnation, "loss", batch,
                          s.spec.metrics))
          return;
        if (const auto* m = s.spec.metrics)
          m->received_msg(msg_kind::loss, 0);
        if (train) {
          if (s.awaiting_loss.erase(batch) == 0) {
            drop_message(self, s.counts.dropped, "loss", batch, s.spec.metrics, msg_kind::loss);
            return;
          }
          if (!std::isfinite(loss_sum)) {
            // The weights diverged: the pipeline cannot recover (its gradients
            // are dropped as malformed), so tell the coordinator at once.
            barrier_report r;
            r.replica = s.spec.replica;
            r.incarnation = s.spec.incarnation;
            r.position = position_of(s);
            r.epoch = s.epoch;
            r.samples = s.samples;
            r.diverged = true;
            s.running = false;
            self->send(s.coordinator, atom::barrier::value, r);
            return;
          }
          s.loss_sum += loss_sum;
          s.loss_samples += s.spec.batch_size;
          feed(self); // the barrier may have waited for this loss
          return;
        }
        if (s.eval_pending.erase(batch) == 0) {
          drop_message(self, s.counts.dropped, "loss", batch, s.spec.metrics, msg_kind::loss);
          return;
        }
        s.eval_loss += loss_sum;
        s.eval_correct += correct;
        if (s.eval_pending.empty()) {
          const auto n = static_cast<double>(s.eval_samples);
          s.eval_promise.deliver(replica_score{s.eval_loss / n,
                                               static_cast<double>(s.eval_correct) / n, s.eval_loss,
                                               s.eval_correct, s.eval_samples});
          if (s.eval_queued) { // asked again while this pass ran (after a recovery)
            auto q = std::move(*s.eval_queued);
            s.eval_queued.reset();
            start_validation(self, q.part, q.parts);
            s.eval_promise = std::move(q.promise);
          }
        }
      },
      [=](atom::wire, input_relay_actor input, loss_relay_actor loss_relay,
          barrier_sink_actor coordinator) {
        auto& s = self->state;
        s.input = std::move(input);
        s.loss_relay = std::move(loss_relay);
        s.coordinator = std::move(coordinator);
        return atom::ok::value;
      },
      [=](atom::resume) {
        auto& s = self->state;
        s.running = true;
        s.since_sync = 0;
        feed(self);
      },
      [=](atom::pause) {
        auto& s = self->state;
        s.running = false;
        return position_of(s);
      },
      [=](atom::seek, const worker_position& p) -> caf::result<atom::ok> {
        auto& s = self->state;
        if (!s.in_flight.empty() || !s.awaiting_loss.empty() || !s.eval_pending.empty())
          return caf::make_error(caf::sec::invalid_argument, "seek: the pipeline is not empty");
        if (p.epoch > s.spec.max_epochs || p.cursor > s.spec.shard.size())
          return caf::make_error(caf::sec::invalid_argument,
                                 "seek: epoch " + std::to_string(p.epoch) + ", cursor "
                                     + std::to_string(p.cursor) + " lies outside the shard");
        // The epoch's order is the shard shuffled `epoch` times from the seed.
        s.gen = shard_rng(s.spec.seed, s.spec.replica);
        s.order = s.spec.shard;
        for (std::uint64_t e = 0; e < p.epoch; ++e)
          shuffle(s.order, s.gen);
        s.epoch = p.epoch;
        s.cursor = static_cast<std::size_t>(p.cursor);
        s.samples = p.samples;
        s.next_batch = p.next_batch;
        s.since_sync = 0;
        s.finished = false;
        s.running = false;
        s.loss_sum = 0;
        s.loss_samples = 0;
        return atom::ok::value;
      },
      [=](atom::validate, std::uint32_t part, std::uint32_t parts) -> caf::result<replica_score> {
        auto& s = self->state;
        if (!s.in_flight.empty() || !s.awaiting_loss.empty())
          return caf::make_error(caf::sec::invalid_argument,
                                 "validate: the pipeline is not drained");
        const auto& v = s.spec.validation;
        if (parts == 0 || part >= parts || parts > v.size())
          return caf::make_error(caf::sec::invalid_argument,
                                 "validate: part " + std::to_string(part) + " of "
                                     + std::to_string(parts) + " of " + std::to_string(v.size())
                                     + " validation samples");
        if (!s.eval_pending.empty()) {
          // The coordinator asks again after a recovery while an earlier pass
          // (its answer now late) still runs: this one starts when it ends.
          // A request queued before it is superseded: it gets an empty score,
          // which the coordinator counts as a late reply of its old step.
          if (s.eval_queued)
            s.eval_queued->promise.deliver(replica_score{});
          s.eval_queued =
              shard_worker_state::queued{part, parts, self->make_response_promise<replica_score>()};
          return s.eval_queued->promise;
        }
        start_validation(self, part, parts);
        s.eval_promise = self->make_response_promise<replica_score>();
        return s.eval_promise;
      },
      [=](atom::stats) { return self->state.counts; },
      [=](atom::status) {
        const auto& s = self->state;
        return "epoch " + std::to_string(s.epoch) + " cursor " + std::to_string(s.cursor)
               + ", " + std::to_string(s.samples) + " samples, " + std::to_string(s.since_sync)
               + " of " + std::to_string(s.spec.sync_every) + " since the round, "
               + (s.running ? "feeding" : s.finished ? "finished" : "at the barrier")
               + "; in flight " + batch_list(s.in_flight) + ", loss due "
               + batch_list(s.awaiting_loss) + ", validation batches due "
               + batch_list(s.eval_pending);
      },
  };
}

} // namespace nettorrent
