// AVX2 + FMA + F16C kernels. Compiled with -mavx2 -mfma -mf16c (simd.cmake) and only
// reached through avx2_kernels(), after the CPUID check.
//
// Exactness contract (checked by tests/quant_kernels): every integer sum equals the
// scalar one, and the float work per block is the scalar expression from
// kernels_detail.h, so the integer-format dots are bit-identical to scalar. Two
// pitfalls of the usual int8 tricks are avoided on purpose:
//  * _mm256_sign_epi8(q8, s) turns −128 into −128 instead of +128, so sign flips are
//    applied to the weight side (grid values ≤ 43) and |q8| goes into the unsigned
//    operand of maddubs, where 128 is representable.
//  * for Q8_0 (both sides int8) a weight of −128 facing a negative activation still
//    overflows; such rows (never produced by the Q8_0 quantizer, whose codes are within
//    ±127) are detected and recomputed with 16-bit products.
#include "quant/kernels_detail.h"

#if defined(DS4_QUANT_X86)

#include <immintrin.h>

#include "quant/iq2_tables.h"
#include "quant/kernels_x86_sums.h"
#include "quant/reference.h"

namespace ds4::quant::avx2 {
namespace {

using detail::kLanes;
using x86::transpose_sum8;

// ---- helpers ---------------------------------------------------------------------

inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

inline float hmax_ps(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ps(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

// Horizontal f32 sum in the order of detail::reduce_lanes.
inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline double hsum_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

inline float f16(uint16_t h) { return _cvtsh_ss(h); }  // exact, like f16_to_f32

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

// Four vectors of eight int32 → 32 saturated int8 in element order.
inline __m256i pack_i32_to_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i abcd = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// What ref::quantize_* does to a scaled value before rounding: NaN → 0, clamp to
// [−128, 127]; then round half to even (cvtps with the default MXCSR rounding).
inline __m256i round_clamped(__m256 v) {
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-128.f)), _mm256_set1_ps(127.f));
    return _mm256_cvtps_epi32(v);
}

inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), v); }

// ---- Q2_K · Q8_K -------------------------------------------------------------------

// shuffle controls: int16 scale 2k of a lane's 8 into the low 128 bits, 2k+1 into the high
struct ScaleShuffles {
    alignas(32) uint8_t q2[4][32];  // Q2_K: sub-blocks (2k, 2k+1) of a half
    alignas(32) uint8_t q4[8][32];  // Q4_K: sub-block j in both lanes
};
constexpr ScaleShuffles make_scale_shuffles() {
    ScaleShuffles s{};
    for (int k = 0; k < 4; ++k) {
        for (int i = 0; i < 32; ++i) {
            const int word = 2 * k + (i >= 16 ? 1 : 0);
            s.q2[k][i] = static_cast<uint8_t>(2 * word + (i & 1));
        }
    }
    for (int j = 0; j < 8; ++j) {
        for (int i = 0; i < 32; ++i) s.q4[j][i] = static_cast<uint8_t>(2 * j + (i & 1));
    }
    return s;
}
constexpr ScaleShuffles kShuffles = make_scale_shuffles();

// A block's partial sums: isum (Σ scale·code·q8) and msum (Σ min·bsum), eight int32
// lanes each, to be reduced exactly (any order: integers).
inline void q2_K_block_partials(const BlockQ2K& w, const BlockQ8K& x, __m256i& isum, __m256i& msum) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(15);
    const __m128i raw = load128(w.scales);
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
    msum = _mm256_madd_epi16(mins, load256(x.bsums));
    const __m128i scales8 = _mm_and_si128(raw, m4);

    __m256i acc = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
        const __m128i half8 = h == 0 ? scales8 : _mm_srli_si128(scales8, 8);
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(half8));
        const __m256i bits = load256(w.qs + 32 * h);
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
            // elements 128h + 32k + b: sub-block 8h+2k (b < 16) and 8h+2k+1 (b ≥ 16)
            const __m256i codes = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
            const __m256i p = _mm256_maddubs_epi16(codes, load256(x.qs + 128 * h + 32 * k));
            const __m256i sc = _mm256_shuffle_epi8(scales, load256(kShuffles.q2[k]));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc));
        }
    }
    isum = acc;
}

