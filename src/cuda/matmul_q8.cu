// Fast matvec path (matmul_q8.h): int8 activations and dp4a. Layout of the work, per
// warp: R weight rows are staged chunk by chunk in shared memory with coalesced 16-byte
// asynchronous copies, double-buffered across a persistent grid (the next chunk is in
// flight while this one is computed); then lane l owns one 32-value block of a 256-value group
// (group l/8 of four per pass, block l%8), so every lane decodes a whole activation block
// with one scale: 8 weight words of 4 codes each, dotted with __dp4a and scaled once.
// The activation block (32 int8 + 8 bytes of scale and sums) is read once per pass and
// token and serves all R rows; the decoded weight words serve all tokens of the batch.
// Why: the exact kernels spend ~8 instructions per weight value on dequantization and
// f32 FMAs and run at 21-44 % of the copy bandwidth for the 2-4 bit types; here a value
// costs ~1-2 integer instructions (H100 figures: bench/RESULTS.md, CUDA section).
#include "cuda/matmul_q8.h"

#include <cuda_fp16.h>
#include <cuda_pipeline.h>

#include <algorithm>
#include <mutex>
#include <type_traits>

#include "cuda/check.h"
#include "cuda/device_math.cuh"
#include "cuda/kernels.h"
#include "quant/iq2_tables.h"

namespace ds4::cuda {
namespace {

constexpr int kWarps = 4;  // warps per block
constexpr int kMaxTok = 8;
constexpr uint32_t kBlockMetaBytes = 8;  // per 32 activations: f32 d + 2 × int16 sums

__device__ uint32_t g_q8_iq2_grid_sel[256];  // see IQ2XXSFast
__device__ uint32_t g_q8_iq2_sign_sel[128];

__device__ __forceinline__ float f16(uint32_t bits) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
}
__device__ __forceinline__ uint32_t sm_u16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ uint32_t sm_u32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// ---- activation quantization ----

// One warp per 256 values of one token; lane l quantizes values 8l .. 8l+7, so the four
// lanes 4k .. 4k+3 form block k and reduce its amax / sums with two shuffles.
__global__ void quantize_q8_kernel(const float* __restrict__ x, uint64_t x_stride, uint32_t cols, uint32_t n_tok,
                                   uint8_t* __restrict__ xq, uint64_t tok_bytes) {
    const uint32_t lane = threadIdx.x % 32;
    const uint64_t warp_id = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
    const uint32_t groups = cols / 256;
    if (warp_id >= uint64_t{groups} * n_tok) return;  // whole warps only
    const auto t = static_cast<uint32_t>(warp_id / groups), g = static_cast<uint32_t>(warp_id % groups);
    const float* src = x + t * x_stride + uint64_t{g} * 256 + 8 * lane;
    const float4 a = *reinterpret_cast<const float4*>(src), b = *reinterpret_cast<const float4*>(src + 4);
    const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    float amax = 0.f;
#pragma unroll
    for (float f : v) amax = fmaxf(amax, fabsf(f));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
    const float d = amax / 127.f;
    const float id = d > 0.f ? 1.f / d : 0.f;
    uint32_t packed[2] = {0, 0};
    int sum = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int q = max(-127, min(127, __float2int_rn(v[i] * id)));
        sum += q;
        packed[i / 4] |= (static_cast<uint32_t>(q) & 0xff) << (8 * (i % 4));
    }
    uint8_t* tok = xq + t * tok_bytes;
    *reinterpret_cast<uint2*>(tok + uint64_t{g} * 256 + 8 * lane) = make_uint2(packed[0], packed[1]);
    const int sum16 = sum + __shfl_xor_sync(0xffffffffu, sum, 1);      // lanes 4k, 4k+1: first half
    const int sum_hi = __shfl_down_sync(0xffffffffu, sum16, 2);        // lane 4k: second half
    if (lane % 4 == 0) {
        const auto packed_sums = (static_cast<uint32_t>(sum16) & 0xffff) | (static_cast<uint32_t>(sum_hi) << 16);
        const auto meta = make_int2(__float_as_int(d), static_cast<int>(packed_sums));
        *reinterpret_cast<int2*>(tok + cols + (uint64_t{g} * 8 + lane / 4) * kBlockMetaBytes) = meta;
    }
}

