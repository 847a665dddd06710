// Tensor-core (int8 mma.sync) products of repacked Q8_0 weights with int8 activations;
// contract and numerics in matmul_mma.h.
//
// Block: 8 warps, a tile of kBM = 128 weight rows (16 per warp: one m16 fragment) by BN
// tokens (BN / 8 n8 fragments per warp). The columns go by stages of 256 bytes of a q8r
// row (8 Q8_0 blocks: half a 512-column span, or a whole 256-column one), copied with
// cp.async into a kStages-deep ring of shared-memory buffers, so the loads of the next
// stages overlap the mma of this one. The activations are quantized into the weights'
// q8r order (quantize_mma_activations), so both operands keep the layout they have in
// global memory: a lane's 4K-byte chunk holds word k (k < K) of the blocks 4k + g, and one
// 16-byte (K = 4) or 8-byte (K = 2) shared load gives a fragment register for K blocks.
// Rows are padded by 16K bytes so that those loads of 8 rows hit distinct banks.
//
// Split-K (issue 8, batches of 16-128 tokens): a row's stages fall into mma_chunks(cols)
// chunks of a fixed length (a function of cols only); a (row, token) result is
// ((0 + c_0) + c_1) + ... where c_j is the chunk's own fmaf chain from zero. A block
// either walks all chunks itself (large grids: prefill) or does one chunk (blockIdx.z)
// and writes c_j to a scratch that reduce_split_kernel adds in the same order: the bits
// are the same either way, so the launcher may pick by grid size.
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/device_math.cuh"
#include "cuda/pdl.cuh"
#include "cuda/env_switch.h"
#include "cuda/matmul_mma.h"
#include "cuda/mma_s8.cuh"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

using mma::cp_async16, mma::cp_async_commit, mma::cp_async_wait, mma::device_has_mma, mma::mma_f16_acc, mma::mma_s8,
    mma::s32_to_f32;

constexpr uint32_t kWarps = 8;
constexpr uint32_t kThreads = 32 * kWarps;
constexpr uint32_t kBM = 16 * kWarps;
constexpr uint32_t kStageBytes = 256;  // bytes of a row per stage: 8 blocks of 32 codes
constexpr uint32_t kStages = 3;
constexpr uint32_t kTokAlign = 64;     // token padding of the activations (the largest BN)

constexpr uint32_t kMaxChunks = 8;   // split-K chunks of a row at most
constexpr uint32_t kMinChunkStages = 4;
constexpr uint32_t kSplitMaxBlocks = 160;  // split when the 32-token grid has at most this many blocks

static_assert(kMmaSplitScratchFloats >= uint64_t{kMaxChunks} * kSplitMaxBlocks * kBM * 32,
              "the split scratch holds every chunk of the largest grid that splits");

uint32_t k_words(uint64_t cols) { return cols % 512 == 0 ? 4 : 2; }  // q8r: span 512 or 256
// Stages per chunk: the row cut into up to kMaxChunks chunks of at least kMinChunkStages
// stages (cols only: the summation order never depends on the pass).
uint32_t chunk_stages(uint64_t cols) {
    const auto n_st = static_cast<uint32_t>(cols / kStageBytes);
    const uint32_t want = std::clamp(n_st / kMinChunkStages, 1u, kMaxChunks);
    return (n_st + want - 1) / want;
}
uint32_t n_chunks(uint64_t cols) {
    const auto n_st = static_cast<uint32_t>(cols / kStageBytes);
    return (n_st + chunk_stages(cols) - 1) / chunk_stages(cols);
}
uint64_t padded_tokens(uint32_t n_tok) { return (uint64_t{n_tok} + kTokAlign - 1) / kTokAlign * kTokAlign; }

template <int K, int BN>
struct Stage {
    static constexpr uint32_t kRow = kStageBytes + 16 * K;  // ≡ 64 (K = 4) / 32 (K = 2) mod 128 bytes
    alignas(16) uint8_t a[kBM][kRow];
    alignas(16) uint8_t b[BN][kRow];
    alignas(16) __half da[kBM][8];  // the stage's 8 weight scales per row, q8r order
    alignas(16) float db[8][BN];    // the activation scales, same order, by token
};

