// "Fast random blocks": valid quant blocks drawn directly from the RNG instead of
// quantizing generated floats. Quantizing the full published shape with the reference
// IQ2_XXS search would take hours; random codes with a chosen f16 scale cost about as
// much as writing the bytes. The scale is chosen so the dequantized values have mean ≈ 0
// and RMS ≈ the requested value, i.e. the same statistics the real quantizer would give
// the generated rows:
//
//   Q8_0     q uniform in [-127, 127], d = rms / sqrt(E[q²])
//   Q2_K     scale nibble s uniform in 1..15, min nibble = s, dmin = 1.5·d, codes uniform
//            → value = d·s·(q − 1.5), E = d²·E[s²]·1.25
//   Q4_K     6-bit scale S uniform in 1..63, min = S, dmin = 7.5·d, codes uniform
//            → value = d·S·(q − 7.5), E = d²·E[S²]·21.25
//   IQ2_XXS  grid indices, sign indices and group scales ls all uniform (the 8 group
//            bytes are simply random), d = rms / (0.25·sqrt(E[(ls+½)²]·E[grid²]))
#pragma once

#include <cstdint>
#include <span>
#include <string>  // ggml_types.h uses std::string without including it

#include "gguf/ggml_types.h"
#include "rng.h"

namespace ds4::synth {

bool has_random_blocks(GgmlType t);  // Q8_0, Q2_K, Q4_K, IQ2_XXS

// Fills dst (ggml_row_bytes(t, n) bytes) with random blocks for n values.
void random_blocks(GgmlType t, float rms, Rng& rng, std::span<uint8_t> dst, int64_t n);

}  // namespace ds4::synth
