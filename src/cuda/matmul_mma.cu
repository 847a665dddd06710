// Tensor-core (int8 mma.sync) products of repacked Q8_0 weights with int8 activations;
// contract and numerics in matmul_mma.h.
//
// Block: 4 warps, a tile of kBM = 64 weight rows (16 per warp: one m16 fragment) by BN
// tokens (BN / 8 n8 fragments per warp), walking the columns one q8r span (512 or 256
// columns) at a time. Each span's codes go through shared memory, de-interleaved to
// [row][column] order with rows kPad words apart (stride = 4 mod 32 banks, so the
// fragment reads of 8 rows x 4 words hit 32 distinct banks); the activations' codes are
// in [token][column] order already. Per 32-column block, one mma per n8 fragment gives
// the exact s32 dot, scaled into f32 by d_w · d_x.
#include <cuda_fp16.h>

#include <cstdlib>
#include <string>
#include <string_view>

#include "cuda/check.h"
#include "cuda/matmul_mma.h"
#include "cuda/matmul_q8.h"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

constexpr uint32_t kWarps = 4;
constexpr uint32_t kBM = 16 * kWarps;
constexpr uint32_t kPad = 4;  // words after each smem row: stride ≡ 4 (mod 32) banks
constexpr uint32_t kMetaBytes = 8;  // per-block record of the activations (matmul_q8.h)

// D = A · B + 0, A 16x32 s8 (4 regs), B 32x8 s8 (2 regs), D 16x8 s32 (PTX ISA fragment
// layouts: a0/a2 rows g, a1/a3 rows g + 8; a0/a1 columns 4t..4t+3, a2/a3 16 + 4t..).
__device__ __forceinline__ void mma_s8(const uint32_t (&a)[4], uint32_t b0, uint32_t b1, int (&d)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %10, %10, %10};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
#else
    (void)a, (void)b0, (void)b1;
    d[0] = d[1] = d[2] = d[3] = 0;  // never launched below sm_80 (matmul_q8r_mma checks)
#endif
}

// f32 of an s32 block dot (|v| <= 32·127·128 < 2^22): placed in the mantissa of 1.5·2^23,
// exact; an integer add and a float add instead of the quarter-rate int-to-float convert.
__device__ __forceinline__ float s32_to_f32(int v) { return __int_as_float(0x4B400000 + v) - 12582912.0f; }

template <int K, int BN>
struct Smem {
    static constexpr uint32_t kSpan = 128 * K, kBlocks = kSpan / 32, kRow = kSpan / 4 + kPad;
    uint32_t a[kBM][kRow];
    uint32_t b[BN][kRow];
    float da[kBlocks][kBM];  // scales by block first: a fragment's rows / token pairs are adjacent
    float db[kBlocks][BN];
};

// One span of weights into shared memory. Lane-chunk l of a q8r span holds word k of
// columns 128k + 4l.. (kernels.h), i.e. word l % 8 of the span's 32-block 4k + l / 8:
// smem word 32k + l in [row][column] order. Rows past the matrix read as zeros.
template <int K, int BN>
__device__ __forceinline__ void load_weights(Smem<K, BN>& sm, const uint8_t* __restrict__ w, uint64_t row_bytes,
                                             uint32_t n_rows, uint32_t cols, uint32_t span) {
    constexpr uint32_t kPer = kBM * 32 / (kWarps * 32);  // chunks per thread
    uint32_t q[kPer][K];
#pragma unroll
    for (uint32_t i = 0; i < kPer; ++i) {
        const uint32_t c = threadIdx.x + i * kWarps * 32, r = c / 32, l = c % 32;
        const uint8_t* p = w + r * row_bytes + span * (128 * K) + 4 * K * l;
        if (r < n_rows) {
            if constexpr (K == 4) {
                const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
                q[i][0] = v.x, q[i][1] = v.y, q[i][2] = v.z, q[i][3] = v.w;
            } else {
                const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
                q[i][0] = v.x, q[i][1] = v.y;
            }
        } else {
#pragma unroll
            for (int k = 0; k < K; ++k) q[i][k] = 0;
        }
    }
#pragma unroll
    for (uint32_t i = 0; i < kPer; ++i) {
        const uint32_t c = threadIdx.x + i * kWarps * 32, r = c / 32, l = c % 32;
#pragma unroll
        for (int k = 0; k < K; ++k) sm.a[r][32 * k + l] = q[i][k];
    }
    // scales: half h = g·K + k of the span is block 4k + g
    for (uint32_t i = threadIdx.x; i < kBM * 4 * K; i += kWarps * 32) {
        const uint32_t r = i / (4 * K), h = i % (4 * K);
        float d = 0.f;
        if (r < n_rows)
            d = __half2float(__ldg(reinterpret_cast<const __half*>(w + r * row_bytes + cols) + span * 4 * K + h));
        sm.da[4 * (h % K) + h / K][r] = d;
    }
}