template <int K, int BN>
__device__ __forceinline__ void load_stage(Stage<K, BN>& st, const uint8_t* __restrict__ w, uint64_t row_bytes,
                                           uint32_t n_rows, uint32_t cols, const uint8_t* __restrict__ xq,
                                           uint64_t xq_tok, const float* __restrict__ xs, uint64_t n_pad, uint32_t i) {
    constexpr uint32_t kChunks = kStageBytes / 16;
    for (uint32_t c = threadIdx.x; c < kBM * kChunks; c += kThreads) {
        const uint32_t r = c / kChunks, j = c % kChunks;
        const bool in = r < n_rows;
        cp_async16(&st.a[r][16 * j], w + (in ? r * row_bytes + i * kStageBytes + 16 * j : 0), in ? 16 : 0);
    }
    for (uint32_t r = threadIdx.x; r < kBM; r += kThreads) {
        const bool in = r < n_rows;
        cp_async16(&st.da[r][0], w + (in ? r * row_bytes + cols + 16 * i : 0), in ? 16 : 0);
    }
    for (uint32_t c = threadIdx.x; c < BN * kChunks; c += kThreads) {
        const uint32_t t = c / kChunks, j = c % kChunks;
        cp_async16(&st.b[t][16 * j], xq + t * xq_tok + i * kStageBytes + 16 * j, 16);
    }
    for (uint32_t c = threadIdx.x; c < 8 * BN / 4; c += kThreads) {
        const uint32_t q = c / (BN / 4), j = c % (BN / 4);
        cp_async16(&st.db[q][4 * j], xs + (uint64_t{i} * 8 + q) * n_pad + 4 * j, 16);
    }
}

template <int K>
struct Chunk;
template <>
struct Chunk<4> {
    using T = uint4;
    static __device__ __forceinline__ uint32_t word(const uint4& v, int k) {
        return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
    }
};
template <>
struct Chunk<2> {
    using T = uint2;
    static __device__ __forceinline__ uint32_t word(const uint2& v, int k) { return k == 0 ? v.x : v.y; }
};

// The kernel's arguments. xq: the padded activations' codes (n_pad tokens, xq_tok bytes
// apart), xs: their scales [block (q8r order)][n_pad]. blockIdx.z = group · n_split +
// split: group g (of several products of one shape, matmul_q8r_mma's MmaExtra) reads
// weights w_group bytes, codes cols bytes and scales cols/32 · n_pad floats further and
// writes y_group floats further. n_split > 1: the block does chunk `split` into part.
// The half kernel: xq the f16 values (a group 2·cols bytes further), xs the tokens' 2^−e.
struct MmaArgs {
    const uint8_t* w;
    uint64_t row_bytes;
    uint32_t rows, cols;
    const uint8_t* xq;
    uint64_t xq_tok;
    const float* xs;
    uint64_t n_pad;
    uint32_t n_tok;
    float* y;
    uint64_t y_stride;
    uint64_t w_group, y_group;
    uint32_t chunk_stages, n_split;
    float* part;  // [z][n_tok][rows]
};

// A block's tile: rows row0.. (n_rows of them) of product `group` by tokens tok0..
// (n_here), its weights, and the int8 stages [s0, s1) it adds (all, or its split chunk).
struct Tile {
    uint32_t row0, tok0, group, n_rows, n_here, s0, s1;
    const uint8_t* w;
};
template <int BN>
__device__ __forceinline__ Tile tile_of(const MmaArgs& p) {
    Tile t;
    t.row0 = blockIdx.x * kBM;
    t.tok0 = blockIdx.y * BN;
    t.group = blockIdx.z / p.n_split;
    const uint32_t split = blockIdx.z % p.n_split, n_st = p.cols / kStageBytes, cs = p.chunk_stages;
    t.n_rows = min(kBM, p.rows - t.row0);
    t.n_here = min(static_cast<uint32_t>(BN), p.n_tok - t.tok0);
    t.s0 = p.n_split > 1 ? split * cs : 0;
    t.s1 = p.n_split > 1 ? min(t.s0 + cs, n_st) : n_st;
    t.w = p.w + t.group * p.w_group + uint64_t{t.row0} * p.row_bytes;
    return t;
}

// The warp's outputs (rows ra, ra + 8 by its NF n8 token groups) into y, or into the
// split's part; times tok_scale[token] (null: 1) unless it is a part.
template <int NF>
__device__ __forceinline__ void store_tile(const MmaArgs& p, const Tile& t, const float (&total)[NF][4], uint32_t ra,
                                           uint32_t t4, const float* tok_scale) {
    const bool parts = p.n_split > 1;
    float* y = parts ? p.part + uint64_t{blockIdx.z} * p.n_tok * p.rows : p.y + t.group * p.y_group;
    const uint64_t y_stride = parts ? p.rows : p.y_stride;
#pragma unroll
    for (int f = 0; f < NF; ++f) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t r = ra + (i >= 2 ? 8 : 0), tk = 8 * f + 2 * t4 + i % 2;
            if (r < t.n_rows && tk < t.n_here) {
                const float v = parts || tok_scale == nullptr ? total[f][i] : total[f][i] * tok_scale[t.tok0 + tk];
                y[uint64_t{t.tok0 + tk} * y_stride + t.row0 + r] = v;
            }
        }
    }
}

