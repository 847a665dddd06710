// Official-checkpoint decoding: FP8 block-scaled and FP4 expert weights of the golden
// files against hand computations, block indexing on synthetic tensors, plain and
// integer decoding, and the shape/dtype errors.
#include "quant/checkpoint.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <functional>
#include <numeric>
#include <optional>

#include "ds4/error.h"
#include "st_builder.h"

namespace ds4 {
namespace {

using quant::DecodedTensor;
using quant::TensorRef;
using test::append;
using test::build_safetensors;
using test::golden_path;
using test::TestTensor;

#define EXPECT_ERROR(stmt, part)                                                   \
    try {                                                                          \
        stmt;                                                                      \
        ADD_FAILURE() << "no ds4::Error from " #stmt;                              \
    } catch (const Error& e) {                                                     \
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what(); \
    }

float at(const DecodedTensor& t, uint64_t r, uint64_t c) { return t.values[r * t.shape[1] + c]; }

// The golden file is opened once for the suite (it is mapped, not copied).
class CheckpointGoldenTiny : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        file_.emplace(st::File::open(golden_path("golden_tiny_s1.safetensors")));
    }
    static void TearDownTestSuite() { file_.reset(); }
    static const st::File& file() { return *file_; }

private:
    static inline std::optional<st::File> file_;
};

// Hand computation: byte 0xc2 = sign 1, exponent 0b1000 = 8, mantissa 0b010 = 2, so
// e4m3 = -(1 + 2/8)·2^(8−7) = -2.5; the block's scale byte is 115, 2^(115−127) = 2^-12;
// w = -2.5 / 4096 = -0.0006103515625. The other elements likewise.
TEST_F(CheckpointGoldenTiny, Fp8WeightMatchesHandComputation) {
    const TensorRef w = quant::tensor_ref(file(), "layers.0.attn.wq_b.weight");
    const TensorRef s = quant::tensor_ref(file(), "layers.0.attn.wq_b.scale");
    const DecodedTensor d = quant::decode_fp8_block_scaled(w, s);
    ASSERT_EQ(d.shape, (std::vector<uint64_t>{320, 16}));
    ASSERT_EQ(s.tensor->data[0], 115);
    ASSERT_EQ(w.tensor->data[0 * 16 + 0], 0xc2);
    EXPECT_EQ(at(d, 0, 0), -0.0006103515625f);
    ASSERT_EQ(w.tensor->data[130 * 16 + 5], 0xec);  // -(1 + 4/8)·2^6 = -96, row block 1
    EXPECT_EQ(at(d, 130, 5), -96.0f / 4096.0f);
    ASSERT_EQ(w.tensor->data[319 * 16 + 15], 0xee);  // -(1 + 6/8)·2^6 = -112, row block 2
    EXPECT_EQ(at(d, 319, 15), -112.0f / 4096.0f);

    // wo_a [32, 160] has two column blocks.
    const DecodedTensor o = quant::decode_official(file(), "layers.0.attn.wo_a.weight");
    const st::Tensor& wo_a = file().require("layers.0.attn.wo_a.weight");
    ASSERT_EQ(wo_a.data[3 * 160 + 128], 0xdf);  // -(1 + 7/8)·2^4 = -30, column block 1
    EXPECT_EQ(at(o, 3, 128), -30.0f / 4096.0f);
    ASSERT_EQ(wo_a.data[3 * 160 + 127], 0x73);  // +(1 + 3/8)·2^7 = 176
    EXPECT_EQ(at(o, 3, 127), 176.0f / 4096.0f);
}

// Hand computation for expert 0's w1 [32 out, 64 in] stored as I8 [32, 32]: element c of
// row r is nibble (c odd ? high : low) of byte r·32 + c/2, scaled by 2^(scale[r][c/32] − 127).
TEST_F(CheckpointGoldenTiny, Fp4ExpertMatchesHandComputation) {
    const st::Tensor& w = file().require("layers.0.ffn.experts.0.w1.weight");
    const st::Tensor& s = file().require("layers.0.ffn.experts.0.w1.scale");
    const DecodedTensor d = quant::decode_official(file(), "layers.0.ffn.experts.0.w1.weight");
    ASSERT_EQ(d.shape, (std::vector<uint64_t>{32, 64}));

    ASSERT_EQ(w.data[0], 0xd5);
    ASSERT_EQ(s.data[0], 120);                    // 2^-7
    EXPECT_EQ(at(d, 0, 0), 3.0f / 128.0f);        // low nibble 0x5: +3
    EXPECT_EQ(at(d, 0, 1), -3.0f / 128.0f);       // high nibble 0xd: sign + index 5
    ASSERT_EQ(w.data[5 * 32 + 16], 0x30);
    ASSERT_EQ(s.data[5 * 2 + 1], 121);            // 2^-6
    EXPECT_EQ(at(d, 5, 33), 1.5f / 64.0f);        // high nibble 0x3: +1.5
    ASSERT_EQ(w.data[17 * 32 + 16], 0xcc);
    ASSERT_EQ(s.data[17 * 2 + 1], 120);
    EXPECT_EQ(at(d, 17, 32), -2.0f / 128.0f);     // low nibble 0xc: sign + index 4
    ASSERT_EQ(w.data[31 * 32 + 31], 0x15);
    EXPECT_EQ(at(d, 31, 63), 0.5f / 128.0f);      // high nibble 0x1: +0.5
}