// ---- weight formats: one lane decodes one 32-value block of a staged 256-value group ----

struct XBlock {  // one token's activation block, as loaded by its lane
    int q[8];
    float d;
    int sums;  // int16 Σq[0..15] | int16 Σq[16..31] << 16
    __device__ int sum_lo() const { return static_cast<int16_t>(sums & 0xffff); }
    __device__ int sum_hi() const { return sums >> 16; }
};

struct WBlock {  // a lane's decoded weight block: 8 words of 4 signed/unsigned codes
    int v[8];
    float a, b;  // per-format scales
    int s0, s1;  // per-format sub-block scale bytes
};

struct Iq2Tables {
    const uint32_t* grid_sel;  // per grid entry: nibble i = level (0..2) of value i
    const uint32_t* sign_sel;  // per 7-bit sign index: nibble i = 4 when value i is negated
};

__device__ __forceinline__ int dot4(const int* v, const int* x) {
    return __dp4a(v[0], x[0], __dp4a(v[1], x[1], __dp4a(v[2], x[2], __dp4a(v[3], x[3], 0))));
}

// Q8_0: 8 blocks of 34 bytes per group; block b's codes start 2 bytes in, so half the
// blocks are only 2-byte aligned: those words are funnel-shifted from aligned pairs.
struct Q8_0Fast {
    static constexpr int kGroupBytes = 272, kUnit = 1, kChunkGroups = 4;
    __device__ static void decode(const uint8_t* g, int blk, WBlock& w, const Iq2Tables&) {
        const uint8_t* base = g + 34 * blk;
        w.a = f16(sm_u16(base));
        const uint8_t* p = base + 2;
        if ((reinterpret_cast<uintptr_t>(p) & 3) == 0) {
#pragma unroll
            for (int k = 0; k < 8; ++k) w.v[k] = static_cast<int>(sm_u32(p + 4 * k));
        } else {
            const uint8_t* al = p - 2;
            uint32_t words[9];
#pragma unroll
            for (int k = 0; k < 9; ++k) words[k] = sm_u32(al + 4 * k);
#pragma unroll
            for (int k = 0; k < 8; ++k) w.v[k] = static_cast<int>(__funnelshift_r(words[k], words[k + 1], 16));
        }
    }
    __device__ static float dot(const WBlock& w, const XBlock& x) {
        return x.d * w.a * static_cast<float>(dot4(w.v, x.q) + dot4(w.v + 4, x.q + 4));
    }
};

// Q2_K block b of a super-block: codes at qs byte 32·(b/4) + i, bit shift 2·(b%4); its two
// 16-value sub-blocks use scale bytes 2b, 2b+1 (low nibble scale, high nibble min).
struct Q2KFast {
    static constexpr int kGroupBytes = 84, kUnit = 4, kChunkGroups = 8;
    __device__ static void decode(const uint8_t* g, int blk, WBlock& w, const Iq2Tables&) {
        const uint8_t* qs = g + 16 + 32 * (blk / 4);
        const int shift = 2 * (blk % 4);
#pragma unroll
        for (int k = 0; k < 8; ++k) w.v[k] = static_cast<int>((sm_u32(qs + 4 * k) >> shift) & 0x03030303u);
        const uint32_t sc = sm_u16(g + 2 * blk);
        w.s0 = static_cast<int>(sc & 0xff);
        w.s1 = static_cast<int>(sc >> 8);
        const uint32_t dd = sm_u32(g + 80);
        w.a = f16(dd & 0xffff);
        w.b = f16(dd >> 16);
    }
    __device__ static float dot(const WBlock& w, const XBlock& x) {
        const int sumq = (w.s0 & 15) * dot4(w.v, x.q) + (w.s1 & 15) * dot4(w.v + 4, x.q + 4);
        const int summ = (w.s0 >> 4) * x.sum_lo() + (w.s1 >> 4) * x.sum_hi();
        return x.d * (w.a * static_cast<float>(sumq) - w.b * static_cast<float>(summ));
    }
};