// Eight blocks per step through x86::kquant_block_values8; the < 8 tail blocks one by one.
float dot_q2_K_q8_K(const BlockQ2K* w, const BlockQ8K* x, int64_t n) {
    const int64_t nb = n / QK_K;
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + kLanes <= nb; b += kLanes) {
        __m256i isums[kLanes], msums[kLanes];
#pragma GCC unroll 8
        for (int i = 0; i < kLanes; ++i) q2_K_block_partials(w[b + i], x[b + i], isums[i], msums[i]);
        acc = _mm256_add_ps(acc, x86::kquant_block_values8(w + b, x + b, transpose_sum8(isums), transpose_sum8(msums)));
    }
    alignas(32) float lane[kLanes];
    _mm256_store_ps(lane, acc);
    for (; b < nb; ++b) {
        __m256i isum, msum;
        q2_K_block_partials(w[b], x[b], isum, msum);
        lane[b % kLanes] +=
            detail::kquant_block_value(x[b].d, f16(w[b].d), f16(w[b].dmin), hsum_i32(isum), hsum_i32(msum));
    }
    return detail::reduce_lanes(lane);
}

// ---- Q4_K · Q8_K -------------------------------------------------------------------

// Q4_K's 12 packed bytes → [S0..S7, M0..M7] as 16 bytes (formats.md §3.5), computed in
// a register (a round trip through memory would stall store-to-load forwarding):
//   S0..3 = w0 & 0x3f.., S4..7 = (w2 & 0x0f..) | ((w0 >> 6) & 0x03..) << 4,
//   M0..3 = w1 & 0x3f.., M4..7 = ((w2 >> 4) & 0x0f..) | ((w1 >> 6) & 0x03..) << 4
// for the little-endian words w0, w1, w2 of the packed bytes.
inline __m128i q4_K_scales_mins(const uint8_t* packed) {
    // 16 bytes from `packed` stay inside the block (the codes follow); lane 3 is unused
    const __m128i v = load128(packed);
    const __m128i a = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4));
    const __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));
    const __m128i low = _mm_and_si128(a, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i high = _mm_and_si128(_mm_srli_epi32(b, 6), _mm_setr_epi32(0, 0x03030303, 0, 0x03030303));
    return _mm_or_si128(low, _mm_slli_epi32(high, 4));
}

inline void q4_K_block_sums(const BlockQ4K& w, const BlockQ8K& x, int32_t& isum, int32_t& msum) {
    const __m128i sm8 = q4_K_scales_mins(w.scales);
    const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm8));
    const __m128i mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm8, 8));
    // bsum[2j] + bsum[2j+1] for j = 0..7 (each |bsum| ≤ 2048, so int16 is exact)
    const __m128i pair_bsums = _mm_hadd_epi16(load128(x.bsums), load128(x.bsums + 8));
    msum = 0;
    {
        __m128i m = _mm_madd_epi16(mins, pair_bsums);
        m = _mm_add_epi32(m, _mm_unpackhi_epi64(m, m));
        m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 1));
        msum = _mm_cvtsi128_si32(m);
    }

    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i acc = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j2 = 0; j2 < 4; ++j2) {
        const __m256i bits = load256(w.qs + 32 * j2);
        const __m256i lo = _mm256_and_si256(bits, m4);                         // sub-block 2·j2
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);   // sub-block 2·j2+1
        __m256i plo = _mm256_maddubs_epi16(lo, load256(x.qs + 64 * j2));
        __m256i phi = _mm256_maddubs_epi16(hi, load256(x.qs + 64 * j2 + 32));
        plo = _mm256_madd_epi16(plo, _mm256_shuffle_epi8(scales, load256(kShuffles.q4[2 * j2])));
        phi = _mm256_madd_epi16(phi, _mm256_shuffle_epi8(scales, load256(kShuffles.q4[2 * j2 + 1])));
        acc = _mm256_add_epi32(acc, _mm256_add_epi32(plo, phi));
    }
    isum = hsum_i32(acc);
}

float dot_q4_K_q8_K(const BlockQ4K* w, const BlockQ8K* x, int64_t n) {
    float lane[kLanes] = {};
    for (int64_t b = 0; b < n / QK_K; ++b) {
        int32_t isum = 0, msum = 0;
        q4_K_block_sums(w[b], x[b], isum, msum);
        lane[b % kLanes] +=
            detail::kquant_block_value(x[b].d, f16(w[b].d), f16(w[b].dmin), isum, msum);
    }
    return detail::reduce_lanes(lane);
}

// ---- IQ2_XXS · Q8_K ----------------------------------------------------------------

