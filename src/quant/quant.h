// Tensor types: dequantize, quantize (reference quantizers, formats.md §4.4) and dot
// products (formats.md §3.7). Every function has a scalar reference; kernels.h exposes
// the per-ISA variants (AVX2 / AVX-512) which must give the same numbers.
#pragma once

#include <cstdint>
#include <span>

#include "gguf/ggml_types.h"
#include "quant/blocks.h"

namespace ds4::quant {

// Types this engine can (de)quantize: F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS, Q8_K
// (dequant only) and I32 (as exact integers converted to float).
bool can_dequantize(GgmlType t);
bool can_quantize(GgmlType t);  // F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS

// n values (a multiple of the type's block size) from `src` to f32.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);

// Quantizes one row of n values; returns bytes written (ggml_row_bytes(t, n)).
// `importance` (n values, may be null) is the imatrix row: used by Q2_K, Q4_K and
// IQ2_XXS (IQ2_XXS falls back to x² weights when null, like ds4's quantizer); ignored
// by the other types.
size_t quantize_row(GgmlType t, const float* src, void* dst, int64_t n,
                    const float* importance = nullptr);

// Activation quantization.
void quantize_row_q8_K(const float* x, BlockQ8K* y, int64_t n);    // n % 256 == 0
void quantize_row_q8_0f(const float* x, BlockQ8_0F* y, int64_t n);  // n % 32 == 0

// Dot products of one weight row (n values) with quantized / float activations.
float dot_q8_K(GgmlType w_type, const void* w, const BlockQ8K* x, int64_t n);  // Q2_K, Q4_K, IQ2_XXS
float dot_q8_0f(const BlockQ8_0* w, const BlockQ8_0F* x, int64_t n);
// Any dequantizable weight type against f32: F16 accumulates in f32, F32 in double,
// block types dequantize then accumulate in f32.
float dot_f32(GgmlType w_type, const void* w, const float* x, int64_t n);

}  // namespace ds4::quant
