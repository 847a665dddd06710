// Internal helpers shared by the scalar weight quantizers (formats.md §4.4): ggml's
// rounding primitive and the two least-squares fits every K/IQ quantizer builds on.
#pragma once

#include <cstdint>
#include <cstring>

namespace ds4::quant::ref::detail {

// Round half to even via the 1.5·2²³ trick (what ggml's nearest_int does); exact for
// |x| < 2²². Callers clamp first when the argument may be larger.
inline int nearest_int(float x) {
    const float biased = x + 12582912.f;
    int32_t bits;
    std::memcpy(&bits, &biased, sizeof(bits));
    return (bits & 0x007fffff) - 0x00400000;
}

enum class FitMetric { Abs, Square };

struct AffineFitParams {
    int nmax;      // codes are 0..nmax
    float rmin;    // first trial inverse-scale offset
    float rdelta;  // step between trials
    int nstep;     // trials k = 0..nstep (inclusive)
    FitMetric metric;
    // Trial codes from min(v, nmax) for v > 0, else 0 (ggml's make_qkx3_quants, used by
    // the weighted quantizers), instead of clamp(nearest(v)) (make_qkx2_quants). Same
    // result unless v is NaN or |v| >= 2^22, which only degenerate blocks produce.
    bool saturate_trials;
};

// fitA (§4.4): affine fit x ≈ scale·L − negmin with L ∈ [0, nmax] and negmin ≥ 0,
// minimising Σ w·metric(error). Writes the codes to L and returns the scale.
float fit_affine(int n, const float* x, const float* w, const AffineFitParams& p, uint8_t* L,
                 float& negmin);

// fitP (§4.4): scale for non-negative x ≈ scale·L, L ∈ [0, nmax], weighted squared
// error, with a coordinate-descent refinement. Writes the codes to L.
float fit_positive_scale(int n, int nmax, const float* x, const float* w, uint8_t* L);

}  // namespace ds4::quant::ref::detail
