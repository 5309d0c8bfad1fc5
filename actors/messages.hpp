// Message payload types and their CAF inspectors. Matrices travel as shape +
// raw float data (native byte order: fine between x86 nodes; a big-endian
// peer would need a byte swap here). The data-flow matrices (activations:
// shared_matrix; gradients: owned_matrix) carry a precision tag and travel as binary32,
// or with system.wire_precision = "bf16" as bfloat16, or with "int8" as
// int8 with a scale per row (int8.hpp); CAF serialises only what crosses
// nodes, so in-process messages are never rounded.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/sec.hpp>

#include "nettorrent/bf16.hpp"
#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/int8.hpp"
#include "nettorrent/outer.hpp"
#include "nettorrent/policy_state.hpp"
#include "nettorrent/run_machine.hpp"
#include "nettorrent/slice_ops.hpp"
#include "nettorrent/sync_codec.hpp"
#include "nettorrent/tensor.hpp"

namespace nettorrent {

/// Refuses absurd shapes before allocating (64 Mi floats = 256 MiB). Each
/// factor first: rows * cols could wrap around for huge values.
template <class Mat>
bool plausible_shape(std::uint64_t rows, std::uint64_t cols) {
  constexpr std::uint64_t limit = std::uint64_t{1} << 26;
  return rows <= limit && cols <= limit && rows * cols <= limit
         && (Mat::RowsAtCompileTime != 1 || rows == 1);
}

template <class Inspector, class Mat>
typename Inspector::result_type inspect_matrix(Inspector& f, Mat& m, const char* name) {
  using result = typename Inspector::result_type;
  auto rows = static_cast<std::uint64_t>(m.rows());
  auto cols = static_cast<std::uint64_t>(m.cols());
  if constexpr (std::is_same<result, void>::value) {
    // Stringification: shape only.
    f(caf::meta::type_name(name), rows, cols);
  } else if constexpr (Inspector::reads_state) {
    if (auto err = f(caf::meta::type_name(name), rows, cols))
      return err;
    return f.apply_raw(static_cast<std::size_t>(m.size()) * sizeof(float), m.data());
  } else {
    if (auto err = f(caf::meta::type_name(name), rows, cols))
      return err;
    if (!plausible_shape<Mat>(rows, cols))
      return caf::make_error(caf::sec::invalid_argument);
    m.resize(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
    return f.apply_raw(static_cast<std::size_t>(m.size()) * sizeof(float), m.data());
  }
}

/// The precision this process serialises activations and gradients in:
/// set once from system.wire_precision before the actor system starts.
inline std::atomic<wire_precision>& wire_precision_setting() {
  static std::atomic<wire_precision> p{wire_precision::f32};
  return p;
}

/// bfloat16 payloads are converted through a buffer on the stack, this many
/// elements at a time: nothing is allocated, however large the matrix (or
/// however large a size a peer announces).
inline constexpr std::size_t bf16_chunk = 4096;

/// int8 rows (a scale, then the row's values) go through a stack buffer of
/// this many values at a time.
inline constexpr std::size_t int8_chunk = 4096;

/// Writes (`save`) or reads the int8 form of `m` (int8.hpp): per row its
/// float scale, then its values, a chunk at a time.
template <class Inspector>
typename Inspector::result_type int8_rows(Inspector& f, matrix& m, bool save) {
  using result = typename Inspector::result_type;
  const auto cols = static_cast<std::size_t>(m.cols());
  std::int8_t buf[int8_chunk];
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    float* row = m.data() + static_cast<std::size_t>(i) * cols;
    float scale = save ? int8_row_scale(row, cols) : 0.0f;
    if (auto err = f.apply_raw(sizeof scale, &scale))
      return err;
    for (std::size_t at = 0; at < cols; at += int8_chunk) {
      const std::size_t k = std::min(int8_chunk, cols - at);
      if (save)
        encode_int8(row + at, k, scale, buf);
      if (auto err = f.apply_raw(k, buf))
        return err;
      if (!save)
        decode_int8(buf, k, scale, row + at);
    }
  }
  return result{};
}

/// Activations and gradients: shape, precision tag (0 = binary32,
/// 1 = bfloat16, 2 = int8 with a scale per row), raw payload.
template <class Inspector>
typename Inspector::result_type inspect_tagged_matrix(Inspector& f, matrix& m, const char* name) {
  using result = typename Inspector::result_type;
  auto rows = static_cast<std::uint64_t>(m.rows());
  auto cols = static_cast<std::uint64_t>(m.cols());
  const auto n = static_cast<std::size_t>(m.size());
  if constexpr (std::is_same<result, void>::value) {
    f(caf::meta::type_name(name), rows, cols);
  } else if constexpr (Inspector::reads_state) {
    auto tag = static_cast<std::uint8_t>(wire_precision_setting().load(std::memory_order_relaxed));
    if (auto err = f(caf::meta::type_name(name), rows, cols, tag))
      return err;
    if (tag == static_cast<std::uint8_t>(wire_precision::f32))
      return f.apply_raw(n * sizeof(float), m.data());
    if (tag == static_cast<std::uint8_t>(wire_precision::int8))
      return int8_rows(f, m, true); // reads m only
    std::uint16_t buf[bf16_chunk];
    for (std::size_t at = 0; at < n; at += bf16_chunk) {
      const std::size_t k = std::min(bf16_chunk, n - at);
      encode_bf16(m.data() + at, k, buf);
      if (auto err = f.apply_raw(k * sizeof(std::uint16_t), buf))
        return err;
    }
    return result{};
  } else {
    std::uint8_t tag = 0;
    if (auto err = f(caf::meta::type_name(name), rows, cols, tag))
      return err;
    if (!plausible_shape<matrix>(rows, cols)
        || tag > static_cast<std::uint8_t>(wire_precision::int8))
      return caf::make_error(caf::sec::invalid_argument);
    m.resize(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
    const auto size = static_cast<std::size_t>(m.size());
    if (tag == static_cast<std::uint8_t>(wire_precision::f32))
      return f.apply_raw(size * sizeof(float), m.data());
    if (tag == static_cast<std::uint8_t>(wire_precision::int8))
      return int8_rows(f, m, false);
    std::uint16_t buf[bf16_chunk];
    for (std::size_t at = 0; at < size; at += bf16_chunk) {
      const std::size_t k = std::min(bf16_chunk, size - at);
      if (auto err = f.apply_raw(k * sizeof(std::uint16_t), buf))
        return err;
      decode_bf16(buf, k, m.data() + at);
    }
    return result{};
  }
}

} // namespace nettorrent

namespace nettorrent {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, shared_matrix& x) {
  if constexpr (Inspector::reads_state) {
    // Serialising or printing: read through the const pointer.
    static const matrix empty;
    auto& m = const_cast<matrix&>(x.ptr ? *x.ptr : empty);
    return inspect_tagged_matrix(f, m, "shared_matrix");
  } else {
    matrix tmp;
    auto res = inspect_tagged_matrix(f, tmp, "shared_matrix");
    x = shared_matrix{std::move(tmp)};
    return res;
  }
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, optimizer_state& s) {
  return f(caf::meta::type_name("optimizer_state"), s.m, s.v, s.steps, s.r);
}

/// A matrix owned by one message, moved in by the sender and out by the
/// receiver: the payload of backward and grad messages. (CAF's type traits
/// cannot take Eigen types directly, so matrices always travel wrapped.)
struct owned_matrix {
  matrix value;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, owned_matrix& x) {
  return inspect_tagged_matrix(f, x.value, "owned_matrix");
}

/// A non-owning view for inspecting an Eigen member of a larger struct.
template <class Mat>
struct matrix_view {
  Mat* ptr;
};

template <class Inspector, class Mat>
typename Inspector::result_type inspect(Inspector& f, matrix_view<Mat>& x) {
  return inspect_matrix(f, *x.ptr, "matrix");
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, layer_state& s) {
  matrix_view<matrix> w{&s.params.w};
  matrix_view<row_vector> b{&s.params.b};
  return f(caf::meta::type_name("layer_state"), w, b, s.w_state, s.b_state);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replica_score& s) {
  return f(caf::meta::type_name("replica_score"), s.loss, s.accuracy, s.loss_sum, s.correct,
           s.samples);
}

/// What a slice reports about itself.
struct slice_stats {
  std::uint64_t updates = 0;            ///< optimizer updates applied
  std::uint64_t dropped = 0;            ///< malformed messages dropped
  std::uint64_t stale = 0;              ///< messages of another incarnation dropped
  std::uint64_t max_staleness = 0;      ///< largest staleness seen
  std::vector<std::uint64_t> staleness; ///< histogram: staleness[k] = updates with staleness k
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, slice_stats& s) {
  return f(caf::meta::type_name("slice_stats"), s.updates, s.dropped, s.stale, s.max_staleness,
           s.staleness);
}

/// What a relay or a shard worker reports about the messages it dropped.
struct drop_stats {
  std::uint64_t dropped = 0; ///< malformed messages dropped
  std::uint64_t stale = 0;   ///< messages of another incarnation dropped
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, drop_stats& s) {
  return f(caf::meta::type_name("drop_stats"), s.dropped, s.stale);
}

// barrier_report is declared with the state machine that consumes it
// (nettorrent/run_machine.hpp).
/// Bytes from a peer with a bound on how many it may announce: CAF's own
/// byte-vector and string deserialisers allocate whatever size the input
/// announces, so every byte sequence that crosses nodes travels in this
/// (labels, the byte-order mark, node names).
template <std::size_t Limit>
struct bounded_bytes {
  std::vector<std::uint8_t> data;
};

template <class Inspector, std::size_t Limit>
typename Inspector::result_type inspect(Inspector& f, bounded_bytes<Limit>& x) {
  using result = typename Inspector::result_type;
  if constexpr (std::is_same<result, void>::value) {
    f(caf::meta::type_name("bytes"), x.data);
  } else if constexpr (Inspector::reads_state) {
    auto n = static_cast<std::uint64_t>(x.data.size());
    if (auto err = f(caf::meta::type_name("bytes"), n))
      return err;
    return n > 0 ? f.apply_raw(x.data.size(), x.data.data()) : result{};
  } else {
    std::uint64_t n = 0;
    if (auto err = f(caf::meta::type_name("bytes"), n))
      return err;
    if (n > Limit) // refused before allocating
      return caf::make_error(caf::sec::invalid_argument);
    x.data.resize(static_cast<std::size_t>(n));
    return n > 0 ? f.apply_raw(x.data.size(), x.data.data()) : result{};
  }
}

/// A batch's labels (at most 2^20: far above any batch the config allows).
using label_batch = bounded_bytes<(std::size_t{1} << 20)>;
/// The byte-order mark of a hello.
using byte_mark = bounded_bytes<16>;
/// A node id in a hello, as bytes (at most 256).
using node_name = bounded_bytes<256>;

/// What a node sends the coordinator at start to time its link (at most 4 MiB).
using probe_bytes = bounded_bytes<(std::size_t{1} << 22)>;

/// The coordinator's view of the nodes, one byte per node of the cluster
/// description in its order (see `peer_state`).
using node_states = bounded_bytes<65536>;
/// What a node_states byte says of a node.
enum class peer_state : std::uint8_t {
  unseen = 0, ///< has not joined yet
  alive = 1,  ///< joined and is up
  lost = 2,   ///< joined once and was lost
};

inline node_name to_node_name(const std::string& s) {
  return node_name{std::vector<std::uint8_t>(s.begin(), s.end())};
}
inline std::string to_string(const node_name& n) {
  return std::string(n.data.begin(), n.data.end());
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, dense_params& p) {
  matrix_view<matrix> w{&p.w};
  matrix_view<row_vector> b{&p.b};
  return f(caf::meta::type_name("dense_params"), w, b);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, policy_state& s) {
  return f(caf::meta::type_name("policy_state"), s.parts);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, coded_matrix& m) {
  // The precision travels as a byte; check_coded refuses one out of range.
  auto tag = static_cast<std::uint8_t>(m.precision);
  if constexpr (Inspector::reads_state) {
    return f(caf::meta::type_name("coded_matrix"), tag, m.rows, m.cols, m.values, m.halves, m.q);
  } else {
    auto res =
        f(caf::meta::type_name("coded_matrix"), tag, m.rows, m.cols, m.values, m.halves, m.q);
    m.precision = static_cast<sync_precision>(tag);
    return res;
  }
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, coded_params& p) {
  return f(caf::meta::type_name("coded_params"), p.w, p.b);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, round_payload& p) {
  return f(caf::meta::type_name("round_payload"), p.weights, p.moments, p.w_state, p.b_state);
}

/// What a leader's exchange computed for its layer: the state every replica
/// takes (one entry), or one per replica (policy outer with local moments);
/// the policy's new state of the layer (empty for a policy without one);
/// the bytes the round moved through the leader; under a sync precision
/// other than f32, the new weights as the change every slice applies (the
/// post weights are already what that change gives).
struct exchange_result {
  std::vector<layer_state> post;
  policy_state state;
  std::uint64_t bytes = 0;
  coded_params update;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, exchange_result& r) {
  return f(caf::meta::type_name("exchange_result"), r.post, r.state, r.bytes, r.update);
}

/// A sync request's policy part: the policies' hyper-parameters and, for a
/// policy with a state (outer), the layer's weights after the last round
/// and its state from then (empty otherwise).
struct sync_request {
  outer_config cfg;
  dense_params theta;
  policy_state state;
  sync_precision coding = sync_precision::f32; ///< topology.sync_precision
  /// The slices send their optimizer moments (topology.round_moments, or a
  /// round that a run checkpoint needs); else the post states hold none.
  bool moments = true;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sync_request& r) {
  auto tag = static_cast<std::uint8_t>(r.coding);
  if constexpr (Inspector::reads_state) {
    return f(caf::meta::type_name("sync_request"), r.cfg.learning_rate, r.cfg.momentum,
             r.cfg.nesterov, r.cfg.average_moments, r.theta, r.state, tag, r.moments);
  } else {
    auto res = f(caf::meta::type_name("sync_request"), r.cfg.learning_rate, r.cfg.momentum,
                 r.cfg.nesterov, r.cfg.average_moments, r.theta, r.state, tag, r.moments);
    r.coding = static_cast<sync_precision>(tag);
    return res;
  }
}

/// A run state shared within one process (the coordinator hands its last
/// round's state to the checkpoint writer without a copy). Never sent to
/// another node: it serialises to nothing.
struct run_state_ref {
  std::shared_ptr<const run_state> ptr;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, run_state_ref&) {
  return f(caf::meta::type_name("run_state_ref"));
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replica_change& c) {
  return f(caf::meta::type_name("replica_change"), c.from, c.cursors);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, epoch_deal& d) {
  return f(caf::meta::type_name("epoch_deal"), d.epoch, d.changes);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, worker_position& p) {
  return f(caf::meta::type_name("worker_position"), p.epoch, p.cursor, p.samples, p.next_batch,
           p.deal);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, barrier_report& r) {
  return f(caf::meta::type_name("barrier_report"), r.replica, r.incarnation, r.finished, r.on_grid,
           r.ends_next, r.samples, r.epoch, r.loss_sum, r.loss_samples, r.diverged, r.position);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, actor_key& k) {
  // The kind travels as its number; an unknown number makes a key that no
  // run layout finds, so the receiver refuses it.
  auto kind = static_cast<std::uint8_t>(k.kind);
  if constexpr (Inspector::reads_state) {
    return f(caf::meta::type_name("actor_key"), kind, k.replica, k.layer, k.boundary, k.slice);
  } else {
    auto res = f(caf::meta::type_name("actor_key"), kind, k.replica, k.layer, k.boundary, k.slice);
    k.kind = static_cast<actor_kind>(kind);
    return res;
  }
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, curve_point& p) {
  auto epoch = static_cast<std::uint64_t>(p.epoch);
  if constexpr (Inspector::reads_state) {
    return f(caf::meta::type_name("curve_point"), epoch, p.samples, p.seconds, p.train_loss,
             p.validation_loss, p.validation_accuracy);
  } else {
    auto res = f(caf::meta::type_name("curve_point"), epoch, p.samples, p.seconds, p.train_loss,
                 p.validation_loss, p.validation_accuracy);
    p.epoch = static_cast<std::size_t>(epoch);
    return res;
  }
}

/// The coordinator's reply to `run`. It only travels inside one process
/// (the session asks its own coordinator), but CAF wants every message type
/// inspectable; the test evaluation is filled in later by the session.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, run_result& r) {
  auto& rng = r.saved_rng;
  auto& t = r.round_time.seconds;
  static_assert(std::tuple_size<std::decay_t<decltype(t)>>::value == 6);
  return f(caf::meta::type_name("run_result"), r.ok, r.error, r.actor_run, r.samples, r.epochs,
           r.seconds, r.samples_per_second, r.best_validation_accuracy, r.time_to_target,
           r.reached_target, r.sync_rounds, r.sync_bytes, r.best_replica, r.synced_model,
           r.max_staleness, r.staleness, r.dropped, r.stale_dropped, r.late_replies, r.curve,
           r.layers, r.kept_best, r.saved_samples, r.saved_epoch, r.has_saved_rng, rng[0], rng[1],
           rng[2], rng[3], r.recoveries, r.recovery_seconds, r.samples_redone,
           r.replicas_rolled_back, r.actors_moved, r.actors_restarted, r.run_checkpoint_path, t[0],
           t[1], t[2], t[3], t[4], t[5]);
}

} // namespace nettorrent
