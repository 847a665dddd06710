// F16-weight x f32-activation products on the tensor cores; contract and numerics in
// matmul_f16_mma.h.
//
// A block of 4 warps multiplies a tile of BM weight rows by BN tokens. The columns go by
// stages of SK (32 per K-warp) copied with cp.async into an NS-deep ring of shared-memory
// buffers, so the next stages load while this one multiplies. Each warp owns 32 rows x
// 8·NF tokens (two m16 fragments by NF n8 fragments). Shapes of block, by rows (passes
// under kF16MmaMinTokens, the decode batches, all take Few's):
//  - Wide (rows > 256): 2 x 2 warps, 64 rows x 64 tokens, one 32-column slice per stage;
//  - Few (rows <= 32: the hyper-connection mixes, 24 rows of 16384 columns) and Mid (rows
//    <= 256: router, indexer weights): the 4 warps split each 128-column stage (K-split,
//    warp k the slice k), 32 rows x 8 (Few) or 16 (Mid) tokens per block so a 2048-token
//    pass still has 256+ blocks; the warps' sums add in warp order.
// Inside a 32-column slice, k-step s of lane (g, t) uses the columns 8t + 2s and
// 8t + 2s + 1 (the same permutation for weights and activations, so the slice's dot is
// unchanged): one 16-byte shared load gives a lane its weights and two its activations
// for the whole slice. Row strides are padded so those loads hit distinct banks.
#include "cuda/matmul_f16_mma.h"

#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/check.h"
#include "cuda/env_switch.h"
#include "cuda/mma_s8.cuh"
#include "cuda/pdl.cuh"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

using mma::cp_async16, mma::cp_async_commit, mma::cp_async_wait;

// x rounded to TF32 (nearest, ties away), as the bits of an f32.
__device__ __forceinline__ uint32_t to_tf32(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#else
    return __float_as_uint(x);
#endif
}

// c += A · B, A 16x8 TF32 (a0/a2 row g, a1/a3 row g + 8; a0/a1 k-slot t, a2/a3 t + 4),
// B 8x8 (b0 k-slot t, b1 t + 4; column g), c 16x8 f32 (c0/c1 row g, c2/c3 row g + 8;
// columns 2t, 2t + 1): PTX ISA, mma.m16n8k8 .tf32.
__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    (void)a, (void)b0, (void)b1, (void)c;
#endif
}

template <int WM_, int WN_, int KS_, int NF_, int NS_>
struct Cfg {
    static constexpr int WM = WM_, WN = WN_, KS = KS_, NF = NF_, NS = NS_;
    static constexpr int kThreads = 32 * WM * WN * KS;
    static constexpr int BM = 32 * WM, BN = 8 * NF * WN, SK = 32 * KS;
    // row strides in shared memory (bytes): a quarter warp's 16-byte loads cover two rows
    static constexpr int SA = SK * 2 == 64 ? 64 : SK * 2 + 64;
    static constexpr int SB = SK * 4 + 16;
    static constexpr int kStageBytes = BM * SA + BN * SB;
    static constexpr int kSmem = NS * kStageBytes;
    static_assert(kSmem <= 48 * 1024, "static shared memory");
    static_assert(KS == 1 || kThreads * 8 * NF * 4 <= kSmem, "the K-split sums fit the stage buffers");
};
using Wide = Cfg<2, 2, 1, 4, 3>;
// K-split blocks, by rows (H200, ncu, 2048-token prefill, 4 layers: the F16 products 3.52 ->
// 3.00 ms): up to 32 rows (the mixes) 8 tokens and 3 stages per block (twice the blocks of
// 16 tokens), up to 256 rows (router, indexer weights) 16 tokens, whose 1024 / 256 blocks
// took 102 / 36 µs against Wide's 128 / 32 blocks at 140 µs.
using Few = Cfg<1, 1, 4, 1, 3>;
using Mid = Cfg<1, 1, 4, 2, 2>;
constexpr uint64_t kFewRows = 32, kMidRows = 256;

struct Args {
    const uint8_t* w;
    uint64_t row_bytes;
    uint32_t rows, cols;
    const float* x;
    uint64_t x_stride;
    uint32_t n_tok;
    float* y;
    uint64_t y_stride;
    uint64_t w_group, x_group, y_group;
};

