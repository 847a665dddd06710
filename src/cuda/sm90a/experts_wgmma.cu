// Routed experts of long passes on wgmma (experts_wgmma.h). Built for sm_90a only, as
// matmul_wgmma.cu; other targets compile the stubs.
//
// Block: 2 warpgroups, one tile of the launch's list (matmul_mma_experts.h: an active
// expert's slot and up to 256 of its pairs, 128 a warpgroup as two wgmma m64) by 128 rows
// of that expert's slab (blockIdx.x; gate and up side by side when both are given), over
// the columns in stages of 64. Two threads decode a weight row's 64 values of the next
// stage into f16 (4 swizzled 16-byte chunks each) while the tensor cores run this stage's
// wgmma k16 steps; the pairs' half activations come in by cp.async, the rows' quantized
// super-blocks too (staged, so the decode reads shared memory). Three stage buffers:
// stage kt + 1 is written while stage kt is multiplied and stage kt − 1's group may
// still be in flight. 256 pairs a tile: at ~190 pairs per expert (an 8192-token pass)
// each weight is decoded once, not twice as with 128 (measured: 1.3x slower than the
// int8 mma.sync kernel for IQ2_XXS with 128-pair tiles).
#include <cuda_fp16.h>

#include <algorithm>
#include <bit>
#include <mutex>
#include <type_traits>

#include "cuda/act_rows.cuh"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/device_math.cuh"
#include "cuda/env_switch.h"
#include "cuda/experts_wgmma.h"
#include "cuda/matmul_mma_experts.h"
#include "cuda/matmul_wgmma.h"
#include "cuda/mma_s8.cuh"
#include "cuda/pdl.cuh"
#include "cuda/sm90a/wgmma.cuh"
#include "ds4/error.h"
#include "quant/iq2_tables.h"

