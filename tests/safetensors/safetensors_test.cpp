// safetensors reader: the golden files parse with the expected tensors and metadata, and
// each kind of malformed header fails with a ds4::Error that says what and where.
#include "gguf/safetensors.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "ds4/error.h"
#include "quant/checkpoint.h"
#include "st_builder.h"

namespace ds4 {
namespace {

using test::append;
using test::golden_path;
using test::safetensors_bytes;

// The message of the ds4::Error thrown while parsing `bytes`, or "(parsed)".
std::string parse_error(const std::vector<uint8_t>& bytes) {
    try {
        st::File::parse(bytes, "x.safetensors");
    } catch (const Error& e) {
        return e.what();
    }
    return "(parsed)";
}

std::string parse_error(std::string_view header, const std::vector<uint8_t>& data = {}) {
    return parse_error(safetensors_bytes(header, data));
}

#define EXPECT_CONTAINS(text, part) \
    EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text)

std::vector<uint8_t> zeros(size_t n) { return std::vector<uint8_t>(n, 0); }

// ---- golden files ----

TEST(SafetensorsGolden, TinyHasTheDocumentedTensors) {
    const st::File f = st::File::open(golden_path("golden_tiny_s1.safetensors"));
    EXPECT_EQ(f.tensors().size(), 857u);  // 858 header keys minus __metadata__

    const st::Tensor& tokens = f.require("golden.tokens");
    EXPECT_EQ(tokens.dtype, st::DType::I32);
    EXPECT_EQ(tokens.shape, (std::vector<uint64_t>{264}));
    const std::vector<int64_t> ids = f.to_i64(tokens);
    ASSERT_EQ(ids.size(), 264u);
    // First ids as read with Python's struct module from the same file.
    EXPECT_EQ((std::vector<int64_t>(ids.begin(), ids.begin() + 5)),
              (std::vector<int64_t>{109, 137, 189, 30, 14}));
    for (int64_t id : ids) EXPECT_TRUE(id >= 0 && id < 256) << id;

    const st::Tensor& embed = f.require("embed.weight");
    EXPECT_EQ(embed.dtype, st::DType::BF16);
    EXPECT_EQ(embed.shape, (std::vector<uint64_t>{256, 64}));
    EXPECT_EQ(embed.n_elements, 256u * 64u);
    EXPECT_EQ(embed.data.size(), 256u * 64u * 2u);
    EXPECT_EQ(embed.data[0], 0x72);  // bf16 0x3f72, little-endian
    EXPECT_EQ(embed.data[1], 0x3f);

    const st::Tensor& wq_b = f.require("layers.0.attn.wq_b.weight");
    EXPECT_EQ(wq_b.dtype, st::DType::F8_E4M3);
    EXPECT_EQ(wq_b.shape, (std::vector<uint64_t>{320, 16}));
    EXPECT_EQ(f.require("layers.0.attn.wq_b.scale").dtype, st::DType::F8_E8M0);
    EXPECT_EQ(f.require("layers.0.ffn.experts.0.w1.weight").dtype, st::DType::I8);
    EXPECT_EQ(f.require("layers.0.ffn.gate.tid2eid").dtype, st::DType::I64);
    EXPECT_EQ(f.require("golden.logits_decode").shape, (std::vector<uint64_t>{264, 256}));
    EXPECT_EQ(f.find("no.such.tensor"), nullptr);
}

TEST(SafetensorsGolden, TinyMetadataHoldsModelArgs) {
    const st::File f = st::File::open(golden_path("golden_tiny_s1.safetensors"));
    for (const char* key : {"format", "config", "seed", "seq_len", "prefill_len", "weights",
                            "logits", "model_args", "init_gain"})
        EXPECT_TRUE(f.metadata().contains(key)) << key;
    EXPECT_EQ(f.metadata().at("config"), "tiny");
    const nlohmann::json args = nlohmann::json::parse(f.metadata().at("model_args"));
    EXPECT_EQ(args.at("dim").get<int>(), 64);
    EXPECT_EQ(args.at("n_layers").get<int>(), 9);
}

TEST(SafetensorsGolden, TensorsAreOrderedByOffsetAndInsideTheFile) {
    for (const char* name : {"golden_tiny_s1.safetensors", "golden_tiny_s2.safetensors",
                             "golden_small_s1.safetensors", "quant_vectors.safetensors"}) {
        const auto map = std::make_shared<MappedFile>(golden_path(name));
        const st::File f = st::File::parse(map->bytes(), name);
        const uint8_t* begin = map->data();
        const uint8_t* end = begin + map->size();
        uint64_t prev_end = 0;
        for (const st::Tensor& t : f.tensors()) {
            EXPECT_GE(t.data.data(), begin) << name << " " << t.name;
            EXPECT_LE(t.data.data() + t.data.size(), end) << name << " " << t.name;
            EXPECT_GE(t.data_begin, prev_end) << name << " " << t.name;
            prev_end = t.data_begin + t.data.size();
        }
        // The writers pack tensors back to back up to the end of the file.
        EXPECT_EQ(f.tensors().back().data.data() + f.tensors().back().data.size(), end) << name;
    }
}

TEST(SafetensorsGolden, SmallAndQuantVectorsParse) {
    const st::File small = st::File::open(golden_path("golden_small_s1.safetensors"));
    EXPECT_EQ(small.tensors().size(), 941u);
    EXPECT_EQ(nlohmann::json::parse(small.metadata().at("model_args")).at("dim").get<int>(), 256);
    EXPECT_EQ(small.require("golden.tokens").shape, (std::vector<uint64_t>{700}));
    EXPECT_EQ(small.require("golden.logits_decode.topk_indices").dtype, st::DType::I32);

    const st::File qv = st::File::open(golden_path("quant_vectors.safetensors"));
    EXPECT_EQ(qv.tensors().size(), 11u);
    EXPECT_EQ(qv.require("Q8_0.blocks").dtype, st::DType::U8);
    EXPECT_EQ(qv.require("Q8_0.blocks").shape, (std::vector<uint64_t>{64, 34}));
    EXPECT_EQ(qv.require("IQ2_XXS.dequant").shape, (std::vector<uint64_t>{64, 256}));
    EXPECT_TRUE(qv.metadata().contains("seed"));
}

TEST(SafetensorsGolden, DTypeNamesRoundTrip) {
    for (st::DType d : {st::DType::F64, st::DType::F32, st::DType::F16, st::DType::BF16,
                        st::DType::F8_E4M3, st::DType::F8_E8M0, st::DType::I64, st::DType::I32,
                        st::DType::I16, st::DType::I8, st::DType::U8, st::DType::U16,
                        st::DType::BOOL})
        EXPECT_EQ(st::dtype_from_name(st::dtype_name(d)), d);
    EXPECT_EQ(st::dtype_size(st::DType::F8_E4M3), 1u);
    EXPECT_EQ(st::dtype_size(st::DType::BF16), 2u);
    EXPECT_EQ(st::dtype_size(st::DType::I64), 8u);
    EXPECT_FALSE(st::dtype_from_name("F8_E5M2"));
    EXPECT_FALSE(st::dtype_from_name("f32"));
}

// ---- well-formed edge cases ----

TEST(SafetensorsParse, ScalarEmptyAndUnalignedTensors) {
    // A 3-byte header leaves every tensor of the data region at an odd address.
    std::vector<uint8_t> data;
    append<int64_t>(data, -5);
    append<uint16_t>(data, 65535);
    append<int8_t>(data, -128);
    data.push_back(2);  // BOOL: any non-zero byte is true
    const std::string header = R"({"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
                               R"("u":{"dtype":"U16","shape":[1],"data_offsets":[8,10]},)"
                               R"("e":{"dtype":"F32","shape":[0,7],"data_offsets":[4,4]},)"
                               R"("i":{"dtype":"I8","shape":[1],"data_offsets":[10,11]},)"
                               R"("b":{"dtype":"BOOL","shape":[1],"data_offsets":[11,12]},)"
                               R"("__metadata__":{"k":"v"}}   )";  // trailing padding
    const std::vector<uint8_t> bytes = safetensors_bytes(header, data);
    const st::File f = st::File::parse(bytes, "edge.safetensors");
    EXPECT_EQ(f.tensors().size(), 5u);
    EXPECT_EQ(f.require("s").n_elements, 1u);
    EXPECT_EQ(f.to_i64(f.require("s")), (std::vector<int64_t>{-5}));
    EXPECT_EQ(f.to_i64(f.require("u")), (std::vector<int64_t>{65535}));
    EXPECT_EQ(f.to_i64(f.require("i")), (std::vector<int64_t>{-128}));
    EXPECT_EQ(f.to_i64(f.require("b")), (std::vector<int64_t>{1}));
    EXPECT_EQ(f.require("e").n_elements, 0u);  // inside 's' but owns no bytes
    EXPECT_TRUE(f.to_i64(f.require("s")).size() == 1);
    EXPECT_EQ(f.metadata().at("k"), "v");
}

TEST(SafetensorsParse, EmptyHeaderObjectHasNoTensors) {
    const std::vector<uint8_t> bytes = safetensors_bytes("{}");
    const st::File f = st::File::parse(bytes, "empty.safetensors");
    EXPECT_TRUE(f.tensors().empty());
    EXPECT_TRUE(f.metadata().empty());
}

// ---- malformed files ----

TEST(SafetensorsMalformed, FileShorterThanTheLengthField) {
    EXPECT_CONTAINS(parse_error(std::vector<uint8_t>{1, 0, 0}), "x.safetensors: file is 3 bytes");
}

TEST(SafetensorsMalformed, HeaderLengthPastEndOfFile) {
    std::vector<uint8_t> bytes = safetensors_bytes("{}");
    bytes[0] = 3;  // claims 3 header bytes where 2 exist
    EXPECT_CONTAINS(parse_error(bytes), "header length 3 runs past the end of the file");
}

TEST(SafetensorsMalformed, AbsurdHeaderLength) {
    std::vector<uint8_t> bytes = safetensors_bytes("{}");
    bytes[7] = 0x10;  // about 2^60
    EXPECT_CONTAINS(parse_error(bytes), "exceeds the 104857600-byte limit");
}

TEST(SafetensorsMalformed, TruncatedData) {
    const std::string header = R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
    EXPECT_CONTAINS(parse_error(header, zeros(15)),
                    "x.safetensors: tensor 't': data_offsets [0, 16) runs past the end of the "
                    "data (15 bytes)");
}

TEST(SafetensorsMalformed, InvalidJson) {
    const std::string msg = parse_error(R"({"a": [1,)");
    EXPECT_CONTAINS(msg, "x.safetensors: header is not valid JSON (byte 10 of the header)");
    EXPECT_CONTAINS(parse_error("{\"a\xff\": 1}"), "not valid JSON");  // bad UTF-8
    EXPECT_CONTAINS(parse_error(""), "not valid JSON");
    // nlohmann reports numbers beyond double's range as out_of_range, not parse_error
    // (found by the fuzzer).
    EXPECT_CONTAINS(parse_error("3e1000031937"), "not valid JSON: ");
    EXPECT_CONTAINS(parse_error(R"({"w":{"dtype":"U8","shape":[1e400],"data_offsets":[0,1]}})"),
                    "number overflow");
}

TEST(SafetensorsMalformed, HeaderNotAnObject) {
    EXPECT_CONTAINS(parse_error("[1, 2]"), "header is a JSON array, expected an object");
}

TEST(SafetensorsMalformed, DeeplyNestedJson) {
    EXPECT_CONTAINS(parse_error(std::string(5000, '[') + std::string(5000, ']')),
                    "nested deeper than 8 levels");
}

TEST(SafetensorsMalformed, DuplicateTensorName) {
    const std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                               R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
    EXPECT_CONTAINS(parse_error(header, zeros(2)), "header lists 'a' twice");
    EXPECT_CONTAINS(parse_error(R"({"a":{"dtype":"U8","dtype":"U8"}})"),
                    "repeats the key 'dtype' inside one object");
}

TEST(SafetensorsMalformed, EntryNotAnObject) {
    EXPECT_CONTAINS(parse_error(R"({"w": 5})"),
                    "x.safetensors: tensor 'w': entry is a JSON number, expected an object");
}

TEST(SafetensorsMalformed, MissingFields) {
    EXPECT_CONTAINS(parse_error(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", zeros(1)),
                    "tensor 'w': field 'dtype' is missing");
    EXPECT_CONTAINS(parse_error(R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", zeros(1)),
                    "tensor 'w': field 'shape' is missing");
    EXPECT_CONTAINS(parse_error(R"({"w":{"dtype":"U8","shape":[1]}})", zeros(1)),
                    "tensor 'w': field 'data_offsets' is missing");
}

TEST(SafetensorsMalformed, UnsupportedOrMistypedDType) {
    EXPECT_CONTAINS(
        parse_error(R"({"w":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[0,1]}})", zeros(1)),
        "tensor 'w': unsupported dtype 'F8_E5M2' (supported: F64 F32 F16 BF16 F8_E4M3 F8_E8M0");
    EXPECT_CONTAINS(parse_error(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,1]}})", zeros(1)),
                    "tensor 'w': dtype is a JSON number, expected a string");
}

