// Fast matvec path (cuda/matmul_q8.h) against two references:
//  1. the same int8 activations the GPU produced, dequantized (d·q) and dotted in double
//     with the reference dequantization of the weights: the integer dot is exact, so the
//     only difference is f32 rounding of the scaled partial sums (1e-5 of Σ|w·x̂|);
//  2. the f32 activations (the exact path's input): the documented bound of matmul_q8.h,
//     Σ_i |w_i| · d_x(i)/2, since rounding moves each x_i by at most half a step.
// Also: the activation quantizer against a host mirror, and the path switch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/matmul_q8.h"
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

Quantized quantize_rows(GgmlType t, const std::vector<float>& w, uint64_t rows, uint64_t cols) {
    const uint64_t rb = ggml_row_bytes(t, cols);
    Quantized q{std::vector<uint8_t>(rows * rb), std::vector<float>(rows * cols)};
    for (uint64_t r = 0; r < rows; ++r) {
        const float* src = w.data() + r * cols;
        uint8_t* dst = q.bytes.data() + r * rb;
        float* deq = q.dequant.data() + r * cols;
        const auto n = static_cast<int64_t>(cols);
        switch (t) {
            case GgmlType::Q8_0: {
                auto* b = reinterpret_cast<quant::BlockQ8_0*>(dst);
                quant::ref::quantize_q8_0(src, b, n);
                quant::ref::dequant_q8_0(b, deq, n);
                break;
            }
            case GgmlType::Q2_K: {
                auto* b = reinterpret_cast<quant::BlockQ2K*>(dst);
                quant::ref::quantize_q2_K(src, b, n, nullptr);
                quant::ref::dequant_q2_K(b, deq, n);
                break;
            }
            case GgmlType::Q4_K: {
                auto* b = reinterpret_cast<quant::BlockQ4K*>(dst);
                quant::ref::quantize_q4_K(src, b, n, nullptr);
                quant::ref::dequant_q4_K(b, deq, n);
                break;
            }
            case GgmlType::IQ2_XXS: {
                auto* b = reinterpret_cast<quant::BlockIQ2XXS*>(dst);
                quant::ref::quantize_iq2_xxs(src, b, n, nullptr);
                quant::ref::dequant_iq2_xxs(b, deq, n);
                break;
            }
            default: ADD_FAILURE() << "type " << ggml_type_name(t); return q;
        }
    }
    return q;
}

// The device's quantized activations, unpacked: x̂ = d·q per value, d per value.
struct HostQ8 {
    std::vector<int8_t> q;   // n_tok × cols
    std::vector<float> d;    // n_tok × cols/32
    std::vector<int> sums;   // n_tok × cols/16, as stored
};

HostQ8 unpack_q8(const std::vector<uint8_t>& raw, uint64_t cols, uint32_t n_tok) {
    const uint64_t tb = q8_token_bytes(cols);
    HostQ8 h{std::vector<int8_t>(n_tok * cols), std::vector<float>(n_tok * cols / 32), std::vector<int>(n_tok * cols / 16)};
    for (uint32_t t = 0; t < n_tok; ++t) {
        const uint8_t* tok = raw.data() + t * tb;
        std::memcpy(h.q.data() + t * cols, tok, cols);
        for (uint64_t b = 0; b < cols / 32; ++b) {
            int32_t meta[2];
            std::memcpy(meta, tok + cols + 8 * b, 8);
            std::memcpy(&h.d[t * cols / 32 + b], &meta[0], 4);
            h.sums[t * cols / 16 + 2 * b] = static_cast<int16_t>(meta[1] & 0xffff);
            h.sums[t * cols / 16 + 2 * b + 1] = meta[1] >> 16;
        }
    }
    return h;
}

