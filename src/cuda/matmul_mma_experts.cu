// Grouped tensor-core products of the routed experts; contract and numerics in
// matmul_mma_experts.h.
//
// Block: 8 warps, a tile of kBM = 128 rows of one expert's matrix (16 per warp: one m16
// fragment) by BN of that expert's tokens (BN / 8 n8 fragments per warp). The columns
// go by stages of one 256-value super-block: its raw bytes for the 128 rows (a 16-byte
// aligned window around each, copied with cp.async) and the tokens' Q8_K codes and
// scales, in a kStages-deep shared ring, so the loads of the next stages overlap this
// one's work. A lane decodes its own A-fragment words (row g / g + 8, values 4t..4t+3
// and 16 + 4t.. of each 32-block; IQ2_XXS: 8t..8t+7, see Iq2xxsDec) straight from the
// raw bytes: no int8 weight tile, no second barrier. Within a super-block everything stays integer, as in ggml's
// vec_dot_*_q8_K: the 32-block dots times their integer sub-scales (or, for Q2_K, codes
// pre-multiplied by them, accumulated by the mma itself), and the K-quants' min sums as
// a second mma against the min scales; one f32 block value per super-block. The grid is
// (row tiles [of w0, then w1], token tiles): the tile list (slot, first token) is made
// on the device from the group counts, blocks past its length return at once.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstddef>
#include <bit>
#include <mutex>
#include <type_traits>

#include "cuda/act_rows.cuh"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/pdl.cuh"
#include "cuda/env_switch.h"
#include "cuda/matmul_mma_experts.h"
#include "cuda/matmul_q8_formats.cuh"
#include "cuda/mma_s8.cuh"
#include "ds4/error.h"
#include "quant/iq2_tables.h"

