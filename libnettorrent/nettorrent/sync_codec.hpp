// How a sync round's weights travel (topology.sync_precision).
//
// Under "f32" a slice sends its weights and receives the round's weights,
// bit for bit. Under "bf16" and "int8" both directions carry a change from
// the last round's weights θ, which the coordinator, the leader and every
// replica's slices hold bit for bit: a slice sends w − θ, the leader sends
// θ′ − θ, and every side rebuilds with the same function (decode_params:
// θ plus the decoded change), so the coordinator's copy of the round equals
// every slice's weights exactly. int8 keeps a scale per row (nettorrent/int8.hpp);
// bf16 rounds to nearest even (nettorrent/bf16.hpp). With error feedback
// (encode_with_feedback) a replica's slices carry what a change lost to
// rounding into the next round's change.
// Plain C++, testable without actors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "nettorrent/config.hpp"
#include "nettorrent/dense.hpp"
#include "nettorrent/optimizer.hpp"

namespace nettorrent {

/// One matrix as a sync round sends it.
struct coded_matrix {
  sync_precision precision = sync_precision::f32;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<float> values;         ///< f32: the rows x cols values; int8: one scale per row
  std::vector<std::uint16_t> halves; ///< bf16: the rows x cols changes
  std::vector<std::int8_t> q;        ///< int8: the rows x cols quantised changes
};

/// A layer's (or a slice's) weights and bias as a sync round sends them.
struct coded_params {
  coded_matrix w;
  coded_matrix b;
};

/// What travels between a leader and a slice in a sync round: the weights
/// coded, and the optimizer moments (f32) when `moments` is set. A slice
/// always sends its moments (the coordinator keeps them for rollbacks and
/// checkpoints); it receives them only when the round changes them
/// (sync_policy_def::keeps_inner_state).
struct round_payload {
  coded_params weights;
  bool moments = false;
  optimizer_state w_state;
  optimizer_state b_state;
};

/// Columns `cols` of a whole layer's payload (moments too, when it has them).
round_payload cut_payload(const round_payload& whole, column_range cols);

/// Bytes of `p`'s weights and moments.
std::size_t payload_bytes(const round_payload& p) noexcept;

/// Under f32 `now` itself; under bf16 and int8 the change `now - base`.
/// Requires `now` and `base` of the same shape (base is unread under f32).
coded_params encode_params(const dense_params& now, const dense_params& base, sync_precision p);

/// The weights `c` describes: under f32 its values; otherwise `base` plus
/// the decoded change. Requires check_coded(c, base) to be "".
dense_params decode_params(const coded_params& c, const dense_params& base);

/// Error feedback (topology.sync_feedback): codes `now` plus what earlier
/// rounds did not deliver (`w_owed`, `b_owed`: W row-major and b; empty:
/// nothing) as a change from `base`, and writes into `w_next`, `b_next`
/// what this coding does not deliver in turn: (now + owed) minus
/// decode_params(result, base). Over many rounds the decoded changes add
/// up to the true ones but for the last residual.
coded_params encode_with_feedback(const dense_params& now, const dense_params& base,
                                  sync_precision p, const std::vector<float>& w_owed,
                                  const std::vector<float>& b_owed, std::vector<float>& w_next,
                                  std::vector<float>& b_next);
/// Columns `cols` of `c` (an int8 row keeps its scale).
coded_params cut_columns(const coded_params& c, column_range cols);

/// What is wrong with `c` (a message from a peer) as the weights of a
/// `rows` x `cols` block (and its bias of `cols`), or "".
std::string check_coded(const coded_params& c, std::int64_t rows, std::int64_t cols);

/// The same for a block shaped like `like`.
std::string check_coded(const coded_params& c, const dense_params& like);

/// What is wrong with `p` as a payload for a `rows` x `cols` block: its
/// coded weights, and its moments (each empty or of the block's size), or "".
std::string check_payload(const round_payload& p, std::int64_t rows, std::int64_t cols);

/// The bytes of `c`'s payload.
std::size_t coded_bytes(const coded_params& c) noexcept;

} // namespace nettorrent
