// Writer -> reader round trips: every value type, every array type, nested arrays (raw
// builder), alignment rules, tensors of several ggml types, and the strict getters.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "gguf_builder.h"

namespace ds4::gguf {
namespace {

using testing::Bytes;
using testing::RawGguf;

// Expects `f` to throw ds4::Error whose message is exactly `message`.
template <typename F>
void expect_error_text(F&& f, const std::string& message) {
    try {
        f();
        ADD_FAILURE() << "no exception; expected: " << message;
    } catch (const ds4::Error& e) {
        EXPECT_EQ(e.what(), message);
    }
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 31 + (i >> 8));
    return v;
}

class RoundTrip : public ::testing::Test {
protected:
    void TearDown() override { std::filesystem::remove(path_); }
    std::string path_ = testing::temp_path("roundtrip");
};

TEST_F(RoundTrip, EveryScalarTypeReadsBackExactly) {
    Writer w;
    w.add_u8("u8", 250);
    w.add_i8("i8", -120);
    w.add_u16("u16", 65000);
    w.add_i16("i16", -32000);
    w.add_u32("u32", 4000000000u);
    w.add_i32("i32", -2000000000);
    w.add_u64("u64", 18000000000000000000ull);
    w.add_i64("i64", -9000000000000000000ll);
    w.add_f32("f32", 3.25f);
    w.add_f64("f64", -1e-300);
    w.add_bool("yes", true);
    w.add_bool("no", false);
    w.add_string("str", "DeepSeek \xef\xbd\x9c V4");
    w.add_string("empty", "");
    w.begin(path_);
    w.finish();

    const File f = File::open(path_);
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.metadata().size(), 14u);
    EXPECT_EQ(f.get_u8("u8"), 250);
    EXPECT_EQ(f.get_i8("i8"), -120);
    EXPECT_EQ(f.get_u16("u16"), 65000);
    EXPECT_EQ(f.get_i16("i16"), -32000);
    EXPECT_EQ(f.get_u32("u32"), 4000000000u);
    EXPECT_EQ(f.get_i32("i32"), -2000000000);
    EXPECT_EQ(f.get_u64("u64"), 18000000000000000000ull);
    EXPECT_EQ(f.get_i64("i64"), -9000000000000000000ll);
    EXPECT_EQ(f.get_f32("f32"), 3.25f);
    EXPECT_EQ(f.get_f64("f64"), -1e-300);
    EXPECT_EQ(f.get_bool("yes"), true);
    EXPECT_EQ(f.get_bool("no"), false);
    EXPECT_EQ(f.get_string("str"), "DeepSeek \xef\xbd\x9c V4");
    EXPECT_EQ(f.get_string("empty"), "");
    EXPECT_EQ(f.get_u32("absent"), std::nullopt);
    // Metadata keeps insertion order and records types.
    EXPECT_EQ(f.metadata()[0].key, "u8");
    EXPECT_EQ(f.metadata()[13].key, "empty");
    EXPECT_EQ(f.metadata()[10].type, ValueType::BOOL);
    EXPECT_EQ(f.require_integer("u32"), 4000000000u);
    EXPECT_EQ(f.require_integer("u64"), 18000000000000000000ull);
    EXPECT_EQ(f.require_float("f32"), 3.25);
    EXPECT_EQ(f.require_float("f64"), -1e-300);
    EXPECT_EQ(f.require_float("u32"), 4000000000.0);
    EXPECT_EQ(f.require_float("i32"), -2000000000.0);
    EXPECT_TRUE(f.require_bool("yes"));
    EXPECT_EQ(f.require_string("str"), "DeepSeek \xef\xbd\x9c V4");
    EXPECT_TRUE(f.tensors().empty());
    EXPECT_EQ(f.size(), f.data_start());
}

