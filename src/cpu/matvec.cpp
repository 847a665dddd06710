#include "cpu/matvec.h"

#include <vector>

#include "ds4/error.h"
#include "quant/blocks.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace ds4::cpu {

namespace {

// Four independent double lanes: products of two floats are exact in double, so the only
// rounding is the final conversion (and a negligible n·2^-53 in the lane sums).
template <typename Load>
float dot_exact(const Load& load, const float* x, uint64_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += static_cast<double>(load(i)) * x[i];
        s1 += static_cast<double>(load(i + 1)) * x[i + 1];
        s2 += static_cast<double>(load(i + 2)) * x[i + 2];
        s3 += static_cast<double>(load(i + 3)) * x[i + 3];
    }
    for (; i < n; ++i) s0 += static_cast<double>(load(i)) * x[i];
    return static_cast<float>((s0 + s1) + (s2 + s3));
}

const void* row_ptr(const TensorView& w, uint64_t r) {
    return static_cast<const std::byte*>(w.data) + r * ggml_row_bytes(w.type, w.in());
}

void dequant_block_row(GgmlType t, const void* src, float* dst, uint64_t n) {
    const auto len = static_cast<int64_t>(n);
    switch (t) {
        case GgmlType::Q8_0: quant::ref::dequant_q8_0(static_cast<const quant::BlockQ8_0*>(src), dst, len); return;
        case GgmlType::Q2_K: quant::ref::dequant_q2_K(static_cast<const quant::BlockQ2K*>(src), dst, len); return;
        case GgmlType::Q4_K: quant::ref::dequant_q4_K(static_cast<const quant::BlockQ4K*>(src), dst, len); return;
        case GgmlType::IQ2_XXS:
            quant::ref::dequant_iq2_xxs(static_cast<const quant::BlockIQ2XXS*>(src), dst, len);
            return;
        default: fail("cpu matvec: weight type ", ggml_type_name(t), " is not supported");
    }
}

// Row buffer for block types; grows once per thread to the widest row seen.
float* thread_row_buffer(uint64_t n) {
    thread_local std::vector<float> buf;
    if (buf.size() < n) buf.resize(n);
    return buf.data();
}

}  // namespace

void dequant_row(const TensorView& w, uint64_t r, float* dst) {
    const uint64_t n = w.in();
    const void* src = row_ptr(w, r);
    switch (w.type) {
        case GgmlType::F32: {
            const auto* p = static_cast<const float*>(src);
            for (uint64_t i = 0; i < n; ++i) dst[i] = p[i];
            return;
        }
        case GgmlType::F16: {
            const auto* p = static_cast<const uint16_t*>(src);
            for (uint64_t i = 0; i < n; ++i) dst[i] = quant::f16_to_f32(p[i]);
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

float dot_row(const TensorView& w, uint64_t r, const float* x) {
    const uint64_t n = w.in();
    const void* src = row_ptr(w, r);
    switch (w.type) {
        case GgmlType::F32: {
            const auto* p = static_cast<const float*>(src);
            return dot_exact([p](uint64_t i) { return p[i]; }, x, n);
        }
        case GgmlType::F16: {
            const auto* p = static_cast<const uint16_t*>(src);
            return dot_exact([p](uint64_t i) { return quant::f16_to_f32(p[i]); }, x, n);
        }
        case GgmlType::BF16: {
            const auto* p = static_cast<const uint16_t*>(src);
            return dot_exact([p](uint64_t i) { return quant::bf16_to_f32(p[i]); }, x, n);
        }
        default: {
            float* buf = thread_row_buffer(n);
            dequant_block_row(w.type, src, buf, n);
            return dot_exact([buf](uint64_t i) { return buf[i]; }, x, n);
        }
    }
}

void matvec_rows(const TensorView& w, uint64_t row0, uint64_t n_rows, const float* x, float* y,
                 ThreadPool* pool) {
    parallel_for(pool, n_rows, 64, [&](uint64_t b, uint64_t e) {
        for (uint64_t i = b; i < e; ++i) y[i] = dot_row(w, row0 + i, x);
    });
}

void matmul(const TensorView& w, uint32_t n_tok, const float* x, uint64_t x_stride, float* y,
            uint64_t y_stride, ThreadPool* pool) {
    const uint64_t n_rows = w.out();
    if (n_tok == 1) {
        matvec(w, x, y, pool);
        return;
    }
    const uint64_t n = w.in();
    parallel_for(pool, n_rows, 16, [&](uint64_t b, uint64_t e) {
        // Decode each row once and apply it to every token: same value per element as
        // dot_row, since the decoded row is identical.
        float* buf = w.type == GgmlType::F32 ? nullptr : thread_row_buffer(n);
        for (uint64_t r = b; r < e; ++r) {
            const float* row = static_cast<const float*>(row_ptr(w, r));
            if (buf != nullptr) {
                dequant_row(w, r, buf);
                row = buf;
            }
            for (uint32_t t = 0; t < n_tok; ++t)
                y[t * y_stride + r] = dot_exact([row](uint64_t i) { return row[i]; }, x + t * x_stride, n);
        }
    });
}

}  // namespace ds4::cpu
