// The wire format of the data-flow matrices: binary32 or bfloat16
// (system.wire_precision), tagged per matrix; sync-round weights stay f32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <caf/all.hpp>

#include "messages.hpp"
#include "nettorrent/bf16.hpp"
#include "nettorrent/int8.hpp"
#include "spawn.hpp"

namespace nt = nettorrent;

namespace {

/// Sets the process's wire precision for one test, and back.
class Wire : public ::testing::Test {
protected:
  void TearDown() override { nt::wire_precision_setting().store(nt::wire_precision::f32); }

  template <class T>
  std::vector<char> encode(T x, nt::wire_precision p) {
    nt::wire_precision_setting().store(p);
    std::vector<char> buf;
    caf::binary_serializer sink{sys_, buf};
    EXPECT_FALSE(sink(x));
    return buf;
  }

  template <class T>
  caf::error decode(const std::vector<char>& buf, T& x) {
    caf::binary_deserializer source{sys_, buf};
    return source(x);
  }

  caf::actor_system_config cfg_ = [] {
    caf::actor_system_config c;
    nt::register_message_types(c);
    return c;
  }();
  caf::actor_system sys_{cfg_};
};

nt::matrix awkward_values() {
  nt::matrix m(3, 4);
  const float v[] = {1.0f,     -2.5f,    3.14159265f,           1e-20f,
                     65504.0f, -0.0f,    1.00390625f /* tie */, std::numeric_limits<float>::max(),
                     0.1f,     -7.0e30f, 1.0f / 3.0f,           255.5f};
  std::memcpy(m.data(), v, sizeof v);
  return m;
}

TEST_F(Wire, F32MatricesRoundTripExactly) {
  const nt::matrix m = awkward_values();
  const auto buf = encode(nt::shared_matrix{nt::matrix{m}}, nt::wire_precision::f32);
  nt::shared_matrix back;
  ASSERT_FALSE(decode(buf, back));
  ASSERT_EQ(back.ptr->rows(), 3);
  ASSERT_EQ(back.ptr->cols(), 4);
  EXPECT_EQ(std::memcmp(back.ptr->data(), m.data(), sizeof(float) * 12), 0);
}

TEST_F(Wire, Bf16MatricesTravelInHalfTheBytesRoundedToNearestEven) {
  const nt::matrix m = awkward_values();
  const auto f32 = encode(nt::shared_matrix{nt::matrix{m}}, nt::wire_precision::f32);
  const auto bf16 = encode(nt::shared_matrix{nt::matrix{m}}, nt::wire_precision::bf16);
  EXPECT_EQ(f32.size() - bf16.size(), 12u * 2) << "the payload halves, the header stays";
  nt::shared_matrix back;
  ASSERT_FALSE(decode(bf16, back));
  for (int i = 0; i < 12; ++i)
    EXPECT_EQ(back.ptr->data()[i], nt::from_bf16(nt::to_bf16(m.data()[i]))) << i;
  // A receiver decodes either tag, whatever it would send itself.
  nt::wire_precision_setting().store(nt::wire_precision::f32);
  ASSERT_FALSE(decode(bf16, back));
  EXPECT_EQ(back.ptr->data()[0], 1.0f);
  EXPECT_EQ(back.ptr->data()[1], -2.5f);
  EXPECT_EQ(back.ptr->data()[6], 1.0f) << "1 + 2^-8 is a tie: rounds to the even 1.0";
  EXPECT_TRUE(std::isinf(back.ptr->data()[7])) << "float's max is beyond bfloat16's: rounds to inf";
}

TEST_F(Wire, GradientsTravelAsBf16Too) {
  const nt::matrix m = awkward_values();
  const auto f32 = encode(nt::owned_matrix{m}, nt::wire_precision::f32);
  const auto bf16 = encode(nt::owned_matrix{m}, nt::wire_precision::bf16);
  EXPECT_EQ(f32.size() - bf16.size(), 12u * 2);
  nt::owned_matrix back;
  ASSERT_FALSE(decode(bf16, back));
  for (int i = 0; i < 12; ++i)
    EXPECT_EQ(back.value.data()[i], nt::from_bf16(nt::to_bf16(m.data()[i]))) << i;
}

TEST_F(Wire, Int8MatricesTravelInAQuarterOfTheBytesWithAScalePerRow) {
  nt::matrix m(3, 4);
  m << 1.0f, -2.5f, 0.3f, 127.0f, //
      0.0f, 0.0f, 0.0f, 0.0f,     //
      std::nanf(""), 1.0f, 2.0f, 3.0f;
  const auto f32 = encode(nt::shared_matrix{nt::matrix{m}}, nt::wire_precision::f32);
  const auto int8 = encode(nt::shared_matrix{nt::matrix{m}}, nt::wire_precision::int8);
  EXPECT_EQ(f32.size() - int8.size(), 12u * 4 - (12u + 3u * 4)) << "a byte per value, a scale per row";
  nt::shared_matrix back;
  nt::wire_precision_setting().store(nt::wire_precision::f32); // any receiver decodes it
  ASSERT_FALSE(decode(int8, back));
  const nt::matrix& b = *back.ptr;
  // Row 0: scale 127 / 127 = 1, values rounded to nearest, ties to even.
  EXPECT_EQ(b(0, 0), 1.0f);
  EXPECT_EQ(b(0, 1), -2.0f);
  EXPECT_EQ(b(0, 2), 0.0f);
  EXPECT_EQ(b(0, 3), 127.0f);
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(b(1, j), 0.0f) << "a row of zeros stays zeros";
    EXPECT_TRUE(std::isnan(b(2, j))) << "a row with a NaN arrives as NaN: the divergence shows";
  }
  // Gradients too.
  const auto g = encode(nt::owned_matrix{m}, nt::wire_precision::int8);
  nt::owned_matrix gb;
  ASSERT_FALSE(decode(g, gb));
  EXPECT_EQ(gb.value(0, 1), -2.0f);
}

