// IQ2_XXS constant tables defined by the format (ggml's iq2xxs_grid, ksigns_iq2xs,
// kmask_iq2xs; formats.md §3.6). kGrid is derived from the 256-entry 2-bit code table
// kGridCodes and checked against the published SHA-1 digests in the tests.
#pragma once

#include <cstdint>

namespace ds4::quant {

extern const uint16_t kIq2GridCodes[256];  // kgrid_2bit_256: 8 × 2-bit fields (0..2)
extern const uint64_t kIq2Grid[256];       // 8 magnitude bytes ∈ {8, 25, 43}
extern const uint8_t kIq2Signs[128];       // s | parity(s) << 7
extern const uint8_t kIq2Mask[8];          // 1 << j

}  // namespace ds4::quant
