// Device side of act_rows.h: 8 consecutive values of a quantizer's row.
#pragma once

#include <cuda_runtime.h>

#include "cuda/act_rows.h"

namespace ds4::cuda::dev {

// weighted_swiglu's value (forward_kernels.cu uses this function too: the same bits).
__device__ __forceinline__ float weighted_swiglu_value(float gv, float uv, float w, float limit) {
    if (limit > 0) {
        uv = fminf(fmaxf(uv, -limit), limit);
        gv = fminf(gv, limit);
    }
    const float silu = gv / (1.0f + expf(-gv));
    return w * __fmul_rn(silu, uv);
}

// false: row i is past *m_dev (skip it)
__device__ __forceinline__ bool act_row_live(const ActRows& r, uint32_t i) {
    return r.m_dev == nullptr || i < *r.m_dev;
}

// Values col .. col + 7 of row i (col a multiple of 4; x 16-byte aligned, stride a
// multiple of 4).
__device__ __forceinline__ void load_act8(const float* x, uint64_t x_stride, const ActRows& r, uint32_t i,
                                          uint64_t col, float (&v)[8]) {
    const uint64_t row = r.src != nullptr ? r.src[i] : i;
    const float* p = x + row * x_stride + col;
    const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    if (r.up == nullptr) return;
    const float* q = r.up + row * x_stride + col;
    const float4 c = *reinterpret_cast<const float4*>(q), d = *reinterpret_cast<const float4*>(q + 4);
    const float u[8] = {c.x, c.y, c.z, c.w, d.x, d.y, d.z, d.w};
    const float w = r.w[r.widx[i]];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = weighted_swiglu_value(v[j], u[j], w, r.limit);
}

}  // namespace ds4::cuda::dev
