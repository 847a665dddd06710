// AVX-512 (F, BW, VL, DQ) kernels. Compiled with -mavx512* (simd.cmake) and only reached
// through avx512_kernels(), after the CPUID check. Same exactness contract as the AVX2
// file (see there): integer sums per block with 512-bit vectors, then the scalar block
// value expressions of kernels_detail.h, so integer-format dots are bit-identical to
// scalar. AVX-512 has no sign_epi8; sign flips use masked subtraction instead, and the
// masks of the IQ2_XXS signs and of the activation signs are combined with one XOR.
#include "quant/kernels_detail.h"

#if defined(DS4_QUANT_X86)

// g++ 12's AVX-512 headers build "undefined" vectors as `__m512 __Y = __Y;`, which
// -Wuninitialized flags wherever those intrinsics are inlined (GCC bug 105593, fixed in
// 13); the pragma covers only the header's own lines.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "quant/iq2_tables.h"
#include "quant/kernels_x86_sums.h"
#include "quant/reference.h"

namespace ds4::quant::avx512 {
namespace {

using detail::kLanes;

// ---- helpers ---------------------------------------------------------------------

inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// Two 32-byte pieces from different places into one vector (low, high).
inline __m512i load_2x256(const void* lo, const void* hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(load256(lo)), load256(hi), 1);
}

inline __m512i negate_where(__m512i v, __mmask64 m) {
    return _mm512_mask_sub_epi8(v, m, _mm512_setzero_si512(), v);
}

inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

inline float hsum_ps(__m512 v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline double hsum_pd(__m512d v) {
    const __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

// [a0+a1, a2+a3, …, a14+a15, b0+b1, …, b14+b15]
inline __m512i pair_sums(__m512i a, __m512i b) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_add_epi32(_mm512_permutex2var_epi32(a, even, b), _mm512_permutex2var_epi32(a, odd, b));
}

// v[i] holds blocks 2i (low half) and 2i+1 (high half), 8 partial sums each
// → one vector of the 16 block sums in block order.
inline __m512i transpose_sum16(const __m512i* v) {
    const __m512i b0_3 = pair_sums(v[0], v[1]);
    const __m512i b4_7 = pair_sums(v[2], v[3]);
    const __m512i b8_11 = pair_sums(v[4], v[5]);
    const __m512i b12_15 = pair_sums(v[6], v[7]);
    return pair_sums(pair_sums(b0_3, b4_7), pair_sums(b8_11, b12_15));
}

// What ref::quantize_* does before rounding: NaN → 0, clamp to [−128, 127].
inline __m512i round_clamped(__m512 v) {
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-128.f)), _mm512_set1_ps(127.f));
    return _mm512_cvtps_epi32(v);  // default MXCSR rounding: half to even
}

inline void store_i8x16(int8_t* dst, __m512i v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtsepi32_epi8(v));
}

// ---- scale shuffles ----------------------------------------------------------------

// pshufb controls broadcasting per-sub-block int16 scales over their products (vpshufb
// is one µop; the cross-lane vpermw it replaces is two on Intel's shuffle port).
struct ScaleShuffles {
    // Q2_K, scales arranged [s0..7 | s0..7 | s8..15 | s8..15] per 128-bit lane: lanes get
    // words 2k, 2k+1, 2k, 2k+1 (= sub-blocks 2k, 2k+1, 8+2k, 9+2k)
    alignas(64) uint8_t q2[4][64];
    // Q4_K, S0..S7 in every lane: 256-bit halves get words (0,2), (1,3), (4,6), (5,7)
    alignas(64) uint8_t q4[4][64];
};
constexpr ScaleShuffles make_scale_shuffles() {
    ScaleShuffles t{};
    for (int k = 0; k < 4; ++k) {
        for (int i = 0; i < 64; ++i) {
            const int lane = i / 16;
            const int word = 2 * k + (lane % 2);
            t.q2[k][i] = static_cast<uint8_t>(2 * word + (i & 1));
        }
    }
    const int halves[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    for (int k = 0; k < 4; ++k) {
        for (int i = 0; i < 64; ++i) t.q4[k][i] = static_cast<uint8_t>(2 * halves[k][i / 32] + (i & 1));
    }
    return t;
}
constexpr ScaleShuffles kShuffles = make_scale_shuffles();

// Q4_K's packed scales → [S0..S7, M0..M7] bytes in a register (see the AVX2 file).
inline __m128i q4_K_scales_mins(const uint8_t* packed) {
    const __m128i v = load128(packed);  // stays inside the block; lane 3 unused
    const __m128i a = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4));
    const __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));
    const __m128i low = _mm_and_si128(a, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i high = _mm_and_si128(_mm_srli_epi32(b, 6), _mm_setr_epi32(0, 0x03030303, 0, 0x03030303));
    return _mm_or_si128(low, _mm_slli_epi32(high, 4));
}

