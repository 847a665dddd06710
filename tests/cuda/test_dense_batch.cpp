// Dense products of batches (issue 8, 16-128 tokens):
//  1. the split kernel's batched launch (F16/F32 rows, matmul_split_batch_kernel): a token's
//     output bits in a pass of n = 1..15 tokens are those of the token alone (the
//     8-token launches and the batched one add in split_row's order), for the
//     single-product and the merged (matmul_multi) entry points, with values checked
//     against an f64 reference; from kF16MmaMinTokens F16 goes to the tensor cores
//     (matmul_f16_mma.h), whose bits are then those of the longest pass (test_f16_mma.cpp
//     checks its values);
//  2. split-K of the tensor-core product (matmul_mma.h, MmaExtra::scratch): the split
//     result is bitwise the one-block result (the chunks add in the same order), twice
//     the same (no atomics), within the int8-activation bound of the exact path, and the
//     grouped launch gives each group's own call's bits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/matmul_f16_mma.h"
#include "cuda/matmul_mma.h"
#include "cuda_test_util.h"
#include "ds4/error.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace ds4::cuda {
namespace {

struct F16Rows {
    std::vector<uint8_t> bytes;
    std::vector<float> values;  // what the halves hold
};
F16Rows f16_rows(uint64_t rows, uint64_t cols, uint32_t seed) {
    const std::vector<float> w = test::random_floats(rows * cols, seed);
    F16Rows m{std::vector<uint8_t>(rows * cols * 2), std::vector<float>(rows * cols)};
    for (uint64_t i = 0; i < w.size(); ++i) {
        const uint16_t h = quant::f32_to_f16(w[i]);
        std::memcpy(m.bytes.data() + 2 * i, &h, 2);
        m.values[i] = quant::f16_to_f32(h);
    }
    return m;
}

std::vector<float> run_matmul(const DeviceBuffer<uint8_t>& w, uint64_t rows, uint64_t cols, const float* x,
                              uint32_t n_tok) {
    DeviceBuffer<float> y(n_tok * rows);
    y.fill_bytes(0xff);  // NaN poison: every output must be written
    matmul(GgmlType::F16, w.data(), rows, cols, x, cols, y.data(), rows, n_tok, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    return y.download();
}

// Shapes: few rows (one block of the batched kernel is 4 rows: 1, 5, 37 leave partial
// blocks), 1 to 32 chunks per row (W = 4, 8 and 32 logical warps), and 3000 rows of 2+
// chunks (the split kernel's widest case).
TEST(CudaDenseBatch, F16BatchEqualsEachTokenAlone) {
    DS4_REQUIRE_GPU();
    const std::vector<std::pair<uint64_t, uint64_t>> shapes = {{5, 256},   {37, 768},   {1, 4096},
                                                               {24, 16384}, {130, 3328}, {3000, 1024}};
    constexpr uint32_t kMaxTok = 70;
    for (const auto& [rows, cols] : shapes) {
        SCOPED_TRACE(cat("rows=", rows, " cols=", cols));
        const F16Rows m = f16_rows(rows, cols, static_cast<uint32_t>(rows * 7 + cols));
        DeviceBuffer<uint8_t> w = to_device<uint8_t>(m.bytes);
        const std::vector<float> x = test::random_floats(kMaxTok * cols, static_cast<uint32_t>(cols), -2.f, 2.f);
        DeviceBuffer<float> dx = to_device<float>(x);
        std::vector<float> alone(kMaxTok * rows);
        for (uint32_t t = 0; t < kMaxTok; ++t) {
            const std::vector<float> y = run_matmul(w, rows, cols, dx.data() + t * cols, 1);
            std::copy(y.begin(), y.end(), alone.begin() + t * rows);
        }
        int bad = 0;  // the single-token values themselves against f64
        for (uint32_t t = 0; t < kMaxTok; ++t)
            for (uint64_t r = 0; r < rows; r += 1 + rows / 64) {
                const test::RefDot d = test::ref_dot(m.values.data() + r * cols, x.data() + t * cols, cols);
                if (std::fabs(alone[t * rows + r] - d.sum) > 1e-5 * d.mag + 1e-6 && bad++ < 5)
                    ADD_FAILURE() << "tok " << t << " row " << r << ": " << alone[t * rows + r] << " vs " << d.sum;
            }
        EXPECT_EQ(bad, 0);
        const std::vector<float> full = run_matmul(w, rows, cols, dx.data(), kMaxTok);
        for (uint32_t n = 1; n <= kMaxTok; ++n) {
            const std::vector<float> y = run_matmul(w, rows, cols, dx.data(), n);
            const std::vector<float>& want = f16_mma_takes(n, rows) ? full : alone;
            ASSERT_EQ(0, std::memcmp(y.data(), want.data(), n * rows * sizeof(float))) << n << " tokens";
        }
    }
}

// matmul_multi's merged launches (parts of one table, a part past the split kernel's rows
// that goes to its own call): each part's bits are its tokens' alone.
TEST(CudaDenseBatch, F16MultiBatchEqualsEachTokenAlone) {
    DS4_REQUIRE_GPU();
    constexpr uint64_t kCols = 4096;
    const std::vector<uint64_t> rows = {1024, 3, 256, 17, 9000, 512};
    std::vector<DeviceBuffer<uint8_t>> w;
    for (size_t i = 0; i < rows.size(); ++i)
        w.push_back(to_device<uint8_t>(f16_rows(rows[i], kCols, static_cast<uint32_t>(40 + i)).bytes));
    constexpr uint32_t kMaxTok = 70;
    const std::vector<float> x = test::random_floats(kMaxTok * kCols, 5);
    DeviceBuffer<float> dx = to_device<float>(x);
    std::vector<std::vector<float>> alone(rows.size()), full(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
        for (uint32_t t = 0; t < kMaxTok; ++t) {
            const std::vector<float> y = run_matmul(w[i], rows[i], kCols, dx.data() + t * kCols, 1);
            alone[i].insert(alone[i].end(), y.begin(), y.end());
        }
        full[i] = run_matmul(w[i], rows[i], kCols, dx.data(), kMaxTok);
    }
    for (const uint32_t n : {1u, 8u, 15u, 16u, 17u, 33u, 64u, 70u}) {
        std::vector<DeviceBuffer<float>> y;
        std::vector<MatProduct> parts;
        for (size_t i = 0; i < rows.size(); ++i) {
            y.emplace_back(n * rows[i]);
            y.back().fill_bytes(0xff);
            parts.push_back({w[i].data(), rows[i], y.back().data(), rows[i]});
        }
        matmul_multi(GgmlType::F16, parts, kCols, dx.data(), kCols, n, nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        for (size_t i = 0; i < rows.size(); ++i) {
            const std::vector<float> got = y[i].download();
            const std::vector<float>& want = f16_mma_takes(n, rows[i]) ? full[i] : alone[i];
            ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)))
                << "part " << i << ", " << n << " tokens";
        }
    }
}

