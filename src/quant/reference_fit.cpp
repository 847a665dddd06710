// The two least-squares fits behind the K/IQ reference quantizers (formats.md §4.4,
// ggml's make_qkx2/make_qkx3_quants and make_qp_quants). Written to give the same bits
// as ggml (checked against libggml-base on random data): same f32 expressions in the
// same order, codes held in uint8_t exactly as there (a negative code wraps, which only
// happens for degenerate input and is then reproduced rather than "fixed").
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/reference_fit.h"

// Bit-compatibility with ggml needs every a*b+c rounded twice, as written: forbid FMA
// contraction even if the build adds -mfma / -march=native.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace ds4::quant::ref::detail {

namespace {

constexpr int kMaxFitLen = 32;  // sub-blocks are 16 (Q2_K) or 32 (Q4_K, IQ2_XXS) values

inline float error_term(float diff, FitMetric metric) {
    return metric == FitMetric::Abs ? std::fabs(diff) : diff * diff;
}

// ggml's make_qkx3_quants trial code: v > 0 ? nearest(min(v, nmax)) : 0 (NaN -> 0).
inline int saturated_code(float v, int nmax) {
    const float fmax = static_cast<float>(nmax);
    return v > 0 ? nearest_int(v < fmax ? v : fmax) : 0;
}

}  // namespace

float fit_affine(int n, const float* x, const float* w, const AffineFitParams& p, uint8_t* L,
                 float& negmin) {
    float lo = x[0];
    float hi = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (lo > 0) lo = 0;  // the offset is a non-negative "min" subtracted at decode time
    if (hi <= lo) {
        std::memset(L, 0, static_cast<size_t>(n));
        negmin = -lo;
        return 0.f;
    }
    // starting point: the full range [lo, hi] mapped onto 0..nmax
    float iscale = static_cast<float>(p.nmax) / (hi - lo);
    float scale = 1 / iscale;
    float best = 0;
    for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * (x[i] - lo));
        L[i] = static_cast<uint8_t>(std::clamp(l, 0, p.nmax));
        const float diff = scale * static_cast<float>(L[i]) + lo - x[i];
        best += w[i] * error_term(diff, p.metric);
    }
    // try slightly different grid densities; for each, solve the 2x2 weighted least
    // squares for (scale, min) given the codes, and keep the lowest-error one. Note the
    // trial grids use the *current best* min, as ggml does.
    uint8_t Laux[kMaxFitLen];
    for (int step = 0; step <= p.nstep; ++step) {
        iscale =
            (p.rmin + p.rdelta * static_cast<float>(step) + static_cast<float>(p.nmax)) / (hi - lo);
        float sum_l = 0;
        float sum_l2 = 0;
        float sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const float v = iscale * (x[i] - lo);
            const int l = p.saturate_trials ? saturated_code(v, p.nmax)
                                            : std::clamp(nearest_int(v), 0, p.nmax);
            Laux[i] = static_cast<uint8_t>(l);
            const float fl = static_cast<float>(l);
            sum_l += w[i] * fl;
            sum_l2 += w[i] * fl * fl;
            sum_xl += w[i] * fl * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {  // a positive offset is not representable: refit scale alone
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; ++i) {
            const float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
            err += w[i] * error_term(diff, p.metric);
        }
        if (err < best) {
            std::memcpy(L, Laux, static_cast<size_t>(n));
            best = err;
            scale = this_scale;
            lo = this_min;
        }
    }
    negmin = -lo;
    return scale;
}

float fit_positive_scale(int n, int nmax, const float* x, const float* w, uint8_t* L) {
    float max = 0;
    for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
    if (max < 1e-15f) {  // all (near) zero; also keeps nmax/max finite
        std::memset(L, 0, static_cast<size_t>(n));
        return 0.f;
    }
    const float fmax = static_cast<float>(nmax);
    float iscale = fmax / max;
    for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
    // coarse search over the grid density
    const float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        const float diff = x[i] - scale * static_cast<float>(L[i]);
        best_mse += w[i] * diff * diff;
    }
    for (int step = -4; step <= 4; ++step) {
        if (step == 0) continue;
        const float iscale_k = (0.1f * static_cast<float>(step) + fmax) / max;
        const float scale_k = 1 / iscale_k;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            const int l = std::min(nmax, nearest_int(iscale_k * x[i]));
            const float diff = x[i] - scale_k * static_cast<float>(l);
            mse += w[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_k;
        }
    }
    float sum_lx = 0;
    float sum_l2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = std::min(nmax, nearest_int(iscale * x[i]));
        L[i] = static_cast<uint8_t>(l);
        const float fl = static_cast<float>(l);
        sum_lx += w[i] * x[i] * fl;
        sum_l2 += w[i] * fl * fl;
    }
    // coordinate descent: move one code at a time to its optimum for the scale implied
    // by the others, accepting it when the fitted error Σwx² − sum_lx²/sum_l2 drops
    for (int iter = 0; iter < 5; ++iter) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            const float li = static_cast<float>(L[i]);
            float slx = sum_lx - w[i] * x[i] * li;
            float sl2 = sum_l2 - w[i] * li * li;
            if (!(slx > 0 && sl2 > 0)) continue;
            const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
            if (new_l == static_cast<int>(L[i])) continue;
            const float fl = static_cast<float>(new_l);
            slx += w[i] * x[i] * fl;
            sl2 += w[i] * fl * fl;
            if (slx * slx * sum_l2 > sum_lx * sum_lx * sl2) {
                L[i] = static_cast<uint8_t>(new_l);
                sum_lx = slx;
                sum_l2 = sl2;
                ++changed;
            }
        }
        if (changed == 0) break;
    }
    // all weights zero leaves sum_l2 = 0: a zero scale rather than 0/0
    return sum_l2 > 0 ? sum_lx / sum_l2 : 0.f;
}

}  // namespace ds4::quant::ref::detail