// ---- Q2_K · Q8_K -------------------------------------------------------------------

// The 16 int32 lanes of a 512-bit partial-sum vector folded to 8 (exact).
inline __m256i fold_i32(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

// A block's partial sums isum (Σ scale·code·q8) and msum (Σ min·bsum), eight int32
// lanes each.
inline void q2_K_block_partials(const BlockQ2K& w, const BlockQ8K& x, __m256i& isum, __m256i& msum) {
    const __m128i m4 = _mm_set1_epi8(15);
    const __m128i raw = load128(w.scales);
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
    msum = _mm256_madd_epi16(mins, load256(x.bsums));
    const __m512i s16 = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(raw, m4)));
    const __m512i scales = _mm512_shuffle_i64x2(s16, s16, _MM_SHUFFLE(1, 1, 0, 0));

    // one load covers both 128-value halves: bytes 0..31 → half 0, 32..63 → half 1
    const __m512i bits = load512(w.qs);
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i acc = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
        const __m512i codes = _mm512_and_si512(_mm512_srli_epi16(bits, 2 * k), m3);
        const __m512i q8 = load_2x256(x.qs + 32 * k, x.qs + 128 + 32 * k);
        const __m512i p = _mm512_maddubs_epi16(codes, q8);
        const __m512i sc = _mm512_shuffle_epi8(scales, load512(kShuffles.q2[k]));
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p, sc));
    }
    isum = fold_i32(acc);
}

// Eight blocks per step through x86::kquant_block_values8 (see kernels_x86_sums.h); the
// < 8 tail blocks one by one.
float dot_q2_K_q8_K(const BlockQ2K* w, const BlockQ8K* x, int64_t n) {
    const int64_t nb = n / QK_K;
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + kLanes <= nb; b += kLanes) {
        __m256i isums[kLanes], msums[kLanes];
#pragma GCC unroll 8
        for (int i = 0; i < kLanes; ++i) q2_K_block_partials(w[b + i], x[b + i], isums[i], msums[i]);
        acc = _mm256_add_ps(acc, x86::kquant_block_values8(w + b, x + b, x86::transpose_sum8(isums),
                                                           x86::transpose_sum8(msums)));
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

inline void q4_K_block_sums(const BlockQ4K& w, const BlockQ8K& x, int32_t& isum, int32_t& msum) {
    const __m128i sm8 = q4_K_scales_mins(w.scales);
    const __m512i scales = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(sm8));
    const __m128i mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm8, 8));
    const __m128i pair_bsums = _mm_hadd_epi16(load128(x.bsums), load128(x.bsums + 8));
    __m128i m = _mm_madd_epi16(mins, pair_bsums);
    m = _mm_add_epi32(m, _mm_unpackhi_epi64(m, m));
    m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 1));
    msum = _mm_cvtsi128_si32(m);

    const __m512i m4 = _mm512_set1_epi8(15);
    __m512i acc = _mm512_setzero_si512();