inline long long grid(uint32_t index) { return static_cast<long long>(kIq2Grid[index]); }

// 2·ls + 1 for each 4-bit ls, as sixteen int16: loaded, not broadcast from a register
// (a broadcast costs two shuffle-port µops per group).
struct GroupScales {
    alignas(32) int16_t v[16][16];
};
constexpr GroupScales make_group_scales() {
    GroupScales t{};
    for (int ls = 0; ls < 16; ++ls) {
        for (int i = 0; i < 16; ++i) t.v[ls][i] = static_cast<int16_t>(2 * ls + 1);
    }
    return t;
}
constexpr GroupScales kGroupScales = make_group_scales();

// Constants of the vectorized sign decoding below.
struct SignTables {
    alignas(32) uint8_t nibble_parity[32];  // parity(i & 15) in bit 7, per 128-bit lane
    alignas(32) uint8_t spread[4][32];      // pshufb: dword p's byte → its 8 values
    alignas(32) uint8_t bit[32];            // 1 << (i % 8)
};
constexpr SignTables make_sign_tables() {
    SignTables t{};
    for (int i = 0; i < 32; ++i) {
        const int nib = i & 15;
        const int par = (nib ^ (nib >> 1) ^ (nib >> 2) ^ (nib >> 3)) & 1;
        t.nibble_parity[i] = static_cast<uint8_t>(par << 7);
        t.bit[i] = static_cast<uint8_t>(1 << (i % 8));
    }
    // value i of a group is sub-group i / 8; the low 128 bits hold sub-groups 0, 1 and
    // the high 128 bits sub-groups 2, 3 (pshufb cannot cross the 128-bit halves)
    for (int p = 0; p < 4; ++p) {
        for (int i = 0; i < 32; ++i) t.spread[p][i] = static_cast<uint8_t>(4 * p + i / 8);
    }
    return t;
}
constexpr SignTables kSignTables = make_sign_tables();

// The 32 sign bytes s | parity(s) << 7 (== kIq2Signs[s]) of a block's 8 groups × 4
// sub-groups, decoded in one pass instead of 32 table lookups. Dword p of the low 128
// bits holds groups {0, 1, 4, 5}[p], of the high 128 bits groups {2, 3, 6, 7}[p]; byte k
// of a dword is sub-group k.
inline __m256i iq2_xxs_sign_bytes(const BlockIQ2XXS& w) {
    const __m256 lo = _mm256_castsi256_ps(load256(w.qs));       // a0 s0 a1 s1 | a2 s2 a3 s3
    const __m256 hi = _mm256_castsi256_ps(load256(w.qs + 16));  // a4 s4 a5 s5 | a6 s6 a7 s7
    const __m256i s = _mm256_castps_si256(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)));
    // the four 7-bit fields of each sign word into the four bytes of its dword
    __m256i b = _mm256_and_si256(s, _mm256_set1_epi32(0x7f));
    b = _mm256_or_si256(b, _mm256_and_si256(_mm256_slli_epi32(s, 1), _mm256_set1_epi32(0x7f00)));
    b = _mm256_or_si256(b, _mm256_and_si256(_mm256_slli_epi32(s, 2), _mm256_set1_epi32(0x7f0000)));
    b = _mm256_or_si256(b, _mm256_and_si256(_mm256_slli_epi32(s, 3), _mm256_set1_epi32(0x7f000000)));
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i table = load256(kSignTables.nibble_parity);
    const __m256i par = _mm256_xor_si256(_mm256_shuffle_epi8(table, _mm256_and_si256(b, m4)),
                                         _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(b, 4), m4)));
    return _mm256_or_si256(b, par);
}

// ±1 per value of the group in dword p of `dup` (sign bytes with both 128-bit halves
// equal), the operand of _mm256_sign_epi8.
inline __m256i iq2_xxs_group_signs(__m256i dup, int p) {
    const __m256i bit = load256(kSignTables.bit);
    const __m256i bytes = _mm256_shuffle_epi8(dup, load256(kSignTables.spread[p]));
    return _mm256_or_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit), _mm256_set1_epi8(1));
}

