// Scalar encodings (formats.md §2): f16, bf16, FP8 E4M3, E8M0, FP4 E2M1.
#pragma once

#include <cstdint>

namespace ds4::quant {

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);     // round to nearest even; overflow -> inf; NaN -> sign|0x7e00
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);    // NaN -> (bits>>16)|0x40; else RNE
float e4m3_to_f32(uint8_t b);     // 0x7f/0xff (NaN) decode as 0, like the quantizer
float e8m0_to_f32(uint8_t b);     // 2^(e-127); e=0 -> 2^-127; 255 -> +inf
float e2m1_to_f32(uint8_t nibble);  // low 4 bits: bit3 sign, magnitude {0,.5,1,1.5,2,3,4,6}

}  // namespace ds4::quant