#pragma GCC unroll 2
    for (int j4 = 0; j4 < 2; ++j4) {
        // bytes 0..31: sub-blocks 4j4 (low nibbles) / 4j4+1 (high);
        // bytes 32..63: sub-blocks 4j4+2 / 4j4+3
        const __m512i bits = load512(w.qs + 64 * j4);
        const __m512i lo = _mm512_and_si512(bits, m4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);
        const int8_t* q8 = x.qs + 128 * j4;
        __m512i plo = _mm512_maddubs_epi16(lo, load_2x256(q8, q8 + 64));
        __m512i phi = _mm512_maddubs_epi16(hi, load_2x256(q8 + 32, q8 + 96));
        plo = _mm512_madd_epi16(plo, _mm512_shuffle_epi8(scales, load512(kShuffles.q4[2 * j4])));
        phi = _mm512_madd_epi16(phi, _mm512_shuffle_epi8(scales, load512(kShuffles.q4[2 * j4 + 1])));
        acc = _mm512_add_epi32(acc, _mm512_add_epi32(plo, phi));
    }
    isum = _mm512_reduce_add_epi32(acc);
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

// 2·ls + 1 for each 4-bit ls as sixteen int16, loaded rather than broadcast from a
// register (two shuffle-port µops each).
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

// The 32 sign bits (one per value, bit j of byte k = value 8k+j) of a group's sign word
// (used by the dequantizer).
inline uint32_t group_sign_bits(uint32_t word) {
    const auto& s = detail::kIq2SignBytes.v;
    return static_cast<uint32_t>(s[word & 127]) | static_cast<uint32_t>(s[(word >> 7) & 127]) << 8 |
           static_cast<uint32_t>(s[(word >> 14) & 127]) << 16 |
           static_cast<uint32_t>(s[(word >> 21) & 127]) << 24;
}

// parity(i & 15) in bit 7 of byte i (per 128-bit lane, for pshufb).
struct NibbleParity {
    alignas(32) uint8_t v[32];
};
constexpr NibbleParity make_nibble_parity() {
    NibbleParity t{};
    for (int i = 0; i < 32; ++i) {
        const int nib = i & 15;
        t.v[i] = static_cast<uint8_t>(((nib ^ (nib >> 1) ^ (nib >> 2) ^ (nib >> 3)) & 1) << 7);
    }
    return t;
}
constexpr NibbleParity kNibbleParity = make_nibble_parity();

// A block's 256 sign bits (bit i = value i negative), decoded in one vector pass instead
// of 32 table lookups: the eight sign words' 7-bit fields into bytes, plus the parity
// bit (formats.md §3.6, == kIq2Signs[s]). Byte 4g + k is sub-group k of group g.
inline __m256i iq2_xxs_sign_bytes(const BlockIQ2XXS& w) {
    const __m512i words = load512(w.qs);  // a0 s0 a1 s1 … a7 s7
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m256i s = _mm512_castsi512_si256(_mm512_permutexvar_epi32(odd, words));
    __m256i b = _mm256_and_si256(s, _mm256_set1_epi32(0x7f));
    b = _mm256_ternarylogic_epi32(b, _mm256_slli_epi32(s, 1), _mm256_set1_epi32(0x7f00), 0xf8);  // b | (x & m)
    b = _mm256_ternarylogic_epi32(b, _mm256_slli_epi32(s, 2), _mm256_set1_epi32(0x7f0000), 0xf8);
    b = _mm256_ternarylogic_epi32(b, _mm256_slli_epi32(s, 3), _mm256_set1_epi32(0x7f000000), 0xf8);
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i table = load256(kNibbleParity.v);
    const __m256i par = _mm256_xor_si256(_mm256_shuffle_epi8(table, _mm256_and_si256(b, m4)),
                                         _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(b, 4), m4)));
    return _mm256_or_si256(b, par);
}

// Four 8-byte grid rows as two 128-bit halves (movsd + movhpd each), joined. On the
// Xeon host this measured 3.4 GB/s of weights per core against 2.6 for broadcasting
// each row from memory and blending, and 2.5 for a 64-bit gather (ad-hoc A/B, same run).
inline __m256i grid_rows4(const uint8_t* index) {
    const auto rows = [](uint8_t a, uint8_t b) {
        const __m128d lo = _mm_load_sd(reinterpret_cast<const double*>(&kIq2Grid[a]));
        return _mm_castpd_si128(_mm_loadh_pd(lo, reinterpret_cast<const double*>(&kIq2Grid[b])));
    };
    return _mm256_inserti128_si256(_mm256_castsi128_si256(rows(index[0], index[1])), rows(index[2], index[3]), 1);
}

