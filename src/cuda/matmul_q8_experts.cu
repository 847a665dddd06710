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

constexpr int kWarps = 4;  // warps per block
constexpr int kR = 4;      // rows per warp item: one activation block serves 4 rows
constexpr uint32_t kNone = ~0u;

struct Args {
    const uint8_t* w[2];
    float* y[2];
    uint64_t slab_bytes, row_bytes, tok_bytes, y_stride;
    uint32_t rows, n_groups, n_chunks, n_rg, n_mat, cols, max_slots, n_tc;
    bool wide;
    const uint8_t* xq;
    const uint32_t *expert, *begin, *count, *n_active;
    const uint32_t* iq2;
};

struct Item {  // R rows of one expert matrix by up to NT of that expert's tokens
    uint32_t k = kNone;  // index in the launch's item list
    uint32_t row0 = 0, n_rows = 0, n_tok = 0;
    const uint8_t* w = nullptr;  // the item's first row
    const uint8_t* x = nullptr;  // its first token's record
    float* y = nullptr;          // that token's output, at row0
};

// The first valid item at k, k + stride, ... (uniform across the warp: every lane reads
// the same group words).
template <int NT>
__device__ Item find_item(const Args& a, uint32_t k, uint32_t stride, uint32_t total, uint32_t per_tc) {
    const uint32_t per_slot = a.n_mat * a.n_rg;
    for (; k < total; k += stride) {
        const uint32_t tc = k / per_tc, rem = k % per_tc;
        const uint32_t slot = rem / per_slot, mat = rem % per_slot / a.n_rg, rg = rem % a.n_rg;
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

template <class F, int NT>
__global__ void __launch_bounds__(kWarps * 32) q8_experts_kernel(const Args a) {
    dev::pdl_wait_and_release();
    __shared__ __align__(16) uint8_t smem[kWarps][2][kR][kChunkBytes<F> + 16];
    constexpr bool kIq2 = std::is_same_v<F, IQ2XXSFast>;
    __shared__ uint32_t s_grid[kIq2 ? 256 : 1];
    __shared__ uint32_t s_sign[kIq2 ? 128 : 1];
    if constexpr (kIq2) {  // before any warp returns: every thread reaches the barrier
        q8::load_iq2_selectors(a.iq2, s_grid, s_sign);
        __syncthreads();
    }
    const Iq2Tables tab{s_grid, s_sign};
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint32_t n_warps = gridDim.x * kWarps;
    const uint32_t per_tc = min(*a.n_active, a.max_slots) * a.n_mat * a.n_rg, total = per_tc * a.n_tc;
    Item cur = find_item<NT>(a, blockIdx.x * kWarps + warp, n_warps, total, per_tc);
    if (cur.k == kNone) return;
    const int blk = static_cast<int>(lane % 8);

    const auto issue = [&](const Item& it, uint32_t chunk, int buf) {
        const uint32_t g0 = chunk * F::kChunkGroups;
        const uint32_t bytes = min(static_cast<uint32_t>(F::kChunkGroups), a.n_groups - g0) * F::kGroupBytes;
#pragma unroll
        for (int r = 0; r < kR; ++r)
            if (static_cast<uint32_t>(r) < it.n_rows)
                stage_async(smem[warp][buf][r], it.w + r * a.row_bytes + uint64_t{g0} * F::kGroupBytes, bytes, a.wide,
                            lane);
        __pipeline_commit();
    };

    float acc[kR][NT];
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;
    uint32_t chunk = 0;
    int buf = 0;
    issue(cur, 0, 0);
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
#pragma unroll
        for (uint32_t p = 0; p < F::kChunkGroups; p += 4) {
            const uint32_t gi = p + lane / 8;
            if (gi >= ng) continue;
            const uint64_t block = uint64_t{g0 + gi} * 8 + blk;
            // __fadd_rn: no contraction into the dot's product, so a token's sum is the
            // same sequence of roundings in every NT instance and either loop order
            if constexpr (NT <= 2) {  // few tokens: their blocks first, then row by row (fewer registers)
                XBlock xb[NT];
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    if (static_cast<uint32_t>(t) < cur.n_tok) xb[t] = load_xblock(cur.x + t * a.tok_bytes, a.cols, block);
#pragma unroll
                for (int r = 0; r < kR; ++r) {
                    if (static_cast<uint32_t>(r) >= cur.n_rows) break;
                    WBlock wb;
                    F::decode(smem[warp][buf][r] + gi * F::kGroupBytes, blk, wb, tab);
#pragma unroll
                    for (int t = 0; t < NT; ++t)
                        if (static_cast<uint32_t>(t) < cur.n_tok) acc[r][t] = __fadd_rn(acc[r][t], F::dot(wb, xb[t]));
                }
            } else {  // each row's block decoded once, then dotted with every token's block
                WBlock wb[kR];
#pragma unroll
                for (int r = 0; r < kR; ++r)
                    if (static_cast<uint32_t>(r) < cur.n_rows) F::decode(smem[warp][buf][r] + gi * F::kGroupBytes, blk, wb[r], tab);
#pragma unroll
                for (int t = 0; t < NT; ++t) {
                    if (static_cast<uint32_t>(t) >= cur.n_tok) break;
                    const XBlock xb = load_xblock(cur.x + t * a.tok_bytes, a.cols, block);
#pragma unroll
                    for (int r = 0; r < kR; ++r)
                        if (static_cast<uint32_t>(r) < cur.n_rows) acc[r][t] = __fadd_rn(acc[r][t], F::dot(wb[r], xb));
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

// Token chunks of NT = 1, 2, 4 or 8 (from the bound, not the routing: a graph's replays
// keep the choice; any choice gives a token the same bits).
template <class F>
void launch(Args a, uint32_t max_tokens, cudaStream_t s) {
    a.iq2 = std::is_same_v<F, IQ2XXSFast> ? q8_iq2_selectors() : nullptr;
    const uint32_t nt = max_tokens >= 5 ? 8 : max_tokens >= 3 ? 4 : max_tokens;
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
    a.n_rg = static_cast<uint32_t>((slab_rows + kR - 1) / kR);
    a.n_mat = w1 != nullptr ? 2 : 1;
    a.cols = static_cast<uint32_t>(cols);
    a.max_slots = max_slots;
    const auto aligned16 = [&](const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    a.wide = a.row_bytes % 16 == 0 && aligned16(w0) && aligned16(w1);
    a.xq = static_cast<const uint8_t*>(xq);
    a.expert = g.expert, a.begin = g.begin, a.count = g.count, a.n_active = g.n_active;
    switch (type) {
        case GgmlType::IQ2_XXS: return launch<IQ2XXSFast>(a, max_tokens, s);
        case GgmlType::Q2_K: return launch<Q2KFast>(a, max_tokens, s);
        default: return launch<Q4KFast>(a, max_tokens, s);
    }
}

}  // namespace ds4::cuda
