#include "cuda/check.h"
#include "cuda/mtp_kernels.h"

namespace ds4::cuda {

namespace {

__global__ void combine_kernel(const float* eproj, const float* hproj, float* x, uint64_t total,
                               uint32_t H, uint32_t dim) {
    const uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const uint64_t d = i % dim, s = i / (uint64_t{H} * dim);
    x[i] = __fadd_rn(eproj[s * dim + d], hproj[i]);
}

}  // namespace

void mtp_combine(const float* eproj, const float* hproj, float* x, uint32_t n, uint32_t H,
                 uint32_t dim, cudaStream_t s) {
    const uint64_t total = uint64_t{n} * H * dim;
    if (total == 0) return;
    constexpr unsigned kThreads = 256;
    combine_kernel<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0, s>>>(
        eproj, hproj, x, total, H, dim);
    DS4_CUDA_CHECK(cudaGetLastError());
}

}  // namespace ds4::cuda