// A block's Σ (±grid)·q8·(2·ls + 1) as eight int32 partial sums.
inline __m256i iq2_xxs_block_partials(const BlockIQ2XXS& w, const BlockQ8K& x) {
    alignas(32) uint64_t sign_bits[4];  // groups 2gp, 2gp+1 in sign_bits[gp]
    _mm256_store_si256(reinterpret_cast<__m256i*>(sign_bits), iq2_xxs_sign_bytes(w));
    const auto* bytes = reinterpret_cast<const uint8_t*>(w.qs);  // group g: bytes 8g..8g+7
    __m512i acc = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int gp = 0; gp < QK_K / 64; ++gp) {  // two 32-value groups per vector
        const uint8_t* g0 = bytes + 16 * gp;
        const __m512i mag = _mm512_inserti64x4(_mm512_castsi256_si512(grid_rows4(g0)), grid_rows4(g0 + 8), 1);
        const __m512i q8 = load512(x.qs + 64 * gp);
        // (±mag)·q8 = |q8| · (mag negated where exactly one of the two is negative)
        const __mmask64 weight_neg = _cvtu64_mask64(sign_bits[gp]);
        const __m512i w8 = negate_where(mag, _kxor_mask64(weight_neg, _mm512_movepi8_mask(q8)));
        const __m512i p = _mm512_maddubs_epi16(_mm512_abs_epi8(q8), w8);
        const __m512i ls = load_2x256(kGroupScales.v[g0[7] >> 4], kGroupScales.v[g0[15] >> 4]);
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p, ls));
    }
    return fold_i32(acc);
}

// Eight blocks per step through x86::iq2_xxs_block_values8; the < 8 tail blocks one by one.
float dot_iq2_xxs_q8_K(const BlockIQ2XXS* w, const BlockQ8K* x, int64_t n) {
    const int64_t nb = n / QK_K;
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + kLanes <= nb; b += kLanes) {
        __m256i sums[kLanes];
#pragma GCC unroll 1  // a block is ~150 instructions already
        for (int i = 0; i < kLanes; ++i) sums[i] = iq2_xxs_block_partials(w[b + i], x[b + i]);
        acc = _mm256_add_ps(acc, x86::iq2_xxs_block_values8(w + b, x + b, x86::transpose_sum8(sums)));
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

inline int32_t q8_0_block_sum_exact(const BlockQ8_0& w, const BlockQ8_0F& x) {
    const __m512i wv = _mm512_cvtepi8_epi16(load256(w.qs));
    const __m512i xv = _mm512_cvtepi8_epi16(load256(x.qs));
    return _mm512_reduce_add_epi32(_mm512_madd_epi16(wv, xv));
}

float dot_q8_0_q8_0f_exact(const BlockQ8_0* w, const BlockQ8_0F* x, int64_t n) {
    float lane[kLanes] = {};
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        lane[b % kLanes] +=
            detail::q8_0_block_value(f16(w[b].d), x[b].d, q8_0_block_sum_exact(w[b], x[b]));
    }
    return detail::reduce_lanes(lane);
}

// f32(dw) and dx of 16 consecutive blocks, assembled in registers (no gathers, no
// store→load round trip; see the AVX2 file).
inline __m512 q8_0_weight_scales(const BlockQ8_0* w) {
    auto d = [w](int i) { return static_cast<short>(w[i].d); };
    const __m256i d16 = _mm256_setr_epi16(d(0), d(1), d(2), d(3), d(4), d(5), d(6), d(7), d(8), d(9), d(10),
                                          d(11), d(12), d(13), d(14), d(15));
    return _mm512_cvtph_ps(d16);
}
inline __m512 q8_0_act_scales(const BlockQ8_0F* x) {
    return _mm512_setr_ps(x[0].d, x[1].d, x[2].d, x[3].d, x[4].d, x[5].d, x[6].d, x[7].d, x[8].d, x[9].d,
                          x[10].d, x[11].d, x[12].d, x[13].d, x[14].d, x[15].d);
}
// dw·dx of 16 consecutive blocks.
inline __m512 q8_0_block_scales(const BlockQ8_0* w, const BlockQ8_0F* x) {
    return _mm512_mul_ps(q8_0_weight_scales(w), q8_0_act_scales(x));
}

