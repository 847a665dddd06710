// The stateful per-token part of attention on the GPU (launchers in forward_kernels.h):
// one compressor step (cpu::CpuForward::compressor_step), the indexer's top-k selection
// (indexer_select) and one token's attention over its raw window and compressed rows
// (attend_token). Each is a plain, correct first version: one block per compressor step
// or per head, no tiling. Positions and compressed-row counts are read from device
// memory, so the launches do not change from step to step (CUDA graph capture).
#include <algorithm>
#include <mutex>

#include "cuda/attention_common.cuh"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/pdl.cuh"
#include "cuda/device_math.cuh"
#include "cuda/env_switch.h"
#include "cuda/forward_kernels.h"
#include "cuda/indexer_fast.h"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

using attn::kMaxD;

// One block of 1024 threads (width ≤ 1024 values per slot).
__global__ void __launch_bounds__(kMaxD) compressor_kernel(CompressorStep c) {
    dev::pdl_wait_and_release();
    __shared__ float row[kMaxD];
    const uint32_t r = c.ratio, d = c.d, width = c.coff * d;
    const bool overlap = c.coff == 2;
    const uint64_t pos = *c.pos;
    const auto in_window = static_cast<uint32_t>(pos % r);
    const uint32_t slot = overlap ? r + in_window : in_window;
    const float* ape = c.ape + uint64_t{in_window} * width;
    for (uint32_t j = threadIdx.x; j < width; j += blockDim.x) {
        c.state_kv[uint64_t{slot} * width + j] = c.kv[j];
        c.state_score[uint64_t{slot} * width + j] = c.score[j] + ape[j];
    }
    if ((pos + 1) % r != 0) return;  // uniform over the block
    const uint32_t n_row = *c.n_rows;
    if (n_row >= c.capacity) return;  // the host refuses a full cache before the step
    __syncthreads();

    // softmax over the candidate slots per column, then the weighted sum (slot order)
    const auto col = [&](uint32_t s, uint32_t j) { return uint64_t{s} * width + (overlap && s >= r ? d + j : j); };
    attn::pool_columns(
        row, d, overlap ? 2 * r : r, [&](uint32_t s, uint32_t j) { return c.state_kv[col(s, j)]; },
        [&](uint32_t s, uint32_t j) { return c.state_score[col(s, j)]; });
    __syncthreads();
    if (overlap) {  // the current window becomes the previous one
        const uint64_t n = uint64_t{r} * width;
        for (uint64_t i = threadIdx.x; i < n; i += blockDim.x) {
            c.state_kv[i] = c.state_kv[n + i];
            c.state_score[i] = c.state_score[n + i];
        }
    }
    const attn::FinishParams fp{c.norm, c.omega, d, r, c.rope_dim, c.eps, c.indexer};
    attn::compressor_finish(row, fp, pos, c.rows + uint64_t{n_row} * d);
    __syncthreads();  // every thread has read *n_rows (above) before it moves
    if (threadIdx.x == 0) *c.n_rows = n_row + 1;
}

// One warp per row: Σ_h w_h·relu(q_h·k).
// Nothing when n ≤ k (the indexer is off: the attention takes every row).
__global__ void indexer_scores_kernel(const float* q, const float* w, const float* rows, const uint32_t* n_rows,
                                      uint32_t k_top, uint32_t d, uint32_t n_heads, float* scores) {
    dev::pdl_wait_and_release();
    const uint32_t c = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    const uint32_t n = *n_rows;
    if (n <= k_top || c >= n) return;
    const float s = attn::indexer_score(q, w, rows + uint64_t{c} * d, d, n_heads);
    if (lane == 0) scores[c] = s;
}

// rank of row c in (score descending, row ascending); the first k go to sel[rank].
__global__ void topk_rank_kernel(const float* scores, const uint32_t* n_rows, uint32_t k, uint32_t* sel) {
    dev::pdl_wait_and_release();
    const uint32_t c = blockIdx.x * blockDim.x + threadIdx.x, n = *n_rows;
    if (n <= k || c >= n) return;
    const uint32_t rank = attn::topk_rank(scores, n, k, c);
    if (rank < k) sel[rank] = c;
}

