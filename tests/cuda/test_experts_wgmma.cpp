// Routed experts on wgmma (cuda/experts_wgmma.h) against the f64 product of the
// reference-dequantized weights and the f32 activations, within the half path's bound
// 2^−10 · Σ|w·x|, for IQ2_XXS and Q2_K slabs, groups with 0, 1, 37, 70 and 300 pairs (a
// partial 128-pair tile, two tiles, a partial 256-row tile); the same bits whatever the
// launch bounds (the grid) and whether gate and up share the launch; the half activations
// read back (f16(x · 2^e) in column order, 2^−e per row).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda/device.h"
#include "cuda/experts_wgmma.h"
#include "cuda/kernels.h"
#include "cuda/matmul_mma_experts.h"
#include "cuda/matmul_wgmma.h"
#include "cuda_test_util.h"
#include "expert_slabs.h"

namespace ds4::cuda {
namespace {

using test::make_slabs, test::Slabs;

struct Group {
    uint32_t expert, count;
};

void check_type(GgmlType type, uint32_t seed) {
    constexpr uint64_t kRows = 300, kCols = 1024;
    constexpr uint32_t kExperts = 5;
    const std::vector<Group> groups = {{3, 37}, {0, 0}, {4, 1}, {1, 70}, {2, 300}};
    std::vector<uint32_t> expert, begin, count;
    uint32_t M = 0;
    for (const Group& g : groups)
        expert.push_back(g.expert), begin.push_back(M), count.push_back(g.count), M += g.count;
    SCOPED_TRACE(cat("type=", static_cast<int>(type), " pairs=", M));
    const Slabs w0 = make_slabs(type, kExperts * kRows, kCols, seed),
                w1 = make_slabs(type, kExperts * kRows, kCols, seed + 7);
    std::vector<float> x = test::random_floats(M * kCols, seed + 1, -2.f, 2.f);
    for (uint32_t p = 0; p < M; ++p)  // rows of very different magnitudes (the per-row 2^e)
        for (uint64_t c = 0; c < kCols; ++c)
            x[p * kCols + c] *= std::ldexp(1.f, static_cast<int>(p % 5) * 6 - 12);
    DeviceBuffer<uint8_t> dw0 = to_device<uint8_t>(w0.bytes), dw1 = to_device<uint8_t>(w1.bytes);
    ASSERT_TRUE(experts_wgmma_supported(type, kCols, w0.row_bytes, dw0.data()));
    DeviceBuffer<float> dx = to_device<float>(x);
    DeviceBuffer<uint8_t> xh(half_rows_bytes(kCols, M));
    quantize_half_rows(dx.data(), kCols, kCols, M, xh.data(), nullptr);
    DeviceBuffer<uint32_t> d_exp = to_device<uint32_t>(expert), d_beg = to_device<uint32_t>(begin),
                           d_cnt = to_device<uint32_t>(count);
    const std::vector<uint32_t> active = {static_cast<uint32_t>(groups.size())};
    DeviceBuffer<uint32_t> d_act = to_device<uint32_t>(active);
    const ExpertGroups eg{d_exp.data(), d_beg.data(), d_cnt.data(), d_act.data()};

    // the half activations as written
    const std::vector<uint8_t> raw = xh.download();
    int bad_acts = 0;
    for (uint32_t p = 0; p < M; ++p) {
        float inv = 0;
        std::memcpy(&inv, raw.data() + 2 * uint64_t{M} * kCols + 4 * p, 4);
        double amax = 0;
        for (uint64_t c = 0; c < kCols; ++c)
            amax = std::max(amax, std::fabs(double{x[p * kCols + c]}));
        bad_acts += !(amax / inv >= 16384 && amax / inv < 32768);
        for (uint64_t c = 0; c < kCols; c += 37) {
            _Float16 h;
            std::memcpy(&h, raw.data() + 2 * (p * kCols + c), 2);
            const double want = x[p * kCols + c] / double{inv};
            bad_acts += std::fabs(static_cast<double>(h) - want) > std::ldexp(std::fabs(want), -11);
        }
    }
    EXPECT_EQ(bad_acts, 0) << "half activations";

    std::vector<float> y0, y1;
    const uint32_t bounds[][2] = {{8, M}, {5, M}, {64, M}};  // max_slots: the grid's tile rows
    for (const auto& b : bounds) {
        DeviceBuffer<uint32_t> tiles(mma_experts_tile_words(b[1], b[0]));
        DeviceBuffer<float> dy0(M * kRows), dy1(M * kRows), dz(M * kRows);
        dy0.fill_bytes(0xff), dy1.fill_bytes(0xff), dz.fill_bytes(0xff);
        matmul_experts_wgmma(type, dw0.data(), dw1.data(), kRows, kCols, xh.data(), M, dy0.data(),
                             dy1.data(), kRows, eg, b[0], std::min(b[1], M), tiles.data(), nullptr);
        matmul_experts_wgmma(type, dw1.data(), nullptr, kRows, kCols, xh.data(), M, dz.data(),
                             nullptr, kRows, eg, b[0], std::min(b[1], M), tiles.data(), nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> z0 = dy0.download(), z1 = dy1.download(), zz = dz.download();
        EXPECT_EQ(std::memcmp(zz.data(), z1.data(), z1.size() * 4), 0)
            << "up alone != up beside gate";
        if (y0.empty()) {
            y0 = z0, y1 = z1;
            continue;
        }
        EXPECT_EQ(std::memcmp(z0.data(), y0.data(), y0.size() * 4), 0)
            << "bounds " << b[0] << ", " << b[1];
        EXPECT_EQ(std::memcmp(z1.data(), y1.data(), y1.size() * 4), 0)
            << "bounds " << b[0] << ", " << b[1];
    }

    int bad = 0;
    double worst = 0;
    for (size_t j = 0; j < groups.size(); ++j)
        for (uint32_t i = 0; i < count[j]; ++i) {
            const uint32_t p = begin[j] + i;
            for (uint64_t r = 0; r < kRows; ++r)
                for (int m = 0; m < 2; ++m) {
                    const Slabs& w = m == 0 ? w0 : w1;
                    const float* wr = w.dequant.data() + (uint64_t{expert[j]} * kRows + r) * kCols;
                    double ref = 0, mag = 0;
                    for (uint64_t c = 0; c < kCols; ++c) {
                        const double v = double{wr[c]} * x[p * kCols + c];
                        ref += v, mag += std::fabs(v);
                    }
                    const double y = (m == 0 ? y0 : y1)[p * kRows + r],
                                 bound = std::ldexp(mag, -10) + 1e-30;
                    worst = std::max(worst, std::fabs(y - ref) / bound);
                    if (!(std::fabs(y - ref) <= bound) && bad++ < 5)
                        ADD_FAILURE()
                            << "pair " << p << " expert " << expert[j] << " row " << r << " w" << m
                            << ": " << y << " vs f64 " << ref << " (bound " << bound << ")";
                }
        }
    EXPECT_EQ(bad, 0);
    std::printf("experts wgmma type %d: worst |y - f64| / (2^-10 sum|wx|) = %.4f\n",
                static_cast<int>(type), worst);
}

TEST(CudaExpertsWgmma, Iq2xxsMatchesTheReference) {
    DS4_REQUIRE_GPU();
    if (!wgmma_available()) GTEST_SKIP() << "no wgmma (needs sm_90 and an sm_90a build)";
    check_type(GgmlType::IQ2_XXS, 40);
}

TEST(CudaExpertsWgmma, Q2KMatchesTheReference) {
    DS4_REQUIRE_GPU();
    if (!wgmma_available()) GTEST_SKIP() << "no wgmma (needs sm_90 and an sm_90a build)";
    check_type(GgmlType::Q2_K, 50);
}

}  // namespace
}  // namespace ds4::cuda