namespace ds4::cuda {
namespace {

using mma::cp_async16, mma::cp_async_commit, mma::cp_async_wait;
#ifdef DS4_WGMMA_DEVICE
using namespace wg;
#endif

constexpr uint32_t kTok = 256, kRows = 128, kCol = 64, kStages = 3, kThreads = 256;
constexpr uint32_t kA = kTok * 128, kStage = kA + kRows * 128;
constexpr uint32_t kTables = 256 * 16 + 128 * 16;  // IQ2_XXS: f16 grid entries, sign masks

// IQ2_XXS tables: grid entry e as 8 f16 magnitudes; for 7 stored sign bits s the 4 words
// that flip the f16 sign of each negative value (bit j of s | parity(s) << 7).
__device__ uint4 g_grid_f16[256];
__device__ uint4 g_sign_masks[128];

struct XArgs {
    const uint8_t *w0, *w1;
    uint64_t slab_bytes, row_bytes;
    uint32_t rows, row_tiles, cols;
    const __half* x;  // pair rows, cols halves each
    const float* xs;  // 2^−e per pair row
    float *y0, *y1;
    uint64_t y_stride;
    const uint32_t *expert, *begin, *count, *tiles;
};

__device__ __forceinline__ uint32_t h2u(__half2 h) {
    return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ __half2 u2h(uint32_t u) {
    return *reinterpret_cast<const __half2*>(&u);
}

__device__ __forceinline__ uint32_t lds16(const uint8_t* p) {
    return *reinterpret_cast<const uint16_t*>(p);
}
__device__ __forceinline__ uint32_t lds32(const uint8_t* p) {
    return *reinterpret_cast<const uint32_t*>(p);
}

// value = d · (2s + 1) · (±grid) / 8 per 32 values: f16(d · ((2s + 1) · ±grid)), the
// product in brackets exact in f16 (≤ 31 · 43), one rounding; the 1/8 goes to the sums.
struct Iq2Dec {
    static constexpr uint32_t kBlock = 66, kChunks = 5,
                              kPitch = 80;  // staged: 5 16-byte chunks from the floor
    static constexpr float kPost = 0.125f;
    // half i (32 values: one block) of stage q (0..3) of the super-block at sb (shared
    // memory) into row `row` of the tile
    __device__ static void decode(const uint8_t* sb, uint32_t q, uint32_t i, const uint8_t* tabs,
                                  uint8_t* tile, uint32_t row) {
        const uint4* grid = reinterpret_cast<const uint4*>(tabs);
        const uint4* sign = grid + 256;
        const __half2 d = __half2half2(__ushort_as_half(static_cast<unsigned short>(lds16(sb))));
        const uint8_t* b = sb + 2 + 8 * (2 * q + i);
        const uint32_t qw = lds16(b) | lds16(b + 2) << 16, aux = lds16(b + 4) | lds16(b + 6) << 16;
        const __half2 sc = __half2half2(__uint2half_rn(2 * (aux >> 28) + 1));
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const uint4 g = grid[(qw >> (8 * l)) & 255], m = sign[(aux >> (7 * l)) & 127];
            const uint4 v{h2u(__hmul2(__hmul2(u2h(g.x ^ m.x), sc), d)),
                          h2u(__hmul2(__hmul2(u2h(g.y ^ m.y), sc), d)),
                          h2u(__hmul2(__hmul2(u2h(g.z ^ m.z), sc), d)),
                          h2u(__hmul2(__hmul2(u2h(g.w ^ m.w), sc), d))};
            *reinterpret_cast<uint4*>(tile + wg::sw128(row, 4 * i + l)) = v;
        }
    }
};

// value = d·(sc & 15)·code − dmin·(sc >> 4) per 16 values (as ggml's dequantize_row_q2_K,
// in f32), then f16: a 16-value group has 4 values, picked per code by byte permutes.
// Stage q: values 64q + 8c, c < 8: half h = q / 2, j = 2(q % 2) + c / 4 (shift 2j),
// s = c / 2 % 2 (code bytes 32h + 16s + 8(c % 2).., scale 8h + 2j + s).
struct Q2kDec {
    static constexpr uint32_t kBlock = 84, kChunks = 6, kPitch = 112;
    static constexpr float kPost = 1.f;
    __device__ static void decode(const uint8_t* sb, uint32_t q, uint32_t i, const uint8_t*,
                                  uint8_t* tile, uint32_t row) {
        const uint32_t h = q / 2, scw = lds32(sb + 8 * h + 4 * (q % 2)), dd = lds32(sb + 80);
        const float d = __half2float(__ushort_as_half(static_cast<unsigned short>(dd & 0xffff)));
        const float dmin = __half2float(__ushort_as_half(static_cast<unsigned short>(dd >> 16)));
        const uint8_t* qs = sb + 16 + 32 * h;
#pragma unroll
        for (uint32_t c = 4 * i; c < 4 * i + 4; ++c) {  // half i: values 64q + 32i ..
            const uint32_t jj = c / 4, s = c / 2 % 2, j = 2 * (q % 2) + jj;
            const uint32_t scb = (scw >> (8 * (2 * jj + s))) & 255;
            const float dl = d * static_cast<float>(scb & 15),
                        ml = dmin * static_cast<float>(scb >> 4);
            const uint32_t lo = h2u(__floats2half2_rn(__fsub_rn(0.f * dl, ml), __fsub_rn(dl, ml)));
            const uint32_t hi =
                h2u(__floats2half2_rn(__fsub_rn(2.f * dl, ml), __fsub_rn(3.f * dl, ml)));
            uint32_t out[4];
#pragma unroll
            for (int w = 0; w < 2; ++w) {
                // 4 codes (bytes ≤ 3) → per byte (2c) | (2c + 1) << 4: a permute selector per pair
                const uint32_t codes =
                    (lds32(qs + 16 * s + 8 * (c % 2) + 4 * w) >> (2 * j)) & 0x03030303u;
                const uint32_t sel = codes * 0x22u + 0x10101010u;
                out[2 * w] = __byte_perm(lo, hi, sel & 0xffff);
                out[2 * w + 1] = __byte_perm(lo, hi, sel >> 16);
            }
            *reinterpret_cast<uint4*>(tile + wg::sw128(row, c)) =
                make_uint4(out[0], out[1], out[2], out[3]);
        }
    }
};

// A row's super-block sb, staged: the 16-byte chunks from its 16-byte floor (chunks past
// its end zero-filled: a copy never leaves the 16-byte granules of the slab); D::kPitch
// bytes a row (5 or 7 words mod 8: a warp's 32 rows hit 8 bank groups), two buffers
// (super-blocks sb and sb + 1) of kRaw bytes.
constexpr uint32_t kRaw = kRows * std::max(Iq2Dec::kPitch, Q2kDec::kPitch);
constexpr uint32_t kSmem =
    kStages * kStage + kTables + 2 * kRaw + 1024;  // + the base's alignment slack

template <class D>
__global__ void __launch_bounds__(kThreads, 1) experts_wgmma_kernel(XArgs a) {
#ifdef DS4_WGMMA_DEVICE
    dev::pdl_wait_and_release();
    if (blockIdx.y >= a.tiles[0]) return;
    extern __shared__ __align__(1024) uint8_t raw[];
    uint8_t* base = align_1024(raw);
    uint8_t* tabs = base + kStages * kStage;
    uint8_t* rawbuf = tabs + kTables;
    const uint32_t tid = threadIdx.x, wg = tid / 128, n_kt = a.cols / kCol;
    if constexpr (std::is_same_v<D, Iq2Dec>) {
        for (uint32_t k = tid; k < 256; k += kThreads)
            reinterpret_cast<uint4*>(tabs)[k] = g_grid_f16[k];
        for (uint32_t k = tid; k < 128; k += kThreads)
            reinterpret_cast<uint4*>(tabs)[256 + k] = g_sign_masks[k];
    }
    const uint32_t slot = a.tiles[2 + 2 * blockIdx.y], k0 = a.tiles[3 + 2 * blockIdx.y];
    const uint32_t e = a.expert[slot], p0 = a.begin[slot] + k0,
                   n_here = min(kTok, a.count[slot] - k0);
    const uint32_t which = blockIdx.x / a.row_tiles, row0 = blockIdx.x % a.row_tiles * kRows;
    // rows past the slab stage and decode row 0: their columns of the product are never stored
    const uint8_t* slab = (which == 0 ? a.w0 : a.w1) + uint64_t{e} * a.slab_bytes;
    const auto row_at = [&](uint32_t r) {
        return slab + uint64_t{row0 + r < a.rows ? row0 + r : 0} * a.row_bytes;
    };
    const __half* x = a.x + uint64_t{p0} * a.cols;
    const auto load_x = [&](uint32_t kt) {
        uint8_t* st = base + kt % kStages * kStage;
        for (uint32_t c = tid; c < kTok * 8; c += kThreads) {
            const uint32_t t = c / 8, j = c % 8;
            const bool in = t < n_here;
            cp_async16(st + sw128(t, j), x + (in ? uint64_t{t} * a.cols + kt * kCol + 8 * j : 0),
                       in ? 16 : 0);
        }
    };
    const auto load_raw = [&](uint32_t sb) {  // consecutive threads: consecutive chunks of a row
        uint8_t* rb = rawbuf + sb % 2 * kRaw;
        for (uint32_t c = tid; c < kRows * D::kChunks; c += kThreads) {
            const uint32_t r = c / D::kChunks, k = c % D::kChunks;
            const uint8_t* at = row_at(r) + uint64_t{sb} * D::kBlock;
            const uint8_t* floor =
                reinterpret_cast<const uint8_t*>(reinterpret_cast<uintptr_t>(at) & ~uintptr_t{15});
            const bool in = floor + 16 * k < at + D::kBlock;
            cp_async16(rb + r * D::kPitch + 16 * k, in ? floor + 16 * k : floor, in ? 16 : 0);
        }
    };
    // this thread's row (two threads a row, one 32-value half of each stage each): its
    // super-block sb in shared memory
    const uint32_t my_row = tid / 2, my_half = tid % 2;
    const auto row_off = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(row_at(my_row)));
    const auto staged = [&](uint32_t sb) {
        return rawbuf + sb % 2 * kRaw + my_row * D::kPitch + (row_off + sb * D::kBlock) % 16;
    };

