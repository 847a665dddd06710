#include "cpu/quant_matvec.h"

#include <algorithm>
#include <vector>

#include "cpu/matvec.h"
#include "ds4/error.h"
#include "quant/kernels.h"

namespace ds4::cpu {

namespace {

thread_local Numerics t_numerics = Numerics::Fast;

const quant::Kernels& kernels() {
    static const quant::Kernels& k = quant::best_kernels();
    return k;
}

// How an activation row is prepared for a weight type, and its size in bytes.
enum class ActKind { F32, Q8_0F, Q8_K };

ActKind act_kind(GgmlType t) {
    if (t == GgmlType::Q8_0) return ActKind::Q8_0F;
    if (is_q8K_weight(t)) return ActKind::Q8_K;
    return ActKind::F32;
}

uint64_t act_bytes(ActKind k, uint64_t n) {
    switch (k) {
        case ActKind::Q8_0F: return n / quant::QK8_0 * sizeof(quant::BlockQ8_0F);
        case ActKind::Q8_K: return n / quant::QK_K * sizeof(quant::BlockQ8K);
        case ActKind::F32: break;
    }
    return n * sizeof(float);
}

void quantize_act(ActKind k, const float* x, std::byte* dst, uint64_t n) {
    const auto len = static_cast<int64_t>(n);
    switch (k) {
        case ActKind::Q8_0F: kernels().quantize_q8_0f(x, reinterpret_cast<quant::BlockQ8_0F*>(dst), len); return;
        case ActKind::Q8_K: kernels().quantize_q8_K(x, reinterpret_cast<quant::BlockQ8K*>(dst), len); return;
        case ActKind::F32: break;
    }
    std::copy_n(reinterpret_cast<const std::byte*>(x), n * sizeof(float), dst);
}

// One weight row (raw bytes) · one prepared activation row.
float dot_prepared(GgmlType t, const void* row, const void* act, int64_t n) {
    const quant::Kernels& k = kernels();
    switch (t) {
        case GgmlType::Q8_0:
            return k.dot_q8_0_q8_0f(static_cast<const quant::BlockQ8_0*>(row),
                                    static_cast<const quant::BlockQ8_0F*>(act), n);
        case GgmlType::Q2_K:
            return k.dot_q2_K_q8_K(static_cast<const quant::BlockQ2K*>(row), static_cast<const quant::BlockQ8K*>(act), n);
        case GgmlType::Q4_K:
            return k.dot_q4_K_q8_K(static_cast<const quant::BlockQ4K*>(row), static_cast<const quant::BlockQ8K*>(act), n);
        case GgmlType::IQ2_XXS:
            return k.dot_iq2_xxs_q8_K(static_cast<const quant::BlockIQ2XXS*>(row),
                                      static_cast<const quant::BlockQ8K*>(act), n);
        case GgmlType::F16: return k.dot_f16_f32(static_cast<const uint16_t*>(row), static_cast<const float*>(act), n);
        default: fail("cpu fast matvec: weight type ", ggml_type_name(t), " has no fast path");
    }
}

// The calling thread's quantized activations, grown once to the largest product.
std::byte* act_buffer(uint64_t bytes) {
    thread_local std::vector<std::byte> buf;
    if (buf.size() < bytes) buf.resize(bytes);
    return buf.data();
}

}  // namespace

Numerics numerics() { return t_numerics; }
NumericsScope::NumericsScope(Numerics mode) : prev_(t_numerics) { t_numerics = mode; }
NumericsScope::~NumericsScope() { t_numerics = prev_; }

bool is_q8K_weight(GgmlType t) {
    return t == GgmlType::Q2_K || t == GgmlType::Q4_K || t == GgmlType::IQ2_XXS;
}

bool has_fast_path(GgmlType t) { return t == GgmlType::Q8_0 || t == GgmlType::F16 || is_q8K_weight(t); }

void fast_matmul(const TensorView& w, uint64_t row0, uint64_t n_rows, uint32_t n_tok, const float* x,
                 uint64_t x_stride, float* y, uint64_t y_stride, ThreadPool* pool) {
    const uint64_t n = w.in();
    const ActKind kind = act_kind(w.type);
    const uint64_t a_bytes = act_bytes(kind, n);
    // F32 activations are read in place; the others are quantized once per token.
    std::byte* acts = kind == ActKind::F32 ? nullptr : act_buffer(a_bytes * n_tok);
    if (acts != nullptr)
        for (uint32_t t = 0; t < n_tok; ++t) quantize_act(kind, x + t * x_stride, acts + t * a_bytes, n);
    const auto act = [&](uint32_t t) -> const void* {
        return acts != nullptr ? static_cast<const void*>(acts + t * a_bytes) : x + t * x_stride;
    };
    const uint64_t stride = w.row_bytes();
    const auto* base = static_cast<const std::byte*>(w.data) + row0 * stride;
    const auto len = static_cast<int64_t>(n);
    // Each weight row is loaded once and applied to every token of the chunk; Q8_0 rows
    // go kDotRows at a time through the multi-row kernel (same bits as one by one).
    const bool multi_row = w.type == GgmlType::Q8_0;
    parallel_for(pool, n_rows, 16, [&](uint64_t b, uint64_t e) {
        uint64_t i = b;
        if (multi_row) {
            for (; i + quant::kDotRows <= e; i += quant::kDotRows) {
                const quant::BlockQ8_0* rows[quant::kDotRows];
                for (int r = 0; r < quant::kDotRows; ++r)
                    rows[r] = reinterpret_cast<const quant::BlockQ8_0*>(base + (i + r) * stride);
                for (uint32_t t = 0; t < n_tok; ++t) {
                    float out[quant::kDotRows];
                    kernels().dot_q8_0_q8_0f_rows(rows, static_cast<const quant::BlockQ8_0F*>(act(t)), len, out);
                    std::copy_n(out, quant::kDotRows, y + t * y_stride + i);
                }
            }
        }
        for (; i < e; ++i)
            for (uint32_t t = 0; t < n_tok; ++t) y[t * y_stride + i] = dot_prepared(w.type, base + i * stride, act(t), len);
    });
}

namespace {

bool block_quantized(const TensorView& v) { return v.data != nullptr && has_fast_path(v.type) && v.type != GgmlType::F16; }

bool any_block_quantized(const LayerWeights& l) {
    for (const TensorView* v : {&l.q_a, &l.q_b, &l.kv, &l.out_a, &l.out_b, &l.shared_gate, &l.shared_up, &l.shared_down,
                                &l.experts.gate, &l.experts.up, &l.experts.down})
        if (block_quantized(*v)) return true;
    return false;
}

}  // namespace

Numerics default_numerics(const ModelWeights& w) {
    if (block_quantized(w.output) || block_quantized(w.token_embd)) return Numerics::Fast;
    for (const LayerWeights& l : w.layers)
        if (any_block_quantized(l)) return Numerics::Fast;
    return Numerics::Exact;
}

void quantize_q8K(const float* x, quant::BlockQ8K* y, uint64_t n) {
    kernels().quantize_q8_K(x, y, static_cast<int64_t>(n));
}

float dot_row_q8K(const TensorView& w, uint64_t r, const quant::BlockQ8K* x) {
    return dot_prepared(w.type, w.row(r), x, static_cast<int64_t>(w.in()));
}

}  // namespace ds4::cpu