HostQ8 quantize_on_device(const DeviceBuffer<float>& dx, uint64_t cols, uint32_t n_tok, DeviceBuffer<uint8_t>& dq) {
    quantize_q8_activations(dx.data(), cols, cols, n_tok, dq.data(), nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    return unpack_q8(dq.download(), cols, n_tok);
}

TEST(CudaMatmulQ8, QuantizedActivationsMatchHostMirror) {
    DS4_REQUIRE_GPU();
    const uint64_t cols = 1024;
    const uint32_t n_tok = 3;
    std::vector<float> x = test::random_floats(n_tok * cols, 5, -3.f, 3.f);
    for (uint64_t i = 0; i < 32; ++i) x[64 + i] = 0.f;  // an all-zero block: d = 0, q = 0
    DeviceBuffer<float> dx = to_device<float>(x);
    DeviceBuffer<uint8_t> dq(q8_activation_bytes(cols, n_tok));
    const HostQ8 h = quantize_on_device(dx, cols, n_tok, dq);
    int off_by_one = 0;
    for (uint64_t b = 0; b < n_tok * cols / 32; ++b) {
        float amax = 0.f;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[32 * b + i]));
        const float d = amax / 127.f;
        ASSERT_EQ(h.d[b], d) << "block " << b;
        const float id = d > 0.f ? 1.f / d : 0.f;
        int s[2] = {0, 0};
        for (int i = 0; i < 32; ++i) {
            const int want = static_cast<int>(std::nearbyint(x[32 * b + i] * id));
            const int got = h.q[32 * b + i];
            ASSERT_LE(std::abs(got - want), 1) << "value " << 32 * b + i;
            off_by_one += got != want;  // a tie rounded the other way: never seen, tolerated
            s[i / 16] += got;
        }
        EXPECT_EQ(h.sums[2 * b], s[0]);
        EXPECT_EQ(h.sums[2 * b + 1], s[1]);
    }
    EXPECT_LE(off_by_one, 2);
    for (int i = 0; i < 32; ++i) EXPECT_EQ(h.q[64 + i], 0);
    EXPECT_EQ(h.d[2], 0.f);
}

