#include "cpu/matvec.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/quant_matvec.h"
#include "ds4/error.h"
#include "quant/blocks.h"
#include "quant/kernels.h"
#include "quant/scalars.h"

namespace ds4::cpu {

namespace {

// ---- the f32 accumulation kernel ----
//
// Every product accumulates as acc = fma(w[k], x[k], acc) for k = 0, 1, …, n−1, starting
// from 0. Up to kLanes independent dot products run interleaved (each lane its own
// pointers) so the FMA latency chains overlap; each lane's arithmetic is unchanged, so a
// value never depends on which other lanes it ran with. FMA is exactly rounded, so the
// hardware instruction and std::fma give identical bits.
constexpr int kLanes = 8;

template <typename Fma>
void dot_lanes(Fma fma, const float* const* w, const float* const* x, int lanes, uint64_t n, float* out) {
    float acc[kLanes] = {};
    for (uint64_t k = 0; k < n; ++k)
        for (int l = 0; l < kLanes; ++l)
            if (l < lanes) acc[l] = fma(w[l][k], x[l][k], acc[l]);
    std::copy_n(acc, lanes, out);
}

__attribute__((target("fma"))) void dot_lanes_hw(const float* const* w, const float* const* x, int lanes,
                                                 uint64_t n, float* out) {
    if (lanes == 1) {
        const float* a = w[0];
        const float* b = x[0];
        float acc = 0.0f;
        for (uint64_t k = 0; k < n; ++k) acc = __builtin_fmaf(a[k], b[k], acc);
        out[0] = acc;
        return;
    }
    if (lanes == kLanes) {  // the common case: fixed trip counts, pointers in registers
        const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3], *w4 = w[4], *w5 = w[5], *w6 = w[6],
                    *w7 = w[7];
        const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3], *x4 = x[4], *x5 = x[5], *x6 = x[6],
                    *x7 = x[7];
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        for (uint64_t k = 0; k < n; ++k) {
            a0 = __builtin_fmaf(w0[k], x0[k], a0);
            a1 = __builtin_fmaf(w1[k], x1[k], a1);
            a2 = __builtin_fmaf(w2[k], x2[k], a2);
            a3 = __builtin_fmaf(w3[k], x3[k], a3);
            a4 = __builtin_fmaf(w4[k], x4[k], a4);
            a5 = __builtin_fmaf(w5[k], x5[k], a5);
            a6 = __builtin_fmaf(w6[k], x6[k], a6);
            a7 = __builtin_fmaf(w7[k], x7[k], a7);
        }
        out[0] = a0, out[1] = a1, out[2] = a2, out[3] = a3, out[4] = a4, out[5] = a5, out[6] = a6, out[7] = a7;
        return;
    }
    dot_lanes([](float a, float b, float c) { return __builtin_fmaf(a, b, c); }, w, x, lanes, n, out);
}

void dot_lanes_sw(const float* const* w, const float* const* x, int lanes, uint64_t n, float* out) {
    dot_lanes([](float a, float b, float c) { return std::fma(a, b, c); }, w, x, lanes, n, out);
}

__attribute__((target("fma"))) void axpy_hw(float a, const float* x, float* y, uint64_t n) {
    for (uint64_t j = 0; j < n; ++j) y[j] = __builtin_fmaf(a, x[j], y[j]);
}

void axpy_sw(float a, const float* x, float* y, uint64_t n) {
    for (uint64_t j = 0; j < n; ++j) y[j] = std::fma(a, x[j], y[j]);
}

using DotLanesFn = void (*)(const float* const*, const float* const*, int, uint64_t, float*);

DotLanesFn pick_dot_lanes() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("fma") ? dot_lanes_hw : dot_lanes_sw;
}

const DotLanesFn dot_lanes_fn = pick_dot_lanes();
const auto axpy_fn = dot_lanes_fn == dot_lanes_hw ? axpy_hw : axpy_sw;

// The SIMD decoders of quant/kernels.h: bit-identical to the reference decoders (what
// tests/quant_kernels checks; decoding is exact arithmetic on the block fields), and
// 10-20x faster for the K-quants and IQ2_XXS.
void dequant_block_row(GgmlType t, const void* src, float* dst, uint64_t n) {
    static const quant::Kernels& k = quant::best_kernels();
    const auto len = static_cast<int64_t>(n);
    switch (t) {
        case GgmlType::Q8_0: k.dequant_q8_0(static_cast<const quant::BlockQ8_0*>(src), dst, len); return;
        case GgmlType::Q2_K: k.dequant_q2_K(static_cast<const quant::BlockQ2K*>(src), dst, len); return;
        case GgmlType::Q4_K: k.dequant_q4_K(static_cast<const quant::BlockQ4K*>(src), dst, len); return;
        case GgmlType::IQ2_XXS: k.dequant_iq2_xxs(static_cast<const quant::BlockIQ2XXS*>(src), dst, len); return;
        case GgmlType::F16: k.dequant_f16(static_cast<const uint16_t*>(src), dst, len); return;
        default: fail("cpu matvec: weight type ", ggml_type_name(t), " is not supported");
    }
}

