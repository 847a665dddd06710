// When the server saves the live KV state to disk (formats.md §6.8), as pure functions
// of token counts so the schedule is testable without a model.
#pragma once

#include <cstdint>
#include <span>

namespace ds4::kvstore {

struct SavePolicy {
    uint32_t min_tokens = 512;            // --kv-cache-min-tokens
    uint32_t cold_max_tokens = 30000;     // --kv-cache-cold-max-tokens (0: no cold saves)
    uint32_t continued_interval = 10000;  // --kv-cache-continued-interval-tokens (0: off)
    uint32_t boundary_trim = 32;          // --kv-cache-boundary-trim-tokens
    uint32_t boundary_align = 2048;       // --kv-cache-boundary-align-tokens (0: off)

    // Throws ds4::Error naming the flag when the combination is invalid.
    void validate() const;
};

// A prompt length trimmed back to an aligned boundary (stable across small edits at the
// end of a prompt), or P itself when the trimmed length would fall below min_tokens.
uint32_t stable_store_length(const SavePolicy& p, uint32_t prompt_tokens);

// How many prompt tokens a cold save stores, or 0 when no cold save applies (reuse
// happened, or P outside [min, cold_max]). Prefers the "anchor": the last User marker
// before the first Assistant marker, which is where independent agent sessions that
// share a system prompt diverge.
uint32_t cold_store_length(const SavePolicy& p, std::span<const int32_t> prompt,
                           uint32_t reused_tokens, int32_t user_token, int32_t assistant_token);

// Continued saves happen at multiples of this step (interval rounded up to the alignment).
uint32_t continued_step(const SavePolicy& p);

// True when a live state of n tokens is due for a continued save.
bool continued_save_due(const SavePolicy& p, uint32_t n, uint32_t last_stored_frontier);

}  // namespace ds4::kvstore
