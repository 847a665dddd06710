// Batched attention state kernels (attention_batch.h): the per-token kernels' arithmetic
// (attention_common.cuh) with the rows of this pass read from the pass's projections and
// older ones from the sequence's ring / frontier, which are written only at the end.
#include "cuda/attention_batch.h"
#include "cuda/attention_common.cuh"
#include "cuda/attention_rows.cuh"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/pdl.cuh"
#include "cuda/env_switch.h"
#include "cuda/indexer_fast.h"
#include "cuda/indexer_select.cuh"
#include "ds4/error.h"


namespace ds4::cuda {
namespace {

using attn::kMaxD;
using attn::index_rows;
using attn::rows_after;
using attn::TokRows;

__device__ const CompPtrs& comp_of(const SegKv& k, bool index) { return index ? k.index : k.attn; }

// One block per token; only tokens at the end of a window work. Slot s of the candidate
// window (the previous window first when overlapping) is position q: a row of this pass
// when q ≥ pos0, else a slot of the frontier as it stood before the pass.
__global__ void __launch_bounds__(kMaxD) emit_kernel(BatchPass p, BatchComp c) {
    dev::pdl_wait_and_release();
    __shared__ float row[kMaxD];
    __shared__ const float* skv[kBatchMaxSlots];
    __shared__ const float* ssc[kBatchMaxSlots];
    __shared__ const float* sape[kBatchMaxSlots];
    const uint32_t t = blockIdx.x, r = c.ratio, d = c.d, width = c.coff * d;
    const bool overlap = c.coff == 2;
    const uint64_t pos = p.pos[t];
    if ((pos + 1) % r != 0) return;  // uniform over the block
    const TokSeg ts = p.tok[t];
    const uint64_t pos0 = p.pos[ts.first];
    const CompPtrs& cp = comp_of(p.seg[ts.seg], c.index);
    const uint32_t n0 = *cp.n_rows;
    const uint64_t emits = (pos + 1) / r - pos0 / r;  // ≥ 1: this one included
    if (n0 + emits - 1 >= cp.capacity) return;
    const auto n_row = static_cast<uint32_t>(n0 + emits - 1);
    const uint32_t n_cand = overlap ? 2 * r : r;
    const bool same_window = pos / r == pos0 / r;  // the pass began inside this window
    for (uint32_t s = threadIdx.x; s < n_cand; s += blockDim.x) {
        // position of slot s: pos + 1 − n_cand + s (may precede position 0: frontier)
        const int64_t q = static_cast<int64_t>(pos + 1) - n_cand + s;
        if (q >= static_cast<int64_t>(pos0)) {
            const uint64_t tq = ts.first + (static_cast<uint64_t>(q) - pos0);
            skv[s] = c.kv + tq * width;
            ssc[s] = c.score + tq * width;
            sape[s] = c.ape + uint64_t{s % r} * width;
        } else {
            // the current window's slots hold it; the previous window's too, unless the
            // pass began in this window (then the previous-window slots do)
            const uint32_t slot = overlap && s < r && !same_window ? r + s : s;
            skv[s] = cp.kv + uint64_t{slot} * width;
            ssc[s] = cp.score + uint64_t{slot} * width;
            sape[s] = nullptr;
        }
    }
    __syncthreads();
    const auto col = [&](uint32_t s, uint32_t j) { return overlap && s >= r ? d + j : j; };
    attn::pool_columns(
        row, d, n_cand, [&](uint32_t s, uint32_t j) { return skv[s][col(s, j)]; },
        [&](uint32_t s, uint32_t j) {
            const uint32_t k = col(s, j);
            return sape[s] != nullptr ? ssc[s][k] + sape[s][k] : ssc[s][k];
        });
    __syncthreads();
    const attn::FinishParams fp{c.norm, c.omega, d, r, c.rope_dim, c.eps, c.index};
    attn::compressor_finish(row, fp, pos, cp.rows + uint64_t{n_row} * d);
}

// grid (row warps, tokens): one warp per (row, token).
__global__ void batch_index_scores_kernel(BatchPass p, BatchIndexer ix, uint32_t t0) {
    dev::pdl_wait_and_release();
    const uint32_t t = t0 + blockIdx.y;
    const uint32_t c = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    const TokSeg ts = p.tok[t];
    const uint32_t n = index_rows(p, ix.ratio, ts, t);
    if (n <= ix.k || c >= n) return;
    const float s = attn::indexer_score(ix.q + uint64_t{t} * ix.n_heads * ix.d, ix.w + uint64_t{t} * ix.n_heads,
                                        p.seg[ts.seg].index.rows + uint64_t{c} * ix.d, ix.d, ix.n_heads);
    if (lane == 0) ix.scores[blockIdx.y * ix.score_stride + c] = s;
}

__global__ void batch_topk_kernel(BatchPass p, BatchIndexer ix, uint32_t t0) {
    dev::pdl_wait_and_release();
    const uint32_t t = t0 + blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;
    const TokSeg ts = p.tok[t];
    const uint32_t n = index_rows(p, ix.ratio, ts, t);
    if (n <= ix.k || c >= n) return;
    const uint32_t rank = attn::topk_rank(ix.scores + blockIdx.y * ix.score_stride, n, ix.k, c);
    if (rank < ix.k) ix.sel[uint64_t{t} * ix.k + rank] = c;
}

// indexer_select.cuh's scores and top k per token (grid.y): the same bits as the two
// kernels above (issue 8: they read every row n times per token at long context).
template <uint32_t G>
__global__ void __launch_bounds__(ixf::kScoreWarps * 32)
    batch_index_scores_fast_kernel(BatchPass p, BatchIndexer ix, uint32_t t0) {
    dev::pdl_wait_and_release();
    extern __shared__ float qs[];
    const uint32_t t = t0 + blockIdx.y;
    const TokSeg ts = p.tok[t];
    const uint32_t n = index_rows(p, ix.ratio, ts, t);
    if (n <= ix.k || blockIdx.x * ixf::kScoreWarps >= n) return;  // uniform over the block
    ixf::score_rows<G>(qs, ix.q + uint64_t{t} * ix.n_heads * ix.d, ix.w + uint64_t{t} * ix.n_heads,
                       p.seg[ts.seg].index.rows, n, ix.d, ix.n_heads, ix.scores + blockIdx.y * ix.score_stride,
                       blockIdx.x, gridDim.x);
}

__global__ void __launch_bounds__(ixf::kSelectThreads) batch_select_kernel(BatchPass p, BatchIndexer ix, uint32_t t0) {
    dev::pdl_wait_and_release();
    __shared__ ixf::SelectShared sh;
    const uint32_t t = t0 + blockIdx.y;
    const TokSeg ts = p.tok[t];
    const uint32_t n = index_rows(p, ix.ratio, ts, t);
    if (n > ix.k) ixf::select_topk(sh, ix.scores + blockIdx.y * ix.score_stride, n, ix.k, ix.sel + uint64_t{t} * ix.k);
}


// grid (heads, tokens). Raw row i of the token's window is position q = pos+1−n_raw+i:
// the ring's slot q % W before the pass (q < pos0: no row of this pass has overwritten
// it, since every later one is ≥ q + W > pos), else the pass's row.
__global__ void batch_attend_kernel(BatchPass p, BatchAttend a) {
    dev::pdl_wait_and_release();
    extern __shared__ float sc[];
    __shared__ float qs[kMaxD];
    __shared__ float fshared[32];
    const uint32_t h = blockIdx.x, t = blockIdx.y, hd = a.hd, window = a.window;
    const TokSeg ts = p.tok[t];
    const SegKv& kv = p.seg[ts.seg];
    const uint64_t pos = p.pos[t], pos0 = p.pos[ts.first];
    // the row sources in registers (the row loops below call row() per row and value)
    const float* const raw = kv.raw;
    uint32_t n_comp = 0;
    const float* comp = nullptr;
    const uint32_t* sel = nullptr;
    if (a.comp) {
        comp = kv.attn.rows;
        const CompPtrs& cnt = a.index ? kv.index : kv.attn;
        n_comp = rows_after(*cnt.n_rows, pos0, pos, a.comp_ratio, cnt.capacity);
        if (a.index && n_comp > a.topk) {  // the indexer chose topk rows
            sel = a.sel + uint64_t{t} * a.topk;
            n_comp = a.topk;
        }
    }
    const uint32_t n_raw = static_cast<uint32_t>(pos + 1 < window ? pos + 1 : window);
    const uint64_t q0 = pos + 1 - n_raw;
    const auto n_old = static_cast<uint32_t>(q0 < pos0 ? pos0 - q0 : 0);
    const auto first_slot = static_cast<uint32_t>(q0 % window);
    const float* const fresh = a.kvb + (ts.first + (q0 + n_old - pos0)) * hd;  // row of position q0 + n_old
    const auto row = [=](uint32_t i) -> const float* {
        if (i < n_old) {
            uint32_t slot = first_slot + i;
            if (slot >= window) slot -= window;
            return raw + uint64_t{slot} * hd;
        }
        if (i < n_raw) return fresh + uint64_t{i - n_old} * hd;
        const uint32_t c = i - n_raw;
        return comp + uint64_t{sel != nullptr ? sel[c] : c} * hd;
    };
    const attn::HeadParams hp{hd, a.rope_dim, a.sinks[h], a.omega};
    const uint64_t qoff = (uint64_t{t} * a.n_head + h) * hd;
    attn::attend_head(a.q + qoff, sc, n_raw + n_comp, row, hp, pos, a.out + qoff, qs, fshared);
}

constexpr uint32_t kTileThreads = 256;  // attend_head's block: the denominators' order

// attend_head for heads h0 .. h0+H−1 of one token at once: every head of a token reads the
// same rows (K = V is one head), so each row value is loaded once for H heads instead of
// once per head. Each (head, token) keeps attend_head's arithmetic and order exactly: a
// score is one warp's lane-strided fmaf chain and warp_sum, the denominator sums the
// rows i ≡ tid (mod 256) in order per thread and then block_sum, and each output value
// is one fmaf chain over the rows in order. C: output columns per thread (hd ≤ 256·C).
// Shared memory: row pointers [n], q / output [H][hd], probabilities [n][H].
template <uint32_t H, uint32_t C>
__global__ void __launch_bounds__(kTileThreads) batch_attend_tile_kernel(BatchPass p, BatchAttend a) {
    dev::pdl_wait_and_release();
    extern __shared__ float4 smem4[];
    __shared__ float fshared[32];
    const uint32_t h0 = blockIdx.x * H, t = blockIdx.y, hd = a.hd, tid = threadIdx.x;
    const TokRows rows(p, a, t);
    const uint32_t n = rows.count();
    const auto** rp = reinterpret_cast<const float**>(smem4);
    float* qs = reinterpret_cast<float*>(rp + ((a.cap_rows + 1) & ~uint64_t{1}));  // 16-byte aligned
    float* sc = qs + H * hd;
    const uint64_t qoff = (uint64_t{t} * a.n_head + h0) * hd;
    for (uint32_t i = tid; i < n; i += kTileThreads) rp[i] = rows(i);
    for (uint32_t e = tid; e < H * hd; e += kTileThreads) qs[e] = __ldg(a.q + qoff + e);
    __syncthreads();
    const auto scale = static_cast<float>(1.0 / sqrt(static_cast<double>(hd)));
    // scores: a warp takes kRows consecutive rows at once (each q value read from shared
    // memory serves kRows rows); rows past n compute on row 0 and are not stored
    constexpr uint32_t kRows = 4;
    const uint32_t warp = tid / 32, lane = tid % 32;
    for (uint32_t i0 = warp * kRows; i0 < n; i0 += kTileThreads / 32 * kRows) {
        const float* r[kRows];
#pragma unroll
        for (uint32_t k = 0; k < kRows; ++k) r[k] = rp[i0 + k < n ? i0 + k : 0];
        float dot[kRows][H];
#pragma unroll
        for (uint32_t k = 0; k < kRows; ++k)
#pragma unroll
            for (uint32_t h = 0; h < H; ++h) dot[k][h] = 0.0f;
        for (uint32_t j = lane; j < hd; j += 32) {
            float v[kRows];
#pragma unroll
            for (uint32_t k = 0; k < kRows; ++k) v[k] = __ldg(r[k] + j);
#pragma unroll
            for (uint32_t h = 0; h < H; ++h) {
                const float qv = qs[h * hd + j];
#pragma unroll
                for (uint32_t k = 0; k < kRows; ++k) dot[k][h] = fmaf(qv, v[k], dot[k][h]);
            }
        }
#pragma unroll
        for (uint32_t k = 0; k < kRows; ++k)
#pragma unroll
            for (uint32_t h = 0; h < H; ++h) {
                const float d = dev::warp_sum(dot[k][h]);
                if (lane == 0 && i0 + k < n) sc[uint64_t{i0 + k} * H + h] = d * scale;
            }
    }
    __syncthreads();
    float m[H], den[H];
#pragma unroll
    for (uint32_t h = 0; h < H; ++h) m[h] = -INFINITY;
    for (uint32_t i = tid; i < n; i += kTileThreads)
#pragma unroll
        for (uint32_t h = 0; h < H; ++h) m[h] = fmaxf(m[h], sc[uint64_t{i} * H + h]);
#pragma unroll
    for (uint32_t h = 0; h < H; ++h) {
        m[h] = dev::block_max(m[h], fshared);
        den[h] = 0.0f;
    }
    for (uint32_t i = tid; i < n; i += kTileThreads)
#pragma unroll
        for (uint32_t h = 0; h < H; ++h) {
            const float e = expf(sc[uint64_t{i} * H + h] - m[h]);
            sc[uint64_t{i} * H + h] = e;
            den[h] += e;
        }
#pragma unroll
    for (uint32_t h = 0; h < H; ++h) {  // block_sum also orders the writes of sc before the reads below
        den[h] = dev::block_sum(den[h], fshared);
        den[h] += expf(a.sinks[h0 + h] - m[h]);
    }
    float acc[H][C];
#pragma unroll
    for (uint32_t h = 0; h < H; ++h)
#pragma unroll
        for (uint32_t c = 0; c < C; ++c) acc[h][c] = 0.0f;
#pragma unroll 4
    for (uint32_t i = 0; i < n; ++i) {
        const float* r = rp[i];
        float v[C];
#pragma unroll
        for (uint32_t c = 0; c < C; ++c) v[c] = tid + c * kTileThreads < hd ? __ldg(r + tid + c * kTileThreads) : 0.0f;
        const float* w = sc + uint64_t{i} * H;
#pragma unroll
        for (uint32_t h = 0; h < H; ++h)
#pragma unroll
            for (uint32_t c = 0; c < C; ++c) acc[h][c] = fmaf(w[h], v[c], acc[h][c]);
    }
    // qs (read by the scores) is free: block_sum synchronised since
#pragma unroll
    for (uint32_t h = 0; h < H; ++h)
#pragma unroll
        for (uint32_t c = 0; c < C; ++c)
            if (tid + c * kTileThreads < hd) qs[h * hd + tid + c * kTileThreads] = acc[h][c] / den[h];
    __syncthreads();
    const uint32_t half = a.rope_dim / 2;
    for (uint32_t e = tid; e < H * half; e += kTileThreads) {  // [TRAP] §13.4: back-rotation at the query position
        const uint32_t h = e / half, k = e % half;
        float cs, sn;
        dev::rope_cs(static_cast<float>(rows.pos), a.omega[k], cs, sn);
        sn = -sn;
        float* pr = qs + h * hd + (hd - a.rope_dim) + 2 * k;
        dev::rotate_pair(pr, cs, sn);
    }
    __syncthreads();
    for (uint32_t e = tid; e < H * hd; e += kTileThreads) a.out[qoff + e] = qs[e];
}

// The frontier of one compressor of one segment after its last token: the previous
// window's slots after an emit in the pass (from the pass's rows or, for positions
// before it, the current-window slots), then the current-window slots of the last r
// positions of the pass; and the row count.
__device__ void finish_comp(const BatchPass& p, const BatchComp& c, const TokSeg& ts, const CompPtrs& cp) {
    const uint32_t r = c.ratio, d = c.d, width = c.coff * d;
    const bool overlap = c.coff == 2;
    const uint64_t pos0 = p.pos[ts.first], plast = p.pos[ts.last];
    const uint64_t emits = (plast + 1) / r - pos0 / r;
    if (overlap && emits > 0) {
        const uint64_t w0 = ((plast + 1) / r - 1) * r;  // first position of the last emitted window
        for (uint64_t e = threadIdx.x; e < uint64_t{r} * width; e += blockDim.x) {
            const auto i = static_cast<uint32_t>(e / width), j = static_cast<uint32_t>(e % width);
            const uint64_t q = w0 + i;
            float kv, sc;
            if (q >= pos0) {
                const uint64_t tq = ts.first + (q - pos0);
                kv = c.kv[tq * width + j];
                sc = c.score[tq * width + j] + c.ape[uint64_t{i} * width + j];
            } else {
                kv = cp.kv[uint64_t{r + i} * width + j];
                sc = cp.score[uint64_t{r + i} * width + j];
            }
            cp.kv[uint64_t{i} * width + j] = kv;
            cp.score[uint64_t{i} * width + j] = sc;
        }
        __syncthreads();  // read the current-window slots before they are overwritten
    }
    const uint64_t from = plast + 1 >= pos0 + r ? plast + 1 - r : pos0;
    for (uint64_t e = threadIdx.x; e < (plast + 1 - from) * width; e += blockDim.x) {
        const uint64_t q = from + e / width;
        const auto j = static_cast<uint32_t>(e % width), in_window = static_cast<uint32_t>(q % r);
        const uint32_t slot = overlap ? r + in_window : in_window;
        const uint64_t tq = ts.first + (q - pos0);
        cp.kv[uint64_t{slot} * width + j] = c.kv[tq * width + j];
        cp.score[uint64_t{slot} * width + j] = c.score[tq * width + j] + c.ape[uint64_t{in_window} * width + j];
    }
    if (threadIdx.x == 0) *cp.n_rows = rows_after(*cp.n_rows, pos0, plast, r, cp.capacity);
}

// grid (segments, 3): the ring, the attention compressor, the indexer's compressor.
__global__ void __launch_bounds__(1024) finish_kernel(BatchPass p, BatchFinish f) {
    dev::pdl_wait_and_release();
    const uint32_t sg = blockIdx.x;
    const SegKv& kv = p.seg[sg];
    // the segment's token range: found from any token of it (tokens are in segment order)
    __shared__ uint32_t first;
    if (threadIdx.x == 0) {
        uint32_t lo = 0, hi = p.n;  // the first token whose segment is ≥ sg
        while (lo < hi) {
            const uint32_t mid = (lo + hi) / 2;
            if (p.tok[mid].seg < sg)
                lo = mid + 1;
            else
                hi = mid;
        }
        first = lo;
    }
    __syncthreads();
    const TokSeg ts = p.tok[first];
    if (blockIdx.y == 0) {
        const uint64_t pos0 = p.pos[ts.first], plast = p.pos[ts.last];
        const uint64_t from = plast + 1 >= pos0 + f.window ? plast + 1 - f.window : pos0;
        for (uint64_t e = threadIdx.x; e < (plast + 1 - from) * f.hd; e += blockDim.x) {
            const uint64_t q = from + e / f.hd, j = e % f.hd;
            kv.raw[(q % f.window) * f.hd + j] = f.kvb[(ts.first + (q - pos0)) * f.hd + j];
        }
    } else if (blockIdx.y == 1 && f.attn.ratio != 0) {
        finish_comp(p, f.attn, ts, kv.attn);
    } else if (blockIdx.y == 2 && f.index.ratio != 0) {
        finish_comp(p, f.index, ts, kv.index);
    }
}

}  // namespace

void batch_compressor_emit(const BatchPass& p, const BatchComp& c, cudaStream_t s) {
    const uint32_t slots = c.coff * c.ratio;
    if (c.coff * c.d > kMaxD || c.d == 0 || c.ratio == 0 || slots > kBatchMaxSlots)
        fail("cuda batched compressor: width ", c.coff * c.d, ", ", slots, " slots outside the kernel's limits");
    if (p.n == 0) return;
    launch_pdl("launch of emit_kernel", emit_kernel, dim3(p.n), dim3(kMaxD), 0, s, p, c);
}

void batch_indexer_topk(const BatchPass& p, const BatchIndexer& ix, uint32_t t0, uint32_t count, cudaStream_t s) {
    if (ix.max_rows <= ix.k || count == 0) return;
    if (indexer_fast_applies(ix.max_rows, ix.d, ix.n_heads, ix.k)) {
        if (!batch_index_scores_mma(p, ix, t0, count, s))
            ixf::with_head_group(ix.n_heads, [&](auto g) {
                launch_pdl("launch of batch_index_scores_fast_kernel", batch_index_scores_fast_kernel<g()>,
                           dim3(indexer_score_blocks(ix.max_rows, count), count), dim3(ixf::kScoreWarps * 32),
                           indexer_score_bytes(ix.d, ix.n_heads), s, p, ix, t0);
            });
        launch_pdl("launch of batch_select_kernel", batch_select_kernel, dim3(1, count), dim3(ixf::kSelectThreads), 0,
                   s, p, ix, t0);
        return;
    }
    constexpr unsigned kThreads = 256;
    const uint64_t warps = uint64_t{ix.max_rows} * 32;
    launch_pdl("launch of batch_index_scores_kernel", batch_index_scores_kernel,
               dim3(static_cast<unsigned>((warps + kThreads - 1) / kThreads), count), dim3(kThreads), 0, s, p, ix, t0);
    launch_pdl("launch of batch_topk_kernel", batch_topk_kernel, dim3((ix.max_rows + kThreads - 1) / kThreads, count),
               dim3(kThreads), 0, s, p, ix, t0);
}

namespace {
constexpr uint64_t kMaxScoreBytes = 160 * 1024;  // dynamic shared memory for one head's scores
constexpr uint64_t kMaxTileBytes = 200 * 1024;   // the tile kernel's (sm_90 allows 227 KiB)

TileConfig tile_from_env() { return TileConfig{env_switch_on("DS4_CUDA_ATTN_TILE") ? 8u : 0u, kTileAuto}; }
TileConfig g_tile = tile_from_env();

uint64_t tile_bytes(uint32_t heads, uint32_t hd, uint64_t cap_rows) {
    return ((cap_rows + 1) & ~uint64_t{1}) * sizeof(const float*) + uint64_t{heads} * hd * sizeof(float) +
           cap_rows * heads * sizeof(float);
}

// The most heads per block (≤ max_heads of 8, 4, 2) that divide n_head, whose shared
// memory fits and that still give min_blocks blocks (kTileAuto: the most heads, however
// few blocks: every head of a group reads each row value once); 0: none.
uint32_t tile_heads(const BatchPass& p, const BatchAttend& a) {
    const uint64_t min_blocks = g_tile.min_blocks == kTileAuto ? 1 : g_tile.min_blocks;
    for (uint32_t h : {8u, 4u, 2u})
        if (h <= g_tile.max_heads && a.n_head % h == 0 && tile_bytes(h, a.hd, a.cap_rows) <= kMaxTileBytes &&
            uint64_t{a.n_head / h} * p.n >= min_blocks)
            return h;
    return 0;
}

template <uint32_t H, uint32_t C>
void launch_tile(const BatchPass& p, const BatchAttend& a, cudaStream_t s) {
    const uint64_t bytes = tile_bytes(H, a.hd, a.cap_rows);
    const auto kernel = batch_attend_tile_kernel<H, C>;
    if (bytes > 48 * 1024 - 128)  // beyond the default together with fshared
        DS4_CUDA_CHECK(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kMaxTileBytes)));
    launch_pdl("launch of batch_attend_tile_kernel", kernel, dim3(a.n_head / H, p.n), dim3(kTileThreads), bytes, s, p,
               a);
}

