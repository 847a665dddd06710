// Routed experts of long passes on wgmma (issue 8, prefill; sm_90a, matmul_wgmma.h's
// machinery). matmul_experts_mma (matmul_mma_experts.h) decodes every weight into int8
// fragments per 128-token tile and scales each 32- or 16-value block's integer dot per
// mma (~20 instructions per mma.sync, H200 ncu: ~230 int8 TOPS). Here a block decodes a
// 128-row by 64-column tile of one expert's slab into f16 in shared memory while the
// tensor cores multiply the previous one with up to 256 of that expert's pairs.
//
// Numerics: each weight is f16 of its exact dequantized value (one rounding; IQ2_XXS
// computed as f16(d · ((2s + 1) · grid)) with its 1/8 applied to the sums, exactly), the
// activations f16(x · 2^e) with one power of two per (token, expert) row (the dense half
// path's, matmul_mma.h), f32 sums. So the dense half path's bound holds against the exact
// f32 product, |y − y_exact| ≤ 2^−10 · Σ|w·x|: tighter than the int8 path's Q8_K
// activation rounding. A (row, pair) result depends neither on the other pairs nor on the
// grouping.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/act_rows.h"
#include "cuda/kernels.h"
#include "gguf/ggml_types.h"

namespace ds4::cuda {

// True when matmul_experts_wgmma takes this type (IQ2_XXS, Q2_K) with `cols` columns (a
// multiple of 256) and 2-byte (IQ2_XXS) / 4-byte (Q2_K) aligned rows at w, on this device.
bool experts_wgmma_supported(GgmlType t, uint64_t cols, uint64_t row_bytes, const void* w);
// Whether the forward takes it for this type: opt-in, $DS4_CUDA_WGMMA_EXPERTS=1 (both
// types) or =q2k (Q2_K only). Off by default: faster per kernel in ncu, slower end to end
// (H200, 43 layers, prefill to 8k in one call: 3788 t/s with both, 4077 with Q2_K only,
// 4128 with the int8 mma.sync kernels; ncu, 4 layers, 8192 tokens: IQ2_XXS gate + up 27.4
// vs 28.3 ms, Q2_K down 12.8 vs 17.3 ms).
bool experts_wgmma_opted_in(GgmlType t);

// Half activations of n rows: f16(x · 2^e) in column order, e per row such that its
// largest |x| lands in [2^14, 2^15), then 2^−e per row (f32). rows: act_rows.h (row i of
// x by index, or the weighted SwiGLU; rows past *m_dev are skipped). cols a multiple of 256.
uint64_t half_rows_bytes(uint64_t cols, uint32_t n);
void quantize_half_rows(const float* x, uint64_t x_stride, uint64_t cols, uint32_t n, void* xh,
                        cudaStream_t s, const ActRows& rows = {});

// matmul_experts_mma's contract (its grouping g, slabs, tile scratch) with xh from
// quantize_half_rows over cols and xh_rows >= max_pairs rows.
void matmul_experts_wgmma(GgmlType type, const void* w0, const void* w1, uint64_t slab_rows,
                          uint64_t cols, const void* xh, uint32_t xh_rows, float* y0, float* y1,
                          uint64_t y_stride, const ExpertGroups& g, uint32_t max_slots,
                          uint32_t max_pairs, uint32_t* tiles, cudaStream_t s);

}  // namespace ds4::cuda