TEST(SafetensorsMalformed, BadShapes) {
    auto with_shape = [](const std::string& shape) {
        return parse_error(R"({"w":{"dtype":"U8","shape":)" + shape +
                               R"(,"data_offsets":[0,1]}})",
                           zeros(1));
    };
    EXPECT_CONTAINS(with_shape("[-1]"), "tensor 'w': shape holds -1, expected a non-negative integer");
    EXPECT_CONTAINS(with_shape("[1.5]"), "shape holds 1.5");
    EXPECT_CONTAINS(with_shape("[\"1\"]"), "shape holds \"1\"");
    EXPECT_CONTAINS(with_shape("7"), "tensor 'w': shape is a JSON number, expected an array");
    EXPECT_CONTAINS(with_shape("[4294967296, 4294967296, 16]"), "more than 2^64 elements");
    EXPECT_CONTAINS(with_shape("[18446744073709551615, 2]"), "more than 2^64 elements");
}

TEST(SafetensorsMalformed, ShapeDisagreesWithOffsets) {
    const std::string header =
        R"({"layers.0.attn.wq_a.weight":{"dtype":"F32","shape":[4,8],"data_offsets":[0,96]}})";
    EXPECT_EQ(parse_error(header, zeros(96)),
              "x.safetensors: tensor 'layers.0.attn.wq_a.weight': data_offsets [0, 96) holds 96 "
              "bytes, expected 128 (shape [4, 8] × F32)");
    // n_elements × dtype size overflowing u64 is caught before it wraps to a small size.
    EXPECT_CONTAINS(
        parse_error(R"({"w":{"dtype":"I64","shape":[2305843009213693952],"data_offsets":[0,0]}})"),
        "shape [2305843009213693952] × I64 is more than 2^64 bytes");
}