// 16 blocks per step; lanes 0..7 of the accumulator take blocks b..b+7 and then
// b+8..b+15, i.e. block b goes to lane b % 8 in increasing b, as in scalar.
float dot_q8_0_q8_0f(const BlockQ8_0* w, const BlockQ8_0F* x, int64_t n) {
    constexpr int kStep = 16;
    const int64_t nb = n / QK8_0;
    const __m512i ones = _mm512_set1_epi16(1);
    const __m512i minus128 = _mm512_set1_epi8(-128);
    __mmask64 overflow_risk = 0;  // a weight of −128 (see the AVX2 file)
    __m256 acc = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + kStep <= nb; b += kStep) {
        __m512i sums[kStep / 2];
#pragma GCC unroll 8
        for (int i = 0; i < kStep / 2; ++i) {
            const __m512i wv = load_2x256(w[b + 2 * i].qs, w[b + 2 * i + 1].qs);
            const __m512i xv = load_2x256(x[b + 2 * i].qs, x[b + 2 * i + 1].qs);
            overflow_risk |= _mm512_cmpeq_epi8_mask(wv, minus128);
            const __m512i sw = negate_where(wv, _mm512_movepi8_mask(xv));
            sums[i] = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(xv), sw), ones);
        }
        const __m512 isum = _mm512_cvtepi32_ps(transpose_sum16(sums));
        const __m512 p = _mm512_mul_ps(q8_0_block_scales(w + b, x + b), isum);
        acc = _mm256_add_ps(acc, _mm512_castps512_ps256(p));
        acc = _mm256_add_ps(acc, _mm512_extractf32x8_ps(p, 1));
    }
    if (overflow_risk != 0) return dot_q8_0_q8_0f_exact(w, x, n);
    alignas(32) float lane[kLanes];
    _mm256_store_ps(lane, acc);
    for (; b < nb; ++b) {
        lane[b % kLanes] +=
            detail::q8_0_block_value(f16(w[b].d), x[b].d, q8_0_block_sum_exact(w[b], x[b]));
    }
    return detail::reduce_lanes(lane);
}

// kDotRows rows against one activation, each bit-identical to dot_q8_0_q8_0f: the
// activation codes and scales are loaded once for all rows. As in the AVX2 version,
// |w| is the unsigned operand and x negated where w < 0 the signed one, so an
// activation code of −128 (never written by the Q8_0F quantizer) takes the exact path.
void dot_q8_0_q8_0f_rows(const BlockQ8_0* const* w, const BlockQ8_0F* x, int64_t n, float* out) {
    constexpr int kStep = 16;
    const int64_t nb = n / QK8_0;
    const __m512i ones = _mm512_set1_epi16(1);
    __m512i x_min = _mm512_setzero_si512();
    __m256 acc[kDotRows];
    for (__m256& a : acc) a = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + kStep <= nb; b += kStep) {
        const BlockQ8_0F* xb = x + b;
        const __m512 dx = q8_0_act_scales(xb);
        __m512i xv[kStep / 2];
#pragma GCC unroll 8
        for (int i = 0; i < kStep / 2; ++i) {
            xv[i] = load_2x256(xb[2 * i].qs, xb[2 * i + 1].qs);
            x_min = _mm512_min_epi8(x_min, xv[i]);
        }
#pragma GCC unroll 4
        for (int r = 0; r < kDotRows; ++r) {
            const BlockQ8_0* wb = w[r] + b;
            __m512i sums[kStep / 2];
#pragma GCC unroll 8
            for (int i = 0; i < kStep / 2; ++i) {
                const __m512i wv = load_2x256(wb[2 * i].qs, wb[2 * i + 1].qs);
                const __m512i sx = negate_where(xv[i], _mm512_movepi8_mask(wv));
                sums[i] = _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(wv), sx), ones);
            }
            const __m512 isum = _mm512_cvtepi32_ps(transpose_sum16(sums));
            const __m512 p = _mm512_mul_ps(_mm512_mul_ps(q8_0_weight_scales(wb), dx), isum);
            acc[r] = _mm256_add_ps(acc[r], _mm512_castps512_ps256(p));
            acc[r] = _mm256_add_ps(acc[r], _mm512_extractf32x8_ps(p, 1));
        }
    }
    if (_mm512_cmpeq_epi8_mask(x_min, _mm512_set1_epi8(-128)) != 0) {
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

// ---- float rows (same accumulation precision as scalar, different order) ---------

float dot_f16_f32(const uint16_t* w, const float* x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(load256(w + i)), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(load256(w + i + 16)), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_cvtph_ps(load256(w + i + 32)), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_cvtph_ps(load256(w + i + 48)), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) {
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(load256(w + i)), _mm512_loadu_ps(x + i), a0);
    }
    float sum = hsum_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    for (; i < n; ++i) sum += f16(w[i]) * x[i];
    return sum;
}