namespace ds4::cuda {
namespace {

using mma::cp_async16, mma::cp_async_commit, mma::cp_async_wait, mma::device_has_mma, mma::mma_s8,
    mma::mma_s8_acc;

constexpr uint32_t kWarps = 8;
constexpr uint32_t kThreads = 32 * kWarps;
constexpr uint32_t kBM = 16 * kWarps;
constexpr uint32_t kStages = 3;
constexpr uint32_t kSB = 256;         // values per stage: one super-block
// a token's 256 codes + 16: 4-byte loads of rows g hit banks 4g + t; K-permuted 8-byte
// loads (+32) of a half-warp's rows g < 4 hit banks 8g + 2t, 8g + 2t + 1
template <class F>
constexpr uint32_t kXPitch = F::kPermK ? 288 : 272;
constexpr uint32_t kRecPitch = 16;    // the staged head of a token's super-block record (its d)
constexpr uint32_t kQ8kRec = 48;      // per 256 activations: f32 d, int16 bsums[16], 12 spare bytes
constexpr uint32_t kMinBN = 8;

__device__ uint2 g_mx_grid[256];      // IQ2_XXS grid: entry e's magnitude bytes

__device__ __forceinline__ float f16(uint32_t bits) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}
__device__ __forceinline__ uint32_t u16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ uint32_t u32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// A lane's view of one 32-block of one row: the A words for values 4t..4t+3 (lo) and
// 16 + 4t.. (hi), the block's integer sub-scale (kPremul: already in the words), and the
// min scales replicated per byte (kMin: m of values 4t.. / 16 + 4t..).
struct Frag {
    uint32_t lo, hi;
    int isc;
    uint32_t mlo, mhi;
};

__device__ __forceinline__ uint32_t bytes4(uint32_t v) { return v * 0x01010101u; }

// A lane's view of its decoder's shared tables (IQ2_XXS only). Iq2xxsSelDec: sign is the
// sign table's base, sign_lane the lane's copy (byte offset), sign_rot the right
// rotation that brings the lane's 7 sign bits to the copy stride's bit position.
struct LaneTabs {
    const uint8_t* grid;
    const uint8_t* sign;
    uint32_t sign_lane = 0, sign_rot = 0;
};

// The K-quant decoders need no shared tables.
struct NoTables {
    static constexpr uint32_t kTableBytes = 0;
    __device__ static void fill(uint8_t*, const uint32_t*) {}
    __device__ static LaneTabs lane_tables(const uint8_t* t, uint32_t) { return {t, t}; }
};

// What both IQ2_XXS decoders share: the staging window, the K-permuted fragments, the
// integer sub-scale 2s + 1 of a block's aux word (4 × 7 sign bits, then the 4-bit s) and
// the super-block's scale d. (The aux word's two half-word loads stay written out in each
// frag(): behind a shared helper ptxas allocated 2-9 more registers.)
struct Iq2xxsLayout {
    static constexpr uint32_t kBytes = 66, kChunks = 5, kPitch = 80;  // 80 B = 20 words: 8 rows, 8 banks
    static constexpr bool kMin = false, kPremul = false, kPermK = true;
    __device__ static int isc(uint32_t aux) { return static_cast<int>(2 * (aux >> 28) + 1); }
    __device__ static float2 scales(const uint8_t* p) { return {f16(u16(p)), 0.f}; }
};

// value = d·(2s + 1)/8 · (±grid byte): block value d·dx·Σ (2s + 1)·dot, times 1/8 per row.
// K-permuted fragments (kPermK): lane t takes grid entry t of each 32-block, i.e. values
// 8t..8t+7, into its two A words (k slots 4t.. and 16 + 4t..), and its B words are the
// same activations 8t..8t+7; a dot is a sum over k, so a permutation shared by A and B
// gives the same integer. One 8-byte grid lookup per lane and row instead of four 4-byte
// grid and sign lookups (the tile decode was bound by those shared-memory wavefronts);
// the signs are computed: the 7 stored bits and their parity, spread to bytes by a
// multiply. (16 bank-private copies of the grid, 32 KB, measured no faster at 64
// sequences and slower in prefill, where they halve the blocks per SM.)
struct Iq2xxsDec : Iq2xxsLayout {
    static constexpr uint32_t kTableBytes = 256 * sizeof(uint2);
    __device__ static void fill(uint8_t* t, const uint32_t*) {
        for (uint32_t k = threadIdx.x; k < 256; k += kThreads) reinterpret_cast<uint2*>(t)[k] = g_mx_grid[k];
    }
    __device__ static LaneTabs lane_tables(const uint8_t* t, uint32_t) { return {t, t}; }
    __device__ static Frag frag(const uint8_t* p, uint32_t b, uint32_t t, const LaneTabs& tab) {
        const uint8_t* q = p + 2 + 8 * b;
        const uint32_t aux = u16(q + 4) | (u16(q + 6) << 16);
        const uint2 mag = reinterpret_cast<const uint2*>(tab.grid)[q[t]];
        const uint32_t s7 = (aux >> (7 * t)) & 127, s8 = s7 | ((__popc(s7) & 1) << 7);
        // bit j of a nibble to bit 8j (j < 4: the shifted copies never overlap)
        const uint32_t neg_lo = ((s8 & 15) * 0x00204081u) & 0x01010101u;
        const uint32_t neg_hi = ((s8 >> 4) * 0x00204081u) & 0x01010101u;
        // bytes ≤ 43: (m ^ 0xff) + 1 = −m in each byte, no carries
        return {(mag.x ^ (neg_lo * 255)) + neg_lo, (mag.y ^ (neg_hi * 255)) + neg_hi, isc(aux), 0, 0};
    }
};

// The same K-permuted fragments for tiles of at most 16 tokens (64 sequences: ~1.5 tokens
// per expert), where each weight is decoded for one or two tokens and the decode alone
// bounds the kernel: it was both issue bound (~36 instructions per lane and grid entry)
// and shared-memory bound (the random 8-byte grid lookups: a third of the wavefronts
// were bank conflicts). Here as matmul_q8's IQ2XXSFast: a byte-permute selector per
// value from two 4-byte lookups (grid_sel[entry] | sign_sel[7 sign bits], parity
// included), then two __byte_perm of the constant pair ({8, 25, 43}, their negations):
// ~10 instructions instead of ~24. Each lane has its own copy of grid_sel (word
// 32·e + lane, bank = lane: 32 KB, one wavefront a lookup); sign_sel has kSignCopies
// copies (word C·s + lane % C): 32 (16 KB) makes its lookups conflict-free too, 8 (4 KB)
// costs ~2.3 wavefronts a lookup but leaves room for a third block per SM at 8 tokens
// (DS4_CUDA_IQ2_SIGN_COPIES picks). Same int8 words, same bits.
template <uint32_t kSignCopies>
struct Iq2xxsSelDec : Iq2xxsLayout {
    static constexpr uint32_t kGridWords = 256 * 32, kSignWords = 128 * kSignCopies;
    static constexpr uint32_t kTableBytes = (kGridWords + kSignWords) * sizeof(uint32_t);
    static constexpr uint32_t kPos = q8::IQ2XXSFast::kPos, kNeg = q8::IQ2XXSFast::kNeg;
    // consecutive threads store consecutive words: the same source word is a broadcast load
    __device__ static void fill(uint8_t* t, const uint32_t* sel) {
        auto* w = reinterpret_cast<uint32_t*>(t);
        for (uint32_t i = threadIdx.x; i < kGridWords; i += kThreads) w[i] = __ldg(sel + i / 32);
        for (uint32_t i = threadIdx.x; i < kSignWords; i += kThreads) w[kGridWords + i] = __ldg(sel + 256 + i / kSignCopies);
    }
    // sign word s of copy c at byte 4·(C·s + c): s shifted to bit log2(4C), the copy below it
    static constexpr uint32_t kSignShift = std::countr_zero(4 * kSignCopies);
    __device__ static LaneTabs lane_tables(const uint8_t* t, uint32_t lane) {
        return {t + 4 * lane, t + 4 * kGridWords, 4 * (lane % kSignCopies), (7 * (lane % 4) - kSignShift) & 31};
    }
    // The sign word's offset from one rotation (bits 7t.. of aux to kSignShift..) and one
    // and-or with the copy's offset, instead of shift, mask, scale and add.
    __device__ static Frag frag(const uint8_t* p, uint32_t b, uint32_t t, const LaneTabs& tab) {
        const uint8_t* q = p + 2 + 8 * b;
        const uint32_t aux = u16(q + 4) | (u16(q + 6) << 16);
        const auto* g = reinterpret_cast<const uint32_t*>(tab.grid);
        const uint32_t s_off = (__funnelshift_r(aux, aux, tab.sign_rot) & (127u << kSignShift)) | tab.sign_lane;
        const uint32_t sel = g[32 * q[t]] | *reinterpret_cast<const uint32_t*>(tab.sign + s_off);
        return {q8::prmt_low_nibbles(kPos, kNeg, sel), q8::prmt_low_nibbles(kPos, kNeg, sel >> 16), isc(aux), 0, 0};
    }
};

// value = d·sc·code − dmin·m per 16 values; code·sc ≤ 45 fits the int8 words
struct Q2KDec : NoTables {  // scales[16], qs[64], d, dmin
    static constexpr uint32_t kBytes = 84, kChunks = 6, kPitch = 112;  // 28 words
    static constexpr bool kMin = true, kPremul = true, kPermK = false;
    __device__ static Frag frag(const uint8_t* p, uint32_t b, uint32_t t, const LaneTabs&) {
        const uint8_t* qs = p + 16 + 32 * (b / 4) + 4 * t;
        const uint32_t shift = 2 * (b % 4), sc = u16(p + 2 * b);
        // codes ≤ 3 times a 4-bit scale ≤ 45 per byte: one integer multiply, no carries
        return {((u32(qs) >> shift) & 0x03030303u) * (sc & 15), ((u32(qs + 16) >> shift) & 0x03030303u) * ((sc >> 8) & 15),
                1, bytes4((sc >> 4) & 15), bytes4(sc >> 12)};
    }
    __device__ static float2 scales(const uint8_t* p) {
        const uint32_t dd = u32(p + 80);
        return {f16(dd & 0xffff), f16(dd >> 16)};
    }
};

// value = d·sc·code − dmin·m per 32 values (sc, m ≤ 63)
struct Q4KDec : NoTables {  // d, dmin, scales[12], qs[128]
    static constexpr uint32_t kBytes = 144, kChunks = 9, kPitch = 144;  // 36 words
    static constexpr bool kMin = true, kPremul = false, kPermK = false;
    __device__ static Frag frag(const uint8_t* p, uint32_t b, uint32_t t, const LaneTabs&) {
        const uint8_t* qs = p + 16 + 32 * (b / 2) + 4 * t;
        const uint32_t shift = 4 * (b % 2);
        const uint8_t* sc = p + 4;
        uint32_t scale = 0, min = 0;
        if (b < 4) {
            scale = sc[b] & 63;
            min = sc[b + 4] & 63;
        } else {
            scale = (sc[b + 4] & 0x0F) | ((sc[b - 4] >> 6) << 4);
            min = (sc[b + 4] >> 4) | ((sc[b] >> 6) << 4);
        }
        const uint32_t m = bytes4(min);
        return {(u32(qs) >> shift) & 0x0F0F0F0Fu, (u32(qs + 16) >> shift) & 0x0F0F0F0Fu, static_cast<int>(scale), m, m};
    }
    __device__ static float2 scales(const uint8_t* p) {
        const uint32_t dd = u32(p);
        return {f16(dd & 0xffff), f16(dd >> 16)};
    }
};

template <class F, int BN>
struct Stage {
    alignas(16) uint8_t w[kBM][F::kPitch];
    alignas(16) uint8_t x[BN][kXPitch<F>];
    alignas(16) uint8_t r[BN][kRecPitch];
};

struct Args {
    const uint8_t *w0, *w1;
    uint64_t slab_bytes, row_bytes;
    uint32_t rows, row_tiles, cols;
    const uint8_t* xq;
    uint64_t tok_bytes;
    float *y0, *y1;
    uint64_t y_stride;
    const uint32_t *expert, *begin, *count, *n_active;
    uint32_t* tiles;
    const uint32_t* iq2_sel;  // q8_iq2_selectors() (Iq2xxsSelDec)
};

// Stage i: the rows' super-block i (a window of 16-byte chunks from its 16-byte floor;
// chunks past its end zero-filled, so a read never leaves the 16-byte granules of the
// tensor) and the tokens' codes and records (tokens past the tile's zero-filled). A
// thread's chunks are the same (row, chunk) pairs every stage, so their row addresses,
// shared offsets and bounds are worked out once per block (StagePlan) and a stage only
// adds its offset.
template <class F, int BN>
struct StagePlan {
    static constexpr uint32_t kW = (kBM * F::kChunks + kThreads - 1) / kThreads;  // weight chunks per thread
    static constexpr uint32_t kX = (BN * 17 + kThreads - 1) / kThreads;           // activation chunks per thread
    const uint8_t* wrow[kW];  // the chunk's row (nullptr: no chunk, or a row past the tile)
    uint32_t wdst[kW];        // byte offset in Stage::w
    uint32_t wj[kW];          // chunk index in the row's window
    const uint8_t* xsrc[kX];  // stage 0's source (nullptr: no chunk, or a token past the tile)
    uint32_t xdst[kX];        // byte offset in the Stage
    uint32_t xstep[kX];       // source bytes per stage: 256 codes or one 48-byte record