TEST(SafetensorsMalformed, BadOffsets) {
    auto with_offsets = [](const std::string& offsets) {
        return parse_error(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":)" + offsets + "}}",
                           zeros(4));
    };
    EXPECT_CONTAINS(with_offsets("[2,1]"), "tensor 'w': data_offsets [2, 1) has begin > end");
    EXPECT_CONTAINS(with_offsets("[0]"), "tensor 'w': data_offsets holds [0], expected [begin, end]");
    EXPECT_CONTAINS(with_offsets("[0,1,2]"), "expected [begin, end]");
    EXPECT_CONTAINS(with_offsets("{}"), "expected [begin, end]");
    EXPECT_CONTAINS(with_offsets("[-1,0]"), "data_offsets holds -1");
    EXPECT_CONTAINS(with_offsets("[4,5]"), "data_offsets [4, 5) runs past the end of the data");
    EXPECT_CONTAINS(with_offsets("[18446744073709551615,18446744073709551615]"),
                    "runs past the end of the data");
}

TEST(SafetensorsMalformed, OverlappingTensors) {
    const std::string header = R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                               R"("b":{"dtype":"U8","shape":[16],"data_offsets":[8,24]}})";
    EXPECT_EQ(parse_error(header, zeros(24)),
              "x.safetensors: tensors 'a' [0, 16) and 'b' [8, 24) overlap");
    // Same start, different names: still an overlap.
    const std::string same = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                             R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
    EXPECT_CONTAINS(parse_error(same, zeros(4)), "overlap");
}

