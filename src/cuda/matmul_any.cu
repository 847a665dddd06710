// The generic matrix product of the forward pass for what kernels.h's matmul() does not
// take: row lengths that are not a multiple of 256 (the reduced test models) in F32, F16,
// BF16 and Q8_0. One warp per weight row, the tokens looped inside; plain and correct,
// not fast (the full-size shapes all go to matmul()).
#include <cuda_fp16.h>

#include "cuda/check.h"
#include "cuda/device_math.cuh"
#include "cuda/forward_kernels.h"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

__device__ inline float weight_at(GgmlType type, const uint8_t* row, uint64_t c) {
    switch (type) {
        case GgmlType::F32: return reinterpret_cast<const float*>(row)[c];
        case GgmlType::F16: return __half2float(reinterpret_cast<const __half*>(row)[c]);
        case GgmlType::BF16: {
            const uint32_t bits = reinterpret_cast<const uint16_t*>(row)[c];
            return __uint_as_float(bits << 16);
        }
        case GgmlType::Q8_0: {
            const uint8_t* blk = row + (c / 32) * 34;
            const float d = __half2float(__ushort_as_half(static_cast<unsigned short>(blk[0] | (blk[1] << 8))));
            return d * static_cast<float>(static_cast<int8_t>(blk[2 + c % 32]));
        }
        default: return 0.0f;
    }
}

__global__ void matmul_any_kernel(GgmlType type, const uint8_t* w, uint64_t row_bytes, uint64_t rows,
                                  uint64_t cols, const float* x, uint64_t x_stride, float* y, uint64_t y_stride,
                                  uint32_t n_tok) {
    const uint64_t r = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
    const uint32_t lane = threadIdx.x % 32;
    if (r >= rows) return;
    const uint8_t* row = w + r * row_bytes;
    for (uint32_t t = 0; t < n_tok; ++t) {
        const float* xt = x + t * x_stride;
        float acc = 0.0f;
        for (uint64_t c = lane; c < cols; c += 32) acc = fmaf(weight_at(type, row, c), xt[c], acc);
        acc = dev::warp_sum(acc);
        if (lane == 0) y[t * y_stride + r] = acc;
    }
}

}  // namespace

bool matmul_any_supported(GgmlType t) {
    return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16 || t == GgmlType::Q8_0;
}

void matmul_any(GgmlType type, const void* w, uint64_t row_bytes, uint64_t rows, uint64_t cols, const float* x,
                uint64_t x_stride, float* y, uint64_t y_stride, uint32_t n_tok, cudaStream_t s) {
    if (!matmul_any_supported(type))
        fail("cuda matmul: weight type ", ggml_type_name(type), " with ", cols,
             " columns is not supported (K-quants and IQ2_XXS need a multiple of 256)");
    if (rows == 0 || n_tok == 0) return;
    constexpr unsigned kThreads = 256;
    const auto blocks = static_cast<unsigned>((rows * 32 + kThreads - 1) / kThreads);
    matmul_any_kernel<<<blocks, kThreads, 0, s>>>(type, static_cast<const uint8_t*>(w), row_bytes, rows, cols, x,
                                                  x_stride, y, y_stride, n_tok);
    DS4_CUDA_CHECK_LAUNCH("matmul_any_kernel");
}

}  // namespace ds4::cuda