template <int K, int BN>
__global__ void __launch_bounds__(kThreads, 1) q8r_mma_kernel(MmaArgs p) {
    dev::pdl_wait_and_release();
    using S = Stage<K, BN>;
    using C = Chunk<K>;
    using CT = typename C::T;
    constexpr int NF = BN / 8;
    extern __shared__ __align__(16) uint8_t raw[];
    S* st = reinterpret_cast<S*>(raw);
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
    const Tile tile = tile_of<BN>(p);
    const uint32_t cols = p.cols, n_rows = tile.n_rows, s0 = tile.s0, s1 = tile.s1, cs = p.chunk_stages;
    const uint8_t* w = tile.w;
    const uint8_t* xq = p.xq + uint64_t{tile.group} * cols + uint64_t{tile.tok0} * p.xq_tok;
    const float* xs = p.xs + uint64_t{tile.group} * (cols / 32) * p.n_pad + tile.tok0;
    const uint64_t row_bytes = p.row_bytes, n_pad = p.n_pad, xq_tok = p.xq_tok;

    float acc[NF][4], total[NF][4];
#pragma unroll
    for (int f = 0; f < NF; ++f)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[f][i] = total[f][i] = 0.f;

    const uint32_t ra = 16 * warp + g;
#pragma unroll
    for (uint32_t i = 0; i < kStages - 1; ++i) {
        if (s0 + i < s1) load_stage<K, BN>(st[i], w, row_bytes, n_rows, cols, xq, xq_tok, xs, n_pad, s0 + i);
        cp_async_commit();
    }
    for (uint32_t i = s0; i < s1; ++i) {
        cp_async_wait<kStages - 2>();
        __syncthreads();
        const S& s = st[(i - s0) % kStages];
        const uint4 h0 = *reinterpret_cast<const uint4*>(&s.da[ra][0]);
        const uint4 h1 = *reinterpret_cast<const uint4*>(&s.da[ra + 8][0]);
        const __half* dw0 = reinterpret_cast<const __half*>(&h0);
        const __half* dw1 = reinterpret_cast<const __half*>(&h1);
#pragma unroll
        for (uint32_t gq = 0; gq < 8 / K; ++gq) {
            const uint32_t c0 = 4 * K * (8 * gq + t4), c1 = c0 + 16 * K;  // chunks 8gq + t4, + 4
            const CT a0 = *reinterpret_cast<const CT*>(&s.a[ra][c0]);
            const CT a1 = *reinterpret_cast<const CT*>(&s.a[ra + 8][c0]);
            const CT a2 = *reinterpret_cast<const CT*>(&s.a[ra][c1]);
            const CT a3 = *reinterpret_cast<const CT*>(&s.a[ra + 8][c1]);
#pragma unroll
            for (int f = 0; f < NF; ++f) {
                const CT b0 = *reinterpret_cast<const CT*>(&s.b[8 * f + g][c0]);
                const CT b1 = *reinterpret_cast<const CT*>(&s.b[8 * f + g][c1]);
#pragma unroll
                for (int k = 0; k < K; ++k) {
                    const uint32_t q = gq * K + k;
                    int d[4];
                    mma_s8(C::word(a0, k), C::word(a1, k), C::word(a2, k), C::word(a3, k), C::word(b0, k),
                           C::word(b1, k), d);
                    const float2 e = *reinterpret_cast<const float2*>(&s.db[q][8 * f + 2 * t4]);
                    const float w0 = __half2float(dw0[q]), w1 = __half2float(dw1[q]);
                    acc[f][0] = fmaf(s32_to_f32(d[0]), w0 * e.x, acc[f][0]);
                    acc[f][1] = fmaf(s32_to_f32(d[1]), w0 * e.y, acc[f][1]);
                    acc[f][2] = fmaf(s32_to_f32(d[2]), w1 * e.x, acc[f][2]);
                    acc[f][3] = fmaf(s32_to_f32(d[3]), w1 * e.y, acc[f][3]);
                }
            }
        }
        if ((i + 1) % cs == 0 || i + 1 == s1) {  // a chunk ends: into the total in chunk order
#pragma unroll
            for (int f = 0; f < NF; ++f)
#pragma unroll
                for (int j = 0; j < 4; ++j) total[f][j] += acc[f][j], acc[f][j] = 0.f;
        }
        const uint32_t next = i + kStages - 1;  // into the buffer all warps left at the barrier above
        if (next < s1)
            load_stage<K, BN>(st[(next - s0) % kStages], w, row_bytes, n_rows, cols, xq, xq_tok, xs, n_pad, next);
        cp_async_commit();
    }
    cp_async_wait<0>();
    store_tile<NF>(p, tile, total, ra, t4, nullptr);
}

// ---- Half precision (matmul_mma.h): the same tiles and chunks, f16 mma m16n8k16 ----
//
// A stage is 128 bytes of a q8r row (one 32-code group gq of 32 lanes' chunks at K = 4,
// two at K = 2), so the f16 activations (2 bytes a value, the codes' order) fit 4 stages
// deep. An int8 mma (gq, k) above covers one Q8_0 block, the 32 codes of word k of the
// chunks 8gq + t4 and + 4; here each of those two words is one m16n8k16 product: its
// 4 codes c0..c3 are lane t4's k = 2t4, 2t4 + 1 (a0/a1) and 8 + 2t4, 9 + 2t4 (a2/a3), and
// the activations' 4 f16 at the same place are b0 and b1 (any k order is a valid dot
// product when A and B share it).
constexpr uint32_t kHalfStageCodes = 128;
constexpr uint32_t kHalfStages = 4;

