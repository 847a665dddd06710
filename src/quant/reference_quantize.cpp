// Scalar reference quantizers for Q8_0 (weights), Q8_K and Q8_0F (activations), and
// the K-quants Q2_K / Q4_K (formats.md §3.3, §3.7, §4.4). The goal is bit-compatibility
// with ggml's reference quantizers, so every floating-point expression is evaluated in
// the same order and precision as there (f32 throughout, no fused multiply-add).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/reference.h"
#include "quant/reference_fit.h"
#include "quant/scalars.h"

// Bit-compatibility with ggml needs every a*b+c rounded twice, as written: forbid FMA
// contraction even if the build adds -mfma / -march=native.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace ds4::quant::ref {

using detail::nearest_int;

namespace {

// Round half to even and saturate to [lo, hi], NaN -> 0. Identical to nearest_int for
// every in-range argument, which is all that occurs for finite input; the saturation
// only keeps inf/NaN input from producing out-of-range codes.
int nearest_saturated(float v, int lo, int hi) {
    if (std::isnan(v)) return 0;
    return nearest_int(std::clamp(v, static_cast<float>(lo), static_cast<float>(hi)));
}

// ggml's MAX(a, b) macro, including its NaN behaviour (a NaN `b` propagates).
inline float max_like_ggml(float a, float b) {
    return a > b ? a : b;
}

}  // namespace

void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const float* xb = x + b * QK8_0;
        float amax = 0.f;
        for (int i = 0; i < QK8_0; ++i) amax = max_like_ggml(amax, std::fabs(xb[i]));
        const float d = amax / 127.f;
        // codes use the reciprocal of the unrounded f32 d, not of its f16 rounding
        const float id = d != 0.f ? 1.f / d : 0.f;
        y[b].d = f32_to_f16(d);
        if (!std::isfinite(id)) {
            // subnormal d (f16(d) is 0 then): codes 0, which is also what ggml's
            // out-of-range float->int8 conversion yields on x86
            std::memset(y[b].qs, 0, sizeof(y[b].qs));
            continue;
        }
        for (int i = 0; i < QK8_0; ++i) {
            const float v = xb[i] * id;
            // round half away from zero (roundf), as ggml's quantize_row_q8_0_ref
            const float r = std::isnan(v) ? 0.f : std::clamp(std::round(v), -127.f, 127.f);
            y[b].qs[i] = static_cast<int8_t>(r);
        }
    }
}

void quantize_q8_K(const float* x, BlockQ8K* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float* xb = x + b * QK_K;
        BlockQ8K& out = y[b];
        // the largest-magnitude element (first on ties), with its sign
        float max = 0.f;
        float amax = 0.f;
        for (int i = 0; i < QK_K; ++i) {
            const float ax = std::fabs(xb[i]);
            if (ax > amax) {
                amax = ax;
                max = xb[i];
            }
        }
        if (amax == 0.f) {
            std::memset(&out, 0, sizeof(out));
            continue;
        }
        // negative scale so that the largest-magnitude element encodes as exactly -127;
        // the IQ2_XXS/AVX dot products rely on that (ggml convention)
        const float iscale = -127.f / max;
        if (!std::isfinite(iscale)) {
            // |max| < 127/FLT_MAX: codes and bsums 0, d = ±0 (ggml's nearest_int maps
            // the resulting ±inf/NaN products to codes 0 as well)
            std::memset(&out, 0, sizeof(out));
            out.d = 1.f / iscale;
            continue;
        }
        for (int i = 0; i < QK_K; ++i) {
            out.qs[i] = static_cast<int8_t>(nearest_saturated(iscale * xb[i], -128, 127));
        }
        for (int g = 0; g < QK_K / 16; ++g) {
            int sum = 0;
            for (int i = 0; i < 16; ++i) sum += out.qs[16 * g + i];
            out.bsums[g] = static_cast<int16_t>(sum);
        }
        out.d = 1.f / iscale;
    }
}

