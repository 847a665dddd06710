// F16 products on the tensor cores (matmul_f16_mma.h):
//  1. every (row, token) within 2^-20 · Σ|w·x| of an f64 reference (and matmul() giving the
//     same bits, i.e. taking this path), for row counts of both
//     block shapes and not multiples of the tiles, token counts not multiples of the
//     tiles, and strided activations / outputs (the gaps are left untouched);
//  2. a token's bits do not depend on the pass: the same from any pass of the kernel
//     that holds it, at any position;
//  3. the grouped (matmul_groups) and merged (matmul_multi) entry points give each
//     product the bits of its own matmul() call.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/matmul_f16_mma.h"
#include "cuda_test_util.h"
#include "ds4/error.h"
#include "quant/scalars.h"

namespace ds4::cuda {
namespace {

struct Half {
    std::vector<uint8_t> bytes;
    std::vector<float> values;
};
Half half_rows(uint64_t rows, uint64_t cols, uint32_t seed) {
    const std::vector<float> w = test::random_floats(rows * cols, seed);
    Half m{std::vector<uint8_t>(rows * cols * 2), std::vector<float>(rows * cols)};
    for (uint64_t i = 0; i < w.size(); ++i) {
        const uint16_t h = quant::f32_to_f16(w[i]);
        std::memcpy(m.bytes.data() + 2 * i, &h, 2);
        m.values[i] = quant::f16_to_f32(h);
    }
    return m;
}

bool is_poison(float v) {
    uint32_t b = 0;
    std::memcpy(&b, &v, 4);
    return b == 0xffffffffu;
}

TEST(CudaF16Mma, WithinBoundOfF64Reference) {
    DS4_REQUIRE_GPU();
    if (!f16_mma_takes(kF16MmaMinTokens, 1)) GTEST_SKIP() << "no tensor-core path here (sm_80+, DS4_CUDA_F16_MMA)";
    struct Case {
        uint64_t rows, cols;
        uint32_t n_tok;
    };
    // 24 x 16384: the HC mixes (few-rows block); 256 x 4096 the router; 8192 x 1024 the
    // indexer's q_b; the rest tails of the 32- / 64-row and 16- / 64-token tiles.
    const std::vector<Case> cases = {{24, 16384, 37}, {5, 256, 16}, {33, 768, 70},  {256, 4096, 65},
                                     {130, 3328, 17}, {8192, 1024, 20}, {1, 512, 129}, {97, 2048, 64},
                                     {256, 4096, 300}, {24, 16384, 257}};
    const double bound = std::ldexp(1.0, -20);
    for (const Case& c : cases) {
        SCOPED_TRACE(cat("rows=", c.rows, " cols=", c.cols, " n_tok=", c.n_tok));
        const uint64_t xs = c.cols + 4, ys = c.rows + 3;  // strides with gaps
        const Half m = half_rows(c.rows, c.cols, static_cast<uint32_t>(c.rows + c.cols));
        const std::vector<float> x = test::random_floats(c.n_tok * xs, static_cast<uint32_t>(c.cols), -3.f, 3.f);
        DeviceBuffer<uint8_t> w = to_device<uint8_t>(m.bytes);
        DeviceBuffer<float> dx = to_device<float>(x), dy(c.n_tok * ys);
        dy.fill_bytes(0xff);
        matmul_f16_mma(w.data(), c.rows, c.cols, dx.data(), xs, dy.data(), ys, c.n_tok, nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> y = dy.download();
        if (f16_mma_takes(c.n_tok, c.rows)) {  // matmul() sends this pass here: the same bits
            dy.fill_bytes(0);
            matmul(GgmlType::F16, w.data(), c.rows, c.cols, dx.data(), xs, dy.data(), ys, c.n_tok, nullptr);
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            const std::vector<float> via_matmul = dy.download();
            for (uint32_t t = 0; t < c.n_tok; ++t)
                ASSERT_EQ(0, std::memcmp(y.data() + t * ys, via_matmul.data() + t * ys, c.rows * sizeof(float))) << t;
        }
        int bad = 0;
        double worst = 0;
        for (uint32_t t = 0; t < c.n_tok; ++t) {
            for (uint64_t r = 0; r < c.rows; ++r) {
                const test::RefDot d = test::ref_dot(m.values.data() + r * c.cols, x.data() + t * xs, c.cols);
                const double err = std::fabs(y[t * ys + r] - d.sum);
                worst = std::max(worst, err / d.mag);
                if (!(err <= bound * d.mag) && bad++ < 5)
                    ADD_FAILURE() << "tok " << t << " row " << r << ": " << y[t * ys + r] << " vs " << d.sum;
            }
            for (uint64_t r = c.rows; r < ys; ++r)
                if (!is_poison(y[t * ys + r]) && bad++ < 5) ADD_FAILURE() << "gap written: tok " << t << " col " << r;
        }
        EXPECT_EQ(bad, 0) << "worst |err| / sum|w x| " << worst;
        std::cout << "[f16 mma] " << c.rows << " x " << c.cols << ", " << c.n_tok
                  << " tokens: max |y - f64| / sum|w x| = " << worst << "\n";
    }
}

// Passes [a, a + n) of a 150-token batch: each token's outputs equal those of the whole
// batch, bit for bit.
TEST(CudaF16Mma, TokenBitsIndependentOfThePass) {
    DS4_REQUIRE_GPU();
    if (!f16_mma_takes(kF16MmaMinTokens, 1)) GTEST_SKIP() << "no tensor-core path here";
    constexpr uint32_t kTok = 150;
    for (const auto& [rows, cols] : std::vector<std::pair<uint64_t, uint64_t>>{{24, 4096}, {200, 2048}, {300, 1024}}) {
        SCOPED_TRACE(cat("rows=", rows, " cols=", cols));
        DeviceBuffer<uint8_t> w = to_device<uint8_t>(half_rows(rows, cols, 3).bytes);
        DeviceBuffer<float> dx = to_device<float>(test::random_floats(kTok * cols, 9, -2.f, 2.f));
        const auto run = [&](uint32_t a, uint32_t n) {
            DeviceBuffer<float> y(n * rows);
            matmul_f16_mma(w.data(), rows, cols, dx.data() + a * cols, cols, y.data(), rows, n, nullptr);
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            return y.download();
        };
        const std::vector<float> all = run(0, kTok);
        for (const auto& [a, n] : std::vector<std::pair<uint32_t, uint32_t>>{
                 {0, 16}, {1, 16}, {7, 17}, {33, 31}, {64, 64}, {100, 50}, {3, 130}}) {
            const std::vector<float> y = run(a, n);
            ASSERT_EQ(0, std::memcmp(y.data(), all.data() + a * rows, n * rows * sizeof(float)))
                << "tokens " << a << " .. " << a + n;
        }
    }
}

TEST(CudaF16Mma, GroupedAndMergedEqualOwnCalls) {
    DS4_REQUIRE_GPU();
    constexpr uint64_t kCols = 1024;
    constexpr uint32_t kTok = kF16MmaMinTokens + 4, kGroups = 3;
    const std::vector<float> x = test::random_floats(kTok * kGroups * kCols, 21);
    DeviceBuffer<float> dx = to_device<float>(x);
    const auto own = [&](const uint8_t* w, uint64_t rows, const float* xin, uint64_t xs) {
        DeviceBuffer<float> y(kTok * rows);
        matmul(GgmlType::F16, w, rows, kCols, xin, xs, y.data(), rows, kTok, nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        return y.download();
    };
    {  // matmul_groups: group g reads columns [g · cols, (g + 1) · cols) of each token
        constexpr uint64_t kRows = 40;
        DeviceBuffer<uint8_t> w = to_device<uint8_t>(half_rows(kGroups * kRows, kCols, 4).bytes);
        DeviceBuffer<float> y(kTok * kGroups * kRows);
        matmul_groups(GgmlType::F16, w.data(), kRows, kCols, kGroups, dx.data(), kGroups * kCols, kCols, y.data(),
                      kGroups * kRows, kRows, kTok, nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> got = y.download();
        for (uint32_t g = 0; g < kGroups; ++g) {
            const std::vector<float> want =
                own(w.data() + g * kRows * kCols * 2, kRows, dx.data() + g * kCols, kGroups * kCols);
            for (uint32_t t = 0; t < kTok; ++t)
                ASSERT_EQ(0, std::memcmp(got.data() + t * kGroups * kRows + g * kRows, want.data() + t * kRows,
                                         kRows * sizeof(float)))
                    << "group " << g << " token " << t;
        }
    }
    const std::vector<uint64_t> rows = {256, 24, 1000, 7};
    std::vector<DeviceBuffer<uint8_t>> w;
    std::vector<DeviceBuffer<float>> y;
    std::vector<MatProduct> parts;
    for (size_t i = 0; i < rows.size(); ++i) {
        w.push_back(to_device<uint8_t>(half_rows(rows[i], kCols, static_cast<uint32_t>(50 + i)).bytes));
        y.emplace_back(kTok * rows[i]);
        parts.push_back({w.back().data(), rows[i], y.back().data(), rows[i]});
    }
    matmul_multi(GgmlType::F16, parts, kCols, dx.data(), kCols, kTok, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    for (size_t i = 0; i < rows.size(); ++i) {
        const std::vector<float> got = y[i].download(), want = own(w[i].data(), rows[i], dx.data(), kCols);
        ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << "part " << i;
    }
}

}  // namespace
}  // namespace ds4::cuda
