// Quantized matrix-vector products: one warp per weight row. Each lane walks "items"
// (a slice of a quant block whose bytes it loads with the widest aligned loads the
// layout allows), dequantizes them in registers exactly as quant/reference_dequant.cpp
// does, and dots them with up to 8 f32 activation rows, so one pass over the weights
// serves a small batch. Bandwidth comes from many independent items per warp in flight.
#include <cuda_fp16.h>

#include <algorithm>
#include <mutex>

#include "cuda/check.h"
#include "cuda/kernels.h"
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

__device__ __forceinline__ uint32_t ld_u16(const uint8_t* p) {
    return __ldg(reinterpret_cast<const unsigned short*>(p));
}
__device__ __forceinline__ uint32_t ld_u32(const uint8_t* p) {
    return __ldg(reinterpret_cast<const unsigned int*>(p));
}
__device__ __forceinline__ uint4 ld_u128(const uint8_t* p) {
    return __ldg(reinterpret_cast<const uint4*>(p));
}

// Each format: kBlockValues values in kBytes bytes, split into kItems items of kValues
// values; decode(blk, part, v) fills v, col(part, k) is v[k]'s column inside the block.
struct F32Format {
    static constexpr int kBlockValues = 4, kBytes = 16, kItems = 1, kValues = 4;
    __device__ static void decode(const uint8_t* blk, int, float (&v)[kValues]) {
        const uint4 q = ld_u128(blk);
        v[0] = __uint_as_float(q.x);
        v[1] = __uint_as_float(q.y);
        v[2] = __uint_as_float(q.z);
        v[3] = __uint_as_float(q.w);
    }
    __device__ static int col(int, int k) { return k; }
};

struct F16Format {
    static constexpr int kBlockValues = 8, kBytes = 16, kItems = 1, kValues = 8;
    __device__ static void decode(const uint8_t* blk, int, float (&v)[kValues]) {
        const uint4 q = ld_u128(blk);
        const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = f16(w[i] & 0xffff);
            v[2 * i + 1] = f16(w[i] >> 16);
        }
    }
    __device__ static int col(int, int k) { return k; }
};

struct Q8_0Format {  // 34-byte blocks: only 2-byte alignment is guaranteed
    static constexpr int kBlockValues = 32, kBytes = 34, kItems = 2, kValues = 16;
    __device__ static void decode(const uint8_t* blk, int part, float (&v)[kValues]) {
        const float d = f16(ld_u16(blk));
        const uint8_t* qs = blk + 2 + 16 * part;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const uint32_t pair = ld_u16(qs + 2 * i);
            v[2 * i] = d * static_cast<float>(static_cast<int8_t>(pair & 0xff));
            v[2 * i + 1] = d * static_cast<float>(static_cast<int8_t>(pair >> 8));
        }
    }
    __device__ static int col(int part, int k) { return 16 * part + k; }
};

// Q2_K item (h, c): the 16 qs bytes 32h + 16c.. hold columns 128h + 32s + 16c + l
// (l < 16) at bit shift 2s, with sub-block scale 8h + 2s + c.
struct Q2KFormat {
    static constexpr int kBlockValues = 256, kBytes = 84, kItems = 4, kValues = 64;
    __device__ static void decode(const uint8_t* blk, int part, float (&v)[kValues]) {
        const int h = part / 2, c = part % 2;
        const uint32_t dd = ld_u32(blk + 80);
        const float d = f16(dd & 0xffff), dmin = f16(dd >> 16);
        uint32_t q[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) q[i] = ld_u32(blk + 16 + 32 * h + 16 * c + 4 * i);
#pragma unroll
        for (int s = 0; s < 4; ++s) {
            const uint32_t sc = __ldg(blk + 8 * h + 2 * s + c);
            const float dl = d * static_cast<float>(sc & 15);
            const float ml = dmin * static_cast<float>(sc >> 4);
#pragma unroll
            for (int l = 0; l < 16; ++l) {
                const uint32_t code = (q[l / 4] >> (8 * (l % 4) + 2 * s)) & 3;
                v[16 * s + l] = dl * static_cast<float>(code) - ml;
            }
        }
    }
    __device__ static int col(int part, int k) {
        return 128 * (part / 2) + 32 * (k / 16) + 16 * (part % 2) + k % 16;
    }
};

// Q4_K item p: qs bytes 32p.. (16-byte aligned) hold sub-block 2p in the low nibbles
// and 2p + 1 in the high nibbles: columns 64p .. 64p + 63.
struct Q4KFormat {
    static constexpr int kBlockValues = 256, kBytes = 144, kItems = 4, kValues = 64;
    __device__ static void scale_min(const uint8_t* sc, int j, int& scale, int& min) {
        if (j < 4) {
            scale = sc[j] & 63;
            min = sc[j + 4] & 63;
        } else {
            scale = (sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4);
            min = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        }
    }
    __device__ static void decode(const uint8_t* blk, int part, float (&v)[kValues]) {
        const uint32_t dd = ld_u32(blk);
        const float d = f16(dd & 0xffff), dmin = f16(dd >> 16);
        uint32_t scw[3];
#pragma unroll
        for (int i = 0; i < 3; ++i) scw[i] = ld_u32(blk + 4 + 4 * i);
        const auto* sc = reinterpret_cast<const uint8_t*>(scw);
        int s0 = 0, m0 = 0, s1 = 0, m1 = 0;
        scale_min(sc, 2 * part, s0, m0);
        scale_min(sc, 2 * part + 1, s1, m1);
        const float dl0 = d * static_cast<float>(s0), ml0 = dmin * static_cast<float>(m0);
        const float dl1 = d * static_cast<float>(s1), ml1 = dmin * static_cast<float>(m1);
        const uint4 a = ld_u128(blk + 16 + 32 * part);
        const uint4 b = ld_u128(blk + 32 + 32 * part);
        const uint32_t w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
        for (int i = 0; i < 32; ++i) {
            const uint32_t byte = (w[i / 4] >> (8 * (i % 4))) & 0xff;
            v[i] = dl0 * static_cast<float>(byte & 15) - ml0;
            v[32 + i] = dl1 * static_cast<float>(byte >> 4) - ml1;
        }
    }
    __device__ static int col(int part, int k) { return 64 * part + k; }
};