// Q4_K block b = sub-block b: codes at qs byte 32·(b/2) + i, high nibble for odd b; 6-bit
// scale and min packed in the 12 scale bytes.
struct Q4KFast {
    static constexpr int kGroupBytes = 144, kUnit = 1, kChunkGroups = 8;
    __device__ static void decode(const uint8_t* g, int blk, WBlock& w, const Iq2Tables&) {
        // 144-byte groups keep qs 16-byte aligned: two 16-byte shared loads
        const auto* qs = reinterpret_cast<const uint4*>(g + 16 + 32 * (blk / 2));
        const uint4 lo = qs[0], hi = qs[1];
        const uint32_t words[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
        const int shift = 4 * (blk % 2);
#pragma unroll
        for (int k = 0; k < 8; ++k) w.v[k] = static_cast<int>((words[k] >> shift) & 0x0F0F0F0Fu);
        const uint8_t* sc = g + 4;
        int scale = 0, min = 0;
        if (blk < 4) {
            scale = sc[blk] & 63;
            min = sc[blk + 4] & 63;
        } else {
            scale = (sc[blk + 4] & 0x0F) | ((sc[blk - 4] >> 6) << 4);
            min = (sc[blk + 4] >> 4) | ((sc[blk] >> 6) << 4);
        }
        const uint32_t dd = sm_u32(g);
        w.a = f16(dd & 0xffff) * static_cast<float>(scale);
        w.b = f16(dd >> 16) * static_cast<float>(min);
    }
    __device__ static float dot(const WBlock& w, const XBlock& x) {
        const int sumq = dot4(w.v, x.q) + dot4(w.v + 4, x.q + 4);
        return x.d * (w.a * static_cast<float>(sumq) - w.b * static_cast<float>(x.sum_lo() + x.sum_hi()));
    }
};

// IQ2_XXS block b: 8 bytes at 2 + 8b (4 grid indices, then 4 × 7 sign bits and a 4-bit
// scale). A grid entry holds 8 magnitudes from {8, 25, 43}, i.e. 8 two-bit levels; the
// tables hold them as byte-permute selectors (one nibble per value: level + 4·sign), so
// one __byte_perm over the constant pair ({8, 25, 43}, {−8, −25, −43}) yields four signed
// codes. Both tables are 32-bit (1 KB and 512 B): a random lookup costs half the shared
// memory wavefronts of a 64-bit grid entry, and the signs need no extra arithmetic.
struct IQ2XXSFast {
    static constexpr int kGroupBytes = 66, kUnit = 8, kChunkGroups = 8;
    static constexpr uint32_t kPos = 0x002B1908u, kNeg = 0x00D5E7F8u;  // bytes 8, 25, 43 and their negations
    __device__ static void decode(const uint8_t* g, int blk, WBlock& w, const Iq2Tables& tab) {
        const uint8_t* q = g + 2 + 8 * blk;
        const uint32_t idx = sm_u16(q) | (sm_u16(q + 2) << 16);
        const uint32_t aux = sm_u16(q + 4) | (sm_u16(q + 6) << 16);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const uint32_t sel = tab.grid_sel[(idx >> (8 * k)) & 0xff] | tab.sign_sel[(aux >> (7 * k)) & 127];
            w.v[2 * k] = static_cast<int>(__byte_perm(kPos, kNeg, sel & 0xffff));
            w.v[2 * k + 1] = static_cast<int>(__byte_perm(kPos, kNeg, sel >> 16));
        }
        w.a = f16(sm_u16(g)) * (0.5f + static_cast<float>(aux >> 28)) * 0.25f;
    }
    __device__ static float dot(const WBlock& w, const XBlock& x) {
        return x.d * w.a * static_cast<float>(dot4(w.v, x.q) + dot4(w.v + 4, x.q + 4));
    }
};

