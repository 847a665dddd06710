// The direction builder of tools/ds4-steering: the per-layer mean-difference math, the
// orthogonalization against the bad mean, and the activation capture on the tiny model.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "cpu/matvec.h"
#include "cpu/quant_matvec.h"
#include "direction_builder.h"
#include "ds4/error.h"
#include "steering_test_util.h"

namespace ds4::cpu::test {
namespace {

double dot(const float* a, const float* b, uint32_t n) {
    double s = 0;
    for (uint32_t i = 0; i < n; ++i) s += double{a[i]} * b[i];
    return s;
}

// good = base + e_k + noise, bad = base − e_k + noise, base = 5·e_0: without the
// orthogonalization the direction is e_k up to the noise; with it, it is ⊥ the bad mean.
TEST(DirectionBuilder, MeanDifferenceFindsTheSeparatingAxis) {
    constexpr uint32_t L = 2, D = 16;
    synth::Rng rng(3);
    auto noise = [&] { return (static_cast<float>(rng.below(2001)) / 1000.0f - 1.0f) * 0.01f; };
    std::vector<std::vector<float>> good, bad;
    for (int p = 0; p < 6; ++p) {
        std::vector<float> g(L * D), b(L * D);
        for (uint32_t il = 0; il < L; ++il)
            for (uint32_t i = 0; i < D; ++i) {
                const float base = i == 0 ? 5.0f : 0.0f;
                const float axis = i == 3 + il ? 1.0f : 0.0f;
                g[il * D + i] = base + axis + noise();
                b[il * D + i] = base - axis + noise();
            }
        good.push_back(g);
        bad.push_back(b);
    }
    for (const bool ortho : {false, true}) {
        steering::DirectionOptions o;
        o.orthogonalize = ortho;
        const std::vector<float> d = steering::build_directions(good, bad, L, D, o);
        for (uint32_t il = 0; il < L; ++il) {
            const float* row = d.data() + il * D;
            EXPECT_NEAR(dot(row, row, D), 1.0, 1e-6);
            // orthogonalized against b = (5·e_0 − e_k)/√26, e_k keeps √(1 − 1/26) of its length
            const double expect = ortho ? std::sqrt(1.0 - 1.0 / 26.0) : 1.0;
            EXPECT_NEAR(row[3 + il], expect, 2e-3) << "layer " << il << " ortho " << ortho;
            if (ortho) {
                std::vector<double> mb(D, 0.0);
                for (const auto& b : bad)
                    for (uint32_t i = 0; i < D; ++i) mb[i] += b[il * D + i];
                double along = 0, norm = 0;
                for (uint32_t i = 0; i < D; ++i) {
                    along += row[i] * mb[i];
                    norm += mb[i] * mb[i];
                }
                EXPECT_NEAR(along / std::sqrt(norm), 0.0, 1e-6);
            }
        }
    }
    steering::DirectionOptions pairs;
    pairs.pair_normalize = true;
    pairs.orthogonalize = false;
    const std::vector<float> dp = steering::build_directions(good, bad, L, D, pairs);
    EXPECT_NEAR(dp[3], 1.0, 2e-3);
    EXPECT_THROW((void)steering::build_directions(good, std::span(bad).first(2), L, D, pairs), Error);
    EXPECT_THROW((void)steering::build_directions(good, {}, L, D, {}), Error);
}

TEST(DirectionBuilder, NormalizeRowsKeepsZeroRows) {
    std::vector<float> v = {3, 4, 0, 0, 0, -2};
    steering::normalize_rows(v, 2);
    EXPECT_FLOAT_EQ(v[0], 0.6f);
    EXPECT_FLOAT_EQ(v[1], 0.8f);
    EXPECT_EQ(v[2], 0.0f);
    EXPECT_EQ(v[3], 0.0f);
    EXPECT_FLOAT_EQ(v[5], -1.0f);
    EXPECT_THROW(steering::normalize_rows(v, 4), Error);
}

// The capture is the probe's pre-steering output of the last token, at every layer, and
// directions built from two prompts separate them: d·(a − b) = |a − b| > 0 per layer.
TEST(DirectionBuilder, CapturesLastTokenSublayerOutputs) {
    const TinyModel& tm = tiny_model();
    const model::Hparams& hp = tm.hp();
    const std::vector<int32_t> a = {5, 9, 17, 33, 2}, b = {5, 9, 17, 40, 7};
    const std::vector<float> fa = steering::last_token_activations(*tm.model, a, SteeringSite::ffn);
    const std::vector<float> fb = steering::last_token_activations(*tm.model, b, SteeringSite::ffn);
    const std::vector<float> aa = steering::last_token_activations(*tm.model, a, SteeringSite::attn);
    ASSERT_EQ(fa.size(), uint64_t{hp.n_layer} * hp.n_embd);
    EXPECT_NE(fa, aa);
    // the same values a probe sees in a plain forward of `a`
    {
        const NumericsScope scope(default_numerics(tm.model->weights()));
        CpuForward fwd(*tm.model);
        Steering probe;
        std::vector<float> seen(fa.size());
        const uint64_t D = hp.n_embd;
        probe.set_probe([&](uint32_t il, SteeringSite s, std::span<const float> before, std::span<const float>) {
            if (s == SteeringSite::ffn) std::copy_n(before.end() - static_cast<std::ptrdiff_t>(D), D, seen.begin() + il * D);
        });
        fwd.set_steering(std::move(probe));
        KvState state(hp, 8);
        fwd.eval(state, 0, a, {}, {});
        EXPECT_EQ(seen, fa);
    }
    steering::DirectionOptions o;
    o.orthogonalize = false;
    const std::vector<float> d = steering::build_directions({&fa, 1}, {&fb, 1}, hp.n_layer, hp.n_embd, o);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const uint64_t off = uint64_t{il} * hp.n_embd;
        double proj = 0, norm = 0;
        for (uint32_t i = 0; i < hp.n_embd; ++i) {
            const double diff = double{fa[off + i]} - fb[off + i];
            proj += d[off + i] * diff;
            norm += diff * diff;
        }
        EXPECT_NEAR(proj, std::sqrt(norm), 1e-4 * std::sqrt(norm)) << "layer " << il;
    }
}

TEST(DirectionBuilder, SidecarHasTheDs4Keys) {
    const auto j = nlohmann::json::parse(
        steering::sidecar_json(43, 4096, SteeringSite::ffn, true, {}, "good.txt", "bad.txt", "m.gguf"));
    EXPECT_EQ(j["format"], "ds4-directional-steering-v1");
    EXPECT_EQ(j["shape"], nlohmann::json::array({43, 4096}));
    EXPECT_EQ(j["component"], "ffn_out");
    EXPECT_EQ(j["thinking"], true);
    EXPECT_EQ(j["pair_normalize"], false);
    EXPECT_EQ(j["orthogonalize_control_mean"], true);
    EXPECT_EQ(j["good_file"], "good.txt");
    EXPECT_EQ(j["model"], "m.gguf");
}

}  // namespace
}  // namespace ds4::cpu::test
