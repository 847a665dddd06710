// Small passes' repacked Q8_0 products on the tensor cores (matmul_q8r_tc.h).
//
// The q8r row layout (kernels.h): per span s of 512 columns, lane slot j (0..31) holds 16
// bytes, the code words of columns 512s + 128k + 4j .. + 3 for k = 0..3; then the row's
// f16 scales, block 16s + 4k + o (o = j / 8) at half 16s + 4o + k. A unit = (s, o): 128
// columns, 4 Q8_0 blocks (k = 0..3), 8 slots. Thread (g, t) of a warp (g = lane / 4,
// t = lane % 4) loads slots 8o + t and 8o + 4 + t of rows g and g + 8: for block k the
// words k of those slots are the A fragments of two m16n8k16 steps (a word's bytes 0, 1
// are k-pair 2t, 2t + 1, bytes 2, 3 the pair 8 + 2t, 9 + 2t), and the thread's B
// fragments are the same 4 columns of token g's activations (one float4 each, rounded to
// f16 in registers with the block's power of two).
#include "cuda/matmul_q8r_tc.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>

#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/device_math.cuh"
#include "cuda/mma_s8.cuh"
#include "cuda/pdl.cuh"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

constexpr uint32_t kWarps = 8;
constexpr uint32_t kDepth =
    4;  // units of loads in flight per warp (2: 80 registers, 3 blocks an SM, slower)
std::atomic<uint32_t> g_min_tokens{kQ8rTcMinTokens};
constexpr uint32_t kMaxParts = 8;
constexpr uint64_t kMaxCols = 16384;
constexpr uint64_t kMinWeights = uint64_t{1} << 20;

DeviceSwitch g_on("DS4_CUDA_Q8T", 8);

struct Part {
    const uint8_t* w = nullptr;
    const float* x = nullptr;
    float* y = nullptr;
    uint64_t y_stride = 0;
    uint32_t rows = 0, block0 = 0;
};
struct Plan {
    Part part[kMaxParts];
    uint32_t n_parts = 0, cols = 0, n_tok = 0;
    uint64_t row_bytes = 0, x_stride = 0;
};

// Slices of a row's units (cols / 128): the fewest (1-8, at least 4 units each) that give
// the part 2048 warps (16 rows each), so small products still fill the card. From the
// part's shape only, so a (row, token) result never depends on the batch or the parts
// launched beside it.
uint32_t slices_of(uint64_t rows, uint64_t cols) {
    const uint64_t groups = (rows + 15) / 16, units = cols / 128;
    uint32_t p = 1;
    while (p < 8 && 2 * p * 4 <= units && groups * p < 2048) p *= 2;
    return p;
}

// One unit's loads: codes of slots 8o + t (lo) and 8o + 4 + t (hi) of rows g (a) and g + 8
// (b), and the 4 blocks' scales of each row.
struct Unit {
    uint4 a_lo, a_hi, b_lo, b_hi;
    uint2 da, db;
};

// Weights are read once: past L1 (pdl.cuh allows them before the wait: constants).
__device__ __forceinline__ uint4 ld_codes(const uint8_t* p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}
__device__ __forceinline__ uint2 ld_scales(const uint8_t* p) {
    uint2 v;
    asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}

__device__ __forceinline__ Unit load_unit(const uint8_t* ra, const uint8_t* rb, uint32_t cols,
                                          uint32_t u, uint32_t t) {
    const uint32_t s = u / 4, o = u % 4;
    const uint32_t c = 512 * s + 16 * (8 * o + t), h = cols + 2 * (16 * s + 4 * o);
    return Unit{ld_codes(ra + c),      ld_codes(ra + c + 64), ld_codes(rb + c),
                ld_codes(rb + c + 64), ld_scales(ra + h),     ld_scales(rb + h)};
}

// A code word's 4 int8 values as two f16x2 of the exact integers: the byte xor 0x80
// (q + 128) under the f16 exponent of 1024 is 1024 + 128 + q, minus 1152.
__device__ __forceinline__ void code_halves(uint32_t w, uint32_t& lo, uint32_t& hi) {
    const uint32_t b = w ^ 0x80808080u;
    const __half2 bias = __half2half2(__ushort_as_half(0x6480));  // 1152
    const uint32_t l = __byte_perm(b, 0x64646464u, 0x4140), h = __byte_perm(b, 0x64646464u, 0x4342);
    const __half2 lh = __hsub2(*reinterpret_cast<const __half2*>(&l), bias);
    const __half2 hh = __hsub2(*reinterpret_cast<const __half2*>(&h), bias);
    lo = *reinterpret_cast<const uint32_t*>(&lh);
    hi = *reinterpret_cast<const uint32_t*>(&hh);
}

__device__ __forceinline__ uint32_t word(const uint4& v, int k) {
    return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}
__device__ __forceinline__ float scale(const uint2& d, int k) {
    const uint32_t w = k < 2 ? d.x : d.y;
    return __half2float(__ushort_as_half(static_cast<unsigned short>(k % 2 ? w >> 16 : w)));
}

