// How a sync round's weights travel (topology.sync_precision): f32 as they
// are; bf16 and int8 as a change from the last round's weights, rebuilt the
// same way by the leader, the coordinator and every slice.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "nettorrent/dense.hpp"
#include "nettorrent/rng.hpp"
#include "nettorrent/slice_ops.hpp"
#include "nettorrent/sync_codec.hpp"
#include "test_support.hpp"

namespace nt = nettorrent;

namespace {

nt::dense_params layer(std::uint64_t seed, float spread) {
  nt::dense_params p;
  p.w.resize(6, 10);
  p.b.resize(10);
  nt::rng g(seed);
  for (Eigen::Index i = 0; i < p.w.size(); ++i)
    p.w.data()[i] = spread * (nt::unit_float(g.next()) - 0.5f);
  for (Eigen::Index i = 0; i < p.b.size(); ++i)
    p.b[i] = spread * (nt::unit_float(g.next()) - 0.5f);
  return p;
}

bool bits_equal(const nt::dense_params& a, const nt::dense_params& b) {
  return nt::same_shape(a, b)
         && std::memcmp(a.w.data(), b.w.data(),
                        sizeof(float) * static_cast<std::size_t>(a.w.size()))
                == 0
         && std::memcmp(a.b.data(), b.b.data(),
                        sizeof(float) * static_cast<std::size_t>(a.b.size()))
                == 0;
}

constexpr nt::sync_precision all[] = {nt::sync_precision::f32, nt::sync_precision::bf16,
                                      nt::sync_precision::int8};

} // namespace

TEST(SyncCodec, F32CarriesTheWeightsThemselvesBitForBit) {
  const auto base = layer(1, 2.0f);
  const auto now = layer(2, 2.0f);
  const auto c = nt::encode_params(now, base, nt::sync_precision::f32);
  EXPECT_TRUE(bits_equal(nt::decode_params(c, base), now));
  EXPECT_TRUE(bits_equal(nt::decode_params(c, nt::dense_params{}), now)) << "no base needed";
  EXPECT_EQ(nt::coded_bytes(c), nt::params_bytes(now));
}

TEST(SyncCodec, CodedChangesRebuildWithinTheirRounding) {
  const auto base = layer(1, 2.0f);
  auto now = base;
  const auto change = layer(3, 0.02f);
  now.w += change.w;
  now.b += change.b;
  for (auto p : {nt::sync_precision::bf16, nt::sync_precision::int8}) {
    const auto c = nt::encode_params(now, base, p);
    const auto got = nt::decode_params(c, base);
    for (Eigen::Index i = 0; i < now.w.rows(); ++i) {
      const float row_max = (now.w.row(i) - base.w.row(i)).cwiseAbs().maxCoeff();
      for (Eigen::Index j = 0; j < now.w.cols(); ++j) {
        const float d = now.w(i, j) - base.w(i, j);
        // bf16: 8 significant bits of the change; int8: half a step of the row's scale.
        const float bound = p == nt::sync_precision::bf16 ? std::fabs(d) / 256 : row_max / 254;
        EXPECT_LE(std::fabs(got.w(i, j) - (base.w(i, j) + d)), bound * 1.0001f + 1e-7f)
            << nt::to_string(p) << " at " << i << "," << j;
      }
    }
  }
}

TEST(SyncCodec, CodedChangesTakeAHalfAndAQuarterOfTheBytesPlusAScalePerRow) {
  const auto base = layer(1, 1.0f);
  const auto now = layer(2, 1.0f);
  const std::size_t f32 = nt::params_bytes(now);
  EXPECT_EQ(nt::coded_bytes(nt::encode_params(now, base, nt::sync_precision::bf16)), f32 / 2);
  // 60 + 10 values of one byte, and a float scale for each of the 6 + 1 rows.
  EXPECT_EQ(nt::coded_bytes(nt::encode_params(now, base, nt::sync_precision::int8)),
            f32 / 4 + 7 * sizeof(float));
}

TEST(SyncCodec, AColumnCutRebuildsTheSameBitsAsTheWholeLayer) {
  // The leader codes the whole layer and every slice rebuilds its columns
  // from its own copy of the last round: the bits must be the coordinator's.
  const auto base = layer(4, 1.0f);
  const auto now = layer(5, 1.0f);
  const auto cols = nt::split_columns(10, 3);
  for (auto p : all) {
    const auto whole = nt::encode_params(now, base, p);
    const auto rebuilt = nt::decode_params(whole, base);
    for (const auto& r : cols) {
      const auto mine = nt::cut_slice(nt::layer_state{base, {}, {}}, r).params;
      const auto expected = nt::cut_slice(nt::layer_state{rebuilt, {}, {}}, r).params;
      const auto part = nt::cut_columns(whole, r);
      EXPECT_EQ(nt::check_coded(part, mine), "");
      EXPECT_TRUE(bits_equal(nt::decode_params(part, mine), expected)) << nt::to_string(p);
    }
  }
}

