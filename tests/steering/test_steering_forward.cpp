// The steering hook of the CPU forward pass, on the exact and the fast (ds4 numerics)
// paths: every layer's attention and FFN outputs move exactly by the formula, the moved
// output is what the HC post step consumes, nothing upstream changes, and scale 0 leaves
// the logits bit-identical.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "cpu/matvec.h"
#include "cpu/steering.h"
#include "ds4/error.h"
#include "steering_test_util.h"

namespace ds4::cpu::test {
namespace {

constexpr uint32_t kTokens = 12;

std::vector<int32_t> test_tokens(uint32_t n_vocab) {
    synth::Rng rng(17);
    std::vector<int32_t> t(kTokens);
    for (int32_t& v : t) v = static_cast<int32_t>(rng.below(n_vocab));
    return t;
}

struct ProbeCall {
    uint32_t il;
    SteeringSite site;
    std::vector<float> before, after;
};

struct Outputs {
    std::vector<float> logits;                 // kTokens × vocab
    std::vector<std::vector<float>> block_hc;  // per layer: kTokens × hc_dim
    std::vector<ProbeCall> probes;
};

// Feeds the test tokens in chunks (cycled sizes) with the given steering.
Outputs run(Numerics mode, Steering steering, std::vector<uint32_t> chunks = {5, 1, 6}, bool probe = false) {
    const TinyModel& tm = tiny_model();
    const model::Hparams& hp = tm.hp();
    const NumericsScope scope(mode);
    Outputs out;
    CpuForward fwd(*tm.model);
    if (probe)
        steering.set_probe([&out](uint32_t il, SteeringSite site, std::span<const float> before,
                                  std::span<const float> after) {
            out.probes.push_back({il, site, {before.begin(), before.end()}, {after.begin(), after.end()}});
        });
    fwd.set_steering(std::move(steering));
    out.block_hc.assign(hp.n_layer, {});
    fwd.set_block_observer([&out](uint32_t il, uint64_t, std::span<const float> hc) {
        out.block_hc[il].insert(out.block_hc[il].end(), hc.begin(), hc.end());
    });
    const std::vector<int32_t> tokens = test_tokens(hp.n_vocab);
    KvState state(hp, kTokens);
    const uint64_t V = hp.n_vocab;
    out.logits.resize(kTokens * V);
    std::vector<uint32_t> rows;
    for (uint32_t pos = 0, c = 0; pos < kTokens; ++c) {
        const uint32_t n = std::min(chunks[c % chunks.size()], kTokens - pos);
        rows.resize(n);
        std::iota(rows.begin(), rows.end(), 0u);
        fwd.eval(state, pos, {tokens.data() + pos, n}, rows, {out.logits.data() + pos * V, n * V});
        pos += n;
    }
    return out;
}

std::shared_ptr<const SteeringDirections> directions(std::vector<float> v) {
    const model::Hparams& hp = tiny_model().hp();
    return std::make_shared<const SteeringDirections>(std::move(v), hp.n_layer, hp.n_embd);
}

std::shared_ptr<const SteeringDirections> unit_dirs(uint64_t seed = 3) {
    const model::Hparams& hp = tiny_model().hp();
    return directions(unit_directions(hp.n_layer, hp.n_embd, seed));
}

// Directions that are zero except at one layer: steering touches only that layer.
std::shared_ptr<const SteeringDirections> one_layer_dirs(uint32_t layer) {
    const model::Hparams& hp = tiny_model().hp();
    std::vector<float> v = unit_directions(hp.n_layer, hp.n_embd, 5);
    for (uint32_t il = 0; il < hp.n_layer; ++il)
        if (il != layer) std::fill_n(v.begin() + il * hp.n_embd, hp.n_embd, 0.0f);
    return directions(std::move(v));
}

bool all_equal(const std::vector<float>& a, const std::vector<float>& b) { return a == b; }

class SteeringForward : public ::testing::TestWithParam<Numerics> {};

// Every probe call: after = before − S·d·(d·before), row by row, both sites, all layers.
TEST_P(SteeringForward, EverySublayerOutputMovesByTheFormula) {
    const model::Hparams& hp = tiny_model().hp();
    const auto dirs = unit_dirs();
    const float attn = 0.75f, ffn = -1.5f;
    const Outputs r = run(GetParam(), Steering(dirs, attn, ffn), {5, 1, 6}, true);
    // 3 chunks × layers × 2 sites, in order attn, ffn within a layer
    ASSERT_EQ(r.probes.size(), 3u * hp.n_layer * 2);
    const uint64_t D = hp.n_embd;
    for (size_t k = 0; k < r.probes.size(); ++k) {
        const ProbeCall& p = r.probes[k];
        EXPECT_EQ(p.il, (k / 2) % hp.n_layer);
        EXPECT_EQ(p.site, k % 2 == 0 ? SteeringSite::attn : SteeringSite::ffn);
        const float s = p.site == SteeringSite::attn ? attn : ffn;
        const std::span<const float> d = dirs->layer(p.il);
        ASSERT_EQ(p.before.size(), p.after.size());
        ASSERT_EQ(p.before.size() % D, 0u);
        for (uint64_t row = 0; row < p.before.size() / D; ++row) {
            const float* y = p.before.data() + row * D;
            const float* y2 = p.after.data() + row * D;
            double along = 0, mag = 0;
            for (uint64_t i = 0; i < D; ++i) {
                along += double{y[i]} * d[i];
                mag = std::max(mag, std::fabs(double{y[i]}));
            }
            double worst = 0;
            for (uint64_t i = 0; i < D; ++i) worst = std::max(worst, std::fabs(y2[i] - (y[i] - s * along * d[i])));
            EXPECT_LE(worst, 1e-5 * std::max(1.0, mag)) << "layer " << p.il << " row " << row;
            // the f32 implementation itself, bit for bit
            std::vector<float> expect(y, y + D);
            steer_rows(expect.data(), 1, d, s);
            EXPECT_TRUE(std::equal(expect.begin(), expect.end(), y2)) << "layer " << p.il << " row " << row;
        }
    }
}

// Scale 1 with unit directions removes the component along d from every output.
TEST_P(SteeringForward, ScaleOneProjectsTheDirectionOut) {
    const model::Hparams& hp = tiny_model().hp();
    const auto dirs = unit_dirs(8);
    const Outputs r = run(GetParam(), Steering(dirs, 1.0f, 1.0f), {kTokens}, true);
    ASSERT_EQ(r.probes.size(), uint64_t{hp.n_layer} * 2);
    const uint64_t D = hp.n_embd;
    for (const ProbeCall& p : r.probes) {
        const std::span<const float> d = dirs->layer(p.il);
        for (uint64_t row = 0; row < kTokens; ++row) {
            double before = 0, after = 0, norm = 0;
            for (uint64_t i = 0; i < D; ++i) {
                before += double{p.before[row * D + i]} * d[i];
                after += double{p.after[row * D + i]} * d[i];
                norm += double{p.before[row * D + i]} * p.before[row * D + i];
            }
            EXPECT_LE(std::fabs(after), 1e-5 * std::sqrt(norm) + 1e-6) << "before " << before;
        }
    }
}

// Scale 0 skips the hook: logits and every block output are bit-identical to no steering
// (with the probe attached too).
TEST_P(SteeringForward, ZeroScalesAreBitIdenticalToNoSteering) {
    // (one run with the probe attached covers both: a probe only reads)
    const Outputs plain = run(GetParam(), Steering());
    const Outputs zero = run(GetParam(), Steering(unit_dirs(), 0.0f, 0.0f), {5, 1, 6}, true);
    EXPECT_TRUE(all_equal(plain.logits, zero.logits));
    EXPECT_EQ(plain.block_hc, zero.block_hc);
    EXPECT_FALSE(zero.probes.empty());
    for (const ProbeCall& p : zero.probes) EXPECT_EQ(p.before, p.after);
    // and a non-zero scale does move the logits
    const Outputs steered = run(GetParam(), Steering(unit_dirs(), 0.0f, 1.0f));
    EXPECT_FALSE(all_equal(plain.logits, steered.logits));
}

// FFN steering at one layer k: blocks before k are untouched, and block k's output moves
// by post[b]·δ on every stream b (model.md §4.4: X_new[b] = post[b]·y + Σ_a C[a][b]·X[a],
// with post, C and X fixed by the unchanged input), where δ is the probe's after − before.
// This is how we see that the steered y is what the HC post step consumes.
TEST_P(SteeringForward, SteeredFfnOutputFeedsHcPost) {
    const model::Hparams& hp = tiny_model().hp();
    constexpr uint32_t k = 2;
    const Outputs plain = run(GetParam(), Steering(), {kTokens});
    const Outputs steered = run(GetParam(), Steering(one_layer_dirs(k), 0.0f, 4.0f), {kTokens}, true);
    for (uint32_t il = 0; il < k; ++il) EXPECT_EQ(plain.block_hc[il], steered.block_hc[il]) << "layer " << il;
    for (uint32_t il = k; il < hp.n_layer; ++il) EXPECT_NE(plain.block_hc[il], steered.block_hc[il]) << "layer " << il;

    const ProbeCall& p = steered.probes[2 * k + 1];
    ASSERT_EQ(p.il, k);
    ASSERT_EQ(p.site, SteeringSite::ffn);
    const uint64_t D = hp.n_embd, hc = hp.hc_dim();
    for (uint64_t t = 0; t < kTokens; ++t) {
        std::vector<double> delta(D);
        for (uint64_t i = 0; i < D; ++i) delta[i] = double{p.after[t * D + i]} - p.before[t * D + i];
        double dd = 0;
        for (double v : delta) dd += v * v;
        ASSERT_GT(dd, 0.0);
        for (uint32_t b = 0; b < hp.hc_mult; ++b) {
            const float* xs = steered.block_hc[k].data() + t * hc + b * D;
            const float* xp = plain.block_hc[k].data() + t * hc + b * D;
            // least-squares c_b with X_diff ≈ c_b·δ, then the residual
            double xd = 0, xx = 0;
            for (uint64_t i = 0; i < D; ++i) {
                const double diff = double{xs[i]} - xp[i];
                xd += diff * delta[i];
                xx += diff * diff;
            }
            const double c = xd / dd;
            double res = 0;
            for (uint64_t i = 0; i < D; ++i) {
                const double r = (double{xs[i]} - xp[i]) - c * delta[i];
                res += r * r;
            }
            EXPECT_GT(c, 0.0) << "post weight of stream " << b;  // post = 2·sigmoid(·) ∈ (0, 2)
            EXPECT_LT(c, 2.0) << "post weight of stream " << b;
            EXPECT_LE(std::sqrt(res), 1e-3 * std::sqrt(xx)) << "token " << t << " stream " << b;
        }
    }
}

// Attention steering at one layer moves that layer's block output (and not earlier ones).
TEST_P(SteeringForward, AttentionSteeringMovesItsLayer) {
    const model::Hparams& hp = tiny_model().hp();
    constexpr uint32_t k = 1;
    const Outputs plain = run(GetParam(), Steering());
    const Outputs steered = run(GetParam(), Steering(one_layer_dirs(k), -2.0f, 0.0f));
    EXPECT_EQ(plain.block_hc[0], steered.block_hc[0]);
    for (uint32_t il = k; il < hp.n_layer; ++il) EXPECT_NE(plain.block_hc[il], steered.block_hc[il]);
    EXPECT_FALSE(all_equal(plain.logits, steered.logits));
}

// Streaming semantics survive steering: any chunking gives the same logits, bit for bit.
TEST_P(SteeringForward, ChunkingDoesNotChangeSteeredLogits) {
    const auto dirs = unit_dirs();
    const Outputs one = run(GetParam(), Steering(dirs, 0.5f, 1.0f), {kTokens});
    const Outputs chunked = run(GetParam(), Steering(dirs, 0.5f, 1.0f), {5, 1, 6});
    const Outputs decode = run(GetParam(), Steering(dirs, 0.5f, 1.0f), {1});
    EXPECT_TRUE(all_equal(one.logits, chunked.logits));
    EXPECT_TRUE(all_equal(one.logits, decode.logits));
}

INSTANTIATE_TEST_SUITE_P(Paths, SteeringForward, ::testing::Values(Numerics::Exact, Numerics::Fast),
                         [](const auto& p) { return p.param == Numerics::Exact ? "Exact" : "Fast"; });

TEST(SteeringForwardShape, DirectionsOfAnotherWidthAreRejected) {
    const model::Hparams& hp = tiny_model().hp();
    auto wrong = std::make_shared<const SteeringDirections>(std::vector<float>(hp.n_layer * 8, 0.1f), hp.n_layer, 8);
    EXPECT_THROW((void)run(Numerics::Exact, Steering(wrong, 0.0f, 1.0f), {kTokens}), Error);
}

}  // namespace
}  // namespace ds4::cpu::test