TEST_F(CheckpointGoldenTiny, EveryWeightDecodesToFiniteValues) {
    size_t fp8 = 0, fp4 = 0, plain = 0;
    for (const st::Tensor& t : file().tensors()) {
        if (t.name.starts_with("golden.") || t.name.ends_with(".scale") ||
            t.name.ends_with(".tid2eid"))
            continue;
        const DecodedTensor d = quant::decode_official(file(), t.name);
        ASSERT_EQ(d.values.size(), std::accumulate(d.shape.begin(), d.shape.end(), uint64_t{1},
                                                   std::multiplies<>()))
            << t.name;
        for (float v : d.values) ASSERT_TRUE(std::isfinite(v)) << t.name;
        if (t.dtype == st::DType::F8_E4M3) {
            ++fp8;
            EXPECT_EQ(d.shape, t.shape) << t.name;
        } else if (t.dtype == st::DType::I8) {
            ++fp4;
            EXPECT_EQ(d.shape, (std::vector<uint64_t>{t.shape[0], 2 * t.shape[1]})) << t.name;
        } else {
            ++plain;
            EXPECT_EQ(d.shape, t.shape) << t.name;
        }
    }
    // 10 layers (9 + MTP) × 8 FP8 matrices + 4 indexer wq_b + 2 MTP projections.
    EXPECT_EQ(fp8, 10u * 8u + 4u + 2u);
    EXPECT_EQ(fp4, 10u * 8u * 3u);  // 8 experts × w1/w2/w3
    EXPECT_GT(plain, 100u);
}

TEST_F(CheckpointGoldenTiny, Tid2eidNarrowsToExpertIds) {
    const std::vector<int32_t> ids =
        quant::narrow_i64_to_i32(quant::tensor_ref(file(), "layers.0.ffn.gate.tid2eid"));
    ASSERT_EQ(ids.size(), 256u * 2u);
    EXPECT_EQ((std::vector<int32_t>(ids.begin(), ids.begin() + 6)),
              (std::vector<int32_t>{0, 1, 2, 4, 4, 5}));
    for (int32_t id : ids) EXPECT_TRUE(id >= 0 && id < 8) << id;
}

TEST_F(CheckpointGoldenTiny, Bf16EmbeddingDecodesExactly) {
    const DecodedTensor e = quant::decode_official(file(), "embed.weight");
    EXPECT_EQ(e.shape, (std::vector<uint64_t>{256, 64}));
    EXPECT_EQ(e.values[0], std::bit_cast<float>(0x3f720000u));  // raw bf16 0x3f72
}

// ---- synthetic tensors ----

