// Unit tests of the element-wise primitives (spec model.md §3, §4.3).
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "cpu/matvec.h"
#include "cpu/numerics.h"
#include "quant/scalars.h"

namespace ds4::cpu {
namespace {

TEST(Numerics, E4M3RoundingKeepsGridValuesAndTiesToEven) {
    std::vector<float> grid;
    for (int b = 0; b < 0x7f; ++b) grid.push_back(quant::e4m3_to_f32(static_cast<uint8_t>(b)));  // 0 .. 448
    for (float v : grid) {
        EXPECT_EQ(e4m3_round(v), v);
        EXPECT_EQ(e4m3_round(-v), -v);
    }
    // midpoints go to the neighbour with an even mantissa (code bit 0 clear)
    for (size_t i = 0; i + 1 < grid.size(); ++i) {
        const float mid = (grid[i] + grid[i + 1]) / 2;
        EXPECT_EQ(e4m3_round(mid), (i % 2 == 0) ? grid[i] : grid[i + 1]) << "between " << grid[i] << " and " << grid[i + 1];
        EXPECT_EQ(e4m3_round(std::nextafter(mid, 0.0f)), grid[i]);
        EXPECT_EQ(e4m3_round(std::nextafter(mid, 1e9f)), grid[i + 1]);
    }
}

TEST(Numerics, E2M1RoundingFollowsOfficialMidpointRules) {
    const std::vector<std::pair<float, float>> cases = {
        {0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f}, {1.75f, 2.0f}, {2.5f, 2.0f}, {3.5f, 4.0f}, {5.0f, 4.0f},
        {0.26f, 0.5f}, {2.6f, 3.0f}, {5.1f, 6.0f}, {6.0f, 6.0f}, {0.1f, 0.0f}, {1.1f, 1.0f}};
    for (auto [in, out] : cases) {
        EXPECT_EQ(e2m1_round(in), out) << in;
        EXPECT_EQ(e2m1_round(-in), -out) << -in;
    }
}

TEST(Numerics, Pow2CeilAndBlockScales) {
    EXPECT_EQ(pow2_ceil(1.0f), 1.0f);
    EXPECT_EQ(pow2_ceil(1.5f), 2.0f);
    EXPECT_EQ(pow2_ceil(0.3f), 0.5f);
    EXPECT_EQ(pow2_ceil(0x1p-20f), 0x1p-20f);
    // amax 448 → scale 1, so grid values survive FP8 simulation unchanged
    std::vector<float> x(64, 0.0f);
    x[0] = 448.0f;
    x[1] = -0.4375f;  // e4m3 value 7·2^-4
    x[2] = 3.3f;      // → 3.25
    fp8_simulate(x.data(), 64);
    EXPECT_EQ(x[0], 448.0f);
    EXPECT_EQ(x[1], -0.4375f);
    EXPECT_EQ(x[2], 3.25f);
    // FP4: amax 6 → scale 1
    std::vector<float> y(32, 0.0f);
    y[0] = 6.0f;
    y[1] = 2.4f;
    y[2] = -0.74f;
    fp4_simulate(y.data(), 32);
    EXPECT_EQ(y[0], 6.0f);
    EXPECT_EQ(y[1], 2.0f);
    EXPECT_EQ(y[2], -0.5f);
}

TEST(Numerics, HadamardIsScaledSylvesterTransform) {
    std::vector<float> x = {1.0f, 0.0f, 0.0f, 0.0f};
    hadamard_scaled(x.data(), 4);
    for (float v : x) EXPECT_FLOAT_EQ(v, 0.5f);
    std::vector<float> y = {1.0f, 2.0f, 3.0f, 4.0f};
    hadamard_scaled(y.data(), 4);  // H4·y / 2 = (10, -2, -4, 0) / 2
    EXPECT_FLOAT_EQ(y[0], 5.0f);
    EXPECT_FLOAT_EQ(y[1], -1.0f);
    EXPECT_FLOAT_EQ(y[2], -2.0f);
    EXPECT_FLOAT_EQ(y[3], 0.0f);
    hadamard_scaled(y.data(), 4);  // orthonormal and symmetric: its own inverse
    EXPECT_FLOAT_EQ(y[0], 1.0f);
    EXPECT_FLOAT_EQ(y[3], 4.0f);
}

TEST(Numerics, SinkhornIsNearlyDoublyStochastic) {
    std::vector<float> c = {0.3f, -1.0f, 2.0f, 0.1f, 1.5f, 0.2f, -0.7f, 0.0f,
                            -2.0f, 0.4f, 0.9f, 1.1f, 0.0f, 0.0f, 0.5f, -0.3f};
    sinkhorn(c.data(), 4, 20, 1e-6f);
    for (int a = 0; a < 4; ++a) {
        float row = 0, col = 0;
        for (int b = 0; b < 4; ++b) {
            row += c[a * 4 + b];
            col += c[b * 4 + a];
            EXPECT_GT(c[a * 4 + b], 0.0f);
        }
        EXPECT_NEAR(row, 1.0f, 1e-3f);
        EXPECT_NEAR(col, 1.0f, 1e-5f);  // the last step normalises columns
    }
}

TEST(Numerics, TopKBreaksTiesTowardsLowerIndex) {
    const std::vector<float> s = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f, 0.0f};
    std::vector<uint32_t> idx(s.size());
    top_k_lower_index(s, 2, idx);
    EXPECT_EQ(idx[0], 1u);
    EXPECT_EQ(idx[1], 2u);
    top_k_lower_index(s, 4, idx);
    EXPECT_EQ(std::vector<uint32_t>(idx.begin(), idx.begin() + 4), (std::vector<uint32_t>{1, 2, 3, 4}));
}

// Golden tiny config: rope_dim 16, original_seq_len 64, base 160000 → YaRN ramp low 0,
// high 2: pair 0 unscaled, pair 1 half-blended, pairs ≥ 2 divided by rope_factor (§3.2).
TEST(Numerics, YarnRampOfTinyGoldenConfig) {
    model::Hparams hp;
    hp.rope_dim = 16;
    hp.original_seq_len = 64;
    hp.rope_factor = 16;
    hp.compress_ratios = {0, 4};
    const RopeFreqs dense = RopeFreqs::for_layer(hp, 0);
    const RopeFreqs yarn = RopeFreqs::for_layer(hp, 4);
    ASSERT_EQ(yarn.omega.size(), 8u);
    EXPECT_FLOAT_EQ(dense.omega[1], static_cast<float>(std::pow(10000.0, -2.0 / 16)));
    const auto base = [](int j) { return static_cast<float>(std::pow(160000.0, -2.0 * j / 16)); };
    EXPECT_FLOAT_EQ(yarn.omega[0], base(0));
    EXPECT_FLOAT_EQ(yarn.omega[1], base(1) * (0.5f + 0.5f / 16));
    for (int j = 2; j < 8; ++j) EXPECT_FLOAT_EQ(yarn.omega[j], base(j) / 16) << j;
}

TEST(Numerics, RopeRotatesAdjacentPairsAndInverseUndoesIt) {
    RopeFreqs f;
    f.omega = {1.0f, 0.5f};
    RopeAngles a;
    a.compute(f, 3);
    std::vector<float> x = {1.0f, 0.0f, 0.0f, 2.0f};
    rope_rotate(x.data(), a, false);
    EXPECT_FLOAT_EQ(x[0], std::cos(3.0f));
    EXPECT_FLOAT_EQ(x[1], std::sin(3.0f));
    EXPECT_FLOAT_EQ(x[2], -2.0f * std::sin(1.5f));
    EXPECT_FLOAT_EQ(x[3], 2.0f * std::cos(1.5f));
    rope_rotate(x.data(), a, true);
    EXPECT_NEAR(x[0], 1.0f, 1e-6f);
    EXPECT_NEAR(x[1], 0.0f, 1e-6f);
    EXPECT_NEAR(x[2], 0.0f, 1e-6f);
    EXPECT_NEAR(x[3], 2.0f, 1e-6f);
}

TEST(Numerics, DotAccumulatesSequentiallyWithFusedMultiplyAdd) {
    // -1 + (1 + 2^-12)² = 2^-11 + 2^-24 exactly when the product is fused into the sum;
    // a rounded product (1 + 2^-11, the 2^-24 tie goes to even) would give 2^-11.
    const std::vector<float> a = {1.0f, 1.0f + 0x1p-12f};
    const std::vector<float> b = {-1.0f, 1.0f + 0x1p-12f};
    EXPECT_EQ(dot_f32(a.data(), b.data(), 2), 0x1p-11f + 0x1p-24f);
    float y[2] = {-1.0f, 0.0f};
    axpy_f32(1.0f + 0x1p-12f, a.data() + 1, y, 1);
    EXPECT_EQ(y[0], 0x1p-11f + 0x1p-24f);
}

}  // namespace
}  // namespace ds4::cpu