template <uint32_t C>
bool attend_tiled(const BatchPass& p, const BatchAttend& a, cudaStream_t s) {
    switch (tile_heads(p, a)) {
        case 8: launch_tile<8, C>(p, a, s); return true;
        case 4: launch_tile<4, C>(p, a, s); return true;
        case 2: launch_tile<2, C>(p, a, s); return true;
        default: return false;
    }
}
}  // namespace

void set_batch_attend_tile(const TileConfig& c) { g_tile = c; }
TileConfig batch_attend_tile() { return g_tile; }

bool batch_attend_fits(uint32_t hd, uint64_t cap_rows) {
    return hd <= kMaxD && cap_rows * sizeof(float) <= kMaxScoreBytes;
}

void batch_attend(const BatchPass& p, const BatchAttend& a, cudaStream_t s) {
    if (!batch_attend_fits(a.hd, a.cap_rows)) fail("cuda batched attention: ", a.cap_rows, " rows do not fit");
    if (p.n == 0 || batch_attend_mma_launch(p, a, s)) return;
    if (g_tile.max_heads != 0 && (a.hd <= 2 * kTileThreads ? attend_tiled<2>(p, a, s) : attend_tiled<4>(p, a, s))) return;
    const auto bytes = static_cast<int>(a.cap_rows * sizeof(float));
    if (bytes > 32 * 1024)  // beyond the default 48 KiB together with the static arrays
        DS4_CUDA_CHECK(cudaFuncSetAttribute(batch_attend_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(kMaxScoreBytes)));
    launch_pdl("launch of batch_attend_kernel", batch_attend_kernel, dim3(a.n_head, p.n), dim3(256), bytes, s, p, a);
}

void batch_attn_finish(const BatchPass& p, const BatchFinish& f, cudaStream_t s) {
    if (f.window == 0) fail("cuda attention: raw window of 0 rows");
    if (p.n_seg == 0) return;
    launch_pdl("launch of finish_kernel", finish_kernel, dim3(p.n_seg, 3), dim3(1024), 0, s, p, f);
}

}  // namespace ds4::cuda
