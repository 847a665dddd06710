// Activation quantizers: Q8_K (formats.md §3.3) and Q8_0F (§3.7 item 3).
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "quant/reference.h"
#include "test_support.h"

namespace ds4::quant {
namespace {

using test::Dist;
using test::make_data;

std::vector<BlockQ8K> q8_K(const std::vector<float>& x) {
    std::vector<BlockQ8K> y(x.size() / QK_K);
    ref::quantize_q8_K(x.data(), y.data(), static_cast<int64_t>(x.size()));
    return y;
}

TEST(RefQuantizeQ8_K, LargestMagnitudeEncodesAsMinus127) {
    auto x = make_data(Dist::Normal, 4 * QK_K, 1);
    x[17] = 9.f;            // block 0: positive maximum
    x[QK_K + 200] = -9.f;   // block 1: negative maximum
    x[2 * QK_K + 3] = 5.f;  // block 2: tie of magnitudes, the first one wins
    x[2 * QK_K + 4] = -5.f;
    const auto y = q8_K(x);
    EXPECT_EQ(y[0].qs[17], -127);
    EXPECT_EQ(y[1].qs[200], -127);
    EXPECT_EQ(y[2].qs[3], -127);
    EXPECT_EQ(y[2].qs[4], 127);
    // d = -m/127 with the sign of the chosen element: negative for a positive maximum
    EXPECT_FLOAT_EQ(y[0].d, -9.f / 127);
    EXPECT_LT(y[0].d, 0.f);
    EXPECT_FLOAT_EQ(y[1].d, 9.f / 127);
    EXPECT_GT(y[1].d, 0.f);
    EXPECT_FLOAT_EQ(y[2].d, -5.f / 127);
}

TEST(RefQuantizeQ8_K, ScaleIsReciprocalOfInverseScale) {
    // d is computed as 1/(-127/m), not -m/127 (they differ in the last bit for some m)
    const auto x = make_data(Dist::Normal, 16 * QK_K, 2);
    const auto y = q8_K(x);
    for (size_t b = 0; b < y.size(); ++b) {
        float m = 0;
        for (int i = 0; i < QK_K; ++i) {
            if (std::fabs(x[b * QK_K + i]) > std::fabs(m)) m = x[b * QK_K + i];
        }
        EXPECT_EQ(y[b].d, 1.f / (-127.f / m)) << b;
    }
}

TEST(RefQuantizeQ8_K, CodesRoundHalfEvenAndBsumsAreGroupSums) {
    auto x = make_data(Dist::Uniform, 8 * QK_K, 3);
    // block 0: max 127 → iscale = -1 exactly, so ±k.5 inputs are exact ties
    x[0] = 127.f;
    x[1] = 2.5f;
    x[2] = 3.5f;
    x[3] = -0.5f;
    const auto y = q8_K(x);
    EXPECT_EQ(y[0].qs[1], -2);  // -2.5 → -2 (even)
    EXPECT_EQ(y[0].qs[2], -4);  // -3.5 → -4 (even)
    EXPECT_EQ(y[0].qs[3], 0);   // 0.5 → 0
    for (const auto& b : y) {
        for (int g = 0; g < QK_K / 16; ++g) {
            int sum = 0;
            for (int i = 0; i < 16; ++i) sum += b.qs[16 * g + i];
            EXPECT_EQ(b.bsums[g], sum);
        }
    }
}

TEST(RefQuantizeQ8_K, RoundTripErrorIsHalfAStep) {
    const auto x = make_data(Dist::HeavyTailed, 8 * QK_K, 4);
    const auto y = q8_K(x);
    std::vector<float> back(x.size());
    ref::dequant_q8_K(y.data(), back.data(), static_cast<int64_t>(back.size()));
    for (size_t i = 0; i < x.size(); ++i) {
        EXPECT_LE(std::fabs(back[i] - x[i]), 0.5001f * std::fabs(y[i / QK_K].d)) << i;
    }
}

TEST(RefQuantizeQ8_K, ZeroBlockIsAllZero) {
    std::vector<float> x(2 * QK_K, 0.f);
    x[QK_K + 5] = -0.f;  // negative zero is still zero
    const auto y = q8_K(x);
    for (const auto& b : y) {
        EXPECT_EQ(b.d, 0.f);
        for (int i = 0; i < QK_K; ++i) EXPECT_EQ(b.qs[i], 0);
        for (int g = 0; g < QK_K / 16; ++g) EXPECT_EQ(b.bsums[g], 0);
    }
}

TEST(RefQuantizeQ8_K, HandlesManyBlocksIndependently) {
    // n = 16·256 (one routed-MoE input row); each block scales on its own maximum
    auto x = make_data(Dist::Normal, 16 * QK_K, 5);
    for (int b = 0; b < 16; ++b) {
        for (int i = 0; i < QK_K; ++i) x[b * QK_K + i] *= std::ldexp(1.f, b - 8);
    }
    const auto y = q8_K(x);
    ASSERT_EQ(y.size(), 16u);
    for (int b = 0; b < 16; ++b) {
        int min_q = 0;
        for (int i = 0; i < QK_K; ++i) min_q = std::min<int>(min_q, y[b].qs[i]);
        EXPECT_EQ(min_q, -127) << b;
    }
}

TEST(RefQuantizeQ8_K, SubnormalBlockStaysFinite) {
    std::vector<float> x(QK_K, 0.f);
    x[0] = std::numeric_limits<float>::denorm_min() * 1000;
    x[1] = -std::numeric_limits<float>::denorm_min() * 3;
    const auto y = q8_K(x);
    EXPECT_TRUE(std::isfinite(y[0].d));
    std::vector<float> back(QK_K);
    ref::dequant_q8_K(y.data(), back.data(), QK_K);
    for (float v : back) EXPECT_TRUE(std::isfinite(v));
}

std::vector<BlockQ8_0F> q8_0f(const std::vector<float>& x) {
    std::vector<BlockQ8_0F> y(x.size() / QK8_0);
    ref::quantize_q8_0f(x.data(), y.data(), static_cast<int64_t>(x.size()));
    return y;
}

TEST(RefQuantizeQ8_0F, ScaleIsAmaxOver127InF32) {
    const auto x = make_data(Dist::Normal, 64 * QK8_0, 6);
    const auto y = q8_0f(x);
    for (size_t b = 0; b < y.size(); ++b) {
        float amax = 0;
        for (int i = 0; i < QK8_0; ++i) amax = std::max(amax, std::fabs(x[b * QK8_0 + i]));
        EXPECT_EQ(y[b].d, amax / 127.f);
        const float id = 1.f / y[b].d;
        for (int i = 0; i < QK8_0; ++i) {
            EXPECT_EQ(y[b].qs[i], static_cast<int>(std::nearbyint(x[b * QK8_0 + i] * id)))
                << b << ":" << i;
        }
    }
}

TEST(RefQuantizeQ8_0F, TiesRoundHalfEven) {
    // amax 127 → s = 1, 1/s = 1: exact ties
    std::vector<float> x(QK8_0, 0.f);
    const float vals[] = {127.f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, -127.f, 126.5f};
    const int want[] = {127, 0, 2, 2, 0, -2, -2, -127, 126};
    for (int i = 0; i < 9; ++i) x[i] = vals[i];
    const auto y = q8_0f(x);
    EXPECT_EQ(y[0].d, 1.f);
    for (int i = 0; i < 9; ++i) EXPECT_EQ(y[0].qs[i], want[i]) << i;
}

TEST(RefQuantizeQ8_0F, ZeroBlockHasZeroScaleAndCodes) {
    std::vector<float> x(2 * QK8_0, 0.f);
    x[QK8_0] = 1.f;
    const auto y = q8_0f(x);
    EXPECT_EQ(y[0].d, 0.f);
    for (int i = 0; i < QK8_0; ++i) EXPECT_EQ(y[0].qs[i], 0);
    EXPECT_EQ(y[1].qs[0], 127);
}

}  // namespace
}  // namespace ds4::quant