template <class F>
constexpr int kChunkBytes = F::kGroupBytes * F::kChunkGroups;

// Starts copying `bytes` (even) from global to this warp's shared buffer: 16-byte
// asynchronous copies (cp.async) when both ends allow, so the copy runs while the warp
// computes on its other buffer; otherwise plain 2-byte loads and stores, complete on
// return. Either way the caller commits, waits and __syncwarp()s before reading.
__device__ __forceinline__ void stage_async(uint8_t* dst, const uint8_t* src, uint32_t bytes, bool wide,
                                            uint32_t lane) {
    if (wide) {
        for (uint32_t o = 16 * lane; o < bytes; o += 512) __pipeline_memcpy_async(dst + o, src + o, 16);
    } else {
#pragma unroll 4
        for (uint32_t o = 2 * lane; o < bytes; o += 64)
            *reinterpret_cast<uint16_t*>(dst + o) = __ldg(reinterpret_cast<const unsigned short*>(src + o));
    }
}

__device__ __forceinline__ XBlock load_xblock(const uint8_t* tok, uint32_t cols, uint64_t block) {
    XBlock x;
    const int4 a = *reinterpret_cast<const int4*>(tok + block * 32);
    const int4 b = *reinterpret_cast<const int4*>(tok + block * 32 + 16);
    x.q[0] = a.x, x.q[1] = a.y, x.q[2] = a.z, x.q[3] = a.w;
    x.q[4] = b.x, x.q[5] = b.y, x.q[6] = b.z, x.q[7] = b.w;
    const int2 m = *reinterpret_cast<const int2*>(tok + cols + block * kBlockMetaBytes);
    x.d = __int_as_float(m.x);
    x.sums = m.y;
    return x;
}

struct Shape {  // one launch's geometry
    const uint8_t* w;
    uint64_t row_bytes;
    uint32_t rows, n_groups, n_chunks, n_rowgroups;  // a row group is the R rows of one warp item
    bool wide;
    const uint8_t* xq;
    uint64_t tok_bytes;
    uint32_t cols;
    float* y;
    uint64_t y_stride;
};

