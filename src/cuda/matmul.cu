// Quantized matrix-vector products: each warp owns 2-4 weight rows. The warp stages a chunk of
// its rows in shared memory with coalesced 16-byte loads, each lane dequantizes 8
// consecutive columns per 256-column group exactly as quant/reference_dequant.cpp does,
// and dots them with up to 8 f32 activation rows, so one pass over the weights serves a
// small batch. (A first version where each lane decoded whole quant blocks straight from
// global memory ran at 2-17% of the copy bandwidth: scattered 2/4-byte weight loads and
// activation loads spread over 32 cache lines per instruction. See bench/RESULTS.md.)
#include <cuda_fp16.h>

#include <algorithm>
#include <mutex>
#include <type_traits>

#include "cuda/check.h"
#include "cuda/env_switch.h"
#include "cuda/device_math.cuh"
#include "cuda/kernels.h"
#include "cuda/matmul_f16_mma.h"
#include "cuda/pdl.cuh"
#include "cuda/token_chunks.h"
#include "quant/blocks.h"
#include "quant/iq2_tables.h"

namespace ds4::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxTok = 8;

__device__ uint64_t g_iq2_grid[256];
__device__ uint8_t g_iq2_signs[128];

__device__ __forceinline__ float f16(uint32_t bits) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}

// Every format is handled in groups of 256 columns (one K-quant super-block, 8 Q8_0
// blocks, 256 F16/F32 values) of kGroupBytes bytes. A warp stages kChunkGroups groups
// of its row into shared memory with coalesced 16-byte loads (2-byte loads when the row
// length is not a multiple of 16 bytes), then lane l decodes columns 8l .. 8l + 7 of each
// group from shared memory: the activation reads of a warp are then 32 contiguous float4
// pairs, and the weight reads are full 128-byte lines. kUnit groups make 16 bytes.
__device__ __forceinline__ uint32_t sm_u16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ uint32_t sm_u32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// Small unsigned integers to float without the integer-to-float conversion (1/8 of the
// FP32 rate on sm_90): the integer as the mantissa of 2^23 (bits 0x4B000000 | v), minus
// 2^23. Exact for v < 2^23. Used by IQ2_XXS only: the same change slowed the Q2_K decode
// (routed down, H200: 26.5 -> 27.9 us per launch; bench/RESULTS.md).
__device__ __forceinline__ float small_uint_to_float(uint32_t v) {
    return __uint_as_float(v | 0x4B000000u) - 8388608.f;
}

// 2^23 + byte b of w as a float, in one byte permute: b, two zero bytes, then 0x4B.
__device__ __forceinline__ float biased_byte(uint32_t w, int b) {
    return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7540u | static_cast<uint32_t>(b)));
}

// IQ2_XXS lookup tables, copied to shared memory per block: lanes index them at random.
// Measured neutral on the H100 against L1-cached global loads (20.6 -> 20.8 % of copy
// bandwidth): the dequantization arithmetic, not the lookups, limits IQ2_XXS for now.
struct Iq2Tables {
    const uint64_t* grid;
    const uint8_t* signs;
};

struct F32Format {
    static constexpr int kGroupBytes = 1024, kUnit = 1, kChunkGroups = 1;
    __device__ static void decode8(const uint8_t* g, int l, float (&v)[8], const Iq2Tables&) {
        const auto* p = reinterpret_cast<const float4*>(g + 32 * l);
        const float4 a = p[0], b = p[1];
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    }
};

struct F16Format {
    static constexpr int kGroupBytes = 512, kUnit = 1, kChunkGroups = 2;
    __device__ static void decode8(const uint8_t* g, int l, float (&v)[8], const Iq2Tables&) {
        const uint4 q = *reinterpret_cast<const uint4*>(g + 16 * l);
        const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = f16(w[i] & 0xffff);
            v[2 * i + 1] = f16(w[i] >> 16);
        }
    }
};

struct Q8_0Format {  // a group is 8 blocks of 34 bytes; lane l: block l/4, values 8(l%4)..
    static constexpr int kGroupBytes = 272, kUnit = 1, kChunkGroups = 4;
    __device__ static void decode8(const uint8_t* g, int l, float (&v)[8], const Iq2Tables&) {
        const uint8_t* blk = g + 34 * (l / 4);
        const float d = f16(sm_u16(blk));
        const uint8_t* q = blk + 2 + 8 * (l % 4);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t pair = sm_u16(q + 2 * i);
            v[2 * i] = d * static_cast<float>(static_cast<int8_t>(pair & 0xff));
            v[2 * i + 1] = d * static_cast<float>(static_cast<int8_t>(pair >> 8));
        }
    }
};

// Q2_K column e = 8l + i: qs byte 32·(e/128) + e%32 at bit shift 2·((e%128)/32), scale e/16.
struct Q2KFormat {
    static constexpr int kGroupBytes = 84, kUnit = 4, kChunkGroups = 12;
    __device__ static void decode8(const uint8_t* g, int l, float (&v)[8], const Iq2Tables&) {
        const int h = l / 16, shift = 2 * ((l % 16) / 4);
        const uint32_t dd = sm_u32(g + 80);
        const float d = f16(dd & 0xffff), dmin = f16(dd >> 16);
        const uint32_t sc = g[l / 2];
        const float dl = d * static_cast<float>(sc & 15);
        const float ml = dmin * static_cast<float>(sc >> 4);
        const uint8_t* q = g + 16 + 32 * h + 8 * (l % 4);
        const uint32_t w[2] = {sm_u32(q), sm_u32(q + 4)};
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const uint32_t code = (w[i / 4] >> (8 * (i % 4) + shift)) & 3;
            v[i] = dl * static_cast<float>(code) - ml;
        }
    }
};