// The power of two that puts a block's largest |x| (m) in [2^14, 2^15), below f16's
// largest finite value (dev::half_exponent's rule, from the exponent bits; m = 0, Inf or
// NaN: 0), as the float 2^e and its inverse.
__device__ __forceinline__ void block_scale(float m, float& up, float& down) {
    int e = 0;
    if (m > 0.f && m <= 3.4e38f)
        e = min(15 - (static_cast<int>(__float_as_uint(m) >> 23) - 126), 126);
    up = __int_as_float((127 + e) << 23);
    down = __int_as_float((127 - e) << 23);
}

__device__ __forceinline__ uint32_t half_pair(float a, float b, float sc) {
    const __half2 h = __floats2half2_rn(a * sc, b * sc);
    return *reinterpret_cast<const uint32_t*>(&h);
}

// acc[i] += d_row(i) · (block k of unit v) · x for the thread's 4 (row, token) outputs.
// xg: token g's f32 activations; xc: the unit's first column. Each Q8_0 block's 32
// activations of a token go to f16 with their own power of two: the 4 threads of a quad
// hold them (8 each), their largest |x| is a 2-step shuffle; the block's dot leaves the
// tensor core in f32 and is scaled by d · 2^-e of its row and token.
__device__ __forceinline__ void unit_blocks(const Unit& v, const float* __restrict__ xg,
                                            uint32_t xc, uint32_t t, float (&acc)[4]) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const float4 xl = __ldg(reinterpret_cast<const float4*>(xg + xc + 128 * k + 4 * t));
        const float4 xh = __ldg(reinterpret_cast<const float4*>(xg + xc + 128 * k + 16 + 4 * t));
        float m = fmaxf(fmaxf(fmaxf(fabsf(xl.x), fabsf(xl.y)), fmaxf(fabsf(xl.z), fabsf(xl.w))),
                        fmaxf(fmaxf(fabsf(xh.x), fabsf(xh.y)), fmaxf(fabsf(xh.z), fabsf(xh.w))));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
        float up, down;
        block_scale(m, up, down);
        uint32_t a0, a2, a1, a3, a4, a6, a5, a7;
        code_halves(word(v.a_lo, k), a0, a2);
        code_halves(word(v.b_lo, k), a1, a3);
        code_halves(word(v.a_hi, k), a4, a6);
        code_halves(word(v.b_hi, k), a5, a7);
        float c[4] = {0.f, 0.f, 0.f, 0.f};
        mma::mma_f16_acc(a0, a1, a2, a3, half_pair(xl.x, xl.y, up), half_pair(xl.z, xl.w, up), c);
        mma::mma_f16_acc(a4, a5, a6, a7, half_pair(xh.x, xh.y, up), half_pair(xh.z, xh.w, up), c);
        // c[0], c[2] are token 2t's (quad 2t holds its scale), c[1], c[3] token 2t + 1's
        const float d0 = __shfl_sync(0xffffffffu, down, 8 * t),
                    d1 = __shfl_sync(0xffffffffu, down, 8 * t + 4);
        const float da = scale(v.da, k), db = scale(v.db, k);
        acc[0] = fmaf(da * d0, c[0], acc[0]);
        acc[1] = fmaf(da * d1, c[1], acc[1]);
        acc[2] = fmaf(db * d0, c[2], acc[2]);
        acc[3] = fmaf(db * d1, c[3], acc[3]);
    }
}

