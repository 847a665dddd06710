// Launchers for the whole-model CUDA forward pass (cuda/forward.h): the fused per-token
// steps that have no single CPU twin in kernels.h (hyper-connection pre/post, compressor
// step, indexer selection, attention over the raw window + compressed rows, routing, MoE
// gather/scatter) and a generic matrix product for the shapes kernels.h's matmul() does
// not take. Each follows the order of operations of src/cpu (forward.cpp, attention.cpp,
// moe.cpp) so CUDA and CPU agree to rounding. All pointers are device pointers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "gguf/ggml_types.h"

namespace ds4::cuda {

// ---- generic matrix product (any cols; F32, F16, BF16, Q8_0) ----
bool matmul_any_supported(GgmlType t);
// Y[t][r] = W[row0 + r] · X[t] for r < rows, t < n_tok; row_bytes is one weight row.
void matmul_any(GgmlType type, const void* w, uint64_t row_bytes, uint64_t rows, uint64_t cols,
                const float* x, uint64_t x_stride, float* y, uint64_t y_stride, uint32_t n_tok,
                cudaStream_t s);

// ---- hyper-connections (model.md §4.2–§4.4, §4.7) ----
struct HcShape {
    uint32_t H = 4;       // streams
    uint32_t dim = 0;     // n_embd
    uint32_t iters = 20;  // Sinkhorn
    float norm_eps = 1e-6f, hc_eps = 1e-6f;
};
// hc_pre's kernels: automatic takes the register kernel where the shape has one (4 streams
// of 2048-4096 values: the model), one_block the plain one-block-per-token kernel (the
// reference the tests compare the other with: the same bits).
enum class HcPrePath { automatic, one_block };
// From mix (n × (2+H)·H, = fn·x), x (n × H·dim): pre/post (n × H), comb (n × H·H, after
// Sinkhorn) and u = Σ_h pre[h]·X[h] (n × dim). x must not overlap the outputs.
void hc_pre(const HcShape& sh, const float* x, const float* mix, const float* scale, const float* base,
            float* pre, float* post, float* comb, float* u, uint32_t n, cudaStream_t s,
            HcPrePath path = HcPrePath::automatic);
// hc_pre, then rms_norm(u, norm_w, nrm, dim, n, eps) in the same launch, the same bits.
void hc_pre_norm(const HcShape& sh, const float* x, const float* mix, const float* scale, const float* base,
                 float* pre, float* post, float* comb, float* u, const float* norm_w, float* nrm, float eps, uint32_t n,
                 cudaStream_t s, HcPrePath path = HcPrePath::automatic);
// x[b] ← post[b]·f + Σ_a comb[a][b]·x[a], in place, n tokens.
void hc_post(const HcShape& sh, float* x, const float* f, const float* post, const float* comb, uint32_t n,
             cudaStream_t s);
// hc_post with f = fa + fb (add_values then hc_post in one launch, the same bits).
void hc_post_add(const HcShape& sh, float* x, const float* fa, const float* fb, const float* post, const float* comb,
                 uint32_t n, cudaStream_t s);
// The routed experts' per-token sum as moe_sum makes it: Σ_{j < tok_count[t]} ex[rows[t·K + j]].
struct MoeSumRows {
    const float* ex = nullptr;
    const uint32_t *rows = nullptr, *tok_count = nullptr;
    uint32_t K = 0;
};
// hc_post_add with fa = that sum (moe_sum then hc_post_add in one launch, the same bits).
void hc_post_moe_add(const HcShape& sh, float* x, const MoeSumRows& fa, const float* fb, const float* post,
                     const float* comb, uint32_t n, cudaStream_t s);
// The head's collapse of n rows: out = Σ_h (sigmoid(mix_h·rms_inv·scale0 + base_h) + eps)·X[h].
// x rows at x + row_index[i]·H·dim; mix (n × H); out (n × dim).
void hc_collapse(const HcShape& sh, const float* x, const uint32_t* row_index, const float* mix,
                 const float* scale, const float* base, float* out, uint32_t n, cudaStream_t s);

// ---- attention pieces (model.md §4.5) ----
// Rotates, for token t < n_tok and vector v < n_vec, the rd = 2·half values at
// x + t·tok_stride + v·vec_stride + offset by θ_j = f32(positions[t])·ω_j (inverse: −θ).
// positions: n_tok device values (tokens of several sequences may share a launch).
void rope_tokens(float* x, uint32_t n_tok, uint64_t tok_stride, uint32_t n_vec, uint64_t vec_stride,
                 uint64_t offset, const float* omega, uint32_t half, const uint64_t* positions, bool inverse,
                 cudaStream_t s);
// (decode, issue 8) rms_norm(x, w, x, n, n_rows), then rope_tokens on the last 2·half values
// of each row (row i of token i / vec_per_tok, forward rotation), then fp8_rows on the
// first fp8_len (0: none) in one launch, bitwise equal to the three launches.
void norm_rope_rows(float* x, const float* w, uint32_t n, uint32_t n_rows, float eps, uint32_t vec_per_tok,
                    const float* omega, uint32_t half, const uint64_t* positions, uint32_t fp8_len, cudaStream_t s);
// Two such buffers in one launch (same bits as two norm_rope_rows): half = 0 and
// fp8_len = 0 make a segment rms_norm(x, w, x) alone. Two launches when rms_norm would
// give the two rows different block sizes.
struct NormRope {
    float* x = nullptr;
    const float* w = nullptr;
    const float* omega = nullptr;
    uint32_t n = 0, n_rows = 0, vec_per_tok = 1, half = 0, fp8_len = 0;
    // one row (n_rows 1) only: the finished row is also stored in this raw ring of
    // `window` rows at slot positions[0] % window (store_raw_row's copy, one launch less)
    float* ring = nullptr;
    uint32_t window = 0;
};
void norm_rope_pair(const NormRope& a, const NormRope& b, float eps, const uint64_t* positions, cudaStream_t s);
// (issue 8) 1024+ rows below 2048 values take one warp each (the same bits as a block per
// row, which off = false restores; for tests).
void set_norm_rope_warp(bool on);
// The indexer queries (§6), n_tok · n_vec vectors of d (≤ 1024, a power of two): RoPE of the
// last 2·half values (rope_tokens), Hadamard (hadamard_scaled), FP4 (fp4_simulate) in one
// launch, the same bits.
void rope_hadamard_fp4(float* x, uint32_t n_tok, uint32_t n_vec, uint32_t d, const float* omega, uint32_t half,
                       const uint64_t* positions, cudaStream_t s);
// FP8 simulation of the first `len` values (a multiple of 64) of n_rows rows of `stride`.
void fp8_rows(float* x, uint32_t n_rows, uint64_t stride, uint32_t len, cudaStream_t s);
// x[i] *= k for i < n.
void scale_values(float* x, uint64_t n, float k, cudaStream_t s);
// y[i] = a[i] + b[i].
void add_values(const float* a, const float* b, float* y, uint64_t n, cudaStream_t s);

// One compressor step (cpu::CpuForward::compressor_step) of one token at position
// *pos: writes the slot, and when (*pos + 1) % ratio == 0 pools the window into row
// *n_rows of `rows` and increments *n_rows. Position and row count are device values,
// so one launch (and a captured graph of it) serves every position.
struct CompressorStep {
    float* state_kv = nullptr;     // [coff·ratio][coff·d]
    float* state_score = nullptr;  // [coff·ratio][coff·d]
    const float* kv = nullptr;     // this token's projections [coff·d]
    const float* score = nullptr;
    const float* ape = nullptr;    // [ratio][coff·d]
    const float* norm = nullptr;   // [d]
    const float* omega = nullptr;  // compressed-layer RoPE frequencies
    float* rows = nullptr;         // [capacity][d]; row *n_rows written only on emit
    uint32_t* n_rows = nullptr;    // device row count (incremented on emit)
    const uint64_t* pos = nullptr; // device position of the token
    uint32_t ratio = 0, d = 0, coff = 1, rope_dim = 0, capacity = 0;
    float eps = 1e-6f;
    bool indexer = false;          // Hadamard + FP4 instead of FP8
};
void compressor_step(const CompressorStep& c, cudaStream_t s);

// Indexer (§6): score_c = Σ_h w_h·relu(q_h·k_c) for c < n = *n_rows, then the top k with
// ties to the lower row written to sel[0..k) (in rank order); nothing when n ≤ k (the
// attention then takes all rows). max_rows (≥ n) only bounds the grid. scores: n scratch.
void indexer_topk(const float* q, const float* w, const float* rows, const uint32_t* n_rows, uint32_t max_rows,
                  uint32_t d, uint32_t n_heads, uint32_t k, float* scores, uint32_t* sel, cudaStream_t s);

// row → raw[*pos % window] (hd values): the ring slot of the token's raw KV row.
void store_raw_row(float* raw, const float* row, uint32_t hd, uint32_t window, const uint64_t* pos,
                   cudaStream_t s);

// One token's attention for every head: rows are the raw window (positions
// max(0, p+1−W)..p of the ring `raw`, slot q % W, p = *pos) then the compressed rows of
// `comp`: with n = *n_comp (0 when null), the rows comp_sel[0..topk) when comp_sel is
// set and n > topk, else rows 0..n−1; softmax with the sink in the denominator; output
// rotated back (inverse RoPE at p) on its last rope_dim values.
struct AttendToken {
    const float* q = nullptr;   // [n_head][hd]
    const float* raw = nullptr; // [W][hd]
    const float* comp = nullptr;
    const uint32_t* comp_sel = nullptr;
    const uint32_t* n_comp = nullptr;  // device row count of comp
    uint32_t topk = 0;
    const float* sinks = nullptr;
    const float* omega = nullptr;
    float* scores = nullptr;    // [n_head][cap_rows] scratch
    uint64_t cap_rows = 0;
    float* out = nullptr;       // [n_head][hd]
    uint32_t n_head = 0, hd = 0, rope_dim = 0, window = 0;
    const uint64_t* pos = nullptr;  // device position of the token
};
void attend_token(const AttendToken& a, cudaStream_t s);
// (issue 8) attend_token's kernels, all with the same bits: one block per head, two per
// head (columns split), or head groups (scores by row blocks, then the weighted sums by
// column blocks; the default). DS4_CUDA_ATTEND_SPLIT=0: one block per head;
// DS4_CUDA_ATTEND_GROUP=0: the column split.
enum class AttendMode { OneBlock, Split, Group };
void set_attend_mode(AttendMode m);
// The head-group scores' rows per block (4, 8 or 16; 0: the most rows-per-block that
// still leaves one wave of resident blocks fewer than 4; same bits for any value). Tuning:
// the forward sets it at open from $DS4_CUDA_ATTN_GROUP_ROWS.
void set_attend_group_rows(uint32_t rows);

// ---- MoE (§4.6) ----
// probs ← sqrt(softplus(probs)) (n × E); then per token the K experts (hash: tid2eid
// [token][K]; else the top K of p + bias, ties to the lower id, in descending order) and
// their weights p / Σp · route_scale into sel / sel_w (n × K).
void route(float* probs, const float* bias, const int32_t* tid2eid, const int32_t* tokens, uint32_t n,
           uint32_t E, uint32_t K, float route_scale, bool hash, uint32_t* sel, float* sel_w,
           cudaStream_t s);
// out[i] = x[src[i]] (rows of `dim`), i < m (and i < *m_dev when m_dev is not null: m
// then only bounds the grid).
void gather_rows(const float* x, const uint32_t* src, float* out, uint32_t m, uint32_t dim, cudaStream_t s,
                 const uint32_t* m_dev = nullptr);
// g[i][j] ← w[widx[i]] · silu(min(g, L))·clamp(u, −L, L)  for i < m (and < *m_dev), j < ff.
void weighted_swiglu(float* g, const float* u, const float* w, const uint32_t* widx, uint32_t m, uint32_t ff,
                     float limit, cudaStream_t s, const uint32_t* m_dev = nullptr);
// The routed experts' grouping, made on the device from the router's choice (no host
// round trip): pairs (t, k) in ascending expert id, tokens ascending within an expert,
// an expert listed twice for a token counted once. Arrays (device, sized for n tokens ×
// K experts of E): src/widx/pos_of [n·K] (pair → token, → t·K + k; (t, k) → pair),
// rows [n·K] + tok_count [n] (token t's pairs in ascending expert id), expert/begin/count
// [E] per active slot, n_active [1], n_pairs [1].
struct MoeGroups {
    uint32_t *src = nullptr, *widx = nullptr, *pos_of = nullptr, *rows = nullptr, *tok_count = nullptr;
    uint32_t *expert = nullptr, *begin = nullptr, *count = nullptr, *n_active = nullptr, *n_pairs = nullptr;
};
void moe_group(const uint32_t* sel, uint32_t n, uint32_t K, uint32_t E, const MoeGroups& g, cudaStream_t s);
// route then moe_group (one launch for passes of at most 32 pairs; the same outputs).
void route_group(float* probs, const float* bias, const int32_t* tid2eid, const int32_t* tokens, uint32_t n,
                 uint32_t E, uint32_t K, float route_scale, bool hash, uint32_t* sel, float* sel_w, const MoeGroups& g,
                 cudaStream_t s);
// moe[t] = Σ ex[row] over token t's pair rows in ascending expert id (scatter_sum's order).
void moe_sum(const float* ex, const MoeGroups& g, uint32_t n, uint32_t K, float* moe, uint32_t dim,
             cudaStream_t s);
// moe[t] = Σ_{i in pairs of t, in order} rows[i]: pair_begin (n + 1) indexes pair_rows.
void scatter_sum(const float* rows, const uint32_t* pair_begin, const uint32_t* pair_rows, float* moe, uint32_t n,
                 uint32_t dim, cudaStream_t s);

}  // namespace ds4::cuda
