// Sampler (interface.md §4.1-§4.4): greedy, cuts, temperature, RNG, logprobs, with fixed
// logits and fixed seeds, so every expectation is deterministic.
#include "ds4/error.h"
#include "ds4/sampler.h"
#include "text/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>

namespace ds4 {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Logits whose softmax at temperature 1 is `probs`.
std::vector<float> logits_for(const std::vector<double>& probs) {
    std::vector<float> z;
    for (double p : probs) z.push_back(static_cast<float>(std::log(p)));
    return z;
}

SamplingParams params(float temperature, int top_k, float top_p, float min_p,
                      std::uint64_t seed = 42) {
    SamplingParams p;
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    return p;
}

// Frequency of each token over `n` draws.
std::vector<double> frequencies(Sampler& sampler, const std::vector<float>& logits, int n) {
    std::vector<double> count(logits.size(), 0.0);
    for (int i = 0; i < n; ++i) count[static_cast<std::size_t>(sampler.sample(logits))] += 1;
    for (double& c : count) c /= n;
    return count;
}

// 100k draws: one standard deviation of a frequency is at most 0.0016, so 0.006 is ~4
// sigma; with fixed seeds the outcome is deterministic anyway.
constexpr int kDraws = 100000;
constexpr double kTolerance = 0.006;

void expect_distribution(const std::vector<double>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
        if (want[i] == 0.0) {
            EXPECT_EQ(got[i], 0.0) << "token " << i;
        } else {
            EXPECT_NEAR(got[i], want[i], kTolerance) << "token " << i;
        }
    }
}

TEST(Sampler, DefaultsAreTheSpecDefaults) {
    const SamplingParams p;
    EXPECT_EQ(p.temperature, 1.0f);
    EXPECT_EQ(p.top_k, 0);
    EXPECT_EQ(p.top_p, 1.0f);
    EXPECT_EQ(p.min_p, 0.05f);
    EXPECT_EQ(p.seed, 0u);
}

TEST(Sampler, GreedyReturnsTheFirstMaximum) {
    const std::vector<float> z = {1, 3, 3, 2};
    for (float t : {0.0f, -1.0f, kNaN}) {
        Sampler s(params(t, 0, 1, 0.05f));
        for (int i = 0; i < 10; ++i) EXPECT_EQ(s.sample(z), 1);
    }
    EXPECT_EQ(argmax(z), 1);
}

TEST(Sampler, NonFiniteLogitsAreNeverChosen) {
    const std::vector<float> z = {kNaN, kInf, 2.0f, -kInf, 2.5f};
    EXPECT_EQ(argmax(z), 4);
    Sampler s(params(1.0f, 0, 1, 0.0f));
    const auto f = frequencies(s, z, 20000);
    EXPECT_EQ(f[0] + f[1] + f[3], 0.0);
    EXPECT_GT(f[2], 0.3);
    Sampler sorted(params(1.0f, 0, 0.99f, 0.0f));
    for (int i = 0; i < 1000; ++i) EXPECT_GE(sorted.sample(z), 2);
}

// The two-pass argmax against the literal scan (first largest finite value), on rows
// of every length around its 16-value lanes, with NaN/inf, ties and signed zeros.
TEST(Sampler, ArgmaxMatchesTheLiteralScan) {
    std::mt19937 rng(5);
    const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(), 0.0f, -0.0f, 3.0f};
    for (int trial = 0; trial < 2000; ++trial) {
        std::vector<float> z(rng() % 70);
        for (float& v : z) v = rng() % 4 == 0 ? specials[rng() % 6] : static_cast<float>(static_cast<int>(rng() % 7) - 3);
        std::int32_t want = -1;
        for (std::size_t i = 0; i < z.size(); ++i)
            if (std::isfinite(z[i]) && (want < 0 || z[i] > z[static_cast<std::size_t>(want)]))
                want = static_cast<std::int32_t>(i);
        ASSERT_EQ(argmax(z), want) << "trial " << trial;
    }
}

TEST(Sampler, AllNonFiniteLogitsThrow) {
    Sampler s;
    const std::vector<float> z = {kNaN, -kInf};
    EXPECT_THROW(s.sample(z), ds4::Error);
    EXPECT_EQ(argmax(z), -1);
}

TEST(Sampler, ForceGreedyOverridesTheRequestSampling) {
    Sampler s(params(5.0f, 0, 1, 0.0f));
    const std::vector<float> z = {0.0f, 0.1f, 0.05f};
    for (int i = 0; i < 100; ++i) EXPECT_EQ(s.sample(z, /*force_greedy=*/true), 1);
}

