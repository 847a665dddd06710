// Internal view of the sampler (public API: include/ds4/sampler.h): the parameter
// normalisation of interface.md §4.1, separate so tests can check it directly.
#pragma once

#include "ds4/sampler.h"

#include <cstddef>

namespace ds4::text {

// The values sample() actually uses for a vocabulary of `vocab` tokens.
struct EffectiveSampling {
    bool greedy = false;  // temperature <= 0 (or NaN)
    float temperature = 1.0f;
    int top_k = 0;        // 0 = off, else min(top_k, 1024, vocab)
    float top_p = 1.0f;   // in (0, 1]
    float min_p = 0.0f;   // in [0, 1]
};

EffectiveSampling effective_sampling(const SamplingParams& params, std::size_t vocab);

}  // namespace ds4::text
