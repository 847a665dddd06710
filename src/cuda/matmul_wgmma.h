// Dense products of long passes on Hopper's warpgroup tensor-core instructions (issue 8,
// prefill). matmul_q8r_mma's half path (matmul_mma.h) forms f16(q · d_w) from the Q8_0
// codes in registers for every tile, ~8 instructions per mma.sync (H200 ncu: 171 TFLOPS on
// q_b, 29 % of the tensor pipe, two warps a scheduler). Here the weights are converted once,
// at load, into an f16 copy (the same f16 values: one rounding of the exact Q8_0 value) and
// wgmma (sm_90a) multiplies 128-token by 256-row tiles straight from shared memory
// (H200 ncu, 8192-token pass: q_b 1.87 ms against 3.18, 293 TFLOPS; all dense products of
// 4 layers 21.9 ms against 45.5).
//
// Numerics: the products are those of the half path (f16 weights and f16(x · 2^e)
// activations, f32 sums, times 2^−e per token), so its bound holds; only the order of the
// f32 additions differs (wgmma's own, per 16 columns, then column tiles in order), so the
// bits differ from matmul_q8r_mma's. Within this path a (row, token) result depends neither
// on the other tokens nor on n_tok, and a grouped launch equals its groups' own calls.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ds4::cuda {

// Whether this build has the sm_90a kernels and the device runs them (compute capability
// 9.0); $DS4_CUDA_WGMMA=0 turns the path off.
bool wgmma_available();

// The f16 copy of a q8r-repacked Q8_0 matrix (matmul_q8r's layout, kernels.h): out[r][p] =
// f16(q · d) for the code at byte p of row r's codes, in that (q8r) order, which is the
// order quantize_mma_activations gives the activations. out: rows · cols halves.
void q8r_to_f16(const void* w, uint64_t rows, uint64_t cols, __half* out, cudaStream_t s);

// The f16 copies' passes: at least this many tokens (smaller passes keep matmul_q8r_mma,
// whose 64-token tiles and split-K suit them).
inline constexpr uint32_t kWgmmaMinTokens = 256;

// y[t][r] = xs[t] · Σ_p w[r][p] · x[t][p] for t < n_tok, r < rows, where xq holds the Half
// activations of quantize_mma_activations (mma_activation_bytes(xq_cols, n_tok) bytes:
// f16 values at q8r places, then the per-token 2^−e). groups > 1: product g uses weights
// w + g · rows · cols, the activation columns [g · cols, (g + 1) · cols) of xq_cols, and
// writes y + g · y_group. cols a multiple of 256; w, xq 16-byte aligned.
struct WgmmaGroups {
    uint32_t groups = 1;
    uint64_t xq_cols = 0;  // 0: cols
    uint64_t y_group = 0;
};
void matmul_f16_wgmma(const __half* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok,
                      float* y, uint64_t y_stride, cudaStream_t s, const WgmmaGroups& g = {});

}  // namespace ds4::cuda