// The 32 magnitudes of a group: four 8-byte grid rows, loaded as two 128-bit halves
// (movsd + movhpd each) and joined. (Broadcasting each row from memory and blending,
// which keeps the shuffle port free, measured ~8 % slower on Zen 3; a 4-index gather
// ~40 % slower.)
inline __m256i iq2_xxs_group_grid(const uint8_t* index) {
    const auto rows = [](uint8_t a, uint8_t b) {
        const __m128d lo = _mm_load_sd(reinterpret_cast<const double*>(&kIq2Grid[a]));
        return _mm_castpd_si128(_mm_loadh_pd(lo, reinterpret_cast<const double*>(&kIq2Grid[b])));
    };
    return _mm256_inserti128_si256(_mm256_castsi128_si256(rows(index[0], index[1])), rows(index[2], index[3]), 1);
}

// kGroupScales row for a group's last byte (ls in its high nibble): the byte offset
// (byte & 0xf0) · 2 = ls · 32 needs one AND instead of a shift, a zero-extension and a
// scaled index.
inline __m256i iq2_xxs_group_scale(uint8_t last_byte) {
    const auto* base = reinterpret_cast<const uint8_t*>(kGroupScales.v);
    return load256(base + 2 * (last_byte & 0xf0u));
}

// A block's Σ (±grid)·q8·(2·ls + 1) as eight int32 partial sums.
inline __m256i iq2_xxs_block_partials(const BlockIQ2XXS& w, const BlockQ8K& x) {
    const __m256i sign_bytes = iq2_xxs_sign_bytes(w);
    const __m256i low_dup = _mm256_permute2x128_si256(sign_bytes, sign_bytes, 0x00);
    const __m256i high_dup = _mm256_permute2x128_si256(sign_bytes, sign_bytes, 0x11);
    const auto* bytes = reinterpret_cast<const uint8_t*>(w.qs);  // group g: bytes 8g..8g+7
    __m256i acc = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int g = 0; g < QK_K / 32; ++g) {
        const __m256i sgn = iq2_xxs_group_signs((g / 2) % 2 == 0 ? low_dup : high_dup, 2 * (g / 4) + g % 2);
        const __m256i mag = iq2_xxs_group_grid(bytes + 8 * g);
        const __m256i q8 = load256(x.qs + 32 * g);
        // (±mag)·q8 = |q8| · (±mag·sign(q8)): the unsigned side may be 128
        const __m256i w8 = _mm256_sign_epi8(_mm256_sign_epi8(mag, sgn), q8);
        const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(q8), w8);
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, iq2_xxs_group_scale(bytes[8 * g + 7])));
    }
    return acc;
}

// Eight blocks per step through x86::iq2_xxs_block_values8; the < 8 tail blocks one by one.
float dot_iq2_xxs_q8_K(const BlockIQ2XXS* w, const BlockQ8K* x, int64_t n) {
    const int64_t nb = n / QK_K;
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + kLanes <= nb; b += kLanes) {
        __m256i sums[kLanes];
#pragma GCC unroll 1  // a block is ~200 instructions already
        for (int i = 0; i < kLanes; ++i) sums[i] = iq2_xxs_block_partials(w[b + i], x[b + i]);
        acc = _mm256_add_ps(acc, x86::iq2_xxs_block_values8(w + b, x + b, transpose_sum8(sums)));
    }
    alignas(32) float lane[kLanes];
    _mm256_store_ps(lane, acc);
    for (; b < nb; ++b) {
        lane[b % kLanes] +=
            detail::iq2_xxs_block_value(x[b].d, f16(w[b].d), hsum_i32(iq2_xxs_block_partials(w[b], x[b])));
    }
    return detail::kIq2RowScale * detail::reduce_lanes(lane);
}

// ---- Q8_0 · Q8_0F ------------------------------------------------------------------

// Exact Σ qw·qx of one block with 16-bit products (no int8 corner cases).
inline int32_t q8_0_block_sum_exact(const BlockQ8_0& w, const BlockQ8_0F& x) {
    const __m256i w0 = _mm256_cvtepi8_epi16(load128(w.qs));
    const __m256i w1 = _mm256_cvtepi8_epi16(load128(w.qs + 16));
    const __m256i x0 = _mm256_cvtepi8_epi16(load128(x.qs));
    const __m256i x1 = _mm256_cvtepi8_epi16(load128(x.qs + 16));
    return hsum_i32(_mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1)));
}

float dot_q8_0_q8_0f_exact(const BlockQ8_0* w, const BlockQ8_0F* x, int64_t n) {
    float lane[kLanes] = {};
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        lane[b % kLanes] +=
            detail::q8_0_block_value(f16(w[b].d), x[b].d, q8_0_block_sum_exact(w[b], x[b]));
    }
    return detail::reduce_lanes(lane);
}

