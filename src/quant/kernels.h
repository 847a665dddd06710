// Run-time selected kernel tables. scalar() is the reference; avx2()/avx512() exist
// when compiled in and the CPU supports them (CPUID). best() is what the engine uses.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/blocks.h"

namespace ds4::quant {

enum class Isa { Scalar, AVX2, AVX512 };
const char* isa_name(Isa isa);

struct Kernels {
    Isa isa;
    // dequantize n values (multiple of the block size) to f32
    void (*dequant_q8_0)(const BlockQ8_0* x, float* y, int64_t n);
    void (*dequant_q2_K)(const BlockQ2K* x, float* y, int64_t n);
    void (*dequant_q4_K)(const BlockQ4K* x, float* y, int64_t n);
    void (*dequant_iq2_xxs)(const BlockIQ2XXS* x, float* y, int64_t n);
    void (*dequant_f16)(const uint16_t* x, float* y, int64_t n);
    // activation quantizers
    void (*quantize_q8_K)(const float* x, BlockQ8K* y, int64_t n);
    void (*quantize_q8_0f)(const float* x, BlockQ8_0F* y, int64_t n);
    // dots (one row)
    float (*dot_q2_K_q8_K)(const BlockQ2K* w, const BlockQ8K* x, int64_t n);
    float (*dot_q4_K_q8_K)(const BlockQ4K* w, const BlockQ8K* x, int64_t n);
    float (*dot_iq2_xxs_q8_K)(const BlockIQ2XXS* w, const BlockQ8K* x, int64_t n);
    float (*dot_q8_0_q8_0f)(const BlockQ8_0* w, const BlockQ8_0F* x, int64_t n);
    float (*dot_f16_f32)(const uint16_t* w, const float* x, int64_t n);
    float (*dot_f32_f32)(const float* w, const float* x, int64_t n);
    // out[r] = dot_q8_0_q8_0f(w[r], x, n) for r < kDotRows, bit for bit: the rows share
    // the activation loads and the activation-scale work (the decode matvec shape). Fastest
    // for consecutive rows of one matrix: the AVX2 kernel prefetches the bytes after
    // w[kDotRows - 1]'s row as the next call's rows.
    void (*dot_q8_0_q8_0f_rows)(const BlockQ8_0* const* w, const BlockQ8_0F* x, int64_t n, float* out);
};

// Rows per call of Kernels::dot_q8_0_q8_0f_rows.
constexpr int kDotRows = 4;

const Kernels& scalar_kernels();
const Kernels* avx2_kernels();    // nullptr when not compiled in or not supported
const Kernels* avx512_kernels();  // nullptr when not compiled in or not supported
// Fastest supported (on AVX-512 hosts: the AVX-512 table with the AVX2 Q4_K dot, which
// measured faster; see kernels.cpp). Env DS4_ISA=scalar|avx2|avx512
// pins one ISA's table instead.
const Kernels& best_kernels();
std::vector<const Kernels*> available_kernels();  // scalar first

}  // namespace ds4::quant