TEST(Sampler, TopKOneIsGreedy) {
    Sampler s(params(3.0f, 1, 1, 0.0f));
    const std::vector<float> z = {0.5f, 0.4f, 0.5f};
    for (int i = 0; i < 100; ++i) EXPECT_EQ(s.sample(z), 0);  // tie: lower id
}

TEST(Sampler, DefaultPathMatchesTheSoftmax) {
    Sampler s(params(1.0f, 0, 1, 0.05f, 7));
    const std::vector<double> p = {0.4, 0.3, 0.2, 0.1};
    expect_distribution(frequencies(s, logits_for(p), kDraws), p);
}

TEST(Sampler, MinPDropsTokensBelowTheRelativeThreshold) {
    // Relative to the top token: 0.04 < 0.05 is dropped, 0.06 survives.
    const std::vector<double> p = {0.5, 0.02, 0.03, 0.45};
    Sampler s(params(1.0f, 0, 1, 0.05f, 9));
    expect_distribution(frequencies(s, logits_for(p), kDraws), {0.5 / 0.98, 0, 0.03 / 0.98, 0.45 / 0.98});
    Sampler off(params(1.0f, 0, 1, -3.0f, 9));  // < 0 means no cut
    expect_distribution(frequencies(off, logits_for(p), kDraws), p);
}

TEST(Sampler, TopPKeepsTheCrossingToken) {
    // 0.5 < 0.7, 0.5 + 0.3 >= 0.7: tokens 0 and 1 are kept, renormalised.
    const std::vector<double> p = {0.15, 0.3, 0.5, 0.05};
    const std::vector<double> want = {0, 0.3 / 0.8, 0.5 / 0.8, 0};
    Sampler sorted(params(1.0f, 0, 0.7f, 0.0f, 11));
    expect_distribution(frequencies(sorted, logits_for(p), kDraws), want);
    // top-k path: the mass is relative to the k candidates (0.95), same cut here.
    Sampler top_k(params(1.0f, 3, 0.7f, 0.0f, 11));
    expect_distribution(frequencies(top_k, logits_for(p), kDraws), want);
}

TEST(Sampler, TopPZeroOrAboveOneMeansOff) {
    const std::vector<double> p = {0.6, 0.4};
    for (float top_p : {0.0f, 1.5f}) {
        Sampler s(params(1.0f, 0, top_p, 0.0f, 3));
        expect_distribution(frequencies(s, logits_for(p), kDraws), p);
    }
}

TEST(Sampler, MinPIsAppliedBeforeTopP) {
    // min-p 0.5 leaves {0.5, 0.3}; top-p 0.9 over the full mass would keep three tokens,
    // but the third is already gone.
    const std::vector<double> p = {0.5, 0.3, 0.2};
    Sampler s(params(1.0f, 0, 0.9f, 0.5f, 5));
    expect_distribution(frequencies(s, logits_for(p), kDraws), {0.5 / 0.8, 0.3 / 0.8, 0});
}

TEST(Sampler, TopKRestrictsToTheKBest) {
    const std::vector<double> p = {0.1, 0.4, 0.2, 0.3};
    Sampler s(params(1.0f, 2, 1.0f, 0.0f, 13));
    expect_distribution(frequencies(s, logits_for(p), kDraws), {0, 0.4 / 0.7, 0, 0.3 / 0.7});
}

TEST(Sampler, TemperatureScalesLogitsBeforeTheCuts) {
    const std::vector<float> z = {0.0f, 1.0f, 2.0f};
    const double t = 2.0;
    std::vector<double> want;
    double sum = 0;
    for (float v : z) sum += std::exp(v / t);
    for (float v : z) want.push_back(std::exp(v / t) / sum);
    Sampler s(params(2.0f, 0, 1, 0.0f, 17));
    expect_distribution(frequencies(s, z, kDraws), want);
    // At T = 0.25 token 0 has relative weight e^-8 < 0.05: cut by min-p.
    Sampler cold(params(0.25f, 0, 1, 0.05f, 17));
    EXPECT_EQ(frequencies(cold, z, 10000)[0], 0.0);
}

TEST(Sampler, DrawFollowsTheRngExactly) {
    // Two equal tokens, default path: r = U * 2, token 0 iff r - 1 <= 0.
    Rng rng(99);
    Sampler s(params(1.0f, 0, 1, 0.0f, 99));
    const std::vector<float> z = {1.0f, 1.0f};
    for (int i = 0; i < 1000; ++i) {
        const float u = rng.next_float();
        EXPECT_EQ(s.sample(z), static_cast<double>(u) * 2.0 - 1.0 <= 0.0 ? 0 : 1);
    }
}

