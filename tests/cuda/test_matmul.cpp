// Quantized matmul kernels vs the CPU reference: the weight rows dequantized with
// quant/reference (the definition of each format) dotted with the activations in double.
// The GPU dots f32 activations in f32, so agreement is to f32 rounding of the sum
// (relative to Σ|w·x|), for every type, several batch sizes and a partial last block.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda_test_util.h"
#include "gguf/ggml_types.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace ds4::cuda {
namespace {

struct Quantized {
    std::vector<uint8_t> bytes;  // rows × row_bytes
    std::vector<float> dequant;  // rows × cols, the reference values
};

// Quantizes row by row with the reference quantizers, then dequantizes the result.
Quantized quantize_rows(GgmlType t, const std::vector<float>& w, uint64_t rows, uint64_t cols) {
    const uint64_t rb = ggml_row_bytes(t, cols);
    Quantized q{std::vector<uint8_t>(rows * rb), std::vector<float>(rows * cols)};
    for (uint64_t r = 0; r < rows; ++r) {
        const float* src = w.data() + r * cols;
        uint8_t* dst = q.bytes.data() + r * rb;
        float* deq = q.dequant.data() + r * cols;
        const auto n = static_cast<int64_t>(cols);
        switch (t) {
            case GgmlType::F32: std::memcpy(dst, src, rb); break;
            case GgmlType::F16: {
                auto* h = reinterpret_cast<uint16_t*>(dst);
                for (uint64_t i = 0; i < cols; ++i) h[i] = quant::f32_to_f16(src[i]);
                quant::ref::dequant_f16(h, deq, n);
                continue;
            }
            case GgmlType::Q8_0: {
                auto* b = reinterpret_cast<quant::BlockQ8_0*>(dst);
                quant::ref::quantize_q8_0(src, b, n);
                quant::ref::dequant_q8_0(b, deq, n);
                continue;
            }
            case GgmlType::Q2_K: {
                auto* b = reinterpret_cast<quant::BlockQ2K*>(dst);
                quant::ref::quantize_q2_K(src, b, n, nullptr);
                quant::ref::dequant_q2_K(b, deq, n);
                continue;
            }
            case GgmlType::Q4_K: {
                auto* b = reinterpret_cast<quant::BlockQ4K*>(dst);
                quant::ref::quantize_q4_K(src, b, n, nullptr);
                quant::ref::dequant_q4_K(b, deq, n);
                continue;
            }
            case GgmlType::IQ2_XXS: {
                auto* b = reinterpret_cast<quant::BlockIQ2XXS*>(dst);
                quant::ref::quantize_iq2_xxs(src, b, n, nullptr);
                quant::ref::dequant_iq2_xxs(b, deq, n);
                continue;
            }
            default: ADD_FAILURE() << "type " << ggml_type_name(t); return q;
        }
        std::memcpy(deq, src, cols * sizeof(float));
    }
    return q;
}

void check_matmul(GgmlType t, uint64_t rows, uint64_t cols, uint32_t n_tok, uint32_t seed) {
    SCOPED_TRACE(cat(ggml_type_name(t), " rows=", rows, " cols=", cols, " n_tok=", n_tok));
    const std::vector<float> w = test::random_floats(rows * cols, seed);
    const std::vector<float> x = test::random_floats(n_tok * cols, seed + 1);
    const Quantized q = quantize_rows(t, w, rows, cols);

    DeviceBuffer<uint8_t> dw = to_device<uint8_t>(q.bytes);
    DeviceBuffer<float> dx = to_device<float>(x);
    DeviceBuffer<float> dy(n_tok * rows);
    dy.fill_bytes(0xff);  // NaN poison: every output must be written
    matmul(t, dw.data(), rows, cols, dx.data(), cols, dy.data(), rows, n_tok, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> y = dy.download();

    int bad = 0;
    for (uint32_t tok = 0; tok < n_tok; ++tok) {
        for (uint64_t r = 0; r < rows; ++r) {
            const auto [ref, mag] = test::ref_dot(&q.dequant[r * cols], &x[tok * cols], cols);
            const float got = y[tok * rows + r];
            const double tol = 1e-5 * mag + 1e-6;  // f32 sums of up to ~130 terms per lane
            if (!(std::fabs(got - ref) <= tol) && bad++ < 5)
                ADD_FAILURE() << "tok " << tok << " row " << r << ": " << got << " vs " << ref << " (tol " << tol
                              << ")";
        }
    }
    EXPECT_EQ(bad, 0);
}

class CudaMatmul : public ::testing::TestWithParam<GgmlType> {};

TEST_P(CudaMatmul, MatchesReferenceDequantDot) {
    DS4_REQUIRE_GPU();
    const GgmlType t = GetParam();
    uint32_t seed = 10;
    for (uint32_t n_tok : {1u, 2u, 3u, 5u, 8u, 13u}) check_matmul(t, 67, 1024, n_tok, seed++);
    check_matmul(t, 9, 4096, 1, seed++);    // long rows: several items per lane
    check_matmul(t, 130, 256, 4, seed++);  // one group per row (2-byte staging for most types)
    check_matmul(t, 5, 8192, 2, seed++);   // several shared-memory chunks per row
    // rows >= 2048 take the many-rows kernel (fewer rows: one block per row, split columns)
    check_matmul(t, 2050, 512, 1, seed++);
    check_matmul(t, 2050, 512, 5, seed++);
    check_matmul(t, 2, 131072, 2, seed++);  // >= 32 chunks per row: 32 warps per row
    check_matmul(t, 2100, 2048, 2, seed++);  // 2048..8191 rows of >= 2 chunks (not IQ2/Q2_K): split
}

// One-hot activations (token c selects column c) read back each dequantized weight as the
// kernel sees it: y = w·1 plus exact zeros. The integer-to-float steps of the decodes are
// exact (biased-mantissa conversions), so the values must be the reference's: bitwise for
// the formats whose reference is a product (IQ2_XXS: d·(0.5 + s)/4 · grid · sign), to one
// rounding for the K-quants' d·q − m (the CPU build may or may not fuse it).
void check_decoded_weights(GgmlType t, const Quantized& q, uint64_t rows, uint64_t cols) {
    std::vector<float> x(cols * cols, 0.f);
    for (uint64_t c = 0; c < cols; ++c) x[c * cols + c] = 1.f;
    DeviceBuffer<uint8_t> dw = to_device<uint8_t>(q.bytes);
    DeviceBuffer<float> dx = to_device<float>(x);
    DeviceBuffer<float> dy(cols * rows);
    dy.fill_bytes(0xff);
    matmul(t, dw.data(), rows, cols, dx.data(), cols, dy.data(), rows, static_cast<uint32_t>(cols), nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> y = dy.download();
    const bool exact = t != GgmlType::Q2_K && t != GgmlType::Q4_K;
    int bad = 0;
    for (uint64_t r = 0; r < rows; ++r) {
        float row_max = 0.f;
        for (uint64_t c = 0; c < cols; ++c) row_max = std::max(row_max, std::fabs(q.dequant[r * cols + c]));
        for (uint64_t c = 0; c < cols; ++c) {
            const float want = q.dequant[r * cols + c], got = y[c * rows + r];
            const bool ok = exact ? got == want : std::fabs(got - want) <= 4.8e-7f * row_max;
            if (!ok && bad++ < 5) ADD_FAILURE() << "row " << r << " col " << c << ": " << got << " vs " << want;
        }
    }
    EXPECT_EQ(bad, 0);
}

TEST_P(CudaMatmul, DecodesEachWeightExactly) {
    DS4_REQUIRE_GPU();
    const GgmlType t = GetParam();
    for (const auto& [rows, cols] : {std::pair<uint64_t, uint64_t>{5, 512}, {2050, 256}}) {
        SCOPED_TRACE(cat(ggml_type_name(t), " rows=", rows, " cols=", cols));
        check_decoded_weights(t, quantize_rows(t, test::random_floats(rows * cols, 77), rows, cols), rows, cols);
    }
}

// IQ2_XXS blocks of random bytes (every grid entry, sign pattern and 4-bit scale; the
// quantizer reaches few of them) with a fixed finite d, decoded bitwise as the reference.
TEST(CudaMatmulIq2, RandomBlocksDecodeBitwise) {
    DS4_REQUIRE_GPU();
    const uint64_t rows = 67, cols = 1024, rb = ggml_row_bytes(GgmlType::IQ2_XXS, cols);
    Quantized q{std::vector<uint8_t>(rows * rb), std::vector<float>(rows * cols)};
    uint32_t state = 12345;
    for (auto& b : q.bytes) b = static_cast<uint8_t>((state = state * 1664525u + 1013904223u) >> 24);
    for (uint64_t r = 0; r < rows; ++r) {
        auto* blocks = reinterpret_cast<quant::BlockIQ2XXS*>(q.bytes.data() + r * rb);
        for (uint64_t b = 0; b < cols / 256; ++b) blocks[b].d = quant::f32_to_f16(0.01f * static_cast<float>(r + b + 1));
        quant::ref::dequant_iq2_xxs(blocks, q.dequant.data() + r * cols, static_cast<int64_t>(cols));
    }
    check_decoded_weights(GgmlType::IQ2_XXS, q, rows, cols);
}

TEST_P(CudaMatmul, RejectsRaggedColumns) {
    DS4_REQUIRE_GPU();
    DeviceBuffer<uint8_t> w(1 << 16);
    DeviceBuffer<float> x(1024), y(16);
    EXPECT_THROW(matmul(GetParam(), w.data(), 4, 250, x.data(), 250, y.data(), 4, 1, nullptr), Error);
}

INSTANTIATE_TEST_SUITE_P(Types, CudaMatmul,
                         ::testing::Values(GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q2_K,
                                           GgmlType::Q4_K, GgmlType::IQ2_XXS),
                         [](const ::testing::TestParamInfo<GgmlType>& p) { return ggml_type_name(p.param); });

TEST(CudaMatmulTypes, UnsupportedTypeIsAnError) {
    DS4_REQUIRE_GPU();
    EXPECT_FALSE(matmul_supported(GgmlType::Q6_K));
    EXPECT_THROW(matmul(GgmlType::Q6_K, nullptr, 1, 256, nullptr, 256, nullptr, 1, 1, nullptr), Error);
}

}  // namespace
}  // namespace ds4::cuda
