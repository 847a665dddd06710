// The steering formula on plain rows, the direction file format and the scale defaults
// (interface.md §7.5, formats.md §8.1).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "cpu/steering.h"
#include "ds4/error.h"
#include "steering_test_util.h"

namespace ds4::cpu::test {
namespace {

std::vector<float> random_rows(uint64_t rows, uint32_t n, uint64_t seed) {
    synth::Rng rng(seed);
    std::vector<float> y(rows * n);
    for (float& v : y) v = static_cast<float>(rng.below(40001)) / 1000.0f - 20.0f;
    return y;
}

double dot(const float* a, std::span<const float> b) {
    double s = 0;
    for (size_t i = 0; i < b.size(); ++i) s += double{a[i]} * b[i];
    return s;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// y' = y − S·d·(d·y), checked against the same formula in double on every value.
TEST(SteerRows, MatchesFormulaInDouble) {
    constexpr uint32_t n = 256, rows = 5;
    const std::vector<float> d = unit_directions(1, n, 11);
    for (const float scale : {1.0f, 0.5f, -1.0f, -3.25f, 100.0f}) {
        const std::vector<float> y = random_rows(rows, n, 12);
        std::vector<float> out = y;
        steer_rows(out.data(), rows, d, scale);
        for (uint32_t r = 0; r < rows; ++r) {
            const float* yr = y.data() + r * n;
            const double c = scale * dot(yr, d);
            double worst = 0;
            for (uint32_t i = 0; i < n; ++i)
                worst = std::max(worst, std::fabs(out[r * n + i] - (yr[i] - c * d[i])));
            // f32 dot of 256 terms of magnitude ≤ 20: rounding well under 1e-3 · |scale|
            EXPECT_LE(worst, 2e-4 * std::max(1.0f, std::fabs(scale))) << "scale " << scale << " row " << r;
        }
    }
}

// Scale 1 with a unit direction projects it out; scale −1 doubles the component; the part
// orthogonal to d never moves.
TEST(SteerRows, ProjectsOutOrAmplifiesTheDirection) {
    constexpr uint32_t n = 256, rows = 3;
    const std::vector<float> d = unit_directions(1, n, 21);
    const std::vector<float> y = random_rows(rows, n, 22);
    std::vector<float> removed = y, doubled = y;
    steer_rows(removed.data(), rows, d, 1.0f);
    steer_rows(doubled.data(), rows, d, -1.0f);
    for (uint32_t r = 0; r < rows; ++r) {
        const double along = dot(y.data() + r * n, d);
        ASSERT_GT(std::fabs(along), 1.0);  // the seeded rows do have a component along d
        EXPECT_NEAR(dot(removed.data() + r * n, d), 0.0, 1e-4 * std::fabs(along));
        EXPECT_NEAR(dot(doubled.data() + r * n, d), 2.0 * along, 1e-4 * std::fabs(along));
        for (uint32_t i = 0; i < n; ++i) {
            const double orth_y = y[r * n + i] - along * d[i];
            EXPECT_NEAR(removed[r * n + i] - dot(removed.data() + r * n, d) * d[i], orth_y, 1e-4);
        }
    }
}

TEST(SteerRows, ZeroScaleAndZeroDirectionLeaveRowsBitIdentical) {
    constexpr uint32_t n = 64;
    const std::vector<float> d = unit_directions(1, n, 31);
    const std::vector<float> zero(n, 0.0f);
    const std::vector<float> y = random_rows(2, n, 32);
    std::vector<float> a = y, b = y;
    steer_rows(a.data(), 2, d, 0.0f);
    steer_rows(b.data(), 2, zero, 7.0f);
    EXPECT_EQ(a, y);
    EXPECT_EQ(b, y);
}

TEST(SteeringFile, RoundTripsLayerMajor) {
    const std::string path = temp_path("roundtrip.f32");
    const std::vector<float> v = unit_directions(3, 8, 41);
    write_steering_file(path, v);
    EXPECT_EQ(std::filesystem::file_size(path), 3u * 8u * 4u);
    const SteeringDirections dirs = SteeringDirections::load(path, 3, 8);
    std::filesystem::remove(path);
    ASSERT_EQ(dirs.n_layer(), 3u);
    ASSERT_EQ(dirs.n_embd(), 8u);
    for (uint32_t il = 0; il < 3; ++il)
        for (uint32_t i = 0; i < 8; ++i) EXPECT_EQ(dirs.layer(il)[i], v[il * 8 + i]);
    EXPECT_THROW((void)dirs.layer(3), Error);
}

TEST(SteeringFile, WrongSizeNamesFileAndBothSizes) {
    const std::string path = temp_path("short.f32");
    write_steering_file(path, std::vector<float>(4 * 16 - 1, 0.5f));
    const std::string msg = error_of([&] { (void)SteeringDirections::load(path, 4, 16); });
    std::filesystem::remove(path);
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("has size 252 bytes, expected 256 bytes"), std::string::npos) << msg;
    // the published shape's size, as in ds4's message
    const std::string big = temp_path("big.f32");
    write_steering_file(big, std::vector<float>(10, 0.0f));
    const std::string msg43 = error_of([&] { (void)SteeringDirections::load(big, 43, 4096); });
    std::filesystem::remove(big);
    EXPECT_NE(msg43.find("has size 40 bytes, expected 704512 bytes"), std::string::npos) << msg43;
}

TEST(SteeringFile, MissingFileIsAnError) {
    const std::string path = temp_path("missing.f32");
    const std::string msg = error_of([&] { (void)SteeringDirections::load(path, 4, 16); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST(SteeringScales, DefaultsFollowTheSpec) {
    const auto none = resolve_steering_scales(false, std::nullopt, std::nullopt);
    EXPECT_EQ(none.attn, 0.0f);
    EXPECT_EQ(none.ffn, 0.0f);
    // a file and neither scale: ffn 1, attn 0
    const auto file_only = resolve_steering_scales(true, std::nullopt, std::nullopt);
    EXPECT_EQ(file_only.attn, 0.0f);
    EXPECT_EQ(file_only.ffn, 1.0f);
    // a file and only attn: ffn stays 0
    const auto attn_only = resolve_steering_scales(true, 0.5f, std::nullopt);
    EXPECT_EQ(attn_only.attn, 0.5f);
    EXPECT_EQ(attn_only.ffn, 0.0f);
    const auto both = resolve_steering_scales(true, -2.0f, 3.0f);
    EXPECT_EQ(both.attn, -2.0f);
    EXPECT_EQ(both.ffn, 3.0f);
    // explicit zeros without a file are fine
    const auto zeros = resolve_steering_scales(false, 0.0f, 0.0f);
    EXPECT_EQ(zeros.ffn, 0.0f);
}

TEST(SteeringScales, RejectsOutOfRangeAndScaleWithoutFile) {
    EXPECT_NE(error_of([] { (void)resolve_steering_scales(false, std::nullopt, 1.0f); }).find("--dir-steering-ffn"),
              std::string::npos);
    EXPECT_NE(error_of([] { (void)resolve_steering_scales(false, -0.5f, std::nullopt); }).find("--dir-steering-attn"),
              std::string::npos);
    EXPECT_THROW((void)resolve_steering_scales(true, 100.5f, std::nullopt), Error);
    EXPECT_THROW((void)resolve_steering_scales(true, std::nullopt, -101.0f), Error);
    EXPECT_THROW((void)resolve_steering_scales(true, std::numeric_limits<float>::quiet_NaN(), std::nullopt), Error);
    EXPECT_NO_THROW((void)resolve_steering_scales(true, 100.0f, -100.0f));
}

}  // namespace
}  // namespace ds4::cpu::test
