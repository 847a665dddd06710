#include "text/sampler.h"

#include "ds4/error.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>

namespace ds4 {
namespace {

// Descending logit, lower id first on ties: a total order, so the candidate order (and
// with it the token a seed draws) does not depend on the sort algorithm.
bool more_likely(float a_logit, std::int32_t a_id, float b_logit, std::int32_t b_id) {
    return a_logit > b_logit || (a_logit == b_logit && a_id < b_id);
}

std::uint64_t fresh_seed() {
    std::random_device device;
    const std::uint64_t hi = device();
    const std::uint64_t lo = device();
    const auto now = static_cast<std::uint64_t>(
        std::chrono::steady_clock::now().time_since_epoch().count());
    const std::uint64_t seed = ((hi << 32) | lo) ^ (now * 0x9e3779b97f4a7c15ull);
    return seed ? seed : 1;
}

}  // namespace

SamplingParams thinking_mode_sampling(const SamplingParams& requested) {
    SamplingParams fixed;  // 1.0 / 0 / 1.0 / 0.05
    fixed.seed = requested.seed;
    return fixed;
}

// Two passes instead of one branchy scan: the largest finite value over 16 independent
// lanes (a select per value, which the compiler vectorizes: ~10x the scalar scan on a
// 129280-token row, which a 64-sequence step makes 64 times), then the first index
// holding it. Non-finite values count as -inf; -0 and +0 are equal, so the first wins.
std::int32_t argmax(std::span<const float> logits) {
    constexpr std::size_t kLanes = 16;
    constexpr float kNone = -std::numeric_limits<float>::infinity();
    const float* p = logits.data();
    const std::size_t n = logits.size();
    float lane[kLanes];
    std::fill(lane, lane + kLanes, kNone);
    std::size_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (std::size_t j = 0; j < kLanes; ++j) {
            const float z = p[i + j];
            const float v = std::fabs(z) <= std::numeric_limits<float>::max() ? z : kNone;  // NaN: false
            lane[j] = v > lane[j] ? v : lane[j];
        }
    for (; i < n; ++i) {
        const float z = p[i];
        if (std::isfinite(z) && z > lane[0]) lane[0] = z;
    }
    const float best = *std::max_element(lane, lane + kLanes);
    if (best == kNone) return -1;  // a finite value is never -inf
    for (i = 0; i < n; ++i)
        if (p[i] == best) return static_cast<std::int32_t>(i);
    return -1;  // not reached
}

Sampler::Sampler(const SamplingParams& params) : params_(params) { reseed(params.seed); }

void Sampler::reseed(std::uint64_t seed) {
    seed_ = seed ? seed : fresh_seed();
    rng_.reseed(seed_);
}

std::int32_t Sampler::sample(std::span<const float> logits, bool force_greedy) {
    const std::int32_t best = argmax(logits);
    if (best < 0) fail("sampler: none of the ", logits.size(), " logits is finite");
    const text::EffectiveSampling s = text::effective_sampling(params_, logits.size());
    if (force_greedy || s.greedy) return best;
    if (s.top_k > 0) return sample_top_k(logits, s.temperature, s.top_k, s.top_p, s.min_p);
    if (s.top_p >= 1.0f) return sample_min_p(logits, s.temperature, s.min_p);
    return sample_sorted(logits, s.temperature, s.top_p, s.min_p);
}

// The default path (§4.3 step 4): no sort. The top token has weight 1, so "weight below
// min_p" is exactly the min-p rule; survivors are drawn by a scan in token-id order.
// Most of a real vocabulary lies far below the min-p cut, so a logit threshold (with
// generous slack, the exact weight test still decides) skips their exp().
std::int32_t Sampler::sample_min_p(std::span<const float> logits, float temperature,
                                   float min_p) {
    const std::int32_t best = argmax(logits);
    const float top = logits[static_cast<std::size_t>(best)];
    float cutoff = -std::numeric_limits<float>::infinity();
    if (min_p > 0.0f) {
        const float span = temperature * std::log(min_p);  // <= 0
        cutoff = top + span - 1e-3f * (1.0f + std::fabs(top) + std::fabs(span));
    }
    if (candidates_.size() < logits.size()) candidates_.resize(logits.size());
    std::size_t n = 0;
    double total = 0.0;
    for (std::size_t i = 0; i < logits.size(); ++i) {
        const float z = logits[i];
        if (!(z >= cutoff) || !std::isfinite(z)) continue;
        const float w = std::exp((z - top) / temperature);
        if (w < min_p || w <= 0.0f) continue;
        candidates_[n++] = Candidate{z, static_cast<std::int32_t>(i), w};
        total += w;
    }
    if (n == 0 || !(total > 0.0) || !std::isfinite(total)) return best;
    double r = static_cast<double>(rng_.next_float()) * total;
    for (std::size_t i = 0; i < n; ++i) {
        r -= candidates_[i].weight;
        if (r <= 0.0) return candidates_[i].id;
    }
    return candidates_[n - 1].id;  // rounding left a sliver of r: the last survivor
}

std::size_t Sampler::collect_finite(std::span<const float> logits) {
    if (candidates_.size() < logits.size()) candidates_.resize(logits.size());
    std::size_t n = 0;
    for (std::size_t i = 0; i < logits.size(); ++i)
        if (std::isfinite(logits[i]))
            candidates_[n++] = Candidate{logits[i], static_cast<std::int32_t>(i), 0.0f};
    return n;
}

// §4.3 step 3: the k best candidates, sorted; min-p, then top-p, over their mass.
std::int32_t Sampler::sample_top_k(std::span<const float> logits, float temperature, int k,
                                   float top_p, float min_p) {
    const std::size_t n = collect_finite(logits);
    const std::size_t count = std::min(n, static_cast<std::size_t>(k));
    auto first = candidates_.begin();
    std::partial_sort(first, first + static_cast<std::ptrdiff_t>(count),
                      first + static_cast<std::ptrdiff_t>(n),
                      [](const Candidate& a, const Candidate& b) {
                          return more_likely(a.logit, a.id, b.logit, b.id);
                      });
    double total = 0.0;
    for (std::size_t i = 0; i < count; ++i) {
        candidates_[i].weight = std::exp((candidates_[i].logit - candidates_[0].logit) / temperature);
        total += candidates_[i].weight;
    }
    return draw_from_sorted(count, total, top_p, min_p, candidates_[0].id);
}

// §4.3 step 5: every token's weight counts towards the top-p mass, but only min-p
// survivors can be kept, and min-p comes first, so only the survivors are candidates.
// Sorting all of them is the expensive part (129280 tokens with min_p = 0), and the cut
// usually falls early, so the prefix is sorted in growing pieces until the cut is inside.
std::int32_t Sampler::sample_sorted(std::span<const float> logits, float temperature,
                                    float top_p, float min_p) {
    const std::int32_t best = argmax(logits);
    const float top = logits[static_cast<std::size_t>(best)];
    if (candidates_.size() < logits.size()) candidates_.resize(logits.size());
    double total = 0.0;
    std::size_t n = 0;
    for (std::size_t i = 0; i < logits.size(); ++i) {
        const float z = logits[i];
        if (!std::isfinite(z)) continue;
        const float w = std::exp((z - top) / temperature);
        total += w;
        if (w >= min_p || static_cast<std::int32_t>(i) == best)
            candidates_[n++] = Candidate{z, static_cast<std::int32_t>(i), w};
    }
    if (!(total > 0.0) || !std::isfinite(total)) return best;
    const auto order = [](const Candidate& a, const Candidate& b) {
        return more_likely(a.logit, a.id, b.logit, b.id);
    };
    auto first = candidates_.begin();
    std::size_t sorted = std::min<std::size_t>(n, 256);
    while (true) {
        // Past half the range one full sort is cheaper than another selection.
        if (sorted * 2 >= n) sorted = n;
        if (sorted == n) {
            std::sort(first, first + static_cast<std::ptrdiff_t>(n), order);
            break;
        }
        // A small prefix: a heap pass rejects most tokens with one comparison. A large
        // one: select it in O(n), then order only it.
        const auto middle = first + static_cast<std::ptrdiff_t>(sorted);
        const auto last = first + static_cast<std::ptrdiff_t>(n);
        if (sorted <= 256) {
            std::partial_sort(first, middle, last, order);
        } else {
            std::nth_element(first, middle, last, order);
            std::sort(first, middle, order);
        }
        if (cut_falls_within(sorted, total, top_p, min_p)) break;
        sorted *= 8;
    }
    return draw_from_sorted(sorted, total, top_p, min_p, best);
}

// Whether the keep loop of draw_from_sorted stops inside the first `count` candidates.
bool Sampler::cut_falls_within(std::size_t count, double total, float top_p, float min_p) const {
    const float top_weight = candidates_[0].weight;
    double kept_mass = 0.0;
    for (std::size_t i = 0; i < count; ++i) {
        const float w = candidates_[i].weight;
        if (i > 0 && w / total < (top_weight / total) * min_p) return true;
        kept_mass += w;
        if (kept_mass / total >= top_p) return true;
    }
    return false;
}

// Keeps sorted candidates while they pass min-p (candidate 0 always does) and until the
// kept mass reaches top_p (the crossing candidate is kept), then draws among them.
std::int32_t Sampler::draw_from_sorted(std::size_t count, double total, float top_p,
                                       float min_p, std::int32_t fallback) {
    if (count == 0 || !(total > 0.0) || !std::isfinite(total)) return fallback;
    const float top_weight = candidates_[0].weight;
    double kept_mass = 0.0;
    std::size_t kept = 0;
    while (kept < count) {
        const float w = candidates_[kept].weight;
        if (kept > 0 && w / total < (top_weight / total) * min_p) break;
        kept_mass += w;
        ++kept;
        if (kept_mass / total >= top_p) break;
    }
    if (!(kept_mass > 0.0)) return fallback;
    double r = static_cast<double>(rng_.next_float()) * kept_mass;
    for (std::size_t i = 0; i < kept; ++i) {
        r -= candidates_[i].weight;
        if (r <= 0.0) return candidates_[i].id;
    }
    return candidates_[kept - 1].id;
}

double Sampler::log_sum_exp(std::span<const float> logits) {
    const std::int32_t best = argmax(logits);
    if (best < 0) return std::numeric_limits<double>::infinity();
    const double top = logits[static_cast<std::size_t>(best)];
    double sum = 0.0;
    for (float z : logits)
        if (std::isfinite(z)) sum += std::exp(static_cast<double>(z) - top);
    return top + std::log(sum);
}

float Sampler::logprob(std::span<const float> logits, std::int32_t id) {
    if (id < 0 || static_cast<std::size_t>(id) >= logits.size() ||
        !std::isfinite(logits[static_cast<std::size_t>(id)]))
        return -std::numeric_limits<float>::infinity();
    return static_cast<float>(logits[static_cast<std::size_t>(id)] - log_sum_exp(logits));
}

void Sampler::top_logprobs(std::span<const float> logits, std::size_t n,
                           std::vector<TokenLogprob>& out) {
    out.clear();
    const std::size_t finite = collect_finite(logits);
    n = std::min(n, finite);
    if (n == 0) return;
    auto first = candidates_.begin();
    std::partial_sort(first, first + static_cast<std::ptrdiff_t>(n),
                      first + static_cast<std::ptrdiff_t>(finite),
                      [](const Candidate& a, const Candidate& b) {
                          return more_likely(a.logit, a.id, b.logit, b.id);
                      });
    const double lse = log_sum_exp(logits);
    for (std::size_t i = 0; i < n; ++i)
        out.push_back(TokenLogprob{candidates_[i].id, candidates_[i].logit,
                                   static_cast<float>(candidates_[i].logit - lse)});
}

}  // namespace ds4

namespace ds4::text {

EffectiveSampling effective_sampling(const SamplingParams& params, std::size_t vocab) {
    EffectiveSampling s;
    s.greedy = !(params.temperature > 0.0f);  // NaN counts as greedy too
    s.temperature = s.greedy ? 0.0f : params.temperature;
    if (params.top_k > 0) {
        s.top_k = std::min(params.top_k, SamplingParams::kMaxTopK);
        if (static_cast<std::size_t>(s.top_k) > vocab) s.top_k = static_cast<int>(vocab);
    }
    s.top_p = params.top_p > 0.0f && params.top_p <= 1.0f ? params.top_p : 1.0f;
    s.min_p = params.min_p >= 0.0f ? std::min(params.min_p, 1.0f) : 0.0f;
    return s;
}

}  // namespace ds4::text