TEST(Sampler, XorshiftStarMatchesTheReference) {
    Rng rng(1);
    EXPECT_EQ(rng.next_u64(), 0x47e4ce4b896cdd1dull);
    EXPECT_EQ(rng.next_u64(), 0xabcfa6a8e079651dull);
    Rng a(0), b(0x9e3779b97f4a7c15ull);  // seed 0 is replaced, as in ds4
    for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
    Rng f(1);
    EXPECT_FLOAT_EQ(f.next_float(), 0.28083503246307373f);
}

TEST(Sampler, SameSeedSameSequenceDifferentSeedDifferent) {
    std::mt19937 gen(5);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<float> z(5000);
    for (float& v : z) v = normal(gen);
    auto run = [&](std::uint64_t seed, float top_p, int top_k) {
        Sampler s(params(1.0f, top_k, top_p, 0.0f, seed));
        std::vector<int> seq;
        for (int i = 0; i < 300; ++i) seq.push_back(s.sample(z));
        return seq;
    };
    for (auto [top_p, top_k] : {std::pair{1.0f, 0}, std::pair{0.9f, 0}, std::pair{1.0f, 40}}) {
        EXPECT_EQ(run(1234, top_p, top_k), run(1234, top_p, top_k));
        EXPECT_NE(run(1234, top_p, top_k), run(1235, top_p, top_k));
    }
    Sampler s(params(1.0f, 0, 1, 0, 1234));
    const int first = s.sample(z);
    s.reseed(1234);
    EXPECT_EQ(s.sample(z), first);
    EXPECT_EQ(s.seed(), 1234u);
    EXPECT_NE(Sampler(params(1, 0, 1, 0, 0)).seed(), 0u);  // seed 0: a fresh random one
}

TEST(Sampler, FullVocabularyRowSamplesValidTokens) {
    std::mt19937 gen(8);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> z(129280);
    for (float& v : z) v = normal(gen);
    for (auto p : {params(1, 0, 1, 0.05f), params(1, 0, 0.95f, 0.0f), params(0.7f, 1024, 0.9f, 0.05f)}) {
        Sampler s(p);
        for (int i = 0; i < 20; ++i) {
            const int id = s.sample(z);
            ASSERT_GE(id, 0);
            ASSERT_LT(id, 129280);
            // min-p 0.05 keeps only tokens within log(20) of the top logit.
            if (p.min_p > 0) {
                const float top = z[static_cast<std::size_t>(argmax(z))];
                EXPECT_GE(z[static_cast<std::size_t>(id)] / p.temperature,
                          top / p.temperature - std::log(20.0f) - 1e-4f);
            }
        }
    }
}

// §4.3 written out literally (full sort, every weight computed): the optimised paths
// must draw exactly the same tokens from the same RNG stream.
int reference_sample(const std::vector<float>& z, const SamplingParams& p, Rng& rng) {
    const auto s = text::effective_sampling(p, z.size());
    const int best = argmax(z);
    if (s.greedy) return best;
    const float top = z[static_cast<std::size_t>(best)];
    struct C { float logit; int id; float w; };
    std::vector<C> all;
    for (std::size_t i = 0; i < z.size(); ++i)
        if (std::isfinite(z[i]))
            all.push_back({z[i], static_cast<int>(i), std::exp((z[i] - top) / s.temperature)});
    if (s.top_k == 0 && s.top_p >= 1.0f) {  // id order, min-p cut
        double total = 0;
        for (const C& c : all) total += c.w < s.min_p ? 0.0f : c.w;
        double r = static_cast<double>(rng.next_float()) * total;
        int last = best;
        for (const C& c : all) {
            if (c.w < s.min_p || c.w <= 0.0f) continue;
            last = c.id;
            r -= c.w;
            if (r <= 0) return c.id;
        }
        return last;
    }
    std::sort(all.begin(), all.end(), [](const C& a, const C& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    });
    if (s.top_k > 0) all.resize(std::min(all.size(), static_cast<std::size_t>(s.top_k)));
    double total = 0;
    for (C& c : all) {
        c.w = std::exp((c.logit - all[0].logit) / s.temperature);
        total += c.w;
    }
    double kept_mass = 0;
    std::size_t kept = 0;
    while (kept < all.size()) {
        if (kept > 0 && all[kept].w / total < (all[0].w / total) * s.min_p) break;
        kept_mass += all[kept++].w;
        if (kept_mass / total >= s.top_p) break;
    }
    double r = static_cast<double>(rng.next_float()) * kept_mass;
    for (std::size_t i = 0; i < kept; ++i) {
        r -= all[i].w;
        if (r <= 0) return all[i].id;
    }
    return all[kept - 1].id;
}