    __device__ StagePlan(const uint8_t* w, uint64_t row_bytes, uint32_t n_rows, const uint8_t* x, uint64_t tok_bytes,
                         uint32_t cols, uint32_t n_tok) {
        using S = Stage<F, BN>;
#pragma unroll
        for (uint32_t k = 0; k < kW; ++k) {
            const uint32_t c = threadIdx.x + k * kThreads, r = c / F::kChunks, j = c % F::kChunks;
            const bool on = c < kBM * F::kChunks && r < n_rows;
            wrow[k] = on ? w + r * row_bytes : nullptr;
            wdst[k] = c < kBM * F::kChunks ? static_cast<uint32_t>(offsetof(S, w) + r * F::kPitch + 16 * j) : ~0u;
            wj[k] = j;
        }
#pragma unroll
        for (uint32_t k = 0; k < kX; ++k) {
            const uint32_t c = threadIdx.x + k * kThreads, t = c / 17, j = c % 17;
            const bool on = c < BN * 17 && t < n_tok;
            xsrc[k] = on ? x + t * tok_bytes + (j < 16 ? 16 * j : cols) : nullptr;
            xdst[k] = c >= BN * 17 ? ~0u
                      : j < 16     ? static_cast<uint32_t>(offsetof(S, x) + t * kXPitch<F> + 16 * j)
                                   : static_cast<uint32_t>(offsetof(S, r) + t * kRecPitch);
            xstep[k] = j < 16 ? kSB : kQ8kRec;
        }
    }

