// wgmma products of the f16 weight copies (matmul_wgmma.h). Built for sm_90a only (its
// own library, src/cuda/CMakeLists.txt); other targets compile the stubs below.
//
// Block: 2 warpgroups, a tile of 128 tokens (64 a warpgroup: wgmma's m) by 256 weight
// rows (n), over the columns in stages of 64 halves (one 128-byte row of each operand).
// Both operands are K-major in shared memory with the 128-byte swizzle (16-byte chunk j
// of row r at chunk j ^ (r % 8) of a 1024-byte aligned group of 8 rows), which is what
// the descriptors below name; all 256 threads copy them with cp.async, kStages deep.
// Per stage each warpgroup issues 4 wgmma k16 steps and keeps one stage's group in flight.
#include "cuda/matmul_wgmma.h"

#include <algorithm>

#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/env_switch.h"
#include "cuda/matmul_mma.h"
#include "cuda/mma_s8.cuh"
#include "cuda/pdl.cuh"
#include "cuda/sm90a/wgmma.cuh"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

using mma::cp_async16, mma::cp_async_commit, mma::cp_async_wait;
#ifdef DS4_WGMMA_DEVICE
using namespace wg;
#endif

constexpr uint32_t kTokTile = 128;  // two warpgroups of 64 tokens
constexpr uint32_t kRowTile = 256;  // wgmma's n
constexpr uint32_t kColTile = 64;   // halves per row and stage: one 128-byte swizzle row
constexpr uint32_t kStages = 4;
constexpr uint32_t kThreads = 256;
constexpr uint32_t kABytes = kTokTile * 128, kBBytes = kRowTile * 128,
                   kStageBytes = kABytes + kBBytes;
constexpr uint32_t kSmem = kStages * kStageBytes + 1024;  // + the slack to align the base to 1024

struct Args {
    const __half* w;  // group 0, row 0
    uint32_t rows, cols;
    const __half* x;  // token 0, group 0's first column
    uint64_t x_tok;   // halves between tokens
    const float* xs;  // 2^−e per token
    uint32_t n_tok, n_pad;
    float* y;
    uint64_t y_stride, y_group;
};

__global__ void __launch_bounds__(kThreads, 1) f16_wgmma_kernel(Args p) {
#ifdef DS4_WGMMA_DEVICE
    dev::pdl_wait_and_release();
    extern __shared__ __align__(1024) uint8_t raw[];
    uint8_t* base = align_1024(raw);
    const uint32_t row0 = blockIdx.x * kRowTile, tok0 = blockIdx.y * kTokTile, g = blockIdx.z;
    const __half* w = p.w + (uint64_t{g} * p.rows + row0) * p.cols;
    const __half* x = p.x + uint64_t{g} * p.cols + uint64_t{tok0} * p.x_tok;
    const uint32_t n_kt = p.cols / kColTile, tid = threadIdx.x, wg = tid / 128;

    const auto load = [&](uint32_t kt) {
        uint8_t* st = base + (kt % kStages) * kStageBytes;
        for (uint32_t c = tid; c < kTokTile * 8; c += kThreads) {
            const uint32_t r = c / 8, j = c % 8;
            const bool in = tok0 + r < p.n_pad;
            cp_async16(st + sw128(r, j), x + (in ? r * p.x_tok + kt * kColTile + 8 * j : 0),
                       in ? 16 : 0);
        }
        for (uint32_t c = tid; c < kRowTile * 8; c += kThreads) {
            const uint32_t r = c / 8, j = c % 8;
            const bool in = row0 + r < p.rows;
            cp_async16(st + kABytes + sw128(r, j),
                       w + (in ? uint64_t{r} * p.cols + kt * kColTile + 8 * j : 0), in ? 16 : 0);
        }
    };

    float acc[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) acc[i] = 0.f;
#pragma unroll
    for (uint32_t i = 0; i < kStages - 2; ++i) {
        if (i < n_kt) load(i);
        cp_async_commit();
    }
    for (uint32_t kt = 0; kt < n_kt; ++kt) {
        cp_async_wait<kStages - 3>();  // this thread's copies of stage kt landed
        fence_proxy_async();
        __syncthreads();  // everyone's; and every warpgroup's wgmma of stage kt − 2 is done
        if (kt + kStages - 2 < n_kt) load(kt + kStages - 2);  // into stage kt − 2's buffer
        cp_async_commit();
        const uint32_t st =
            static_cast<uint32_t>(__cvta_generic_to_shared(base + (kt % kStages) * kStageBytes));
        const uint64_t da = desc_sw128(st + wg * 64 * 128), db = desc_sw128(st + kABytes);
        wgmma_fence();
#pragma unroll
        for (uint32_t k = 0; k < kColTile / 16;
             ++k)  // +32 bytes a k16 step: +2 in the address field
            wgmma_m64n256k16(acc, da + 2 * k, db + 2 * k, (kt | k) != 0 ? 1 : 0);
        wgmma_commit();
        wgmma_wait<1>();  // stage kt − 1's group done: its buffer is refilled next stage
    }
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 128; ++i) fence_operand(acc[i]);

    // accumulator i of j = i / 4: token 16·warp + lane / 4 (+ 8 for i % 4 >= 2), row 8j +
    // 2·(lane % 4) (+ 1 for odd i)
    const uint32_t warp = tid % 128 / 32, lane = tid % 32;
    float* y = p.y + uint64_t{g} * p.y_group + row0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const uint32_t t = tok0 + wg * 64 + warp * 16 + lane / 4 + 8 * h;
        if (t < p.n_tok) {
            const float sc = p.xs[t];
            float* yt = y + uint64_t{t} * p.y_stride;
#pragma unroll
            for (int j = 0; j < 32; ++j) {
                const uint32_t r = 8 * j + 2 * (lane % 4);
                if (row0 + r < p.rows) yt[r] = acc[4 * j + 2 * h] * sc;
                if (row0 + r + 1 < p.rows) yt[r + 1] = acc[4 * j + 2 * h + 1] * sc;
            }
        }
    }
