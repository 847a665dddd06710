// Fast quantized matrix-vector products (issue 8, speed): the activations are quantized
// once per step to int8 blocks of 32 (f32 scale + two 16-value sums, "Q8_1"-style) and
// the weights are dotted with them four codes at a time (__dp4a). The exact path
// (cuda::matmul in kernels.h: weights dequantized to f32, f32 activations) stays the
// reference; this one trades the activation rounding for a several-fold cut in
// per-value arithmetic. Tolerance against the exact product, per output (see
// tests/cuda/test_matmul_q8.cpp):
//     |y_fast − y_exact| ≤ Σ_i |w_i| · d_x(i) / 2  (+ f32 rounding),
// d_x(i) = amax(block of x_i) / 127 the activation step: each x_i moves by at most half
// a step, and the integer dot of the rounded values is exact.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/act_rows.h"
#include "gguf/ggml_types.h"

namespace ds4::cuda {

// Which matvec kernel a launcher runs: Exact (f32 activations) or Fast (int8 activations,
// dp4a). The forward uses Fast for the routed experts.
enum class MatmulPath { Exact, Fast };

// Quantized-activation layout, one record per token, `q8_token_bytes(cols)` apart: cols
// int8 codes, then per 32-value block an 8-byte record {f32 d, (int16 Σq[0..15]) |
// (int16 Σq[16..31]) << 16}. cols must be a multiple of 256.
uint64_t q8_token_bytes(uint64_t cols);
inline uint64_t q8_activation_bytes(uint64_t cols, uint32_t n_tok) { return q8_token_bytes(cols) * n_tok; }

// xq ← quantize(x) for n_tok rows of cols f32 values (x 16-byte aligned, x_stride a
// multiple of 4): d = amax/127, q = round-to-nearest-even(x · (1/d)) per block of 32.
// xq: q8_activation_bytes(cols, n_tok) device bytes, 16-byte aligned. rows: where row i
// comes from (act_rows.h; default: row i of x).
void quantize_q8_activations(const float* x, uint64_t x_stride, uint64_t cols, uint32_t n_tok, void* xq,
                             cudaStream_t s, const ActRows& rows = {});

// True for the weight types matmul_q8 handles: Q8_0, Q2_K, Q4_K, IQ2_XXS.
bool matmul_q8_supported(GgmlType t);

// Y[t][r] = W[r] · dequant(XQ[t]) for r < rows, t < n_tok, with XQ from
// quantize_q8_activations (same cols). Weight layout as cuda::matmul (GGUF rows, 4-byte
// aligned start). One pass over the weights serves up to 8 tokens. Throws ds4::Error for
// other types or shapes.
void matmul_q8(GgmlType type, const void* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok, float* y,
               uint64_t y_stride, cudaStream_t s);

// cuda::matmul with the path chosen by the caller. Fast on a type matmul_q8 supports
// quantizes x into xq_scratch (q8_activation_bytes(cols, n_tok) bytes) and runs
// matmul_q8; every other case (Exact, F16, F32) runs the exact kernel and leaves the
// scratch untouched (it may then be null). Callers that multiply one activation by many
// matrices (the experts) should quantize once and call matmul_q8 directly.
void matmul(GgmlType type, const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
            uint64_t y_stride, uint32_t n_tok, cudaStream_t s, MatmulPath path, void* xq_scratch);

}  // namespace ds4::cuda