    load_raw(0);
    load_x(0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();  // the tables, super-block 0
    D::decode(staged(0), 0, my_half, tabs, base + kA, my_row);

    float acc[2][64];  // the warpgroup's pairs 128·wg + 64m ..
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int i = 0; i < 64; ++i) acc[m][i] = 0.f;
    for (uint32_t kt = 0; kt < n_kt; ++kt) {
        cp_async_wait<0>();   // stage kt's activations and any staged super-block (this thread's
                              // copies)
        fence_proxy_async();  // ... and the weights it decoded, for the async proxy
        __syncthreads();      // everyone's; every warpgroup's group of stage kt − 2 is done
        if (kt + 1 < n_kt) load_x(kt + 1);
        // super-block kt / 4 + 1 into the buffer of kt / 4 − 1, whose last stage (kt − 1) was
        // decoded before the barrier above; first decoded at iteration kt + 3
        if (kt % 4 == 0 && kt + 4 < n_kt) load_raw(kt / 4 + 1);
        cp_async_commit();
        const uint32_t st =
            static_cast<uint32_t>(__cvta_generic_to_shared(base + kt % kStages * kStage));
        const uint64_t da = desc_sw128(st + wg * 128 * 128), db = desc_sw128(st + kA);
        wgmma_fence();
#pragma unroll
        for (uint32_t k = 0; k < kCol / 16; ++k)
#pragma unroll
            for (uint32_t m = 0; m < 2; ++m)  // +64 rows of A: +8 KB, +512 in the address field
                wgmma_m64n128k16(acc[m], da + 512 * m + 2 * k, db + 2 * k, (kt | k) != 0 ? 1 : 0);
        wgmma_commit();
        if (kt + 1 < n_kt)  // the next stage's weights while the tensor cores run
            D::decode(staged((kt + 1) / 4), (kt + 1) % 4, my_half, tabs,
                      base + (kt + 1) % kStages * kStage + kA, my_row);
        wgmma_wait<1>();
    }
    wgmma_wait<0>();
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int i = 0; i < 64; ++i) fence_operand(acc[m][i]);