// Persistent warps: warp k of the grid takes row groups k, k + n_warps, ..., each in
// chunks of kChunkGroups groups, and keeps the next chunk's copy in flight (second
// shared buffer) while it computes the current one. (The first version staged and then
// computed, so a warp had loads in flight only half the time: 47 % of the copy
// bandwidth for IQ2_XXS, 68 % for Q2_K, whose chunks are the smallest.)
template <class F, int NT, int R>
__global__ void __launch_bounds__(kWarps * 32) q8_matmul_kernel(const Shape sh) {
    static_assert(F::kChunkGroups % 4 == 0 && F::kChunkGroups % F::kUnit == 0 && F::kUnit * F::kGroupBytes % 16 == 0);
    // +16: Q8_0's unaligned blocks read one word past their end
    __shared__ __align__(16) uint8_t smem[kWarps][2][R][kChunkBytes<F> + 16];
    constexpr bool kIq2 = std::is_same_v<F, IQ2XXSFast>;
    __shared__ uint32_t s_grid[kIq2 ? 256 : 1];
    __shared__ uint32_t s_sign[kIq2 ? 128 : 1];
    if constexpr (kIq2) {  // before any warp returns: every thread reaches the barrier
        for (uint32_t i = threadIdx.x; i < 256; i += blockDim.x) s_grid[i] = g_q8_iq2_grid_sel[i];
        for (uint32_t i = threadIdx.x; i < 128; i += blockDim.x) s_sign[i] = g_q8_iq2_sign_sel[i];
        __syncthreads();
    }
    const Iq2Tables tab{s_grid, s_sign};
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint32_t n_warps = gridDim.x * kWarps;
    uint32_t rg = blockIdx.x * kWarps + warp;
    if (rg >= sh.n_rowgroups) return;
    const int blk = static_cast<int>(lane % 8);

    const auto issue = [&](uint32_t group_row, uint32_t chunk, int buf) {
        const uint32_t row0 = group_row * R, g0 = chunk * F::kChunkGroups;
        const uint32_t bytes = min(static_cast<uint32_t>(F::kChunkGroups), sh.n_groups - g0) * F::kGroupBytes;
#pragma unroll
        for (int r = 0; r < R; ++r)
            if (row0 + r < sh.rows)
                stage_async(smem[warp][buf][r], sh.w + (row0 + r) * sh.row_bytes + uint64_t{g0} * F::kGroupBytes,
                            bytes, sh.wide, lane);
        __pipeline_commit();
    };

    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;
    uint32_t chunk = 0;
    int buf = 0;
    issue(rg, 0, 0);
    for (;;) {
        uint32_t next_rg = rg, next_chunk = chunk + 1;
        if (next_chunk == sh.n_chunks) next_chunk = 0, next_rg += n_warps;
        const bool has_next = next_rg < sh.n_rowgroups;
        if (has_next) {
            issue(next_rg, next_chunk, buf ^ 1);  // that buffer was released by the last __syncwarp
            __pipeline_wait_prior(1);
        } else {
            __pipeline_wait_prior(0);
        }
        __syncwarp();
        const uint32_t row0 = rg * R, g0 = chunk * F::kChunkGroups;
        const uint32_t n_rows = min(static_cast<uint32_t>(R), sh.rows - row0);
        const uint32_t ng = min(static_cast<uint32_t>(F::kChunkGroups), sh.n_groups - g0);
#pragma unroll
        for (uint32_t p = 0; p < F::kChunkGroups; p += 4) {
            const uint32_t gi = p + lane / 8;
            if (gi >= ng) continue;
            // each row's block decoded once, then dotted with every token's block
            WBlock wb[R];
#pragma unroll
            for (int r = 0; r < R; ++r)
                if (static_cast<uint32_t>(r) < n_rows) F::decode(smem[warp][buf][r] + gi * F::kGroupBytes, blk, wb[r], tab);
            const uint64_t block = uint64_t{g0 + gi} * 8 + blk;
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                const XBlock xb = load_xblock(sh.xq + t * sh.tok_bytes, sh.cols, block);
#pragma unroll
                for (int r = 0; r < R; ++r)
                    if (static_cast<uint32_t>(r) < n_rows) acc[r][t] += F::dot(wb[r], xb);
            }
        }
        __syncwarp();  // every lane is done with this buffer before it is refilled
        if (chunk + 1 == sh.n_chunks) {  // row group complete: reduce across the warp
#pragma unroll
            for (int r = 0; r < R; ++r) {
#pragma unroll
                for (int t = 0; t < NT; ++t) {
                    const float a = dev::warp_sum(acc[r][t]);
                    if (lane == 0 && static_cast<uint32_t>(r) < n_rows) sh.y[t * sh.y_stride + row0 + r] = a;
                    acc[r][t] = 0.f;
                }
            }
        }
        if (!has_next) break;
        rg = next_rg, chunk = next_chunk, buf ^= 1;
    }
}

