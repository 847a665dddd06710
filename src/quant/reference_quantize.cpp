// Scalar reference quantizers for Q8_0 (weights), Q8_K and Q8_0F (activations), and
// the K-quants Q2_K / Q4_K (formats.md §3.3, §3.7, §4.4). The goal is bit-compatibility
// with ggml's reference quantizers, so every floating-point expression is evaluated in
// the same order and precision as there (f32 throughout, no fused multiply-add: this
// file is compiled without -ffp-contract=fast since the project builds with -std=c++20).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/reference.h"
#include "quant/reference_fit.h"
#include "quant/scalars.h"

namespace ds4::quant::ref {

using detail::nearest_int;

namespace {

// Round half to even and saturate to [lo, hi]; NaN (0·inf from a subnormal block
// maximum) becomes 0. Identical to nearest_int for every in-range argument, which is
// all that ever occurs for normal f32 input.
int nearest_saturated(float v, int lo, int hi) {
    if (std::isnan(v)) return 0;
    return nearest_int(std::clamp(v, static_cast<float>(lo), static_cast<float>(hi)));
}

// ggml's MAX(a, b) macro, including its NaN behaviour (a NaN `b` propagates).
inline float max_like_ggml(float a, float b) { return a > b ? a : b; }

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
        for (int i = 0; i < QK8_0; ++i) {
            const float v = xb[i] * id;
            // round half away from zero (roundf), as ggml's quantize_row_q8_0_ref;
            // the clamp only matters for a subnormal d whose reciprocal overflows
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
        for (int i = 0; i < QK8_0; ++i) {
            y[b].qs[i] = static_cast<int8_t>(nearest_saturated(xb[i] * id, -128, 127));
        }
    }
}

}  // namespace ds4::quant::ref