    // acc[m][i]: pair 128·wg + 64m + 16·warp + lane / 4 (+ 8 for i % 4 >= 2), row
    // 8(i / 4) + 2(lane % 4) (+ 1 for odd i)
    const uint32_t warp = tid % 128 / 32, lane = tid % 32;
    float* y = (which == 0 ? a.y0 : a.y1) + row0;
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const uint32_t t = wg * 128 + 64 * m + warp * 16 + lane / 4 + 8 * h;
            if (t < n_here) {
                const float sc = a.xs[p0 + t] * D::kPost;
                float* yt = y + uint64_t{p0 + t} * a.y_stride;
#pragma unroll
                for (int j = 0; j < 16; ++j) {
                    const uint32_t r = 8 * j + 2 * (lane % 4);
                    if (row0 + r < a.rows) yt[r] = acc[m][4 * j + 2 * h] * sc;
                    if (row0 + r + 1 < a.rows) yt[r + 1] = acc[m][4 * j + 2 * h + 1] * sc;
                }
            }
        }
#else
    (void)a;
#endif
}

// One block per row (8 values a thread per pass over the columns, up to kHalfChunks
// passes kept in registers between the max and the stores): e such that the row's largest
// |x| lands in [2^14, 2^15) (0 when zero or not finite), f16(x · 2^e), 2^−e.
constexpr uint32_t kHalfChunks = 4;
__global__ void __launch_bounds__(kThreads)
    quantize_half_rows_kernel(const float* __restrict__ x, uint64_t x_stride, uint32_t cols,
                              uint32_t n, __half* __restrict__ xh, ActRows rs) {
    dev::pdl_wait_and_release();
    __shared__ float red[32];
    const uint32_t i = blockIdx.x, tid = threadIdx.x;
    if (!dev::act_row_live(rs, i)) return;
    float v[kHalfChunks][8];
    float amax = 0.f;
#pragma unroll
    for (uint32_t c = 0; c < kHalfChunks; ++c) {
        const uint32_t col = 8 * (tid + c * kThreads);
        if (col < cols) {
            dev::load_act8(x, x_stride, rs, i, col, v[c]);
#pragma unroll
            for (int k = 0; k < 8; ++k) amax = fmaxf(amax, fabsf(v[c][k]));
        }
    }
    const int e = dev::half_exponent(dev::block_max(amax, red));
    const float scale = ldexpf(1.f, e);
#pragma unroll
    for (uint32_t c = 0; c < kHalfChunks; ++c) {
        const uint32_t col = 8 * (tid + c * kThreads);
        if (col < cols) {
            uint4 o;
            o.x = h2u(__floats2half2_rn(v[c][0] * scale, v[c][1] * scale));
            o.y = h2u(__floats2half2_rn(v[c][2] * scale, v[c][3] * scale));
            o.z = h2u(__floats2half2_rn(v[c][4] * scale, v[c][5] * scale));
            o.w = h2u(__floats2half2_rn(v[c][6] * scale, v[c][7] * scale));
            *reinterpret_cast<uint4*>(xh + uint64_t{i} * cols + col) = o;
        }
    }
    if (tid == 0) reinterpret_cast<float*>(xh + uint64_t{n} * cols)[i] = ldexpf(1.f, -e);
}

