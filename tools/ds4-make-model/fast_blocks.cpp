// Random valid quant blocks with a target RMS (rules in fast_blocks.h).
#include "fast_blocks.h"

#include <cmath>
#include <cstring>

#include "ds4/error.h"
#include "quant/blocks.h"
#include "quant/iq2_tables.h"
#include "quant/scalars.h"

namespace ds4::synth {

namespace {

using quant::f16_to_f32;
using quant::f32_to_f16;

// Mean of k² for k uniform in [lo, hi].
constexpr double mean_square(int lo, int hi) {
    double s = 0;
    for (int k = lo; k <= hi; ++k) s += double(k) * k;
    return s / (hi - lo + 1);
}

// Random bytes, eight per draw.
void fill_random(Rng& rng, uint8_t* p, size_t n) {
    while (n >= 8) {
        const uint64_t r = rng.next();
        std::memcpy(p, &r, 8);
        p += 8;
        n -= 8;
    }
    if (n) {
        const uint64_t r = rng.next();
        std::memcpy(p, &r, n);
    }
}

void random_q8_0(float rms, Rng& rng, uint8_t* out, int64_t nb) {
    // A raw byte is int8 in [-128, 127]; -128 is folded to -127 (Q8_0 codes are
    // symmetric), so E[q²] = (Σ_{|k|≤127} k² + 127²) / 256.
    constexpr double kMeanSq = (mean_square(-127, 127) * 255 + 127.0 * 127) / 256;
    const uint16_t d = f32_to_f16(static_cast<float>(rms / std::sqrt(kMeanSq)));
    for (int64_t b = 0; b < nb; ++b) {
        quant::BlockQ8_0 blk;
        blk.d = d;
        fill_random(rng, reinterpret_cast<uint8_t*>(blk.qs), sizeof blk.qs);
        for (int8_t& q : blk.qs) q = q == -128 ? int8_t(-127) : q;
        std::memcpy(out + b * sizeof blk, &blk, sizeof blk);
    }
}

void random_q2_K(float rms, Rng& rng, uint8_t* out, int64_t nb) {
    constexpr double kCodeVar = 1.25;  // E[(q − 1.5)²], q uniform in 0..3
    const uint16_t d =
        f32_to_f16(static_cast<float>(rms / std::sqrt(mean_square(1, 15) * kCodeVar)));
    const uint16_t dmin = f32_to_f16(1.5f * f16_to_f32(d));  // centres the codes on 0
    for (int64_t b = 0; b < nb; ++b) {
        quant::BlockQ2K blk;
        for (uint8_t& sc : blk.scales) {
            const auto s = static_cast<uint8_t>(1 + rng.below(15));
            sc = static_cast<uint8_t>(s | (s << 4));
        }
        fill_random(rng, blk.qs, sizeof blk.qs);
        blk.d = d;
        blk.dmin = dmin;
        std::memcpy(out + b * sizeof blk, &blk, sizeof blk);
    }
}

// Inverse of the 6-bit scale/min unpacking of formats.md §3.5.
void pack_q4_K_scales(const uint8_t S[8], const uint8_t M[8], uint8_t packed[12]) {
    std::memset(packed, 0, 12);
    for (int j = 0; j < 4; ++j) {
        packed[j] = S[j] & 63;
        packed[j + 4] = M[j] & 63;
    }
    for (int j = 4; j < 8; ++j) {
        packed[j + 4] = static_cast<uint8_t>((S[j] & 15) | ((M[j] & 15) << 4));
        packed[j - 4] |= static_cast<uint8_t>((S[j] >> 4) << 6);
        packed[j] |= static_cast<uint8_t>((M[j] >> 4) << 6);
    }
}

void random_q4_K(float rms, Rng& rng, uint8_t* out, int64_t nb) {
    constexpr double kCodeVar = 21.25;  // E[(q − 7.5)²], q uniform in 0..15
    const uint16_t d =
        f32_to_f16(static_cast<float>(rms / std::sqrt(mean_square(1, 63) * kCodeVar)));
    const uint16_t dmin = f32_to_f16(7.5f * f16_to_f32(d));
    for (int64_t b = 0; b < nb; ++b) {
        quant::BlockQ4K blk;
        uint8_t S[8];
        for (uint8_t& s : S) s = static_cast<uint8_t>(1 + rng.below(63));
        pack_q4_K_scales(S, S, blk.scales);
        fill_random(rng, blk.qs, sizeof blk.qs);
        blk.d = d;
        blk.dmin = dmin;
        std::memcpy(out + b * sizeof blk, &blk, sizeof blk);
    }
}

// E[grid byte²] over the 256 × 8 magnitudes of the IQ2_XXS grid.
double iq2_grid_mean_square() {
    double s = 0;
    for (uint64_t g : quant::kIq2Grid) {
        for (int j = 0; j < 8; ++j) {
            const double m = static_cast<double>((g >> (8 * j)) & 0xff);
            s += m * m;
        }
    }
    return s / (256.0 * 8.0);
}

void random_iq2_xxs(float rms, Rng& rng, uint8_t* out, int64_t nb) {
    static const double kGridMeanSq = iq2_grid_mean_square();
    constexpr double kLsMeanSq = 85.25;  // E[(ls + ½)²], ls uniform in 0..15
    const uint16_t d =
        f32_to_f16(static_cast<float>(rms / (0.25 * std::sqrt(kLsMeanSq * kGridMeanSq))));
    for (int64_t b = 0; b < nb; ++b) {
        quant::BlockIQ2XXS blk;
        blk.d = d;
        // Each group: 4 grid indices, then 4 × 7-bit sign indices and the 4-bit ls.
        // Every bit pattern is a valid group, so the whole payload is random.
        fill_random(rng, reinterpret_cast<uint8_t*>(blk.qs), sizeof blk.qs);
        std::memcpy(out + b * sizeof blk, &blk, sizeof blk);
    }
}

}  // namespace

bool has_random_blocks(GgmlType t) {
    return t == GgmlType::Q8_0 || t == GgmlType::Q2_K || t == GgmlType::Q4_K ||
           t == GgmlType::IQ2_XXS;
}

void random_blocks(GgmlType t, float rms, Rng& rng, std::span<uint8_t> dst, int64_t n) {
    if (dst.size() != ggml_row_bytes(t, static_cast<uint64_t>(n)))
        fail("random_blocks: ", dst.size(), " bytes for ", n, " ", ggml_type_name(t), " values");
    uint8_t* p = dst.data();
    switch (t) {
        case GgmlType::Q8_0:
            return random_q8_0(rms, rng, p, n / quant::QK8_0);
        case GgmlType::Q2_K:
            return random_q2_K(rms, rng, p, n / quant::QK_K);
        case GgmlType::Q4_K:
            return random_q4_K(rms, rng, p, n / quant::QK_K);
        case GgmlType::IQ2_XXS:
            return random_iq2_xxs(rms, rng, p, n / quant::QK_K);
        default:
            fail("random_blocks: no random block generator for ", ggml_type_name(t));
    }
}

}  // namespace ds4::synth
