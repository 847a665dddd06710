// Scalar reference dot products (formats.md §3.7) and the scalar kernel table. The
// integer-format dots are written exactly as the spec's formulas: integer sums per
// block, then one float block value, accumulated as described in kernels_detail.h.
// The AVX2 / AVX-512 kernels must reproduce these numbers bit for bit.
#include <cstring>

#include "quant/iq2_tables.h"
#include "quant/kernels_detail.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace ds4::quant::scalar {
namespace {

using detail::kLanes;

// Σ_i code_i · q8_i over one 16-value Q2_K sub-block s (§3.4 element layout).
int32_t q2_K_subblock_dot(const BlockQ2K& w, const int8_t* q8, int s) {
    int32_t sum = 0;
    for (int i = 0; i < 16; ++i) {
        const int e = 16 * s + i;
        const int shift = 2 * ((e % 128) / 32);
        const int code = (w.qs[32 * (e / 128) + e % 32] >> shift) & 3;
        sum += code * q8[e];
    }
    return sum;
}

float dot_q2_K_q8_K(const BlockQ2K* w, const BlockQ8K* x, int64_t n) {
    float lane[kLanes] = {};
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int32_t isum = 0;
        int32_t msum = 0;
        for (int s = 0; s < QK_K / 16; ++s) {
            isum += (w[b].scales[s] & 15) * q2_K_subblock_dot(w[b], x[b].qs, s);
            msum += (w[b].scales[s] >> 4) * x[b].bsums[s];
        }
        lane[b % kLanes] += detail::kquant_block_value(x[b].d, f16_to_f32(w[b].d),
                                                       f16_to_f32(w[b].dmin), isum, msum);
    }
    return detail::reduce_lanes(lane);
}

// Sub-block j's 6-bit scale and min, straight from the §3.5 formulas.
void q4_K_scale_min(const uint8_t* packed, int j, int& scale, int& min) {
    if (j < 4) {
        scale = packed[j] & 63;
        min = packed[j + 4] & 63;
    } else {
        scale = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
        min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
    }
}

float dot_q4_K_q8_K(const BlockQ4K* w, const BlockQ8K* x, int64_t n) {
    float lane[kLanes] = {};
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int32_t isum = 0;
        int32_t msum = 0;
        for (int j = 0; j < QK_K / 32; ++j) {
            int scale = 0;
            int min = 0;
            q4_K_scale_min(w[b].scales, j, scale, min);
            int32_t sum = 0;
            for (int i = 0; i < 32; ++i) {
                const uint8_t byte = w[b].qs[32 * (j / 2) + i];
                const int code = (j % 2 == 0) ? (byte & 15) : (byte >> 4);
                sum += code * x[b].qs[32 * j + i];
            }
            isum += scale * sum;
            msum += min * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
        }
        lane[b % kLanes] += detail::kquant_block_value(x[b].d, f16_to_f32(w[b].d),
                                                       f16_to_f32(w[b].dmin), isum, msum);
    }
    return detail::reduce_lanes(lane);
}

// (2·ls + 1) · Σ_k Σ_j (±GRID byte) · q8 for one 32-value IQ2_XXS group (§3.6).
int32_t iq2_xxs_group_dot(const BlockIQ2XXS& w, const int8_t* q8, int g) {
    uint32_t words[2];
    std::memcpy(words, &w.qs[4 * g], sizeof(words));
    int32_t sum = 0;
    for (int k = 0; k < 4; ++k) {
        const uint64_t grid = kIq2Grid[(words[0] >> (8 * k)) & 0xff];
        const uint8_t signs = kIq2Signs[(words[1] >> (7 * k)) & 127];
        for (int j = 0; j < 8; ++j) {
            const int mag = static_cast<int>((grid >> (8 * j)) & 0xff);
            const int v = (signs & kIq2Mask[j]) ? -mag : mag;
            sum += v * q8[32 * g + 8 * k + j];
        }
    }
    return static_cast<int32_t>(2 * (words[1] >> 28) + 1) * sum;
}

float dot_iq2_xxs_q8_K(const BlockIQ2XXS* w, const BlockQ8K* x, int64_t n) {
    float lane[kLanes] = {};
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int32_t isum = 0;
        for (int g = 0; g < QK_K / 32; ++g) isum += iq2_xxs_group_dot(w[b], x[b].qs, g);
        lane[b % kLanes] += detail::iq2_xxs_block_value(x[b].d, f16_to_f32(w[b].d), isum);
    }
    return detail::kIq2RowScale * detail::reduce_lanes(lane);
}

float dot_q8_0_q8_0f(const BlockQ8_0* w, const BlockQ8_0F* x, int64_t n) {
    float lane[kLanes] = {};
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        int32_t isum = 0;
        for (int i = 0; i < QK8_0; ++i) isum += w[b].qs[i] * x[b].qs[i];
        lane[b % kLanes] += detail::q8_0_block_value(f16_to_f32(w[b].d), x[b].d, isum);
    }
    return detail::reduce_lanes(lane);
}

void dot_q8_0_q8_0f_rows(const BlockQ8_0* const* w, const BlockQ8_0F* x, int64_t n, float* out) {
    for (int r = 0; r < kDotRows; ++r) out[r] = dot_q8_0_q8_0f(w[r], x, n);
}

// F16 rows: f32 products accumulated in f32, in order (§3.7).
float dot_f16_f32(const uint16_t* w, const float* x, int64_t n) {
    float sum = 0.f;
    for (int64_t i = 0; i < n; ++i) sum += f16_to_f32(w[i]) * x[i];
    return sum;
}

// F32 rows: double accumulation; a product of two floats is exact in double.
float dot_f32_f32(const float* w, const float* x, int64_t n) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(w[i]) * static_cast<double>(x[i]);
    return static_cast<float>(sum);
}

}  // namespace
}  // namespace ds4::quant::scalar

namespace ds4::quant::detail {

const Kernels kScalarKernels = {
    .isa = Isa::Scalar,
    .dequant_q8_0 = ref::dequant_q8_0,
    .dequant_q2_K = ref::dequant_q2_K,
    .dequant_q4_K = ref::dequant_q4_K,
    .dequant_iq2_xxs = ref::dequant_iq2_xxs,
    .dequant_f16 = ref::dequant_f16,
    .quantize_q8_K = ref::quantize_q8_K,
    .quantize_q8_0f = ref::quantize_q8_0f,
    .dot_q2_K_q8_K = scalar::dot_q2_K_q8_K,
    .dot_q4_K_q8_K = scalar::dot_q4_K_q8_K,
    .dot_iq2_xxs_q8_K = scalar::dot_iq2_xxs_q8_K,
    .dot_q8_0_q8_0f = scalar::dot_q8_0_q8_0f,
    .dot_f16_f32 = scalar::dot_f16_f32,
    .dot_f32_f32 = scalar::dot_f32_f32,
    .dot_q8_0_q8_0f_rows = scalar::dot_q8_0_q8_0f_rows,
};

}  // namespace ds4::quant::detail
