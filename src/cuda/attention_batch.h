// The stateful part of attention (§5.4) for all n tokens of a pass in a few launches per
// layer instead of ~5 per token (issue 8). Tokens may belong to different sequences: a
// segment is a run of consecutive positions of one sequence (a prefill chunk: one long
// segment; a decode batch: many of one token). The per-token order is kept exactly:
// token t sees the raw rows of positions ≤ its own (rows of this pass from the pass's
// projections `kvb`, older ones from the ring), the compressed rows emitted at or before
// its position (row counts derived from the segment's first position) and the indexer's
// top k over those. The ring, the compressor frontiers and the row counts are written at
// the end (finish), as the per-token walk would leave them. The arithmetic of every row,
// score and pooled value is the per-token kernels' (attention_common.cuh): bitwise the
// same results. Positions and row counts are device values (CUDA graph capture).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ds4::cuda {

// One compressor of one sequence (device pointers).
struct CompPtrs {
    float* kv = nullptr;       // frontier [coff·ratio][coff·d]
    float* score = nullptr;
    float* rows = nullptr;     // [capacity][d]
    uint32_t* n_rows = nullptr;
    uint32_t capacity = 0;     // rows the cache holds
};
// One sequence's KV state in one layer.
struct SegKv {
    float* raw = nullptr;  // ring [window][hd]
    CompPtrs attn, index;
};
// Per token of the pass: its segment and the segment's first / last token index.
struct TokSeg {
    uint32_t seg = 0, first = 0, last = 0;
};

struct BatchPass {
    uint32_t n = 0, n_seg = 0;
    const TokSeg* tok = nullptr;   // [n]
    const SegKv* seg = nullptr;    // [n_seg], this layer's
    const uint64_t* pos = nullptr; // [n] device positions
};

// Compressor emits of the pass (attn or index compressor of this layer): each token at
// the end of a window pools it into row (count at the pass start + emits before it);
// counts and frontiers are left for batch_attn_finish.
struct BatchComp {
    bool index = false;          // which compressor of SegKv
    const float* kv = nullptr;   // the pass's projections [n][coff·d]
    const float* score = nullptr;
    const float* ape = nullptr;  // [ratio][coff·d]
    const float* norm = nullptr;
    const float* omega = nullptr;
    uint32_t ratio = 0, d = 0, coff = 1, rope_dim = 0;
    float eps = 1e-6f;
};
constexpr uint32_t kBatchMaxSlots = 256;  // coff·ratio candidate slots at most
void batch_compressor_emit(const BatchPass& p, const BatchComp& c, cudaStream_t s);

// The indexer's top k for tokens [t0, t0 + count): scores of token t at
// scores + (t − t0)·score_stride, its choice at sel + t·k (nothing where its row count
// ≤ k). max_rows bounds every token's row count (the grid).
struct BatchIndexer {
    const float* q = nullptr;  // [n][n_heads][d]
    const float* w = nullptr;  // [n][n_heads]
    uint32_t ratio = 0, d = 0, n_heads = 0, k = 0, max_rows = 0;
    float* scores = nullptr;
    uint64_t score_stride = 0;
    uint32_t* sel = nullptr;
};
void batch_indexer_topk(const BatchPass& p, const BatchIndexer& ix, uint32_t t0, uint32_t count, cudaStream_t s);
// The scores of passes of at least batch_indexer_mma() tokens (default kF16MmaMinTokens;
// kIndexerMmaOff with DS4_CUDA_INDEXER_MMA=0) on the tensor cores (indexer_mma.cu): the
// same exact products (FP4 values in bf16), f32 sums in another order, so scores within a
// few ulps of the fast kernels' and near ties of the top k may differ. Process-wide; tests
// lower it. batch_index_scores_mma launches it when it applies (sm_80+, ≤ 64 heads of
// 32, 64 or 128) and says whether it did.
constexpr uint32_t kIndexerMmaOff = ~0u;
void set_batch_indexer_mma(uint32_t min_tokens);
uint32_t batch_indexer_mma();
bool batch_index_scores_mma(const BatchPass& p, const BatchIndexer& ix, uint32_t t0, uint32_t count, cudaStream_t s);

// Every token's attention: one block per (group of up to 8 heads, token), each row value
// loaded once for the group (the tile kernel), or one block per (head, token), with
// bitwise the same results. Scores live in shared memory (cap_rows floats a head:
// batch_attend_fits says whether they fit; where a group's do not, one block per head).
struct BatchAttend {
    const float* q = nullptr;    // [n][n_head][hd]
    const float* kvb = nullptr;  // the pass's raw rows [n][hd]
    const uint32_t* sel = nullptr;  // [n][topk] (indexer layers)
    bool comp = false, index = false;  // the layer has a compressor / an indexer
    uint32_t comp_ratio = 0, topk = 0;  // ratio of the counting compressor
    const float* sinks = nullptr;
    const float* omega = nullptr;
    uint64_t cap_rows = 0;
    float* out = nullptr;  // [n][n_head][hd]
    uint32_t n_head = 0, hd = 0, rope_dim = 0, window = 0;
};
bool batch_attend_fits(uint32_t hd, uint64_t cap_rows);
void batch_attend(const BatchPass& p, const BatchAttend& a, cudaStream_t s);
// Which kernel: groups of up to max_heads heads (8, 4 or 2; 0: one block per head, as
// DS4_CUDA_ATTN_TILE=0 sets) where that still gives min_blocks blocks (kTileAuto: the
// largest group whatever the block count. H200, 43 layers at ctx 512: 2 sequences 167
// t/s with 16 blocks of 8 heads against 129 with 128 of one head, 8 sequences 358 against
// 308; the rule was two blocks per SM). Process-wide; tests force each kernel;
// DS4_CUDA_ATTN_TILE_BLOCKS=N sets min_blocks at Forward open.
constexpr uint32_t kTileAuto = ~0u;
struct TileConfig {
    uint32_t max_heads = 8, min_blocks = kTileAuto;
};
void set_batch_attend_tile(const TileConfig& c);
TileConfig batch_attend_tile();

// Passes of at least batch_attend_mma() tokens (default kF16MmaMinTokens; kAttendMmaOff
// with DS4_CUDA_ATTN_MMA=0) take the tensor-core kernel (attention_mma.cu): bf16 hi/lo
// products with f32 sums, within ~1e-5 of the kernels above but not bitwise; decode
// batches (one token a sequence) from min(that, kAttendMmaDecodeMinTokens). Process-wide;
// tests move it. batch_attend_mma_launch launches it when it applies (sm_80+, head widths
// 64-512, some head group's scores fit) and says whether it did. Decode from 32: H200, 43
// layers at ctx 512, 32 sequences 708 t/s against 689 with the 8-head tile kernel, 64
// sequences 967-971 against 912-939; at 2 and 8 sequences both ran the same.
constexpr uint32_t kAttendMmaDecodeMinTokens = 32;
constexpr uint32_t kAttendMmaOff = ~0u;
void set_batch_attend_mma(uint32_t min_tokens);
uint32_t batch_attend_mma();
bool batch_attend_mma_launch(const BatchPass& p, const BatchAttend& a, cudaStream_t s);

// After the layer's reads: the ring rows of each segment's last `window` positions, the
// frontiers (the last window's slots, the previous window's after an emit) and the row
// counts, as the per-token walk leaves them.
struct BatchFinish {
    const float* kvb = nullptr;
    uint32_t hd = 0, window = 0;
    BatchComp attn, index;  // ratio 0: absent
};
void batch_attn_finish(const BatchPass& p, const BatchFinish& f, cudaStream_t s);

}  // namespace ds4::cuda
