// Device code of the indexer's fast top k (issue 8; indexer_fast.h), shared by the
// per-token kernels (indexer_fast.cu) and the batched ones (attention_batch.cu), which
// differ only in where a token's query, rows and row count are found.
//  - scores: q staged in shared memory once per block, every warp scores rows with the
//    (up to) 32 heads of a group reduced together (a transposed butterfly: 31 shuffles
//    for 32 heads instead of 5 per head). Each head's dot is the same fma chain per lane and the
//    same pairwise tree as dev::warp_sum (only the operands of an add swap sides), and
//    the heads are summed in the same order, so each score has the same bits as
//    attn::indexer_score.
//  - selection: one block, an exact radix select (8 bits a pass) over the 64-bit key
//    (score descending, row ascending), then a bitonic sort of the k winners: the rows
//    and order of attn::topk_rank (which ranks every row against every other, n² reads).
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/indexer_fast.h"

namespace ds4::cuda::ixf {

constexpr uint32_t kScoreWarps = 8;
constexpr uint32_t kSelectThreads = 1024;
constexpr uint32_t kFull = 0xffffffffu;

// The head group of score_rows: the largest power of two ≤ 32 that divides n_heads.
__host__ __device__ constexpr uint32_t head_group(uint32_t n_heads) {
    uint32_t g = 32;
    while (n_heads % g != 0) g /= 2;
    return g;
}

// Calls f(std::integral_constant<uint32_t, G>{}) with G = head_group(n_heads).
template <class F>
void with_head_group(uint32_t n_heads, F&& f) {
    switch (head_group(n_heads)) {
        case 32:
            f(std::integral_constant<uint32_t, 32>{});
            break;
        case 16:
            f(std::integral_constant<uint32_t, 16>{});
            break;
        case 8:
            f(std::integral_constant<uint32_t, 8>{});
            break;
        case 4:
            f(std::integral_constant<uint32_t, 4>{});
            break;
        case 2:
            f(std::integral_constant<uint32_t, 2>{});
            break;
        default:
            f(std::integral_constant<uint32_t, 1>{});
            break;
    }
}

// One step of dev::warp_sum's tree (xor O) over the M heads a lane holds: with M > 1 the
// lane with bit O keeps the upper half and adds its partner's value of the same head
// (M/2 left); with M = 1 a plain butterfly add.
template <uint32_t O, uint32_t M, uint32_t G>
__device__ inline void fold(float (&part)[G], uint32_t lane) {
    if constexpr (M == 1) {
        part[0] += __shfl_xor_sync(kFull, part[0], O);
    } else {
        const bool upper = (lane & O) != 0;
#pragma unroll
        for (uint32_t i = 0; i < M / 2; ++i) {
            const float send = upper ? part[i] : part[i + M / 2];
            const float keep = upper ? part[i + M / 2] : part[i];
            part[i] = keep + __shfl_xor_sync(kFull, send, O);
        }
    }
}

// The G heads h0..h0+G−1 (G a power of two ≤ 32) of one row: lane L returns head
// h0 + L/(32/G)'s Σ over lanes of q_h·k, with the tree of dev::warp_sum. qs: [n_heads][d]
// in shared memory.
template <uint32_t G>
__device__ inline float group_dots(const float* qs, const float* k, uint32_t d, uint32_t h0,
                                   uint32_t lane) {
    float part[G];
#pragma unroll
    for (uint32_t h = 0; h < G; ++h) part[h] = 0.0f;
    for (uint32_t j = lane; j < d; j += 32) {
        const float kj = k[j];
#pragma unroll
        for (uint32_t h = 0; h < G; ++h) part[h] = fmaf(qs[(h0 + h) * d + j], kj, part[h]);
    }
    fold<16, G, G>(part, lane);
    fold<8, (G > 1 ? G / 2 : 1), G>(part, lane);
    fold<4, (G > 2 ? G / 4 : 1), G>(part, lane);
    fold<2, (G > 4 ? G / 8 : 1), G>(part, lane);
    fold<1, (G > 8 ? G / 16 : 1), G>(part, lane);
    return part[0];
}

// Rows c < n of one query (block / n_blocks: this block's share, kScoreWarps rows a
// round): scores[c] = Σ_h w_h·relu(q_h·k_c), heads summed in order, G heads at a time
// (G divides n_heads). Every thread of the block calls it; qs: n_heads·d shared floats.
template <uint32_t G>
__device__ inline void score_rows(float* qs, const float* q, const float* w, const float* rows,
                                  uint32_t n, uint32_t d, uint32_t n_heads, float* scores,
                                  uint32_t block, uint32_t n_blocks) {
    for (uint32_t i = threadIdx.x; i < n_heads * d; i += blockDim.x) qs[i] = q[i];
    __syncthreads();
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (uint32_t c = block * kScoreWarps + warp; c < n; c += n_blocks * kScoreWarps) {
        const float* k = rows + uint64_t{c} * d;
        float s = 0.0f;
        for (uint32_t h0 = 0; h0 < n_heads; h0 += G) {
            const float p =
                __fmul_rn(fmaxf(group_dots<G>(qs, k, d, h0, lane), 0.0f), w[h0 + lane / (32 / G)]);
            for (uint32_t h = 0; h < G; ++h) s = __fadd_rn(s, __shfl_sync(kFull, p, h * (32 / G)));
        }
        if (lane == 0) scores[c] = s;
    }
}

// Smaller key = earlier rank: the score descending (−0 as +0, as the float compare),
// then the row ascending in the low idx_bits.
__device__ inline uint64_t rank_key(float v, uint32_t c, uint32_t idx_bits) {
    uint32_t u = __float_as_uint(v);
    if ((u << 1) == 0) u = 0;
    u = (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);  // ascending with v
    return (uint64_t{~u} << idx_bits) | c;
}

struct SelectShared {
    uint32_t hist[256];
    uint32_t digit, need, done, count;
    unsigned long long list[kIndexerFastMaxK];
};

// Bin counts of the keys that share the resolved prefix (bits ≥ shift), by the next w bits.
__device__ inline void histogram(SelectShared& sh, const float* scores, uint32_t n,
                                 uint32_t idx_bits, uint64_t prefix, uint32_t shift,
                                 uint32_t nshift) {
    const uint32_t lane = threadIdx.x % 32;
    for (uint32_t base = 0; base < n; base += blockDim.x) {  // every lane of a warp in each round
        const uint32_t c = base + threadIdx.x;
        uint32_t bin = 256;
        if (c < n) {
            const uint64_t key = rank_key(scores[c], c, idx_bits);
            if ((key >> shift) == (prefix >> shift))
                bin = static_cast<uint32_t>(key >> nshift) & ((1u << (shift - nshift)) - 1);
        }
        const uint32_t peers = __match_any_sync(kFull, bin);  // one atomic per bin and warp
        if (bin < 256 && lane == __ffs(peers) - 1) atomicAdd(&sh.hist[bin], __popc(peers));
    }
}

// Warp 0: the bin holding the need-th key, how many are still needed from it, and whether
// that is the whole bin (then the selection is complete).
__device__ inline void pick_bin(SelectShared& sh) {
    if (threadIdx.x >= 32) return;
    const uint32_t lane = threadIdx.x;
    uint32_t local = 0;
    for (uint32_t b = 0; b < 8; ++b) local += sh.hist[lane * 8 + b];
    uint32_t incl = local;
    for (uint32_t o = 1; o < 32; o *= 2) {
        const uint32_t v = __shfl_up_sync(kFull, incl, o);
        if (lane >= o) incl += v;
    }
    const uint32_t excl = incl - local, need = sh.need;
    if (excl < need && need <= incl) {
        uint32_t below = excl;
        for (uint32_t b = lane * 8;; ++b) {
            if (below + sh.hist[b] >= need) {
                sh.digit = b;
                sh.need = need - below;
                sh.done = sh.hist[b] == need - below ? 1u : 0u;
                break;
            }
            below += sh.hist[b];
        }
    }
}

// The top k of scores[0..n) (n > k) by (score descending, row ascending) into sel[0..k)
// in that order. One block of kSelectThreads calls it with its shared state.
__device__ inline void select_topk(SelectShared& sh, const float* scores, uint32_t n, uint32_t k,
                                   uint32_t* sel) {
    const uint32_t idx_bits = 32 - __clz(n - 1);  // n ≤ 2^31: keys fit 63 bits
    uint64_t prefix = 0;
    uint32_t shift = 32 + idx_bits;
    if (threadIdx.x == 0) sh.need = k;
    while (shift > 0) {
        const uint32_t nshift = shift > 8 ? shift - 8 : 0;
        for (uint32_t b = threadIdx.x; b < 256; b += blockDim.x) sh.hist[b] = 0;
        __syncthreads();
        histogram(sh, scores, n, idx_bits, prefix, shift, nshift);
        __syncthreads();
        pick_bin(sh);
        __syncthreads();
        prefix |= uint64_t{sh.digit} << nshift;
        shift = nshift;
        const bool done = sh.done != 0;
        __syncthreads();  // sh.need / sh.done are rewritten by the next pass
        if (done) break;
    }
    // the k keys whose resolved prefix is ≤ the picked one, then sorted ascending
    uint32_t p2 = 1;
    while (p2 < k) p2 *= 2;
    if (threadIdx.x == 0) sh.count = 0;
    for (uint32_t i = threadIdx.x; i < p2; i += blockDim.x) sh.list[i] = ~0ull;
    __syncthreads();
    for (uint32_t c = threadIdx.x; c < n; c += blockDim.x) {
        const uint64_t key = rank_key(scores[c], c, idx_bits);
        if ((key >> shift) <= (prefix >> shift)) {
            const uint32_t slot = atomicAdd(&sh.count, 1u);
            if (slot < p2) sh.list[slot] = key;  // exactly k (the select is exact)
        }
    }
    __syncthreads();
    for (uint32_t size = 2; size <= p2; size *= 2) {
        for (uint32_t stride = size / 2; stride > 0; stride /= 2) {
            for (uint32_t i = threadIdx.x; i < p2 / 2; i += blockDim.x) {
                const uint32_t lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                const bool ascending = (lo & size) == 0;
                const unsigned long long a = sh.list[lo], b = sh.list[hi];
                if ((a > b) == ascending) {
                    sh.list[lo] = b;
                    sh.list[hi] = a;
                }
            }
            __syncthreads();
        }
    }
    const uint64_t mask = (uint64_t{1} << idx_bits) - 1;
    for (uint32_t i = threadIdx.x; i < k; i += blockDim.x)
        sel[i] = static_cast<uint32_t>(sh.list[i] & mask);
}

}  // namespace ds4::cuda::ixf