// dw·dx of blocks b..b+7 (scales strided 34 / 36 bytes apart), assembled in registers:
// a gather is slow on Intel (microcode mitigation of GDS), and scalar stores followed
// by one vector load would defeat store-to-load forwarding.
inline __m256 q8_0_block_scales(const BlockQ8_0* w, const BlockQ8_0F* x) {
    const __m128i d16 = _mm_setr_epi16(static_cast<short>(w[0].d), static_cast<short>(w[1].d),
                                       static_cast<short>(w[2].d), static_cast<short>(w[3].d),
                                       static_cast<short>(w[4].d), static_cast<short>(w[5].d),
                                       static_cast<short>(w[6].d), static_cast<short>(w[7].d));
    const __m256 dx = _mm256_setr_ps(x[0].d, x[1].d, x[2].d, x[3].d, x[4].d, x[5].d, x[6].d, x[7].d);
    return _mm256_mul_ps(_mm256_cvtph_ps(d16), dx);
}

float dot_q8_0_q8_0f(const BlockQ8_0* w, const BlockQ8_0F* x, int64_t n) {
    const int64_t nb = n / QK8_0;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i minus128 = _mm256_set1_epi8(-128);
    __m256i overflow_risk = _mm256_setzero_si256();
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + kLanes <= nb; b += kLanes) {
        __m256i sums[kLanes];
#pragma GCC unroll 8
        for (int i = 0; i < kLanes; ++i) {
            const __m256i wv = load256(w[b + i].qs);
            const __m256i xv = load256(x[b + i].qs);
            overflow_risk = _mm256_or_si256(overflow_risk, _mm256_cmpeq_epi8(wv, minus128));
            const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(xv), _mm256_sign_epi8(wv, xv));
            sums[i] = _mm256_madd_epi16(p, ones);
        }
        const __m256 isum = _mm256_cvtepi32_ps(transpose_sum8(sums));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(q8_0_block_scales(w + b, x + b), isum));
    }
    if (!_mm256_testz_si256(overflow_risk, overflow_risk)) return dot_q8_0_q8_0f_exact(w, x, n);
    alignas(32) float lane[kLanes];
    _mm256_store_ps(lane, acc);
    for (; b < nb; ++b) {
        lane[b % kLanes] +=
            detail::q8_0_block_value(f16(w[b].d), x[b].d, q8_0_block_sum_exact(w[b], x[b]));
    }
    return detail::reduce_lanes(lane);
}

// Prefetch for the multi-row Q8_0 dots. Four rows are four short interleaved streams,
// which Zen 3's prefetchers follow worse than one long stream (from DRAM the 4-row
// kernel alone ran 20-25 % below the single-row one there, while it was 1.3-1.4× faster
// on the Xeon host). Callers pass consecutive rows of a matrix, so the bytes after the
// last row are the next call's rows: while a group is computed, the next group (the
// same byte count) is requested as one linear stream, 1/steps of it per step.
// (Integer address arithmetic: after a matrix's last group the addresses lie outside
// any object, which a prefetch may touch but pointer arithmetic may not form.)
inline void prefetch_next_group(uintptr_t next, int64_t group_bytes, int64_t step, int64_t steps) {
    const auto chunk = static_cast<uintptr_t>((group_bytes + steps - 1) / steps);
    const uintptr_t end = next + (static_cast<uintptr_t>(step) + 1) * chunk;
    for (uintptr_t a = next + static_cast<uintptr_t>(step) * chunk; a < end; a += 64)
        _mm_prefetch(reinterpret_cast<const char*>(a), _MM_HINT_T0);
}