// Selector tables for IQ2XXSFast, derived from the format's own tables.
void upload_iq2_tables() {
    static std::once_flag once;
    std::call_once(once, [] {
        uint32_t grid_sel[256], sign_sel[128];
        for (int e = 0; e < 256; ++e) {
            grid_sel[e] = 0;
            for (int i = 0; i < 8; ++i) {
                const auto mag = static_cast<uint32_t>((quant::kIq2Grid[e] >> (8 * i)) & 0xff);
                const uint32_t level = mag == 8 ? 0 : mag == 25 ? 1 : 2;
                if (mag != 8 && mag != 25 && mag != 43) fail("cuda matmul_q8: unexpected IQ2_XXS grid magnitude ", mag);
                grid_sel[e] |= level << (4 * i);
            }
        }
        for (int s = 0; s < 128; ++s) {
            sign_sel[s] = 0;
            for (int i = 0; i < 8; ++i)
                if ((quant::kIq2Signs[s] >> i) & 1) sign_sel[s] |= 4u << (4 * i);
        }
        DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_q8_iq2_grid_sel, grid_sel, sizeof(grid_sel)));
        DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_q8_iq2_sign_sel, sign_sel, sizeof(sign_sel)));
    });
}

// Blocks that fit on the device at once: the persistent grid never exceeds it.
template <class F, int NT, int R>
unsigned resident_blocks() {
    static const unsigned n = [] {
        int dev = 0, sms = 0, per_sm = 0;
        DS4_CUDA_CHECK(cudaGetDevice(&dev));
        DS4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        DS4_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, q8_matmul_kernel<F, NT, R>, kWarps * 32, 0));
        return static_cast<unsigned>(std::max(1, sms * per_sm));
    }();
    return n;
}

template <class F, int NT>
void launch_nt(const uint8_t* w, uint64_t rows, uint64_t cols, const uint8_t* xq, float* y, uint64_t y_stride,
               cudaStream_t s) {
    constexpr int R = 4;  // rows per warp item: one activation load serves 4 rows
    const uint64_t n_groups = cols / 256;
    Shape sh{};
    sh.w = w;
    sh.row_bytes = n_groups * F::kGroupBytes;
    sh.rows = static_cast<uint32_t>(rows);
    sh.n_groups = static_cast<uint32_t>(n_groups);
    sh.n_chunks = static_cast<uint32_t>((n_groups + F::kChunkGroups - 1) / F::kChunkGroups);
    sh.n_rowgroups = static_cast<uint32_t>((rows + R - 1) / R);
    sh.wide = sh.row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
    sh.xq = xq;
    sh.tok_bytes = q8_token_bytes(cols);
    sh.cols = static_cast<uint32_t>(cols);
    sh.y = y;
    sh.y_stride = y_stride;
    const uint64_t wanted = (sh.n_rowgroups + kWarps - 1) / kWarps;
    const auto grid = static_cast<unsigned>(std::min<uint64_t>(wanted, resident_blocks<F, NT, R>()));
    q8_matmul_kernel<F, NT, R><<<grid, kWarps * 32, 0, s>>>(sh);
    DS4_CUDA_CHECK_LAUNCH("q8_matmul_kernel");
}

template <class F>
void launch(const void* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok, float* y, uint64_t y_stride,
            cudaStream_t s) {
    const uint64_t tok_bytes = q8_token_bytes(cols);
    const auto* wb = static_cast<const uint8_t*>(w);
    for (uint32_t t0 = 0; t0 < n_tok;) {  // 8, then 4, then the 1-3 left
        const uint32_t left = n_tok - t0;
        const uint32_t nt = left >= 8 ? 8 : left >= 4 ? 4 : left;
        const uint8_t* xt = static_cast<const uint8_t*>(xq) + t0 * tok_bytes;
        float* yt = y + t0 * y_stride;
        switch (nt) {
            case 1: launch_nt<F, 1>(wb, rows, cols, xt, yt, y_stride, s); break;
            case 2: launch_nt<F, 2>(wb, rows, cols, xt, yt, y_stride, s); break;
            case 3: launch_nt<F, 3>(wb, rows, cols, xt, yt, y_stride, s); break;
            case 4: launch_nt<F, 4>(wb, rows, cols, xt, yt, y_stride, s); break;
            default: launch_nt<F, kMaxTok>(wb, rows, cols, xt, yt, y_stride, s); break;
        }
        t0 += nt;
    }
}