TEST(SafetensorsMalformed, MetadataNotAStringMap) {
    EXPECT_CONTAINS(parse_error(R"({"__metadata__":{"seed":1}})"),
                    "__metadata__ key 'seed' is a JSON number, expected a string");
    EXPECT_CONTAINS(parse_error(R"({"__metadata__":[]})"),
                    "__metadata__ is a JSON array, expected an object of strings");
}

TEST(SafetensorsMalformed, MissingTensorAndMissingFile) {
    const std::vector<uint8_t> bytes = safetensors_bytes("{}");
    const st::File f = st::File::parse(bytes, "x.safetensors");
    try {
        f.require("embed.weight");
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "x.safetensors: tensor 'embed.weight' is missing");
    }
    try {
        st::File::open("/nonexistent/dir/m.safetensors");
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_CONTAINS(e.what(), "/nonexistent/dir/m.safetensors");
    }
}

TEST(SafetensorsMalformed, IntegerDecodeOfFloatTensor) {
    const std::vector<uint8_t> bytes =
        safetensors_bytes(R"({"f":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", zeros(4));
    const st::File f = st::File::parse(bytes, "x.safetensors");
    try {
        f.to_i64(f.require("f"));
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_CONTAINS(e.what(), "tensor 'f' has dtype F32, expected an integer dtype");
    }
}

}  // namespace
}  // namespace ds4