// kDotRows rows against one activation. Each row's block sums and float work are those
// of dot_q8_0_q8_0f (so each out[r] is bit-identical to it), but the activation codes
// and scales are loaded once for all rows. The sign trick is mirrored: |w| goes into
// the unsigned operand (128 is representable there) and sign(x, w) into the signed one,
// so here an activation code of −128 (which the Q8_0F quantizer never writes: its
// codes are within ±127) is the case that sends every row to the exact path.
void dot_q8_0_q8_0f_rows(const BlockQ8_0* const* w, const BlockQ8_0F* x, int64_t n, float* out) {
    const int64_t nb = n / QK8_0;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i x_min = _mm256_setzero_si256();
    __m256 acc[kDotRows];
    for (__m256& a : acc) a = _mm256_setzero_ps();
    const uintptr_t next = reinterpret_cast<uintptr_t>(w[kDotRows - 1] + nb);  // one past its end
    const int64_t group_bytes = kDotRows * nb * static_cast<int64_t>(sizeof(BlockQ8_0));
    int64_t b = 0;
    for (; b + kLanes <= nb; b += kLanes) {
        prefetch_next_group(next, group_bytes, b / kLanes, nb / kLanes);
        const BlockQ8_0F* xb = x + b;
        const __m256 dx = _mm256_setr_ps(xb[0].d, xb[1].d, xb[2].d, xb[3].d, xb[4].d, xb[5].d, xb[6].d, xb[7].d);
        __m256i xv[kLanes];
#pragma GCC unroll 8
        for (int i = 0; i < kLanes; ++i) {
            xv[i] = load256(xb[i].qs);
            x_min = _mm256_min_epi8(x_min, xv[i]);
        }
#pragma GCC unroll 4
        for (int r = 0; r < kDotRows; ++r) {
            const BlockQ8_0* wb = w[r] + b;
            __m256i sums[kLanes];
#pragma GCC unroll 8
            for (int i = 0; i < kLanes; ++i) {
                const __m256i wv = load256(wb[i].qs);
                const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv[i], wv));
                sums[i] = _mm256_madd_epi16(p, ones);
            }
            const __m128i d16 = _mm_setr_epi16(static_cast<short>(wb[0].d), static_cast<short>(wb[1].d),
                                               static_cast<short>(wb[2].d), static_cast<short>(wb[3].d),
                                               static_cast<short>(wb[4].d), static_cast<short>(wb[5].d),
                                               static_cast<short>(wb[6].d), static_cast<short>(wb[7].d));
            const __m256 scales = _mm256_mul_ps(_mm256_cvtph_ps(d16), dx);
            acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(scales, _mm256_cvtepi32_ps(transpose_sum8(sums))));
        }
    }
    if (!_mm256_testz_si256(_mm256_cmpeq_epi8(x_min, _mm256_set1_epi8(-128)),
                            _mm256_cmpeq_epi8(x_min, _mm256_set1_epi8(-128)))) {
        for (int r = 0; r < kDotRows; ++r) out[r] = dot_q8_0_q8_0f_exact(w[r], x, n);
        return;
    }
    for (int r = 0; r < kDotRows; ++r) {
        alignas(32) float lane[kLanes];
        _mm256_store_ps(lane, acc[r]);
        for (int64_t t = b; t < nb; ++t) {
            lane[t % kLanes] +=
                detail::q8_0_block_value(f16(w[r][t].d), x[t].d, q8_0_block_sum_exact(w[r][t], x[t]));
        }
        out[r] = detail::reduce_lanes(lane);
    }
}

// ---- float rows --------------------------------------------------------------------

// f32 accumulation like scalar, but in 32 interleaved partial sums (FMA): a different
// summation order, so results agree with scalar to rounding, not bit for bit.
float dot_f16_f32(const uint16_t* w, const float* x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(load128(w + i)), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(load128(w + i + 8)), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(load128(w + i + 16)), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(load128(w + i + 24)), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(load128(w + i)), _mm256_loadu_ps(x + i), a0);
    }
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; ++i) sum += f16(w[i]) * x[i];
    return sum;
}

// Double accumulation like scalar; products of floats are exact in double, so only the
// (much finer) double summation order differs from scalar.
float dot_f32_f32(const float* w, const float* x, int64_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(w + i)), _mm256_cvtps_pd(_mm_loadu_ps(x + i)), a0);
        a1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(w + i + 4)), _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), a1);
        a2 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(w + i + 8)), _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)), a2);
        a3 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(w + i + 12)), _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12)), a3);
    }
    double sum = hsum_pd(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
    for (; i < n; ++i) sum += static_cast<double>(w[i]) * static_cast<double>(x[i]);
    return static_cast<float>(sum);
}

// ---- dequantization (bit-identical to ref::dequant_*) ------------------------------

inline __m256 bytes_to_ps_u8(__m128i eight_bytes) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight_bytes));
}

void dequant_q8_0(const BlockQ8_0* x, float* y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const __m256 d = _mm256_set1_ps(f16(x[b].d));
        for (int i = 0; i < QK8_0; i += 8) {
            const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(x[b].qs + i));
            const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
            _mm256_storeu_ps(y + b * QK8_0 + i, _mm256_mul_ps(d, v));
        }
    }
}

