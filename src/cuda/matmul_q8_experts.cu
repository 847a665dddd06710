// Grouped int8-activation products of the routed experts; contract and numerics in
// matmul_q8_experts.h. The work of a launch is a list of warp items (token chunk,
// active slot, matrix, row group of R rows), numbered so that the valid ones of the
// first token chunk come first: a persistent warp walks items w, w + n_warps, ... and
// keeps the copy of the next item's (or chunk's) weights in flight while it computes
// the current one, as matmul_q8.cu's kernel does for one matrix. Why grouped: the
// exact expert kernel is issue bound (f32 dequantization, ~8 instructions a weight);
// here a weight costs ~1-2, and one launch keeps all active experts' rows in flight.
#include "cuda/matmul_q8_experts.h"

#include <algorithm>
#include <bit>
#include <type_traits>

#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/pdl.cuh"
#include "cuda/device_math.cuh"
#include "cuda/matmul_q8.h"
#include "cuda/matmul_q8_formats.cuh"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

using q8::IQ2XXSFast, q8::Iq2Tables, q8::kChunkBytes, q8::load_xblock, q8::Q2KFast, q8::Q4KFast, q8::stage_async,
    q8::WBlock, q8::XBlock;

constexpr int kR = 4;  // rows per warp item: one activation block serves 4 rows
constexpr uint32_t kNone = ~0u;

struct Args {
    const uint8_t* w[2];
    float* y[2];
    uint64_t slab_bytes, row_bytes, tok_bytes, y_stride;
    uint32_t rows, n_groups, n_chunks, n_rg, n_mat, cols, max_slots, n_tc;
    uint32_t rg_shift, rg_live;  // log2(n_rg); the matrix's row groups (n_rg: that rounded up to a power of two)
    bool wide;
    const uint8_t* xq;
    const uint32_t *expert, *begin, *count, *n_active;
    const uint32_t* iq2;
};

// IQ2XXSFast's int8 words, its selector tables indexed directly as __shared__ arrays (an
// address register plus the array's offset; through Iq2Tables' generic pointers each
// lookup cost one add more), and the scale integer: 8 chained dp4a times 2s + 1, the
// 1/8 folded into the f16 d (exact). Another order of f32 roundings than IQ2XXSFast's,
// the same in every NT. (H200, ncu, batch 1: 13.3 → 11.8 M instructions a launch with
// the row loop below; lane-private table copies, 48 KB a block of 32 warps, were slower:
// 29.5 µs a launch against 25.2.)
__shared__ uint32_t s_iq2_grid[256];
__shared__ uint32_t s_iq2_sign[128];

struct Iq2Sh {
    static constexpr int kGroupBytes = 66, kChunkGroups = 8;
    __device__ static void decode(const uint8_t* g, int blk, WBlock& w) {
        const uint8_t* q = g + 2 + 8 * blk;
        const uint32_t i0 = q8::sm_u16(q), i1 = q8::sm_u16(q + 2);
        const uint32_t aux = q8::sm_u16(q + 4) | (q8::sm_u16(q + 6) << 16);
        const uint32_t idx[4] = {i0 & 0xff, i0 >> 8, i1 & 0xff, i1 >> 8};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const uint32_t sel = s_iq2_grid[idx[k]] | s_iq2_sign[(aux >> (7 * k)) & 127];
            w.v[2 * k] = static_cast<int>(q8::prmt_low_nibbles(IQ2XXSFast::kPos, IQ2XXSFast::kNeg, sel));
            w.v[2 * k + 1] = static_cast<int>(q8::prmt_low_nibbles(IQ2XXSFast::kPos, IQ2XXSFast::kNeg, sel >> 16));
        }
        w.s0 = static_cast<int>(2 * (aux >> 28) + 1);
        w.a = q8::f16(q8::sm_u16(g)) * 0.125f;
    }
    __device__ static float dot(const WBlock& w, const XBlock& x) {
        int s = 0;
#pragma unroll
        for (int k = 0; k < 8; ++k) s = __dp4a(w.v[k], x.q[k], s);
        return x.d * w.a * static_cast<float>(s * w.s0);
    }
};

constexpr int kWarps = 4;  // warps per block
template <class F>
constexpr uint32_t kStageOf = kChunkBytes<F> + 16;  // bytes a staged row

