// Tensor-core products of F16 weights with f32 activations (issue 8: prefill). The F16
// matrices (router, hyper-connection mixes, compressors, indexer) ran on CUDA cores at
// ~7 TFLOPS in a 2048-token pass (~24 % of it, H200); here mma.sync m16n8k8 TF32 tiles
// multiply them for passes of kF16MmaMinTokens or more tokens (matmul() and its grouped
// and merged forms route F16 there; decode and small batches keep the matvec kernels).
//
// Numerics: an f16 weight is exact in TF32. Each activation is split into hi = tf32(x)
// (round to nearest) and lo = tf32(x - hi) (x - hi is exact), and both are multiplied
// (w·lo + w·hi), so a product is w·x to a relative 2^-22 instead of TF32's 2^-11. A
// warp's 32-column slice starts from zero in the mma accumulator (8 mma, whose additions
// may truncate) and is then added to the f32 sum with a rounded add; slices add in column
// order (and, for few rows, the K-split warps' sums in warp order). Bound, tested against
// an f64 reference (tests/cuda/test_f16_mma.cpp):
//     |y − Σ w·x| ≤ 2^-20 · Σ |w·x|   (the exact kernel's own rounding is of this size).
// Not bitwise the matvec kernels; a (row, token) result depends only on the row, the
// token's activations, the shape (rows, cols) and whether the pass has kF16MmaMinTokens
// tokens (below, every shape takes the 8-token K-split block): never on the other tokens.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ds4::cuda {

// From 256 tokens: below, the grids of the few-row products (router, mixes: 4 to 16
// blocks at 64 tokens) wait on memory, ~140 us a launch on an H200 against ~40 us for
// the matvec kernels at 64 tokens (a 64-sequence decode step measured 2.4 ms of F16
// products instead of 0.57).
inline constexpr uint32_t kF16MmaMinTokens = 256;
// Products of kF16MmaManyRows+ rows (compressors, 512-1024 rows; the indexer's q_b, 8192)
// from 32 tokens: the matvec kernels read a row's activations once per 8 tokens and 4
// rows, ~0.8 GB of L2 traffic for a ratio-4 layer's compressors at 64 tokens (200 us a
// layer on an H200, ~6.8 ms of a 64-sequence step), and the 8192-row q_b once per 8 tokens.
inline constexpr uint32_t kF16MmaManyRowsMinTokens = 32;
inline constexpr uint64_t kF16MmaManyRows = 512;

// True when an F16 product of n_tok tokens and `rows` rows goes to matmul_f16_mma: n_tok
// at least kF16MmaMinTokens, or rows at least kF16MmaManyRows and n_tok at least the
// many-rows threshold (kF16MmaManyRowsMinTokens, set_f16_mma_many_rows_min_tokens); an
// sm_80+ device and $DS4_CUDA_F16_MMA not "0".
bool f16_mma_takes(uint32_t n_tok, uint64_t rows);
// The many-rows threshold (tuning: the forward sets $DS4_CUDA_F16_MMA_MANY at open);
// kF16MmaMinTokens or more leaves only the kF16MmaMinTokens rule.
void set_f16_mma_many_rows_min_tokens(uint32_t n_tok);

// Y[t][r] = Σ_c W[r][c] · x[t][c], r < rows, t < n_tok, for n_mat products of one shape:
// product g reads W + g · w_group bytes and x + g · x_group floats, writes y + g · y_group.
// W: f16 rows of cols values (cols a multiple of 256; W and w_group 16-byte aligned);
// x: 16-byte aligned, x_stride and x_group multiples of 4 floats.
void matmul_f16_mma(const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
                    uint64_t y_stride, uint32_t n_tok, cudaStream_t s, uint32_t n_mat = 1, uint64_t w_group = 0,
                    uint64_t x_group = 0, uint64_t y_group = 0);

}  // namespace ds4::cuda