#else
    (void)p;
#endif
}

// One thread per 4 codes: f16(q · d) with d the code's Q8_0 scale in the q8r order
// (matmul_mma.cu's half stages: byte `in` of half stage h has chunk ch = in / 4K, word
// k = in % 4K / 4, and scale 4·(h % 2) + (ch / 8)·K + k of int8 stage h / 2's 8 scales).
// __hmul of the exact q is q8h_mma_kernel's rounding, so these are its f16 weights.
__global__ void q8r_to_f16_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t cols,
                                  uint32_t K, uint64_t words, __half* __restrict__ out) {
    const uint64_t id = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (id >= words) return;
    const uint32_t per_row = cols / 4;
    const uint64_t r = id / per_row;
    const auto pos = static_cast<uint32_t>(id % per_row) * 4;
    const uint32_t h = pos / 128, in = pos % 128, ch = in / (4 * K), k = in % (4 * K) / 4;
    const uint8_t* row = w + r * row_bytes;
    const __half d = *reinterpret_cast<const __half*>(row + cols + 16 * (h / 2) +
                                                      2 * (4 * (h % 2) + ch / 8 * K + k));
    const uint32_t word = *reinterpret_cast<const uint32_t*>(row + pos);
    __half v[4];
#pragma unroll
    for (int e = 0; e < 4; ++e)
        v[e] = __hmul(__short2half_rn(static_cast<int8_t>(word >> (8 * e))), d);
    *reinterpret_cast<uint2*>(out + r * cols + pos) = *reinterpret_cast<const uint2*>(v);
}

}  // namespace

bool wgmma_available() {
#ifdef DS4_WGMMA
    static const bool ok = [] {
        if (!env_switch_on("DS4_CUDA_WGMMA") || device_count() == 0) return false;
        int dev = 0, major = 0, minor = 0;
        DS4_CUDA_CHECK(cudaGetDevice(&dev));
        DS4_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        DS4_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
        if (major != 9 || minor != 0 || device_smem_optin() < kSmem) return false;
        DS4_CUDA_CHECK(cudaFuncSetAttribute(f16_wgmma_kernel,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(kSmem)));
        return true;
    }();
    return ok;
#else
    return false;
#endif
}

void q8r_to_f16(const void* w, uint64_t rows, uint64_t cols, __half* out, cudaStream_t s) {
    if (cols % 256 != 0 || cols == 0)
        fail("cuda q8r_to_f16: ", cols, " columns, expected a multiple of 256");
    const uint64_t words = rows * cols / 4;
    if (words == 0) return;
    const uint32_t K = cols % 512 == 0 ? 4 : 2;
    q8r_to_f16_kernel<<<static_cast<unsigned>((words + 255) / 256), 256, 0, s>>>(
        static_cast<const uint8_t*>(w), cols / 32 * 34, static_cast<uint32_t>(cols), K, words, out);
    DS4_CUDA_CHECK_LAUNCH("q8r_to_f16_kernel");
}

void matmul_f16_wgmma(const __half* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok,
                      float* y, uint64_t y_stride, cudaStream_t s, const WgmmaGroups& g) {
    if (rows == 0 || n_tok == 0 || g.groups == 0) return;
    if (!wgmma_available())
        fail("cuda matmul_f16_wgmma: needs an sm_90 GPU and a build for sm_90a");
    const uint64_t xq_cols = g.xq_cols == 0 ? cols : g.xq_cols;
    if (cols % 256 != 0 || cols == 0 || xq_cols < cols * g.groups || xq_cols % 256 != 0)
        fail("cuda matmul_f16_wgmma: ", cols, " columns (", g.groups, " groups of ", xq_cols,
             "), expected multiples of 256");
    if (rows > 0x7fffffffu || cols > 0x7fffffffu)
        fail("cuda matmul_f16_wgmma: ", rows, " x ", cols, " is too large");
    if (reinterpret_cast<uintptr_t>(w) % 16 != 0 || reinterpret_cast<uintptr_t>(xq) % 16 != 0)
        fail("cuda matmul_f16_wgmma: weights and activations must be 16-byte aligned");
    const uint64_t n_pad = mma_padded_tokens(n_tok);
    const auto* bytes = static_cast<const uint8_t*>(xq);
    const Args a{w,
                 static_cast<uint32_t>(rows),
                 static_cast<uint32_t>(cols),
                 static_cast<const __half*>(xq),
                 xq_cols,
                 reinterpret_cast<const float*>(bytes + 2 * n_pad * xq_cols),
                 n_tok,
                 static_cast<uint32_t>(n_pad),
                 y,
                 y_stride,
                 g.y_group};
    const dim3 grid(static_cast<unsigned>((rows + kRowTile - 1) / kRowTile),
                    (n_tok + kTokTile - 1) / kTokTile, g.groups);
    launch_pdl("launch of f16_wgmma_kernel", f16_wgmma_kernel, grid, dim3(kThreads), kSmem, s, a);
}

}  // namespace ds4::cuda
