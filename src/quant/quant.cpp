// quant.h entry points: per-type dispatch onto the selected kernels (best_kernels(),
// bit-identical to the scalar references where the spec asks for it) and onto the ref::
// quantizers for weights. Row lengths are validated here, once per call, so the kernels
// can assume whole blocks.
#include <algorithm>
#include <cstring>
#include <string>  // before quant.h: gguf/ggml_types.h uses std::string without including it

#include "quant/quant.h"

#include "ds4/error.h"
#include "quant/kernels.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace ds4::quant {
namespace {

void check_row(GgmlType t, int64_t n, const char* what) {
    if (n < 0) fail("quant::", what, ": negative row length ", n, " for ", ggml_type_name(t));
    const auto info = ggml_type_info(static_cast<uint32_t>(t));
    if (!info) fail("quant::", what, ": unknown ggml type ", static_cast<uint32_t>(t));
    if (n % info->block_elems != 0) {
        fail("quant::", what, ": row of ", n, " values is not a multiple of the ",
             ggml_type_name(t), " block size ", info->block_elems);
    }
}

void dequant_i32(const void* src, float* dst, int64_t n) {
    const auto* bytes = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n; ++i) {
        int32_t v = 0;
        std::memcpy(&v, bytes + 4 * i, sizeof(v));
        dst[i] = static_cast<float>(v);
    }
}

// Σ w·x accumulated in f32 in order (the "dequantize, then f32" rule of dot_f32).
float dot_dequantized(GgmlType t, const void* w, const float* x, int64_t n) {
    constexpr int64_t kChunk = 4096;  // a multiple of every block size
    float buf[kChunk];
    const uint64_t chunk_bytes = ggml_row_bytes(t, kChunk);
    const auto* src = static_cast<const uint8_t*>(w);
    float sum = 0.f;
    for (int64_t i = 0; i < n; i += kChunk) {
        const int64_t len = std::min(kChunk, n - i);
        dequantize_row(t, src + static_cast<uint64_t>(i / kChunk) * chunk_bytes, buf, len);
        for (int64_t j = 0; j < len; ++j) sum += buf[j] * x[i + j];
    }
    return sum;
}

}  // namespace

bool can_dequantize(GgmlType t) {
    switch (t) {
        case GgmlType::F32:
        case GgmlType::F16:
        case GgmlType::BF16:
        case GgmlType::Q8_0:
        case GgmlType::Q2_K:
        case GgmlType::Q4_K:
        case GgmlType::IQ2_XXS:
        case GgmlType::Q8_K:
        case GgmlType::I32: return true;
        default: return false;
    }
}

bool can_quantize(GgmlType t) {
    switch (t) {
        case GgmlType::F32:
        case GgmlType::F16:
        case GgmlType::BF16:
        case GgmlType::Q8_0:
        case GgmlType::Q2_K:
        case GgmlType::Q4_K:
        case GgmlType::IQ2_XXS: return true;
        default: return false;
    }
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
    check_row(t, n, "dequantize_row");
    const Kernels& k = best_kernels();
    switch (t) {
        case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
        case GgmlType::F16: k.dequant_f16(static_cast<const uint16_t*>(src), dst, n); return;
        case GgmlType::BF16: ref::dequant_bf16(static_cast<const uint16_t*>(src), dst, n); return;
        case GgmlType::Q8_0: k.dequant_q8_0(static_cast<const BlockQ8_0*>(src), dst, n); return;
        case GgmlType::Q2_K: k.dequant_q2_K(static_cast<const BlockQ2K*>(src), dst, n); return;
        case GgmlType::Q4_K: k.dequant_q4_K(static_cast<const BlockQ4K*>(src), dst, n); return;
        case GgmlType::IQ2_XXS: k.dequant_iq2_xxs(static_cast<const BlockIQ2XXS*>(src), dst, n); return;
        case GgmlType::Q8_K: ref::dequant_q8_K(static_cast<const BlockQ8K*>(src), dst, n); return;
        case GgmlType::I32: dequant_i32(src, dst, n); return;
        default: fail("quant::dequantize_row: cannot dequantize ", ggml_type_name(t));
    }
}

size_t quantize_row(GgmlType t, const float* src, void* dst, int64_t n, const float* importance) {
    check_row(t, n, "quantize_row");
    switch (t) {
        case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); break;
        case GgmlType::F16:
        case GgmlType::BF16: {
            auto* out = static_cast<uint8_t*>(dst);
            for (int64_t i = 0; i < n; ++i) {
                const uint16_t h = t == GgmlType::F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
                std::memcpy(out + 2 * i, &h, sizeof(h));
            }
            break;
        }
        case GgmlType::Q8_0: ref::quantize_q8_0(src, static_cast<BlockQ8_0*>(dst), n); break;
        case GgmlType::Q2_K: ref::quantize_q2_K(src, static_cast<BlockQ2K*>(dst), n, importance); break;
        case GgmlType::Q4_K: ref::quantize_q4_K(src, static_cast<BlockQ4K*>(dst), n, importance); break;
        case GgmlType::IQ2_XXS:
            ref::quantize_iq2_xxs(src, static_cast<BlockIQ2XXS*>(dst), n, importance);
            break;
        default: fail("quant::quantize_row: cannot quantize to ", ggml_type_name(t));
    }
    return static_cast<size_t>(ggml_row_bytes(t, static_cast<uint64_t>(n)));
}

void quantize_row_q8_K(const float* x, BlockQ8K* y, int64_t n) {
    check_row(GgmlType::Q8_K, n, "quantize_row_q8_K");
    best_kernels().quantize_q8_K(x, y, n);
}

void quantize_row_q8_0f(const float* x, BlockQ8_0F* y, int64_t n) {
    // Q8_0F shares Q8_0's 32-value geometry
    check_row(GgmlType::Q8_0, n, "quantize_row_q8_0f");
    best_kernels().quantize_q8_0f(x, y, n);
}

float dot_q8_K(GgmlType w_type, const void* w, const BlockQ8K* x, int64_t n) {
    check_row(GgmlType::Q8_K, n, "dot_q8_K");
    const Kernels& k = best_kernels();
    switch (w_type) {
        case GgmlType::Q2_K: return k.dot_q2_K_q8_K(static_cast<const BlockQ2K*>(w), x, n);
        case GgmlType::Q4_K: return k.dot_q4_K_q8_K(static_cast<const BlockQ4K*>(w), x, n);
        case GgmlType::IQ2_XXS: return k.dot_iq2_xxs_q8_K(static_cast<const BlockIQ2XXS*>(w), x, n);
        default:
            fail("quant::dot_q8_K: weight type ", ggml_type_name(w_type),
                 " has no Q8_K dot (expected Q2_K, Q4_K or IQ2_XXS)");
    }
}

float dot_q8_0f(const BlockQ8_0* w, const BlockQ8_0F* x, int64_t n) {
    check_row(GgmlType::Q8_0, n, "dot_q8_0f");
    return best_kernels().dot_q8_0_q8_0f(w, x, n);
}

float dot_f32(GgmlType w_type, const void* w, const float* x, int64_t n) {
    check_row(w_type, n, "dot_f32");
    switch (w_type) {
        case GgmlType::F32: return best_kernels().dot_f32_f32(static_cast<const float*>(w), x, n);
        case GgmlType::F16: return best_kernels().dot_f16_f32(static_cast<const uint16_t*>(w), x, n);
        default:
            if (!can_dequantize(w_type)) {
                fail("quant::dot_f32: cannot dequantize weight type ", ggml_type_name(w_type));
            }
            return dot_dequantized(w_type, w, x, n);
    }
}

}  // namespace ds4::quant