// Q4_K column e = 8l + i: sub-block j = l/4, qs byte 32·(j/2) + e%32, high nibble for odd j.
struct Q4KFormat {
    static constexpr int kGroupBytes = 144, kUnit = 1, kChunkGroups = 7;
    __device__ static void scale_min(const uint8_t* sc, int j, int& scale, int& min) {
        if (j < 4) {
            scale = sc[j] & 63;
            min = sc[j + 4] & 63;
        } else {
            scale = (sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4);
            min = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        }
    }
    __device__ static void decode8(const uint8_t* g, int l, float (&v)[8], const Iq2Tables&) {
        const int j = l / 4;
        const uint32_t dd = sm_u32(g);
        const float d = f16(dd & 0xffff), dmin = f16(dd >> 16);
        int sc = 0, m = 0;
        scale_min(g + 4, j, sc, m);  // ggml folds d·S and dmin·M first
        const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
        const uint8_t* q = g + 16 + 32 * (j / 2) + 8 * (l % 4);
        const uint32_t w[2] = {sm_u32(q), sm_u32(q + 4)};
        const int shift = 4 * (j % 2);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const uint32_t code = (w[i / 4] >> (8 * (i % 4) + shift)) & 15;
            v[i] = dl * static_cast<float>(code) - ml;
        }
    }
};

// IQ2_XXS column e = 8l + i: 32-value group l/4 (8 bytes after d), grid entry k = l%4.
struct IQ2XXSFormat {
    static constexpr int kGroupBytes = 66, kUnit = 8, kChunkGroups = 16;
    __device__ static void decode8(const uint8_t* g, int l, float (&v)[8], const Iq2Tables& tab) {
        const int k = l % 4;
        const float d = f16(sm_u16(g));
        const uint8_t* q = g + 2 + 8 * (l / 4);
        const uint32_t w1 = sm_u16(q + 4) | (sm_u16(q + 6) << 16);
        const float gscale = d * (0.5f + small_uint_to_float(w1 >> 28)) * 0.25f;
        const uint64_t grid = tab.grid[q[k]];
        const uint32_t signs = tab.signs[(w1 >> (7 * k)) & 127];
        const uint32_t half[2] = {static_cast<uint32_t>(grid), static_cast<uint32_t>(grid >> 32)};
        // gscale·mag as one fused multiply-add on the biased magnitude (see biased_byte):
        // gscale·(2^23 + mag) − gscale·2^23 is exactly gscale·mag, rounded once, so the
        // bits are those of the product (gscale·2^23 is exact: a power-of-two scaling).
        const float unbias = -gscale * 8388608.f;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const float m = fmaf(gscale, biased_byte(half[j / 4], j % 4), unbias);
            // the sign as a flip of the sign bit: the same bits as m · (−1)
            v[j] = __uint_as_float(__float_as_uint(m) ^ ((signs << (31 - j)) & 0x80000000u));
        }
    }
};

template <class F>
constexpr int kChunkBytes = F::kGroupBytes * F::kChunkGroups;

// Before the pdl wait (pdl.cuh: the weights are constants), the warp asks L2 for the
// first chunk of its rows, so a block placed early has them near while the previous
// kernel finishes; the staging after the wait then reads L2, not DRAM.
template <class F>
__device__ __forceinline__ void prefetch_first_chunk(const uint8_t* w, uint64_t row_bytes, uint32_t n_rows,
                                                     uint32_t n_groups, uint32_t chunk0, uint32_t lane) {
    const uint32_t g0 = chunk0 * F::kChunkGroups;
    if (g0 >= n_groups) return;
    const uint32_t bytes = min(static_cast<uint32_t>(F::kChunkGroups), n_groups - g0) * F::kGroupBytes;
    for (uint32_t r = 0; r < n_rows; ++r)
        for (uint32_t o = 128 * lane; o < bytes; o += 32 * 128)
            asm volatile("prefetch.global.L2 [%0];" ::"l"(w + r * row_bytes + uint64_t{g0} * F::kGroupBytes + o));
}

// Copies `bytes` (even) from global to this warp's shared buffer; 16-byte loads when
// both ends allow, issued before the stores so several are in flight per lane.
__device__ __forceinline__ void stage(uint8_t* dst, const uint8_t* src, uint32_t bytes, bool wide, uint32_t lane) {
    if (wide) {
#pragma unroll 4
        for (uint32_t o = 16 * lane; o < bytes; o += 512)
            *reinterpret_cast<uint4*>(dst + o) = __ldg(reinterpret_cast<const uint4*>(src + o));
    } else {
#pragma unroll 4
        for (uint32_t o = 2 * lane; o < bytes; o += 64)
            *reinterpret_cast<uint16_t*>(dst + o) = __ldg(reinterpret_cast<const unsigned short*>(src + o));
    }
}

