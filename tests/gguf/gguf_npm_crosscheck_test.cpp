// Cross-check against an independent GGUF reader: a file written by our Writer is parsed
// by @huggingface/gguf (tests/js, installed by scripts/install-deps.sh) and every key,
// value, tensor name, shape, type and offset must match what we wrote.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "gguf_builder.h"

namespace ds4::gguf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kJsDir = fs::path(DS4_SOURCE_DIR) / "tests" / "js";

// Runs `node gguf_check.mjs FILE`; fails the test (never skips) when node or the npm
// package is missing.
json run_js_reader(const std::string& file) {
    const fs::path pkg = kJsDir / "node_modules" / "@huggingface" / "gguf" / "package.json";
    if (std::system("node --version > /dev/null 2>&1") != 0)
        throw ds4::Error("node is not installed: run scripts/install-deps.sh");
    if (!fs::exists(pkg))
        throw ds4::Error(cat(pkg.string(), " is missing: run scripts/install-deps.sh ",
                             "(it runs npm install in tests/js)"));
    const std::string cmd =
        cat("node '", (kJsDir / "gguf_check.mjs").string(), "' '", file, "' 2>&1");
    FILE* pipe = ::popen(cmd.c_str(), "r");
    if (!pipe) throw ds4::Error("cannot run: " + cmd);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
    const int status = ::pclose(pipe);
    if (status != 0) throw ds4::Error(cat(cmd, " failed (status ", status, "): ", out));
    return json::parse(out);
}

class NpmCrossCheck : public ::testing::Test {
protected:
    void TearDown() override { fs::remove(path_); }
    std::string path_ = testing::temp_path("npm");
};

TEST_F(NpmCrossCheck, HuggingFaceReaderSeesWhatWeWrote) {
    const std::vector<uint32_t> ratios{0, 0, 4, 128, 4};
    const std::vector<int32_t> signed_ints{-7, 0, 2147483647};
    const std::vector<float> clamps{10.0f, -0.5f, 1e-6f};
    const std::vector<std::string> tokens{"<｜begin▁of▁sentence｜>", "", "Ġhello", "a\"b\\c"};
    Writer w;
    w.add_u32("general.alignment", 64);
    w.add_string("general.architecture", "deepseek4");
    w.add_u8("x.u8", 255);
    w.add_i8("x.i8", -128);
    w.add_u16("x.u16", 65535);
    w.add_i16("x.i16", -32768);
    w.add_u32("x.u32", 4294967295u);
    w.add_i32("x.i32", -2147483647 - 1);
    w.add_u64("x.u64", 18446744073709551615ull);
    w.add_i64("x.i64", -9223372036854775807ll - 1);
    w.add_f32("x.f32", 1e-6f);
    w.add_f64("x.f64", 160000.125);
    w.add_bool("x.true", true);
    w.add_bool("x.false", false);
    w.add_array_u32("x.ratios", ratios);
    w.add_array_i32("x.ints", signed_ints);
    w.add_array_f32("x.clamps", clamps);
    w.add_array_string("x.tokens", tokens);

    struct T {
        std::string name;
        std::vector<uint64_t> dims;
        GgmlType type;
    };
    const std::vector<T> tensors = {
        {"output_norm.weight", {64}, GgmlType::F32},
        {"token_embd.weight", {32, 3}, GgmlType::F16},
        {"blk.0.attn_kv.weight", {64, 2}, GgmlType::Q8_0},
        {"blk.0.ffn_down_exps.weight", {256, 2, 2}, GgmlType::Q2_K},
        {"blk.1.ffn_up_exps.weight", {512, 1, 2}, GgmlType::Q4_K},
        {"blk.0.ffn_gate_exps.weight", {256, 3, 2}, GgmlType::IQ2_XXS},
        {"blk.0.ffn_gate_tid2eid.weight", {6, 5}, GgmlType::I32},
    };
    for (const auto& t : tensors) w.add_tensor(t.name, t.dims, t.type);
    w.begin(path_);
    for (size_t i = 0; i < tensors.size(); ++i)
        w.write_data(std::vector<uint8_t>(w.tensor_bytes(i), static_cast<uint8_t>(i + 1)));
    w.finish();
    const File ours = File::open(path_);

    json js;
    try {
        js = run_js_reader(path_);
    } catch (const ds4::Error& e) {
        FAIL() << e.what();
    }

    EXPECT_EQ(js["version"], 3);
    EXPECT_EQ(js["tensor_count"], std::to_string(tensors.size()));
    EXPECT_EQ(js["kv_count"], "18");
    EXPECT_EQ(js["tensor_data_offset"], std::to_string(ours.data_start()));

    const json& md = js["metadata"];
    ASSERT_EQ(md.size(), 18u);
    const auto expect_kv = [&](const char* key, ValueType type, const json& value) {
        ASSERT_TRUE(md.contains(key)) << key;
        EXPECT_EQ(md[key]["type"], static_cast<int>(type)) << key;
        EXPECT_EQ(md[key]["value"], value) << key;
    };
    expect_kv("general.alignment", ValueType::U32, 64);
    expect_kv("general.architecture", ValueType::STRING, "deepseek4");
    expect_kv("x.u8", ValueType::U8, 255);
    expect_kv("x.i8", ValueType::I8, -128);
    expect_kv("x.u16", ValueType::U16, 65535);
    expect_kv("x.i16", ValueType::I16, -32768);
    expect_kv("x.u32", ValueType::U32, 4294967295u);
    expect_kv("x.i32", ValueType::I32, -2147483648ll);
    expect_kv("x.u64", ValueType::U64, "18446744073709551615");
    expect_kv("x.i64", ValueType::I64, "-9223372036854775808");
    expect_kv("x.f32", ValueType::F32, static_cast<double>(1e-6f));
    expect_kv("x.f64", ValueType::F64, 160000.125);
    expect_kv("x.true", ValueType::BOOL, true);
    expect_kv("x.false", ValueType::BOOL, false);
    expect_kv("x.ratios", ValueType::ARRAY, ratios);
    expect_kv("x.ints", ValueType::ARRAY, signed_ints);
    expect_kv("x.clamps", ValueType::ARRAY,
              json::array({10.0, -0.5, static_cast<double>(1e-6f)}));
    expect_kv("x.tokens", ValueType::ARRAY, tokens);
    EXPECT_EQ(md["x.ratios"]["subtype"], static_cast<int>(ValueType::U32));
    EXPECT_EQ(md["x.ints"]["subtype"], static_cast<int>(ValueType::I32));
    EXPECT_EQ(md["x.clamps"]["subtype"], static_cast<int>(ValueType::F32));
    EXPECT_EQ(md["x.tokens"]["subtype"], static_cast<int>(ValueType::STRING));

    const json& jt = js["tensors"];
    ASSERT_EQ(jt.size(), tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
        const TensorInfo& t = ours.tensors()[i];
        EXPECT_EQ(jt[i]["name"], tensors[i].name);
        std::vector<std::string> shape;
        for (uint64_t d : tensors[i].dims) shape.push_back(std::to_string(d));
        EXPECT_EQ(jt[i]["shape"], shape) << tensors[i].name;
        EXPECT_EQ(jt[i]["dtype"], static_cast<int>(tensors[i].type)) << tensors[i].name;
        EXPECT_EQ(jt[i]["offset"], std::to_string(t.offset)) << tensors[i].name;
        EXPECT_EQ(t.offset % 64, 0u);
    }
}

}  // namespace
}  // namespace ds4::gguf