template <class F>
__device__ __forceinline__ void decode(const uint8_t* g, int blk, WBlock& w) {
    if constexpr (std::is_same_v<F, Iq2Sh>)
        Iq2Sh::decode(g, blk, w);
    else
        F::decode(g, blk, w, Iq2Tables{nullptr, nullptr});
}

struct Item {  // R rows of one expert matrix by up to NT of that expert's tokens
    uint32_t k = kNone;  // index in the launch's item list
    uint32_t row0 = 0, n_rows = 0, n_tok = 0;
    const uint8_t* w = nullptr;  // the item's first row
    const uint8_t* x = nullptr;  // its first token's record
    float* y = nullptr;          // that token's output, at row0
};

// The first valid item at k, k + stride, ... (uniform across the warp: every lane reads
// the same group words). Item k = ((tc · slots + slot) · n_mat + mat) · n_rg + rg, n_rg
// a power of two (items past the live row groups are skipped) and n_mat 1 or 2: shifts,
// so an item costs one division, and none for a single token chunk.
template <int NT>
__device__ Item find_item(const Args& a, uint32_t k, uint32_t stride, uint32_t total, uint32_t per_tc) {
    for (; k < total; k += stride) {
        const uint32_t tc = a.n_tc == 1 ? 0 : k / per_tc, rem = k - tc * per_tc;
        const uint32_t rg = rem & (a.n_rg - 1), sm = rem >> a.rg_shift;
        const uint32_t mat = sm & (a.n_mat - 1), slot = sm >> (a.n_mat - 1);
        if (rg >= a.rg_live) continue;  // n_rg is rounded up to a power of two
        const uint32_t count = a.count[slot], t0 = tc * NT;
        if (t0 >= count) continue;
        Item it;
        it.k = k;
        it.row0 = rg * kR;
        it.n_rows = min(static_cast<uint32_t>(kR), a.rows - it.row0);
        it.n_tok = min(static_cast<uint32_t>(NT), count - t0);
        const uint64_t p0 = uint64_t{a.begin[slot]} + t0;
        it.w = a.w[mat] + a.expert[slot] * a.slab_bytes + uint64_t{it.row0} * a.row_bytes;
        it.x = a.xq + p0 * a.tok_bytes;
        it.y = a.y[mat] + p0 * a.y_stride + it.row0;
        return it;
    }
    return Item{};
}