TEST(Int8, EveryValueDecodesWithinHalfItsRowsScale) {
  std::vector<float> x(1000), y(1000);
  for (std::size_t j = 0; j < x.size(); ++j)
    x[j] = std::sin(static_cast<float>(j) * 0.37f) * (j % 7 == 0 ? 40.0f : 3.0f);
  float largest = 0;
  for (float v : x)
    largest = std::max(largest, std::fabs(v));
  const float s = nt::int8_row_scale(x.data(), x.size());
  EXPECT_EQ(s, largest / 127.0f);
  std::vector<std::int8_t> q(x.size());
  nt::encode_int8(x.data(), x.size(), s, q.data());
  nt::decode_int8(q.data(), q.size(), s, y.data());
  for (std::size_t j = 0; j < x.size(); ++j)
    EXPECT_LE(std::fabs(y[j] - x[j]), s / 2 * (1 + 1e-5f)) << j;
  EXPECT_TRUE(std::isnan(nt::int8_row_scale(std::vector<float>{1.0f, INFINITY}.data(), 2)));
}

TEST_F(Wire, AnUnknownPrecisionTagIsRefused) {
  auto buf = encode(nt::shared_matrix{nt::matrix::Constant(2, 2, 1.0f)}, nt::wire_precision::f32);
  // The tag is the byte after the two 64-bit shape fields.
  ASSERT_EQ(static_cast<unsigned char>(buf[16]), 0u);
  buf[16] = 3; // 0 f32, 1 bf16, 2 int8
  nt::shared_matrix back;
  EXPECT_TRUE(decode(buf, back));
}

TEST_F(Wire, SyncRoundWeightsStayF32UnderBf16) {
  nt::layer_state s;
  s.params.w = awkward_values();
  s.params.b = nt::row_vector::Constant(4, 0.1f);
  const auto f32 = encode(s, nt::wire_precision::f32);
  const auto bf16 = encode(s, nt::wire_precision::bf16);
  EXPECT_EQ(f32, bf16);
  nt::layer_state back;
  ASSERT_FALSE(decode(bf16, back));
  EXPECT_EQ(std::memcmp(back.params.w.data(), s.params.w.data(), sizeof(float) * 12), 0);
}

TEST(Bf16, ConversionRoundsToNearestEvenAndKeepsSpecials) {
  EXPECT_EQ(nt::to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(nt::to_bf16(-2.0f), 0xc000);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to even (1).
  EXPECT_EQ(nt::to_bf16(1.00390625f), 0x3f80);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even is the upper.
  EXPECT_EQ(nt::to_bf16(1.01171875f), 0x3f82);
  // Just above the tie rounds up.
  EXPECT_EQ(nt::to_bf16(std::nextafter(1.00390625f, 2.0f)), 0x3f81);
  EXPECT_EQ(nt::to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(nt::to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isnan(nt::from_bf16(nt::to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(nt::from_bf16(nt::to_bf16(-std::numeric_limits<float>::signaling_NaN()))));
  EXPECT_EQ(nt::to_bf16(-0.0f), 0x8000);
  // Every bfloat16 converts to binary32 and back unchanged.
  for (std::uint32_t h = 0; h <= 0xffff; ++h) {
    const float x = nt::from_bf16(static_cast<std::uint16_t>(h));
    if (!std::isnan(x)) {
      ASSERT_EQ(nt::to_bf16(x), h) << h;
    }
  }
  // The relative error of rounding is at most 2^-8.
  for (float x : {0.1f, 1.0f / 3.0f, 3.14159265f, 1e-20f, 12345.678f})
    EXPECT_LE(std::abs(nt::from_bf16(nt::to_bf16(x)) - x), std::abs(x) * (1.0f / 256)) << x;
}

} // namespace
