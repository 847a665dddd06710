// Device helpers shared by the forward kernels: the QAT roundings of cpu/numerics.cpp
// (bit-for-bit the same rules) and block reductions.
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

namespace ds4::cuda::dev {

__device__ inline float pow2_ceil(float t) {
    const uint32_t bits = __float_as_uint(t);
    const int exp = static_cast<int>((bits >> 23) & 0xff);
    const int e = exp - 127 + ((bits & 0x7fffff) != 0 ? 1 : 0);
    return __uint_as_float(static_cast<uint32_t>(e + 127) << 23);
}

__device__ inline float e4m3_round(float v) {
    const float a = fabsf(v);
    if (a == 0.0f) return v;
    const int e = a < 0x1p-6f ? -6 : ilogbf(a);
    const float step = ldexpf(1.0f, e - 3);
    const float q = rintf(a / step) * step;
    return copysignf(q, v);
}

__device__ inline float e2m1_round(float v) {
    constexpr float kGrid[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    constexpr float kMids[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    const float a = fabsf(v);
    int idx = 0;
#pragma unroll
    for (int k = 0; k < 7; ++k) idx += kMids[k] < a ? 1 : 0;
    if (a == 0.75f || a == 1.75f || a == 3.5f) ++idx;
    if (v == 0.0f) return 0.0f;
    float g = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) g = idx == k ? kGrid[k] : g;
    return v < 0 ? -g : g;
}

__device__ inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ inline float warp_sum(float v) {
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
__device__ inline double warp_sum(double v) {
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
__device__ inline float warp_max(float v) {
    for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// Block-wide sum / max (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
template <typename T>
__device__ inline T block_sum(T v, T* shared32) {
    v = warp_sum(v);
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < blockDim.x / 32 ? shared32[lane] : T(0);
        v = warp_sum(v);
        if (lane == 0) shared32[0] = v;
    }
    __syncthreads();
    const T r = shared32[0];
    __syncthreads();
    return r;
}

__device__ inline float block_max(float v, float* shared32) {
    v = warp_max(v);
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < blockDim.x / 32 ? shared32[lane] : -INFINITY;
        v = warp_max(v);
        if (lane == 0) shared32[0] = v;
    }
    __syncthreads();
    const float r = shared32[0];
    __syncthreads();
    return r;
}

// The power of two of the half-precision tensor-core paths' activations (matmul_mma.h,
// experts_wgmma.h): x · 2^e puts the largest |x| (amax) in [2^14, 2^15), below f16's
// largest finite value; 0 when amax is zero, Inf or NaN.
__device__ inline int half_exponent(float amax) {
    if (!(amax > 0.f && amax <= 3.4e38f)) return 0;
    int ex = 0;  // amax < 2^ex
    frexpf(amax, &ex);
    return min(15 - ex, 126);
}

// 1 / sqrt(mean(x²) + eps) with the f32 squares summed in double (cpu::rms_inv), by the block.
__device__ inline float block_rms_inv(const float* x, uint64_t n, float eps, double* shared32) {
    double sum = 0;
    for (uint64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float sq = x[i] * x[i];
        sum += sq;
    }
    sum = block_sum(sum, shared32);
    const auto mean = static_cast<float>(sum / static_cast<double>(n));
    return 1.0f / sqrtf(mean + eps);
}

// cos/sin of θ = f32(pos)·ω, evaluated in double and rounded (cpu::RopeAngles::compute).
__device__ inline void rope_cs(float pos, float omega, float& c, float& s) {
    const float theta = pos * omega;
    c = static_cast<float>(cos(static_cast<double>(theta)));
    s = static_cast<float>(sin(static_cast<double>(theta)));
}

// Rotates the pair p[0], p[1] by the angle of cos c, sin s (RoPE; the inverse passes −s),
// each product and sum rounded on its own as the CPU's rope.
__device__ inline void rotate_pair(float* p, float c, float s) {
    const float re = p[0], im = p[1];
    p[0] = __fsub_rn(__fmul_rn(re, c), __fmul_rn(im, s));
    p[1] = __fadd_rn(__fmul_rn(re, s), __fmul_rn(im, c));
}

// x·H in place on buf[0..n) (n a power of two), by the whole block: the butterflies in
// double and in the CPU's order (the same sums), the 1/sqrt(n) scale left to the caller's
// store. Ends synchronized.
__device__ inline void block_hadamard(double* buf, uint32_t n) {
    for (uint32_t len = 1; len < n; len <<= 1) {
        for (uint32_t k = threadIdx.x; k < n / 2; k += blockDim.x) {
            const uint32_t j = (k / len) * 2 * len + k % len;
            const double a = buf[j], b = buf[j + len];
            buf[j] = a + b;
            buf[j + len] = a - b;
        }
        __syncthreads();
    }
}
__device__ inline float hadamard_scale(uint32_t n) { return static_cast<float>(1.0 / sqrt(static_cast<double>(n))); }

}  // namespace ds4::cuda::dev