// One span of activations (tokens past n_tok read as zeros).
template <int K, int BN>
__device__ __forceinline__ void load_acts(Smem<K, BN>& sm, const uint8_t* __restrict__ xq, uint64_t tok_bytes,
                                          uint32_t n_tok, uint32_t cols, uint32_t span) {
    constexpr uint32_t kChunks = 128 * K / 16, kPer = BN * kChunks / (kWarps * 32);
    uint4 v[kPer];
#pragma unroll
    for (uint32_t i = 0; i < kPer; ++i) {
        const uint32_t c = threadIdx.x + i * kWarps * 32, t = c / kChunks, j = c % kChunks;
        v[i] = t < n_tok ? __ldg(reinterpret_cast<const uint4*>(xq + t * tok_bytes + span * (128 * K)) + j)
                         : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (uint32_t i = 0; i < kPer; ++i) {
        const uint32_t c = threadIdx.x + i * kWarps * 32, t = c / kChunks, j = c % kChunks;
        *reinterpret_cast<uint4*>(&sm.b[t][4 * j]) = v[i];
    }
    constexpr uint32_t kBlocks = Smem<K, BN>::kBlocks;
    for (uint32_t i = threadIdx.x; i < BN * kBlocks; i += kWarps * 32) {
        const uint32_t t = i / kBlocks, b = i % kBlocks;
        sm.db[b][t] = t < n_tok ? __ldg(reinterpret_cast<const float*>(xq + t * tok_bytes + cols +
                                                                       (span * kBlocks + b) * kMetaBytes))
                                : 0.f;
    }
}

template <int K, int BN>
__global__ void __launch_bounds__(kWarps * 32)
    q8r_mma_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t rows, uint32_t cols,
                   const uint8_t* __restrict__ xq, uint64_t tok_bytes, uint32_t n_tok, float* __restrict__ y,
                   uint64_t y_stride) {
    using S = Smem<K, BN>;
    constexpr int NF = BN / 8;
    extern __shared__ __align__(16) uint8_t raw[];
    S& sm = *reinterpret_cast<S*>(raw);
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
    const uint32_t row0 = blockIdx.x * kBM, tok0 = blockIdx.y * BN;
    const uint32_t n_rows = min(kBM, rows - row0), n_here = min(static_cast<uint32_t>(BN), n_tok - tok0);
    w += uint64_t{row0} * row_bytes;
    xq += uint64_t{tok0} * tok_bytes;

    float acc[NF][4];
#pragma unroll
    for (int f = 0; f < NF; ++f) acc[f][0] = acc[f][1] = acc[f][2] = acc[f][3] = 0.f;

    const uint32_t n_spans = cols / S::kSpan, ra = 16 * warp + g;
    for (uint32_t span = 0; span < n_spans; ++span) {
        load_weights<K, BN>(sm, w, row_bytes, n_rows, cols, span);
        load_acts<K, BN>(sm, xq, tok_bytes, n_here, cols, span);
        __syncthreads();
#pragma unroll 2
        for (uint32_t b = 0; b < S::kBlocks; ++b) {
            const uint32_t c = 8 * b + t4;
            const uint32_t a[4] = {sm.a[ra][c], sm.a[ra + 8][c], sm.a[ra][c + 4], sm.a[ra + 8][c + 4]};
            const float d0 = sm.da[b][ra], d1 = sm.da[b][ra + 8];
#pragma unroll
            for (int f = 0; f < NF; ++f) {
                int d[4];
                mma_s8(a, sm.b[8 * f + g][c], sm.b[8 * f + g][c + 4], d);
                const float2 e = *reinterpret_cast<const float2*>(&sm.db[b][8 * f + 2 * t4]);
                const float e0 = e.x, e1 = e.y;
                acc[f][0] = fmaf(s32_to_f32(d[0]), d0 * e0, acc[f][0]);
                acc[f][1] = fmaf(s32_to_f32(d[1]), d0 * e1, acc[f][1]);
                acc[f][2] = fmaf(s32_to_f32(d[2]), d1 * e0, acc[f][2]);
                acc[f][3] = fmaf(s32_to_f32(d[3]), d1 * e1, acc[f][3]);
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int f = 0; f < NF; ++f) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t r = ra + (i >= 2 ? 8 : 0), t = 8 * f + 2 * t4 + i % 2;
            if (r < n_rows && t < n_here) y[uint64_t{tok0 + t} * y_stride + row0 + r] = acc[f][i];
        }
    }
}

