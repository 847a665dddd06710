// Deterministic corruption sweep: every truncation of a small valid file, and every header
// byte overwritten with a handful of values, either parses (and then every tensor decodes)
// or throws ds4::Error. Any other exception, crash or sanitizer report fails the test.
#include <gtest/gtest.h>

#include <cstring>

#include "ds4/error.h"
#include "gguf/safetensors.h"
#include "quant/checkpoint.h"
#include "st_builder.h"

namespace ds4 {
namespace {

using test::append;
using test::safetensors_bytes;

// One tensor of each dtype family the checkpoint uses, plus metadata, back to back.
std::vector<uint8_t> sample_file() {
    std::vector<uint8_t> data;
    for (int i = 0; i < 6; ++i) append<float>(data, 0.5f * static_cast<float>(i) - 1.0f);  // 24
    for (int i = 0; i < 4; ++i) append<uint16_t>(data, static_cast<uint16_t>(0x3f80 + i));  // 8
    for (int i = 0; i < 8; ++i) data.push_back(static_cast<uint8_t>(0x30 + i));  // FP8, 8
    data.push_back(127);  // E8M0 scale = 1
    for (int i = 0; i < 16; ++i) data.push_back(static_cast<uint8_t>(i * 17));  // FP4, 16
    data.push_back(126);                                                          // FP4 scale
    for (int i = 0; i < 2; ++i) append<int64_t>(data, i + 3);  // I64, 16
    const std::string header =
        R"({"__metadata__":{"format":"pt","note":"x"},)"
        R"("a.f32":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
        R"("b.bf16":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},)"
        R"("c.weight":{"dtype":"F8_E4M3","shape":[2,4],"data_offsets":[32,40]},)"
        R"("c.scale":{"dtype":"F8_E8M0","shape":[1,1],"data_offsets":[40,41]},)"
        R"("d.weight":{"dtype":"I8","shape":[1,16],"data_offsets":[41,57]},)"
        R"("d.scale":{"dtype":"F8_E8M0","shape":[1,1],"data_offsets":[57,58]},)"
        R"("e.tid2eid":{"dtype":"I64","shape":[2],"data_offsets":[58,74]}})";
    return safetensors_bytes(header, data);
}

// Parses `bytes` and, when that succeeds, decodes every tensor every way that applies.
// Returns true if it parsed; lets only ds4::Error escape the decoders.
bool parse_and_decode(const std::vector<uint8_t>& bytes) {
    try {
        const st::File f = st::File::parse(bytes, "corrupt.safetensors");
        for (const st::Tensor& t : f.tensors()) {
            EXPECT_EQ(quant::decode_f32(f, t).size(), t.n_elements);
            try {
                f.to_i64(t);
                quant::narrow_i64_to_i32({&f, &t});
                quant::decode_official(f, t.name);
            } catch (const Error&) {
                // wrong dtype / missing scale / shape mismatch: expected for some tensors
            }
        }
        return true;
    } catch (const Error&) {
        return false;
    }
}

TEST(SafetensorsCorruption, SampleFileDecodes) {
    const std::vector<uint8_t> bytes = sample_file();
    const st::File f = st::File::parse(bytes, "sample.safetensors");
    EXPECT_EQ(f.tensors().size(), 7u);
    EXPECT_EQ(quant::decode_official(f, "c.weight").values.size(), 8u);
    EXPECT_EQ(quant::decode_official(f, "d.weight").values.size(), 32u);
}

TEST(SafetensorsCorruption, EveryTruncationParsesOrThrows) {
    const std::vector<uint8_t> full = sample_file();
    size_t parsed = 0;
    for (size_t n = 0; n < full.size(); ++n) {
        // A fresh exact-size buffer, so that any read past the end hits ASan's red zone.
        const std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
        const bool ok = parse_and_decode(cut);
        EXPECT_FALSE(ok) << "prefix of " << n << " bytes parsed";
        parsed += ok;
    }
    // The data region is needed in full; every proper prefix must fail.
    EXPECT_EQ(parsed, 0u);
    EXPECT_TRUE(parse_and_decode(full));
}

TEST(SafetensorsCorruption, EveryHeaderByteOverwrittenParsesOrThrows) {
    const std::vector<uint8_t> full = sample_file();
    uint64_t header_len;
    std::memcpy(&header_len, full.data(), 8);
    // Bytes chosen to hit JSON syntax (quotes, brackets, digits, minus, comma) and the
    // extremes of the length field.
    const uint8_t values[] = {0x00, 0xff, '"', '[', '{', '}', ',', '0', '9', '-', ' ', 0x80};
    size_t parsed = 0, cases = 0;
    for (size_t pos = 0; pos < 8 + header_len; ++pos) {
        for (uint8_t v : values) {
            if (full[pos] == v) continue;
            std::vector<uint8_t> bad = full;
            bad[pos] = v;
            parsed += parse_and_decode(bad);
            ++cases;
        }
    }
    // Some edits keep the file valid (e.g. a digit of a dtype-compatible offset or a
    // metadata character), most do not; both outcomes occur.
    EXPECT_GT(parsed, 0u);
    EXPECT_LT(parsed, cases);
}

TEST(SafetensorsCorruption, DataBytesNeverFailTheParse) {
    // Header intact, data arbitrary: parsing must succeed, decoding may refuse NaN scales.
    const std::vector<uint8_t> full = sample_file();
    uint64_t header_len;
    std::memcpy(&header_len, full.data(), 8);
    for (size_t pos = 8 + header_len; pos < full.size(); ++pos) {
        for (uint8_t v : {0x00, 0x7f, 0xff}) {
            std::vector<uint8_t> bad = full;
            bad[pos] = v;
            EXPECT_TRUE(parse_and_decode(bad)) << pos;
        }
    }
}

}  // namespace
}  // namespace ds4