void dequant_q2_K(const BlockQ2K* x, float* y, int64_t n) {
    const __m128i m3 = _mm_set1_epi8(3);
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const BlockQ2K& blk = x[b];
        const float d = f16(blk.d);
        const float dmin = f16(blk.dmin);
        float* out = y + b * QK_K;
        for (int s = 0; s < QK_K / 16; ++s) {
            // ref: d·sc·code − dmin·m evaluated as (d·sc)·code − dmin·m
            const __m256 dl = _mm256_set1_ps(d * static_cast<float>(blk.scales[s] & 15));
            const __m256 ml = _mm256_set1_ps(dmin * static_cast<float>(blk.scales[s] >> 4));
            const int shift = 2 * ((s % 8) / 2);
            const __m128i bytes = load128(blk.qs + 32 * (s / 8) + 16 * (s % 2));
            const __m128i codes = _mm_and_si128(_mm_srl_epi16(bytes, _mm_cvtsi32_si128(shift)), m3);
            const __m256 c0 = bytes_to_ps_u8(codes);
            const __m256 c1 = bytes_to_ps_u8(_mm_srli_si128(codes, 8));
            _mm256_storeu_ps(out + 16 * s, _mm256_sub_ps(_mm256_mul_ps(dl, c0), ml));
            _mm256_storeu_ps(out + 16 * s + 8, _mm256_sub_ps(_mm256_mul_ps(dl, c1), ml));
        }
    }
}

void dequant_q4_K(const BlockQ4K* x, float* y, int64_t n) {
    const __m128i m4 = _mm_set1_epi8(15);
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const BlockQ4K& blk = x[b];
        const float d = f16(blk.d);
        const float dmin = f16(blk.dmin);
        uint8_t sm[16];
        detail::unpack_q4_K_scales(blk.scales, sm);
        float* out = y + b * QK_K;
        for (int j = 0; j < QK_K / 32; ++j) {
            const __m256 dl = _mm256_set1_ps(d * static_cast<float>(sm[j]));
            const __m256 ml = _mm256_set1_ps(dmin * static_cast<float>(sm[8 + j]));
            for (int h = 0; h < 2; ++h) {
                __m128i codes = load128(blk.qs + 32 * (j / 2) + 16 * h);
                if (j % 2 == 1) codes = _mm_srli_epi16(codes, 4);
                codes = _mm_and_si128(codes, m4);
                const __m256 c0 = bytes_to_ps_u8(codes);
                const __m256 c1 = bytes_to_ps_u8(_mm_srli_si128(codes, 8));
                _mm256_storeu_ps(out + 32 * j + 16 * h, _mm256_sub_ps(_mm256_mul_ps(dl, c0), ml));
                _mm256_storeu_ps(out + 32 * j + 16 * h + 8, _mm256_sub_ps(_mm256_mul_ps(dl, c1), ml));
            }
        }
    }
}

void dequant_iq2_xxs(const BlockIQ2XXS* x, float* y, int64_t n) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i sign_bit = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float d = f16(x[b].d);
        float* out = y + b * QK_K;
        for (int g = 0; g < QK_K / 32; ++g) {
            uint32_t aux[2];
            std::memcpy(aux, &x[b].qs[4 * g], sizeof(aux));
            const __m256 gscale =
                _mm256_set1_ps(d * (0.5f + static_cast<float>(aux[1] >> 28)) * 0.25f);
            for (int k = 0; k < 4; ++k) {
                const __m128i mag = _mm_cvtsi64_si128(grid((aux[0] >> (8 * k)) & 0xff));
                const __m256 v = _mm256_mul_ps(gscale, bytes_to_ps_u8(mag));
                // ×(−1) of ref is an exact sign flip: xor the sign bit where the sign is set
                const __m256i s = _mm256_set1_epi32(detail::kIq2SignBytes.v[(aux[1] >> (7 * k)) & 127]);
                const __m256i neg = _mm256_cmpeq_epi32(_mm256_and_si256(s, bit), bit);
                const __m256i r = _mm256_xor_si256(_mm256_castps_si256(v), _mm256_and_si256(neg, sign_bit));
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * g + 8 * k), r);
            }
        }
    }
}

void dequant_f16(const uint16_t* x, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(load128(x + i)));
    for (; i < n; ++i) y[i] = f16(x[i]);
}

// ---- activation quantization (byte-identical to ref::quantize_*) ------------------