std::vector<uint8_t> filled(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

TEST(CheckpointFp8, BlockScalesFollowRowAndColumnBlocks) {
    // [130, 129] has 2×2 blocks of 128: the last row and column are blocks of their own.
    // All weights are e4m3 0x38 = 1.0, so each output is its block's scale.
    const std::vector<uint8_t> bytes = build_safetensors({
        {"w.weight", "F8_E4M3", {130, 129}, filled(130 * 129, 0x38)},
        {"w.scale", "F8_E8M0", {2, 2}, {127, 128, 126, 130}},
    });
    const st::File f = st::File::parse(bytes, "fp8.safetensors");
    const DecodedTensor d = quant::decode_official(f, "w.weight");
    EXPECT_EQ(at(d, 0, 0), 1.0f);
    EXPECT_EQ(at(d, 127, 127), 1.0f);
    EXPECT_EQ(at(d, 0, 128), 2.0f);
    EXPECT_EQ(at(d, 127, 128), 2.0f);
    EXPECT_EQ(at(d, 128, 0), 0.5f);
    EXPECT_EQ(at(d, 129, 127), 0.5f);
    EXPECT_EQ(at(d, 128, 128), 8.0f);
    EXPECT_EQ(at(d, 129, 128), 8.0f);
}

TEST(CheckpointFp8, EveryCodeTimesScale) {
    // One row of all 256 codes (2 column blocks) with scales 2^-3 and 2^5.
    std::vector<uint8_t> codes(256);
    for (int i = 0; i < 256; ++i) codes[i] = static_cast<uint8_t>(i);
    const std::vector<uint8_t> bytes = build_safetensors({
        {"w.weight", "F8_E4M3", {1, 256}, codes},
        {"w.scale", "F8_E8M0", {1, 2}, {124, 132}},
    });
    const st::File f = st::File::parse(bytes, "fp8.safetensors");
    const DecodedTensor d = quant::decode_official(f, "w.weight");
    for (int i = 0; i < 256; ++i) {
        const float sign = (i & 0x80) ? -1.0f : 1.0f;
        const int e = (i >> 3) & 15, m = i & 7;
        float v = e == 0 ? std::ldexp(static_cast<float>(m), -9)
                         : std::ldexp(static_cast<float>(8 + m), e - 10);
        if ((i & 0x7f) == 0x7f) v = 0.0f;  // NaN codes decode as 0
        EXPECT_EQ(d.values[i], sign * v * (i < 128 ? 0.125f : 32.0f)) << i;
    }
}

TEST(CheckpointFp4, NibbleOrderAndPerRowScales) {
    // Row r, byte k = (hi << 4) | lo with lo = k % 16, hi = 15 − k % 16; 64 values a row.
    std::vector<uint8_t> packed;
    for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 32; ++k)
            packed.push_back(static_cast<uint8_t>(((15 - k % 16) << 4) | (k % 16)));
    const std::vector<uint8_t> bytes = build_safetensors({
        {"e.weight", "I8", {2, 32}, packed},
        {"e.scale", "F8_E8M0", {2, 2}, {127, 128, 125, 129}},  // 1, 2 / 0.25, 4
    });
    const st::File f = st::File::parse(bytes, "fp4.safetensors");
    const DecodedTensor d = quant::decode_official(f, "e.weight");
    ASSERT_EQ(d.shape, (std::vector<uint64_t>{2, 64}));
    const float mag[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    auto e2m1 = [&](int q) { return (q & 8) ? -mag[q & 7] : mag[q & 7]; };
    const float scale[2][2] = {{1, 2}, {0.25f, 4}};
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 64; ++c) {
            const int k = c / 2;
            const int q = (c % 2 == 0) ? k % 16 : 15 - k % 16;
            EXPECT_EQ(at(d, r, c), e2m1(q) * scale[r][c / 32]) << r << "," << c;
        }
}

TEST(CheckpointDecode, ElementwiseDecodeOfEveryDType) {
    std::vector<uint8_t> f64, f16, bf16, i16, u16;
    append<double>(f64, -1.25);
    append<uint16_t>(f16, 0x3c00);   // 1.0
    append<uint16_t>(f16, 0x0001);   // 2^-24 (subnormal)
    append<uint16_t>(bf16, 0xc040);  // -3.0
    append<int16_t>(i16, -300);
    append<uint16_t>(u16, 40000);
    const std::vector<uint8_t> bytes = build_safetensors({
        {"f64", "F64", {1}, f64},
        {"f16", "F16", {2}, f16},
        {"bf16", "BF16", {1}, bf16},
        {"e4m3", "F8_E4M3", {3}, {0x7e, 0x01, 0xff}},  // 448, 2^-9, NaN → 0
        {"e8m0", "F8_E8M0", {3}, {127, 0, 200}},       // 1, 2^-127, 2^73
        {"i16", "I16", {1}, i16},
        {"u16", "U16", {1}, u16},
        {"bool", "BOOL", {2}, {0, 1}},
    });
    const st::File f = st::File::parse(bytes, "all.safetensors");
    auto dec = [&](const char* n) { return quant::decode_f32(f, f.require(n)); };
    EXPECT_EQ(dec("f64"), (std::vector<float>{-1.25f}));
    EXPECT_EQ(dec("f16"), (std::vector<float>{1.0f, std::ldexp(1.0f, -24)}));
    EXPECT_EQ(dec("bf16"), (std::vector<float>{-3.0f}));
    EXPECT_EQ(dec("e4m3"), (std::vector<float>{448.0f, std::ldexp(1.0f, -9), 0.0f}));
    EXPECT_EQ(dec("e8m0"),
              (std::vector<float>{1.0f, std::ldexp(1.0f, -127), std::ldexp(1.0f, 73)}));
    EXPECT_EQ(dec("i16"), (std::vector<float>{-300.0f}));
    EXPECT_EQ(dec("u16"), (std::vector<float>{40000.0f}));
    EXPECT_EQ(dec("bool"), (std::vector<float>{0.0f, 1.0f}));
}

