// Tensor-core products for multi-token passes (issue 8: prefill and large batches). The
// matvec kernels (kernels.h, matmul_q8.h) re-read the weights once per <= 8 tokens and
// multiply on CUDA cores; here a block multiplies a 64-row tile of the weights by up to
// 64 tokens with int8 mma.sync (m16n8k32, sm_80+), so each weight is read once per 64
// tokens and the dot products run on the tensor cores.
//
// Numerics (the fast path's, matmul_q8.h): the activations are the int8 blocks of
// quantize_q8_activations (d_x = amax/127 per 32 values), the weights their own Q8_0
// codes; each 32-block's integer dot is exact in s32 and is added to an f32 sum as
// s32 · d_w · d_x. Hence the bound of matmul_q8.h against the exact f32 path:
//     |y_mma − y_exact| ≤ Σ_i |w_i| · d_x(i) / 2  (+ f32 rounding).
// Why int8 and not f16 mma: Q8_0 codes are int8 already (no dequantization into tiles),
// int8 mma has twice the f16 rate, and the activation rounding is the one the routed
// experts' fast path already accepts.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ds4::cuda {

// True when the forward should run an n-token product through matmul_q8r_mma: n at
// least the threshold (DS4_CUDA_MMA_MIN, default kMmaMinTokens) and DS4_CUDA_MMA is not
// "0" (the switch back to the matvec kernels). Below the threshold (decode, small
// batches) the matvec path keeps its batch-independent bits.
inline constexpr uint32_t kMmaMinTokens = 16;
bool mma_applies(uint32_t n_tok);
// Sets the kernels' shared-memory limits once (matmul_q8r_mma calls it too); the forward
// calls it at load so that no such call lands inside a captured graph.
void mma_init();

// Y[t][r] = W[r] · dequant(XQ[t]) for r < rows, t < n_tok: W repacked Q8_0 rows
// (q8r_repack, kernels.h; 16-byte aligned, cols a multiple of 256 up to 32768), XQ from
// quantize_q8_activations over the same cols (matmul_q8.h). A (row, token) result does
// not depend on the other tokens or on n_tok (fixed per-block order of the sums).
void matmul_q8r_mma(const void* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok, float* y,
                    uint64_t y_stride, cudaStream_t s);

}  // namespace ds4::cuda
