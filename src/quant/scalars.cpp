#include "quant/scalars.h"

#include <bit>
#include <cmath>
#include <cstring>

namespace ds4::quant {

float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN keeps its payload
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        // subnormal: normalise the mantissa into an f32 exponent
        uint32_t e = 113;
        while ((mant & 0x400) == 0) {
            mant <<= 1;
            --e;
        }
        bits = sign | (e << 23) | ((mant & 0x3ff) << 13);
    }
    return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) {
    const uint32_t x = std::bit_cast<uint32_t>(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00;  // NaN
    if (ax >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: inf
    if (ax < 0x38800000u) {
        // result is subnormal or zero: shift with round-to-nearest-even
        if (ax < 0x33000000u) return sign;  // below half the smallest subnormal
        const uint32_t e = ax >> 23;
        const uint32_t m = (ax & 0x7fffff) | 0x800000;
        const uint32_t shift = 126 - e;  // 14 + (112 - e) ... maps to 2^-24 units
        uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) ++q;
        return sign | static_cast<uint16_t>(q);
    }
    // normal: rebias and round the 13 dropped mantissa bits to nearest even
    uint32_t r = ax - 0x38000000u;  // exponent 127 -> 15
    r += 0xfff + ((r >> 13) & 1);
    return sign | static_cast<uint16_t>(r >> 13);
}

float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
    const uint32_t x = std::bit_cast<uint32_t>(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);
    return static_cast<uint16_t>((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

float e4m3_to_f32(uint8_t b) {
    if ((b & 0x7f) == 0x7f) return 0.0f;  // NaN: the quantizer decodes it as 0
    const float sign = (b & 0x80) ? -1.0f : 1.0f;
    const int e = (b >> 3) & 0xf;
    const int m = b & 7;
    if (e == 0) return sign * std::ldexp(static_cast<float>(m), -9);
    return sign * std::ldexp(1.0f + static_cast<float>(m) / 8.0f, e - 7);
}

float e8m0_to_f32(uint8_t b) {
    if (b == 0) return std::bit_cast<float>(0x00400000u);  // 2^-127 as a subnormal
    if (b == 255) return INFINITY;
    return std::bit_cast<float>(static_cast<uint32_t>(b) << 23);
}

float e2m1_to_f32(uint8_t nibble) {
    static constexpr float kMag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    const float v = kMag[nibble & 7];
    return (nibble & 8) ? -v : v;
}

}  // namespace ds4::quant
