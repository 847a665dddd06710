// Private to src/quant: the pieces every ISA's kernels must share so that their float
// results are bit-identical to the scalar reference.
//
// The integer-format dots (Q2_K, Q4_K, IQ2_XXS against Q8_K; Q8_0 against Q8_0F) follow
// formats.md §3.7: exact integer sums per block, then one float "block value" per block.
// Block values are accumulated into kLanes float lanes (block b goes to lane b % kLanes,
// in increasing b), and the lanes are summed in the fixed tree of reduce_lanes(). That
// order is what an 8-wide f32 vector does naturally, so SIMD code can keep one vector of
// lanes and still reproduce the scalar result bit for bit.
//
// Everything here has internal linkage on purpose: each ISA translation unit is compiled
// with its own -m flags, and a shared inline definition with external linkage could be
// resolved by the linker to the AVX-512 copy and executed on a CPU without AVX-512.
// All of src/quant is compiled with -ffp-contract=off (simd.cmake), so a*b - c*d below is
// never fused into an FMA in one TU and not in another.
#pragma once

#include <cstdint>
#include <cstring>

#include "quant/blocks.h"
#include "quant/kernels.h"

namespace ds4::quant::detail {

// Per-ISA tables (plain data, so merely referencing them executes no ISA-specific code).
extern const Kernels kScalarKernels;
#if defined(DS4_QUANT_X86)
extern const Kernels kAvx2Kernels;
extern const Kernels kAvx512Kernels;
#endif

namespace {

constexpr int kLanes = 8;

// ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)): the order of the usual 256-bit horizontal sum
// (fold the high 128 bits onto the low, then the high 64, then the high 32).
inline float reduce_lanes(const float* lane) {
    const float s0 = lane[0] + lane[4];
    const float s1 = lane[1] + lane[5];
    const float s2 = lane[2] + lane[6];
    const float s3 = lane[3] + lane[7];
    return (s0 + s2) + (s1 + s3);
}

// Block value of Q2_K·Q8_K and Q4_K·Q8_K: y.d·d·isum − y.d·dmin·msum (§3.7).
inline float kquant_block_value(float yd, float d, float dmin, int32_t isum, int32_t msum) {
    return yd * d * static_cast<float>(isum) - yd * dmin * static_cast<float>(msum);
}

// Block value of IQ2_XXS·Q8_K without the final 0.125 (applied once to the row sum;
// a power of two, so it commutes with the additions unless the sum is subnormal).
inline float iq2_xxs_block_value(float yd, float d, int32_t isum) {
    return d * yd * static_cast<float>(isum);
}
constexpr float kIq2RowScale = 0.125f;

// Block value of Q8_0·Q8_0F: f32(d_w)·s_x·Σ qw·qx.
inline float q8_0_block_value(float dw, float dx, int32_t isum) {
    return dw * dx * static_cast<float>(isum);
}

// Q4_K's 12 packed bytes → 8 six-bit scales (bytes 0..7) and 8 mins (bytes 8..15),
// following formats.md §3.5 with 32-bit word operations (each byte lane of a word is
// independent, so shifting whole words and masking is the per-byte formula).
inline void unpack_q4_K_scales(const uint8_t* packed, uint8_t* out16) {
    uint32_t w[3];
    std::memcpy(w, packed, sizeof(w));
    constexpr uint32_t kLow6 = 0x3f3f3f3fu, kLow4 = 0x0f0f0f0fu, kLow2 = 0x03030303u;
    const uint32_t scales_lo = w[0] & kLow6;                                 // S0..S3
    const uint32_t scales_hi = (w[2] & kLow4) | (((w[0] >> 6) & kLow2) << 4);  // S4..S7
    const uint32_t mins_lo = w[1] & kLow6;                                   // M0..M3
    const uint32_t mins_hi = ((w[2] >> 4) & kLow4) | (((w[1] >> 6) & kLow2) << 4);  // M4..M7
    const uint32_t out[4] = {scales_lo, scales_hi, mins_lo, mins_hi};
    std::memcpy(out16, out, sizeof(out));
}

// The IQ2_XXS sign byte for a 7-bit sign index: the 8th sign is the parity bit, so every
// 8-value sub-group has an even number of negatives (formats.md §3.6, == kIq2Signs[s]).
constexpr uint8_t iq2_sign_byte(uint32_t s) {
    uint32_t parity = 0;
    for (uint32_t v = s; v != 0; v >>= 1) parity ^= v & 1u;
    return static_cast<uint8_t>(s | (parity << 7));
}
struct Iq2SignBytes {
    uint8_t v[128];
};
constexpr Iq2SignBytes make_iq2_sign_bytes() {
    Iq2SignBytes t{};
    for (uint32_t s = 0; s < 128; ++s) t.v[s] = iq2_sign_byte(s);
    return t;
}
constexpr Iq2SignBytes kIq2SignBytes = make_iq2_sign_bytes();

// Q8_K bsums: exact sums of the 16-value groups.
inline void fill_q8_K_bsums(BlockQ8K& y) {
    for (int g = 0; g < QK_K / 16; ++g) {
        int sum = 0;
        for (int i = 0; i < 16; ++i) sum += y.qs[16 * g + i];
        y.bsums[g] = static_cast<int16_t>(sum);
    }
}

}  // namespace
}  // namespace ds4::quant::detail