template <int K, int BN>
struct HalfStage {
    // bank-free 16-byte (K = 4) / 8-byte (K = 2) loads of 8 (4) rows, as Stage's rows
    static constexpr uint32_t kARow = kHalfStageCodes + 16 * K;
    static constexpr uint32_t kBRow = 2 * kHalfStageCodes + (K == 4 ? 16 : 64);
    alignas(16) uint8_t a[kBM][kARow];
    alignas(16) uint8_t b[BN][kBRow];
    alignas(16) __half da[kBM][8];  // the 8 scales of the int8 stage this half stage is in
};

// Half stage j: bytes [128j, 128j + 128) of the rows' codes, their int8 stage's 8
// scales, and the tokens' f16 values at the same places (xh: bytes, x_tok apart).
template <int K, int BN>
__device__ __forceinline__ void load_half_stage(HalfStage<K, BN>& st, const uint8_t* __restrict__ w,
                                                uint64_t row_bytes, uint32_t n_rows, uint32_t cols,
                                                const uint8_t* __restrict__ xh, uint64_t x_tok, uint32_t j) {
    constexpr uint32_t kA = kHalfStageCodes / 16, kB = 2 * kHalfStageCodes / 16;
    for (uint32_t c = threadIdx.x; c < kBM * kA; c += kThreads) {
        const uint32_t r = c / kA, q = c % kA;
        const bool in = r < n_rows;
        cp_async16(&st.a[r][16 * q], w + (in ? r * row_bytes + j * kHalfStageCodes + 16 * q : 0), in ? 16 : 0);
    }
    for (uint32_t r = threadIdx.x; r < kBM; r += kThreads) {
        const bool in = r < n_rows;
        cp_async16(&st.da[r][0], w + (in ? r * row_bytes + cols + 16 * (j / 2) : 0), in ? 16 : 0);
    }
    for (uint32_t c = threadIdx.x; c < BN * kB; c += kThreads) {
        const uint32_t t = c / kB, q = c % kB;
        cp_async16(&st.b[t][16 * q], xh + t * x_tok + 2 * j * kHalfStageCodes + 16 * q, 16);
    }
}

// 4 int8 codes → 2 half2 · d (lower codes in the low halves): biased to u = q + 128 and
// placed in the mantissa of 1024 (f16 0x6400, ulp 1), 1024 + u − 1152 = q exactly, then
// one rounding for q · d.
__device__ __forceinline__ uint2 codes_to_half2(uint32_t w, __half2 d) {
    const uint32_t u = w ^ 0x80808080u;
    const uint32_t lo = __byte_perm(u, 0x64646464u, 0x5140), hi = __byte_perm(u, 0x64646464u, 0x5342);
    const __half2 bias = __half2half2(__ushort_as_half(0x6480));  // 1152
    __half2 l = *reinterpret_cast<const __half2*>(&lo), h = *reinterpret_cast<const __half2*>(&hi);
    l = __hmul2(__hsub2(l, bias), d);
    h = __hmul2(__hsub2(h, bias), d);
    return {*reinterpret_cast<const uint32_t*>(&l), *reinterpret_cast<const uint32_t*>(&h)};
}

