// Dequantizers and activation quantizers of every available ISA: bit-identical to the
// ref:: functions (and, for the dequantizers, to ggml's gguf-py golden vectors).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gguf/safetensors.h"
#include "kernel_test_util.h"
#include "quant/kernels.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace ds4::quant::test {
namespace {

// Element-wise bit comparison; reports the first mismatch only.
::testing::AssertionResult same_bits(const std::vector<float>& got, const std::vector<float>& want) {
    if (got.size() != want.size()) return ::testing::AssertionFailure() << "size differs";
    for (size_t i = 0; i < got.size(); ++i) {
        if (float_bits(got[i]) != float_bits(want[i])) {
            return ::testing::AssertionFailure() << "element " << i << ": " << got[i] << " (0x" << std::hex
                                                 << float_bits(got[i]) << ") vs " << want[i] << " (0x"
                                                 << float_bits(want[i]) << ")";
        }
    }
    return ::testing::AssertionSuccess();
}

template <typename Block>
using DequantFn = void (*)(const Block*, float*, int64_t);

template <typename Block>
void check_dequant(DequantFn<Block> Kernels::*member, DequantFn<Block> ref_fn, int block, uint64_t seed) {
    Rng rng(seed);
    for (const Kernels* k : available_kernels()) {
        for (Fill fill : {Fill::Random, Fill::Zero, Fill::MaxCode, Fill::ExtremeScales}) {
            for (int64_t nb : {1, 2, 3, 8, 16, 33}) {
                const auto w = random_blocks<Block>(nb, fill, rng);
                const int64_t n = nb * block;
                std::vector<float> got(static_cast<size_t>(n), -1.f), want(static_cast<size_t>(n), -2.f);
                (k->*member)(w.data(), got.data(), n);
                ref_fn(w.data(), want.data(), n);
                EXPECT_TRUE(same_bits(got, want)) << isa_name(k->isa) << " " << fill_name(fill) << " nb=" << nb;
            }
        }
    }
}

TEST(IsaDequant, Q80BitExactWithRef) { check_dequant<BlockQ8_0>(&Kernels::dequant_q8_0, ref::dequant_q8_0, QK8_0, 31); }
TEST(IsaDequant, Q2KBitExactWithRef) { check_dequant<BlockQ2K>(&Kernels::dequant_q2_K, ref::dequant_q2_K, QK_K, 32); }
TEST(IsaDequant, Q4KBitExactWithRef) { check_dequant<BlockQ4K>(&Kernels::dequant_q4_K, ref::dequant_q4_K, QK_K, 33); }
TEST(IsaDequant, IQ2XXSBitExactWithRef) {
    check_dequant<BlockIQ2XXS>(&Kernels::dequant_iq2_xxs, ref::dequant_iq2_xxs, QK_K, 34);
}

// All 65536 f16 patterns. F16C hardware quiets signalling NaNs (sets the top mantissa
// bit) while the reference keeps the payload as is; NaN weights never occur in a valid
// model, so for NaN inputs only NaN-ness is required.
TEST(IsaDequant, F16AllPatterns) {
    std::vector<uint16_t> all(65536 + 5);
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i * 0x9e37u);  // odd tail length
    for (size_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
    const auto n = static_cast<int64_t>(all.size());
    std::vector<float> want(all.size());
    ref::dequant_f16(all.data(), want.data(), n);
    for (const Kernels* k : available_kernels()) {
        std::vector<float> got(all.size());
        k->dequant_f16(all.data(), got.data(), n);
        int mismatches = 0;
        for (size_t i = 0; i < all.size(); ++i) {
            const bool ok = std::isnan(want[i]) ? std::isnan(got[i]) : float_bits(got[i]) == float_bits(want[i]);
            if (!ok && ++mismatches < 5) ADD_FAILURE() << isa_name(k->isa) << " f16 0x" << std::hex << all[i];
        }
        EXPECT_EQ(mismatches, 0) << isa_name(k->isa);
    }
}

// Every ISA's dequantizers against ggml's gguf-py outputs (tests/data/golden/README.md).
TEST(IsaDequant, MatchesGgmlGoldenVectors) {
    const st::File file = st::File::open(std::string(DS4_TEST_DATA_DIR) + "/golden/quant_vectors.safetensors");
    auto golden = [&](const std::string& type, int block, auto fn) -> ::testing::AssertionResult {
        const st::Tensor& blocks = file.require(type + ".blocks");
        const st::Tensor& deq = file.require(type + ".dequant");
        const int64_t nb = static_cast<int64_t>(blocks.shape[0]);
        const int64_t n = nb * block;
        std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
        if (deq.data.size() != want.size() * sizeof(float)) {
            return ::testing::AssertionFailure() << type << ": golden sizes disagree";
        }
        std::memcpy(want.data(), deq.data.data(), deq.data.size());
        std::vector<uint8_t> raw(blocks.data.begin(), blocks.data.end());  // aligned copy
        fn(raw.data(), got.data(), n);
        return same_bits(got, want);
    };
    for (const Kernels* k : available_kernels()) {
        const std::string isa = isa_name(k->isa);
        EXPECT_TRUE(golden("Q8_0", QK8_0, [k](const uint8_t* b, float* y, int64_t n) {
            k->dequant_q8_0(reinterpret_cast<const BlockQ8_0*>(b), y, n);
        })) << isa;
        EXPECT_TRUE(golden("Q2_K", QK_K, [k](const uint8_t* b, float* y, int64_t n) {
            k->dequant_q2_K(reinterpret_cast<const BlockQ2K*>(b), y, n);
        })) << isa;
        EXPECT_TRUE(golden("Q4_K", QK_K, [k](const uint8_t* b, float* y, int64_t n) {
            k->dequant_q4_K(reinterpret_cast<const BlockQ4K*>(b), y, n);
        })) << isa;
        EXPECT_TRUE(golden("IQ2_XXS", QK_K, [k](const uint8_t* b, float* y, int64_t n) {
            k->dequant_iq2_xxs(reinterpret_cast<const BlockIQ2XXS*>(b), y, n);
        })) << isa;
    }
}

// ---- activation quantization -------------------------------------------------------

// Blocks of 256 floats that stress the Q8_K rules: first-max ties with both signs,
// exact .5 ties (max −127 gives scale 1), zero blocks, a NaN (skipped by the max search,
// encoded as 0), ±inf, a subnormal maximum (−127/max overflows: every code 0),
// and random rows over a wide range of magnitudes.
std::vector<float> q8_K_stress_input(Rng& rng) {
    std::vector<float> x;
    auto block = [&](auto gen) {
        for (int i = 0; i < QK_K; ++i) x.push_back(gen(i));
    };
    block([](int i) { return i == 7 ? -5.f : i == 100 ? 5.f : 0.25f * static_cast<float>(i % 9) - 1.f; });
    block([](int i) { return i == 3 ? 5.f : i == 4 ? -5.f : 0.01f * static_cast<float>(i); });
    block([](int i) {  // max −127 → iscale 1: values at exact .5 ties round to even
        return i == 0 ? -127.f : 0.5f * static_cast<float>(i % 64) - 16.f;
    });
    block([](int) { return 0.f; });
    block([](int i) { return i == 9 ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(i) - 100.f; });
    block([](int i) { return i == 200 ? std::numeric_limits<float>::infinity() : 1.f; });
    block([](int i) { return i % 3 == 0 ? std::numeric_limits<float>::denorm_min() : 0.f; });
    block([](int i) { return i % 5 == 0 ? -std::numeric_limits<float>::denorm_min() : 0.f; });
    for (int r = 0; r < 64; ++r) {
        const float scale = std::exp(rng.uniform(-30.f, 30.f));
        block([&](int) { return scale * rng.normal(); });
    }
    return x;
}

TEST(IsaQuantize, Q8KByteIdenticalWithRef) {
    Rng rng(41);
    const std::vector<float> x = q8_K_stress_input(rng);
    const auto n = static_cast<int64_t>(x.size());
    std::vector<BlockQ8K> want(x.size() / QK_K);
    ref::quantize_q8_K(x.data(), want.data(), n);
    for (const Kernels* k : available_kernels()) {
        std::vector<BlockQ8K> got(want.size());
        std::memset(got.data(), 0x5a, got.size() * sizeof(BlockQ8K));
        k->quantize_q8_K(x.data(), got.data(), n);
        for (size_t b = 0; b < want.size(); ++b) {
            EXPECT_EQ(std::memcmp(&got[b], &want[b], sizeof(BlockQ8K)), 0) << isa_name(k->isa) << " block " << b;
        }
    }
    // the rules themselves, on the reference output
    EXPECT_EQ(want[0].qs[7], -127);  // first of ±5 is −5: d > 0
    EXPECT_GT(want[0].d, 0.f);
    EXPECT_EQ(want[1].qs[3], -127);  // first is +5: d < 0
    EXPECT_LT(want[1].d, 0.f);
    EXPECT_EQ(want[2].qs[33], 0);   // −15.5·1 + ... : i=33 → 0.5·33 − 16 = 0.5 → 0 (even)
    EXPECT_EQ(want[2].qs[35], 2);   // 1.5 → 2
}

// Q8_0F (CPU dense activations): byte-identical for finite and infinite input; NaN
// inputs are out of contract (the reference's NaN-propagating max depends on the order
// of the search).
TEST(IsaQuantize, Q80FByteIdenticalWithRef) {
    Rng rng(42);
    std::vector<float> x;
    for (int i = 0; i < 32; ++i) x.push_back(i == 0 ? 127.f : 0.5f * static_cast<float>(i) - 8.f);  // s = 1: ties
    for (int i = 0; i < 32; ++i) x.push_back(0.f);
    for (int i = 0; i < 32; ++i) x.push_back(i == 5 ? -std::numeric_limits<float>::infinity() : 2.f);
    for (int i = 0; i < 32; ++i) x.push_back(i % 2 ? std::numeric_limits<float>::denorm_min() : 0.f);  // s = 0
    for (int i = 0; i < 32; ++i) x.push_back(i % 3 ? 1e-38f : -2e-39f);  // subnormal s, 1/s = inf
    for (int r = 0; r < 200; ++r) {
        const float scale = std::exp(rng.uniform(-30.f, 30.f));
        for (int i = 0; i < 32; ++i) x.push_back(scale * rng.normal());
    }
    const auto n = static_cast<int64_t>(x.size());
    std::vector<BlockQ8_0F> want(x.size() / QK8_0);
    ref::quantize_q8_0f(x.data(), want.data(), n);
    for (const Kernels* k : available_kernels()) {
        std::vector<BlockQ8_0F> got(want.size());
        std::memset(got.data(), 0x5a, got.size() * sizeof(BlockQ8_0F));
        k->quantize_q8_0f(x.data(), got.data(), n);
        for (size_t b = 0; b < want.size(); ++b) {
            EXPECT_EQ(std::memcmp(&got[b], &want[b], sizeof(BlockQ8_0F)), 0) << isa_name(k->isa) << " block " << b;
        }
    }
    EXPECT_EQ(want[0].d, 1.f);
    EXPECT_EQ(want[0].qs[1], -8);  // 0.5 − 8 = −7.5 → −8 (even)
    EXPECT_EQ(want[0].qs[3], -6);  // −6.5 → −6
}

}  // namespace
}  // namespace ds4::quant::test