std::vector<uint8_t> q8r_device_rows(uint64_t rows, uint64_t cols, uint32_t seed, std::vector<float>* dequant) {
    const std::vector<float> w = test::random_floats(rows * cols, seed);
    const uint64_t rb = cols / 32 * 34;
    std::vector<uint8_t> bytes(rows * rb);
    dequant->resize(rows * cols);
    for (uint64_t r = 0; r < rows; ++r) {
        auto* b = reinterpret_cast<quant::BlockQ8_0*>(bytes.data() + r * rb);
        quant::ref::quantize_q8_0(w.data() + r * cols, b, static_cast<int64_t>(cols));
        quant::ref::dequant_q8_0(b, dequant->data() + r * cols, static_cast<int64_t>(cols));
    }
    return bytes;
}

std::vector<float> run_mma(const DeviceBuffer<uint8_t>& w, uint64_t rows, uint64_t cols, const DeviceBuffer<float>& x,
                           uint32_t n_tok, float* scratch) {
    DeviceBuffer<uint8_t> xq(mma_activation_bytes(cols, n_tok));
    DeviceBuffer<float> y(n_tok * rows);
    y.fill_bytes(0xff);
    quantize_mma_activations(x.data(), cols, cols, n_tok, xq.data(), nullptr);
    matmul_q8r_mma(w.data(), rows, cols, xq.data(), n_tok, y.data(), rows, nullptr, MmaExtra{scratch});
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    return y.download();
}