void quantize_q8_K(const float* x, BlockQ8K* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float* xb = x + b * QK_K;
        BlockQ8K& out = y[b];
        // max_ps(a, m) returns m when a is NaN: NaNs are skipped like ref's `ax > amax`
        __m256 vmax = _mm256_setzero_ps();
        for (int i = 0; i < QK_K; i += 8) vmax = _mm256_max_ps(abs_ps(_mm256_loadu_ps(xb + i)), vmax);
        const float amax = hmax_ps(vmax);
        if (amax == 0.f) {
            std::memset(&out, 0, sizeof(out));
            continue;
        }
        // the first element reaching amax, with its sign
        float max = 0.f;
        for (int i = 0; i < QK_K; i += 8) {
            const __m256 eq = _mm256_cmp_ps(abs_ps(_mm256_loadu_ps(xb + i)), _mm256_set1_ps(amax), _CMP_EQ_OQ);
            const int mask = _mm256_movemask_ps(eq);
            if (mask != 0) {
                max = xb[i + __builtin_ctz(static_cast<unsigned>(mask))];
                break;
            }
        }
        const float iscale = -127.f / max;
        if (!__builtin_isfinite(iscale)) {  // |max| < 127/FLT_MAX: codes 0, like ref
            std::memset(&out, 0, sizeof(out));
            out.d = 1.f / iscale;
            continue;
        }
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int i = 0; i < QK_K; i += 32) {
            const __m256i q = pack_i32_to_i8(round_clamped(_mm256_mul_ps(vs, _mm256_loadu_ps(xb + i))),
                                             round_clamped(_mm256_mul_ps(vs, _mm256_loadu_ps(xb + i + 8))),
                                             round_clamped(_mm256_mul_ps(vs, _mm256_loadu_ps(xb + i + 16))),
                                             round_clamped(_mm256_mul_ps(vs, _mm256_loadu_ps(xb + i + 24))));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.qs + i), q);
        }
        detail::fill_q8_K_bsums(out);
        out.d = 1.f / iscale;
    }
}

void quantize_q8_0f(const float* x, BlockQ8_0F* y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const float* xb = x + b * QK8_0;
        const __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        const __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        const __m256 m = _mm256_max_ps(_mm256_max_ps(abs_ps(v0), abs_ps(v1)),
                                       _mm256_max_ps(abs_ps(v2), abs_ps(v3)));
        const float s = hmax_ps(m) / 127.f;
        y[b].d = s;
        if (s == 0.f) {
            std::memset(y[b].qs, 0, sizeof(y[b].qs));
            continue;
        }
        const float inv = 1.f / s;
        if (!__builtin_isfinite(inv)) {  // subnormal s: codes 0, like ref
            std::memset(y[b].qs, 0, sizeof(y[b].qs));
            continue;
        }
        const __m256 id = _mm256_set1_ps(inv);
        const __m256i q = pack_i32_to_i8(round_clamped(_mm256_mul_ps(v0, id)), round_clamped(_mm256_mul_ps(v1, id)),
                                         round_clamped(_mm256_mul_ps(v2, id)), round_clamped(_mm256_mul_ps(v3, id)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs), q);
    }
}

}  // namespace
}  // namespace ds4::quant::avx2

namespace ds4::quant::detail {

const Kernels kAvx2Kernels = {
    .isa = Isa::AVX2,
    .dequant_q8_0 = avx2::dequant_q8_0,
    .dequant_q2_K = avx2::dequant_q2_K,
    .dequant_q4_K = avx2::dequant_q4_K,
    .dequant_iq2_xxs = avx2::dequant_iq2_xxs,
    .dequant_f16 = avx2::dequant_f16,
    .quantize_q8_K = avx2::quantize_q8_K,
    .quantize_q8_0f = avx2::quantize_q8_0f,
    .dot_q2_K_q8_K = avx2::dot_q2_K_q8_K,
    .dot_q4_K_q8_K = avx2::dot_q4_K_q8_K,
    .dot_iq2_xxs_q8_K = avx2::dot_iq2_xxs_q8_K,
    .dot_q8_0_q8_0f = avx2::dot_q8_0_q8_0f,
    .dot_f16_f32 = avx2::dot_f16_f32,
    .dot_f32_f32 = avx2::dot_f32_f32,
    .dot_q8_0_q8_0f_rows = avx2::dot_q8_0_q8_0f_rows,
};

}  // namespace ds4::quant::detail

#endif  // DS4_QUANT_X86
