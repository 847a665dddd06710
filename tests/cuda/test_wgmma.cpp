// wgmma products of the f16 weight copies (cuda/matmul_wgmma.h) against
//  1. the half path (matmul_q8r_mma, MmaPrecision::Half) on the same activations: the
//     same f16 products, only the f32 summation order differs (1e-5 of Σ|w·x|);
//  2. the f64 product of the Q8_0 values and the f32 activations: the half path's bound
//     2^−10 · Σ|w·x|;
// for rows and tokens that are not multiples of the tiles (256 rows, 128 tokens), both
// q8r spans (512 and 256 columns); a token's bits do not depend on where it sits in the
// pass; a grouped launch equals its groups' own calls.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/matmul_mma.h"
#include "cuda/matmul_wgmma.h"
#include "cuda_test_util.h"
#include "quant/reference.h"

namespace ds4::cuda {
namespace {

struct Q8Matrix {
    DeviceBuffer<uint8_t> q8r;  // repacked rows
    DeviceBuffer<__half> f16;   // their f16 copy
    std::vector<float> dequant;
};

Q8Matrix make_matrix(uint64_t rows, uint64_t cols, uint32_t seed) {
    const std::vector<float> w = test::random_floats(rows * cols, seed);
    const uint64_t rb = cols / 32 * 34;
    std::vector<uint8_t> bytes(rows * rb);
    Q8Matrix m{DeviceBuffer<uint8_t>(), DeviceBuffer<__half>(rows * cols),
               std::vector<float>(rows * cols)};
    for (uint64_t r = 0; r < rows; ++r) {
        auto* b = reinterpret_cast<quant::BlockQ8_0*>(bytes.data() + r * rb);
        quant::ref::quantize_q8_0(w.data() + r * cols, b, static_cast<int64_t>(cols));
        quant::ref::dequant_q8_0(b, m.dequant.data() + r * cols, static_cast<int64_t>(cols));
    }
    m.q8r = to_device<uint8_t>(bytes);
    q8r_repack(m.q8r.data(), rows, cols, nullptr);
    q8r_to_f16(m.q8r.data(), rows, cols, m.f16.data(), nullptr);
    return m;
}

// Both paths' outputs for the activations x (n_tok rows of cols).
struct Both {
    std::vector<float> wgmma, half;
};
Both run_both(const Q8Matrix& m, uint64_t rows, uint64_t cols, const std::vector<float>& x,
              uint32_t n_tok) {
    DeviceBuffer<float> dx = to_device<float>(x), a(n_tok * rows), b(n_tok * rows);
    DeviceBuffer<uint8_t> xq(mma_activation_bytes(cols, n_tok));
    a.fill_bytes(0xff);  // NaN poison: every output must be written
    b.fill_bytes(0xff);
    quantize_mma_activations(dx.data(), cols, cols, n_tok, xq.data(), nullptr);
    matmul_f16_wgmma(m.f16.data(), rows, cols, xq.data(), n_tok, a.data(), rows, nullptr);
    matmul_q8r_mma(m.q8r.data(), rows, cols, xq.data(), n_tok, b.data(), rows, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    return {a.download(), b.download()};
}

#define DS4_REQUIRE_WGMMA()                                                               \
    DS4_REQUIRE_GPU();                                                                    \
    if (!wgmma_available()) GTEST_SKIP() << "no wgmma (needs sm_90 and an sm_90a build)"; \
    const test::MmaPrecisionScope half_scope(MmaPrecision::Half)

void check_shape(uint64_t rows, uint64_t cols, uint32_t n_tok, uint32_t seed) {
    SCOPED_TRACE(cat("rows=", rows, " cols=", cols, " n_tok=", n_tok));
    const Q8Matrix m = make_matrix(rows, cols, seed);
    std::vector<float> x = test::random_floats(n_tok * cols, seed + 1, -2.f, 2.f);
    for (uint32_t t = 0; t < n_tok; ++t)  // magnitudes far apart per token (the 2^e scaling)
        for (uint64_t c = 0; c < cols; ++c)
            x[t * cols + c] *= std::ldexp(1.f, static_cast<int>(t % 5) * 7 - 14);
    const Both got = run_both(m, rows, cols, x, n_tok);
    int bad = 0;
    double worst_half = 0, worst_ref = 0;
    for (uint32_t t = 0; t < n_tok; ++t) {
        for (uint64_t r = 0; r < rows; ++r) {
            double ref = 0, mag = 0;
            for (uint64_t c = 0; c < cols; ++c) {
                const double p = double{m.dequant[r * cols + c]} * x[t * cols + c];
                ref += p, mag += std::fabs(p);
            }
            const double y = got.wgmma[t * rows + r], h = got.half[t * rows + r];
            const double tol_half = 1e-5 * mag + 1e-30, bound = std::ldexp(mag, -10) + 1e-30;
            worst_half = std::max(worst_half, std::fabs(y - h) / tol_half);
            worst_ref = std::max(worst_ref, std::fabs(y - ref) / bound);
            if (!(std::fabs(y - h) <= tol_half && std::fabs(y - ref) <= bound) && bad++ < 5)
                ADD_FAILURE() << "tok " << t << " row " << r << ": wgmma " << y << ", half path "
                              << h << " (tol " << tol_half << "), f64 " << ref << " (bound "
                              << bound << ")";
        }
    }
    EXPECT_EQ(bad, 0);
    std::printf(
        "wgmma rows=%llu cols=%llu n_tok=%u: worst |wgmma - half| / (1e-5 sum|wx|) %.4f, "
        "|wgmma - f64| / (2^-10 sum|wx|) %.4f\n",
        static_cast<unsigned long long>(rows), static_cast<unsigned long long>(cols), n_tok,
        worst_half, worst_ref);
}

TEST(CudaWgmma, MatchesTheHalfPathAndTheReference) {
    DS4_REQUIRE_WGMMA();
    check_shape(300, 1024, 300, 900);  // a partial row tile and token tile; 512-column spans
    check_shape(256, 768, 130, 901);   // 256-column spans (3 of them), one full row tile
    check_shape(40, 256, 1, 902);      // one token, one stage of columns... of 4
    check_shape(512, 4096, 256, 903);  // the model's width
}

// A token's outputs are the same bits wherever it sits in the pass (another tile, another
// warpgroup, another row of the fragment) and whatever the pass's size.
TEST(CudaWgmma, TokenResultsDoNotDependOnThePass) {
    DS4_REQUIRE_WGMMA();
    constexpr uint64_t kRows = 300, kCols = 1536;
    constexpr uint32_t kTok = 301, kShift = 77;
    const Q8Matrix m = make_matrix(kRows, kCols, 910);
    const std::vector<float> x = test::random_floats(kTok * kCols, 911);
    std::vector<float> rotated(x.size());
    for (uint32_t t = 0; t < kTok; ++t)
        std::copy_n(x.begin() + t * kCols, kCols, rotated.begin() + (t + kShift) % kTok * kCols);
    const std::vector<float> a = run_both(m, kRows, kCols, x, kTok).wgmma;
    const std::vector<float> b = run_both(m, kRows, kCols, rotated, kTok).wgmma;
    const std::vector<float> first(x.begin(), x.begin() + 140 * kCols);
    const std::vector<float> c = run_both(m, kRows, kCols, first, 140).wgmma;
    for (uint32_t t = 0; t < kTok; ++t) {
        ASSERT_EQ(
            0, std::memcmp(a.data() + t * kRows, b.data() + (t + kShift) % kTok * kRows, kRows * 4))
            << "token " << t;
        if (t < 140) {
            ASSERT_EQ(0, std::memcmp(a.data() + t * kRows, c.data() + t * kRows, kRows * 4))
                << "token " << t;
        }
    }
}

// G groups in one launch (the grouped output projection) == each group's own call.
TEST(CudaWgmma, GroupsEqualEachGroupsOwnCall) {
    DS4_REQUIRE_WGMMA();
    constexpr uint64_t kRows = 200, kCols = 1024, kGroups = 3, kWide = kGroups * kCols;
    constexpr uint32_t kTok = 260;
    const Q8Matrix m = make_matrix(kGroups * kRows, kCols, 920);
    const std::vector<float> x = test::random_floats(kTok * kWide, 921);
    DeviceBuffer<float> dx = to_device<float>(x), y(kTok * kGroups * kRows),
                        ys(kTok * kGroups * kRows);
    y.fill_bytes(0xff);
    ys.fill_bytes(0xfe);
    DeviceBuffer<uint8_t> xq(mma_activation_bytes(kWide, kTok));
    quantize_mma_activations(dx.data(), kWide, kWide, kTok, xq.data(), nullptr);
    WgmmaGroups g;
    g.groups = kGroups;
    g.xq_cols = kWide;
    g.y_group = kRows;
    matmul_f16_wgmma(m.f16.data(), kRows, kCols, xq.data(), kTok, y.data(), kGroups * kRows,
                     nullptr, g);
    for (uint64_t i = 0; i < kGroups; ++i) {
        DeviceBuffer<uint8_t> xg(mma_activation_bytes(kCols, kTok));
        quantize_mma_activations(dx.data() + i * kCols, kWide, kCols, kTok, xg.data(), nullptr);
        matmul_f16_wgmma(m.f16.data() + i * kRows * kCols, kRows, kCols, xg.data(), kTok,
                         ys.data() + i * kRows, kGroups * kRows, nullptr);
    }
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> a = y.download(), b = ys.download();
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

}  // namespace
}  // namespace ds4::cuda
