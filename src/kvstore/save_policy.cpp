#include "kvstore/save_policy.h"

#include "ds4/error.h"

namespace ds4::kvstore {

void SavePolicy::validate() const {
    if (cold_max_tokens != 0 && cold_max_tokens < min_tokens)
        fail("--kv-cache-cold-max-tokens must be 0 or >= --kv-cache-min-tokens (", min_tokens,
             "), got ", cold_max_tokens);
}

uint32_t stable_store_length(const SavePolicy& p, uint32_t prompt_tokens) {
    if (prompt_tokens > p.min_tokens + p.boundary_trim) {
        uint32_t s = prompt_tokens - p.boundary_trim;
        if (p.boundary_align != 0) s -= s % p.boundary_align;
        if (s >= p.min_tokens) return s;
    }
    return prompt_tokens;
}

uint32_t cold_store_length(const SavePolicy& p, std::span<const int32_t> prompt,
                           uint32_t reused_tokens, int32_t user_token, int32_t assistant_token) {
    const auto n = static_cast<uint32_t>(prompt.size());
    if (reused_tokens != 0 || p.cold_max_tokens == 0 || n < p.min_tokens || n > p.cold_max_tokens)
        return 0;
    uint32_t last_user = 0;
    bool seen_user = false;
    for (uint32_t i = 0; i < n && prompt[i] != assistant_token; ++i) {
        if (prompt[i] == user_token) {
            last_user = i;
            seen_user = true;
        }
    }
    if (seen_user && last_user >= p.min_tokens) return last_user;
    return stable_store_length(p, n);
}

uint32_t continued_step(const SavePolicy& p) {
    if (p.continued_interval == 0) return 0;
    if (p.boundary_align == 0) return p.continued_interval;
    const uint64_t a = p.boundary_align;
    return static_cast<uint32_t>((p.continued_interval + a - 1) / a * a);
}

bool continued_save_due(const SavePolicy& p, uint32_t n, uint32_t last_stored_frontier) {
    const uint32_t step = continued_step(p);
    return step != 0 && n >= p.min_tokens && n % step == 0 && n > last_stored_frontier;
}

}  // namespace ds4::kvstore