// Warp body of every product below: the warp's n_rows (≤ R) rows starting at w (row_bytes
// apart) dotted with NT activation rows, over the chunks chunk0, chunk0 + chunk_step, ...
// of kChunkGroups groups; acc gets this lane's partial sums. R rows per warp: the
// activation float4s of a group are loaded once and used for all R rows (the activation
// traffic, not the weights, limited the one-row version of the low-bit types: a row's
// activations are 4-16x its weight bytes). Per (row, token) the arithmetic does not
// depend on NT or R, so a token gets the same bits alone or in a batch.
template <class F, int NT, int R>
__device__ __forceinline__ void dot_chunks(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t n_rows,
                                           uint32_t n_groups, uint32_t chunk0, uint32_t chunk_step, bool wide,
                                           const float* __restrict__ x, uint64_t x_stride,
                                           uint8_t (*smem)[kChunkBytes<F>], const Iq2Tables& tab, uint32_t lane,
                                           float (&acc)[R][NT]) {
    for (uint32_t g0 = chunk0 * F::kChunkGroups; g0 < n_groups; g0 += chunk_step * F::kChunkGroups) {
        const uint32_t ng = min(static_cast<uint32_t>(F::kChunkGroups), n_groups - g0);
#pragma unroll
        for (int r = 0; r < R; ++r)
            if (static_cast<uint32_t>(r) < n_rows)
                stage(smem[r], w + r * row_bytes + uint64_t{g0} * F::kGroupBytes, ng * F::kGroupBytes, wide, lane);
        __syncwarp();
        for (uint32_t g = 0; g < ng; ++g) {
            const float* xb = x + uint64_t{g0 + g} * 256 + 8 * lane;
            float4 xa[NT], xc[NT];
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                xa[t] = __ldg(reinterpret_cast<const float4*>(xb + t * x_stride));
                xc[t] = __ldg(reinterpret_cast<const float4*>(xb + t * x_stride + 4));
            }
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (static_cast<uint32_t>(r) >= n_rows) break;
                float v[8];
                F::decode8(smem[r] + g * F::kGroupBytes, static_cast<int>(lane), v, tab);
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    acc[r][t] += v[0] * xa[t].x + v[1] * xa[t].y + v[2] * xa[t].z + v[3] * xa[t].w +
                                 v[4] * xc[t].x + v[5] * xc[t].y + v[6] * xc[t].z + v[7] * xc[t].w;
            }
        }
        __syncwarp();  // the buffers are refilled next chunk
    }
}

template <int R, int NT>
__device__ __forceinline__ void zero(float (&acc)[R][NT]) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;
}

// Sums the lanes' partials and stores the warp's rows (y already at row0).
template <int R, int NT>
__device__ __forceinline__ void store_rows(float (&acc)[R][NT], uint32_t n_rows, uint32_t lane, float* y,
                                           uint64_t y_stride) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float a = dev::warp_sum(acc[r][t]);
            if (lane == 0 && static_cast<uint32_t>(r) < n_rows) y[t * y_stride + r] = a;
        }
    }
}

// The IQ2_XXS tables in shared memory; every thread of the block must call this (barrier).
template <class F>
struct SharedTables {
    static constexpr bool kIq2 = std::is_same_v<F, IQ2XXSFormat>;
    uint64_t grid[kIq2 ? 256 : 1];
    uint8_t signs[kIq2 ? 128 : 1];
    __device__ Iq2Tables load() {
        if constexpr (kIq2) {
            for (uint32_t i = threadIdx.x; i < 256; i += blockDim.x) grid[i] = g_iq2_grid[i];
            for (uint32_t i = threadIdx.x; i < 128; i += blockDim.x) signs[i] = g_iq2_signs[i];
            __syncthreads();
        }
        return Iq2Tables{grid, signs};
    }
};

template <class F, int NT, int R>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matmul_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t rows, uint32_t n_groups, bool wide,
                  const float* __restrict__ x, uint64_t x_stride, float* __restrict__ y, uint64_t y_stride) {
    // whole chunks (and hence every chunk start) stay 16-byte aligned for the wide path
    static_assert(F::kChunkGroups % F::kUnit == 0 && F::kUnit * F::kGroupBytes % 16 == 0);
    __shared__ __align__(16) uint8_t smem[kWarpsPerBlock][R][kChunkBytes<F>];
    __shared__ SharedTables<F> tables;
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint32_t row0 = (blockIdx.x * kWarpsPerBlock + warp) * R;
    const uint32_t n_rows = row0 < rows ? min(static_cast<uint32_t>(R), rows - row0) : 0;
    prefetch_first_chunk<F>(w + uint64_t{row0} * row_bytes, row_bytes, n_rows, n_groups, 0, lane);
    dev::pdl_wait_and_release();
    const Iq2Tables tab = tables.load();  // before any warp returns
    if (n_rows == 0) return;
    float acc[R][NT];
    zero(acc);
    dot_chunks<F, NT, R>(w + row0 * row_bytes, row_bytes, n_rows, n_groups, 0, 1, wide, x, x_stride, smem[warp], tab,
                         lane, acc);
    store_rows(acc, n_rows, lane, y + row0, y_stride);
}

// Matrices of few rows (hyper-connection mixes, router, low-rank projections): the
// kernel above gives them too few warps, each walking a long row serially. Here one
// block of W warps takes one row, warp k the chunks k, k + W, ...; the warps' sums are
// added in warp order (deterministic, independent of NT). W is 32 for rows of 32 chunks
// or more (the 16384-wide F16 HC mixes: one chunk per warp), 8 for 8 or more, else 4;
// it depends on the shape only.
constexpr uint64_t kSplitBelowRows = 2048;

// blockIdx.y picks one of several products of the same shape (matmul_groups): its weights,
// activations and outputs start that many strides further.
struct GroupStrides {
    uint64_t w = 0, x = 0, y = 0;
};