// (Measured on an H200, 2048-token prefill: 11.7 ms of q8h against 12.7 of q8r per 4
// layers. Two warps per 16 rows, each with half the tokens, were slower: 13.0 ms.)
template <int K, int BN>
__global__ void __launch_bounds__(kThreads, 1) q8h_mma_kernel(MmaArgs p) {
    dev::pdl_wait_and_release();
    using S = HalfStage<K, BN>;
    using C = Chunk<K>;
    using CT = typename C::T;
    constexpr int NF = BN / 8;
    constexpr uint32_t GQ = 4 / K;  // 32-code groups per half stage
    extern __shared__ __align__(16) uint8_t raw[];
    S* st = reinterpret_cast<S*>(raw);
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
    const Tile tile = tile_of<BN>(p);
    const uint32_t cols = p.cols, n_rows = tile.n_rows, cs = p.chunk_stages;
    const uint8_t* w = tile.w;
    const uint8_t* xh = p.xq + 2 * uint64_t{tile.group} * cols + uint64_t{tile.tok0} * p.xq_tok;
    const uint64_t row_bytes = p.row_bytes, x_tok = p.xq_tok;

    // two accumulators per output, one per chunk c0 / c1 of a block's words: 2·NF
    // independent mma chains between the uses of one (each waits on the tensor core)
    float acc[2][NF][4], total[NF][4];
#pragma unroll
    for (int f = 0; f < NF; ++f)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[0][f][i] = acc[1][f][i] = total[f][i] = 0.f;

    const uint32_t ra = 16 * warp + g, s1 = tile.s1;
    const uint32_t h0 = 2 * tile.s0, h1 = 2 * s1;  // half stages
#pragma unroll
    for (uint32_t i = 0; i < kHalfStages - 1; ++i) {
        if (h0 + i < h1) load_half_stage<K, BN>(st[i], w, row_bytes, n_rows, cols, xh, x_tok, h0 + i);
        cp_async_commit();
    }
    for (uint32_t h = h0; h < h1; ++h) {
        cp_async_wait<kHalfStages - 2>();
        __syncthreads();
        const S& s = st[(h - h0) % kHalfStages];
        // this half's 4 of its int8 stage's 8 scales (q = gq·K + k there, gq = (h % 2)·GQ + gl)
        const uint2 hs0 = *reinterpret_cast<const uint2*>(&s.da[ra][4 * (h % 2)]);
        const uint2 hs1 = *reinterpret_cast<const uint2*>(&s.da[ra + 8][4 * (h % 2)]);
        const __half* dw0 = reinterpret_cast<const __half*>(&hs0);
        const __half* dw1 = reinterpret_cast<const __half*>(&hs1);
#pragma unroll
        for (uint32_t gl = 0; gl < GQ; ++gl) {
            const uint32_t c0 = 4 * K * (8 * gl + t4), c1 = c0 + 16 * K;
            const CT a0 = *reinterpret_cast<const CT*>(&s.a[ra][c0]);
            const CT a1 = *reinterpret_cast<const CT*>(&s.a[ra + 8][c0]);
            const CT a2 = *reinterpret_cast<const CT*>(&s.a[ra][c1]);
            const CT a3 = *reinterpret_cast<const CT*>(&s.a[ra + 8][c1]);
            uint32_t fa[K][2][4];  // [word k][chunk c0 / c1][a0..a3]
#pragma unroll
            for (int k = 0; k < K; ++k) {
                const __half2 d0 = __half2half2(dw0[gl * K + k]), d1 = __half2half2(dw1[gl * K + k]);
                const uint2 r0 = codes_to_half2(C::word(a0, k), d0), r1 = codes_to_half2(C::word(a1, k), d1);
                const uint2 r2 = codes_to_half2(C::word(a2, k), d0), r3 = codes_to_half2(C::word(a3, k), d1);
                fa[k][0][0] = r0.x, fa[k][0][1] = r1.x, fa[k][0][2] = r0.y, fa[k][0][3] = r1.y;
                fa[k][1][0] = r2.x, fa[k][1][1] = r3.x, fa[k][1][2] = r2.y, fa[k][1][3] = r3.y;
            }
            // words k, k + 1 of both chunks for all NF token groups (one 16-byte load each),
            // then the mmas with f innermost; per acc[c][f] the order is k0, k1, ...
#pragma unroll
            for (int k = 0; k < K; k += 2) {
                uint4 bv[NF][2];
#pragma unroll
                for (int f = 0; f < NF; ++f)
#pragma unroll
                    for (int c = 0; c < 2; ++c)
                        bv[f][c] = *reinterpret_cast<const uint4*>(&s.b[8 * f + g][2 * (c == 0 ? c0 : c1) + 8 * k]);
#pragma unroll
                for (int kk = 0; kk < 2; ++kk)
#pragma unroll
                    for (int c = 0; c < 2; ++c)
#pragma unroll
                        for (int f = 0; f < NF; ++f) {
                            const uint32_t b0 = kk == 0 ? bv[f][c].x : bv[f][c].z;
                            const uint32_t b1 = kk == 0 ? bv[f][c].y : bv[f][c].w;
                            const uint32_t(&a)[4] = fa[k + kk][c];
                            mma_f16_acc(a[0], a[1], a[2], a[3], b0, b1, acc[c][f]);
                        }
            }
        }
        const uint32_t si = h / 2;  // chunk ends after its last int8 stage's second half
        if (h % 2 == 1 && ((si + 1) % cs == 0 || si + 1 == s1)) {
#pragma unroll
            for (int f = 0; f < NF; ++f)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    total[f][j] += acc[0][f][j] + acc[1][f][j];
                    acc[0][f][j] = acc[1][f][j] = 0.f;
                }
        }
        const uint32_t next = h + kHalfStages - 1;  // into the buffer all warps left at the barrier above
        if (next < h1) load_half_stage<K, BN>(st[(next - h0) % kHalfStages], w, row_bytes, n_rows, cols, xh, x_tok, next);
        cp_async_commit();
    }
    cp_async_wait<0>();
    // the token's 2^−e: exact, so scaling each chunk's part (split) or the total is the same
    store_tile<NF>(p, tile, total, ra, t4, p.xs);
}

// y[g][t][r] = ((0 + part[g, 0]) + part[g, 1]) + ...: the in-block order of the kernel above.
// tok_scale (the half path's 2^−e per token) or null: times it after the sum, as the kernel.
__global__ void reduce_split_kernel(const float* __restrict__ part, uint32_t rows, uint32_t n_tok, uint32_t n_split,
                                    uint32_t groups, float* __restrict__ y, uint64_t y_stride, uint64_t y_group,
                                    const float* __restrict__ tok_scale) {
    dev::pdl_wait_and_release();
    const uint64_t per = uint64_t{n_tok} * rows, id = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (id >= per * groups) return;
    const uint64_t g = id / per, tr = id % per;
    const float* src = part + g * n_split * per + tr;
    float s = 0.f;
    for (uint32_t j = 0; j < n_split; ++j) s += src[j * per];
    y[g * y_group + (tr / rows) * y_stride + tr % rows] = tok_scale != nullptr ? s * tok_scale[tr / rows] : s;
}

