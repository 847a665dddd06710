// Small passes' repacked Q8_0 products on the tensor cores (matmul_q8r_tc.h): within
// half precision of the f64 reference for every shape class (slices 1-8, rows past a
// 16-row group, token chunks of 8), a token's outputs bit for bit the same alone or in any
// batch, groups and merged parts bitwise their own calls, activations of any magnitude
// (each block's own power of two), and the shapes it leaves to the exact kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/matmul_q8r_tc.h"
#include "cuda_test_util.h"
#include "q8_matrix.h"

namespace ds4::cuda {
namespace {

using test::make_q8;
using test::Q8Matrix;
using test::repacked;
using test::run_q8r;

// The path on for the test, single tokens included (and back to the defaults after).
struct TcOn {
    TcOn() {
        set_q8r_tc(true);
        set_q8r_tc_min_tokens(1);
    }
    ~TcOn() { set_q8r_tc_min_tokens(kQ8rTcMinTokens); }
};

// |y - ref| <= 2^-10 · Σ|w · x|: each activation rounded to f16 (2^-11 relative), products
// and sums in f32.
int count_bad(const Q8Matrix& m, const std::vector<float>& x, const std::vector<float>& y,
              uint32_t n_tok) {
    int bad = 0;
    for (uint32_t t = 0; t < n_tok; ++t)
        for (uint64_t r = 0; r < m.rows; ++r) {
            const auto [ref, mag] = test::ref_dot(&m.dequant[r * m.cols], &x[t * m.cols], m.cols);
            const double tol = std::ldexp(mag, -10) + 1e-30;
            const float got = y[t * m.rows + r];
            if (!(std::fabs(got - ref) <= tol) && bad++ < 5)
                ADD_FAILURE() << "tok " << t << " row " << r << ": " << got << " vs " << ref
                              << " (tol " << tol << ")";
        }
    return bad;
}

TEST(CudaMatmulQ8rTc, MatchesReferenceWithinHalfPrecision) {
    DS4_REQUIRE_GPU();
    const TcOn on;
    // q_b (1 slice), out_a's group and the shared gate (4), out_b (8), the shared down (2),
    // 512 columns (4 units, 1 slice), rows past a 16-row group, the widest rows
    for (const auto& [rows, cols] : {std::pair<uint64_t, uint64_t>{2048, 1024},
                                     {1024, 4096},
                                     {256, 8192},
                                     {4096, 2048},
                                     {2050, 512},
                                     {129, 16384},
                                     {300, 4096}}) {
        ASSERT_TRUE(q8r_tc_takes(rows, cols, 1)) << rows << " x " << cols;
        const Q8Matrix m = make_q8(rows, cols, static_cast<uint32_t>(rows * 7 + cols));
        const DeviceBuffer<uint8_t> w = repacked(m);
        for (const uint32_t n_tok : {1u, 3u, 8u, 13u}) {
            SCOPED_TRACE(cat("rows=", rows, " cols=", cols, " n_tok=", n_tok));
            const std::vector<float> x = test::random_floats(n_tok * cols, n_tok + 3);
            EXPECT_EQ(count_bad(m, x, run_q8r(w, m, x, n_tok), n_tok), 0);
        }
    }
}

// Tokens of very different magnitudes in one call, and blocks of one token far apart:
// each keeps its relative precision.
TEST(CudaMatmulQ8rTc, EachBlockScaledByItsOwnPowerOfTwo) {
    DS4_REQUIRE_GPU();
    const TcOn on;
    const uint64_t rows = 512, cols = 4096;
    const Q8Matrix m = make_q8(rows, cols, 9);
    const DeviceBuffer<uint8_t> w = repacked(m);
    std::vector<float> x = test::random_floats(4 * cols, 10);
    const float mul[4] = {1e-9f, 1e6f, 1.f, 3e-30f};
    for (uint32_t t = 0; t < 4; ++t)
        for (uint64_t c = 0; c < cols; ++c)
            x[t * cols + c] *= mul[t] * (c / 32 % 3 == 1 ? 1e-12f : 1.f);
    EXPECT_EQ(count_bad(m, x, run_q8r(w, m, x, 4), 4), 0);
}

// Against the exact kernels: close, and not equal (the tensor-core path really ran).
TEST(CudaMatmulQ8rTc, DiffersFromTheExactKernelsOnlyByRounding) {
    DS4_REQUIRE_GPU();
    const TcOn on;
    const uint64_t rows = 2048, cols = 4096;
    const Q8Matrix m = make_q8(rows, cols, 21);
    const DeviceBuffer<uint8_t> w = repacked(m);
    const std::vector<float> x = test::random_floats(2 * cols, 22);
    set_q8r_tc(false);
    const std::vector<float> exact = run_q8r(w, m, x, 2);
    set_q8r_tc(true);
    const std::vector<float> tc = run_q8r(w, m, x, 2);
    uint64_t differ = 0;
    for (size_t i = 0; i < exact.size(); ++i) differ += exact[i] != tc[i] ? 1 : 0;
    EXPECT_GT(differ, exact.size() / 2);
    EXPECT_EQ(count_bad(m, x, tc, 2), 0);
}

// A token's outputs alone equal its row of a call over 15 tokens (chunks of 8), bit for
// bit.
TEST(CudaMatmulQ8rTc, TokenResultsDoNotDependOnTheBatch) {
    DS4_REQUIRE_GPU();
    const TcOn on;
    for (const auto& [rows, cols] :
         {std::pair<uint64_t, uint64_t>{1040, 1024}, {300, 4096}, {160, 8192}, {70, 16384}}) {
        SCOPED_TRACE(cat("rows=", rows, " cols=", cols));
        test::expect_tokens_independent(make_q8(rows, cols, static_cast<uint32_t>(rows + cols)));
    }
}

// out_a's shape: 8 groups of 1024 x 4096 (and 11 groups: two launches), each group its
// own activations; and the merged products of one input (q_a and kv): bitwise one call
// per group / part.
TEST(CudaMatmulQ8rTc, GroupsAndPartsEqualTheirOwnCalls) {
    DS4_REQUIRE_GPU();
    const TcOn on;
    constexpr uint32_t kTok = 3;
    for (const uint32_t groups : {8u, 11u}) {
        SCOPED_TRACE(cat("groups=", groups));
        const uint64_t rows = 1024, cols = 4096, x_stride = groups * cols, y_stride = groups * rows;
        const Q8Matrix m = make_q8(groups * rows, cols, 31);
        const DeviceBuffer<uint8_t> w = repacked(m);
        const DeviceBuffer<float> dx = to_device<float>(test::random_floats(kTok * x_stride, 32));
        DeviceBuffer<float> dy(kTok * y_stride), dg(kTok * rows);
        matmul_q8r_groups(w.data(), rows, cols, groups, dx.data(), x_stride, cols, dy.data(),
                          y_stride, rows, kTok, nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> y = dy.download();
        const uint64_t w_group = rows * (cols / 32 * 34);
        for (uint32_t g = 0; g < groups; ++g) {
            matmul_q8r(w.data() + g * w_group, rows, cols, dx.data() + g * cols, x_stride,
                       dg.data(), rows, kTok, nullptr);
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            const std::vector<float> one = dg.download();
            for (uint32_t t = 0; t < kTok; ++t)
                ASSERT_EQ(0, std::memcmp(one.data() + t * rows, y.data() + t * y_stride + g * rows,
                                         rows * sizeof(float)))
                    << "group " << g << " token " << t;
        }
    }
    const uint64_t cols = 4096;
    const std::vector<uint64_t> rows = {1024, 512, 300,
                                        9};  // the last one stays on the exact kernels
    std::vector<Q8Matrix> ms;
    std::vector<DeviceBuffer<uint8_t>> ws;
    for (const uint64_t r : rows) {
        ms.push_back(make_q8(r, cols, static_cast<uint32_t>(r)));
        ws.push_back(repacked(ms.back()));
    }
    const std::vector<float> x = test::random_floats(kTok * cols, 13);
    const DeviceBuffer<float> dx = to_device<float>(x);
    std::vector<DeviceBuffer<float>> ys;
    std::vector<Q8rProduct> prods;
    for (size_t i = 0; i < rows.size(); ++i) {
        ys.emplace_back(kTok * rows[i]);
        prods.push_back({ws[i].data(), rows[i], ys.back().data(), rows[i]});
    }
    matmul_q8r_multi(prods, cols, dx.data(), cols, kTok, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    for (size_t i = 0; i < rows.size(); ++i) {
        const std::vector<float> merged = ys[i].download(), own = run_q8r(ws[i], ms[i], x, kTok);
        ASSERT_EQ(0, std::memcmp(merged.data(), own.data(), own.size() * sizeof(float)))
            << "part " << i;
    }
}

TEST(CudaMatmulQ8rTc, TakesOnlyLargeShapesOfWholeSpans) {
    DS4_REQUIRE_GPU();
    const TcOn on;
    EXPECT_TRUE(q8r_tc_takes(32768, 1024, 1));   // q_b
    EXPECT_TRUE(q8r_tc_takes(129280, 4096, 1));  // the output head
    EXPECT_FALSE(q8r_tc_takes(512, 256, 8));     // the demo model's largest: exact
    EXPECT_FALSE(q8r_tc_takes(4096, 768, 8));    // 256-column spans
    EXPECT_FALSE(q8r_tc_takes(64, 32768, 8));    // wider than 16384
    EXPECT_FALSE(q8r_tc_takes(255, 4096, 8));    // under 2^20 weights
    set_q8r_tc_min_tokens(kQ8rTcMinTokens);      // the default: a single token stays exact
    EXPECT_EQ(q8r_tc_takes(32768, 1024, 1), kQ8rTcMinTokens <= 1);
    EXPECT_TRUE(q8r_tc_takes(32768, 1024, 8));
    set_q8r_tc(false);
    EXPECT_FALSE(q8r_tc_takes(32768, 1024, 8));
    set_q8r_tc(true);
    DeviceBuffer<uint8_t> w(1 << 20);
    DeviceBuffer<float> x(4096), y(4096);
    const Q8rTcPart bad[] = {{w.data(), 255, x.data(), y.data(), 255}};
    EXPECT_THROW(matmul_q8r_tc(bad, 4096, 8, 4096, nullptr), Error);
}

}  // namespace
}  // namespace ds4::cuda
