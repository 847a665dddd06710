// Golden tests of the conversion path: official checkpoint in a golden file → GGUF →
// CPU forward → reference logits, through the ds4-golden-check library. f32 must meet
// tests/data/golden/README.md; f16 / q8_0 / q2 meet the looser bounds of bounds_for().
// The MTP block (converted into its own GGUF) is checked in the same runs (mode d).
// The measured numbers are printed and recorded as test properties.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "golden_check.h"
#include "quant/checkpoint.h"

namespace ds4::golden {
namespace {

void check(const std::string& name, convert::TypePolicy type) {
    const std::string path =
        std::string(DS4_TEST_DATA_DIR) + "/golden/golden_" + name + ".safetensors";
    CheckOptions opt;
    opt.type = type;
    opt.threads = 2;
    const CheckResult r = run_golden_check(path, opt);
    // (a), (b), (c) and (d): every shipped golden carries the MTP block and its logits
    ASSERT_EQ(r.modes.size(), 4u);
    EXPECT_EQ(r.modes[1].mode, "mtp_decode");
    for (const ModeStats& s : r.modes) {
        const std::string line = format_stats(s, bounds_for(type, s.mode));
        std::printf("[%s %s] %s\n", name.c_str(),
                    std::string(convert::type_policy_name(type)).c_str(), line.c_str());
        ::testing::Test::RecordProperty(s.mode, line);
        EXPECT_GT(s.positions, 0u);
    }
    for (const std::string& f : r.failures) ADD_FAILURE() << name << ": " << f;
    EXPECT_TRUE(r.passed());
}

TEST(ConvertGolden, TinyS1_F32) {
    check("tiny_s1", convert::TypePolicy::F32);
}
TEST(ConvertGolden, TinyS2_F32) {
    check("tiny_s2", convert::TypePolicy::F32);
}
TEST(ConvertGolden, SmallS1_F32) {
    check("small_s1", convert::TypePolicy::F32);
}
TEST(ConvertGolden, TinyS1_F16) {
    check("tiny_s1", convert::TypePolicy::F16);
}
TEST(ConvertGolden, TinyS1_Q8_0) {
    check("tiny_s1", convert::TypePolicy::Q8_0);
}
TEST(ConvertGolden, TinyS1_Q2) {
    check("tiny_s1", convert::TypePolicy::Q2);
}
// small has 256-wide rows: gate/up really are IQ2_XXS here (down falls back to Q8_0).
TEST(ConvertGolden, SmallS1_Q2) {
    check("small_s1", convert::TypePolicy::Q2);
}

}  // namespace
}  // namespace ds4::golden

namespace ds4::convert {
namespace {

std::vector<uint8_t> tensor_bytes(const gguf::File& f, std::string_view name) {
    const auto d = f.tensor_data(f.require_tensor(name));
    return {d.begin(), d.end()};
}

// small_s1 has 256-wide expert rows, so q2 really quantizes gate/up to IQ2_XXS. Without an
// imatrix the importance is the per-column Σx² of each expert (formats.md §4.3): an imatrix
// holding exactly those sums gives the same bytes, and a different one changes only the
// tensor it names.
TEST(ConvertImatrixGolden, Iq2ImportanceDefaultsToColumnSumOfSquares) {
    const std::string src = std::string(DS4_TEST_DATA_DIR) + "/golden/golden_small_s1.safetensors";
    const auto dir =
        std::filesystem::temp_directory_path() / cat("ds4-convert-imatrix-", ::getpid());
    std::filesystem::create_directories(dir);
    const st::File ck = st::File::open(src);
    const uint32_t n_expert = 16, ncols = 256;
    std::vector<float> same, other;  // packed n_expert × ncols (the DS4 collector's layout)
    for (uint32_t e = 0; e < n_expert; ++e) {
        const auto w = quant::decode_official(ck, cat("layers.3.ffn.experts.", e, ".w1.weight"));
        std::vector<float> col(ncols, 0.0f);
        for (size_t i = 0; i < w.values.size(); ++i) col[i % ncols] += w.values[i] * w.values[i];
        same.insert(same.end(), col.begin(), col.end());
        for (uint32_t c = 0; c < ncols; ++c) other.push_back(c % 2 ? 1.0f : 1e-3f);
    }
    auto write = [&](const std::string& path, const std::vector<float>& v) {
        std::ofstream out(path, std::ios::binary);
        auto i32 = [&](int32_t x) { out.write(reinterpret_cast<const char*>(&x), 4); };
        const std::string name = "blk.3.ffn_gate_exps.weight";
        i32(1);
        i32(static_cast<int32_t>(name.size()));
        out.write(name.data(), static_cast<std::streamsize>(name.size()));
        i32(1);
        i32(static_cast<int32_t>(v.size()));
        out.write(reinterpret_cast<const char*>(v.data()),
                  static_cast<std::streamsize>(v.size() * 4));
    };
    write((dir / "same.dat").string(), same);
    write((dir / "other.dat").string(), other);
    ConvertOptions o;
    o.type = TypePolicy::Q2;
    o.threads = 2;
    convert_checkpoint(src, (dir / "plain.gguf").string(), o);
    o.imatrix = (dir / "same.dat").string();
    convert_checkpoint(src, (dir / "same.gguf").string(), o);
    o.imatrix = (dir / "other.dat").string();
    convert_checkpoint(src, (dir / "other.gguf").string(), o);
    const gguf::File plain = gguf::File::open((dir / "plain.gguf").string());
    const gguf::File with_same = gguf::File::open((dir / "same.gguf").string());
    const gguf::File with_other = gguf::File::open((dir / "other.gguf").string());
    EXPECT_EQ(plain.require_tensor("blk.3.ffn_gate_exps.weight").ggml_type(), GgmlType::IQ2_XXS);
    EXPECT_EQ(plain.require_tensor("blk.3.ffn_down_exps.weight").ggml_type(),
              GgmlType::Q8_0);  // rows of 128
    ASSERT_EQ(plain.size(), with_same.size());
    EXPECT_EQ(std::memcmp(plain.bytes().data(), with_same.bytes().data(), plain.size()), 0);
    EXPECT_NE(tensor_bytes(plain, "blk.3.ffn_gate_exps.weight"),
              tensor_bytes(with_other, "blk.3.ffn_gate_exps.weight"));
    EXPECT_EQ(tensor_bytes(plain, "blk.3.ffn_up_exps.weight"),
              tensor_bytes(with_other, "blk.3.ffn_up_exps.weight"));
    EXPECT_EQ(tensor_bytes(plain, "blk.4.ffn_gate_exps.weight"),
              tensor_bytes(with_other, "blk.4.ffn_gate_exps.weight"));
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace ds4::convert
