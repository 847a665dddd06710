// Routed experts of the small passes (decode and batches under the expert mma threshold,
// matmul_mma_experts.h) through the int8-activation matvec (matmul_q8.h): one grouped
// launch per expert matrix (gate + up in one), the groups read on the device (the
// forward's moe_group: no host round trip, capturable in a graph). A warp takes R rows of
// one active expert's matrix by up to 8 of its tokens and streams them through shared
// memory with double-buffered cp.async over a persistent grid of one wave.
// Numerics: matmul_q8's per-block integer dots (the same int8 words; IQ2_XXS scales a
// block's dot as an integer times 2s + 1, then by d/8 and the activation step), so the
// bound against the exact f32 path is matmul_q8.h's, Σ_i |w_i|·d_x(i)/2 + f32 rounding;
// each (row, token) sums its blocks in one fixed order, so its bits depend neither on
// the other tokens of the pass nor on how they group.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels.h"
#include "gguf/ggml_types.h"

namespace ds4::cuda {

// The forward's default least slab size for this path, as the expert mma path's: the
// demo model's 256 x 256 slabs keep the exact kernels and the golden tests' bits.
inline constexpr uint64_t kQ8ExpertsMinValues = uint64_t{1} << 20;

// True when matmul_experts_q8 takes slabs of this type with `cols` columns at `w`:
// IQ2_XXS, Q2_K or Q4_K, cols a positive multiple of 256, w 2-byte aligned.
bool matmul_experts_q8_supported(GgmlType t, uint64_t cols, const void* w);

// For each active slot j < *g.n_active (expert e = g.expert[j], pairs g.begin[j] ..
// + g.count[j]): Y0[p] = W0[e] · x̂[p] (and Y1[p] = W1[e] · x̂[p] when w1 is not null),
// W[e] the e-th slab of slab_rows rows, x̂[p] record p of xq (quantize_q8_activations
// over cols). max_slots bounds *g.n_active and max_tokens every count (the grid; a pass
// of n tokens: n). No host round trip: capturable.
void matmul_experts_q8(GgmlType type, const void* w0, const void* w1, uint64_t slab_rows, uint64_t cols,
                       const void* xq, float* y0, float* y1, uint64_t y_stride, const ExpertGroups& g,
                       uint32_t max_slots, uint32_t max_tokens, cudaStream_t s);

// The widest token chunk a warp item takes (1, 2, 4 or 8; default kQ8ExpertsMaxChunk):
// an expert's tokens go through in chunks of min(this, the pass's rule) and every choice
// gives a token the same bits. Narrower chunks hold fewer accumulators; a decode batch of
// 8 sequences has ~1 token per active expert (H200, 43 layers, 8 sequences: chunks of 2
// 372-377 t/s, of 8 362-363, of 1 358). Tuning: the forward sets it at open from
// $DS4_CUDA_Q8_EXPERTS_NT.
inline constexpr uint32_t kQ8ExpertsMaxChunk = 2;
void set_q8_experts_max_chunk(uint32_t nt);

}  // namespace ds4::cuda