// first_slot: the ring slot of the oldest raw row, (pos + 1 − n_raw) % window, computed
// once per thread (a 64-bit modulo per row and value made the first version slow).
__device__ const float* attended_row(const AttendToken& a, const uint32_t* sel, uint32_t n_raw, uint32_t first_slot,
                                    uint32_t i) {
    if (i < n_raw) {
        uint32_t slot = first_slot + i;
        if (slot >= a.window) slot -= a.window;
        return a.raw + uint64_t{slot} * a.hd;
    }
    const uint32_t c = i - n_raw;
    return a.comp + uint64_t{sel != nullptr ? sel[c] : c} * a.hd;
}

struct AttendRows {  // the rows a token attends: n_raw ring rows, then compressed (or selected) rows
    const uint32_t* sel;
    uint32_t n_raw, first_slot, n;
};
__device__ AttendRows attend_rows(const AttendToken& a) {
    const uint64_t pos = *a.pos;
    uint32_t n_comp = a.n_comp != nullptr ? *a.n_comp : 0;
    const uint32_t* sel = nullptr;
    if (a.comp_sel != nullptr && n_comp > a.topk) {  // the indexer chose topk rows
        sel = a.comp_sel;
        n_comp = a.topk;
    }
    const uint32_t n_raw = static_cast<uint32_t>(pos + 1 < a.window ? pos + 1 : a.window);
    return {sel, n_raw, static_cast<uint32_t>((pos + 1 - n_raw) % a.window), n_raw + n_comp};
}

// One block per head.
__global__ void attend_kernel(AttendToken a) {
    dev::pdl_wait_and_release();
    __shared__ float qs[kMaxD];
    __shared__ float fshared[32];
    const uint32_t h = blockIdx.x, hd = a.hd;
    const uint64_t pos = *a.pos;
    const AttendRows ar = attend_rows(a);
    const attn::HeadParams hp{hd, a.rope_dim, a.sinks[h], a.omega};
    attn::attend_head(
        a.q + uint64_t{h} * hd, a.scores + uint64_t{h} * a.cap_rows, ar.n,
        [&](uint32_t i) { return attended_row(a, ar.sel, ar.n_raw, ar.first_slot, i); }, hp, pos,
        a.out + uint64_t{h} * hd, qs, fshared);
}

// Σ_i p[i]·rows[i][j] as attn::attend_head's fmaf chain over the rows in order, kU row
// values loaded ahead of the chain (the chain's latency is the loads').
template <uint32_t kU>
__device__ __forceinline__ float column_chain(const float* const* rows, const float* p, uint32_t n, uint32_t j) {
    float acc = 0.0f;
    uint32_t i = 0;
    for (; i + kU <= n; i += kU) {
        float v[kU];
#pragma unroll
        for (uint32_t u = 0; u < kU; ++u) v[u] = rows[i + u][j];
#pragma unroll
        for (uint32_t u = 0; u < kU; ++u) acc = fmaf(p[i + u], v[u], acc);
    }
    for (; i < n; ++i) acc = fmaf(p[i], rows[i][j], acc);
    return acc;
}

// (issue 8) attend_kernel's bits with the rows' pointers found once (shared memory) and
// each head's columns split over kAttendSplit blocks (64 heads fill only half of an
// H200's SMs): every block repeats the head's scores and softmax (the same code, so the
// same s and den) and sums its columns, each column's fma chain over the rows in the same
// order, kAttendUnroll loads issued ahead of the chain. Dynamic shared memory: cap_rows
// pointers, then cap_rows scores.
constexpr uint32_t kAttendSplit = 2, kAttendUnroll = 32, kAttendThreads = 256;