    __device__ void load(Stage<F, BN>& st, const uint8_t* w, const uint8_t* x, uint32_t i) const {
        auto* base = reinterpret_cast<uint8_t*>(&st);
#pragma unroll
        for (uint32_t k = 0; k < kW; ++k) {
            if (wdst[k] == ~0u) continue;
            const uintptr_t start = reinterpret_cast<uintptr_t>(wrow[k]) + uint64_t{i} * F::kBytes;
            const uintptr_t chunk = (start & ~uintptr_t{15}) + 16 * wj[k];
            const bool in = wrow[k] != nullptr && chunk < start + F::kBytes;
            cp_async16(base + wdst[k], in ? reinterpret_cast<const uint8_t*>(chunk) : w, in ? 16 : 0);
        }
#pragma unroll
        for (uint32_t k = 0; k < kX; ++k) {
            if (xdst[k] == ~0u) continue;
            const bool in = xsrc[k] != nullptr;
            cp_async16(base + xdst[k], in ? xsrc[k] + uint64_t{i} * xstep[k] : x, in ? 16 : 0);
        }
    }
};

template <class F, int BN>
__global__ void __launch_bounds__(kThreads, BN <= 8 ? 3 : BN >= 128 ? 1 : 2) experts_mma_kernel(Args a) {
    dev::pdl_wait_and_release();
    using S = Stage<F, BN>;
    constexpr int NF = BN / 8;
    extern __shared__ __align__(16) uint8_t raw[];
    const uint32_t n_tiles = a.tiles[0];
    if (blockIdx.y >= n_tiles) return;
    const uint32_t slot = a.tiles[2 + 2 * blockIdx.y], tok0 = a.tiles[3 + 2 * blockIdx.y];
    const uint32_t which = blockIdx.x / a.row_tiles, row0 = (blockIdx.x % a.row_tiles) * kBM;
    const uint32_t e = a.expert[slot], p0 = a.begin[slot] + tok0;
    const uint32_t n_tok = min(static_cast<uint32_t>(BN), a.count[slot] - tok0), n_rows = min(kBM, a.rows - row0);
    const uint8_t* w = (which ? a.w1 : a.w0) + e * a.slab_bytes + uint64_t{row0} * a.row_bytes;
    float* y = which ? a.y1 : a.y0;
    const uint8_t* x = a.xq + uint64_t{p0} * a.tok_bytes;

    S* st = reinterpret_cast<S*>(raw);
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
    const LaneTabs tab = F::lane_tables(raw + kStages * sizeof(S), lane);
    const uint32_t ra = 16 * warp + g, n_st = a.cols / kSB;
    // a row's super-blocks sit at any 2- (IQ2_XXS) or 4-byte (Q2_K) offset from 16 bytes
    const auto off_a = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(w + ra * a.row_bytes) % 16);
    const auto off_b = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(w + (ra + 8) * a.row_bytes) % 16);

    float acc[NF][4];