template <int K, int BN>
void launch(const uint8_t* w, uint64_t rows, uint64_t cols, const uint8_t* xq, uint32_t n_tok, float* y,
            uint64_t y_stride, cudaStream_t s) {
    constexpr size_t kSmem = sizeof(Smem<K, BN>);
    const dim3 grid(static_cast<unsigned>((rows + kBM - 1) / kBM), (n_tok + BN - 1) / BN);
    q8r_mma_kernel<K, BN><<<grid, kWarps * 32, kSmem, s>>>(w, cols / 32 * 34, static_cast<uint32_t>(rows),
                                                          static_cast<uint32_t>(cols), xq, q8_token_bytes(cols),
                                                          n_tok, y, y_stride);
    DS4_CUDA_CHECK_LAUNCH("q8r_mma_kernel");
}

template <int K, int BN>
void allow_smem() {
    DS4_CUDA_CHECK(cudaFuncSetAttribute(q8r_mma_kernel<K, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(sizeof(Smem<K, BN>))));
}

template <int K>
void launch_k(const uint8_t* w, uint64_t rows, uint64_t cols, const uint8_t* xq, uint32_t n_tok, float* y,
              uint64_t y_stride, cudaStream_t s) {
    if (n_tok <= 32)
        launch<K, 32>(w, rows, cols, xq, n_tok, y, y_stride, s);
    else
        launch<K, 64>(w, rows, cols, xq, n_tok, y, y_stride, s);
}

bool device_has_mma() {
    static const bool ok = [] {
        int dev = 0, major = 0;
        DS4_CUDA_CHECK(cudaGetDevice(&dev));
        DS4_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        return major >= 8;
    }();
    return ok;
}

}  // namespace

void mma_init() {
    static const bool done = [] {
        if (!device_has_mma()) return false;
        allow_smem<4, 32>();
        allow_smem<4, 64>();
        allow_smem<2, 32>();
        allow_smem<2, 64>();
        return true;
    }();
    (void)done;
}

bool mma_applies(uint32_t n_tok) {
    static const bool off = [] {
        const char* v = std::getenv("DS4_CUDA_MMA");
        return v != nullptr && std::string_view(v) == "0";
    }();
    static const uint32_t min_tok = [] {
        const char* v = std::getenv("DS4_CUDA_MMA_MIN");
        const unsigned long m = v != nullptr ? std::strtoul(v, nullptr, 10) : 0;
        return m >= kMmaMinTokens ? static_cast<uint32_t>(m) : kMmaMinTokens;
    }();
    return !off && n_tok >= min_tok && device_has_mma();
}

void matmul_q8r_mma(const void* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok, float* y,
                    uint64_t y_stride, cudaStream_t s) {
    if (rows == 0 || n_tok == 0) return;
    if (cols % 256 != 0 || cols == 0 || cols > 32768)
        fail("cuda matmul_q8r_mma: ", cols, " columns, expected a multiple of 256 up to 32768");
    if (rows > 0x7fffffffu) fail("cuda matmul_q8r_mma: ", rows, " rows, at most 2^31 - 1");
    if (reinterpret_cast<uintptr_t>(w) % 16 != 0 || reinterpret_cast<uintptr_t>(xq) % 16 != 0)
        fail("cuda matmul_q8r_mma: weights and activations must be 16-byte aligned");
    if (!device_has_mma()) fail("cuda matmul_q8r_mma: needs compute capability 8.0 or newer");
    mma_init();
    const auto* wb = static_cast<const uint8_t*>(w);
    const auto* xb = static_cast<const uint8_t*>(xq);
    if (cols % 512 == 0)
        launch_k<4>(wb, rows, cols, xb, n_tok, y, y_stride, s);
    else
        launch_k<2>(wb, rows, cols, xb, n_tok, y, y_stride, s);
}

}  // namespace ds4::cuda