TEST_F(RoundTrip, EveryArrayTypeReadsBackExactly) {
    const std::vector<uint8_t> u8{0, 1, 255};
    const std::vector<int8_t> i8{-128, 0, 127};
    const std::vector<uint16_t> u16{0, 65535};
    const std::vector<int16_t> i16{-32768, 32767};
    const std::vector<uint32_t> u32{0, 4, 128, 4294967295u};
    const std::vector<int32_t> i32{-1, 0, 2147483647};
    const std::vector<uint64_t> u64{0, 9223372036854775807ull};
    const std::vector<int64_t> i64{std::numeric_limits<int64_t>::min(), 5};
    const std::vector<float> f32{10.0f, -0.5f, 1e-6f};
    const std::vector<double> f64{1e-6, 160000.0};
    const bool bools[] = {true, false, true};
    const std::vector<std::string> strs{"<｜begin▁of▁sentence｜>", "", "Ġa b", std::string("\0x", 2)};
    Writer w;
    w.add_array_u8("a.u8", u8);
    w.add_array_i8("a.i8", i8);
    w.add_array_u16("a.u16", u16);
    w.add_array_i16("a.i16", i16);
    w.add_array_u32("a.u32", u32);
    w.add_array_i32("a.i32", i32);
    w.add_array_u64("a.u64", u64);
    w.add_array_i64("a.i64", i64);
    w.add_array_f32("a.f32", f32);
    w.add_array_f64("a.f64", f64);
    w.add_array_bool("a.bool", bools);
    w.add_array_string("a.str", strs);
    w.add_array_u32("a.empty", {});
    w.begin(path_);
    w.finish();

    const File f = File::open(path_);
    EXPECT_EQ(f.get_int_array("a.u8"), (std::vector<int64_t>{0, 1, 255}));
    EXPECT_EQ(f.get_int_array("a.i8"), (std::vector<int64_t>{-128, 0, 127}));
    EXPECT_EQ(f.get_int_array("a.u16"), (std::vector<int64_t>{0, 65535}));
    EXPECT_EQ(f.get_int_array("a.i16"), (std::vector<int64_t>{-32768, 32767}));
    EXPECT_EQ(f.get_int_array("a.u32"), (std::vector<int64_t>{0, 4, 128, 4294967295ll}));
    EXPECT_EQ(f.get_int_array("a.i32"), (std::vector<int64_t>{-1, 0, 2147483647}));
    EXPECT_EQ(f.get_int_array("a.u64"), (std::vector<int64_t>{0, 9223372036854775807ll}));
    EXPECT_EQ(f.get_int_array("a.i64"),
              (std::vector<int64_t>{std::numeric_limits<int64_t>::min(), 5}));
    EXPECT_EQ(f.get_float_array("a.f32"), (std::vector<double>{10.0, -0.5, double(1e-6f)}));
    EXPECT_EQ(f.get_float_array("a.f64"), (std::vector<double>{1e-6, 160000.0}));
    EXPECT_EQ(f.get_bool_array("a.bool"), (std::vector<uint8_t>{1, 0, 1}));
    const auto got = f.get_string_array("a.str");
    ASSERT_EQ(got.size(), strs.size());
    for (size_t i = 0; i < strs.size(); ++i) EXPECT_EQ(got[i], strs[i]) << i;
    EXPECT_TRUE(f.get_int_array("a.empty").empty());

    const KeyValue* kv = f.find("a.str");
    ASSERT_NE(kv, nullptr);
    EXPECT_EQ(kv->type, ValueType::ARRAY);
    EXPECT_EQ(kv->array_type, ValueType::STRING);
    EXPECT_EQ(kv->array_count, 4u);
    EXPECT_EQ(f.find("a.u16")->value_size, 4u + 8u + 2u * 2u);
}

TEST(GgufNestedArrays, NestedArraysUpToEightLevelsParseAndCopyVerbatim) {
    for (int depth = 1; depth <= 8; ++depth) {
        RawGguf g;
        g.kv("nested", ValueType::ARRAY, testing::nested_array(depth));
        g.kv_scalar<uint32_t>("after", ValueType::U32, 77);
        const auto bytes = g.build();
        const File f = File::parse(bytes, "nested.gguf");
        const KeyValue& kv = f.metadata()[0];
        EXPECT_EQ(kv.array_type, depth == 1 ? ValueType::U32 : ValueType::ARRAY) << depth;
        EXPECT_EQ(kv.array_count, 2u);
        EXPECT_EQ(kv.value_size, testing::nested_array(depth).size());
        const auto raw = f.raw_value(kv);
        EXPECT_TRUE(std::equal(raw.begin(), raw.end(), testing::nested_array(depth).data().begin()));
        EXPECT_EQ(f.get_u32("after"), 77u) << "skipping the nested value must land on the next key";
        if (depth > 1) {
            expect_error_text([&] { f.get_int_array("nested"); },
                              "nested.gguf: metadata key nested has type ARRAY of ARRAY, expected "
                              "ARRAY of an integer type");
        }
    }
}

