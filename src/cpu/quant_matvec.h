// Numerics::Fast products (see matvec.h): activations quantized once per product, SIMD
// integer dots per weight row (quant/kernels.h best_kernels()).
#pragma once

#include <cstdint>

#include "cpu/matvec.h"
#include "cpu/tensor_view.h"
#include "cpu/thread_pool.h"
#include "cpu/weight_set.h"
#include "quant/blocks.h"

namespace ds4::cpu {

// The numerics a model should run with: Fast when any bound weight is block-quantized
// (a ds4 q2/q4/q8_0 GGUF), Exact for models held entirely in F32/F16 (the goldens,
// f32/f16 conversions), whose products then match the golden semantics. Callers apply it
// with NumericsScope around eval(); the thread-local default is Fast.
Numerics default_numerics(const ModelWeights& w);

// Weight types whose rows dot against a Q8_K activation row (Q2_K, Q4_K, IQ2_XXS).
bool is_q8K_weight(GgmlType t);

// Y[t][i] = W[row0 + i]·X[t] for i < n_rows, t < n_tok, with the Fast numerics of
// w.type (has_fast_path(w.type) must hold). The activation quantization runs once per
// token on the calling thread into a thread-local buffer that grows to the largest
// product seen, so steady-state calls do not allocate.
void fast_matmul(const TensorView& w, uint64_t row0, uint64_t n_rows, uint32_t n_tok, const float* x,
                 uint64_t x_stride, float* y, uint64_t y_stride, ThreadPool* pool);

// n (multiple of 256) values → n / 256 Q8_K blocks (model.md §11.2).
void quantize_q8K(const float* x, quant::BlockQ8K* y, uint64_t n);

// Row r of a Q2_K / Q4_K / IQ2_XXS weight dotted with a Q8_K activation row of w.in().
float dot_row_q8K(const TensorView& w, uint64_t r, const quant::BlockQ8K* x);

}  // namespace ds4::cpu
