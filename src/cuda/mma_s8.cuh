// The tensor-core building blocks of matmul_mma.cu (dense Q8_0) and
// matmul_mma_experts.cu (routed experts): the mma.sync instructions (s8, f16), cp.async copies into
// shared memory, the exact s32 -> f32 of a block dot, and the host's capability check.
// Below sm_80 the device functions compile to placeholders: the launchers refuse such
// cards (device_has_mma), so they never run there.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/check.h"

namespace ds4::cuda::mma {

// D = A · B, A 16x32 s8 (4 regs), B 32x8 s8 (2 regs), D 16x8 s32 (PTX ISA fragment
// layouts: a0/a2 rows g, a1/a3 rows g + 8; a0/a1 k = 4t..4t+3, a2/a3 16 + 4t..; b0 k =
// 4t.., b1 16 + 4t.., column g; d0/d1 row g, d2/d3 row g + 8, columns 2t, 2t + 1).
__device__ __forceinline__ void mma_s8(uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1,
                                       int (&d)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %10, %10, %10};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0));
#else
    (void)a0, (void)a1, (void)a2, (void)a3, (void)b0, (void)b1;
    d[0] = d[1] = d[2] = d[3] = 0;
#endif
}

// c += A · B (same fragments as mma_s8; the s32 accumulator is exact while it fits).
__device__ __forceinline__ void mma_s8_acc(uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                           uint32_t b1, int (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void)a0, (void)a1, (void)a2, (void)a3, (void)b0, (void)b1, (void)c;
#endif
}

// c += A · B, A 16x16 f16 (4 regs of 2 values), B 16x8 f16 (2 regs), c 16x8 f32 (a0/a2
// rows g, a1/a3 rows g + 8; a0/a1 k = 2t, 2t + 1, a2/a3 k = 8 + 2t, 9 + 2t; b0 k = 2t, 2t + 1,
// b1 8 + 2t, 9 + 2t, column g; the low half of a register is the lower k). Not volatile:
// a pure function of its operands, free to be scheduled.
__device__ __forceinline__ void mma_f16_acc(uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                            uint32_t b1, float (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void)a0, (void)a1, (void)a2, (void)a3, (void)b0, (void)b1, (void)c;
#endif
}

// mma_f16_acc with bf16 operands (the same fragment layout).
__device__ __forceinline__ void mma_bf16_acc(uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                             uint32_t b1, float (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void)a0, (void)a1, (void)a2, (void)a3, (void)b0, (void)b1, (void)c;
#endif
}

// 16 bytes global -> shared, asynchronously; src_bytes 0 fills zeros (rows past the end).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, uint32_t src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(src_bytes));
#else
    (void)dst, (void)src, (void)src_bytes;
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
#endif
}

// f32 of an s32 block dot (|v| < 2^22): placed in the mantissa of 1.5·2^23, exact; an
// integer add and a float add instead of the quarter-rate int-to-float convert.
__device__ __forceinline__ float s32_to_f32(int v) { return __int_as_float(0x4B400000 + v) - 12582912.0f; }

// The current device runs mma.sync s8 (compute capability 8.0 or newer); asked once.
inline bool device_has_mma() {
    static const bool ok = [] {
        int dev = 0, major = 0;
        DS4_CUDA_CHECK(cudaGetDevice(&dev));
        DS4_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        return major >= 8;
    }();
    return ok;
}

}  // namespace ds4::cuda::mma