TEST(GgufNestedArrays, ArraysOfStringArraysParse) {
    RawGguf g;
    Bytes v;
    v.u32(static_cast<uint32_t>(ValueType::ARRAY)).u64(2);
    v.u32(static_cast<uint32_t>(ValueType::STRING)).u64(2).str("ab").str("c");
    v.u32(static_cast<uint32_t>(ValueType::STRING)).u64(0);
    g.kv("merges2", ValueType::ARRAY, v);
    g.kv("s", ValueType::STRING, Bytes().str("end"));
    const auto bytes = g.build();
    const File f = File::parse(bytes, "x.gguf");
    EXPECT_EQ(f.find("merges2")->value_size, v.size());
    EXPECT_EQ(f.get_string("s"), "end");
}

TEST(GgufAlignment, DefaultIs32) {
    RawGguf g;
    g.kv("a", ValueType::STRING, Bytes().str("x"));
    g.tensor("t", {8}, GgmlType::F32, 0);
    g.data.assign(32, 1);
    const auto bytes = g.build();
    const File f = File::parse(bytes, "a.gguf");
    EXPECT_EQ(f.alignment(), 32u);
    EXPECT_EQ(f.data_start() % 32, 0u);
    EXPECT_EQ(f.data_start(), (g.infos_end() + 31) / 32 * 32);
}

TEST(GgufAlignment, U32GeneralAlignmentIsUsed) {
    RawGguf g;
    g.alignment = 64;
    g.kv_scalar<uint32_t>("general.alignment", ValueType::U32, 64);
    g.tensor("a", {4}, GgmlType::F32, 0);
    g.tensor("b", {4}, GgmlType::F32, 64);
    g.data.assign(128, 2);
    const auto bytes = g.build();
    const File f = File::parse(bytes, "a.gguf");
    EXPECT_EQ(f.alignment(), 64u);
    EXPECT_EQ(f.data_start() % 64, 0u);
    EXPECT_EQ(f.tensors()[1].abs_offset, f.data_start() + 64);
}

TEST(GgufAlignment, U64GeneralAlignmentIsIgnored) {
    RawGguf g;  // padding to 32 only: a reader that honoured the u64 would look at byte 64
    g.kv_scalar<uint64_t>("general.alignment", ValueType::U64, 64);
    g.tensor("a", {4}, GgmlType::F32, 0);
    g.data.assign(16, 3);
    const auto bytes = g.build();
    const File f = File::parse(bytes, "a.gguf");
    EXPECT_EQ(f.alignment(), 32u);
    EXPECT_EQ(f.data_start(), (g.infos_end() + 31) / 32 * 32);
    EXPECT_EQ(f.tensor_data(f.tensors()[0])[0], 3);
}

TEST(GgufAlignment, ZeroU32GeneralAlignmentMeansDefault) {
    RawGguf g;
    g.kv_scalar<uint32_t>("general.alignment", ValueType::U32, 0);
    const auto bytes = g.build();
    EXPECT_EQ(File::parse(bytes, "a.gguf").alignment(), 32u);
}

TEST(GgufAlignment, FirstRecordWinsForDuplicateKeys) {
    RawGguf g;
    g.kv_scalar<uint32_t>("k", ValueType::U32, 1);
    g.kv_scalar<uint32_t>("k", ValueType::U32, 2);
    const auto bytes = g.build();
    const File f = File::parse(bytes, "a.gguf");
    EXPECT_EQ(f.get_u32("k"), 1u);
    EXPECT_EQ(f.metadata().size(), 2u);
}

