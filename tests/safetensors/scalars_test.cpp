// The checkpoint scalar formats of quant/scalars.h (spec formats.md §2), checked
// exhaustively against the spec formulas written out independently here.
#include "quant/scalars.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>

namespace ds4 {
namespace {

// Bitwise equality, so that -0 ≠ +0 and a wrong NaN payload would show.
#define EXPECT_SAME_FLOAT(a, b) EXPECT_EQ(std::bit_cast<uint32_t>(a), std::bit_cast<uint32_t>(b))

// formats.md §2 E4M3FN: sign bit 7, exponent bits 6..3 (bias 7), mantissa bits 2..0;
// exponent 0 → m·2^-9, otherwise (1 + m/8)·2^(e−7); 0x7f / 0xff decode as 0.
float e4m3_formula(uint8_t b) {
    const bool negative = b & 0x80;
    const int e = (b >> 3) & 0xf;
    const int m = b & 0x7;
    double v;
    if ((b & 0x7f) == 0x7f) return 0.0f;  // +0 for both NaN codes
    if (e == 0)
        v = m * std::pow(2.0, -9);
    else
        v = (1.0 + m / 8.0) * std::pow(2.0, e - 7);
    return static_cast<float>(negative ? -v : v);
}

TEST(CheckpointScalarsE4M3, AllBytesMatchTheFormula) {
    for (int b = 0; b < 256; ++b) {
        const float got = quant::e4m3_to_f32(static_cast<uint8_t>(b));
        SCOPED_TRACE(b);
        EXPECT_SAME_FLOAT(got, e4m3_formula(static_cast<uint8_t>(b)));
    }
}

TEST(CheckpointScalarsE4M3, KnownValues) {
    EXPECT_EQ(quant::e4m3_to_f32(0x38), 1.0f);
    EXPECT_EQ(quant::e4m3_to_f32(0x7e), 448.0f);  // max finite
    EXPECT_EQ(quant::e4m3_to_f32(0xfe), -448.0f);
    EXPECT_EQ(quant::e4m3_to_f32(0x08), 0.015625f);  // smallest normal 2^-6
    EXPECT_EQ(quant::e4m3_to_f32(0x01), 0.001953125f);  // smallest subnormal 2^-9
    EXPECT_EQ(quant::e4m3_to_f32(0x07), 7.0f / 512.0f);  // largest subnormal
    EXPECT_TRUE(std::signbit(quant::e4m3_to_f32(0x80)));  // -0
    EXPECT_EQ(quant::e4m3_to_f32(0x7f), 0.0f);
    EXPECT_EQ(quant::e4m3_to_f32(0xff), 0.0f);
}

TEST(CheckpointScalarsE8M0, AllBytesArePowersOfTwo) {
    for (int b = 0; b < 256; ++b) {
        SCOPED_TRACE(b);
        const float got = quant::e8m0_to_f32(static_cast<uint8_t>(b));
        if (b == 255) {
            EXPECT_TRUE(std::isinf(got) && got > 0);
        } else {
            // 2^(e−127), with e = 0 giving 2^-127 too (a subnormal f32).
            EXPECT_SAME_FLOAT(got, static_cast<float>(std::ldexp(1.0, b - 127)));
        }
    }
    EXPECT_EQ(std::bit_cast<uint32_t>(quant::e8m0_to_f32(0)), 0x00400000u);
    EXPECT_EQ(quant::e8m0_to_f32(127), 1.0f);
    EXPECT_EQ(quant::e8m0_to_f32(254), std::ldexp(1.0f, 127));
}

TEST(CheckpointScalarsE2M1, AllSixteenCodes) {
    const float expected[16] = {0.0f, 0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
    for (int q = 0; q < 16; ++q) {
        SCOPED_TRACE(q);
        EXPECT_SAME_FLOAT(quant::e2m1_to_f32(static_cast<uint8_t>(q)), expected[q]);
        // Only the low nibble counts: a packed byte's high nibble must not leak in.
        EXPECT_SAME_FLOAT(quant::e2m1_to_f32(static_cast<uint8_t>(q | 0xa0)), expected[q]);
    }
}

TEST(CheckpointScalarsBf16, DecodeIsTheUpperHalfForAllCodes) {
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = quant::bf16_to_f32(static_cast<uint16_t>(h));
        ASSERT_EQ(std::bit_cast<uint32_t>(f), h << 16) << h;
        // Every finite or infinite bf16 survives the round trip unchanged.
        if (!std::isnan(f)) {
            ASSERT_EQ(quant::f32_to_bf16(f), h) << h;
        }
    }
    EXPECT_EQ(quant::bf16_to_f32(0x3f80), 1.0f);
    EXPECT_EQ(quant::bf16_to_f32(0xc040), -3.0f);
    EXPECT_EQ(quant::bf16_to_f32(0x0001), std::ldexp(1.0f, -133));  // smallest subnormal
}

TEST(CheckpointScalarsBf16, EncodeRoundsToNearestEven) {
    auto bits = [](uint32_t u) { return std::bit_cast<float>(u); };
    EXPECT_EQ(quant::f32_to_bf16(bits(0x3f808000u)), 0x3f80);  // tie, even stays
    EXPECT_EQ(quant::f32_to_bf16(bits(0x3f818000u)), 0x3f82);  // tie, odd rounds up
    EXPECT_EQ(quant::f32_to_bf16(bits(0x3f808001u)), 0x3f81);  // above the tie
    EXPECT_EQ(quant::f32_to_bf16(bits(0x3f807fffu)), 0x3f80);  // below the tie
    EXPECT_EQ(quant::f32_to_bf16(bits(0x7f7fffffu)), 0x7f80);  // max f32 rounds to inf
    // NaN stays NaN with the quiet bit set: (bits >> 16) | 0x40.
    EXPECT_EQ(quant::f32_to_bf16(bits(0x7f800001u)), 0x7fc0);
    EXPECT_EQ(quant::f32_to_bf16(bits(0xff810000u)), 0xffc1);
}

}  // namespace
}  // namespace ds4