float dot_f32_f32(const float* w, const float* x, int64_t n) {
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w + i)), _mm512_cvtps_pd(_mm256_loadu_ps(x + i)), a0);
        a1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w + i + 8)), _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)), a1);
        a2 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w + i + 16)), _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 16)), a2);
        a3 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w + i + 24)), _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 24)), a3);
    }
    double sum = hsum_pd(_mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3)));
    for (; i < n; ++i) sum += static_cast<double>(w[i]) * static_cast<double>(x[i]);
    return static_cast<float>(sum);
}

// ---- dequantization (bit-identical to ref::dequant_*) ------------------------------

inline __m512 bytes_to_ps_u8(__m128i sixteen_bytes) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sixteen_bytes));
}

void dequant_q8_0(const BlockQ8_0* x, float* y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const __m512 d = _mm512_set1_ps(f16(x[b].d));
        for (int i = 0; i < QK8_0; i += 16) {
            const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load128(x[b].qs + i)));
            _mm512_storeu_ps(y + b * QK8_0 + i, _mm512_mul_ps(d, v));
        }
    }
}

void dequant_q2_K(const BlockQ2K* x, float* y, int64_t n) {
    const __m128i m3 = _mm_set1_epi8(3);
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const BlockQ2K& blk = x[b];
        const float d = f16(blk.d);
        const float dmin = f16(blk.dmin);
        for (int s = 0; s < QK_K / 16; ++s) {
            const __m512 dl = _mm512_set1_ps(d * static_cast<float>(blk.scales[s] & 15));
            const __m512 ml = _mm512_set1_ps(dmin * static_cast<float>(blk.scales[s] >> 4));
            const int shift = 2 * ((s % 8) / 2);
            const __m128i bytes = load128(blk.qs + 32 * (s / 8) + 16 * (s % 2));
            const __m128i codes = _mm_and_si128(_mm_srl_epi16(bytes, _mm_cvtsi32_si128(shift)), m3);
            const __m512 v = _mm512_sub_ps(_mm512_mul_ps(dl, bytes_to_ps_u8(codes)), ml);
            _mm512_storeu_ps(y + b * QK_K + 16 * s, v);
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
            const __m512 dl = _mm512_set1_ps(d * static_cast<float>(sm[j]));
            const __m512 ml = _mm512_set1_ps(dmin * static_cast<float>(sm[8 + j]));
            for (int h = 0; h < 2; ++h) {
                __m128i codes = load128(blk.qs + 32 * (j / 2) + 16 * h);
                if (j % 2 == 1) codes = _mm_srli_epi16(codes, 4);
                codes = _mm_and_si128(codes, m4);
                _mm512_storeu_ps(out + 32 * j + 16 * h,
                                 _mm512_sub_ps(_mm512_mul_ps(dl, bytes_to_ps_u8(codes)), ml));
            }
        }
    }
}

