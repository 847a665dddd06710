// Directional steering kernel and its holder (see steering.h).
#include "cuda/steering.h"

#include "ds4/error.h"

namespace ds4::cuda {

namespace {

constexpr int kThreads = 256;

// One block per row: dot = Σ y·d (per-thread partial sums, then a shared-memory tree),
// then y -= (scale·dot)·d.
__global__ void steer_kernel(float* y, const float* d, uint32_t n, float scale) {
    __shared__ float part[kThreads];
    float* yr = y + uint64_t{blockIdx.x} * n;
    float acc = 0.0f;
    for (uint32_t i = threadIdx.x; i < n; i += kThreads)
        acc = __fadd_rn(acc, __fmul_rn(yr[i], d[i]));
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = kThreads / 2; w > 0; w /= 2) {
        if (threadIdx.x < w)
            part[threadIdx.x] = __fadd_rn(part[threadIdx.x], part[threadIdx.x + w]);
        __syncthreads();
    }
    const float coeff = __fmul_rn(scale, part[0]);
    for (uint32_t i = threadIdx.x; i < n; i += kThreads)
        yr[i] = __fsub_rn(yr[i], __fmul_rn(coeff, d[i]));
}

}  // namespace

void steer_rows(float* y, uint64_t rows, const float* d, uint32_t n, float scale, cudaStream_t s) {
    if (rows == 0 || n == 0) return;
    if (rows > 0x7fffffffu) fail("cuda steering: ", rows, " rows in one launch");
    steer_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(y, d, n, scale);
    DS4_CUDA_CHECK(cudaGetLastError());
}

DeviceSteering::DeviceSteering(const cpu::SteeringDirections& dirs, float attn_scale,
                               float ffn_scale)
    : dirs_(to_device(dirs.values())),
      n_layer_(dirs.n_layer()),
      n_embd_(dirs.n_embd()),
      attn_(attn_scale),
      ffn_(ffn_scale) {}

void DeviceSteering::apply(uint32_t il, cpu::SteeringSite site, float* y, uint32_t rows,
                           uint32_t n_embd, cudaStream_t s) const {
    if (!enabled(site)) return;
    if (n_embd != n_embd_ || il >= n_layer_)
        fail("steering: directions are ", n_layer_, " x ", n_embd_, ", the model needs layer ", il,
             " of width ", n_embd);
    steer_rows(y, rows, dirs_.data() + uint64_t{il} * n_embd_, n_embd_, scale(site), s);
}

}  // namespace ds4::cuda
