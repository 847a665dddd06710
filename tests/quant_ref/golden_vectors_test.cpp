// Bit-exact agreement with ggml's gguf-py reference (tests/data/golden/README.md):
// dequantization of random blocks of every weight format and Q8_0 quantization.
#include <bit>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "quant/reference.h"
#include "test_support.h"

namespace ds4::quant {
namespace {

using test::TinySafetensors;

const TinySafetensors& vectors() {
    static const TinySafetensors st(test::quant_vectors_path());
    return st;
}

// Bit patterns equal (so -0 vs +0 or NaN payloads would be caught), element by element.
void expect_bits_equal(const std::vector<float>& got, const std::vector<float>& want, int row_len) {
    ASSERT_EQ(got.size(), want.size());
    int mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        if (std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want[i])) {
            if (++mismatches <= 5) {
                ADD_FAILURE() << "block " << i / row_len << " element " << i % row_len << ": got "
                              << got[i] << " want " << want[i];
            }
        }
    }
    EXPECT_EQ(mismatches, 0);
}

template <typename Block>
std::vector<Block> blocks_of(const std::string& name) {
    const auto& bytes = vectors().bytes(name);
    EXPECT_EQ(bytes.size() % sizeof(Block), 0u);
    std::vector<Block> blocks(bytes.size() / sizeof(Block));
    std::memcpy(blocks.data(), bytes.data(), bytes.size());
    return blocks;
}

template <typename Block, int kValues>
void check_dequant(const std::string& type, void (*dequant)(const Block*, float*, int64_t)) {
    const auto blocks = blocks_of<Block>(type + ".blocks");
    ASSERT_EQ(blocks.size(), 64u);
    const auto want = vectors().floats(type + ".dequant");
    std::vector<float> got(blocks.size() * kValues);
    dequant(blocks.data(), got.data(), static_cast<int64_t>(got.size()));
    expect_bits_equal(got, want, kValues);
}

TEST(RefGoldenVectors, DequantQ8_0MatchesGgml) {
    check_dequant<BlockQ8_0, 32>("Q8_0", ref::dequant_q8_0);
}
TEST(RefGoldenVectors, DequantQ2_KMatchesGgml) {
    check_dequant<BlockQ2K, 256>("Q2_K", ref::dequant_q2_K);
}
TEST(RefGoldenVectors, DequantQ4_KMatchesGgml) {
    check_dequant<BlockQ4K, 256>("Q4_K", ref::dequant_q4_K);
}
TEST(RefGoldenVectors, DequantIQ2_XXSMatchesGgml) {
    check_dequant<BlockIQ2XXS, 256>("IQ2_XXS", ref::dequant_iq2_xxs);
}

TEST(RefGoldenVectors, QuantizeQ8_0MatchesGgmlByteExactly) {
    const auto input = vectors().floats("Q8_0.quant_input");
    const auto& want = vectors().bytes("Q8_0.quant_bytes");
    ASSERT_EQ(input.size(), 16u * 256);
    ASSERT_EQ(want.size(), 16u * 272);
    std::vector<BlockQ8_0> out(input.size() / 32);
    ref::quantize_q8_0(input.data(), out.data(), static_cast<int64_t>(input.size()));
    static_assert(sizeof(BlockQ8_0) == 34);
    const auto* got = reinterpret_cast<const uint8_t*>(out.data());
    for (size_t row = 0; row < 16; ++row) {
        for (size_t i = 0; i < 272; ++i) {
            ASSERT_EQ(got[row * 272 + i], want[row * 272 + i])
                << "row " << row << " block " << i / 34 << " byte " << i % 34;
        }
    }
}

TEST(RefGoldenVectors, QuantizeQ8_0EdgeCaseRow) {
    // row 0, block 0: amax 127 → d = 1 exactly, ties round away from zero
    const auto input = vectors().floats("Q8_0.quant_input");
    BlockQ8_0 b[8];
    ref::quantize_q8_0(input.data(), b, 256);
    EXPECT_EQ(b[0].d, 0x3c00);  // f16(1.0)
    const int8_t want0[] = {127, 1, 2, 3, 4, -1, -2, -3, -4, 127, -127, 64};
    for (int i = 0; i < 12; ++i) EXPECT_EQ(b[0].qs[i], want0[i]) << i;
    // block 1 all zeros: d = 0, codes 0
    EXPECT_EQ(b[1].d, 0);
    for (int i = 0; i < 32; ++i) EXPECT_EQ(b[1].qs[i], 0);
}

TEST(RefGoldenVectors, QuantizeQ8_0RoundTripMatchesGgml) {
    const auto input = vectors().floats("Q8_0.quant_input");
    const auto want = vectors().floats("Q8_0.quant_dequant");
    std::vector<BlockQ8_0> blocks(input.size() / 32);
    ref::quantize_q8_0(input.data(), blocks.data(), static_cast<int64_t>(input.size()));
    std::vector<float> got(input.size());
    ref::dequant_q8_0(blocks.data(), got.data(), static_cast<int64_t>(got.size()));
    expect_bits_equal(got, want, 256);
}

}  // namespace
}  // namespace ds4::quant
