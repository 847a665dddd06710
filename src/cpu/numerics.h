// Element-wise primitives of the forward pass (spec model.md §3, §4.3), each written in
// the order of operations of the official reference (inference/model.py + kernel.py, f32),
// so that the f32 roundings match it as closely as a scalar implementation can.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/hparams.h"

namespace ds4::cpu {

// ---- scalar activations (torch f32 definitions) ----
float sigmoid(float x);   // 1 / (1 + e^-x)
float silu(float x);      // x / (1 + e^-x)
float softplus(float x);  // x > 20 ? x : log1p(e^x)   (torch threshold 20)

// ---- RMSNorm (§3.1) ----
// 1 / sqrt(mean(x²) + eps): the mean is taken exactly (double) and rounded to f32, then
// the f32 rsqrt as in the official `torch.rsqrt(x.square().mean(-1) + eps)`.
float rms_inv(const float* x, uint64_t n, float eps);
// out = w · (x · rms_inv(x))   (official order: normalise, then weight). out may be x.
void rms_norm(const float* x, const float* w, uint64_t n, float eps, float* out);
// x = x · rms_inv(x), no weight (per-head q norm).
void rms_norm_inplace(float* x, uint64_t n, float eps);

// ---- RoPE (§3.2) ----
// Per-pair frequencies of one layer kind: base rope_theta without YaRN for ratio-0 layers,
// compress_rope_theta with the YaRN ramp of original_seq_len for compressed layers.
struct RopeFreqs {
    std::vector<float> omega;  // rope_dim / 2 values
    static RopeFreqs for_layer(const model::Hparams& hp, uint32_t ratio);
};
// cos/sin of θ_j = f32(p)·ω_j for every pair.
struct RopeAngles {
    std::vector<float> cos, sin;
    void compute(const RopeFreqs& f, uint64_t pos);
};
// Rotates adjacent pairs (x[2j], x[2j+1]) of the rd = 2·cos.size() values at x by θ_j
// (interleaved / GPT-J style, as view_as_complex); inverse uses the conjugate.
void rope_rotate(float* x, const RopeAngles& a, bool inverse);

// ---- QAT round trips (§3.3, §3.4) ----
// Round to the nearest FP8 E4M3FN value, ties to even (|v| ≤ 448 expected).
float e4m3_round(float v);
// Round to the nearest FP4 E2M1 value with the official midpoint rules (|v| ≤ 6 expected).
float e2m1_round(float v);
// 2^ceil(log2(t)) for a normal positive f32 t, from its exponent and mantissa bits.
float pow2_ceil(float t);
// In place: FP8 simulation of n values (n % 64 == 0) in 64-blocks, power-of-two scales.
void fp8_simulate(float* x, uint64_t n);
// In place: FP4 simulation of n values (n % 32 == 0) in 32-blocks, power-of-two scales.
void fp4_simulate(float* x, uint64_t n);
// In place: x ← (x·H_n)·n^-1/2 with the Sylvester Hadamard matrix, n a power of two.
void hadamard_scaled(float* x, uint64_t n);

// ---- hyper-connection combine matrix (§4.3) ----
// In place on the H×H row-major matrix: row softmax + eps, column normalisation, then
// iters − 1 rounds of row and column normalisation, eps in every denominator.
void sinkhorn(float* c, uint32_t h, uint32_t iters, float eps);

// ---- top-k (§4.6, §6) ----
// The k indices with the largest score; exact ties go to the lower index. idx is scratch
// of scores.size() entries; the chosen indices end up in idx[0..k) sorted ascending.
void top_k_lower_index(std::span<const float> scores, uint32_t k, std::span<uint32_t> idx);

}  // namespace ds4::cpu
