// Matrix-vector products against one weight tensor, dispatched on its storage type.
//
// Semantics are the plain product y = W·x of spec model.md §3.5 (golden mode): the weight
// row is taken at its exact decoded value and the dot product is accumulated in double,
// then rounded once to f32. The official reference runs f32 sgemm, whose result is
// within a few ulp of the exact value; the exactly rounded sum is the closest
// deterministic stand-in and does not depend on vector width or thread count.
//
// F32, F16 and BF16 rows are read in place; block-quantized rows (Q8_0, Q2_K, Q4_K,
// IQ2_XXS) are dequantized with the quant reference decoders into a per-thread row buffer.
// Faster paths (SIMD, ds4's Q8_0/Q8_K activation quantisation for ds4-compatible numerics)
// plug in at dot_row().
#pragma once

#include <cstdint>
#include <span>

#include "cpu/tensor_view.h"
#include "cpu/thread_pool.h"

namespace ds4::cpu {

// Dot product of weight row `r` (w.in() values) with x.
float dot_row(const TensorView& w, uint64_t r, const float* x);

// Weight row `r` decoded to f32 (w.in() values); used for embeddings.
void dequant_row(const TensorView& w, uint64_t r, float* dst);

// y[i] = dot_row(w, row0 + i, x) for i in [0, n_rows).
void matvec_rows(const TensorView& w, uint64_t row0, uint64_t n_rows, const float* x, float* y,
                 ThreadPool* pool);

// y = W·x for all w.out() rows (x has w.in() values).
inline void matvec(const TensorView& w, const float* x, float* y, ThreadPool* pool) {
    matvec_rows(w, 0, w.out(), x, y, pool);
}

// Y[t] = W·X[t] for n_tok tokens: X is n_tok × x_stride, Y is n_tok × y_stride. Each weight
// row is loaded once and applied to every token (the prefill shape); every element is
// computed exactly as matvec would.
void matmul(const TensorView& w, uint32_t n_tok, const float* x, uint64_t x_stride, float* y,
            uint64_t y_stride, ThreadPool* pool);

}  // namespace ds4::cpu