template <class C>
__device__ __forceinline__ void load_stage(uint8_t* st, const uint8_t* w, uint64_t row_bytes, uint32_t n_rows,
                                           const float* x, uint64_t x_stride, uint32_t n_toks, uint32_t i) {
    constexpr uint32_t kAc = C::SK * 2 / 16, kBc = C::SK * 4 / 16;  // 16-byte pieces of a row
    for (uint32_t c = threadIdx.x; c < C::BM * kAc; c += C::kThreads) {
        const uint32_t r = c / kAc, j = c % kAc;
        const bool in = r < n_rows;  // rows past the end: zeros
        cp_async16(st + r * C::SA + 16 * j, in ? w + r * row_bytes + uint64_t{i} * C::SK * 2 + 16 * j : w,
                   in ? 16 : 0);
    }
    uint8_t* sb = st + C::BM * C::SA;
    for (uint32_t c = threadIdx.x; c < C::BN * kBc; c += C::kThreads) {
        const uint32_t t = c / kBc, j = c % kBc;
        const bool in = t < n_toks;
        cp_async16(sb + t * C::SB + 16 * j, in ? x + t * x_stride + uint64_t{i} * C::SK + 4 * j : x, in ? 16 : 0);
    }
}

__device__ __forceinline__ uint32_t word(const uint4& v, int k) {
    return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}
__device__ __forceinline__ float2 pair(const float4& lo, const float4& hi, int s) {
    return s == 0 ? make_float2(lo.x, lo.y) : s == 1 ? make_float2(lo.z, lo.w)
           : s == 2 ? make_float2(hi.x, hi.y) : make_float2(hi.z, hi.w);
}

// One warp's 32-column slice: a at its first row, b at its first token (both at the
// slice's first column); the slice's sum from zero, then added to acc.
template <class C>
__device__ __forceinline__ void slice_product(const uint8_t* a, const uint8_t* b, uint32_t g, uint32_t t,
                                              float (&acc)[2][C::NF][4]) {
    uint4 wv[2][2];
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) wv[m][h] = *reinterpret_cast<const uint4*>(a + (16 * m + 8 * h + g) * C::SA + 16 * t);
    float4 xv[C::NF][2];
#pragma unroll
    for (int f = 0; f < C::NF; ++f)
#pragma unroll
        for (int h = 0; h < 2; ++h) xv[f][h] = *reinterpret_cast<const float4*>(b + (8 * f + g) * C::SB + 32 * t + 16 * h);
    float tile[2][C::NF][4] = {};
#pragma unroll
    for (int s = 0; s < 4; ++s) {
        uint32_t af[2][4];
#pragma unroll
        for (int m = 0; m < 2; ++m) {
            const uint32_t lo = word(wv[m][0], s), hi = word(wv[m][1], s);
            const float2 r0 = __half22float2(reinterpret_cast<const __half2&>(lo));
            const float2 r8 = __half22float2(reinterpret_cast<const __half2&>(hi));
            af[m][0] = __float_as_uint(r0.x), af[m][1] = __float_as_uint(r8.x);
            af[m][2] = __float_as_uint(r0.y), af[m][3] = __float_as_uint(r8.y);
        }
#pragma unroll
        for (int f = 0; f < C::NF; ++f) {
            const float2 v = pair(xv[f][0], xv[f][1], s);
            const uint32_t h0 = to_tf32(v.x), h1 = to_tf32(v.y);
            const uint32_t l0 = to_tf32(v.x - __uint_as_float(h0)), l1 = to_tf32(v.y - __uint_as_float(h1));
#pragma unroll
            for (int m = 0; m < 2; ++m) {
                mma_tf32(tile[m][f], af[m], l0, l1);
                mma_tf32(tile[m][f], af[m], h0, h1);
            }
        }
    }
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int f = 0; f < C::NF; ++f)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[m][f][i] += tile[m][f][i];
}

