#include "shard_worker.hpp"

#include <cmath>
#include <cstdlib>
#include <string>

#include <caf/all.hpp>

#include "nettorrent/error.hpp"
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

/// The training samples still to feed after the current position: whole
/// batches of this epoch's order, then of every epoch left (the shard's
/// size).
std::uint64_t samples_left(const shard_worker_state& s) {
  const std::uint64_t b = s.spec.batch_size;
  std::uint64_t left = s.epoch == 0 ? 0 : (s.order.size() - std::min(s.cursor, s.order.size())) / b * b;
  if (s.spec.max_epochs > s.epoch)
    left += (s.spec.max_epochs - s.epoch) * (s.shard_size / b * b);
  return left;
}

worker_position position_of(const shard_worker_state& s) {
  return {s.epoch, s.cursor, s.samples, s.next_batch, {}};
}

/// Puts the worker at the start of epoch `epoch`'s order: the shard
/// shuffled `epoch` times, or, inside an epoch whose replica count changed,
/// the order the deal gives this replica.
void load_epoch(shard_worker_state& s, std::uint64_t epoch, const epoch_deal& deal) {
  const auto& train = s.spec.data->train;
  s.dealt = !deal.empty() && deal.epoch == epoch;
  if (s.dealt)
    s.order = dealt_order(train, s.spec.seed, s.spec.batch_size, s.spec.replicas, s.spec.replica,
                          deal);
  else
    s.order = replica_epoch_order(train, s.spec.seed, s.spec.replicas, s.spec.replica, epoch,
                                  &s.gen);
  s.epoch = epoch;
  s.cursor = 0;
}

/// Starts the next epoch; false when all epochs are done.
bool next_epoch(shard_worker_state& s) {
  if (s.epoch >= s.spec.max_epochs)
    return false;
  if (s.dealt) { // the deal covered the epoch that ends: replay the next one
    load_epoch(s, s.epoch + 1, {});
    return true;
  }
  ++s.epoch;
  shuffle(s.order, s.gen);
  s.cursor = 0;
  return true;
}

/// NETTORRENT_SAMPLE_LOG=DIR: every trained sample is appended, as "epoch
/// sample", to DIR/replica-R.txt (tests count with it that an epoch trains
/// each sample once). Throws if the file cannot be opened.
std::shared_ptr<std::FILE> open_sample_log(std::uint32_t replica) {
  const char* dir = std::getenv("NETTORRENT_SAMPLE_LOG");
  if (dir == nullptr || *dir == '\0')
    return nullptr;
  const std::string path = std::string{dir} + "/replica-" + std::to_string(replica) + ".txt";
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (f == nullptr)
    throw error("NETTORRENT_SAMPLE_LOG: cannot open " + path + " for appending");
  return {f, [](std::FILE* p) { std::fclose(p); }};
}

void log_samples(const shard_worker_state& s, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    std::fprintf(s.sample_log.get(), "%llu %u\n", static_cast<unsigned long long>(s.epoch),
                 static_cast<unsigned>(s.order[s.cursor + i]));
  std::fflush(s.sample_log.get());
}

/// Fills the pipeline up to max_in_flight, and reports the barrier once the
/// sync point (or the end of training) is reached and the pipeline is empty.
void feed(self_ptr self) {
  auto& s = self->state;
  const std::size_t b = s.spec.batch_size;
  while (s.running && !s.finished && s.in_flight.size() < s.spec.max_in_flight
         && s.since_sync < s.spec.sync_every) {
    while (s.epoch == 0 || s.cursor + b > s.order.size()) {
      // A shard smaller than one batch has nothing to feed (the run's
      // configuration check refuses that; this keeps the worker safe). A
      // dealt epoch may hold less than a batch: the next one follows.
      if ((!s.dealt && s.order.size() < b) || !next_epoch(s)) {
        s.finished = true;
        break;
      }
    }
    if (s.finished)
      break;
    const std::uint64_t id = s.next_batch++;
    if (s.sample_log)
      log_samples(s, b);
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
    r.ends_next = !r.finished && samples_left(s) < s.spec.sync_every;
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
  st.sample_log = open_sample_log(spec.replica);
  st.spec = std::move(spec);
  load_epoch(st, 0, {}); // the shard as it is; next_epoch() shuffles it
  st.shard_size = st.order.size();
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
        if (p.epoch > s.spec.max_epochs)
          return caf::make_error(caf::sec::invalid_argument,
                                 "seek: epoch " + std::to_string(p.epoch) + " of "
                                     + std::to_string(s.spec.max_epochs));
        try {
          load_epoch(s, p.epoch, p.deal);
        } catch (const std::exception& e) {
          return caf::make_error(caf::sec::invalid_argument, std::string{"seek: "} + e.what());
        }
        if (p.cursor > s.order.size())
          return caf::make_error(caf::sec::invalid_argument,
                                 "seek: epoch " + std::to_string(p.epoch) + ", cursor "
                                     + std::to_string(p.cursor) + " lies outside the order of "
                                     + std::to_string(s.order.size()) + " samples");
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
