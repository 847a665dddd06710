// Routed experts with ds4's CPU numerics (formats.md §3.7 items 1–2): each token's
// normed FFN input is quantized to Q8_K once and shared by gate and up of every selected
// expert; the weighted clamped-SwiGLU hidden row of each (token, expert) pair is
// quantized to Q8_K again for the down projection.
#pragma once

#include <cstdint>

#include "cpu/thread_pool.h"
#include "cpu/weight_set.h"

namespace ds4::cpu {

struct RoutedExpertsJob {
    const ExpertWeights* w;   // gate/up/down: Q2_K, Q4_K or IQ2_XXS
    uint32_t n_tok;
    uint32_t n_used;          // selected experts per token
    uint64_t dim, ff;         // both multiples of 256
    float swiglu_limit;
    const float* x;           // n_tok × dim: normed FFN input
    const uint32_t* sel;      // n_tok × n_used expert ids
    const float* sel_w;       // n_tok × n_used routing weights
    float* out;               // n_tok × dim: Σ over the token's experts, ascending id
};

// True when the Fast path applies to these expert weights.
bool fast_routed_experts_apply(const ExpertWeights& w);

// Runs the job. Each weight row is read once per chunk; per token the expert outputs are
// added in ascending expert id (as the exact path does), so the result is independent of
// the thread count. Scratch is thread-local to the calling thread and only grows.
void fast_routed_experts(const RoutedExpertsJob& job, ThreadPool* pool);

}  // namespace ds4::cpu