// One block per token up to n_pad: e such that the token's largest |x| lands in
// [2^14, 2^15) (0, Inf or NaN: e = 0), f16(x · 2^e) into the q8r places of its codes,
// 2^−e to xs[t]; padding tokens: zeros, scale 1. Rows up to kHalfCache float4 per
// thread are read once (kept in registers between the max and the stores).
constexpr uint32_t kHalfCache = 8;
__global__ void __launch_bounds__(kThreads) quantize_half_kernel(const float* __restrict__ x, uint64_t x_stride,
                                                                 uint32_t cols, uint32_t n_tok, uint32_t K,
                                                                 __half* __restrict__ xh, float* __restrict__ xs) {
    dev::pdl_wait_and_release();
    __shared__ float red[32];
    const uint32_t t = blockIdx.x, tid = threadIdx.x, words = cols / 4;
    const float4* src = reinterpret_cast<const float4*>(x + uint64_t{t} * x_stride);
    const bool cached = words <= kHalfCache * kThreads;
    float4 v[kHalfCache];
    float amax = 0.f;
#pragma unroll
    for (uint32_t i = 0; i < kHalfCache; ++i) {
        const uint32_t o = tid + i * kThreads;
        v[i] = t < n_tok && o < words ? src[o] : make_float4(0.f, 0.f, 0.f, 0.f);
        amax = fmaxf(amax, fmaxf(fmaxf(fabsf(v[i].x), fabsf(v[i].y)), fmaxf(fabsf(v[i].z), fabsf(v[i].w))));
    }
    if (t < n_tok)
        for (uint32_t o = tid + kHalfCache * kThreads; o < words; o += kThreads) {
            const float4 u = src[o];
            amax = fmaxf(amax, fmaxf(fmaxf(fabsf(u.x), fabsf(u.y)), fmaxf(fabsf(u.z), fabsf(u.w))));
        }
    const int e = dev::half_exponent(dev::block_max(amax, red));
    const float scale = ldexpf(1.f, e);
    const uint32_t span = 128 * K;
    const auto store = [&](uint32_t o, float4 u) {
        const uint32_t c = 4 * o, sp = c / span, in = c % span, k = in / 128, l = in % 128 / 4;
        __half2 pair[2] = {__floats2half2_rn(u.x * scale, u.y * scale), __floats2half2_rn(u.z * scale, u.w * scale)};
        *reinterpret_cast<uint2*>(xh + uint64_t{t} * cols + sp * span + 4 * K * l + 4 * k) =
            *reinterpret_cast<const uint2*>(pair);
    };
    if (cached) {
#pragma unroll
        for (uint32_t i = 0; i < kHalfCache; ++i)
            if (tid + i * kThreads < words) store(tid + i * kThreads, v[i]);
    } else {
        for (uint32_t o = tid; o < words; o += kThreads) store(o, t < n_tok ? src[o] : make_float4(0.f, 0.f, 0.f, 0.f));
    }
    if (tid == 0) xs[t] = ldexpf(1.f, -e);
}

// One thread per (token, 32-block), tokens up to n_pad (zeros past n_tok): d = amax/127,
// q = round-to-nearest-even(x · (1/d)) clamped to ±127 (quantize_q8_activations' rule);
// the codes go where q8r_repack puts a weight row's, the scale to [q8r block][n_pad].
__global__ void quantize_mma_kernel(const float* __restrict__ x, uint64_t x_stride, uint32_t cols, uint32_t n_tok,
                                    uint32_t n_pad, uint32_t K, uint8_t* __restrict__ xq, float* __restrict__ xs) {
    dev::pdl_wait_and_release();
    const uint32_t blocks = cols / 32;
    const uint64_t id = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (id >= uint64_t{blocks} * n_pad) return;
    const auto t = static_cast<uint32_t>(id / blocks), b = static_cast<uint32_t>(id % blocks);
    float v[32];
    float amax = 0.f;
    if (t < n_tok) {
        const float4* src = reinterpret_cast<const float4*>(x + t * x_stride + 32 * uint64_t{b});
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float4 f = src[i];
            v[4 * i] = f.x, v[4 * i + 1] = f.y, v[4 * i + 2] = f.z, v[4 * i + 3] = f.w;
        }
#pragma unroll
        for (float f : v) amax = fmaxf(amax, fabsf(f));
    } else {
#pragma unroll
        for (float& f : v) f = 0.f;
    }
    const float d = amax / 127.f;
    const float inv = d > 0.f ? 1.f / d : 0.f;
    const uint32_t span_blocks = 4 * K, s = b / span_blocks, in = b % span_blocks, k = in / 4, g = in % 4;
    uint8_t* dst = xq + uint64_t{t} * cols + s * (128 * K) + 4 * k;