void check_fast(GgmlType t, uint64_t rows, uint64_t cols, uint32_t n_tok, uint32_t seed) {
    SCOPED_TRACE(cat(ggml_type_name(t), " rows=", rows, " cols=", cols, " n_tok=", n_tok));
    const std::vector<float> w = test::random_floats(rows * cols, seed);
    const std::vector<float> x = test::random_floats(n_tok * cols, seed + 1);
    const Quantized qw = quantize_rows(t, w, rows, cols);

    DeviceBuffer<uint8_t> dw = to_device<uint8_t>(qw.bytes);
    DeviceBuffer<float> dx = to_device<float>(x);
    DeviceBuffer<uint8_t> dq(q8_activation_bytes(cols, n_tok));
    DeviceBuffer<float> dy(n_tok * rows), dy_exact(n_tok * rows);
    dy.fill_bytes(0xff);  // NaN poison: every output must be written
    const HostQ8 hq = quantize_on_device(dx, cols, n_tok, dq);
    matmul_q8(t, dw.data(), rows, cols, dq.data(), n_tok, dy.data(), rows, nullptr);
    matmul(t, dw.data(), rows, cols, dx.data(), cols, dy_exact.data(), rows, n_tok, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> y = dy.download(), y_exact = dy_exact.download();

    int bad = 0;
    double worst_ratio = 0;  // |fast − f32 ref| / bound, reported
    for (uint32_t tok = 0; tok < n_tok; ++tok) {
        for (uint64_t r = 0; r < rows; ++r) {
            double ref_q = 0, mag_q = 0, ref_f = 0, mag_f = 0, step = 0;
            for (uint64_t c = 0; c < cols; ++c) {
                const double wv = qw.dequant[r * cols + c];
                const double d = hq.d[(tok * cols + c) / 32];
                const double pq = wv * d * hq.q[tok * cols + c], pf = wv * x[tok * cols + c];
                ref_q += pq, mag_q += std::fabs(pq);
                ref_f += pf, mag_f += std::fabs(pf);
                step += std::fabs(wv) * d / 2;
            }
            const double got = y[tok * rows + r], exact = y_exact[tok * rows + r];
            const double tol_q = 1e-5 * mag_q + 1e-6;
            const double bound = step + 1e-5 * (mag_q + mag_f) + 1e-6;
            worst_ratio = std::max(worst_ratio, std::fabs(got - ref_f) / bound);
            const bool ok = std::fabs(got - ref_q) <= tol_q && std::fabs(got - ref_f) <= bound &&
                            std::fabs(got - exact) <= bound;
            if (!ok && bad++ < 5)
                ADD_FAILURE() << "tok " << tok << " row " << r << ": fast " << got << ", int8-activation ref " << ref_q
                              << " (tol " << tol_q << "), f32 ref " << ref_f << ", exact kernel " << exact
                              << " (bound " << bound << ")";
        }
    }
    EXPECT_EQ(bad, 0);
    EXPECT_GT(worst_ratio, 0.0);  // the fast path does round: it is not the exact kernel
    std::printf("%s rows=%llu cols=%llu n_tok=%u: worst |fast - f32 ref| / bound = %.3f\n", ggml_type_name(t).c_str(),
                static_cast<unsigned long long>(rows), static_cast<unsigned long long>(cols), n_tok, worst_ratio);
}

class CudaMatmulQ8Types : public ::testing::TestWithParam<GgmlType> {};

TEST_P(CudaMatmulQ8Types, MatchesReferenceWithinActivationRounding) {
    DS4_REQUIRE_GPU();
    const GgmlType t = GetParam();
    uint32_t seed = 40;
    for (uint32_t n_tok : {1u, 2u, 3u, 4u, 5u, 8u, 13u}) check_fast(t, 67, 1024, n_tok, seed++);
    check_fast(t, 9, 4096, 1, seed++);    // several chunks per row
    check_fast(t, 130, 256, 2, seed++);   // one group per row: 2-byte staging, idle lanes
    check_fast(t, 33, 2304, 8, seed++);   // 9 groups: a partial chunk and a partial pass
    check_fast(t, 5, 8192, 3, seed++);
}

// More row groups than the grid has resident warps: each warp takes several row groups and
// double-buffers across them. 61 quantized rows tiled to `rows` keep the host side cheap.
TEST_P(CudaMatmulQ8Types, ManyRowsPerWarp) {
    DS4_REQUIRE_GPU();
    const GgmlType t = GetParam();
    const uint64_t seed_rows = 61, rows = 50001, cols = 4096;
    const uint32_t n_tok = 2;
    const Quantized qw = quantize_rows(t, test::random_floats(seed_rows * cols, 90), seed_rows, cols);
    const uint64_t rb = ggml_row_bytes(t, cols);
    std::vector<uint8_t> tiled(rows * rb);
    for (uint64_t r = 0; r < rows; ++r) std::memcpy(tiled.data() + r * rb, qw.bytes.data() + (r % seed_rows) * rb, rb);
    DeviceBuffer<uint8_t> dw = to_device<uint8_t>(tiled);
    DeviceBuffer<float> dx = to_device<float>(test::random_floats(n_tok * cols, 91));
    DeviceBuffer<uint8_t> dq(q8_activation_bytes(cols, n_tok));
    DeviceBuffer<float> dy(n_tok * rows);
    dy.fill_bytes(0xff);
    const HostQ8 hq = quantize_on_device(dx, cols, n_tok, dq);
    matmul_q8(t, dw.data(), rows, cols, dq.data(), n_tok, dy.data(), rows, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> y = dy.download();
    int bad = 0;
    for (uint32_t tok = 0; tok < n_tok; ++tok) {
        for (uint64_t sr = 0; sr < seed_rows; ++sr) {
            double ref = 0, mag = 0;
            for (uint64_t c = 0; c < cols; ++c) {
                const double p = static_cast<double>(qw.dequant[sr * cols + c]) * hq.d[(tok * cols + c) / 32] *
                                 hq.q[tok * cols + c];
                ref += p, mag += std::fabs(p);
            }
            for (uint64_t r = sr; r < rows; r += seed_rows) {
                const double got = y[tok * rows + r];
                if (!(std::fabs(got - ref) <= 1e-5 * mag + 1e-6) && bad++ < 5)
                    ADD_FAILURE() << "tok " << tok << " row " << r << ": " << got << " vs " << ref;
            }
        }
    }
    EXPECT_EQ(bad, 0);
}

TEST_P(CudaMatmulQ8Types, PathSwitchRunsTheChosenKernel) {
    DS4_REQUIRE_GPU();
    const GgmlType t = GetParam();
    const uint64_t rows = 40, cols = 512;
    const uint32_t n_tok = 2;
    const Quantized qw = quantize_rows(t, test::random_floats(rows * cols, 77), rows, cols);
    DeviceBuffer<uint8_t> dw = to_device<uint8_t>(qw.bytes);
    DeviceBuffer<float> dx = to_device<float>(test::random_floats(n_tok * cols, 78));
    DeviceBuffer<uint8_t> dq(q8_activation_bytes(cols, n_tok)), dq2(q8_activation_bytes(cols, n_tok));
    DeviceBuffer<float> y_exact(n_tok * rows), y_path_exact(n_tok * rows), y_fast(n_tok * rows),
        y_path_fast(n_tok * rows);
    matmul(t, dw.data(), rows, cols, dx.data(), cols, y_exact.data(), rows, n_tok, nullptr);
    matmul(t, dw.data(), rows, cols, dx.data(), cols, y_path_exact.data(), rows, n_tok, nullptr, MatmulPath::Exact,
           nullptr);
    quantize_q8_activations(dx.data(), cols, cols, n_tok, dq.data(), nullptr);
    matmul_q8(t, dw.data(), rows, cols, dq.data(), n_tok, y_fast.data(), rows, nullptr);
    matmul(t, dw.data(), rows, cols, dx.data(), cols, y_path_fast.data(), rows, n_tok, nullptr, MatmulPath::Fast,
           dq2.data());
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(y_exact.download(), y_path_exact.download());
    EXPECT_EQ(y_fast.download(), y_path_fast.download());
    EXPECT_NE(y_exact.download(), y_fast.download());
}

INSTANTIATE_TEST_SUITE_P(Types, CudaMatmulQ8Types,
                         ::testing::Values(GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS),
                         [](const ::testing::TestParamInfo<GgmlType>& p) { return ggml_type_name(p.param); });

TEST(CudaMatmulQ8, FastOnFloatTypesFallsBackToExact) {
    DS4_REQUIRE_GPU();
    const uint64_t rows = 20, cols = 256;
    std::vector<uint16_t> h(rows * cols);
    const std::vector<float> wf = test::random_floats(rows * cols, 3);
    for (size_t i = 0; i < h.size(); ++i) h[i] = quant::f32_to_f16(wf[i]);
    DeviceBuffer<uint16_t> dw = to_device<uint16_t>(h);
    DeviceBuffer<float> dx = to_device<float>(test::random_floats(cols, 4)), a(rows), b(rows);
    EXPECT_FALSE(matmul_q8_supported(GgmlType::F16));
    matmul(GgmlType::F16, dw.data(), rows, cols, dx.data(), cols, a.data(), rows, 1, nullptr);
    matmul(GgmlType::F16, dw.data(), rows, cols, dx.data(), cols, b.data(), rows, 1, nullptr, MatmulPath::Fast,
           nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(a.download(), b.download());
}

TEST(CudaMatmulQ8, RejectsBadArguments) {
    DS4_REQUIRE_GPU();
    DeviceBuffer<uint8_t> w(1 << 16), q(q8_activation_bytes(512, 1));
    DeviceBuffer<float> x(512), y(16);
    EXPECT_THROW(matmul_q8(GgmlType::F16, w.data(), 4, 512, q.data(), 1, y.data(), 4, nullptr), Error);
    EXPECT_THROW(matmul_q8(GgmlType::Q2_K, w.data(), 4, 250, q.data(), 1, y.data(), 4, nullptr), Error);
    EXPECT_THROW(quantize_q8_activations(x.data(), 250, 250, 1, q.data(), nullptr), Error);
    EXPECT_THROW(matmul(GgmlType::Q4_K, w.data(), 4, 512, x.data(), 512, y.data(), 4, 1, nullptr, MatmulPath::Fast,
                        nullptr),
                 Error);
}

}  // namespace
}  // namespace ds4::cuda