TEST_F(RoundTrip, TensorsOfSeveralTypesKeepShapeOffsetsAndBytes) {
    struct Spec {
        const char* name;
        std::vector<uint64_t> dims;
        GgmlType type;
        uint64_t bytes;
    };
    const std::vector<Spec> specs = {
        {"f32", {5}, GgmlType::F32, 20},
        {"f16", {3, 2}, GgmlType::F16, 12},
        {"q8_0", {64, 3}, GgmlType::Q8_0, 6 * 34},
        {"q2_k", {256, 2}, GgmlType::Q2_K, 2 * 84},
        {"q4_k", {512}, GgmlType::Q4_K, 2 * 144},
        {"iq2_xxs", {256, 1, 2}, GgmlType::IQ2_XXS, 2 * 66},
        {"i32", {6, 2}, GgmlType::I32, 48},
        {"bf16", {7}, GgmlType::BF16, 14},
        {"empty", {0, 4}, GgmlType::F32, 0},
    };
    for (uint32_t alignment : {32u, 64u, 4096u}) {
        Writer w;
        if (alignment != 32) w.add_u32("general.alignment", alignment);
        std::vector<std::vector<uint8_t>> data;
        for (size_t i = 0; i < specs.size(); ++i) {
            w.add_tensor(specs[i].name, specs[i].dims, specs[i].type);
            ASSERT_EQ(w.tensor_bytes(i), specs[i].bytes) << specs[i].name;
            data.push_back(pattern(specs[i].bytes, static_cast<uint8_t>(i * 17)));
        }
        EXPECT_EQ(w.alignment(), alignment);
        w.begin(path_);
        for (const auto& d : data) w.write_data(d);
        w.finish();

        const File f = File::open(path_);
        EXPECT_EQ(f.alignment(), alignment);
        EXPECT_EQ(f.data_start() % alignment, 0u);
        ASSERT_EQ(f.tensors().size(), specs.size());
        uint64_t expected_offset = 0;
        for (size_t i = 0; i < specs.size(); ++i) {
            const TensorInfo& t = f.tensors()[i];
            EXPECT_EQ(t.name, specs[i].name);
            EXPECT_EQ(t.index, i);
            EXPECT_EQ(t.ggml_type(), specs[i].type);
            EXPECT_EQ(std::vector<uint64_t>(t.shape().begin(), t.shape().end()), specs[i].dims);
            EXPECT_EQ(t.n_bytes, specs[i].bytes);
            EXPECT_EQ(t.offset, expected_offset) << specs[i].name;
            EXPECT_EQ(t.abs_offset, f.data_start() + expected_offset);
            expected_offset += (specs[i].bytes + alignment - 1) / alignment * alignment;
            const auto bytes = f.tensor_data(t);
            EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), data[i].begin(), data[i].end()))
                << specs[i].name;
            EXPECT_EQ(&f.require_tensor(specs[i].name), &t);
        }
        EXPECT_EQ(f.size(), f.data_start() + expected_offset) << "file ends padded after the last tensor";
        EXPECT_EQ(f.tensors()[1].dims[2], 1u) << "unused dims are 1";
        EXPECT_EQ(f.tensors()[2].n_elements, 192u);
    }
}

// ---------------------------------------------------------------------------------
// Strict getters: exact messages.

class StrictGetters : public ::testing::Test {
protected:
    void SetUp() override {
        RawGguf g;
        g.kv_scalar<int32_t>("k.i32", ValueType::I32, -5);
        g.kv_scalar<uint32_t>("k.u32", ValueType::U32, 7);
        g.kv_scalar<uint64_t>("k.u64", ValueType::U64, 9);
        g.kv_scalar<uint8_t>("k.bool", ValueType::BOOL, 2);
        g.kv_scalar<uint16_t>("k.u16", ValueType::U16, 3);
        g.kv("k.str", ValueType::STRING, Bytes().str("v"));
        g.kv("k.arr", ValueType::ARRAY,
             Bytes().u32(static_cast<uint32_t>(ValueType::U32)).u64(1).u32(4));
        g.kv("k.big", ValueType::ARRAY,
             Bytes().u32(static_cast<uint32_t>(ValueType::U64)).u64(1).u64(~0ull));
        g.tensor("t", {4}, GgmlType::F32, 0);
        g.tensor("odd", {4}, static_cast<GgmlType>(77), 32);
        g.data.assign(16, 0);
        bytes_ = g.build();
        file_.emplace(File::parse(bytes_, "m.gguf"));
    }
    std::vector<uint8_t> bytes_;
    std::optional<File> file_;
};

