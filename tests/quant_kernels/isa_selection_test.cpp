// Kernel selection: which ISAs this host runs, the DS4_REQUIRE_ISA guard (so a run on
// an AVX-512 host can prove the AVX-512 kernels were tested), and the DS4_ISA override.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "ds4/error.h"
#include "kernel_test_util.h"
#include "quant/kernels.h"

namespace ds4::quant::test {
namespace {

TEST(KernelSelection, ReportsTestedIsas) {
    const auto all = available_kernels();
    ASSERT_FALSE(all.empty());
    EXPECT_EQ(all.front()->isa, Isa::Scalar);
    std::cout << "[ isas ] available kernels (tested against scalar): " << isa_list()
              << "; best: " << isa_name(best_kernels().isa) << "\n";
    ::testing::Test::RecordProperty("isas", isa_list());
    for (const Kernels* k : all) {
        EXPECT_NE(k->dequant_q8_0, nullptr);
        EXPECT_NE(k->quantize_q8_K, nullptr);
        EXPECT_NE(k->dot_iq2_xxs_q8_K, nullptr);
        EXPECT_NE(k->dot_f32_f32, nullptr);
    }
#if defined(__x86_64__)
    // every x86-64 CPU this project targets has AVX2; a missing AVX2 table means the
    // SIMD files were not compiled in
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        EXPECT_NE(avx2_kernels(), nullptr);
    }
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq")) {
        EXPECT_NE(avx512_kernels(), nullptr);
    }
#endif
}

// Default choice: the widest ISA, except that AVX-512 hosts keep the AVX2 Q4_K dot
// (measured faster there; bit-identical results either way).
TEST(KernelSelection, BestIsWidestIsaWithAvx2Q4KDotOnAvx512) {
    if (std::getenv("DS4_ISA") != nullptr) GTEST_SKIP() << "DS4_ISA is set";
    const Kernels& best = best_kernels();
    const Kernels* avx512 = avx512_kernels();
    const Kernels* avx2 = avx2_kernels();
    if (avx512 != nullptr) {
        EXPECT_EQ(best.isa, Isa::AVX512);
        EXPECT_EQ(best.dequant_iq2_xxs, avx512->dequant_iq2_xxs);
        EXPECT_EQ(best.quantize_q8_K, avx512->quantize_q8_K);
        EXPECT_EQ(best.dot_f16_f32, avx512->dot_f16_f32);
        EXPECT_EQ(best.dot_q2_K_q8_K, avx512->dot_q2_K_q8_K);
        EXPECT_EQ(best.dot_q8_0_q8_0f, avx512->dot_q8_0_q8_0f);
        EXPECT_EQ(best.dot_q8_0_q8_0f_rows, avx512->dot_q8_0_q8_0f_rows);
        EXPECT_EQ(best.dot_iq2_xxs_q8_K, avx512->dot_iq2_xxs_q8_K);
        EXPECT_EQ(best.dot_q4_K_q8_K, avx2->dot_q4_K_q8_K);
    } else {
        EXPECT_EQ(&best, available_kernels().back());
    }
}

// DS4_REQUIRE_ISA=avx512 (or avx2) makes the suite fail loudly when that ISA is not
// available, so a CI run on the AVX-512 host cannot silently test only AVX2.
TEST(KernelSelection, RequiredIsaIsAvailable) {
    const char* required = std::getenv("DS4_REQUIRE_ISA");
    if (required == nullptr || *required == '\0') GTEST_SKIP() << "DS4_REQUIRE_ISA not set";
    bool found = false;
    for (const Kernels* k : available_kernels()) found = found || std::string(required) == isa_name(k->isa);
    EXPECT_TRUE(found) << "DS4_REQUIRE_ISA=" << required << " but this host/build only has: " << isa_list();
}

// best_kernels() reads DS4_ISA once per process, so these run in a fresh child process.
class KernelSelectionDeathTest : public ::testing::Test {
protected:
    void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(KernelSelectionDeathTest, DS4IsaPinsScalar) {
    EXPECT_EXIT(
        {
            setenv("DS4_ISA", "scalar", 1);
            std::exit(best_kernels().isa == Isa::Scalar ? 0 : 1);
        },
        ::testing::ExitedWithCode(0), "");
}

TEST_F(KernelSelectionDeathTest, DS4IsaPinsTheWholeAvx512Table) {
    if (avx512_kernels() == nullptr) GTEST_SKIP() << "no avx512 here";
    EXPECT_EXIT(
        {
            setenv("DS4_ISA", "avx512", 1);
            std::exit(&best_kernels() == avx512_kernels() ? 0 : 1);
        },
        ::testing::ExitedWithCode(0), "");
}

TEST_F(KernelSelectionDeathTest, DS4IsaUnknownIsAnError) {
    EXPECT_EXIT(
        {
            setenv("DS4_ISA", "sse9", 1);
            try {
                (void)best_kernels();
            } catch (const Error& e) {
                std::fprintf(stderr, "%s\n", e.what());
                std::exit(3);
            }
            std::exit(0);
        },
        ::testing::ExitedWithCode(3), "DS4_ISA=sse9: unknown instruction set");
}

TEST_F(KernelSelectionDeathTest, DS4IsaUnavailableIsAnError) {
    if (avx512_kernels() != nullptr) GTEST_SKIP() << "avx512 is available here";
    EXPECT_EXIT(
        {
            setenv("DS4_ISA", "avx512", 1);
            try {
                (void)best_kernels();
            } catch (const Error& e) {
                std::fprintf(stderr, "%s\n", e.what());
                std::exit(3);
            }
            std::exit(0);
        },
        ::testing::ExitedWithCode(3), "not supported by this CPU or build");
}

}  // namespace
}  // namespace ds4::quant::test
