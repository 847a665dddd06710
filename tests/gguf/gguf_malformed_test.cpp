// Each class of malformed input must fail with a ds4::Error that names the file, the
// record and what was expected.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "gguf_builder.h"

namespace ds4::gguf {
namespace {

using testing::Bytes;
using testing::RawGguf;

// Parses and expects a ds4::Error containing every one of `words`.
void expect_rejected(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> words) {
    try {
        File::parse(bytes, "bad.gguf");
        ADD_FAILURE() << "parsed without error";
    } catch (const ds4::Error& e) {
        const std::string msg = e.what();
        EXPECT_EQ(msg.rfind("bad.gguf: ", 0), 0u) << msg;
        for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' not in: " << msg;
    }
}

RawGguf one_tensor() {
    RawGguf g;
    g.kv("general.name", ValueType::STRING, Bytes().str("m"));
    g.tensor("w", {8}, GgmlType::F32, 0);
    g.data.assign(32, 0);
    return g;
}

TEST(GgufMalformed, BadMagic) {
    auto g = one_tensor();
    g.magic = 0x46554746;
    expect_rejected(g.build(), {"not a GGUF file", "magic at byte 0 is 0x46554746", "0x46554747"});
}

TEST(GgufMalformed, Version2And4) {
    for (uint32_t v : {2u, 4u}) {
        auto g = one_tensor();
        g.version = v;
        expect_rejected(g.build(), {cat("unsupported GGUF version ", v), "expected 3"});
    }
}

TEST(GgufMalformed, TooSmallFiles) {
    for (size_t n : {0u, 4u, 24u, 31u}) {
        std::vector<uint8_t> b(n, 0);
        expect_rejected(b, {cat("file is ", n, " bytes"), "too small", "at least 32"});
    }
}

TEST(GgufMalformed, TruncatedInEachRegion) {
    const auto sample = testing::make_sample_file();
    // Inside kv_count, inside the first key, inside a tensor name, inside the last offset.
    for (size_t cut : {size_t{40}, size_t{60}, sample.infos_end - 3}) {
        std::vector<uint8_t> b(sample.bytes.begin(), sample.bytes.begin() + static_cast<ptrdiff_t>(cut));
        if (b.size() < 32) continue;
        expect_rejected(b, {});
    }
    std::vector<uint8_t> b(sample.bytes.begin(), sample.bytes.begin() + static_cast<ptrdiff_t>(sample.infos_end - 3));
    expect_rejected(b, {"tensor 'half' (#3)", "truncated GGUF file at byte", "data offset needs 8 bytes"});
}

TEST(GgufMalformed, TensorDataPastEndOfFile) {
    auto g = one_tensor();
    g.data.assign(16, 0);  // 32 bytes declared
    const auto b = g.build();
    const uint64_t start = b.size() - 16;
    expect_rejected(b, {"tensor 'w' (#0)", cat("data [", start, ", ", start + 32, ")"),
                        cat("extends past end of file (", b.size(), " bytes)")});
}

TEST(GgufMalformed, TensorOffsetFarPastEnd) {
    auto g = one_tensor();
    g.tensors[0].offset = 1ull << 40;
    expect_rejected(g.build(), {"tensor 'w' (#0)", "extends past end of file"});
}

TEST(GgufMalformed, TensorOffsetOverflow) {
    auto g = one_tensor();
    g.tensors[0].offset = ~0ull - 31;  // a multiple of 32 that overflows data_start + offset
    expect_rejected(g.build(), {"tensor 'w' (#0)", "tensor offset overflow"});
}

TEST(GgufMalformed, OverlappingTensorsNameBoth) {
    auto g = one_tensor();
    g.tensor("v", {16}, GgmlType::F32, 32);
    g.tensor("u", {8}, GgmlType::F32, 64);  // inside v's [32, 96)
    g.data.assign(128, 0);
    expect_rejected(g.build(), {"tensors 'v' (#1)", "'u' (#2)", "overlap"});
}

TEST(GgufMalformed, SameOffsetTensorsOverlap) {
    auto g = one_tensor();
    g.tensor("v", {8}, GgmlType::F32, 0);
    expect_rejected(g.build(), {"tensors 'w' (#0)", "'v' (#1)", "overlap"});
}

TEST(GgufMalformed, MisalignedOffset) {
    auto g = one_tensor();
    g.tensors[0].offset = 4;
    g.data.assign(64, 0);
    expect_rejected(g.build(), {"tensor 'w' (#0)", "data offset 4 is not a multiple of the alignment 32"});
}

TEST(GgufMalformed, NDimsZeroAndNine) {
    for (uint64_t n : {0u, 9u}) {
        auto g = one_tensor();
        g.tensors[0].dims.assign(n, 1);
        expect_rejected(g.build(), {"tensor 'w' (#0)", cat("n_dims is ", n), "expected 1..8"});
    }
}

TEST(GgufMalformed, HugeCounts) {
    auto g = one_tensor();
    g.kv_count = 1ull << 60;
    expect_rejected(g.build(), {"header claims 1152921504606846976 metadata records"});
    g = one_tensor();
    g.tensor_count = ~0ull;
    expect_rejected(g.build(), {"18446744073709551615 tensors"});
    g = one_tensor();
    g.tensor_count = 3;  // fits the header check, but not what is left after the metadata
    expect_rejected(g.build(), {"tensor"});
}

TEST(GgufMalformed, HugeStringLength) {
    RawGguf g;
    g.kv("s", ValueType::STRING, Bytes().u64(1ull << 62).zeros(32));
    expect_rejected(g.build(), {"metadata key 's' (#0)", "truncated GGUF file", "string value needs 4611686018427387904 bytes"});
    RawGguf k;  // key length
    k.kvs.push_back(Bytes().u64(~0ull).zeros(40).data());
    expect_rejected(k.build(), {"metadata key #0", "key needs 18446744073709551615 bytes"});
}

TEST(GgufMalformed, HugeArrayCounts) {
    for (auto elem : {ValueType::U8, ValueType::F64, ValueType::STRING, ValueType::ARRAY}) {
        RawGguf g;
        g.kv("arr", ValueType::ARRAY, Bytes().u32(static_cast<uint32_t>(elem)).u64(1ull << 61).zeros(16));
        expect_rejected(g.build(), {"metadata key 'arr' (#0)", "array of 2305843009213693952",
                                    std::string(value_type_name(elem)), "cannot fit"});
    }
}

TEST(GgufMalformed, ElementCountOverflow) {
    auto g = one_tensor();
    g.tensors[0].dims = {1ull << 32, 1ull << 32, 2};
    expect_rejected(g.build(), {"tensor 'w' (#0)", "tensor element count overflow"});
}

TEST(GgufMalformed, ByteSizeOverflow) {
    auto g = one_tensor();
    g.tensors[0].dims = {1ull << 62, 2};  // 2^63 elements * 4 bytes
    expect_rejected(g.build(), {"tensor 'w' (#0)", "byte size overflow"});
}

TEST(GgufMalformed, PartialBlock) {
    auto g = one_tensor();
    g.tensors[0] = {"q", {33}, static_cast<uint32_t>(GgmlType::Q8_0), 0};
    expect_rejected(g.build(), {"tensor 'q' (#0)", "dim[0]=33", "Q8_0 block size 32"});
}

TEST(GgufMalformed, UnknownValueType) {
    RawGguf g;
    g.kv_scalar<uint32_t>("x", static_cast<ValueType>(13), 0);
    expect_rejected(g.build(), {"metadata key 'x' (#0)", "unknown GGUF metadata type 13"});
    RawGguf a;
    a.kv("y", ValueType::ARRAY, Bytes().u32(99).u64(1).zeros(8));
    expect_rejected(a.build(), {"metadata key 'y' (#0)", "unknown GGUF metadata type 99"});
}

TEST(GgufMalformed, NestingTooDeep) {
    RawGguf g;
    g.kv("deep", ValueType::ARRAY, testing::nested_array(9));
    expect_rejected(g.build(), {"metadata key 'deep' (#0)", "metadata array nesting is too deep"});
}

TEST(GgufMalformed, DuplicateTensorNames) {
    auto g = one_tensor();
    g.tensor("w", {8}, GgmlType::F32, 32);
    g.data.assign(64, 0);
    expect_rejected(g.build(), {"tensor 'w' (#1)", "duplicate tensor name", "#0"});
}

TEST(GgufMalformed, AlignmentNotPowerOfTwo) {
    RawGguf g;
    g.kv_scalar<uint32_t>("general.alignment", ValueType::U32, 48);
    expect_rejected(g.build(), {"general.alignment", "48", "power of two"});
}

TEST(GgufMalformed, DataStartPastEnd) {
    RawGguf g;
    g.alignment = 1;  // no padding written
    g.kv("s", ValueType::STRING, Bytes().str("abcdefghijk"));  // 24 + 8+1+4+8+11 = 56 bytes
    expect_rejected(g.build(), {"tensor data region starts at byte 64", "past end of file (56 bytes)"});
}

TEST(GgufMalformed, ControlBytesInNamesAreEscaped) {
    auto g = one_tensor();
    g.tensors[0].name = std::string("a\nb\0", 4);
    g.tensors[0].offset = 8;
    g.data.assign(64, 0);
    expect_rejected(g.build(), {"tensor 'a\\x0ab\\x00' (#0)"});
}

// ---------------------------------------------------------------------------------
// Files on disk.

TEST(GgufOpen, MissingFile) {
    const std::string path = testing::temp_path("missing");
    try {
        File::open(path);
        ADD_FAILURE();
    } catch (const ds4::Error& e) {
        EXPECT_EQ(std::string(e.what()), path + ": cannot open: No such file or directory");
    }
}

TEST(GgufOpen, EmptyFileIsTooSmallNotACrash) {
    const std::string path = testing::temp_path("empty");
    testing::write_file_bytes(path, {});
    MappedFile m(path);
    EXPECT_EQ(m.size(), 0u);
    EXPECT_TRUE(m.bytes().empty());
    try {
        File::open(path);
        ADD_FAILURE();
    } catch (const ds4::Error& e) {
        EXPECT_EQ(std::string(e.what()),
                  path + ": file is 0 bytes, too small to be a GGUF file (at least 32 expected)");
    }
    std::filesystem::remove(path);
}

TEST(GgufOpen, DirectoryIsNotARegularFile) {
    const std::string dir = std::filesystem::path(testing::temp_path("dir")).parent_path().string();
    try {
        MappedFile m(dir);
        ADD_FAILURE();
    } catch (const ds4::Error& e) {
        EXPECT_EQ(std::string(e.what()), dir + ": not a regular file");
    }
}

TEST(GgufOpen, MapsAndParsesFromDisk) {
    const auto sample = testing::make_sample_file();
    const std::string path = testing::temp_path("disk");
    testing::write_file_bytes(path, sample.bytes);
    {
        const File f = File::open(path);
        EXPECT_EQ(f.path(), path);
        EXPECT_EQ(f.size(), sample.bytes.size());
        ASSERT_EQ(f.tensors().size(), 4u);
        const auto d = f.tensor_data(f.require_tensor("tid2eid"));
        EXPECT_TRUE(std::equal(d.begin(), d.end(), sample.tensor_bytes[2].begin(), sample.tensor_bytes[2].end()));
        const File copy = f;  // copies share the mapping
        EXPECT_EQ(copy.tensor_data(copy.tensors()[0]).data(), f.tensor_data(f.tensors()[0]).data());
    }
    std::filesystem::remove(path);
}

}  // namespace
}  // namespace ds4::gguf