#pragma unroll
    for (int f = 0; f < NF; ++f) acc[f][0] = acc[f][1] = acc[f][2] = acc[f][3] = 0.f;

    const StagePlan<F, BN> plan(w, a.row_bytes, n_rows, x, a.tok_bytes, a.cols, n_tok);
#pragma unroll
    for (uint32_t i = 0; i < kStages - 1; ++i) {
        if (i < n_st) plan.load(st[i], w, x, i);
        cp_async_commit();
    }
    // the tables after the first copies are out (their latency covers the fill); visible
    // after the first barrier below
    F::fill(raw + kStages * sizeof(S), a.iq2_sel);
    for (uint32_t i = 0; i < n_st; ++i) {
        cp_async_wait<kStages - 2>();
        __syncthreads();
        const S& s = st[i % kStages];
        const uint8_t* pa = &s.w[ra][(off_a + i * F::kBytes) % 16];
        const uint8_t* pb = &s.w[ra + 8][(off_b + i * F::kBytes) % 16];
        int isum[NF][4], msum[NF][4];
#pragma unroll
        for (int f = 0; f < NF; ++f)
#pragma unroll
            for (int c = 0; c < 4; ++c) isum[f][c] = msum[f][c] = 0;
        // one fragment column (8-token tiles): all 8 blocks unrolled, so the block and
        // activation offsets are immediates of the shared loads
#pragma unroll(NF == 1 ? 8 : 2)
        for (uint32_t b = 0; b < 8; ++b) {
            const Frag fa = F::frag(pa, b, t4, tab), fb = F::frag(pb, b, t4, tab);
#pragma unroll
            for (int f = 0; f < NF; ++f) {
                uint32_t x0, x1;
                if constexpr (F::kPermK) {
                    const uint2 xv = *reinterpret_cast<const uint2*>(&s.x[8 * f + g][32 * b + 8 * t4]);
                    x0 = xv.x, x1 = xv.y;
                } else {
                    const uint8_t* xt = &s.x[8 * f + g][32 * b + 4 * t4];
                    x0 = u32(xt), x1 = u32(xt + 16);
                }
                if constexpr (F::kPremul) {
                    mma_s8_acc(fa.lo, fb.lo, fa.hi, fb.hi, x0, x1, isum[f]);
                } else {
                    int d[4];
                    mma_s8(fa.lo, fb.lo, fa.hi, fb.hi, x0, x1, d);
                    isum[f][0] += fa.isc * d[0], isum[f][1] += fa.isc * d[1];
                    isum[f][2] += fb.isc * d[2], isum[f][3] += fb.isc * d[3];
                }
                if constexpr (F::kMin) mma_s8_acc(fa.mlo, fb.mlo, fa.mhi, fb.mhi, x0, x1, msum[f]);
            }
        }
        // the super-block's value per (row, token), as quant's kquant_block_value /
        // iq2_xxs_block_value: separate roundings, no contraction
        const float2 sa = F::scales(pa), sb = F::scales(pb);
#pragma unroll
        for (int f = 0; f < NF; ++f) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                const float dx = *reinterpret_cast<const float*>(&s.r[8 * f + 2 * t4 + c % 2][0]);
                const float2 sw = c < 2 ? sa : sb;
                const float is = __int2float_rn(isum[f][c]);
                float v;
                if constexpr (F::kMin)
                    v = __fsub_rn(__fmul_rn(__fmul_rn(dx, sw.x), is),
                                  __fmul_rn(__fmul_rn(dx, sw.y), __int2float_rn(msum[f][c])));
                else
                    v = __fmul_rn(__fmul_rn(sw.x, dx), is);
                acc[f][c] = __fadd_rn(acc[f][c], v);
            }
        }
        const uint32_t next = i + kStages - 1;  // into the buffer all warps left at the barrier above
        if (next < n_st) plan.load(st[next % kStages], w, x, next);
        cp_async_commit();
    }
    cp_async_wait<0>();

#pragma unroll
    for (int f = 0; f < NF; ++f) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t r = ra + (i >= 2 ? 8 : 0), t = 8 * f + 2 * t4 + i % 2;
            if (r < n_rows && t < n_tok)
                y[uint64_t{p0 + t} * a.y_stride + row0 + r] = F::kPermK ? acc[f][i] * 0.125f : acc[f][i];
        }
    }
}