__global__ void __launch_bounds__(kAttendThreads) attend_split_kernel(AttendToken a) {
    dev::pdl_wait_and_release();
    extern __shared__ __align__(16) unsigned char attend_smem[];
    __shared__ float qs[kMaxD];
    __shared__ float fshared[32];
    const auto** rp = reinterpret_cast<const float**>(attend_smem);
    float* s = reinterpret_cast<float*>(attend_smem + a.cap_rows * sizeof(const float*));
    const uint32_t h = blockIdx.x, hd = a.hd;
    const uint64_t pos = *a.pos;
    const AttendRows ar = attend_rows(a);
    const uint32_t n = ar.n;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) rp[i] = attended_row(a, ar.sel, ar.n_raw, ar.first_slot, i);
    __syncthreads();
    const attn::HeadParams hp{hd, a.rope_dim, a.sinks[h], a.omega};
    const float den =
        attn::head_softmax(a.q + uint64_t{h} * hd, s, n, [&](uint32_t i) { return rp[i]; }, hp, qs, fshared);
    const uint32_t per = hd / kAttendSplit, c0 = blockIdx.y * per, c1 = c0 + per;
    for (uint32_t j = c0 + threadIdx.x; j < c1; j += blockDim.x) qs[j] = column_chain<kAttendUnroll>(rp, s, n, j) / den;
    __syncthreads();
    const uint32_t rd = a.rope_dim;
    if (threadIdx.x < rd / 2) {  // [TRAP] §13.4, as attn::attend_head
        const uint32_t col = hd - rd + 2 * threadIdx.x;
        if (col >= c0 && col + 1 < c1) {
            float cs, sn;
            dev::rope_cs(static_cast<float>(pos), a.omega[threadIdx.x], cs, sn);
            sn = -sn;
            float* p = qs + col;
            dev::rotate_pair(p, cs, sn);
        }
    }
    __syncthreads();
    for (uint32_t j = c0 + threadIdx.x; j < c1; j += blockDim.x) a.out[uint64_t{h} * hd + j] = qs[j];
}

constexpr uint64_t kAttendSplitMaxBytes = 160 * 1024;

// (issue 8) attend_kernel's bits by head groups: every head reads the same rows (K = V is
// one head), and one block per head (or two, attend_split_kernel) read them 64 or 128
// times from L2, ~150 us per layer at 640 rows on an H200. Two launches instead:
// attend_group_scores_kernel, block (4 or 16 rows, 8 heads): warp w scores head w's rows with
// head_softmax's chains, 4 rows' values (all of a lane's, hd ≤ 512) loaded before the
// chains; attend_group_sum_kernel, block (32 columns, 8 heads): the softmax of
// head_softmax (the same per-thread rows and block reductions, for 8 heads at once), then
// warp g's lanes the fmaf chains of head g over the rows in order, 32 row values ahead;
// the 8 warps load the same values (one L1 line). Dynamic shared memory of the second: n
// row pointers, [8][n] probabilities. The latency of dependent loads is the cost here
// (a few rows per step), so both keep many loads in flight.
constexpr uint32_t kGroupHeads = 8, kGroupCols = 32, kGroupThreads = 256, kGroupMaxHd = 512;
constexpr uint64_t kGroupMaxBytes = 160 * 1024;

// RB rows per block: a warp's rows go 4 at a time, each step a dependent L2 round trip,
// so fewer rows per block (more blocks) shorten the launch; a (head, row) score is one
// warp's chain whatever RB is (the same bits).
template <uint32_t RB>
__global__ void __launch_bounds__(kGroupThreads) attend_group_scores_kernel(AttendToken a) {
    dev::pdl_wait_and_release();
    __shared__ float qs[kGroupHeads][kMaxD];
    const AttendRows ar = attend_rows(a);
    const uint32_t i0 = blockIdx.x * RB, h0 = blockIdx.y * kGroupHeads, hd = a.hd;
    if (i0 >= ar.n) return;  // the grid covers cap_rows
    for (uint32_t k = threadIdx.x; k < kGroupHeads * hd; k += blockDim.x)
        qs[k / hd][k % hd] = a.q[uint64_t{h0} * hd + k];
    __syncthreads();
    const auto scale = static_cast<float>(1.0 / sqrt(static_cast<double>(hd)));
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, i_end = min(ar.n, i0 + RB);
    float* s = a.scores + uint64_t{h0 + warp} * a.cap_rows;
    constexpr uint32_t kRows = 4;
    constexpr uint32_t kJ = kGroupMaxHd / 32;  // a lane's values per row
    for (uint32_t i = i0; i < i_end; i += kRows) {
        float v[kRows][kJ], dot[kRows];
#pragma unroll
        for (uint32_t u = 0; u < kRows; ++u) {
            const float* r = attended_row(a, ar.sel, ar.n_raw, ar.first_slot, min(i + u, i_end - 1));
            dot[u] = 0.0f;
#pragma unroll
            for (uint32_t k = 0; k < kJ; ++k) v[u][k] = lane + 32 * k < hd ? r[lane + 32 * k] : 0.0f;
        }
#pragma unroll
        for (uint32_t k = 0; k < kJ; ++k) {
            if (lane + 32 * k >= hd) break;  // the chain stops where head_softmax's loop does
            const float qj = qs[warp][lane + 32 * k];
#pragma unroll
            for (uint32_t u = 0; u < kRows; ++u) dot[u] = fmaf(qj, v[u][k], dot[u]);
        }
#pragma unroll
        for (uint32_t u = 0; u < kRows; ++u) {
            const float d = dev::warp_sum(dot[u]);
            if (lane == 0 && i + u < i_end) s[i + u] = d * scale;
        }
    }
}