#pragma unroll
    for (uint32_t j = 0; j < 8; ++j) {
        uint32_t word = 0;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int q = max(-127, min(127, __float2int_rn(v[4 * j + e] * inv)));
            word |= (static_cast<uint32_t>(q) & 0xffu) << (8 * e);
        }
        *reinterpret_cast<uint32_t*>(dst + 4 * K * (8 * g + j)) = word;
    }
    xs[(uint64_t{s} * span_blocks + g * K + k) * n_pad + t] = d;
}

template <int K, int BN, bool Half>
void launch(const MmaArgs& a, uint32_t groups, cudaStream_t s) {
    const dim3 grid((a.rows + kBM - 1) / kBM, (a.n_tok + BN - 1) / BN, groups * a.n_split);
    if constexpr (Half) {
        launch_pdl("launch of q8h_mma_kernel", q8h_mma_kernel<K, BN>, dim3(grid), dim3(kThreads),
                   kHalfStages * sizeof(HalfStage<K, BN>), s, a);
    } else {
        launch_pdl("launch of q8r_mma_kernel", q8r_mma_kernel<K, BN>, dim3(grid), dim3(kThreads),
                   kStages * sizeof(Stage<K, BN>), s, a);
    }
}

uint32_t g_split_bn = kMmaSplitTileTokens;
uint32_t g_split_max_blocks = kSplitMaxBlocks;

// Split-K when the grid of 32-token tiles is small (batches): one chunk per block, BN 32
// (or 64 past 32 tokens, g_split_bn).
template <int K, bool Half>
void launch_k(MmaArgs a, uint32_t groups, uint64_t scratch_floats, cudaStream_t s) {
    static const bool split_on = env_switch_on("DS4_CUDA_MMA_SPLIT");
    const uint64_t blocks32 = uint64_t{(a.rows + kBM - 1) / kBM} * ((a.n_tok + 31) / 32) * groups;
    const uint32_t chunks = n_chunks(a.cols);
    const bool split = split_on && a.part != nullptr && chunks > 1 && blocks32 <= g_split_max_blocks &&
                       uint64_t{chunks} * groups * a.n_tok * a.rows <= scratch_floats;
    if (split) {
        a.n_split = chunks;
        if (g_split_bn == 64 && a.n_tok > 32)
            launch<K, 64, Half>(a, groups, s);
        else
            launch<K, 32, Half>(a, groups, s);
        const uint64_t outs = uint64_t{a.n_tok} * a.rows * groups;
        launch_pdl("launch of reduce_split_kernel", reduce_split_kernel,
                   dim3(static_cast<unsigned>((outs + 255) / 256)), dim3(256), 0, s, a.part, a.rows, a.n_tok, chunks,
                   groups, a.y, a.y_stride, a.y_group, Half ? a.xs : nullptr);
    } else if (a.n_tok <= 32) {
        launch<K, 32, Half>(a, groups, s);
    } else {
        launch<K, 64, Half>(a, groups, s);
    }
}

template <int K, int BN>
void allow_smem() {
    DS4_CUDA_CHECK(cudaFuncSetAttribute(q8r_mma_kernel<K, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(kStages * sizeof(Stage<K, BN>))));
    DS4_CUDA_CHECK(cudaFuncSetAttribute(q8h_mma_kernel<K, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(kHalfStages * sizeof(HalfStage<K, BN>))));
}

void check_cols(uint64_t cols) {
    if (cols % 256 != 0 || cols == 0 || cols > 32768)
        fail("cuda matmul_mma: ", cols, " columns, expected a multiple of 256 up to 32768");
}

// The tensor-core path needs mma.sync and the largest tiles' shared memory (both kernels:
// the precision may change between passes).
constexpr uint64_t kMmaSmemNeed = std::max({kStages * sizeof(Stage<4, 64>), kStages * sizeof(Stage<2, 64>),
                                             kHalfStages * sizeof(HalfStage<4, 64>),
                                             kHalfStages * sizeof(HalfStage<2, 64>)});
bool mma_device_ok() {
    static const bool ok = device_has_mma() && device_smem_optin() >= kMmaSmemNeed;
    return ok;
}

}  // namespace

void mma_init() {
    static const bool done = [] {
        if (!mma_device_ok()) return false;
        allow_smem<4, 32>();
        allow_smem<4, 64>();
        allow_smem<2, 32>();
        allow_smem<2, 64>();
        return true;
    }();
    (void)done;
}

bool mma_applies(uint64_t rows, uint32_t n_tok, uint64_t min_work) {
    static const uint32_t min_tok = env_min_tokens("DS4_CUDA_MMA_MIN", kMmaMinTokens);
    return n_tok >= min_tok && rows * n_tok >= min_work && mma_device_ok();
}

namespace {
MmaPrecision g_precision = env_switch_on("DS4_CUDA_MMA_HALF") ? MmaPrecision::Half : MmaPrecision::Int8;
}  // namespace