// One row of the split kernel (below): row `row` of w into y[t * y_stride + row]. Shared by
// the single / grouped and the multi-product kernels, so a row's bits do not depend on which.
// It makes the pdl wait (after the prefetch).
template <class F, int NT, int W>
__device__ __forceinline__ void split_row(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t n_groups,
                                          bool wide, const float* __restrict__ x, uint64_t x_stride,
                                          float* __restrict__ y, uint64_t y_stride, uint32_t row) {
    __shared__ __align__(16) uint8_t smem[W][1][kChunkBytes<F>];
    __shared__ SharedTables<F> tables;
    __shared__ float part[W][NT];
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    prefetch_first_chunk<F>(w + uint64_t{row} * row_bytes, row_bytes, 1, n_groups, warp, lane);
    dev::pdl_wait_and_release();
    const Iq2Tables tab = tables.load();
    float acc[1][NT];
    zero(acc);
    dot_chunks<F, NT, 1>(w + row * row_bytes, row_bytes, 1, n_groups, warp, W, wide, x, x_stride, smem[warp], tab,
                         lane, acc);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        const float a = dev::warp_sum(acc[0][t]);
        if (lane == 0) part[warp][t] = a;
    }
    __syncthreads();
    if (threadIdx.x < NT) {
        float s = part[0][threadIdx.x];
#pragma unroll
        for (int k = 1; k < W; ++k) s += part[k][threadIdx.x];
        y[threadIdx.x * y_stride + row] = s;
    }
}

template <class F, int NT, int W>
__global__ void __launch_bounds__(W * 32)
    matmul_split_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t n_groups, bool wide,
                        const float* __restrict__ x, uint64_t x_stride, float* __restrict__ y, uint64_t y_stride,
                        GroupStrides gs) {
    split_row<F, NT, W>(w + blockIdx.y * gs.w, row_bytes, n_groups, wide, x + blockIdx.y * gs.x, x_stride,
                        y + blockIdx.y * gs.y, y_stride, blockIdx.x);
}

// Several products of one input, type and column count in one grid (matmul_multi):
// block b is row b - block0 of the last part whose block0 <= b (constant indices only,
// so the table stays in parameter space).
constexpr uint32_t kMaxParts = 8;
struct SplitPart {
    const uint8_t* w = nullptr;
    float* y = nullptr;
    uint64_t y_stride = 0;
    uint32_t block0 = 0;
    bool wide = false;
    uint32_t rows = 0;  // matmul_split_batch_kernel's clamp
};
struct SplitTable {
    SplitPart part[kMaxParts];
    uint32_t n = 0;
};

template <class F, int NT, int W>
__global__ void __launch_bounds__(W * 32)
    matmul_split_multi_kernel(SplitTable tab, uint64_t row_bytes, uint32_t n_groups, const float* __restrict__ x,
                              uint64_t x_stride) {
    SplitPart p = tab.part[0];
#pragma unroll
    for (uint32_t j = 1; j < kMaxParts; ++j)
        if (j < tab.n && blockIdx.x >= tab.part[j].block0) p = tab.part[j];
    split_row<F, NT, W>(p.w, row_bytes, n_groups, p.wide, x, x_stride, p.y, p.y_stride, blockIdx.x - p.block0);
}

// (issue 8) The split kernel's products for passes of 16+ tokens in one launch instead of
// one per 8 tokens: block (b, c) takes kBatchRows rows of one part (b - block0 in row
// blocks) and tokens 8c .. 8c + 7, so the 8 tokens' activations, loaded once per group, serve
// 4 rows (the split kernel's blocks each read them for one row: the L2 traffic of these
// few-row products) and all token chunks run side by side. Per (row, token) it is
// split_row's arithmetic: logical warp k (of W, the shape's) walks chunks k, k + W, ...
// with dot_chunks, is summed over its lanes by warp_sum and the W sums are added in k order;
// P <= 8 physical warps take the logical ones in turn (registers), which changes no sum.
constexpr uint32_t kBatchRows = 4;
template <class F, int W, int P>
__global__ void __launch_bounds__(P * 32)
    matmul_split_batch_kernel(SplitTable tab, uint64_t row_bytes, uint32_t n_groups, const float* __restrict__ x,
                              uint64_t x_stride) {
    dev::pdl_wait_and_release();
    constexpr int NT = 8, R = kBatchRows;
    __shared__ __align__(16) uint8_t smem[P][R][kChunkBytes<F>];
    __shared__ SharedTables<F> tables;
    __shared__ float part[W][R][NT];
    const Iq2Tables iq = tables.load();
    SplitPart p = tab.part[0];
#pragma unroll
    for (uint32_t j = 1; j < kMaxParts; ++j)
        if (j < tab.n && blockIdx.x >= tab.part[j].block0) p = tab.part[j];
    const uint32_t row0 = (blockIdx.x - p.block0) * R, n_rows = min(static_cast<uint32_t>(R), p.rows - row0);
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const float* xt = x + uint64_t{blockIdx.y} * NT * x_stride;
    for (uint32_t k = warp; k < W; k += P) {
        float acc[R][NT];
        zero(acc);
        dot_chunks<F, NT, R>(p.w + row0 * row_bytes, row_bytes, n_rows, n_groups, k, W, p.wide, xt, x_stride,
                             smem[warp], iq, lane, acc);
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                const float a = dev::warp_sum(acc[r][t]);
                if (lane == 0) part[k][r][t] = a;
            }
    }
    __syncthreads();
    if (threadIdx.x < R * NT) {
        const uint32_t r = threadIdx.x / NT, t = threadIdx.x % NT;
        if (r < n_rows) {
            float s = part[0][r][t];
#pragma unroll
            for (int k = 1; k < W; ++k) s += part[k][r][t];
            p.y[(uint64_t{blockIdx.y} * NT + t) * p.y_stride + row0 + r] = s;
        }
    }
}