TEST_F(StrictGetters, WrongScalarTypeNamesKeyAndBothTypes) {
    const File& f = *file_;
    expect_error_text([&] { f.get_u32("k.i32"); },
                      "m.gguf: metadata key k.i32 has type INT32, expected UINT32");
    expect_error_text([&] { f.get_u64("k.u32"); },
                      "m.gguf: metadata key k.u32 has type UINT32, expected UINT64");
    expect_error_text([&] { f.get_i32("k.u32"); },
                      "m.gguf: metadata key k.u32 has type UINT32, expected INT32");
    expect_error_text([&] { f.get_string("k.u16"); },
                      "m.gguf: metadata key k.u16 has type UINT16, expected STRING");
    expect_error_text([&] { f.get_bool("k.u16"); },
                      "m.gguf: metadata key k.u16 has type UINT16, expected BOOL");
    expect_error_text([&] { f.get_f32("k.arr"); },
                      "m.gguf: metadata key k.arr has type ARRAY of UINT32, expected FLOAT32");
    expect_error_text([&] { f.require_u32("k.u64"); },
                      "m.gguf: metadata key k.u64 has type UINT64, expected UINT32");
    EXPECT_EQ(f.get_bool("k.bool"), true) << "non-zero bool bytes read as true";
}

TEST_F(StrictGetters, RequiredHelpers) {
    const File& f = *file_;
    expect_error_text([&] { f.require_u32("nope"); }, "m.gguf: required metadata key nope is missing");
    expect_error_text([&] { f.require_string("nope"); },
                      "m.gguf: required metadata key nope is missing");
    expect_error_text([&] { f.require_integer("k.i32"); },
                      "m.gguf: metadata key k.i32 has type INT32, expected UINT64 or UINT32");
    expect_error_text([&] { f.require_float("k.u64"); },
                      "m.gguf: metadata key k.u64 has type UINT64, expected FLOAT32, FLOAT64, "
                      "UINT32 or INT32");
    expect_error_text([&] { f.require_float("nope"); },
                      "m.gguf: required metadata key nope is missing");
    EXPECT_EQ(f.require_float("k.i32"), -5.0);
    EXPECT_EQ(f.require_integer("k.u64"), 9u);
    EXPECT_EQ(f.require_u32("k.u32"), 7u);
}

TEST_F(StrictGetters, ArrayGetters) {
    const File& f = *file_;
    expect_error_text([&] { f.get_string_array("k.arr"); },
                      "m.gguf: metadata key k.arr has type ARRAY of UINT32, expected ARRAY of STRING");
    expect_error_text([&] { f.get_float_array("k.arr"); },
                      "m.gguf: metadata key k.arr has type ARRAY of UINT32, expected ARRAY of "
                      "FLOAT32 or FLOAT64");
    expect_error_text([&] { f.get_bool_array("k.arr"); },
                      "m.gguf: metadata key k.arr has type ARRAY of UINT32, expected ARRAY of BOOL");
    expect_error_text([&] { f.get_int_array("k.u32"); },
                      "m.gguf: metadata key k.u32 has type UINT32, expected ARRAY");
    expect_error_text([&] { f.get_int_array("nope"); },
                      "m.gguf: required metadata key nope is missing");
    expect_error_text([&] { f.get_int_array("k.big"); },
                      "m.gguf: metadata key k.big element 0 is 18446744073709551615, which does "
                      "not fit in int64");
    EXPECT_EQ(f.get_int_array("k.arr"), std::vector<int64_t>{4});
}

TEST_F(StrictGetters, TensorLookups) {
    const File& f = *file_;
    expect_error_text([&] { f.require_tensor("nope"); }, "m.gguf: required tensor is missing: nope");
    EXPECT_EQ(f.find_tensor("nope"), nullptr);
    const TensorInfo& odd = f.require_tensor("odd");
    EXPECT_EQ(odd.type, 77u);
    EXPECT_EQ(odd.n_bytes, 0u) << "unknown types are stored with no size, like ds4";
    expect_error_text([&] { f.tensor_data(odd); },
                      "m.gguf: tensor 'odd' (#1) has unsupported ggml type 77");
    EXPECT_EQ(f.tensor_data(f.require_tensor("t")).size(), 16u);
}

TEST(GgufValueTypeName, NamesEveryCode) {
    EXPECT_EQ(value_type_name(ValueType::U8), "UINT8");
    EXPECT_EQ(value_type_name(ValueType::F32), "FLOAT32");
    EXPECT_EQ(value_type_name(ValueType::ARRAY), "ARRAY");
    EXPECT_EQ(value_type_name(ValueType::F64), "FLOAT64");
    EXPECT_EQ(value_type_name(static_cast<ValueType>(13)), "UNKNOWN");
}

}  // namespace
}  // namespace ds4::gguf