// block_max / block_sum of G values per thread at once: each value the same tree as alone
template <uint32_t G, bool kMax>
__device__ void block_reduce(float (&v)[G], float (*sh)[32]) {
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (uint32_t g = 0; g < G; ++g) v[g] = kMax ? dev::warp_max(v[g]) : dev::warp_sum(v[g]);
    __syncthreads();
    if (lane == 0)
#pragma unroll
        for (uint32_t g = 0; g < G; ++g) sh[g][warp] = v[g];
    __syncthreads();
    if (warp == 0)
#pragma unroll
        for (uint32_t g = 0; g < G; ++g) {
            float x = lane < blockDim.x / 32 ? sh[g][lane] : (kMax ? -INFINITY : 0.0f);
            x = kMax ? dev::warp_max(x) : dev::warp_sum(x);
            if (lane == 0) sh[g][0] = x;
        }
    __syncthreads();
#pragma unroll
    for (uint32_t g = 0; g < G; ++g) v[g] = sh[g][0];
    __syncthreads();
}

__global__ void __launch_bounds__(kGroupThreads) attend_group_sum_kernel(AttendToken a) {
    dev::pdl_wait_and_release();
    extern __shared__ __align__(16) unsigned char group_smem[];
    __shared__ float red[kGroupHeads][32];
    __shared__ float o[kGroupHeads][kGroupCols];
    constexpr uint32_t G = kGroupHeads;
    const AttendRows ar = attend_rows(a);
    const uint32_t n = ar.n, h0 = blockIdx.y * G, c0 = blockIdx.x * kGroupCols;
    const auto** rp = reinterpret_cast<const float**>(group_smem);
    float* p = reinterpret_cast<float*>(group_smem + a.cap_rows * sizeof(const float*));  // [G][n]
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) rp[i] = attended_row(a, ar.sel, ar.n_raw, ar.first_slot, i);
    const float* sc = a.scores + uint64_t{h0} * a.cap_rows;
    float m[G], den[G];
#pragma unroll
    for (uint32_t g = 0; g < G; ++g) m[g] = -INFINITY, den[g] = 0.0f;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
#pragma unroll
        for (uint32_t g = 0; g < G; ++g) m[g] = fmaxf(m[g], sc[uint64_t{g} * a.cap_rows + i]);
    block_reduce<G, true>(m, red);
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
#pragma unroll
        for (uint32_t g = 0; g < G; ++g) {
            const float e = expf(sc[uint64_t{g} * a.cap_rows + i] - m[g]);
            p[g * n + i] = e;
            den[g] += e;
        }
    block_reduce<G, false>(den, red);  // its barriers also order p and rp before the reads below
#pragma unroll
    for (uint32_t g = 0; g < G; ++g) den[g] += expf(a.sinks[h0 + g] - m[g]);
    // warp g = head g, lane = column: the fmaf chain over the rows in order
    const uint32_t c = threadIdx.x % 32, hg = threadIdx.x / 32, j = c0 + c;
    const float acc = column_chain<kAttendUnroll>(rp, p + hg * n, n, j);
    float dh = den[0];  // den[hg] without a local-memory array