// Routed experts without a host round trip: block (x, slot, m) computes rows of matrix m
// (w0 or w1, e.g. gate and up) of expert g.expert[slot] for the activation rows
// [g.begin[slot], + g.count[slot]) of x into the same rows of y0 / y1; slots from
// *g.n_active on do nothing. Tokens go through in chunks of 8, 4, then the rest, like
// matmul(), with dot_chunks's per-token arithmetic.
// kMaxNt 1 (every expert has one token: batch-1 decode) keeps only the NT = 1 body, whose
// few registers let more blocks run (the general version measured ~50 us per launch at
// batch 1 on an H200).
template <class F, int kMaxNt, int R>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    experts_kernel(const uint8_t* __restrict__ w0, const uint8_t* __restrict__ w1, uint64_t slab_bytes,
                   uint32_t n_slabs, uint64_t row_bytes, uint32_t rows, uint32_t n_groups, bool wide,
                   const float* __restrict__ x, uint64_t x_stride, float* y0, float* y1, uint64_t y_stride,
                   ExpertGroups g) {
    dev::pdl_wait_and_release();
    __shared__ __align__(16) uint8_t smem[kWarpsPerBlock][R][kChunkBytes<F>];
    __shared__ SharedTables<F> tables;
    const Iq2Tables tab = tables.load();
    const uint32_t slot = blockIdx.y;
    if (slot >= *g.n_active) return;
    const uint32_t e = g.expert[slot];
    if (e >= n_slabs) return;  // route() only names experts < n_slabs (tid2eid checked at upload)
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint32_t row0 = (blockIdx.x * kWarpsPerBlock + warp) * R;
    if (row0 >= rows) return;
    const uint32_t n_rows = min(static_cast<uint32_t>(R), rows - row0);
    const uint8_t* w = (blockIdx.z == 0 ? w0 : w1) + e * slab_bytes + row0 * row_bytes;
    float* y = (blockIdx.z == 0 ? y0 : y1) + row0;
    const uint32_t begin = g.begin[slot], count = g.count[slot];
    for (uint32_t t0 = 0; t0 < count;) {
        const uint32_t left = count - t0;
        const uint32_t nt = left >= 8 ? 8 : left >= 4 ? 4 : left;
        const float* xt = x + (begin + t0) * x_stride;
        float* yt = y + (begin + t0) * y_stride;
        const auto run = [&](auto nt_const) {
            constexpr int NT = decltype(nt_const)::value;
            float acc[R][NT];
            zero(acc);
            dot_chunks<F, NT, R>(w, row_bytes, n_rows, n_groups, 0, 1, wide, xt, x_stride, smem[warp], tab, lane,
                                 acc);
            store_rows(acc, n_rows, lane, yt, y_stride);
        };
        if constexpr (kMaxNt == 1) {
            run(std::integral_constant<int, 1>{});
            t0 += 1;
            continue;
        } else {
            switch (nt) {
                case 1: run(std::integral_constant<int, 1>{}); break;
                case 2: run(std::integral_constant<int, 2>{}); break;
                case 3: run(std::integral_constant<int, 3>{}); break;
                case 4: run(std::integral_constant<int, 4>{}); break;
                default: run(std::integral_constant<int, 8>{}); break;
            }
            t0 += nt;
        }
    }
}

void upload_iq2_tables() {
    static std::once_flag once;
    std::call_once(once, [] {
        DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_iq2_grid, quant::kIq2Grid, sizeof(g_iq2_grid)));
        DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_iq2_signs, quant::kIq2Signs, sizeof(g_iq2_signs)));
    });
}

// The split kernel's choice, by shape only (see launch_nt).
template <class F>
bool takes_split(uint64_t rows, uint64_t cols) {
    const uint64_t chunks = (cols / 256 + F::kChunkGroups - 1) / F::kChunkGroups;
    return rows < kSplitBelowRows || (rows < 4 * kSplitBelowRows && chunks >= 2);
}
// Its warps per row (launch_nt's rule).
template <class F>
int split_warps(uint64_t cols) {
    const uint64_t chunks = (cols / 256 + F::kChunkGroups - 1) / F::kChunkGroups;
    return chunks >= 32 ? 32 : chunks >= 8 ? 8 : 4;
}

// (issue 8) Whether matmul_split_batch_kernel takes the first n_tok / 8 · 8 tokens of a
// split product: the exact float formats (F16: compressors, indexer, HC mixes; F32), passes
// of 16+ tokens (batch 8 and decode keep their launches; the bits are the same anyway);
// DS4_CUDA_SPLIT_BATCH=0: one launch per 8 tokens.
template <class F>
uint32_t batch_tokens(uint32_t n_tok) {
    static const bool on = env_switch_on("DS4_CUDA_SPLIT_BATCH");
    constexpr bool exact = std::is_same_v<F, F16Format> || std::is_same_v<F, F32Format>;
    return exact && on && n_tok >= 16 ? n_tok / 8 * 8 : 0;
}
// tab's parts (block0 in rows of the split kernel, rows set) through
// matmul_split_batch_kernel for tokens [0, n_full).
template <class F>
void launch_split_batch(SplitTable tab, uint64_t row_bytes, uint32_t n_groups, uint64_t cols, const float* x,
                        uint64_t x_stride, uint32_t n_full, cudaStream_t s) {
    if constexpr (std::is_same_v<F, F16Format> || std::is_same_v<F, F32Format>) {
        uint32_t blocks = 0;
        for (uint32_t i = 0; i < tab.n; ++i) {
            tab.part[i].block0 = blocks;
            blocks += (tab.part[i].rows + kBatchRows - 1) / kBatchRows;
        }
        const dim3 grid(blocks, n_full / 8);
        const auto go = [&](auto kernel, int warps) {
            launch_pdl("launch of matmul_split_batch_kernel", kernel, grid, dim3(warps * 32), 0, s, tab, row_bytes,
                       n_groups, x, x_stride);
        };
        switch (split_warps<F>(cols)) {
            case 32: go(matmul_split_batch_kernel<F, 32, 8>, 8); break;
            case 8: go(matmul_split_batch_kernel<F, 8, 8>, 8); break;
            default: go(matmul_split_batch_kernel<F, 4, 4>, 4); break;
        }
    } else {
        (void)tab, (void)row_bytes, (void)n_groups, (void)cols, (void)x, (void)x_stride, (void)n_full, (void)s;
        fail("cuda matmul: no batched split kernel for this format");
    }
}