TEST(SyncCodec, APayloadCutTakesTheMomentsColumnsAsCutSliceDoes) {
  nt::layer_state full{layer(6, 1.0f), {}, {}};
  full.w_state.m.assign(60, 0);
  full.w_state.v.assign(60, 0);
  full.b_state.m.assign(10, 0);
  for (std::size_t i = 0; i < 60; ++i) {
    full.w_state.m[i] = static_cast<float>(i);
    full.w_state.v[i] = static_cast<float>(100 + i);
  }
  full.w_state.steps = 7;
  nt::round_payload whole{nt::encode_params(full.params, full.params, nt::sync_precision::f32),
                          true, full.w_state, full.b_state};
  for (const auto& r : nt::split_columns(10, 4)) {
    const auto expect = nt::cut_slice(full, r);
    const auto got = nt::cut_payload(whole, r);
    EXPECT_EQ(got.w_state.m, expect.w_state.m);
    EXPECT_EQ(got.w_state.v, expect.w_state.v);
    EXPECT_EQ(got.b_state.m, expect.b_state.m);
    EXPECT_TRUE(got.b_state.v.empty());
    EXPECT_EQ(got.w_state.steps, 7u);
    EXPECT_EQ(nt::payload_bytes(got), nt::state_bytes(expect));
  }
  whole.moments = false;
  EXPECT_TRUE(nt::cut_payload(whole, {0, 5}).w_state.m.empty()) << "no moments, none cut";
}

TEST(SyncCodec, ADivergedRowRebuildsAsNaN) {
  const auto base = layer(1, 1.0f);
  auto now = base;
  now.w(2, 3) = std::numeric_limits<float>::quiet_NaN();
  for (auto p : all) {
    const auto got = nt::decode_params(nt::encode_params(now, base, p), base);
    EXPECT_TRUE(std::isnan(got.w(2, 3))) << nt::to_string(p);
    EXPECT_FALSE(std::isnan(got.w(1, 3))) << nt::to_string(p);
  }
}

TEST(SyncCodec, AMalformedPayloadIsNamed) {
  const auto base = layer(1, 1.0f);
  const auto good = nt::encode_params(layer(2, 1.0f), base, nt::sync_precision::int8);
  EXPECT_EQ(nt::check_coded(good, base), "");
  auto c = good;
  c.w.q.pop_back();
  EXPECT_CONTAINS(nt::check_coded(c, base),
                  "weights (6 x 10, int8) whose payload has the wrong size");
  c = good;
  c.w.values.pop_back(); // a scale short
  EXPECT_CONTAINS(nt::check_coded(c, base), "wrong size");
  c = good;
  c.w.cols = 9;
  EXPECT_CONTAINS(nt::check_coded(c, base), "weights of 6 x 9 for 6 x 10");
  c = good;
  c.b.precision = nt::sync_precision::bf16;
  EXPECT_CONTAINS(nt::check_coded(c, base), "different precisions");
  c = good;
  c.w.precision = c.b.precision = static_cast<nt::sync_precision>(9);
  EXPECT_CONTAINS(nt::check_coded(c, base), "unknown precision 9");
  c = good;
  c.b.halves.push_back(1);
  EXPECT_CONTAINS(nt::check_coded(c, base), "bias (1 x 10, int8) whose payload has the wrong size");
}

TEST(SyncCodec, ErrorFeedbackDeliversWhatRoundingHeldBack) {
  // A replica that starts every round from the round's weights and moves
  // by the same small step: without feedback each int8 change loses the
  // same rounding and the model drifts from where the steps lead; with it
  // the delivered changes add up to the steps but for the last residual,
  // within half a quantum per element.
  const nt::dense_params base = layer(3, 2.0f);
  nt::dense_params step = layer(4, 0.01f);
  step.w(0, 0) = 1.0f; // a large entry sets row 0's scale: the others round coarsely
  std::vector<float> w_owed, b_owed, w_next, b_next;
  nt::dense_params sent = base;  // the synced weights, round by round
  nt::dense_params plain = base; // the same without feedback
  const int rounds = 20;
  for (int k = 0; k < rounds; ++k) {
    nt::dense_params now = sent;
    now.w += step.w;
    now.b += step.b;
    const nt::coded_params c =
        nt::encode_with_feedback(now, sent, nt::sync_precision::int8, w_owed, b_owed, w_next, b_next);
    const nt::dense_params got = nt::decode_params(c, sent);
    // The residual is what the coding left out of now + owed.
    for (Eigen::Index i = 0; i < got.w.size(); ++i) {
      const auto u = static_cast<std::size_t>(i);
      const float want = now.w.data()[i] + (w_owed.empty() ? 0.0f : w_owed[u]);
      ASSERT_EQ(w_next[u], want - got.w.data()[i]) << i;
    }
    w_owed = w_next;
    b_owed = b_next;
    sent = got;
    nt::dense_params pnow = plain;
    pnow.w += step.w;
    pnow.b += step.b;
    plain = nt::decode_params(nt::encode_params(pnow, plain, nt::sync_precision::int8), plain);
  }
  double fed = 0, drift = 0;
  for (Eigen::Index j = 1; j < base.w.cols(); ++j) {
    const double target = double{base.w(0, j)} + rounds * double{step.w(0, j)};
    fed = std::max(fed, std::abs(target - sent.w(0, j)));
    drift = std::max(drift, std::abs(target - plain.w(0, j)));
  }
  // Row 0's change is about 1 each round: a quantum of about 1/127.
  const double half_quantum = 1.01 / 127 / 2;
  EXPECT_LE(fed, half_quantum) << "feedback keeps within half a quantum";
  EXPECT_GT(drift, 4 * half_quantum) << "plain coding drifts round after round";
  // Deterministic: the same inputs give the same bits.
  std::vector<float> w2, b2;
  const nt::coded_params a =
      nt::encode_with_feedback(sent, base, nt::sync_precision::bf16, w_owed, b_owed, w_next, b_next);
  const nt::coded_params b =
      nt::encode_with_feedback(sent, base, nt::sync_precision::bf16, w_owed, b_owed, w2, b2);
  EXPECT_EQ(a.w.halves, b.w.halves);
  EXPECT_EQ(w_next, w2);
  EXPECT_EQ(b_next, b2);
}