// 128 registers: 2 blocks a multiprocessor.
template <uint32_t P>
__global__ void __launch_bounds__(kWarps * 32, 2) q8r_tc_kernel(const Plan p) {
    __shared__ float part_sum[P > 1 ? kWarps : 1][4][32];
    Part pt = p.part[0];
#pragma unroll
    for (uint32_t j = 1; j < kMaxParts; ++j)
        if (j < p.n_parts && blockIdx.x >= p.part[j].block0) pt = p.part[j];
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    constexpr uint32_t kGroups = kWarps / P;
    const uint32_t rg = (blockIdx.x - pt.block0) * kGroups + warp / P, slice = warp % P;
    const uint32_t row_a = 16 * rg + g, row_b = row_a + 8;
    const uint32_t last = pt.rows - 1;  // rows past the matrix load its last row, never stored
    const uint8_t* ra = pt.w + uint64_t{min(row_a, last)} * p.row_bytes;
    const uint8_t* rb = pt.w + uint64_t{min(row_b, last)} * p.row_bytes;
    const uint32_t units = p.cols / 128, u0 = slice * units / P, u1 = (slice + 1) * units / P;
    // a ring of kDepth units in flight per warp (one unit ahead kept ~31 KB in flight per
    // multiprocessor: 2.1-2.4 TB/s in ncu); the first ones before the pdl wait
    Unit ring[kDepth];
#pragma unroll
    for (uint32_t i = 0; i < kDepth; ++i)
        if (u0 + i < u1) ring[i] = load_unit(ra, rb, p.cols, u0 + i, t);
    dev::pdl_wait_and_release();  // (the weights only before it: pdl.cuh)
    const uint32_t tok0 = blockIdx.y * 8, n = min(8u, p.n_tok - tok0);
    // token g's activations (a column past the chunk reads token 0: its outputs are never stored)
    const float* xg = pt.x + (tok0 + (g < n ? g : 0)) * p.x_stride;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (uint32_t u = u0; u < u1; u += kDepth) {
#pragma unroll
        for (uint32_t i = 0; i < kDepth; ++i) {
            const uint32_t v = u + i;
            if (v >= u1) break;
            unit_blocks(ring[i], xg, 512 * (v / 4) + 32 * (v % 4), t, acc);
            if (v + kDepth < u1) ring[i] = load_unit(ra, rb, p.cols, v + kDepth, t);
        }
    }
    if constexpr (P > 1) {
#pragma unroll
        for (int i = 0; i < 4; ++i) part_sum[warp][i][lane] = acc[i];
        __syncthreads();
        if (slice != 0) return;
#pragma unroll
        for (int i = 0; i < 4; ++i)
            for (uint32_t q = 1; q < P; ++q) acc[i] += part_sum[warp + q][i][lane];
    }
    // acc: (row g, tokens 2t, 2t + 1), (row g + 8, tokens 2t, 2t + 1)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t row = i < 2 ? row_a : row_b, tok = 2 * t + i % 2;
        if (row < pt.rows && tok < n) pt.y[(tok0 + tok) * pt.y_stride + row] = acc[i];
    }
}

template <uint32_t P>
void launch(const Plan& p, uint32_t blocks, uint32_t chunks, cudaStream_t s) {
    launch_pdl("launch of q8r_tc_kernel", q8r_tc_kernel<P>, dim3(blocks, chunks), dim3(kWarps * 32),
               0, s, p);
}

}  // namespace

bool q8r_tc_enabled() { return g_on.on(); }
void set_q8r_tc(bool on) { g_on.set(on); }
void set_q8r_tc_min_tokens(uint32_t n) {
    g_min_tokens.store(std::max(n, 1u), std::memory_order_relaxed);
}

bool q8r_tc_takes(uint64_t rows, uint64_t cols, uint32_t n_tok) {
    return q8r_tc_enabled() && n_tok >= g_min_tokens.load(std::memory_order_relaxed) && rows > 0 &&
           rows <= 0x7fffffffu && cols % 512 == 0 && cols > 0 && cols <= kMaxCols &&
           rows * cols >= kMinWeights;
}

void matmul_q8r_tc(std::span<const Q8rTcPart> parts, uint64_t cols, uint32_t n_tok,
                   uint64_t x_stride, cudaStream_t s) {
    if (parts.empty() || n_tok == 0) return;
    if (parts.size() > kMaxParts)
        fail("cuda matmul_q8r_tc: ", parts.size(), " parts, at most ", kMaxParts);
    if (x_stride % 4 != 0)
        fail("cuda matmul_q8r_tc: the activation stride must be a multiple of 4");
    for (const Q8rTcPart& q : parts) {
        if (!q8r_tc_takes(q.rows, cols, n_tok))
            fail("cuda matmul_q8r_tc: ", q.rows, " x ", cols, " is not taken");
        if (reinterpret_cast<uintptr_t>(q.w) % 16 != 0 ||
            reinterpret_cast<uintptr_t>(q.x) % 16 != 0)
            fail("cuda matmul_q8r_tc: weights and activations must be 16-byte aligned");
    }
    const uint32_t chunks = (n_tok + 7) / 8;
    if (chunks > 65535) fail("cuda matmul_q8r_tc: ", n_tok, " tokens, too many chunks");
    // one launch per slice count (the kernel's template)
    for (const uint32_t P : {1u, 2u, 4u, 8u}) {
        Plan p;
        p.cols = static_cast<uint32_t>(cols);
        p.n_tok = n_tok;
        p.row_bytes = cols / 32 * 34;
        p.x_stride = x_stride;
        const uint32_t groups = kWarps / P;
        uint32_t blocks = 0;
        for (const Q8rTcPart& q : parts) {
            if (slices_of(q.rows, cols) != P) continue;
            p.part[p.n_parts++] = Part{static_cast<const uint8_t*>(q.w), q.x,   q.y, q.y_stride,
                                       static_cast<uint32_t>(q.rows),    blocks};
            blocks += static_cast<uint32_t>((q.rows + 16 * groups - 1) / (16 * groups));
        }
        if (p.n_parts == 0) continue;
        switch (P) {
            case 1:
                launch<1>(p, blocks, chunks, s);
                break;
            case 2:
                launch<2>(p, blocks, chunks, s);
                break;
            case 4:
                launch<4>(p, blocks, chunks, s);
                break;
            default:
                launch<8>(p, blocks, chunks, s);
                break;
        }
    }
}

}  // namespace ds4::cuda
