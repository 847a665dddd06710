// Element-wise CUDA kernels vs the CPU implementations in src/cpu/numerics.cpp (and the
// MoE SwiGLU clamp / attention sink softmax formulas). Rounding-only differences remain:
// CUDA's expf/sqrtf vs glibc, and double vs f32 accumulation order in reductions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/numerics.h"
#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda_test_util.h"
#include "model/hparams.h"

namespace ds4::cuda {
namespace {

void expect_close(const std::vector<float>& got, const std::vector<float>& want, float rel, float abs_tol,
                  const char* what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    int bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        const float tol = abs_tol + rel * std::fabs(want[i]);
        if (!(std::fabs(got[i] - want[i]) <= tol) && bad++ < 5)
            ADD_FAILURE() << what << " [" << i << "]: " << got[i] << " vs " << want[i];
    }
    EXPECT_EQ(bad, 0) << what;
}

TEST(CudaElementwise, RmsNormWeightedAndPlain) {
    DS4_REQUIRE_GPU();
    const uint32_t n = 4096, rows = 5;
    const std::vector<float> x = test::random_floats(n * rows, 1, -3.f, 3.f);
    const std::vector<float> w = test::random_floats(n, 2, 0.5f, 1.5f);
    std::vector<float> want(x.size()), want_plain = x;
    for (uint32_t r = 0; r < rows; ++r) {
        cpu::rms_norm(x.data() + r * n, w.data(), n, 1e-6f, want.data() + r * n);
        cpu::rms_norm_inplace(want_plain.data() + r * n, n, 1e-6f);
    }
    DeviceBuffer<float> dx = to_device<float>(x), dw = to_device<float>(w), dy(x.size());
    dy.fill_bytes(0xff);
    rms_norm(dx.data(), dw.data(), dy.data(), n, rows, 1e-6f, nullptr);
    expect_close(dy.download(), want, 1e-6f, 0, "rms_norm");
    rms_norm(dx.data(), nullptr, dx.data(), n, rows, 1e-6f, nullptr);  // in place
    expect_close(dx.download(), want_plain, 1e-6f, 0, "rms_norm in place");
}

TEST(CudaElementwise, RopeForwardAndInverseOnBothLayerKinds) {
    DS4_REQUIRE_GPU();
    const model::Hparams hp;  // V4 Flash defaults: rope_dim 64, YaRN on compressed layers
    const uint32_t head = 512, n_vec = 8;
    for (const uint32_t ratio : {0u, 4u}) {
        for (const bool inverse : {false, true}) {
            const cpu::RopeFreqs f = cpu::RopeFreqs::for_layer(hp, ratio);
            cpu::RopeAngles a;
            const uint64_t pos = 12345;
            a.compute(f, pos);
            std::vector<float> x = test::random_floats(head * n_vec, 3 + ratio);
            std::vector<float> want = x;
            const uint32_t off = head - hp.rope_dim;
            for (uint32_t v = 0; v < n_vec; ++v) cpu::rope_rotate(want.data() + v * head + off, a, inverse);
            DeviceBuffer<float> dx = to_device<float>(x), om = to_device<float>(f.omega);
            rope(dx.data() + off, n_vec, head, om.data(), static_cast<uint32_t>(f.omega.size()), pos, inverse,
                 nullptr);
            expect_close(dx.download(), want, 1e-6f, 1e-7f, "rope");
        }
    }
}

TEST(CudaElementwise, Fp8AndFp4SimulationAreExact) {
    DS4_REQUIRE_GPU();
    std::vector<float> x = test::random_floats(64 * 50, 5, -4.f, 4.f);
    for (size_t i = 0; i < x.size(); i += 97) x[i] *= 1e-3f;  // mixed block ranges
    std::fill_n(x.begin() + 64, 64, 0.0f);                    // an all-zero block (amax floor)
    std::vector<float> want8 = x, want4 = x;
    cpu::fp8_simulate(want8.data(), want8.size());
    cpu::fp4_simulate(want4.data(), want4.size());
    DeviceBuffer<float> d8 = to_device<float>(x), d4 = to_device<float>(x);
    fp8_simulate(d8.data(), x.size(), nullptr);
    fp4_simulate(d4.data(), x.size(), nullptr);
    expect_close(d8.download(), want8, 0, 0, "fp8");  // pure rounding logic: bit-exact
    expect_close(d4.download(), want4, 0, 0, "fp4");
    EXPECT_THROW(fp8_simulate(d8.data(), 100, nullptr), Error);
}

TEST(CudaElementwise, HadamardMatchesCpu) {
    DS4_REQUIRE_GPU();
    for (const uint32_t n : {2u, 64u, 128u, 1024u}) {
        const uint32_t n_vec = 3;
        std::vector<float> x = test::random_floats(n * n_vec, 6 + n);
        std::vector<float> want = x;
        for (uint32_t v = 0; v < n_vec; ++v) cpu::hadamard_scaled(want.data() + v * n, n);
        DeviceBuffer<float> dx = to_device<float>(x);
        hadamard_scaled(dx.data(), n, n_vec, nullptr);
        expect_close(dx.download(), want, 0, 0, "hadamard");  // double butterflies: exact
    }
    EXPECT_THROW(hadamard_scaled(nullptr, 48, 1, nullptr), Error);
}

TEST(CudaElementwise, SinkhornMatchesCpu) {
    DS4_REQUIRE_GPU();
    const uint32_t h = 4, n_mat = 37, iters = 20;
    const std::vector<float> c = test::random_floats(h * h * n_mat, 7, -2.f, 2.f);
    std::vector<float> want = c;
    for (uint32_t m = 0; m < n_mat; ++m) cpu::sinkhorn(want.data() + m * h * h, h, iters, 1e-6f);
    DeviceBuffer<float> dc = to_device<float>(c);
    sinkhorn(dc.data(), h, iters, 1e-6f, n_mat, nullptr);
    expect_close(dc.download(), want, 2e-6f, 1e-7f, "sinkhorn");
}

TEST(CudaElementwise, SwigluClamp) {
    DS4_REQUIRE_GPU();
    const size_t n = 3000;
    const std::vector<float> g = test::random_floats(n, 8, -12.f, 12.f);
    const std::vector<float> u = test::random_floats(n, 9, -12.f, 12.f);
    for (const float limit : {0.0f, 7.0f}) {
        std::vector<float> want(n);
        for (size_t i = 0; i < n; ++i) {
            float gv = g[i], uv = u[i];
            if (limit > 0) {
                uv = std::clamp(uv, -limit, limit);
                gv = std::min(gv, limit);
            }
            want[i] = cpu::silu(gv) * uv;
        }
        DeviceBuffer<float> dg = to_device<float>(g), du = to_device<float>(u), dy(n);
        swiglu_clamp(dg.data(), du.data(), dy.data(), n, limit, nullptr);
        expect_close(dy.download(), want, 1e-6f, 1e-7f, "swiglu");
    }
}

TEST(CudaElementwise, SoftmaxWithSinks) {
    DS4_REQUIRE_GPU();
    const uint32_t n = 700, n_head = 6;
    const std::vector<float> s = test::random_floats(n * n_head, 10, -8.f, 8.f);
    const std::vector<float> sinks = test::random_floats(n_head, 11, -2.f, 10.f);
    std::vector<float> want(s.size());
    for (uint32_t h = 0; h < n_head; ++h) {
        const float* row = s.data() + h * n;
        const float m = *std::max_element(row, row + n);
        double den = 0;
        for (uint32_t i = 0; i < n; ++i) den += std::exp(static_cast<double>(row[i]) - m);
        den += std::exp(static_cast<double>(sinks[h]) - m);
        for (uint32_t i = 0; i < n; ++i) want[h * n + i] = static_cast<float>(std::exp(static_cast<double>(row[i]) - m) / den);
    }
    DeviceBuffer<float> ds = to_device<float>(s), dk = to_device<float>(sinks);
    softmax_sinks(ds.data(), dk.data(), n, n_head, nullptr);
    const std::vector<float> got = ds.download();
    expect_close(got, want, 1e-5f, 1e-9f, "softmax_sinks");
    for (uint32_t h = 0; h < n_head; ++h) {  // the sink's share is what is missing from 1
        double sum = 0;
        for (uint32_t i = 0; i < n; ++i) sum += got[h * n + i];
        EXPECT_LT(sum, 1.0);
    }
}

}  // namespace
}  // namespace ds4::cuda