void set_mma_precision(MmaPrecision p) { g_precision = p; }
void set_mma_split_tile_tokens(uint32_t bn) { g_split_bn = bn == 64 ? 64 : 32; }
void set_mma_split_max_blocks(uint32_t blocks) { g_split_max_blocks = blocks != 0 ? blocks : kSplitMaxBlocks; }
MmaPrecision mma_precision() { return g_precision; }

// Either layout fits: int8 36 bytes per 32 values and token, half 2 per value + 4 per token.
uint64_t mma_activation_bytes(uint64_t cols, uint32_t n_tok) { return padded_tokens(n_tok) * (2 * cols + 4); }
uint64_t mma_padded_tokens(uint32_t n_tok) { return padded_tokens(n_tok); }

void quantize_mma_activations(const float* x, uint64_t x_stride, uint64_t cols, uint32_t n_tok, void* xq,
                              cudaStream_t s) {
    check_cols(cols);
    if (n_tok == 0) return;
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || x_stride % 4 != 0)
        fail("cuda quantize_mma_activations: activations must be 16-byte aligned with a stride multiple of 4");
    if (reinterpret_cast<uintptr_t>(xq) % 16 != 0) fail("cuda quantize_mma_activations: xq is not 16-byte aligned");
    const uint64_t n_pad = padded_tokens(n_tok), threads = n_pad * (cols / 32);
    auto* codes = static_cast<uint8_t*>(xq);
    if (g_precision == MmaPrecision::Half) {
        launch_pdl("launch of quantize_half_kernel", quantize_half_kernel, dim3(static_cast<unsigned>(n_pad)),
                   dim3(kThreads), 0, s, x, x_stride, static_cast<uint32_t>(cols), n_tok, k_words(cols),
                   reinterpret_cast<__half*>(codes), reinterpret_cast<float*>(codes + 2 * n_pad * cols));
        return;
    }
    launch_pdl("launch of quantize_mma_kernel", quantize_mma_kernel, dim3(static_cast<unsigned>((threads + 127) / 128)),
               dim3(128), 0, s, x, x_stride, static_cast<uint32_t>(cols), n_tok, static_cast<uint32_t>(n_pad),
               k_words(cols), codes, reinterpret_cast<float*>(codes + n_pad * cols));
}

void matmul_q8r_mma(const void* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok, float* y,
                    uint64_t y_stride, cudaStream_t s, const MmaExtra& ex) {
    if (rows == 0 || n_tok == 0 || ex.groups == 0) return;
    check_cols(cols);
    const uint64_t xq_cols = ex.xq_cols == 0 ? cols : ex.xq_cols;
    check_cols(xq_cols);
    if (xq_cols < cols * ex.groups || k_words(xq_cols) != k_words(cols))
        fail("cuda matmul_q8r_mma: activations of ", xq_cols, " columns for ", ex.groups, " groups of ", cols);
    if (rows > 0x7fffffffu) fail("cuda matmul_q8r_mma: ", rows, " rows, at most 2^31 - 1");
    if (ex.groups * uint64_t{n_chunks(cols)} > 65535) fail("cuda matmul_q8r_mma: ", ex.groups, " groups");
    if (reinterpret_cast<uintptr_t>(w) % 16 != 0 || reinterpret_cast<uintptr_t>(xq) % 16 != 0 ||
        ex.w_group % 16 != 0)
        fail("cuda matmul_q8r_mma: weights and activations must be 16-byte aligned");
    if (!mma_device_ok())
        fail("cuda matmul_q8r_mma: needs compute capability 8.0 or newer and ", kMmaSmemNeed,
             " bytes of shared memory per block (this card: ", device_smem_optin(), ")");
    mma_init();
    const bool half = g_precision == MmaPrecision::Half;
    const auto* codes = static_cast<const uint8_t*>(xq);
    const uint64_t n_pad = padded_tokens(n_tok), value_bytes = half ? 2 : 1;  // int8 codes or f16 values
    const MmaArgs a{static_cast<const uint8_t*>(w),
                    cols / 32 * 34,
                    static_cast<uint32_t>(rows),
                    static_cast<uint32_t>(cols),
                    codes,
                    value_bytes * xq_cols,
                    reinterpret_cast<const float*>(codes + n_pad * value_bytes * xq_cols),
                    n_pad,
                    n_tok,
                    y,
                    y_stride,
                    ex.w_group,
                    ex.y_group,
                    chunk_stages(cols),
                    1,
                    ex.scratch};
    if (half)
        k_words(cols) == 4 ? launch_k<4, true>(a, ex.groups, ex.scratch_floats, s)
                           : launch_k<2, true>(a, ex.groups, ex.scratch_floats, s);
    else
        k_words(cols) == 4 ? launch_k<4, false>(a, ex.groups, ex.scratch_floats, s)
                           : launch_k<2, false>(a, ex.groups, ex.scratch_floats, s);
}

}  // namespace ds4::cuda
