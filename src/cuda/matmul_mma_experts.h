// Routed experts on the tensor cores for multi-token passes (issue 8). The expert matvec
// kernels (matmul_experts, matmul_q8) re-read an expert's weights once per <= 8 of its
// tokens; here one grouped launch covers every active expert of a layer: a block takes
// a 128-row tile of one expert's matrix by up to BN of that expert's tokens, decodes
// the weight super-blocks into int8 mma fragments in registers and multiplies with
// mma.sync m16n8k32 (as matmul_mma.h), so each weight is read once per BN tokens.
//
// Numerics: ds4's (model.md §11.2): the activations are quantized to Q8_K (per 256
// values: d = max/−127 of the signed value of largest magnitude, int8 codes, 16-value
// sums; quantize_q8k_activations, the bits of quant::ref::quantize_q8_K) and each weight
// super-block is dotted with them as ggml's vec_dot_*_q8_K defines: integer sums of
// code × integer sub-scale (IQ2_XXS: 2s + 1 per 32 values, times 1/8 per row; Q2_K: sc
// per 16; Q4_K: sc per 32) and of the K-quants' min × activation, exact in s32, then one
// f32 value per super-block, d·dx·isum − dmin·dx·msum. Only the f32 order of the
// super-block sums differs from the CPU's quant::dot_*_q8_K. The bound against the exact
// f32 path: Σ_i |w_i|·d_x(i)/2 + f32 rounding, d_x(i) the step of x_i's 256-block; a
// (row, token) result depends neither on the other tokens nor on the grouping.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/act_rows.h"
#include "cuda/kernels.h"
#include "gguf/ggml_types.h"

namespace ds4::cuda {

// The forward's default least pass size (tokens) for the expert mma path; decode and
// batches below it take matmul_q8_experts.h (or the exact kernels). $DS4_CUDA_MMA_EXPERTS_MIN
// raises it (never below kMmaExpertsMinTokens), read when a forward opens.
inline constexpr uint32_t kMmaExpertsMinTokens = 16;
uint32_t mma_experts_min_tokens();
void set_mma_experts_min_tokens(uint32_t n_tok);  // at least kMmaExpertsMinTokens
// ... and expert matrices of at least this many weights (the published shape's are 8M;
// the demo model's 64K, too small to be measured here, keep the exact kernels, and with
// them the golden tests' bounds).
inline constexpr uint64_t kMmaExpertsMinValues = uint64_t{1} << 20;

// True when matmul_experts_mma takes slabs of this type with `cols` columns (a multiple
// of 256), row_bytes per row, at `w` (IQ2_XXS: 2-byte aligned, Q2_K: 4, Q4_K: 16, rows
// too) on this device (sm_80+).
bool matmul_experts_mma_supported(GgmlType t, uint64_t cols, uint64_t row_bytes, const void* w);

// Q8_K activations, one record per token, q8k_token_bytes(cols) apart: cols int8 codes,
// then per 256 values 48 bytes {f32 d, int16 bsums[16], 12 unused}. cols a multiple of
// 256; x 16-byte aligned, x_stride a multiple of 4; xq 16-byte aligned.
uint64_t q8k_token_bytes(uint64_t cols);
void quantize_q8k_activations(const float* x, uint64_t x_stride, uint64_t cols, uint32_t n_tok, void* xq,
                              cudaStream_t s, const ActRows& rows = {});  // rows: act_rows.h

// uint32 words of tile scratch matmul_experts_mma needs for up to max_pairs (token,
// expert) pairs over at most max_slots active experts.
uint64_t mma_experts_tile_words(uint32_t max_pairs, uint32_t max_slots);

// The tile list of a grouped launch, on the device: tiles[0] = the count, tiles[2 + 2k],
// [3 + 2k] = (slot, first pair within the slot) of tile k, ceil(count / bn) tiles per
// active slot in slot order (mma_experts_tile_words(max_pairs, max_slots) words hold any
// bn >= 8).
void mma_experts_tiles(const ExpertGroups& g, uint32_t max_slots, uint32_t bn, uint32_t* tiles, cudaStream_t s);

// For each active slot j < *g.n_active (expert e = g.expert[j], pairs g.begin[j] ..
// + g.count[j]): Y0[p] = W0[e] · x̂[p] (and Y1[p] = W1[e] · x̂[p] when w1 is not null),
// W[e] the e-th slab of slab_rows rows, x̂[p] the dequantized record p of xq (from
// quantize_q8k_activations over cols, at least max_pairs records). max_slots bounds
// *g.n_active and max_pairs Σ count (the grid). tiles: mma_experts_tile_words(max_pairs,
// max_slots) device words (scratch, overwritten). No host round trip: capturable.
void matmul_experts_mma(GgmlType type, const void* w0, const void* w1, uint64_t slab_rows, uint64_t cols,
                        const void* xq, float* y0, float* y1, uint64_t y_stride, const ExpertGroups& g,
                        uint32_t max_slots, uint32_t max_pairs, uint32_t* tiles, cudaStream_t s);

}  // namespace ds4::cuda