// IQ2_XXS item g: one 32-value group (8 bytes: 4 grid indices, 4×7 sign bits, 4-bit scale).
struct IQ2XXSFormat {
    static constexpr int kBlockValues = 256, kBytes = 66, kItems = 8, kValues = 32;
    __device__ static void decode(const uint8_t* blk, int part, float (&v)[kValues]) {
        const float d = f16(ld_u16(blk));
        const uint8_t* q = blk + 2 + 8 * part;
        const uint32_t w0 = ld_u16(q) | (ld_u16(q + 2) << 16);
        const uint32_t w1 = ld_u16(q + 4) | (ld_u16(q + 6) << 16);
        const float gscale = d * (0.5f + static_cast<float>(w1 >> 28)) * 0.25f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const uint64_t grid = g_iq2_grid[(w0 >> (8 * k)) & 0xff];
            const uint32_t signs = g_iq2_signs[(w1 >> (7 * k)) & 127];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const float mag = static_cast<float>((grid >> (8 * j)) & 0xff);
                v[8 * k + j] = gscale * mag * ((signs >> j) & 1 ? -1.f : 1.f);
            }
        }
    }
    __device__ static int col(int part, int k) { return 32 * part + k; }
};

template <class F, int NT>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matmul_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t rows, uint32_t n_blocks,
                  const float* __restrict__ x, uint64_t x_stride, float* __restrict__ y, uint64_t y_stride) {
    const uint32_t lane = threadIdx.x % 32;
    const uint32_t row = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    if (row >= rows) return;
    const uint8_t* wr = w + row * row_bytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.f;
    const uint32_t items = n_blocks * F::kItems;
#pragma unroll 2
    for (uint32_t i = lane; i < items; i += 32) {
        const uint32_t b = i / F::kItems;
        const int part = static_cast<int>(i % F::kItems);
        float v[F::kValues];
        F::decode(wr + uint64_t{b} * F::kBytes, part, v);
        const float* xb = x + uint64_t{b} * F::kBlockValues;
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            float s = 0.f;
#pragma unroll
            for (int k = 0; k < F::kValues; ++k) s += v[k] * __ldg(xb + t * x_stride + F::col(part, k));
            acc[t] += s;
        }
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        float a = acc[t];
#pragma unroll
        for (int off = 16; off > 0; off /= 2) a += __shfl_xor_sync(0xffffffffu, a, off);
        if (lane == 0) y[t * y_stride + row] = a;
    }
}

void upload_iq2_tables() {
    static std::once_flag once;
    std::call_once(once, [] {
        DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_iq2_grid, quant::kIq2Grid, sizeof(g_iq2_grid)));
        DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_iq2_signs, quant::kIq2Signs, sizeof(g_iq2_signs)));
    });
}

template <class F, int NT>
void launch_nt(const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
               uint64_t y_stride, cudaStream_t s) {
    const auto grid = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
    const uint64_t n_blocks = cols / F::kBlockValues;
    matmul_kernel<F, NT><<<grid, kWarpsPerBlock * 32, 0, s>>>(
        static_cast<const uint8_t*>(w), n_blocks * F::kBytes, static_cast<uint32_t>(rows),
        static_cast<uint32_t>(n_blocks), x, x_stride, y, y_stride);
    DS4_CUDA_CHECK_LAUNCH("matmul_kernel");
}

template <class F>
void launch(const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
            uint64_t y_stride, uint32_t n_tok, cudaStream_t s) {
    if (cols % F::kBlockValues != 0)
        fail("cuda matmul: ", cols, " columns is not a multiple of the block size ", F::kBlockValues);
    if (F::kBytes % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 != 0)
        fail("cuda matmul: weight pointer is not 16-byte aligned");
    // Chunks of 8, then 4, then the 1-3 left: each kernel instance reads exactly its
    // own number of activation rows.
    for (uint32_t t0 = 0; t0 < n_tok;) {
        const uint32_t left = n_tok - t0;
        const uint32_t nt = left >= 8 ? 8 : left >= 4 ? 4 : left;
        const float* xt = x + t0 * x_stride;
        float* yt = y + t0 * y_stride;
        switch (nt) {
            case 1: launch_nt<F, 1>(w, rows, cols, xt, x_stride, yt, y_stride, s); break;
            case 2: launch_nt<F, 2>(w, rows, cols, xt, x_stride, yt, y_stride, s); break;
            case 3: launch_nt<F, 3>(w, rows, cols, xt, x_stride, yt, y_stride, s); break;
            case 4: launch_nt<F, 4>(w, rows, cols, xt, x_stride, yt, y_stride, s); break;
            default: launch_nt<F, kMaxTok>(w, rows, cols, xt, x_stride, yt, y_stride, s); break;
        }
        t0 += nt;
    }
}

}  // namespace

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

}  // namespace ds4::cuda