#pragma unroll
    for (uint32_t g = 1; g < G; ++g) dh = g == hg ? den[g] : dh;
    o[hg][c] = acc / dh;
    __syncthreads();
    // [TRAP] §13.4, as attn::attend_head: pair k of the last rope_dim columns
    const uint32_t hd = a.hd, rd = a.rope_dim, pairs = kGroupCols / 2;
    const uint64_t pos = *a.pos;
    for (uint32_t t = threadIdx.x; t < G * pairs; t += blockDim.x) {
        const uint32_t g = t / pairs, col = c0 + 2 * (t % pairs);
        if (col < hd - rd) continue;
        const uint32_t k = (col - (hd - rd)) / 2;
        float cs, sn;
        dev::rope_cs(static_cast<float>(pos), a.omega[k], cs, sn);
        sn = -sn;
        float* pr = &o[g][col - c0];
        dev::rotate_pair(pr, cs, sn);
    }
    __syncthreads();
    for (uint32_t t = threadIdx.x; t < G * kGroupCols; t += blockDim.x)
        a.out[uint64_t{h0 + t / kGroupCols} * hd + c0 + t % kGroupCols] = o[t / kGroupCols][t % kGroupCols];
}

AttendMode g_attend_mode = !env_switch_on("DS4_CUDA_ATTEND_SPLIT") ? AttendMode::OneBlock
                           : !env_switch_on("DS4_CUDA_ATTEND_GROUP") ? AttendMode::Split
                                                                     : AttendMode::Group;

}  // namespace

void compressor_step(const CompressorStep& c, cudaStream_t s) {
    if (c.coff * c.d > kMaxD || c.d == 0 || c.ratio == 0)
        fail("cuda compressor: row width ", c.coff * c.d, " (ratio ", c.ratio, ") outside (0, ", kMaxD, "]");
    launch_pdl("launch of compressor_kernel", compressor_kernel, dim3(1), dim3(kMaxD), 0, s, c);
}

void indexer_topk(const float* q, const float* w, const float* rows, const uint32_t* n_rows, uint32_t max_rows,
                  uint32_t d, uint32_t n_heads, uint32_t k, float* scores, uint32_t* sel, cudaStream_t s) {
    if (max_rows <= k) return;
    if (indexer_fast_applies(max_rows, d, n_heads, k))  // (issue 8) the same bits, not n² at long context
        return indexer_topk_fast(q, w, rows, n_rows, max_rows, d, n_heads, k, scores, sel, s);
    constexpr unsigned kThreads = 256;
    const uint64_t warps = uint64_t{max_rows} * 32;
    launch_pdl("launch of indexer_scores_kernel", indexer_scores_kernel,
               dim3(static_cast<unsigned>((warps + kThreads - 1) / kThreads)), dim3(kThreads), 0, s, q, w, rows, n_rows,
               k, d, n_heads, scores);
    launch_pdl("launch of topk_rank_kernel", topk_rank_kernel, dim3((max_rows + kThreads - 1) / kThreads),
               dim3(kThreads), 0, s, scores, n_rows, k, sel);
}

// A kernel, not a memcpy: the ring slot moves with the device position, which a memcpy
// node of a captured graph cannot follow.
__global__ void store_raw_kernel(float* raw, const float* row, uint32_t hd, uint32_t window, const uint64_t* pos) {
    dev::pdl_wait_and_release();
    float* dst = raw + (*pos % window) * hd;
    for (uint32_t j = threadIdx.x; j < hd; j += blockDim.x) dst[j] = row[j];
}

void store_raw_row(float* raw, const float* row, uint32_t hd, uint32_t window, const uint64_t* pos,
                   cudaStream_t s) {
    if (window == 0) fail("cuda attention: raw window of 0 rows");
    launch_pdl("launch of store_raw_kernel", store_raw_kernel, dim3(1), dim3(256), 0, s, raw, row, hd, window, pos);
}

void set_attend_mode(AttendMode m) { g_attend_mode = m; }