template <class C>
__global__ void __launch_bounds__(C::kThreads) f16_mma_kernel(Args p) {
    dev::pdl_wait_and_release();
    __shared__ __align__(16) uint8_t smem[C::kSmem];
    const uint32_t r0 = blockIdx.x * C::BM, t0 = blockIdx.y * C::BN;
    const uint32_t n_rows = min(static_cast<uint32_t>(C::BM), p.rows - r0);
    const uint32_t n_toks = min(static_cast<uint32_t>(C::BN), p.n_tok - t0);
    const uint8_t* w = p.w + blockIdx.z * p.w_group + r0 * p.row_bytes;
    const float* x = p.x + blockIdx.z * p.x_group + t0 * p.x_stride;
    float* y = p.y + blockIdx.z * p.y_group;
    const uint32_t n_st = p.cols / C::SK;
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const uint32_t wk = warp % C::KS, wm = warp / C::KS % C::WM, wn = warp / C::KS / C::WM;
    const auto load = [&](uint32_t i) {
        load_stage<C>(smem + i % C::NS * C::kStageBytes, w, p.row_bytes, n_rows, x, p.x_stride, n_toks, i);
    };
#pragma unroll
    for (int i = 0; i < C::NS - 1; ++i) {
        if (static_cast<uint32_t>(i) < n_st) load(i);
        cp_async_commit();
    }
    float acc[2][C::NF][4] = {};
    for (uint32_t i = 0; i < n_st; ++i) {
        cp_async_wait<C::NS - 2>();
        __syncthreads();  // stage i is in; every warp is done with the buffer refilled next
        if (i + C::NS - 1 < n_st) load(i + C::NS - 1);
        cp_async_commit();
        const uint8_t* st = smem + i % C::NS * C::kStageBytes;
        slice_product<C>(st + wm * 32 * C::SA + wk * 64, st + C::BM * C::SA + wn * C::NF * 8 * C::SB + wk * 128, g,
                         t, acc);
    }
    if constexpr (C::KS > 1) {  // the K-warps' sums, added in warp order by warp wk = 0
        constexpr int kVals = 2 * C::NF * 4;
        cp_async_wait<0>();
        __syncthreads();
        auto* red = reinterpret_cast<float*>(smem);
        if (wk != 0)
#pragma unroll
            for (int i = 0; i < kVals; ++i) red[(warp * kVals + i) * 32 + lane] = (&acc[0][0][0])[i];
        __syncthreads();
        if (wk != 0) return;
#pragma unroll
        for (int k = 1; k < C::KS; ++k)
#pragma unroll
            for (int i = 0; i < kVals; ++i) (&acc[0][0][0])[i] += red[((warp + k) * kVals + i) * 32 + lane];
    }
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int f = 0; f < C::NF; ++f)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const uint32_t row = wm * 32 + 16 * m + g + 8 * (i / 2), tok = wn * C::NF * 8 + 8 * f + 2 * t + i % 2;
                if (row < n_rows && tok < n_toks) y[uint64_t{t0 + tok} * p.y_stride + r0 + row] = acc[m][f][i];
            }
}

template <class C>
void launch_cfg(const Args& a, uint32_t n_mat, cudaStream_t s) {
    const dim3 grid((a.rows + C::BM - 1) / C::BM, (a.n_tok + C::BN - 1) / C::BN, n_mat);
    if (grid.y > 65535 || n_mat > 65535) fail("cuda matmul_f16_mma: ", a.n_tok, " tokens x ", n_mat, " products");
    launch_pdl("launch of f16_mma_kernel", f16_mma_kernel<C>, grid, dim3(C::kThreads), 0, s, a);
}

}  // namespace

namespace {
uint32_t g_many_rows_min_tokens = kF16MmaManyRowsMinTokens;
}

void set_f16_mma_many_rows_min_tokens(uint32_t n_tok) { g_many_rows_min_tokens = std::max(n_tok, 1u); }

bool f16_mma_takes(uint32_t n_tok, uint64_t rows) {
    static const bool on = env_switch_on("DS4_CUDA_F16_MMA");
    const bool enough = n_tok >= kF16MmaMinTokens || (rows >= kF16MmaManyRows && n_tok >= g_many_rows_min_tokens);
    return on && enough && mma::device_has_mma();
}

void matmul_f16_mma(const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
                    uint64_t y_stride, uint32_t n_tok, cudaStream_t s, uint32_t n_mat, uint64_t w_group,
                    uint64_t x_group, uint64_t y_group) {
    if (rows == 0 || n_tok == 0 || n_mat == 0) return;
    if (cols % 256 != 0 || cols > 0xffffffffu || rows > 0xffffffffu)
        fail("cuda matmul_f16_mma: ", rows, " x ", cols, " is not a supported shape");
    if (reinterpret_cast<uintptr_t>(w) % 16 != 0 || w_group % 16 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
        x_stride % 4 != 0 || x_group % 4 != 0)
        fail("cuda matmul_f16_mma: weights and activations must be 16-byte aligned");
    const Args a{static_cast<const uint8_t*>(w), cols * 2, static_cast<uint32_t>(rows), static_cast<uint32_t>(cols),
                 x, x_stride, n_tok, y, y_stride, w_group, x_group, y_group};
    // Passes under kF16MmaMinTokens (the many-rows products of a decode batch) take the
    // K-split blocks of 8 tokens: Wide's 64 x 64 tiles gave a 1024-row product 16 blocks,
    // Mid's 128 blocks of one stage in flight each (~45 us a launch at 64 tokens, H200).
    if (rows <= kFewRows || n_tok < kF16MmaMinTokens)
        launch_cfg<Few>(a, n_mat, s);
    else if (rows <= kMidRows)
        launch_cfg<Mid>(a, n_mat, s);
    else
        launch_cfg<Wide>(a, n_mat, s);
}

}  // namespace ds4::cuda