void quantize_q8_0f(const float* x, BlockQ8_0F* y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const float* xb = x + b * QK8_0;
        float amax = 0.f;
        for (int i = 0; i < QK8_0; ++i) amax = max_like_ggml(amax, std::fabs(xb[i]));
        const float s = amax / 127.f;
        y[b].d = s;
        if (s == 0.f) {
            std::memset(y[b].qs, 0, sizeof(y[b].qs));
            continue;
        }
        const float id = 1.f / s;
        if (!std::isfinite(id)) {  // subnormal s: same rule as Q8_0 and Q8_K, codes 0
            std::memset(y[b].qs, 0, sizeof(y[b].qs));
            continue;
        }
        for (int i = 0; i < QK8_0; ++i) {
            y[b].qs[i] = static_cast<int8_t>(nearest_saturated(xb[i] * id, -128, 127));
        }
    }
}

// ---- Q2_K -------------------------------------------------------------------------

namespace {

using detail::AffineFitParams;
using detail::FitMetric;

// Codes from the *stored* (f16-rounded, nibble-quantized) scale and min, so that the
// codes are optimal for what the decoder will actually see. Sub-blocks whose stored
// scale is zero keep their fitted codes.
template <int kSub, int kMaxCode>
void requantize_codes(const float* x, float d, float dmin, const int* sc, const int* mn, uint8_t* L,
                      int nsub) {
    for (int j = 0; j < nsub; ++j) {
        const float dd = d * static_cast<float>(sc[j]);
        if (dd == 0) continue;
        const float dm = dmin * static_cast<float>(mn[j]);
        for (int i = 0; i < kSub; ++i) {
            const int l = nearest_int((x[kSub * j + i] + dm) / dd);
            L[kSub * j + i] = static_cast<uint8_t>(std::clamp(l, 0, kMaxCode));
        }
    }
}

void pack_q2_K_codes(const uint8_t* L, BlockQ2K& y) {
    // each 128-value half uses 32 bytes; byte b carries elements b, b+32, b+64, b+96
    for (int h = 0; h < QK_K; h += 128) {
        for (int b = 0; b < 32; ++b) {
            y.qs[h / 4 + b] = static_cast<uint8_t>(L[h + b] | (L[h + b + 32] << 2) |
                                                   (L[h + b + 64] << 4) | (L[h + b + 96] << 6));
        }
    }
}

// Unweighted (ggml quantize_row_q2_K_ref): |x|-weighted mean-absolute-error fits, then
// scales and mins linearly quantized to 4 bits against their block maxima.
void quantize_block_q2_K(const float* x, BlockQ2K& y) {
    constexpr AffineFitParams kFit{3, -0.5f, 0.1f, 15, FitMetric::Abs, false};
    uint8_t L[QK_K];
    float scales[QK_K / 16];
    float mins[QK_K / 16];
    float weights[16];
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int i = 0; i < 16; ++i) weights[i] = std::fabs(x[16 * j + i]);
        scales[j] = detail::fit_affine(16, x + 16 * j, weights, kFit, L + 16 * j, mins[j]);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        const float iscale = 15.f / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) {
            y.scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
        }
        y.d = f32_to_f16(max_scale / 15.f);
    } else {
        std::memset(y.scales, 0, sizeof(y.scales));
        y.d = f32_to_f16(0.f);
    }
    if (max_min > 0) {
        const float iscale = 15.f / max_min;
        for (int j = 0; j < QK_K / 16; ++j) {
            y.scales[j] = static_cast<uint8_t>(y.scales[j] | (nearest_int(iscale * mins[j]) << 4));
        }
        y.dmin = f32_to_f16(max_min / 15.f);
    } else {
        y.dmin = f32_to_f16(0.f);
    }
    int sc[QK_K / 16];
    int mn[QK_K / 16];
    for (int j = 0; j < QK_K / 16; ++j) {
        sc[j] = y.scales[j] & 15;
        mn[j] = y.scales[j] >> 4;
    }
    requantize_codes<16, 3>(x, f16_to_f32(y.d), f16_to_f32(y.dmin), sc, mn, L, QK_K / 16);
    pack_q2_K_codes(L, y);
}