namespace {
uint32_t g_group_rows = 0;
// Rows per scores block: 4 while the grid of 4-row blocks fits the resident blocks (one
// wave: each block's rows go 4 at a time, a dependent L2 round trip each), else 16. From
// the capacity, not the live rows: a graph keeps its grid. (It was 4 up to 256 rows of
// capacity: ctx 512's ~265 rows took 16-row blocks, 136 blocks for 132 SMs.)
uint32_t group_rows(uint64_t cap_rows, uint32_t head_groups) {
    if (g_group_rows != 0) return g_group_rows;
    static const unsigned resident = device_resident_blocks(attend_group_scores_kernel<4>, kGroupThreads);
    return (cap_rows + 3) / 4 * head_groups <= resident ? 4 : 16;
}
}  // namespace

void set_attend_group_rows(uint32_t rows) { g_group_rows = rows == 4 || rows == 8 || rows == 16 ? rows : 0; }

namespace {
// The dynamic shared memory a kernel of these may ask for: `want`, or less on cards whose
// opt-in limit is lower (sm_89 / sm_120: 99 KB), keeping 8 KB for the kernels' static
// arrays.
uint64_t dyn_smem_cap(uint64_t want) {
    const uint64_t optin = device_smem_optin();
    return std::min(want, optin > 8 * 1024 ? optin - 8 * 1024 : 0);
}
}  // namespace

void attend_token(const AttendToken& a, cudaStream_t s) {
    if (a.hd > kMaxD) fail("cuda attention: head_dim ", a.hd, " > ", kMaxD);
    const uint64_t group_bytes = a.cap_rows * (sizeof(const float*) + kGroupHeads * sizeof(float));
    static_assert(kGroupThreads == 32 * kGroupHeads && kGroupCols == 32,
                  "attend_group_sum_kernel: warp = head, lane = column");
    if (g_attend_mode == AttendMode::Group && a.n_head % kGroupHeads == 0 && a.hd % kGroupCols == 0 &&
        a.hd <= kGroupMaxHd && a.rope_dim % 2 == 0 && a.rope_dim <= a.hd && a.cap_rows > 0 &&
        group_bytes <= dyn_smem_cap(kGroupMaxBytes)) {
        static std::once_flag once;  // first use: in the forward's first (eager) pass, never in a capture
        std::call_once(once, [] {
            DS4_CUDA_CHECK(cudaFuncSetAttribute(attend_group_sum_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(dyn_smem_cap(kGroupMaxBytes))));
        });
        // H200, ncu, 4 layers at ctx 64 (160 rows of capacity): 4 rows a block 31.7 µs
        // against 16 rows 50.1; at 640 rows 4 rows a block is 5 waves of blocks (64.6 vs
        // 62.8), so 16 there.
        const uint32_t rb = group_rows(a.cap_rows, a.n_head / kGroupHeads);
        const auto row_blocks = static_cast<unsigned>((a.cap_rows + rb - 1) / rb);
        const auto kernel = rb == 4   ? attend_group_scores_kernel<4>
                            : rb == 8 ? attend_group_scores_kernel<8>
                                      : attend_group_scores_kernel<16>;
        launch_pdl("launch of attend_group_scores_kernel", kernel, dim3(row_blocks, a.n_head / kGroupHeads),
                   dim3(kGroupThreads), 0, s, a);
        launch_pdl("launch of attend_group_sum_kernel", attend_group_sum_kernel,
                   dim3(a.hd / kGroupCols, a.n_head / kGroupHeads), dim3(kGroupThreads), group_bytes, s, a);
        return;
    }
    const uint64_t bytes = a.cap_rows * (sizeof(const float*) + sizeof(float));
    // even halves whose rope pairs do not straddle the split
    if (g_attend_mode != AttendMode::OneBlock && a.hd % (2 * kAttendSplit) == 0 && a.rope_dim <= a.hd / kAttendSplit &&
        bytes <= dyn_smem_cap(kAttendSplitMaxBytes)) {
        if (bytes > 32 * 1024)
            DS4_CUDA_CHECK(cudaFuncSetAttribute(attend_split_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(dyn_smem_cap(kAttendSplitMaxBytes))));
        launch_pdl("launch of attend_split_kernel", attend_split_kernel, dim3(a.n_head, kAttendSplit),
                   dim3(kAttendThreads), bytes, s, a);
        return;
    }
    launch_pdl("launch of attend_kernel", attend_kernel, dim3(a.n_head), dim3(256), 0, s, a);
}

}  // namespace ds4::cuda