template <class F, int NT>
void launch_nt(const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
               uint64_t y_stride, cudaStream_t s, uint32_t n_mat = 1, GroupStrides gs = {}) {
    constexpr int R = NT <= 4 ? 4 : 2;  // rows per warp, bounded by registers
    const auto grid = static_cast<unsigned>((rows + kWarpsPerBlock * R - 1) / (kWarpsPerBlock * R));
    const uint64_t n_groups = cols / 256;
    const uint64_t row_bytes = n_groups * F::kGroupBytes;
    const bool wide = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 && gs.w % 16 == 0;
    // Chosen by shape only (a token's bits never depend on the batch): few rows, or up to
    // 8191 rows of >= 2 chunks, where the many-rows kernel has < 512 blocks walking their
    // chunks serially (H200, batch 1: out_b 4096 x 8192 Q8_0 48 us = 0.74 TB/s, the shared
    // expert's 2048 x 4096 gate/up 24 us each).
    const uint64_t chunks = (n_groups + F::kChunkGroups - 1) / F::kChunkGroups;
    if (takes_split<F>(rows, cols)) {
        const dim3 sgrid(static_cast<unsigned>(rows), n_mat);
        const auto* wb = static_cast<const uint8_t*>(w);
        const auto g32 = static_cast<uint32_t>(n_groups);
        const auto go = [&](auto wc) {
            constexpr int W = decltype(wc)::value;
            launch_pdl("launch of matmul_split_kernel", matmul_split_kernel<F, NT, W>, sgrid, dim3(W * 32), 0, s, wb,
                       row_bytes, g32, wide, x, x_stride, y, y_stride, gs);
        };
        if (chunks >= 32)
            go(std::integral_constant<int, 32>{});
        else if (chunks >= 8)
            go(std::integral_constant<int, 8>{});
        else
            go(std::integral_constant<int, 4>{});
        return;
    }
    launch_pdl("launch of matmul_kernel", matmul_kernel<F, NT, R>, dim3(grid), dim3(kWarpsPerBlock * 32), 0, s,
               static_cast<const uint8_t*>(w), row_bytes, static_cast<uint32_t>(rows), static_cast<uint32_t>(n_groups),
               wide, x, x_stride, y, y_stride);
}

template <class F>
void launch(const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
            uint64_t y_stride, uint32_t n_tok, cudaStream_t s, uint32_t n_mat = 1, GroupStrides gs = {}) {
    if (cols % 256 != 0) fail("cuda matmul: ", cols, " columns is not a multiple of 256");
    if (reinterpret_cast<uintptr_t>(w) % 4 != 0) fail("cuda matmul: weight pointer is not 4-byte aligned");
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || x_stride % 4 != 0)
        fail("cuda matmul: activations must be 16-byte aligned with a stride multiple of 4");
    static_assert(kMaxTok == 8, "for_token_chunks makes chunks of up to 8 tokens");
    if constexpr (std::is_same_v<F, F16Format>) {  // passes of 16+ tokens: the tensor cores, by shape only
        if (f16_mma_takes(n_tok, rows) && reinterpret_cast<uintptr_t>(w) % 16 == 0 && gs.w % 16 == 0 && gs.x % 4 == 0)
            return matmul_f16_mma(w, rows, cols, x, x_stride, y, y_stride, n_tok, s, n_mat, gs.w, gs.x, gs.y);
    }
    uint32_t done = 0;
    if (n_mat == 1 && takes_split<F>(rows, cols) && rows <= 0x7fffffffu && (done = batch_tokens<F>(n_tok)) > 0) {
        const uint64_t row_bytes = cols / 256 * F::kGroupBytes;
        SplitTable tab;
        tab.part[0] = SplitPart{static_cast<const uint8_t*>(w), y, y_stride, 0,
                                row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0,
                                static_cast<uint32_t>(rows)};
        tab.n = 1;
        launch_split_batch<F>(tab, row_bytes, static_cast<uint32_t>(cols / 256), cols, x, x_stride, done, s);
    }
    for_token_chunks(n_tok - done, [&](uint32_t t0, auto nt) {
        t0 += done;
        launch_nt<F, decltype(nt)::value>(w, rows, cols, x + t0 * x_stride, x_stride, y + t0 * y_stride, y_stride,
                                          s, n_mat, gs);
    });
}

template <class F, int kMaxNt, int R>
void launch_experts_r(const void* w0, const void* w1, uint64_t slab_rows, uint32_t n_slabs, uint64_t cols,
                      const float* x, uint64_t x_stride, float* y0, float* y1, uint64_t y_stride,
                      const ExpertGroups& g, uint32_t max_slots, cudaStream_t s) {
    const uint64_t n_groups = cols / 256, row_bytes = n_groups * F::kGroupBytes;
    const uint64_t slab_bytes = slab_rows * row_bytes;
    const bool wide = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(w0) % 16 == 0 &&
                      (w1 == nullptr || reinterpret_cast<uintptr_t>(w1) % 16 == 0);
    constexpr uint64_t kRowsPerBlock = kWarpsPerBlock * R;
    const dim3 grid(static_cast<unsigned>((slab_rows + kRowsPerBlock - 1) / kRowsPerBlock), max_slots,
                    w1 != nullptr ? 2 : 1);
    launch_pdl("launch of experts_kernel", experts_kernel<F, kMaxNt, R>, dim3(grid), dim3(kWarpsPerBlock * 32), 0, s,
               static_cast<const uint8_t*>(w0), static_cast<const uint8_t*>(w1), slab_bytes, n_slabs, row_bytes,
               static_cast<uint32_t>(slab_rows), static_cast<uint32_t>(n_groups), wide, x, x_stride, y0, y1, y_stride,
               g);
}