// Sum of squares over one 256-value block, accumulated left to right in f32.
float block_sum_x2(const float* x) {
    float sum = 0;
    for (int i = 0; i < QK_K; ++i) sum += x[i] * x[i];
    return sum;
}

// Weighted (ggml quantize_row_q2_K_impl): importance × sqrt(σ² + x²) weights, squared
// error fits, and the 16 scales / mins themselves fitted with fit_positive_scale.
void quantize_block_q2_K_weighted(const float* x, const float* qw, BlockQ2K& y) {
    constexpr AffineFitParams kFit{3, -0.9f, 0.05f, 36, FitMetric::Square, true};
    uint8_t L[QK_K];
    float scales[QK_K / 16];
    float mins[QK_K / 16];
    float sw[QK_K / 16];
    float weight[16];
    const float sigma2 = block_sum_x2(x) / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int i = 0; i < 16; ++i) {
            weight[i] = qw[16 * j + i] * std::sqrt(sigma2 + x[16 * j + i] * x[16 * j + i]);
        }
        sw[j] = 0;
        for (int i = 0; i < 16; ++i) sw[j] += weight[i];
        scales[j] = detail::fit_affine(16, x + 16 * j, weight, kFit, L + 16 * j, mins[j]);
    }
    uint8_t Ls[QK_K / 16];
    uint8_t Lm[QK_K / 16];
    const float dm = detail::fit_positive_scale(QK_K / 16, 15, scales, sw, Ls);
    const float mm = detail::fit_positive_scale(QK_K / 16, 15, mins, sw, Lm);
    y.d = f32_to_f16(dm);
    y.dmin = f32_to_f16(mm);
    int sc[QK_K / 16];
    int mn[QK_K / 16];
    for (int j = 0; j < QK_K / 16; ++j) {
        y.scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
        sc[j] = y.scales[j] & 15;
        mn[j] = y.scales[j] >> 4;
    }
    requantize_codes<16, 3>(x, f16_to_f32(y.d), f16_to_f32(y.dmin), sc, mn, L, QK_K / 16);
    pack_q2_K_codes(L, y);
}

// ---- Q4_K -------------------------------------------------------------------------

