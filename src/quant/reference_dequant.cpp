// Scalar reference dequantizers (formats.md §3). Every fast path must reproduce these
// numbers bit-exactly, so each formula is evaluated in the same order as ggml's
// reference code: products are formed in f32 exactly as written in the spec.
#include <cstring>

#include "quant/iq2_tables.h"
#include "quant/reference.h"
#include "quant/scalars.h"

// Bit-compatibility with ggml needs every a*b+c rounded twice, as written: forbid FMA
// contraction even if the build adds -mfma / -march=native.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace ds4::quant::ref {

void dequant_q8_0(const BlockQ8_0* x, float* y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const float d = f16_to_f32(x[b].d);
        for (int i = 0; i < QK8_0; ++i) y[b * QK8_0 + i] = d * static_cast<float>(x[b].qs[i]);
    }
}

void dequant_q2_K(const BlockQ2K* x, float* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const BlockQ2K& blk = x[b];
        const float d = f16_to_f32(blk.d);
        const float dmin = f16_to_f32(blk.dmin);
        float* out = y + b * QK_K;
        for (int e = 0; e < QK_K; ++e) {
            // each 128-value half uses 32 bytes; byte b holds elements b, b+32, b+64, b+96
            const int shift = 2 * ((e % 128) / 32);
            const int code = (blk.qs[32 * (e / 128) + e % 32] >> shift) & 3;
            const uint8_t sc = blk.scales[e / 16];
            out[e] = d * static_cast<float>(sc & 15) * static_cast<float>(code) -
                     dmin * static_cast<float>(sc >> 4);
        }
    }
}

// Unpacks the 6-bit scale and min of sub-block j from Q4_K's 12 packed bytes (§3.5).
static void q4_K_scale_min(const uint8_t* packed, int j, int& scale, int& min) {
    if (j < 4) {
        scale = packed[j] & 63;
        min = packed[j + 4] & 63;
    } else {
        scale = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
        min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
    }
}

void dequant_q4_K(const BlockQ4K* x, float* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const BlockQ4K& blk = x[b];
        const float d = f16_to_f32(blk.d);
        const float dmin = f16_to_f32(blk.dmin);
        float* out = y + b * QK_K;
        for (int j = 0; j < QK_K / 32; ++j) {
            int sc = 0;
            int m = 0;
            q4_K_scale_min(blk.scales, j, sc, m);
            // ggml folds d·S and dmin·M first; keep that order for bit-exactness
            const float dl = d * static_cast<float>(sc);
            const float ml = dmin * static_cast<float>(m);
            for (int i = 0; i < 32; ++i) {
                const uint8_t byte = blk.qs[32 * (j / 2) + i];
                const int code = (j % 2 == 0) ? (byte & 15) : (byte >> 4);
                out[32 * j + i] = dl * static_cast<float>(code) - ml;
            }
        }
    }
}

void dequant_iq2_xxs(const BlockIQ2XXS* x, float* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const BlockIQ2XXS& blk = x[b];
        const float d = f16_to_f32(blk.d);
        float* out = y + b * QK_K;
        for (int g = 0; g < QK_K / 32; ++g) {
            uint32_t words[2];
            std::memcpy(words, &blk.qs[4 * g], sizeof(words));
            const auto* grid_index = reinterpret_cast<const uint8_t*>(&words[0]);
            const float gscale = d * (0.5f + static_cast<float>(words[1] >> 28)) * 0.25f;
            for (int k = 0; k < 4; ++k) {
                const uint64_t grid = kIq2Grid[grid_index[k]];
                const uint8_t signs = kIq2Signs[(words[1] >> (7 * k)) & 127];
                for (int j = 0; j < 8; ++j) {
                    const float mag = static_cast<float>((grid >> (8 * j)) & 0xff);
                    out[32 * g + 8 * k + j] = gscale * mag * ((signs & kIq2Mask[j]) ? -1.f : 1.f);
                }
            }
        }
    }
}

void dequant_q8_K(const BlockQ8K* x, float* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        for (int i = 0; i < QK_K; ++i) y[b * QK_K + i] = x[b].d * static_cast<float>(x[b].qs[i]);
    }
}

void dequant_f16(const uint16_t* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = f16_to_f32(x[i]);
}

void dequant_bf16(const uint16_t* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(x[i]);
}

}  // namespace ds4::quant::ref