template <class F>
void launch_experts(const void* w0, const void* w1, uint64_t slab_rows, uint32_t n_slabs, uint64_t cols,
                    const float* x, uint64_t x_stride, float* y0, float* y1, uint64_t y_stride,
                    const ExpertGroups& g, uint32_t max_slots, uint32_t max_tokens, cudaStream_t s) {
    if (max_tokens <= 1)
        launch_experts_r<F, 1, 4>(w0, w1, slab_rows, n_slabs, cols, x, x_stride, y0, y1, y_stride, g, max_slots, s);
    else
        launch_experts_r<F, 8, 2>(w0, w1, slab_rows, n_slabs, cols, x, x_stride, y0, y1, y_stride, g, max_slots, s);
}

}  // namespace

bool matmul_experts_supported(GgmlType t, uint64_t cols, uint64_t slab_rows) {
    if (!matmul_supported(t) || cols % 256 != 0) return false;
    return slab_rows * ggml_row_bytes(t, cols) % 4 == 0;
}

void matmul_experts(GgmlType type, const void* w0, const void* w1, uint64_t slab_rows, uint32_t n_slabs,
                    uint64_t cols, const float* x, uint64_t x_stride, float* y0, float* y1, uint64_t y_stride,
                    const ExpertGroups& g, uint32_t max_slots, uint32_t max_tokens, cudaStream_t s) {
    if (!matmul_experts_supported(type, cols, slab_rows))
        fail("cuda matmul_experts: ", ggml_type_name(type), " experts of ", slab_rows, " x ", cols,
             " are not supported");
    if (reinterpret_cast<uintptr_t>(w0) % 4 != 0 || reinterpret_cast<uintptr_t>(w1) % 4 != 0)
        fail("cuda matmul_experts: weight pointer is not 4-byte aligned");
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || x_stride % 4 != 0)
        fail("cuda matmul_experts: activations must be 16-byte aligned with a stride multiple of 4");
    if (max_slots == 0 || slab_rows == 0) return;
    if (max_slots > 65535) fail("cuda matmul_experts: ", max_slots, " expert slots, at most 65535");
    const auto go = [&](auto format) {
        launch_experts<decltype(format)>(w0, w1, slab_rows, n_slabs, cols, x, x_stride, y0, y1, y_stride, g,
                                         max_slots, max_tokens, s);
    };
    switch (type) {
        case GgmlType::F32: return go(F32Format{});
        case GgmlType::F16: return go(F16Format{});
        case GgmlType::Q8_0: return go(Q8_0Format{});
        case GgmlType::Q2_K: return go(Q2KFormat{});
        case GgmlType::Q4_K: return go(Q4KFormat{});
        case GgmlType::IQ2_XXS: upload_iq2_tables(); return go(IQ2XXSFormat{});
        default: fail("cuda matmul_experts: weight type ", ggml_type_name(type), " is not supported");
    }
}

bool matmul_groups_fused(GgmlType t, uint64_t rows, uint64_t cols) {
    return matmul_supported(t) && cols % 256 == 0 && rows < kSplitBelowRows && ggml_row_bytes(t, cols) % 4 == 0;
}

void matmul_groups(GgmlType type, const void* w, uint64_t rows, uint64_t cols, uint32_t n_mat, const float* x,
                   uint64_t x_stride, uint64_t x_group, float* y, uint64_t y_stride, uint64_t y_group,
                   uint32_t n_tok, cudaStream_t s) {
    if (rows == 0 || n_tok == 0 || n_mat == 0) return;
    const uint64_t w_group = rows * ggml_row_bytes(type, cols);
    if (!matmul_groups_fused(type, rows, cols) || x_group % 4 != 0) {
        for (uint32_t g = 0; g < n_mat; ++g)
            matmul(type, static_cast<const uint8_t*>(w) + g * w_group, rows, cols, x + g * x_group, x_stride,
                   y + g * y_group, y_stride, n_tok, s);
        return;
    }
    if (reinterpret_cast<uintptr_t>(w) % 4 != 0) fail("cuda matmul: weight pointer is not 4-byte aligned");
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || x_stride % 4 != 0)
        fail("cuda matmul: activations must be 16-byte aligned with a stride multiple of 4");
    const GroupStrides gs{w_group, x_group, y_group};
    switch (type) {
        case GgmlType::F32: return launch<F32Format>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s, n_mat, gs);
        case GgmlType::F16: return launch<F16Format>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s, n_mat, gs);
        case GgmlType::Q8_0: return launch<Q8_0Format>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s, n_mat, gs);
        case GgmlType::Q2_K: return launch<Q2KFormat>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s, n_mat, gs);
        case GgmlType::Q4_K: return launch<Q4KFormat>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s, n_mat, gs);
        case GgmlType::IQ2_XXS:
            upload_iq2_tables();
            return launch<IQ2XXSFormat>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s, n_mat, gs);
        default: fail("cuda matmul: weight type ", ggml_type_name(type), " is not supported");
    }
}