// Decoded rows for non-F32 weights: one buffer of kLanes rows per thread, grown once to
// the widest row seen.
float* thread_row_buffer(uint64_t n) {
    thread_local std::vector<float> buf;
    if (buf.size() < n * kLanes) buf.resize(n * kLanes);
    return buf.data();
}

// Row r of w as f32: in place for F32, else decoded into `buf`.
struct RowSource {
    const TensorView& w;
    uint64_t stride;  // bytes per row

    explicit RowSource(const TensorView& view) : w(view), stride(ggml_row_bytes(view.type, view.in())) {}
    const void* bytes(uint64_t r) const { return static_cast<const std::byte*>(w.data) + r * stride; }
    const float* get(uint64_t r, float* buf) const {
        if (w.type == GgmlType::F32) return static_cast<const float*>(bytes(r));
        decode(r, buf);
        return buf;
    }
    void decode(uint64_t r, float* dst) const;
};

void RowSource::decode(uint64_t r, float* dst) const {
    const uint64_t n = w.in();
    const void* src = bytes(r);
    switch (w.type) {
        case GgmlType::F32: {
            const auto* p = static_cast<const float*>(src);
            std::copy_n(p, n, dst);
            return;
        }
        case GgmlType::BF16: {
            const auto* p = static_cast<const uint16_t*>(src);
            for (uint64_t i = 0; i < n; ++i) dst[i] = quant::bf16_to_f32(p[i]);
            return;
        }
        default: dequant_block_row(w.type, src, dst, n);
    }
}

}  // namespace

void dequant_row(const TensorView& w, uint64_t r, float* dst) { RowSource(w).decode(r, dst); }

float dot_f32(const float* a, const float* b, uint64_t n) {
    float out;
    dot_lanes_fn(&a, &b, 1, n, &out);
    return out;
}

void axpy_f32(float a, const float* x, float* y, uint64_t n) { axpy_fn(a, x, y, n); }

float dot_row(const TensorView& w, uint64_t r, const float* x) {
    const uint64_t n = w.in();
    const float* row = RowSource(w).get(r, w.type == GgmlType::F32 ? nullptr : thread_row_buffer(n));
    return dot_f32(row, x, n);
}

void matvec_rows(const TensorView& w, uint64_t row0, uint64_t n_rows, const float* x, float* y,
                 ThreadPool* pool) {
    if (numerics() == Numerics::Fast && has_fast_path(w.type)) {
        fast_matmul(w, row0, n_rows, 1, x, 0, y, 0, pool);
        return;
    }
    const uint64_t n = w.in();
    const RowSource src(w);
    parallel_for(pool, n_rows, 64, [&](uint64_t b, uint64_t e) {
        float* buf = w.type == GgmlType::F32 ? nullptr : thread_row_buffer(n);
        const float* rows[kLanes];
        const float* xs[kLanes];
        std::fill_n(xs, kLanes, x);
        for (uint64_t i = b; i < e; i += kLanes) {
            const int lanes = static_cast<int>(std::min<uint64_t>(kLanes, e - i));
            for (int l = 0; l < lanes; ++l) rows[l] = src.get(row0 + i + l, buf ? buf + l * n : nullptr);
            dot_lanes_fn(rows, xs, lanes, n, y + i);
        }
    });
}

void matmul(const TensorView& w, uint32_t n_tok, const float* x, uint64_t x_stride, float* y,
            uint64_t y_stride, ThreadPool* pool) {
    if (n_tok == 1) {
        matvec(w, x, y, pool);
        return;
    }
    if (numerics() == Numerics::Fast && has_fast_path(w.type)) {
        fast_matmul(w, 0, w.out(), n_tok, x, x_stride, y, y_stride, pool);
        return;
    }
    const uint64_t n = w.in();
    const RowSource src(w);
    parallel_for(pool, w.out(), 16, [&](uint64_t b, uint64_t e) {
        // Each weight row is decoded once and applied to every token, kLanes tokens at a time.
        float* buf = w.type == GgmlType::F32 ? nullptr : thread_row_buffer(n);
        const float* rows[kLanes];
        const float* xs[kLanes];
        float out[kLanes];
        for (uint64_t r = b; r < e; ++r) {
            const float* row = src.get(r, buf);
            std::fill_n(rows, kLanes, row);
            for (uint32_t t = 0; t < n_tok; t += kLanes) {
                const int lanes = static_cast<int>(std::min<uint32_t>(kLanes, n_tok - t));
                for (int l = 0; l < lanes; ++l) xs[l] = x + (t + l) * x_stride;
                dot_lanes_fn(rows, xs, lanes, n, out);
                for (int l = 0; l < lanes; ++l) y[(t + l) * y_stride + r] = out[l];
            }
        }
    });
}

}  // namespace ds4::cpu