void dequant_iq2_xxs(const BlockIQ2XXS* x, float* y, int64_t n) {
    const __m512i sign_bit = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float d = f16(x[b].d);
        float* out = y + b * QK_K;
        for (int g = 0; g < QK_K / 32; ++g) {
            uint32_t aux[2];
            std::memcpy(aux, &x[b].qs[4 * g], sizeof(aux));
            const __m512 gscale = _mm512_set1_ps(d * (0.5f + static_cast<float>(aux[1] >> 28)) * 0.25f);
            const uint32_t neg = group_sign_bits(aux[1]);
            for (int k = 0; k < 4; k += 2) {  // two 8-value sub-groups per vector
                const __m128i mag = _mm_set_epi64x(grid((aux[0] >> (8 * k + 8)) & 0xff),
                                                   grid((aux[0] >> (8 * k)) & 0xff));
                const __m512 v = _mm512_mul_ps(gscale, bytes_to_ps_u8(mag));
                // ×(−1) of ref is an exact sign flip
                const auto m = static_cast<__mmask16>(neg >> (8 * k));
                const __m512i r = _mm512_mask_xor_epi32(_mm512_castps_si512(v), m, _mm512_castps_si512(v), sign_bit);
                _mm512_storeu_si512(out + 32 * g + 8 * k, r);
            }
        }
    }
}

void dequant_f16(const uint16_t* x, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_cvtph_ps(load256(x + i)));
    for (; i < n; ++i) y[i] = f16(x[i]);
}

// ---- activation quantization (byte-identical to ref::quantize_*) ------------------

void quantize_q8_K(const float* x, BlockQ8K* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b) {
        const float* xb = x + b * QK_K;
        BlockQ8K& out = y[b];
        __m512 vmax = _mm512_setzero_ps();  // max_ps(a, m) keeps m when a is NaN
        for (int i = 0; i < QK_K; i += 16) vmax = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xb + i)), vmax);
        const float amax = _mm512_reduce_max_ps(vmax);
        if (amax == 0.f) {
            std::memset(&out, 0, sizeof(out));
            continue;
        }
        float max = 0.f;  // the first element reaching amax, with its sign
        for (int i = 0; i < QK_K; i += 16) {
            const __mmask16 eq =
                _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(xb + i)), _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (eq != 0) {
                max = xb[i + __builtin_ctz(static_cast<unsigned>(eq))];
                break;
            }
        }
        const float iscale = -127.f / max;
        if (!__builtin_isfinite(iscale)) {  // |max| < 127/FLT_MAX: codes 0, like ref
            std::memset(&out, 0, sizeof(out));
            out.d = 1.f / iscale;
            continue;
        }
        const __m512 vs = _mm512_set1_ps(iscale);
        for (int i = 0; i < QK_K; i += 16) {
            store_i8x16(out.qs + i, round_clamped(_mm512_mul_ps(vs, _mm512_loadu_ps(xb + i))));
        }
        detail::fill_q8_K_bsums(out);
        out.d = 1.f / iscale;
    }
}

void quantize_q8_0f(const float* x, BlockQ8_0F* y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        const float* xb = x + b * QK8_0;
        const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
        const float s = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))) / 127.f;
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
        const __m512 id = _mm512_set1_ps(inv);
        store_i8x16(y[b].qs, round_clamped(_mm512_mul_ps(v0, id)));
        store_i8x16(y[b].qs + 16, round_clamped(_mm512_mul_ps(v1, id)));
    }
}

}  // namespace
}  // namespace ds4::quant::avx512

namespace ds4::quant::detail {

const Kernels kAvx512Kernels = {
    .isa = Isa::AVX512,
    .dequant_q8_0 = avx512::dequant_q8_0,
    .dequant_q2_K = avx512::dequant_q2_K,
    .dequant_q4_K = avx512::dequant_q4_K,
    .dequant_iq2_xxs = avx512::dequant_iq2_xxs,
    .dequant_f16 = avx512::dequant_f16,
    .quantize_q8_K = avx512::quantize_q8_K,
    .quantize_q8_0f = avx512::quantize_q8_0f,
    .dot_q2_K_q8_K = avx512::dot_q2_K_q8_K,
    .dot_q4_K_q8_K = avx512::dot_q4_K_q8_K,
    .dot_iq2_xxs_q8_K = avx512::dot_iq2_xxs_q8_K,
    .dot_q8_0_q8_0f = avx512::dot_q8_0_q8_0f,
    .dot_f16_f32 = avx512::dot_f16_f32,
    .dot_f32_f32 = avx512::dot_f32_f32,
    .dot_q8_0_q8_0f_rows = avx512::dot_q8_0_q8_0f_rows,
};

}  // namespace ds4::quant::detail

#endif  // DS4_QUANT_X86