uint16_t small_int_f16(uint32_t v) {  // 1 <= v < 2048, exact
    const int e = std::bit_width(v) - 1;
    return static_cast<uint16_t>((15 + e) << 10 | ((v << (10 - e)) & 0x3ff));
}

void upload_iq2_tables() {
    static std::once_flag once;
    std::call_once(once, [] {
        uint4 grid[256], sign[128];
        for (int e = 0; e < 256; ++e) {
            uint32_t w[4];
            for (int k = 0; k < 4; ++k) {
                const auto b0 = static_cast<uint32_t>(quant::kIq2Grid[e] >> (16 * k)) & 255;
                const auto b1 = static_cast<uint32_t>(quant::kIq2Grid[e] >> (16 * k + 8)) & 255;
                w[k] = small_int_f16(b0) | static_cast<uint32_t>(small_int_f16(b1)) << 16;
            }
            grid[e] = make_uint4(w[0], w[1], w[2], w[3]);
        }
        for (uint32_t s = 0; s < 128; ++s) {
            const uint32_t s8 = quant::kIq2Signs[s];  // s | parity(s) << 7
            uint32_t w[4];
            for (uint32_t k = 0; k < 4; ++k)
                w[k] = ((s8 >> (2 * k)) & 1) << 15 | ((s8 >> (2 * k + 1)) & 1) << 31;
            sign[s] = make_uint4(w[0], w[1], w[2], w[3]);
        }
        DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_grid_f16, grid, sizeof(grid)));
        DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_sign_masks, sign, sizeof(sign)));
    });
}

template <class D>
void launch(const XArgs& a, uint32_t max_slots, uint32_t max_pairs, cudaStream_t s) {
    static std::once_flag once;
    std::call_once(once, [] {
        DS4_CUDA_CHECK(cudaFuncSetAttribute(experts_wgmma_kernel<D>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(kSmem)));
    });
    const uint32_t max_tiles = (max_pairs + kTok - 1) / kTok + max_slots;
    const dim3 grid(a.row_tiles * (a.w1 != nullptr ? 2 : 1), max_tiles);
    launch_pdl("launch of experts_wgmma_kernel", experts_wgmma_kernel<D>, grid, dim3(kThreads),
               kSmem, s, a);
}

}  // namespace