// One warp per (token, 256 values), lane l holding values 8l..8l+7: quant::ref's
// quantize_q8_K exactly (the signed value of largest magnitude, first on ties; iscale =
// −127/max; codes round half to even, saturated, NaN → 0; bsums per 16 values).
__global__ void quantize_q8k_kernel(const float* __restrict__ x, uint64_t x_stride, uint32_t cols, uint32_t n_tok,
                                    uint8_t* __restrict__ xq, uint64_t tok_bytes, ActRows rs) {
    dev::pdl_wait_and_release();
    const uint32_t lane = threadIdx.x % 32;
    const uint64_t warp_id = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
    const uint32_t groups = cols / 256;
    if (warp_id >= uint64_t{groups} * n_tok) return;  // whole warps only
    const auto t = static_cast<uint32_t>(warp_id / groups), g = static_cast<uint32_t>(warp_id % groups);
    if (!dev::act_row_live(rs, t)) return;
    float v[8];
    dev::load_act8(x, x_stride, rs, t, uint64_t{g} * 256 + 8 * lane, v);
    float amax = 0.f, max = 0.f;
    uint32_t at = 0xffffffffu;
#pragma unroll
    for (int i = 0; i < 8; ++i)
        if (fabsf(v[i]) > amax) amax = fabsf(v[i]), max = v[i], at = 8 * lane + i;
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {  // larger magnitude wins, the lower index on ties
        const float am = __shfl_xor_sync(0xffffffffu, amax, o), mx = __shfl_xor_sync(0xffffffffu, max, o);
        const uint32_t ao = __shfl_xor_sync(0xffffffffu, at, o);
        if (am > amax || (am == amax && ao < at)) amax = am, max = mx, at = ao;
    }
    uint8_t* tok = xq + t * tok_bytes;
    float* d = reinterpret_cast<float*>(tok + cols + uint64_t{g} * kQ8kRec);
    const float iscale = amax == 0.f ? 0.f : __fdiv_rn(-127.f, max);
    const bool ok = amax != 0.f && isfinite(iscale);
    uint32_t packed[2] = {0, 0};
    int sum = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const float p = __fmul_rn(iscale, v[i]);
        const int q = !ok || isnan(p) ? 0 : __float2int_rn(fminf(fmaxf(p, -128.f), 127.f));
        sum += q;
        packed[i / 4] |= (static_cast<uint32_t>(q) & 0xff) << (8 * (i % 4));
    }
    *reinterpret_cast<uint2*>(tok + uint64_t{g} * 256 + 8 * lane) = make_uint2(packed[0], packed[1]);
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    auto* bsums = reinterpret_cast<int16_t*>(d + 1);
    if (lane % 2 == 0) bsums[lane / 2] = static_cast<int16_t>(sum);
    // all zero: d 0; a max too small for a finite iscale: d = 1/iscale (±0), as the CPU
    if (lane == 0) *d = amax == 0.f ? 0.f : __fdiv_rn(1.f, iscale);
}

// tiles[0] ← the tile count, tiles[2 + 2k], [3 + 2k] ← (slot, first token) of tile k:
// ceil(count / bn) tiles per active slot, in slot order. One block of 256 threads: the
// slots' tile counts scanned 256 at a time (warp shuffles, then the 8 warp totals; one
// thread walking every slot took ~10 us at 256 slots); smem: max_slots words.
constexpr uint32_t kTilesThreads = 256;

__global__ void __launch_bounds__(kTilesThreads)
    experts_tiles_kernel(const uint32_t* __restrict__ count, const uint32_t* __restrict__ n_active,
                         uint32_t max_slots, uint32_t bn, uint32_t* __restrict__ tiles) {
    dev::pdl_wait_and_release();
    extern __shared__ uint32_t first[];
    __shared__ uint32_t warp_sum[kTilesThreads / 32];
    __shared__ uint32_t carry;
    const uint32_t n = min(*n_active, max_slots), lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (threadIdx.x == 0) carry = 0;
    __syncthreads();
    for (uint32_t j0 = 0; j0 < n; j0 += kTilesThreads) {
        const uint32_t j = j0 + threadIdx.x;
        const uint32_t mine = j < n ? (count[j] + bn - 1) / bn : 0;
        uint32_t incl = mine;  // inclusive scan within the warp
#pragma unroll
        for (uint32_t o = 1; o < 32; o *= 2) {
            const uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += v;
        }
        if (lane == 31) warp_sum[warp] = incl;
        __syncthreads();
        uint32_t before = carry;
        for (uint32_t w = 0; w < warp; ++w) before += warp_sum[w];
        if (j < n) first[j] = before + incl - mine;
        __syncthreads();  // every thread has read carry and warp_sum
        if (threadIdx.x == kTilesThreads - 1) carry = before + incl;
        __syncthreads();
    }
    if (threadIdx.x == 0) tiles[0] = carry;
    for (uint32_t j = threadIdx.x; j < n; j += blockDim.x) {
        const uint32_t k_end = (count[j] + bn - 1) / bn;
        for (uint32_t k = 0; k < k_end; ++k) {
            tiles[2 + 2 * (first[j] + k)] = j;
            tiles[3 + 2 * (first[j] + k)] = k * bn;
        }
    }
}

template <class F, int BN>
constexpr uint32_t smem_bytes() {
    return kStages * sizeof(Stage<F, BN>) + F::kTableBytes;
}

