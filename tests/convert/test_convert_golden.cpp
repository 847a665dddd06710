// Golden tests of the conversion path: official checkpoint in a golden file → GGUF →
// CPU forward → reference logits, through the ds4-golden-check library. f32 must meet
// tests/data/golden/README.md; f16 / q8_0 / q2 meet the looser bounds of bounds_for().
// The measured numbers are printed and recorded as test properties.
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "golden_check.h"

namespace ds4::golden {
namespace {

void check(const std::string& name, convert::TypePolicy type) {
    const std::string path = std::string(DS4_TEST_DATA_DIR) + "/golden/golden_" + name + ".safetensors";
    CheckOptions opt;
    opt.type = type;
    opt.threads = 2;
    const CheckResult r = run_golden_check(path, opt);
    ASSERT_EQ(r.modes.size(), 3u);
    for (const ModeStats& s : r.modes) {
        const std::string line = format_stats(s, bounds_for(type, s.mode));
        std::printf("[%s %s] %s\n", name.c_str(), std::string(convert::type_policy_name(type)).c_str(), line.c_str());
        ::testing::Test::RecordProperty(s.mode, line);
        EXPECT_GT(s.positions, 0u);
    }
    for (const std::string& f : r.failures) ADD_FAILURE() << name << ": " << f;
    EXPECT_TRUE(r.passed());
}

TEST(ConvertGolden, TinyS1_F32) { check("tiny_s1", convert::TypePolicy::F32); }
TEST(ConvertGolden, TinyS2_F32) { check("tiny_s2", convert::TypePolicy::F32); }
TEST(ConvertGolden, SmallS1_F32) { check("small_s1", convert::TypePolicy::F32); }
TEST(ConvertGolden, TinyS1_F16) { check("tiny_s1", convert::TypePolicy::F16); }
TEST(ConvertGolden, TinyS1_Q8_0) { check("tiny_s1", convert::TypePolicy::Q8_0); }
TEST(ConvertGolden, TinyS1_Q2) { check("tiny_s1", convert::TypePolicy::Q2); }
// small has 256-wide rows: gate/up really are IQ2_XXS here (down falls back to Q8_0).
TEST(ConvertGolden, SmallS1_Q2) { check("small_s1", convert::TypePolicy::Q2); }

}  // namespace
}  // namespace ds4::golden