TEST(CheckpointDecode, NarrowingRejectsValuesOutsideI32) {
    std::vector<uint8_t> wide, narrow;
    for (int64_t v : {int64_t{1}, int64_t{2147483648}, int64_t{-1}}) append<int64_t>(wide, v);
    for (int32_t v : {7, -1}) append<int32_t>(narrow, v);
    const std::vector<uint8_t> bytes = build_safetensors({
        {"big.tid2eid", "I64", {3}, wide},
        {"i32.tid2eid", "I32", {2}, narrow},
        {"f.tid2eid", "F32", {1}, {0, 0, 0, 0}},
    });
    const st::File f = st::File::parse(bytes, "ids.safetensors");
    EXPECT_ERROR(quant::narrow_i64_to_i32(quant::tensor_ref(f, "big.tid2eid")),
                 "ids.safetensors: tensor 'big.tid2eid': element 1 = 2147483648 does not fit in I32");
    EXPECT_EQ(quant::narrow_i64_to_i32(quant::tensor_ref(f, "i32.tid2eid")),
              (std::vector<int32_t>{7, -1}));
    EXPECT_ERROR(quant::narrow_i64_to_i32(quant::tensor_ref(f, "f.tid2eid")),
                 "has dtype F32, expected I64 (or I32)");
}

TEST(CheckpointDecode, ShapeAndDTypeErrorsNameTheTensor) {
    const std::vector<uint8_t> bytes = build_safetensors({
        {"a.weight", "F8_E4M3", {130, 129}, filled(130 * 129, 0x38)},
        {"a.scale", "F8_E8M0", {1, 1}, {127}},
        {"b.weight", "F8_E4M3", {2, 2}, filled(4, 0x38)},
        {"b.scale", "F8_E8M0", {1, 1}, {0xff}},
        {"c.weight", "I8", {1, 8}, filled(8, 0)},
        {"c.scale", "F8_E8M0", {1, 1}, {127}},
        {"d.weight", "I8", {1, 16}, filled(16, 0)},
        {"d.scale", "F8_E8M0", {1, 2}, {127, 127}},
        {"e.weight", "BF16", {2}, filled(4, 0)},
        {"f.weight", "F8_E4M3", {2, 2, 1}, filled(4, 0)},
        {"f.scale", "F8_E8M0", {1, 1}, {127}},
        {"g.weight", "F8_E4M3", {1, 1}, {0x38}},
        {"i.weight", "I64", {1}, filled(8, 0)},
    });
    const st::File f = st::File::parse(bytes, "bad.safetensors");
    auto ref = [&](const char* n) { return quant::tensor_ref(f, n); };
    EXPECT_ERROR(quant::decode_official(f, "a.weight"),
                 "bad.safetensors: tensor 'a.scale' has shape [1, 1], expected [2, 2] for the "
                 "scales of 'a.weight' [130, 129]");
    EXPECT_ERROR(quant::decode_official(f, "b.weight"),
                 "tensor 'b.scale': scale [0, 0] is 0xFF (E8M0 NaN)");
    EXPECT_ERROR(quant::decode_official(f, "c.weight"),
                 "tensor 'c.weight' has shape [1, 8]: 16 FP4 values per row is not a multiple of 32");
    EXPECT_ERROR(quant::decode_official(f, "d.weight"),
                 "tensor 'd.scale' has shape [1, 2], expected [1, 1]");
    EXPECT_ERROR(quant::decode_fp8_block_scaled(ref("e.weight"), ref("a.scale")),
                 "tensor 'e.weight' has dtype BF16, expected F8_E4M3 for an FP8 weight");
    EXPECT_ERROR(quant::decode_fp4_packed(ref("d.weight"), ref("e.weight")),
                 "tensor 'e.weight' has dtype BF16, expected F8_E8M0 for FP4 scales");
    EXPECT_ERROR(quant::decode_official(f, "f.weight"),
                 "tensor 'f.weight' has shape [2, 2, 1], expected 2 dimensions");
    EXPECT_ERROR(quant::decode_official(f, "g.weight"), "tensor 'g.scale' is missing");
    EXPECT_ERROR(quant::decode_official(ref("g.weight"), std::nullopt),
                 "tensor 'g.weight' has dtype F8_E4M3 but no scale tensor ('g.scale')");
    EXPECT_ERROR(quant::decode_official(ref("e.weight"), ref("a.scale")),
                 "has dtype BF16, which takes no scale tensor, but 'a.scale' was given");
    EXPECT_ERROR(quant::decode_official(f, "i.weight"),
                 "tensor 'i.weight' has dtype I64, expected BF16, F16 or F32");
}

}  // namespace
}  // namespace ds4