// Every row of an item is decoded and dotted, also rows past the matrix in the last row
// group (their shared buffer holds stale bytes; their sums are never stored): no branch
// per row, so the four rows' shared-memory chains interleave.
template <class F, int NT>
__global__ void __launch_bounds__(kWarps * 32) q8_experts_kernel(const Args a) {
    dev::pdl_wait_and_release();
    __shared__ __align__(16) uint8_t stages[kWarps][2][kR][kStageOf<F>];
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    uint8_t* const stage = stages[warp][0][0];  // this warp's buffers [2][kR]
    const uint32_t n_warps = gridDim.x * kWarps;
    const uint32_t per_tc = min(*a.n_active, a.max_slots) * a.n_mat * a.n_rg, total = per_tc * a.n_tc;
    Item cur = find_item<NT>(a, blockIdx.x * kWarps + warp, n_warps, total, per_tc);
    const int blk = static_cast<int>(lane % 8);

    const auto issue = [&](const Item& it, uint32_t chunk, int buf) {
        const uint32_t g0 = chunk * F::kChunkGroups;
        const uint32_t bytes = min(static_cast<uint32_t>(F::kChunkGroups), a.n_groups - g0) * F::kGroupBytes;
#pragma unroll
        for (int r = 0; r < kR; ++r)
            if (static_cast<uint32_t>(r) < it.n_rows)
                stage_async(stage + (buf * kR + r) * kStageOf<F>,
                            it.w + r * a.row_bytes + uint64_t{g0} * F::kGroupBytes, bytes, a.wide, lane);
        __pipeline_commit();
    };

    float acc[kR][NT];
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;
    uint32_t chunk = 0;
    int buf = 0;
    // the first copy goes out before the tables are read: its memory latency covers theirs
    if (cur.k != kNone) issue(cur, 0, 0);
    if constexpr (std::is_same_v<F, Iq2Sh>) {  // before any warp returns: every thread reaches the barrier
        q8::load_iq2_selectors(a.iq2, s_iq2_grid, s_iq2_sign);
        __syncthreads();
    }
    if (cur.k == kNone) return;
    for (;;) {
        Item next = cur;
        uint32_t next_chunk = chunk + 1;
        if (next_chunk == a.n_chunks) next_chunk = 0, next = find_item<NT>(a, cur.k + n_warps, n_warps, total, per_tc);
        const bool has_next = next.k != kNone;
        if (has_next) {
            issue(next, next_chunk, buf ^ 1);  // that buffer was released by the last __syncwarp
            __pipeline_wait_prior(1);
        } else {
            __pipeline_wait_prior(0);
        }
        __syncwarp();
        const uint32_t g0 = chunk * F::kChunkGroups;
        const uint32_t ng = min(static_cast<uint32_t>(F::kChunkGroups), a.n_groups - g0);
        const uint8_t* wb0 = stage + buf * kR * kStageOf<F>;
#pragma unroll
        for (uint32_t p = 0; p < F::kChunkGroups; p += 4) {
            const uint32_t gi = p + lane / 8;
            if (gi >= ng) continue;
            const uint64_t block = uint64_t{g0 + gi} * 8 + blk;
            const uint8_t* wg = wb0 + gi * F::kGroupBytes;
            // __fadd_rn: no contraction into the dot's product, so a token's sum is the
            // same sequence of roundings in every NT instance and either loop order
            if constexpr (NT <= 2) {  // few tokens: their blocks first, then row by row (fewer registers)
                XBlock xb[NT];
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    if (NT == 1 || static_cast<uint32_t>(t) < cur.n_tok)
                        xb[t] = load_xblock(cur.x + t * a.tok_bytes, a.cols, block);
#pragma unroll
                for (int r = 0; r < kR; ++r) {
                    WBlock wb;
                    decode<F>(wg + r * kStageOf<F>, blk, wb);
#pragma unroll
                    for (int t = 0; t < NT; ++t)
                        if (NT == 1 || static_cast<uint32_t>(t) < cur.n_tok)
                            acc[r][t] = __fadd_rn(acc[r][t], F::dot(wb, xb[t]));
                }
            } else {  // each row's block decoded once, then dotted with every token's block
                WBlock wb[kR];
#pragma unroll
                for (int r = 0; r < kR; ++r) decode<F>(wg + r * kStageOf<F>, blk, wb[r]);
#pragma unroll
                for (int t = 0; t < NT; ++t) {
                    if (static_cast<uint32_t>(t) >= cur.n_tok) break;
                    const XBlock xb = load_xblock(cur.x + t * a.tok_bytes, a.cols, block);
#pragma unroll
                    for (int r = 0; r < kR; ++r) acc[r][t] = __fadd_rn(acc[r][t], F::dot(wb[r], xb));
                }
            }
        }
        __syncwarp();  // every lane is done with this buffer before it is refilled
        if (chunk + 1 == a.n_chunks) {  // item complete: reduce across the warp
#pragma unroll
            for (int r = 0; r < kR; ++r) {
#pragma unroll
                for (int t = 0; t < NT; ++t) {
                    const float s = dev::warp_sum(acc[r][t]);
                    if (lane == 0 && static_cast<uint32_t>(r) < cur.n_rows && static_cast<uint32_t>(t) < cur.n_tok)
                        cur.y[t * a.y_stride + r] = s;
                    acc[r][t] = 0.f;
                }
            }
        }
        if (!has_next) break;
        cur = next, chunk = next_chunk, buf ^= 1;
    }
}

// Blocks that fit on the device at once: the persistent grid never exceeds it.
template <class F, int NT>
unsigned resident_blocks() {
    static const unsigned n = device_resident_blocks(q8_experts_kernel<F, NT>, kWarps * 32);
    return n;
}

template <class F, int NT>
void launch_nt(Args a, cudaStream_t s) {
    a.n_chunks = (a.n_groups + F::kChunkGroups - 1) / F::kChunkGroups;
    const uint64_t worst = uint64_t{a.n_tc} * a.max_slots * a.n_mat * a.n_rg;
    if (worst >= (uint64_t{1} << 31)) fail("cuda matmul_experts_q8: ", worst, " warp items, too many");
    const uint64_t wanted = (worst + kWarps - 1) / kWarps;
    const auto grid = static_cast<unsigned>(std::min<uint64_t>(wanted, resident_blocks<F, NT>()));
    launch_pdl("launch of q8_experts_kernel", q8_experts_kernel<F, NT>, dim3(grid), dim3(kWarps * 32), 0, s, a);
}

