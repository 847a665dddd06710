// CUDA kernels of the forward pass, as host-callable launchers on a stream. All
// pointers are device pointers; shapes follow the CPU backend (src/cpu/numerics.h,
// src/cpu/matvec.h) so that each kernel is tested against its CPU twin.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "gguf/ggml_types.h"

namespace ds4::cuda {

// ---- quantized matrix-vector / small-batch matrix products ----

// True for the weight types matmul() handles: F32, F16, Q8_0, Q2_K, Q4_K, IQ2_XXS.
bool matmul_supported(GgmlType t);

// Y[t][r] = W[r] · X[t] for r < rows, t < n_tok. W holds `rows` rows of `cols` values in
// GGUF layout (ggml_row_bytes(type, cols) bytes each, cols a multiple of 256, 4-byte
// aligned start); X is n_tok rows of f32 (16-byte aligned, x_stride a multiple of 4), Y
// n_tok rows with stride y_stride. Weights are dequantized in registers and dotted with
// f32 activations (f32 accumulation), 2-4 rows per warp; up to 8 tokens share one pass
// over the weights. Throws ds4::Error for other shapes or types.
void matmul(GgmlType type, const void* w, uint64_t rows, uint64_t cols, const float* x,
            uint64_t x_stride, float* y, uint64_t y_stride, uint32_t n_tok, cudaStream_t s);

// n_mat products of one shape side by side: Y_g = W_g · X_g, W_g the g-th block of `rows`
// rows of W, X_g = x + g·x_group, Y_g = y + g·y_group (the grouped low-rank attention
// output). One launch where matmul_groups_fused says so (matmul()'s small-matrix kernel,
// the same bits as n_mat matmul() calls), else n_mat matmul() calls.
bool matmul_groups_fused(GgmlType t, uint64_t rows, uint64_t cols);
void matmul_groups(GgmlType type, const void* w, uint64_t rows, uint64_t cols, uint32_t n_mat, const float* x,
                   uint64_t x_stride, uint64_t x_group, float* y, uint64_t y_stride, uint64_t y_group,
                   uint32_t n_tok, cudaStream_t s);

// Several matrices of one type and column count times the same activations X (n_tok rows of
// x_stride), e.g. the projections that read one norm: the parts that take matmul()'s
// few-rows (split) kernel share one launch per token chunk, the others get one matmul()
// each; every part's Y (its own stride) is bitwise equal to its own matmul() call.
struct MatProduct {
    const void* w = nullptr;
    uint64_t rows = 0;
    float* y = nullptr;
    uint64_t y_stride = 0;
};
void matmul_multi(GgmlType type, std::span<const MatProduct> parts, uint64_t cols, const float* x, uint64_t x_stride,
                  uint32_t n_tok, cudaStream_t s);

// ---- dense Q8_0 matrices in a GPU-friendly row layout (decode speed) ----

// Q8_0 rows rewritten in place, same bytes per row (34 per 32 values, so row r still
// starts at r · ggml_row_bytes), as the row's int8 codes (interleaved per span of 512
// columns, 256 when cols is not a multiple of 512) followed by its f16 scales: one
// 16-byte load per lane brings codes whose activations a warp reads contiguously. Only
// matmul_q8r reads such rows. q8r_applies: type Q8_0, cols a multiple of 256 up to
// 32768, and DS4_CUDA_Q8R is not "0" (the switch to keep GGUF rows and matmul()).
bool q8r_applies(GgmlType t, uint64_t cols);
// In place on the device (w 16-byte aligned, `rows` GGUF Q8_0 rows of `cols` values): no
// second copy. Not idempotent: each matrix is repacked once.
void q8r_repack(void* w, uint64_t rows, uint64_t cols, cudaStream_t s);
// matmul() for repacked Q8_0 rows (w 16-byte aligned), same contract and exact-path
// arithmetic (codes dequantized to f32, f32 activations and sums); a token's results do
// not depend on the other tokens of the call. Exception: passes of 2+ tokens through a
// matrix that q8r_tc_takes go to the tensor cores (matmul_q8r_tc.h: f16 activations,
// within 2^-10 · Σ|w·x|; off with DS4_CUDA_Q8T=0), matmul_q8r_multi's parts likewise. matmul_q8r_groups: matmul_groups' n_mat
// products in one launch, each bitwise equal to its own matmul_q8r call.
void matmul_q8r(const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
                uint64_t y_stride, uint32_t n_tok, cudaStream_t s);
void matmul_q8r_groups(const void* w, uint64_t rows, uint64_t cols, uint32_t n_mat, const float* x,
                       uint64_t x_stride, uint64_t x_group, float* y, uint64_t y_stride, uint64_t y_group,
                       uint32_t n_tok, cudaStream_t s);
// Several repacked matrices of `cols` columns times the same activations X (n_tok rows of
// x_stride) in one launch per token chunk (decode: the projections that read one norm);
// each part's Y (its own stride) bitwise equal to its own matmul_q8r call. Parts whose
// shapes split rows differently (kernels.h's W) go to separate launches.
struct Q8rProduct {
    const void* w = nullptr;
    uint64_t rows = 0;
    float* y = nullptr;
    uint64_t y_stride = 0;
};
void matmul_q8r_multi(std::span<const Q8rProduct> parts, uint64_t cols, const float* x, uint64_t x_stride,
                      uint32_t n_tok, cudaStream_t s);

// Routed experts grouped on the device (no host round trip): slot i < *n_active names
// expert expert[i] and its activation rows [begin[i], begin[i] + count[i]). Filled by
// moe_group() (forward_kernels.h).
struct ExpertGroups {
    const uint32_t* expert = nullptr;
    const uint32_t* begin = nullptr;
    const uint32_t* count = nullptr;
    const uint32_t* n_active = nullptr;
};
// True when matmul_experts takes experts of slab_rows x cols of this type.
bool matmul_experts_supported(GgmlType t, uint64_t cols, uint64_t slab_rows);
// For each active slot: Y0[j] = W0[e] · X[j] (and Y1[j] = W1[e] · X[j] when w1 is not
// null) for its activation rows j, W[e] the e-th slab of slab_rows rows (3-D expert
// tensor, e < n_slabs). max_slots bounds *n_active (the grid), max_tokens each count
// (1 selects a batch-1 kernel); each (row, token) gets the many-rows matmul() kernel's
// arithmetic, so results do not depend on how tokens group.
void matmul_experts(GgmlType type, const void* w0, const void* w1, uint64_t slab_rows, uint32_t n_slabs,
                    uint64_t cols, const float* x, uint64_t x_stride, float* y0, float* y1, uint64_t y_stride,
                    const ExpertGroups& g, uint32_t max_slots, uint32_t max_tokens, cudaStream_t s);

// ---- element-wise ops (model.md §3, §4.3) ----

// out[r] = w ⊙ (x[r] · rms_inv(x[r])) for n_rows rows of n values (w may be null: no
// weight). out may equal x. The mean of squares is summed in double, as on the CPU.
void rms_norm(const float* x, const float* w, float* out, uint32_t n, uint32_t n_rows, float eps,
              cudaStream_t s);

// Rotates the rd = 2·half values starting at x + v·stride (v < n_vec) by θ_j = f32(pos)·ω_j
// (adjacent pairs, GPT-J style); inverse uses −θ. omega: `half` device floats.
void rope(float* x, uint32_t n_vec, uint64_t stride, const float* omega, uint32_t half, uint64_t pos,
          bool inverse, cudaStream_t s);

// In place FP8 E4M3 simulation in 64-blocks / FP4 E2M1 in 32-blocks (n multiple of the block).
void fp8_simulate(float* x, uint64_t n, cudaStream_t s);
void fp4_simulate(float* x, uint64_t n, cudaStream_t s);

// x[v] ← (x[v]·H_n)·n^-1/2 for n_vec vectors of n values (n a power of two ≤ 1024).
void hadamard_scaled(float* x, uint32_t n, uint32_t n_vec, cudaStream_t s);

// n_mat independent h×h Sinkhorn normalisations (cpu::sinkhorn), h ≤ 16.
void sinkhorn(float* c, uint32_t h, uint32_t iters, float eps, uint32_t n_mat, cudaStream_t s);

// out[i] = silu(min(g, L)) · clamp(u, −L, L) (no clamp when L ≤ 0).
void swiglu_clamp(const float* g, const float* u, float* out, uint64_t n, float limit, cudaStream_t s);

// Per head h: p_i = e^(s_i − m) / (Σ_j e^(s_j − m) + e^(sink_h − m)), m = max_i s_i (the
// sink joins only the denominator), in place on n_head rows of n scores.
void softmax_sinks(float* scores, const float* sinks, uint32_t n, uint32_t n_head, cudaStream_t s);

}  // namespace ds4::cuda