template <class F, int BN>
void launch(Args a, uint32_t max_slots, uint32_t max_pairs, cudaStream_t s) {
    static std::once_flag once;
    std::call_once(once, [] {  // first use: in the forward's first (eager) pass, never in a capture
        DS4_CUDA_CHECK(cudaFuncSetAttribute(experts_mma_kernel<F, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem_bytes<F, BN>())));
        // 8-token tiles: all of L1 as shared memory, which 3 blocks of 73 KB (IQ2_XXS) need;
        // the copies are cp.async.cg, which bypass L1 anyway (the wider tiles, measured
        // before this, keep the driver's choice)
        if constexpr (BN <= 8)
            DS4_CUDA_CHECK(cudaFuncSetAttribute(experts_mma_kernel<F, BN>,
                                                cudaFuncAttributePreferredSharedMemoryCarveout,
                                                cudaSharedmemCarveoutMaxShared));
    });
    const uint32_t max_tiles = (max_pairs + BN - 1) / BN + max_slots;
    launch_pdl("launch of experts_tiles_kernel", experts_tiles_kernel, dim3(1), dim3(kTilesThreads),
               max_slots * sizeof(uint32_t), s, a.count, a.n_active, max_slots, BN, a.tiles);
    const dim3 grid(a.row_tiles * (a.w1 != nullptr ? 2 : 1), max_tiles);
    launch_pdl("launch of experts_mma_kernel", experts_mma_kernel<F, BN>, dim3(grid), dim3(kThreads),
               smem_bytes<F, BN>(), s, a);
}

// IQ2_XXS tiles of at most 16 tokens decode with the lane-private selector tables
// (Iq2xxsSelDec); wider tiles keep the 2 KB grid, since the tables would cost them a
// block per SM.
template <class F, int BN>
void launch_tile(Args a, uint32_t max_slots, uint32_t max_pairs, cudaStream_t s) {
    if constexpr (std::is_same_v<F, Iq2xxsDec> && BN <= 16) {
        static const bool private_signs = env_is("DS4_CUDA_IQ2_SIGN_COPIES", "32");
        if (private_signs) return launch<Iq2xxsSelDec<32>, BN>(a, max_slots, max_pairs, s);
        launch<Iq2xxsSelDec<8>, BN>(a, max_slots, max_pairs, s);
    } else {
        launch<F, BN>(a, max_slots, max_pairs, s);
    }
}

template <class F>
void launch_bn(Args a, uint32_t max_slots, uint32_t max_pairs, cudaStream_t s) {
    // tokens per active expert on average (the pass's shape, not its routing: the choice,
    // which never changes a result, stays the same for a graph's replays); the K-quants
    // keep a second set of s32 sums (the mins), so at most 32 tokens per block. Under 4
    // (up to ~128 tokens over 256 experts) tiles of 8: one n8 fragment per warp.
    const uint32_t avg = max_pairs / std::max(1u, max_slots);
    if constexpr (!F::kMin) {
        // 128-token tiles decode each weight once for twice the tokens (one block per SM:
        // 254 registers); H200, 43 layers, prefill to 8k: 3634 vs 3482 t/s in 4096-token
        // passes. DS4_CUDA_EXPERTS_BN=64 keeps 64.
        static const bool wide =
            !env_is("DS4_CUDA_EXPERTS_BN", "64") && device_smem_optin() >= smem_bytes<F, 128>();
        if (wide && avg >= 80) return launch_tile<F, 128>(a, max_slots, max_pairs, s);
        if (avg >= 40) return launch_tile<F, 64>(a, max_slots, max_pairs, s);
    }
    if (avg >= 12)
        launch_tile<F, 32>(a, max_slots, max_pairs, s);
    else if (avg >= 4)
        launch_tile<F, 16>(a, max_slots, max_pairs, s);
    else
        launch_tile<F, 8>(a, max_slots, max_pairs, s);
}

void upload_tables() {
    static std::once_flag once;
    std::call_once(once, [] {
        uint2 grid[256];
        for (int e = 0; e < 256; ++e)
            grid[e] = make_uint2(static_cast<uint32_t>(quant::kIq2Grid[e]),
                                 static_cast<uint32_t>(quant::kIq2Grid[e] >> 32));
        // the kernel computes the signs: kIq2Signs[s] must be s and its parity
        for (uint32_t s = 0; s < 128; ++s)
            if (quant::kIq2Signs[s] != (s | (static_cast<uint32_t>(std::popcount(s)) & 1) << 7))
                fail("cuda matmul_experts_mma: kIq2Signs is not s | parity(s) << 7 at ", s);
        DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_mx_grid, grid, sizeof(grid)));
    });
}

}  // namespace

uint64_t q8k_token_bytes(uint64_t cols) { return cols + cols / 256 * kQ8kRec; }

