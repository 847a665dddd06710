// Matrix-vector products against one weight tensor, dispatched on its storage type.
//
// Semantics are the plain product y = W·x of spec model.md §3.5 (golden mode), with the
// weight row at its exact decoded value and f32 accumulation in input order, one fused
// multiply-add per term: the accumulation of a GEMM micro-kernel. Measured against the
// official goldens (tests/cpu_forward, this machine), this order reproduces the
// reference's batched prefill path to ~4e-6 (small_s1 full-prefill-last) and gives the
// smallest worst-case difference of the orders tried (exact double sums: 6.8e-4 max on
// small_s1 mode (a) vs 2.2e-4; the residue is FP8/FP4 rounding flips, where the
// reference disagrees with itself by the same 2.2e-4). The value of an element never
// depends on the thread count or on which elements were computed alongside it.
//
// F32 rows are read in place; F16, BF16 and block-quantized rows (Q8_0, Q2_K, Q4_K,
// IQ2_XXS) are decoded to f32 (SIMD decoders, bit-identical to the quant reference ones)
// into a per-thread row buffer.
//
// Numerics::Fast (the default) replaces the decode for F16 and block-quantized weights
// with ds4's CPU scheme (model.md §11.1–§11.2, formats.md §3.7): the activation row is
// quantized once per product — Q8_0 weights → Q8_0F (f32 scale per 32 values), Q2_K /
// Q4_K / IQ2_XXS → Q8_K — and every weight row is dotted against it with the SIMD
// integer kernels (quant/kernels.h); F16 rows use dot_f16_f32. F32 weights always take
// the exact path above, so the goldens (official checkpoint held in f32) are unaffected.
// Numerics::Exact keeps the decode-to-f32 path for every type (the reference the fast
// path is tested against). Fast results are also independent of the thread count.
#pragma once

#include <cstdint>
#include <span>

#include "cpu/tensor_view.h"
#include "cpu/thread_pool.h"

namespace ds4::cpu {

enum class Numerics {
    Exact,  // decoded weights, f32 activations (golden semantics)
    Fast,   // ds4 CPU numerics for F16 / quantized weights (see above)
};

// The numerics of products started on the calling thread (thread-local, default Fast).
// The products read it on entry, so a pool's workers follow the thread that called them.
Numerics numerics();

// Sets numerics() for the calling thread for its lifetime, then restores the old value.
class NumericsScope {
public:
    explicit NumericsScope(Numerics mode);
    ~NumericsScope();
    NumericsScope(const NumericsScope&) = delete;
    NumericsScope& operator=(const NumericsScope&) = delete;

private:
    Numerics prev_;
};

// True when Numerics::Fast changes how a weight of type t is multiplied.
bool has_fast_path(GgmlType t);

// Σ a[k]·b[k] with the accumulation described above (also used by attention).
float dot_f32(const float* a, const float* b, uint64_t n);

// y[j] = fma(a, x[j], y[j]) for j < n: one term of a weighted row sum, accumulated in
// f32 with the same fused rounding as dot_f32.
void axpy_f32(float a, const float* x, float* y, uint64_t n);

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