bool experts_wgmma_supported(GgmlType t, uint64_t cols, uint64_t row_bytes, const void* w) {
    const uint64_t align = t == GgmlType::IQ2_XXS ? 2 : t == GgmlType::Q2_K ? 4 : 0;
    return align != 0 && cols % 256 == 0 && cols != 0 && row_bytes % align == 0 &&
           reinterpret_cast<uintptr_t>(w) % align == 0 && wgmma_available() &&
           device_smem_optin() >= kSmem;
}

bool experts_wgmma_opted_in(GgmlType t) {
    return env_is("DS4_CUDA_WGMMA_EXPERTS", "1") ||
           (t == GgmlType::Q2_K && env_is("DS4_CUDA_WGMMA_EXPERTS", "q2k"));
}

uint64_t half_rows_bytes(uint64_t cols, uint32_t n) {
    return uint64_t{n} * (2 * cols + 4);
}

void quantize_half_rows(const float* x, uint64_t x_stride, uint64_t cols, uint32_t n, void* xh,
                        cudaStream_t s, const ActRows& rows) {
    if (cols == 0 || cols % 256 != 0 || cols > 8 * kThreads * kHalfChunks)
        fail("cuda quantize_half_rows: ", cols, " columns, expected a multiple of 256 up to ",
             8 * kThreads * kHalfChunks);
    if (n == 0) return;
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || x_stride % 4 != 0 ||
        reinterpret_cast<uintptr_t>(xh) % 16 != 0)
        fail(
            "cuda quantize_half_rows: activations must be 16-byte aligned with a stride multiple "
            "of 4");
    launch_pdl("launch of quantize_half_rows_kernel", quantize_half_rows_kernel, dim3(n),
               dim3(kThreads), 0, s, x, x_stride, static_cast<uint32_t>(cols), n,
               static_cast<__half*>(xh), rows);
}

void matmul_experts_wgmma(GgmlType type, const void* w0, const void* w1, uint64_t slab_rows,
                          uint64_t cols, const void* xh, uint32_t xh_rows, float* y0, float* y1,
                          uint64_t y_stride, const ExpertGroups& g, uint32_t max_slots,
                          uint32_t max_pairs, uint32_t* tiles, cudaStream_t s) {
    if (slab_rows == 0 || max_slots == 0 || max_pairs == 0) return;
    if (xh_rows < max_pairs)
        fail("cuda matmul_experts_wgmma: ", xh_rows, " activation rows for ", max_pairs, " pairs");
    const uint64_t row_bytes =
        cols / 256 * (type == GgmlType::IQ2_XXS ? Iq2Dec::kBlock : Q2kDec::kBlock);
    if (!experts_wgmma_supported(type, cols, row_bytes, w0) ||
        (w1 != nullptr && !experts_wgmma_supported(type, cols, row_bytes, w1)))
        fail("cuda matmul_experts_wgmma: unsupported type, shape, alignment or device");
    if (slab_rows > 0x7fffffffu || cols > 0x7fffffffu)
        fail("cuda matmul_experts_wgmma: slabs too large");
    if (reinterpret_cast<uintptr_t>(xh) % 16 != 0)
        fail("cuda matmul_experts_wgmma: xh is not 16-byte aligned");
    const auto rows = static_cast<uint32_t>(slab_rows);
    const XArgs a{static_cast<const uint8_t*>(w0),
                  static_cast<const uint8_t*>(w1),
                  slab_rows * row_bytes,
                  row_bytes,
                  rows,
                  (rows + kRows - 1) / kRows,
                  static_cast<uint32_t>(cols),
                  static_cast<const __half*>(xh),
                  reinterpret_cast<const float*>(static_cast<const uint8_t*>(xh) +
                                                 2 * uint64_t{xh_rows} * cols),
                  y0,
                  y1,
                  y_stride,
                  g.expert,
                  g.begin,
                  g.count,
                  tiles};
    mma_experts_tiles(g, max_slots, kTok, tiles, s);
    if (type == GgmlType::IQ2_XXS) {
        upload_iq2_tables();
        launch<Iq2Dec>(a, max_slots, max_pairs, s);
    } else {
        launch<Q2kDec>(a, max_slots, max_pairs, s);
    }
}

}  // namespace ds4::cuda