TEST(Sampler, OptimisedPathsDrawExactlyLikeTheLiteralAlgorithm) {
    std::mt19937 gen(21);
    for (float sigma : {0.5f, 3.0f}) {
        std::normal_distribution<float> normal(0.0f, sigma);
        std::vector<float> z(20000);
        for (float& v : z) v = normal(gen);
        z[7] = kNaN;
        z[8] = -kInf;
        for (auto p : {params(1, 0, 1, 0.05f), params(0.8f, 0, 1, 0), params(1, 0, 0.9f, 0),
                       params(1.3f, 0, 0.5f, 0.01f), params(1, 0, 0.999f, 0), params(1, 64, 0.8f, 0.05f),
                       params(0.6f, 1024, 1, 0)}) {
            p.seed = 555;
            Sampler s(p);
            Rng rng(555);
            for (int i = 0; i < 200; ++i) ASSERT_EQ(s.sample(z), reference_sample(z, p, rng)) << i;
        }
    }
}

TEST(Sampler, LargeTopPSetsAreCutAtTheRightRank) {
    // 5000 equal logits, top_p 0.25 (exact in binary): exactly the 1250 lowest ids
    // survive (ties: lower id first), which needs more than the first 256-candidate
    // selection round.
    const std::vector<float> z(5000, 1.0f);
    Sampler s(params(1, 0, 0.25f, 0, 31));
    int max_id = 0;
    double mean = 0;
    const int draws = 4000;
    for (int i = 0; i < draws; ++i) {
        const int id = s.sample(z);
        max_id = std::max(max_id, id);
        mean += id;
    }
    EXPECT_EQ(max_id, 1249);
    EXPECT_NEAR(mean / draws, 624.5, 25.0);  // uniform: sd of the mean ~5.7
}

TEST(Sampler, LogprobsAreTheLogSoftmaxOfRawLogits) {
    Sampler s(params(0.5f, 0, 1, 0.05f));  // temperature does not change logprobs
    const std::vector<float> z = {1.0f, 2.0f, 3.0f, -kInf};
    EXPECT_NEAR(s.logprob(z, 2), -0.40760596444438013, 1e-6);
    EXPECT_NEAR(s.logprob(z, 0), -2.40760596444438, 1e-6);
    EXPECT_EQ(s.logprob(z, 3), -kInf);
    EXPECT_EQ(s.logprob(z, 7), -kInf);
    std::vector<TokenLogprob> top;
    s.top_logprobs(z, 2, top);
    ASSERT_EQ(top.size(), 2u);
    EXPECT_EQ(top[0].id, 2);
    EXPECT_EQ(top[0].logit, 3.0f);
    EXPECT_NEAR(top[0].logprob, -0.40760596444438013, 1e-6);
    EXPECT_EQ(top[1].id, 1);
    EXPECT_NEAR(top[1].logprob, -1.4076059644443801, 1e-6);
    s.top_logprobs(z, 10, top);  // capped at the finite logits
    EXPECT_EQ(top.size(), 3u);
    const std::vector<float> ties = {5.0f, 5.0f, 5.0f};
    s.top_logprobs(ties, 3, top);
    EXPECT_EQ(top[0].id, 0);
    EXPECT_EQ(top[2].id, 2);
    EXPECT_NEAR(top[1].logprob, -std::log(3.0), 1e-6);
}

TEST(SamplerParams, NormalisationFollowsTheSpec) {
    using text::effective_sampling;
    EXPECT_TRUE(effective_sampling(params(0, 0, 1, 0), 10).greedy);
    EXPECT_EQ(effective_sampling(params(1, 0, 0.0f, 0), 10).top_p, 1.0f);
    EXPECT_EQ(effective_sampling(params(1, 0, 1.5f, 0), 10).top_p, 1.0f);
    EXPECT_EQ(effective_sampling(params(1, 0, 0.3f, 0), 10).top_p, 0.3f);
    EXPECT_EQ(effective_sampling(params(1, 0, 1, -0.5f), 10).min_p, 0.0f);
    EXPECT_EQ(effective_sampling(params(1, 5000, 1, 0), 129280).top_k, 1024);
    EXPECT_EQ(effective_sampling(params(1, 50, 1, 0), 10).top_k, 10);
    EXPECT_EQ(effective_sampling(params(1, -4, 1, 0), 10).top_k, 0);
}

TEST(SamplerParams, ThinkingModeFixesEverythingButTheSeed) {
    const SamplingParams fixed = thinking_mode_sampling(params(0.2f, 5, 0.5f, 0.3f, 77));
    EXPECT_EQ(fixed.temperature, 1.0f);
    EXPECT_EQ(fixed.top_k, 0);
    EXPECT_EQ(fixed.top_p, 1.0f);
    EXPECT_EQ(fixed.min_p, 0.05f);
    EXPECT_EQ(fixed.seed, 77u);
}

}  // namespace
}  // namespace ds4
