// The indexer's per-token top k for long contexts (issue 8; indexer_fast.cu): the same
// scores (bitwise) and the same selection in the same order as indexer_topk's first
// version. DS4_CUDA_INDEXER_FAST=0 (or set_indexer_fast(false)) turns it off.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace ds4::cuda {

constexpr uint32_t kIndexerFastMaxK = 1024;  // the sorted winners live in shared memory

void set_indexer_fast(bool on);
bool indexer_fast();
// Whether indexer_topk takes the fast kernels for these shapes (q in 48 KiB of shared
// memory, k ≤ kIndexerFastMaxK).
bool indexer_fast_applies(uint32_t max_rows, uint32_t d, uint32_t n_heads, uint32_t k);
// The score kernels' blocks per token for max_rows rows and `tokens` tokens (a few blocks
// per SM over all tokens, at least one a token) and their shared memory.
unsigned indexer_score_blocks(uint32_t max_rows, uint32_t tokens = 1);
size_t indexer_score_bytes(uint32_t d, uint32_t n_heads);
// indexer_topk's contract (forward_kernels.h), for shapes where indexer_fast_applies.
void indexer_topk_fast(const float* q, const float* w, const float* rows, const uint32_t* n_rows,
                       uint32_t max_rows, uint32_t d, uint32_t n_heads, uint32_t k, float* scores,
                       uint32_t* sel, cudaStream_t s);

}  // namespace ds4::cuda