bool matmul_supported(GgmlType t) {
    switch (t) {
        case GgmlType::F32:
        case GgmlType::F16:
        case GgmlType::Q8_0:
        case GgmlType::Q2_K:
        case GgmlType::Q4_K:
        case GgmlType::IQ2_XXS: return true;
        default: return false;
    }
}

void matmul(GgmlType type, const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride,
            float* y, uint64_t y_stride, uint32_t n_tok, cudaStream_t s) {
    if (rows == 0 || n_tok == 0) return;
    switch (type) {
        case GgmlType::F32: launch<F32Format>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s); break;
        case GgmlType::F16: launch<F16Format>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s); break;
        case GgmlType::Q8_0: launch<Q8_0Format>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s); break;
        case GgmlType::Q2_K: launch<Q2KFormat>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s); break;
        case GgmlType::Q4_K: launch<Q4KFormat>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s); break;
        case GgmlType::IQ2_XXS:
            upload_iq2_tables();
            launch<IQ2XXSFormat>(w, rows, cols, x, x_stride, y, y_stride, n_tok, s);
            break;
        default: fail("cuda matmul: weight type ", ggml_type_name(type), " is not supported");
    }
}

namespace {

// matmul_multi for format F: the parts that take the split kernel, up to kMaxParts per
// launch per token chunk; the others one matmul() each.
template <class F>
void launch_multi(GgmlType type, std::span<const MatProduct> parts, uint64_t cols, const float* x, uint64_t x_stride,
                  uint32_t n_tok, cudaStream_t s) {
    const uint64_t n_groups = cols / 256, row_bytes = n_groups * F::kGroupBytes;
    SplitTable tab;
    uint32_t blocks = 0;
    const auto flush = [&] {
        if (tab.n == 0) return;
        const uint32_t done = batch_tokens<F>(n_tok);
        if (done > 0)
            launch_split_batch<F>(tab, row_bytes, static_cast<uint32_t>(n_groups), cols, x, x_stride, done, s);
        for_token_chunks(n_tok - done, [&](uint32_t t0, auto nt) {
            t0 += done;
            constexpr int NT = decltype(nt)::value;
            SplitTable at = tab;
            for (uint32_t i = 0; i < at.n; ++i) at.part[i].y += t0 * at.part[i].y_stride;
            const auto g32 = static_cast<uint32_t>(n_groups);
            const float* xt = x + t0 * x_stride;
            switch (split_warps<F>(cols)) {
                case 32:
                    launch_pdl("launch of matmul_split_multi_kernel", matmul_split_multi_kernel<F, NT, 32>,
                               dim3(blocks), dim3(32 * 32), 0, s, at, row_bytes, g32, xt, x_stride);
                    break;
                case 8:
                    launch_pdl("launch of matmul_split_multi_kernel", matmul_split_multi_kernel<F, NT, 8>, dim3(blocks),
                               dim3(8 * 32), 0, s, at, row_bytes, g32, xt, x_stride);
                    break;
                default:
                    launch_pdl("launch of matmul_split_multi_kernel", matmul_split_multi_kernel<F, NT, 4>, dim3(blocks),
                               dim3(4 * 32), 0, s, at, row_bytes, g32, xt, x_stride);
                    break;
            }
        });
        tab.n = 0;
        blocks = 0;
    };
    for (const MatProduct& p : parts) {
        if (p.rows == 0) continue;
        // a part the tensor cores take is one launch of its own (matmul_f16_mma.h)
        bool own = !takes_split<F>(p.rows, cols) || p.rows > 0x7fffffffu - blocks;
        if constexpr (std::is_same_v<F, F16Format>) own = own || f16_mma_takes(n_tok, p.rows);
        if (own) {
            matmul(type, p.w, p.rows, cols, x, x_stride, p.y, p.y_stride, n_tok, s);
            continue;
        }
        if (reinterpret_cast<uintptr_t>(p.w) % 4 != 0) fail("cuda matmul: weight pointer is not 4-byte aligned");
        const bool wide = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(p.w) % 16 == 0;
        tab.part[tab.n++] =
            SplitPart{static_cast<const uint8_t*>(p.w), p.y, p.y_stride, blocks, wide, static_cast<uint32_t>(p.rows)};
        blocks += static_cast<uint32_t>(p.rows);
        if (tab.n == kMaxParts) flush();
    }
    flush();
}

}  // namespace

void matmul_multi(GgmlType type, std::span<const MatProduct> parts, uint64_t cols, const float* x, uint64_t x_stride,
                  uint32_t n_tok, cudaStream_t s) {
    if (n_tok == 0 || parts.empty()) return;
    if (cols % 256 != 0) fail("cuda matmul: ", cols, " columns is not a multiple of 256");
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || x_stride % 4 != 0)
        fail("cuda matmul: activations must be 16-byte aligned with a stride multiple of 4");
    switch (type) {
        case GgmlType::F32: return launch_multi<F32Format>(type, parts, cols, x, x_stride, n_tok, s);
        case GgmlType::F16: return launch_multi<F16Format>(type, parts, cols, x, x_stride, n_tok, s);
        case GgmlType::Q8_0: return launch_multi<Q8_0Format>(type, parts, cols, x, x_stride, n_tok, s);
        case GgmlType::Q2_K: return launch_multi<Q2KFormat>(type, parts, cols, x, x_stride, n_tok, s);
        case GgmlType::Q4_K: return launch_multi<Q4KFormat>(type, parts, cols, x, x_stride, n_tok, s);
        case GgmlType::IQ2_XXS:
            upload_iq2_tables();
            return launch_multi<IQ2XXSFormat>(type, parts, cols, x, x_stride, n_tok, s);
        default: fail("cuda matmul: weight type ", ggml_type_name(type), " is not supported");
    }
}

}  // namespace ds4::cuda