void check_cols(uint64_t cols) {
    if (cols == 0 || cols % 256 != 0) fail("cuda matmul_q8: ", cols, " columns is not a positive multiple of 256");
    if (cols > (uint64_t{1} << 30)) fail("cuda matmul_q8: ", cols, " columns is too many");
}

void check_rows(uint64_t rows) {
    if (rows >= (uint64_t{1} << 32) - 8) fail("cuda matmul_q8: ", rows, " rows is too many");
}

}  // namespace

uint64_t q8_token_bytes(uint64_t cols) { return cols + cols / 32 * kBlockMetaBytes; }

void quantize_q8_activations(const float* x, uint64_t x_stride, uint64_t cols, uint32_t n_tok, void* xq,
                             cudaStream_t s) {
    check_cols(cols);
    if (n_tok == 0) return;
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || x_stride % 4 != 0)
        fail("cuda quantize_q8_activations: activations must be 16-byte aligned with a stride multiple of 4");
    if (reinterpret_cast<uintptr_t>(xq) % 16 != 0) fail("cuda quantize_q8_activations: xq is not 16-byte aligned");
    const uint64_t warps = cols / 256 * n_tok;
    const auto grid = static_cast<unsigned>((warps + kWarps - 1) / kWarps);
    quantize_q8_kernel<<<grid, kWarps * 32, 0, s>>>(x, x_stride, static_cast<uint32_t>(cols), n_tok,
                                                     static_cast<uint8_t*>(xq), q8_token_bytes(cols));
    DS4_CUDA_CHECK_LAUNCH("quantize_q8_kernel");
}

bool matmul_q8_supported(GgmlType t) {
    switch (t) {
        case GgmlType::Q8_0:
        case GgmlType::Q2_K:
        case GgmlType::Q4_K:
        case GgmlType::IQ2_XXS: return true;
        default: return false;
    }
}

void matmul_q8(GgmlType type, const void* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok, float* y,
               uint64_t y_stride, cudaStream_t s) {
    if (!matmul_q8_supported(type)) fail("cuda matmul_q8: weight type ", ggml_type_name(type), " is not supported");
    check_cols(cols);
    if (reinterpret_cast<uintptr_t>(w) % 4 != 0) fail("cuda matmul_q8: weight pointer is not 4-byte aligned");
    if (reinterpret_cast<uintptr_t>(xq) % 16 != 0) fail("cuda matmul_q8: xq is not 16-byte aligned");
    if (rows == 0 || n_tok == 0) return;
    check_rows(rows);
    switch (type) {
        case GgmlType::Q8_0: launch<Q8_0Fast>(w, rows, cols, xq, n_tok, y, y_stride, s); break;
        case GgmlType::Q2_K: launch<Q2KFast>(w, rows, cols, xq, n_tok, y, y_stride, s); break;
        case GgmlType::Q4_K: launch<Q4KFast>(w, rows, cols, xq, n_tok, y, y_stride, s); break;
        default:
            upload_iq2_tables();
            launch<IQ2XXSFast>(w, rows, cols, xq, n_tok, y, y_stride, s);
            break;
    }
}

void matmul(GgmlType type, const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
            uint64_t y_stride, uint32_t n_tok, cudaStream_t s, MatmulPath path, void* xq_scratch) {
    if (path == MatmulPath::Exact || !matmul_q8_supported(type)) {
        matmul(type, w, rows, cols, x, x_stride, y, y_stride, n_tok, s);
        return;
    }
    if (xq_scratch == nullptr) fail("cuda matmul: the fast path needs an activation scratch buffer");
    quantize_q8_activations(x, x_stride, cols, n_tok, xq_scratch, s);
    matmul_q8(type, w, rows, cols, xq_scratch, n_tok, y, y_stride, s);
}

}  // namespace ds4::cuda