// Packs eight 6-bit scales and mins into the 12 bytes of §3.5 (the inverse of the
// decoder's unpacking: j < 4 in the low 6 bits of bytes j and j+4; j >= 4 as nibbles
// of byte j+4 with the top two bits in bytes j-4 and j).
void pack_q4_K_scales(const uint8_t* ls, const uint8_t* lm, BlockQ4K& y) {
    for (int j = 0; j < QK_K / 32; ++j) {
        if (j < 4) {
            y.scales[j] = ls[j];
            y.scales[j + 4] = lm[j];
        } else {
            y.scales[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            y.scales[j - 4] = static_cast<uint8_t>(y.scales[j - 4] | ((ls[j] >> 4) << 6));
            y.scales[j] = static_cast<uint8_t>(y.scales[j] | ((lm[j] >> 4) << 6));
        }
    }
}

// Re-derives the codes from the stored scales (as unpacked by a decoder) and packs
// them: byte b of each 32-byte chunk holds elements b (low nibble) and b+32 (high).
void finish_q4_K_block(const float* x, uint8_t* L, BlockQ4K& y) {
    int sc[QK_K / 32];
    int mn[QK_K / 32];
    for (int j = 0; j < QK_K / 32; ++j) {
        if (j < 4) {
            sc[j] = y.scales[j] & 63;
            mn[j] = y.scales[j + 4] & 63;
        } else {
            sc[j] = (y.scales[j + 4] & 0xF) | ((y.scales[j - 4] >> 6) << 4);
            mn[j] = (y.scales[j + 4] >> 4) | ((y.scales[j] >> 6) << 4);
        }
    }
    requantize_codes<32, 15>(x, f16_to_f32(y.d), f16_to_f32(y.dmin), sc, mn, L, QK_K / 32);
    for (int c = 0; c < QK_K / 64; ++c) {
        for (int b = 0; b < 32; ++b) {
            y.qs[32 * c + b] = static_cast<uint8_t>(L[64 * c + b] | (L[64 * c + b + 32] << 4));
        }
    }
}

// Unweighted (ggml quantize_row_q4_K_ref): weights rms(sub-block) + |x|.
void quantize_block_q4_K(const float* x, BlockQ4K& y) {
    constexpr AffineFitParams kFit{15, -1.f, 0.1f, 20, FitMetric::Square, false};
    uint8_t L[QK_K];
    float scales[QK_K / 32];
    float mins[QK_K / 32];
    float weights[32];
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < QK_K / 32; ++j) {
        const float* xs = x + 32 * j;
        float sum_x2 = 0;
        for (int i = 0; i < 32; ++i) sum_x2 += xs[i] * xs[i];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int i = 0; i < 32; ++i) weights[i] = av_x + std::fabs(xs[i]);
        scales[j] = detail::fit_affine(32, xs, weights, kFit, L + 32 * j, mins[j]);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[QK_K / 32];
    uint8_t lm[QK_K / 32];
    for (int j = 0; j < QK_K / 32; ++j) {
        // ggml stores the rounded value in a uint8_t before clamping to 63
        ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
        lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
    }
    pack_q4_K_scales(ls, lm, y);
    y.d = f32_to_f16(max_scale / 63.f);
    y.dmin = f32_to_f16(max_min / 63.f);
    finish_q4_K_block(x, L, y);
}

// Weighted (ggml quantize_row_q4_K_impl with importance weights).
void quantize_block_q4_K_weighted(const float* x, const float* qw, BlockQ4K& y) {
    constexpr AffineFitParams kFit{15, -0.9f, 0.05f, 36, FitMetric::Square, true};
    uint8_t L[QK_K];
    float scales[QK_K / 32];
    float mins[QK_K / 32];
    float sw[QK_K / 32];
    float weights[32];
    const float sigma2 = 2 * block_sum_x2(x) / QK_K;
    for (int j = 0; j < QK_K / 32; ++j) {
        const float* xs = x + 32 * j;
        for (int i = 0; i < 32; ++i)
            weights[i] = qw[32 * j + i] * std::sqrt(sigma2 + xs[i] * xs[i]);
        float sumw = 0;
        for (int i = 0; i < 32; ++i) sumw += weights[i];
        sw[j] = sumw;
        scales[j] = detail::fit_affine(32, xs, weights, kFit, L + 32 * j, mins[j]);
    }
    uint8_t ls[QK_K / 32];
    uint8_t lm[QK_K / 32];
    const float d_block = detail::fit_positive_scale(QK_K / 32, 63, scales, sw, ls);
    const float m_block = detail::fit_positive_scale(QK_K / 32, 63, mins, sw, lm);
    pack_q4_K_scales(ls, lm, y);
    y.d = f32_to_f16(d_block);
    y.dmin = f32_to_f16(m_block);
    finish_q4_K_block(x, L, y);
}

}  // namespace

void quantize_q2_K(const float* x, BlockQ2K* y, int64_t n, const float* w) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        if (w != nullptr) {
            quantize_block_q2_K_weighted(x + b * QK_K, w + b * QK_K, y[b]);
        } else {
            quantize_block_q2_K(x + b * QK_K, y[b]);
        }
    }
}

void quantize_q4_K(const float* x, BlockQ4K* y, int64_t n, const float* w) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        if (w != nullptr) {
            quantize_block_q4_K_weighted(x + b * QK_K, w + b * QK_K, y[b]);
        } else {
            quantize_block_q4_K(x + b * QK_K, y[b]);
        }
    }
}

}  // namespace ds4::quant::ref