void quantize_q8k_activations(const float* x, uint64_t x_stride, uint64_t cols, uint32_t n_tok, void* xq,
                              cudaStream_t s, const ActRows& rows) {
    if (cols == 0 || cols % 256 != 0 || cols > (uint64_t{1} << 30))
        fail("cuda quantize_q8k_activations: ", cols, " columns is not a positive multiple of 256 up to 2^30");
    if (n_tok == 0) return;
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || x_stride % 4 != 0)
        fail("cuda quantize_q8k_activations: activations must be 16-byte aligned with a stride multiple of 4");
    if (reinterpret_cast<uintptr_t>(xq) % 16 != 0) fail("cuda quantize_q8k_activations: xq is not 16-byte aligned");
    const uint64_t warps = cols / 256 * n_tok;
    const auto grid = static_cast<unsigned>((warps + kWarps - 1) / kWarps);
    launch_pdl("launch of quantize_q8k_kernel", quantize_q8k_kernel, dim3(grid), dim3(kThreads), 0, s, x, x_stride,
               static_cast<uint32_t>(cols), n_tok, static_cast<uint8_t*>(xq), q8k_token_bytes(cols), rows);
}

namespace {
uint32_t g_mma_experts_min = kMmaExpertsMinTokens;
}
uint32_t mma_experts_min_tokens() { return g_mma_experts_min; }
void set_mma_experts_min_tokens(uint32_t n_tok) { g_mma_experts_min = std::max(n_tok, kMmaExpertsMinTokens); }

bool matmul_experts_mma_supported(GgmlType t, uint64_t cols, uint64_t row_bytes, const void* w) {
    // the decoders' shared loads: u16 (IQ2_XXS), u32 (Q2_K); Q4_K's window of 9 chunks
    // holds a super-block only from a 16-byte boundary
    const uint64_t align = t == GgmlType::IQ2_XXS ? 2 : t == GgmlType::Q2_K ? 4 : t == GgmlType::Q4_K ? 16 : 0;
    if (align == 0 || cols % 256 != 0 || cols == 0) return false;
    // the largest tile this type can take (launch_bn) must fit the card's shared memory
    const uint64_t smem = t == GgmlType::IQ2_XXS ? std::max(smem_bytes<Iq2xxsDec, 64>(), smem_bytes<Iq2xxsSelDec<32>, 16>())
                          : t == GgmlType::Q2_K  ? smem_bytes<Q2KDec, 32>()
                                                 : smem_bytes<Q4KDec, 32>();
    return row_bytes % align == 0 && reinterpret_cast<uintptr_t>(w) % align == 0 && device_has_mma() &&
           device_smem_optin() >= smem;
}

void mma_experts_tiles(const ExpertGroups& g, uint32_t max_slots, uint32_t bn, uint32_t* tiles, cudaStream_t s) {
    if (bn < kMinBN) fail("cuda mma_experts_tiles: tiles of ", bn, " pairs, at least ", kMinBN);
    launch_pdl("launch of experts_tiles_kernel", experts_tiles_kernel, dim3(1), dim3(kTilesThreads),
               max_slots * sizeof(uint32_t), s, g.count, g.n_active, max_slots, bn, tiles);
}

uint64_t mma_experts_tile_words(uint32_t max_pairs, uint32_t max_slots) {
    return 2 + 2 * ((uint64_t{max_pairs} + kMinBN - 1) / kMinBN + max_slots);
}

void matmul_experts_mma(GgmlType type, const void* w0, const void* w1, uint64_t slab_rows, uint64_t cols,
                        const void* xq, float* y0, float* y1, uint64_t y_stride, const ExpertGroups& g,
                        uint32_t max_slots, uint32_t max_pairs, uint32_t* tiles, cudaStream_t s) {
    if (slab_rows == 0 || max_slots == 0 || max_pairs == 0) return;
    const uint64_t row_bytes = cols / 256 * (type == GgmlType::IQ2_XXS ? 66 : type == GgmlType::Q2_K ? 84 : 144);
    if (!matmul_experts_mma_supported(type, cols, row_bytes, w0) ||
        (w1 != nullptr && !matmul_experts_mma_supported(type, cols, row_bytes, w1)))
        fail("cuda matmul_experts_mma: unsupported type, shape or alignment");
    if (slab_rows > 0x7fffffffu) fail("cuda matmul_experts_mma: ", slab_rows, " rows, at most 2^31 - 1");
    if (reinterpret_cast<uintptr_t>(xq) % 16 != 0) fail("cuda matmul_experts_mma: xq is not 16-byte aligned");
    const auto rows = static_cast<uint32_t>(slab_rows);
    Args a{static_cast<const uint8_t*>(w0), static_cast<const uint8_t*>(w1), slab_rows * row_bytes, row_bytes, rows,
           (rows + kBM - 1) / kBM, static_cast<uint32_t>(cols), static_cast<const uint8_t*>(xq),
           q8k_token_bytes(cols), y0, y1, y_stride, g.expert, g.begin, g.count, g.n_active, tiles,
           type == GgmlType::IQ2_XXS ? q8_iq2_selectors() : nullptr};
    switch (type) {
        case GgmlType::IQ2_XXS:
            upload_tables();
            return launch_bn<Iq2xxsDec>(a, max_slots, max_pairs, s);
        case GgmlType::Q2_K: return launch_bn<Q2KDec>(a, max_slots, max_pairs, s);
        default: return launch_bn<Q4KDec>(a, max_slots, max_pairs, s);
    }
}

}  // namespace ds4::cuda
