// Quant block layouts (ggml-standard; spec formats.md §3). Plain structs, all fields
// little-endian, read from possibly unaligned mmapped memory via memcpy or as byte arrays.
#pragma once

#include <cstdint>

namespace ds4::quant {

constexpr int QK_K = 256;
constexpr int QK8_0 = 32;

struct BlockQ8_0 {  // weights: f16 scale + 32 int8
    uint16_t d;
    int8_t qs[QK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34);

// CPU dense-matvec activation block: f32 scale per 32 values (formats.md §3.7 item 3).
struct BlockQ8_0F {
    float d;
    int8_t qs[QK8_0];
};
static_assert(sizeof(BlockQ8_0F) == 36);

struct BlockQ8K {  // activations only
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};
static_assert(sizeof(BlockQ8K) == 292);

struct BlockQ2K {
    uint8_t scales[QK_K / 16];  // low nibble scale, high nibble min
    uint8_t qs[QK_K / 4];
    uint16_t d;
    uint16_t dmin;
};
static_assert(sizeof(BlockQ2K) == 84);

struct BlockQ4K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(BlockQ4K) == 144);

struct BlockIQ2XXS {
    uint16_t d;
    uint16_t qs[QK_K / 8];
};
static_assert(sizeof(BlockIQ2XXS) == 66);

}  // namespace ds4::quant