uint32_t g_max_chunk = kQ8ExpertsMaxChunk;

// Token chunks of NT = 1, 2, 4 or 8 (from the bound, not the routing: a graph's replays
// keep the choice; any choice gives a token the same bits), at most g_max_chunk.
template <class F>
void launch(Args a, uint32_t max_tokens, cudaStream_t s) {
    a.iq2 = std::is_same_v<F, Iq2Sh> ? q8_iq2_selectors() : nullptr;
    const uint32_t nt = std::min(max_tokens >= 5 ? 8 : max_tokens >= 3 ? 4 : max_tokens, g_max_chunk);
    a.n_tc = (max_tokens + nt - 1) / nt;
    switch (nt) {
        case 1: return launch_nt<F, 1>(a, s);
        case 2: return launch_nt<F, 2>(a, s);
        case 4: return launch_nt<F, 4>(a, s);
        default: return launch_nt<F, 8>(a, s);
    }
}

uint64_t group_bytes(GgmlType t) { return t == GgmlType::IQ2_XXS ? 66 : t == GgmlType::Q2_K ? 84 : 144; }

}  // namespace

void set_q8_experts_max_chunk(uint32_t nt) { g_max_chunk = nt >= 8 ? 8 : nt >= 4 ? 4 : nt >= 2 ? 2 : 1; }

bool matmul_experts_q8_supported(GgmlType t, uint64_t cols, const void* w) {
    const bool type_ok = t == GgmlType::IQ2_XXS || t == GgmlType::Q2_K || t == GgmlType::Q4_K;
    return type_ok && cols > 0 && cols % 256 == 0 && cols <= (uint64_t{1} << 30) &&
           reinterpret_cast<uintptr_t>(w) % 2 == 0;
}

void matmul_experts_q8(GgmlType type, const void* w0, const void* w1, uint64_t slab_rows, uint64_t cols,
                       const void* xq, float* y0, float* y1, uint64_t y_stride, const ExpertGroups& g,
                       uint32_t max_slots, uint32_t max_tokens, cudaStream_t s) {
    if (slab_rows == 0 || max_slots == 0 || max_tokens == 0) return;
    if (!matmul_experts_q8_supported(type, cols, w0) || (w1 != nullptr && !matmul_experts_q8_supported(type, cols, w1)))
        fail("cuda matmul_experts_q8: unsupported type, shape or alignment");
    if (slab_rows > 0x7fffffffu) fail("cuda matmul_experts_q8: ", slab_rows, " rows, at most 2^31 - 1");
    if (reinterpret_cast<uintptr_t>(xq) % 16 != 0) fail("cuda matmul_experts_q8: xq is not 16-byte aligned");
    Args a{};
    a.w[0] = static_cast<const uint8_t*>(w0), a.w[1] = static_cast<const uint8_t*>(w1);
    a.y[0] = y0, a.y[1] = y1;
    a.row_bytes = cols / 256 * group_bytes(type);
    a.slab_bytes = slab_rows * a.row_bytes;
    a.tok_bytes = q8_token_bytes(cols);
    a.y_stride = y_stride;
    a.rows = static_cast<uint32_t>(slab_rows);
    a.n_groups = static_cast<uint32_t>(cols / 256);
    a.rg_live = static_cast<uint32_t>((slab_rows + kR - 1) / kR);
    a.n_rg = std::bit_ceil(a.rg_live);
    a.rg_shift = static_cast<uint32_t>(std::countr_zero(a.n_rg));
    a.n_mat = w1 != nullptr ? 2 : 1;
    a.cols = static_cast<uint32_t>(cols);
    a.max_slots = max_slots;
    const auto aligned16 = [&](const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    a.wide = a.row_bytes % 16 == 0 && aligned16(w0) && aligned16(w1);
    a.xq = static_cast<const uint8_t*>(xq);
    a.expert = g.expert, a.begin = g.begin, a.count = g.count, a.n_active = g.n_active;
    switch (type) {
        case GgmlType::IQ2_XXS: return launch<Iq2Sh>(a, max_tokens, s);
        case GgmlType::Q2_K: return launch<Q2KFast>(a, max_tokens, s);
        default: return launch<Q4KFast>(a, max_tokens, s);
    }
}

}  // namespace ds4::cuda
