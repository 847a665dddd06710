// Repacked dense Q8_0 (kernels.h q8r_*): the in-place repack gives the documented bytes,
// matmul_q8r agrees with the CPU reference (dequantized weights dotted in double) and
// with matmul() on the GGUF rows to f32 rounding, a token's outputs are bit for bit the
// same alone or in any batch, and the grouped launch equals one call per group.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/matmul_q8r_tc.h"
#include "cuda_test_util.h"
#include "q8_matrix.h"
#include "quant/reference.h"

namespace ds4::cuda {
namespace {

using test::make_q8;
using test::Q8Matrix;
using test::repacked;
using test::run_q8r;

// These tests are of the exact kernels: the large shapes' tensor-core path
// (matmul_q8r_tc.h, tests/cuda/test_matmul_q8r_tc.cpp) is off while they run.
struct ExactQ8r {
    ExactQ8r() { set_q8r_tc(false); }
    ~ExactQ8r() { set_q8r_tc(true); }
};

// The layout as kernels.h states it, written out per column / block (span S = 512 when
// cols allows, else 256; K = S / 128 words per lane).
std::vector<uint8_t> expected_repack(const Q8Matrix& m) {
    const uint64_t rb = m.cols / 32 * 34, S = m.cols % 512 == 0 ? 512 : 256, K = S / 128;
    std::vector<uint8_t> out(m.bytes.size());
    for (uint64_t r = 0; r < m.rows; ++r) {
        const uint8_t* src = m.bytes.data() + r * rb;
        uint8_t* dst = out.data() + r * rb;
        for (uint64_t c = 0; c < m.cols; ++c) {
            const uint64_t s = c / S, in = c % S, k = in / 128, l = in % 128 / 4, j = in % 4;
            dst[s * S + 4 * K * l + 4 * k + j] = src[34 * (c / 32) + 2 + c % 32];
        }
        for (uint64_t b = 0; b < m.cols / 32; ++b) {
            const uint64_t s = b / (S / 32), in = b % (S / 32), k = in / 4, g = in % 4;
            const uint64_t h = s * 4 * K + g * K + k;
            dst[m.cols + 2 * h] = src[34 * b];
            dst[m.cols + 2 * h + 1] = src[34 * b + 1];
        }
    }
    return out;
}

TEST(CudaMatmulQ8r, RepackGivesTheDocumentedBytes) {
    DS4_REQUIRE_GPU();
    const ExactQ8r exact;
    for (const uint64_t cols : {256u, 512u, 768u, 1536u, 4096u}) {
        SCOPED_TRACE(cat("cols=", cols));
        const Q8Matrix m = make_q8(3, cols, 7 + static_cast<uint32_t>(cols));
        const std::vector<uint8_t> got = repacked(m).download();
        EXPECT_EQ(got, expected_repack(m));
    }
}

// Against the double-precision reference (tolerance as tests/cuda/test_matmul.cpp) and
// against matmul() on the GGUF rows.
void check_shape(uint64_t rows, uint64_t cols, uint32_t n_tok, uint32_t seed) {
    SCOPED_TRACE(cat("rows=", rows, " cols=", cols, " n_tok=", n_tok));
    const Q8Matrix m = make_q8(rows, cols, seed);
    const std::vector<float> x = test::random_floats(n_tok * cols, seed + 1);
    const std::vector<float> y = run_q8r(repacked(m), m, x, n_tok);

    DeviceBuffer<uint8_t> raw = to_device<uint8_t>(m.bytes);
    DeviceBuffer<float> dx = to_device<float>(x), dy(n_tok * rows);
    matmul(GgmlType::Q8_0, raw.data(), rows, cols, dx.data(), cols, dy.data(), rows, n_tok, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> y_old = dy.download();

    int bad = 0;
    for (uint32_t t = 0; t < n_tok; ++t) {
        for (uint64_t r = 0; r < rows; ++r) {
            const auto [ref, mag] = test::ref_dot(&m.dequant[r * cols], &x[t * cols], cols);
            const float got = y[t * rows + r], old = y_old[t * rows + r];
            const double tol = 1e-5 * mag + 1e-6;
            if (!(std::fabs(got - ref) <= tol && std::fabs(got - old) <= 2 * tol) && bad++ < 5)
                ADD_FAILURE() << "tok " << t << " row " << r << ": " << got << " vs reference " << ref
                              << ", matmul() " << old << " (tol " << tol << ")";
        }
    }
    EXPECT_EQ(bad, 0);
}

TEST(CudaMatmulQ8r, MatchesReferenceAndGgufKernel) {
    DS4_REQUIRE_GPU();
    const ExactQ8r exact;
    uint32_t seed = 100;
    for (uint32_t n_tok : {1u, 2u, 3u, 4u, 5u, 8u, 13u}) check_shape(67, 1024, n_tok, seed++);
    check_shape(1, 256, 1, seed++);      // one 256-column span, one row
    check_shape(5, 768, 3, seed++);      // 256-column spans, an odd count
    check_shape(33, 1536, 2, seed++);    // 3 spans of 512: a lone last span; rows not a multiple of 4
    check_shape(9, 4608, 1, seed++);     // 9 spans over 4 warps per row
    check_shape(5, 16384, 4, seed++);    // 8 warps per row
    check_shape(2050, 512, 8, seed++);   // many rows, 2 per warp at 8 tokens
    check_shape(130, 4096, 9, seed++);   // a chunk of 8 then a lone token
}

// A token's outputs do not depend on the batch: each token alone equals its row of
// one call over all of them, for every chunking (8 / 4 / 1-3) and split (1-8 warps per row).
// A token alone split over 2+ warps a row takes the persistent pipelined kernel
// (q8r_pipe_kernel): the last shape has more row blocks than fit on an H200 at once.
TEST(CudaMatmulQ8r, TokenResultsDoNotDependOnTheBatch) {
    DS4_REQUIRE_GPU();
    const ExactQ8r exact;
    for (const auto& [rows, cols] : {std::pair<uint64_t, uint64_t>{4100, 1024}, {300, 4096}, {40, 8192},
                                     {7, 16384}, {70, 768}, {32771, 1024}, {4099, 8192}}) {
        SCOPED_TRACE(cat("rows=", rows, " cols=", cols));
        test::expect_tokens_independent(make_q8(rows, cols, static_cast<uint32_t>(rows + cols)));
    }
}

TEST(CudaMatmulQ8r, GroupedLaunchEqualsOneCallPerGroup) {
    DS4_REQUIRE_GPU();
    const ExactQ8r exact;
    constexpr uint32_t kGroups = 3, kTok = 5;
    const uint64_t rows = 96, cols = 4096;
    const Q8Matrix m = make_q8(kGroups * rows, cols, 42);
    const DeviceBuffer<uint8_t> w = repacked(m);
    // token t's activations: kGroups groups of cols, group g at t·x_stride + g·cols
    const uint64_t x_stride = kGroups * cols, y_stride = kGroups * rows;
    const std::vector<float> x = test::random_floats(kTok * x_stride, 43);
    DeviceBuffer<float> dx = to_device<float>(x), dy(kTok * y_stride), dg(kTok * rows);
    matmul_q8r_groups(w.data(), rows, cols, kGroups, dx.data(), x_stride, cols, dy.data(), y_stride, rows, kTok,
                      nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> y = dy.download();
    const uint64_t w_group = rows * (cols / 32 * 34);
    for (uint32_t g = 0; g < kGroups; ++g) {
        matmul_q8r(w.data() + g * w_group, rows, cols, dx.data() + g * cols, x_stride, dg.data(), rows, kTok,
                   nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> one = dg.download();
        for (uint32_t t = 0; t < kTok; ++t)
            ASSERT_EQ(0, std::memcmp(one.data() + t * rows, y.data() + t * y_stride + g * rows, rows * sizeof(float)))
                << "group " << g << " token " << t;
    }
}

TEST(CudaMatmulQ8r, BadShapesAreErrors) {
    DS4_REQUIRE_GPU();
    const ExactQ8r exact;
    EXPECT_TRUE(q8r_applies(GgmlType::Q8_0, 4096));
    EXPECT_FALSE(q8r_applies(GgmlType::Q8_0, 4000));
    EXPECT_FALSE(q8r_applies(GgmlType::Q8_0, 65536));
    EXPECT_FALSE(q8r_applies(GgmlType::F16, 4096));
    DeviceBuffer<uint8_t> w(1 << 16);
    DeviceBuffer<float> x(2048), y(16);
    EXPECT_THROW(q8r_repack(w.data(), 4, 250, nullptr), Error);
    EXPECT_THROW(matmul_q8r(w.data(), 4, 250, x.data(), 250, y.data(), 4, 1, nullptr), Error);
    EXPECT_THROW(matmul_q8r(w.data() + 4, 4, 256, x.data(), 256, y.data(), 4, 1, nullptr), Error);
    EXPECT_THROW(matmul_q8r(w.data(), 4, 256, x.data() + 1, 256, y.data(), 4, 1, nullptr), Error);
}

}  // namespace
}  // namespace ds4::cuda
