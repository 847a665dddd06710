// Token sampling (interface.md §4): temperature, top-k, top-p, min-p over one row of
// logits, with ds4's exact candidate order and RNG so a seed reproduces a generation.
//
// Order of operations (§4.3): temperature, then min-p (relative to the top token), then
// top-p (mass relative to all candidates), then a draw. Non-finite logits never win and
// are never drawn. No penalties, no logit bias.
//
// A Sampler owns scratch buffers sized to the vocabulary: after the first call with a
// given vocabulary size, sample() and the logprob queries allocate nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace ds4 {

struct SamplingParams {
    float temperature = 1.0f;  // <= 0: greedy (argmax, first maximum)
    int top_k = 0;             // <= 0: off; capped at kMaxTopK
    float top_p = 1.0f;        // <= 0 or > 1 mean 1 (so top_p = 0 is *not* greedy)
    float min_p = 0.05f;       // relative to the top token's probability; < 0 means 0
    std::uint64_t seed = 0;    // 0: a fresh random seed (see Sampler::seed())

    static constexpr int kMaxTopK = 1024;
};

// The sampling the server uses for every token of a thinking-mode request, whatever the
// client asked (§4.2, mirroring DeepSeek's hosted API); the seed is kept.
SamplingParams thinking_mode_sampling(const SamplingParams& requested);

// 64-bit xorshift* (§4.4). Seed 0 is replaced by 0x9e3779b97f4a7c15, as in ds4.
class Rng {
public:
    explicit Rng(std::uint64_t seed = 0) { reseed(seed); }
    void reseed(std::uint64_t seed) { state_ = seed ? seed : 0x9e3779b97f4a7c15ull; }
    std::uint64_t next_u64() {
        state_ ^= state_ >> 12;
        state_ ^= state_ << 25;
        state_ ^= state_ >> 27;
        return state_ * 0x2545f4914f6cdd1dull;
    }
    // Uniform in [0, 1) with 24 bits: bits 40..63 of the output / 2^24.
    float next_float() { return static_cast<float>(next_u64() >> 40) / 16777216.0f; }

private:
    std::uint64_t state_ = 0;
};

struct TokenLogprob {
    std::int32_t id = 0;
    float logit = 0.0f;
    float logprob = 0.0f;  // log-softmax of the raw logits (temperature 1)
};

class Sampler {
public:
    explicit Sampler(const SamplingParams& params = {});

    // Draws the next token. `force_greedy` decodes this one token with temperature 0
    // (DSML syntax, §3.5). Throws ds4::Error if no logit is finite.
    std::int32_t sample(std::span<const float> logits, bool force_greedy = false);

    // Log-softmax of the raw logits at `id` (-inf for a non-finite logit).
    float logprob(std::span<const float> logits, std::int32_t id);
    // The n most likely tokens (ties: lower id first), most likely first, into `out`
    // (cleared first; reuse the vector to avoid allocation).
    void top_logprobs(std::span<const float> logits, std::size_t n, std::vector<TokenLogprob>& out);

    // Restarts the random sequence (the CLI REPL reseeds at every turn, §4.4).
    void reseed(std::uint64_t seed);
    const SamplingParams& params() const { return params_; }
    // The seed in use: params.seed, or the random one drawn for seed 0 (report it so a
    // run can be reproduced).
    std::uint64_t seed() const { return seed_; }

private:
    struct Candidate {
        float logit;
        std::int32_t id;
        float weight;  // exp((logit - top logit) / temperature)
    };
    std::int32_t sample_top_k(std::span<const float> logits, float temperature, int k,
                              float top_p, float min_p);
    std::int32_t sample_min_p(std::span<const float> logits, float temperature, float min_p);
    std::int32_t sample_sorted(std::span<const float> logits, float temperature, float top_p,
                               float min_p);
    std::int32_t draw_from_sorted(std::size_t count, double total, float top_p, float min_p,
                                  std::int32_t fallback);
    bool cut_falls_within(std::size_t count, double total, float top_p, float min_p) const;
    std::size_t collect_finite(std::span<const float> logits);
    double log_sum_exp(std::span<const float> logits);

    SamplingParams params_;
    std::uint64_t seed_ = 0;
    Rng rng_;
    std::vector<Candidate> candidates_;  // survivors / sorted candidates, sized to the vocab
};

// Index of the largest finite logit (first one on ties); -1 if none is finite.
std::int32_t argmax(std::span<const float> logits);

}  // namespace ds4