// Split (scratch given, small grid) == one block per tile (no scratch), bit for bit, on
// both precisions; the split run twice gives the same bits; both within the bound of matmul_mma.h against the
// f64 product with the f32 activations (Σ|w| · d_x / 2 per row; d_x <= amax/127 is bounded
// here by the row's largest |x| / 127, a looser form of the test_matmul_mma bound).
TEST(CudaDenseBatch, MmaSplitKEqualsOneBlockBitwise) {
    DS4_REQUIRE_GPU();
    if (!mma_applies(uint64_t{1} << 20, 1u << 20, 0)) GTEST_SKIP() << "no int8 mma (sm < 80)";
    DeviceBuffer<float> scratch(kMmaSplitScratchFloats);
    struct Case {
        uint64_t rows, cols;
        uint32_t n_tok;
    };
    // 8192 columns: 8 chunks of 4 stages; 4096: 4; 3072: 3; 2304 (256-spans, K = 2): 2 chunks
    // of 5 and 4 stages; 1024: one chunk (no split); a partial row tile and token tile.
    const std::vector<Case> cases = {{1000, 8192, 64}, {300, 4096, 40}, {129, 3072, 17},
                                     {77, 2304, 70},   {64, 1024, 16},  {4096, 2048, 64}};
    for (const MmaPrecision prec : {MmaPrecision::Int8, MmaPrecision::Half})
    for (const Case& c : cases) {
        const test::MmaPrecisionScope scope(prec);
        SCOPED_TRACE(cat(test::precision_name(prec), " rows=", c.rows, " cols=", c.cols, " n_tok=", c.n_tok));
        std::vector<float> wq;
        DeviceBuffer<uint8_t> w = to_device<uint8_t>(q8r_device_rows(c.rows, c.cols, 11, &wq));
        q8r_repack(w.data(), c.rows, c.cols, nullptr);
        const std::vector<float> x = test::random_floats(c.n_tok * c.cols, 12, -2.f, 2.f);
        DeviceBuffer<float> dx = to_device<float>(x);
        const std::vector<float> one = run_mma(w, c.rows, c.cols, dx, c.n_tok, nullptr);
        const std::vector<float> split = run_mma(w, c.rows, c.cols, dx, c.n_tok, scratch.data());
        const std::vector<float> again = run_mma(w, c.rows, c.cols, dx, c.n_tok, scratch.data());
        ASSERT_EQ(0, std::memcmp(one.data(), split.data(), one.size() * sizeof(float))) << "split != one block";
        ASSERT_EQ(0, std::memcmp(split.data(), again.data(), one.size() * sizeof(float))) << "split not repeatable";
        int bad = 0;
        for (uint32_t t = 0; t < c.n_tok; ++t) {
            float amax = 0.f;
            for (uint64_t k = 0; k < c.cols; ++k) amax = std::max(amax, std::fabs(x[t * c.cols + k]));
            for (uint64_t r = 0; r < c.rows; r += 1 + c.rows / 50) {
                const test::RefDot d = test::ref_dot(wq.data() + r * c.cols, x.data() + t * c.cols, c.cols);
                double wabs = 0;
                for (uint64_t k = 0; k < c.cols; ++k) wabs += std::fabs(wq[r * c.cols + k]);
                const double bound = wabs * amax / 127 / 2 + 1e-5 * d.mag + 1e-6;
                if (std::fabs(split[t * c.rows + r] - d.sum) > bound && bad++ < 5)
                    ADD_FAILURE() << "tok " << t << " row " << r << ": " << split[t * c.rows + r] << " vs " << d.sum
                                  << " (bound " << bound << ")";
            }
        }
        EXPECT_EQ(bad, 0);
    }
}

// G groups of one shape in one launch (the grouped output projection: activations
// quantized over the whole row) == each group's own quantize + product, split or not;
// both precisions (half: the row's power of two differs from a group's, the bits do not).
TEST(CudaDenseBatch, MmaGroupsEqualEachGroupsOwnCall) {
    DS4_REQUIRE_GPU();
    if (!mma_applies(uint64_t{1} << 20, 1u << 20, 0)) GTEST_SKIP() << "no int8 mma (sm < 80)";
    constexpr uint64_t kRows = 200, kCols = 2048, kGroups = 3, kWide = kGroups * kCols;
    DeviceBuffer<float> scratch(kMmaSplitScratchFloats);
    std::vector<float> wq;
    DeviceBuffer<uint8_t> w = to_device<uint8_t>(q8r_device_rows(kGroups * kRows, kCols, 21, &wq));
    q8r_repack(w.data(), kGroups * kRows, kCols, nullptr);
    const uint64_t w_group = kRows * (kCols / 32 * 34);
    for (const MmaPrecision prec : {MmaPrecision::Int8, MmaPrecision::Half})
    for (const uint32_t n : {16u, 64u, 300u}) {
        const test::MmaPrecisionScope scope(prec);
        SCOPED_TRACE(cat(test::precision_name(prec), " n_tok=", n));
        const std::vector<float> x = test::random_floats(n * kWide, 22 + n);
        DeviceBuffer<float> dx = to_device<float>(x);
        for (float* sc : {static_cast<float*>(nullptr), scratch.data()}) {
            DeviceBuffer<uint8_t> xq(mma_activation_bytes(kWide, n));
            DeviceBuffer<float> y(n * kGroups * kRows), ys(n * kGroups * kRows);
            y.fill_bytes(0xff);
            ys.fill_bytes(0xfe);
            quantize_mma_activations(dx.data(), kWide, kWide, n, xq.data(), nullptr);
            MmaExtra ex{sc};
            ex.groups = kGroups;
            ex.w_group = w_group;
            ex.y_group = kRows;
            ex.xq_cols = kWide;
            matmul_q8r_mma(w.data(), kRows, kCols, xq.data(), n, y.data(), kGroups * kRows, nullptr, ex);
            for (uint64_t g = 0; g < kGroups; ++g) {
                DeviceBuffer<uint8_t> xg(mma_activation_bytes(kCols, n));
                quantize_mma_activations(dx.data() + g * kCols, kWide, kCols, n, xg.data(), nullptr);
                matmul_q8r_mma(w.data() + g * w_group, kRows, kCols, xg.data(), n, ys.data() + g * kRows,
                               kGroups * kRows, nullptr, MmaExtra{sc});
            }
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            const std::vector<float> a = y.download(), b = ys.download();
            ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
                << (sc != nullptr ? "with" : "without") << " split scratch";
        }
    }
}

}  // namespace
}  // namespace ds4::cuda
