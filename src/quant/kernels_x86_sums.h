// Private to the x86 kernel files (kernels_avx2.cpp, kernels_avx512.cpp), both compiled
// with at least -mavx2 -mf16c; never include it from a baseline translation unit.
//
// Eight consecutive blocks at a time: their exact int32 sums (one vector of partial sums
// per block) transposed into one vector, then the scalar block-value expressions of
// kernels_detail.h evaluated lane-wise. Lane i holds block b + i, so adding the vector
// into an accumulator of kLanes lanes is the scalar "block b goes to lane b % kLanes" in
// increasing b: the results stay bit-identical to scalar, and the per-block horizontal
// sums, f16 conversions and scalar float work of the one-block-at-a-time loops go away.
#pragma once

#include <immintrin.h>

#include "quant/blocks.h"

namespace ds4::quant::x86 {
namespace {

// Pairwise sums of two blocks' partials, interleaved: [a0+a1, b0+b1, a2+a3, b2+b3, …].
// Two blends (any ALU port) and one in-lane shuffle: half the shuffle-port work of hadd.
inline __m256i interleaved_pair_sums(__m256i a, __m256i b) {
    const __m256i x = _mm256_blend_epi32(a, b, 0xaa);                                       // a0 b1 a2 b3
    const __m256i y = _mm256_shuffle_epi32(_mm256_blend_epi32(b, a, 0xaa), _MM_SHUFFLE(2, 3, 0, 1));  // a1 b0 a3 b2
    return _mm256_add_epi32(x, y);
}

// Same one level up: a = [A0 B0 A1 B1 | …], b = [C0 D0 C1 D1 | …] → [A B C D | …].
inline __m256i interleaved_quad_sums(__m256i a, __m256i b) {
    const __m256i x = _mm256_blend_epi32(a, b, 0xcc);                                       // A0 B0 C1 D1
    const __m256i y = _mm256_shuffle_epi32(_mm256_blend_epi32(b, a, 0xcc), _MM_SHUFFLE(1, 0, 3, 2));  // A1 B1 C0 D0
    return _mm256_add_epi32(x, y);
}

// Eight int32 vectors (block i's partial sums in v[i]) → one vector of the block sums.
inline __m256i transpose_sum8(const __m256i* v) {
    const __m256i q0 = interleaved_quad_sums(interleaved_pair_sums(v[0], v[1]), interleaved_pair_sums(v[2], v[3]));
    const __m256i q1 = interleaved_quad_sums(interleaved_pair_sums(v[4], v[5]), interleaved_pair_sums(v[6], v[7]));
    // q0 = [blocks 0..3 over the low 128 bits | over the high 128 bits], q1 likewise for 4..7
    const __m256i lo_hi = _mm256_blend_epi32(q0, q1, 0xf0);            // 0..3 low | 4..7 high
    const __m256i hi_lo = _mm256_permute2x128_si256(q0, q1, 0x21);     // 0..3 high | 4..7 low
    return _mm256_add_epi32(lo_hi, hi_lo);
}

// f32 of eight f16 fields 34–84 bytes apart, assembled in registers (a gather is slow on
// Intel, and scalar stores then a vector load would stall store-to-load forwarding).
template <typename Get>
inline __m256 f16x8(const Get& get) {
    const __m128i h = _mm_setr_epi16(static_cast<short>(get(0)), static_cast<short>(get(1)),
                                     static_cast<short>(get(2)), static_cast<short>(get(3)),
                                     static_cast<short>(get(4)), static_cast<short>(get(5)),
                                     static_cast<short>(get(6)), static_cast<short>(get(7)));
    return _mm256_cvtph_ps(h);
}

inline __m256 q8_K_scales8(const BlockQ8K* x) {
    return _mm256_setr_ps(x[0].d, x[1].d, x[2].d, x[3].d, x[4].d, x[5].d, x[6].d, x[7].d);
}

// detail::kquant_block_value for blocks w[0..7] (Q2_K / Q4_K): y.d·d·isum − y.d·dmin·msum.
template <typename Block>
inline __m256 kquant_block_values8(const Block* w, const BlockQ8K* x, __m256i isum, __m256i msum) {
    const __m256 yd = q8_K_scales8(x);
    const __m256 d = f16x8([w](int i) { return w[i].d; });
    const __m256 dmin = f16x8([w](int i) { return w[i].dmin; });
    return _mm256_sub_ps(_mm256_mul_ps(_mm256_mul_ps(yd, d), _mm256_cvtepi32_ps(isum)),
                         _mm256_mul_ps(_mm256_mul_ps(yd, dmin), _mm256_cvtepi32_ps(msum)));
}

// detail::iq2_xxs_block_value for blocks w[0..7]: d·y.d·isum.
inline __m256 iq2_xxs_block_values8(const BlockIQ2XXS* w, const BlockQ8K* x, __m256i isum) {
    const __m256 d = f16x8([w](int i) { return w[i].d; });
    return _mm256_mul_ps(_mm256_mul_ps(d, q8_K_scales8(x)), _mm256_cvtepi32_ps(isum));
}

}  // namespace
}  // namespace ds4::quant::x86
