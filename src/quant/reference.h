// Scalar reference implementations: the numbers every fast path (AVX2, AVX-512, CUDA)
// must reproduce. Straight transcriptions of the formulas in spec formats.md §3–§4.
#pragma once

#include <cstdint>

#include "quant/blocks.h"

namespace ds4::quant::ref {

// dequantize n values (multiple of the block size)
void dequant_q8_0(const BlockQ8_0* x, float* y, int64_t n);
void dequant_q2_K(const BlockQ2K* x, float* y, int64_t n);
void dequant_q4_K(const BlockQ4K* x, float* y, int64_t n);
void dequant_iq2_xxs(const BlockIQ2XXS* x, float* y, int64_t n);
void dequant_q8_K(const BlockQ8K* x, float* y, int64_t n);
void dequant_f16(const uint16_t* x, float* y, int64_t n);
void dequant_bf16(const uint16_t* x, float* y, int64_t n);

// activation quantizers (formats.md §3.3 and §3.7 item 3)
void quantize_q8_K(const float* x, BlockQ8K* y, int64_t n);
void quantize_q8_0f(const float* x, BlockQ8_0F* y, int64_t n);

// weight quantizers (formats.md §4.4); `w` = importance weights or null
void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t n);
void quantize_q2_K(const float* x, BlockQ2K* y, int64_t n, const float* w);
void quantize_q4_K(const float* x, BlockQ4K* y, int64_t n, const float* w);
void quantize_iq2_xxs(const float* x, BlockIQ2XXS* y, int64_t n, const float* w);

}  // namespace ds4::quant::ref
