// Numerics::Fast products against the exact path on the same quantized weights.
//
// What the fast path must compute (formats.md §3.7): W·x̂ where x̂ is the activation
// after Q8_0F (Q8_0 weights) or Q8_K (Q2_K / Q4_K / IQ2_XXS) quantization, and plain
// f32-accumulated W·x for F16. So each op is checked twice:
//  1. against W_decoded · x̂ summed in double: only f32 rounding of the block sums may
//     differ (bound 1e-5 of Σ|w·x̂|);
//  2. against the exact path (decoded W, f32 x): the difference is the activation
//     quantization error. Round-to-nearest with step s = amax/127 leaves a uniform error
//     of RMS s/√12; for Gaussian inputs amax ≈ 2.1σ over 32 values (Q8_0F) and ≈ 2.8σ
//     over 256 (Q8_K), i.e. ≈ 0.48 % and ≈ 0.64 % of the input RMS. A random W carries
//     that relative error to y unchanged, so ‖Δy‖/‖y‖ sits near those values; the bounds
//     below are ~1.6× the expectation (measured values are printed).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>

#include "cpu/matvec.h"
#include "cpu/moe_fast.h"
#include "cpu/numerics.h"
#include "cpu/quant_matvec.h"
#include "ds4/error.h"
#include "fast_test_util.h"
#include "quant/kernels.h"

namespace ds4::cpu::test {
namespace {

constexpr uint64_t kIn = 1024, kOut = 96;

std::vector<float> run_matvec(const TensorView& w, const std::vector<float>& x, Numerics mode,
                              ThreadPool* pool = nullptr) {
    NumericsScope scope(mode);
    std::vector<float> y(w.out());
    matvec(w, x.data(), y.data(), pool);
    return y;
}

// x̂: the activation as the fast path sees it.
std::vector<float> quantized_activation(GgmlType wt, const std::vector<float>& x) {
    std::vector<float> xh(x.size());
    const auto n = static_cast<int64_t>(x.size());
    if (wt == GgmlType::Q8_0) {
        std::vector<quant::BlockQ8_0F> q(x.size() / quant::QK8_0);
        quant::quantize_row_q8_0f(x.data(), q.data(), n);
        for (size_t i = 0; i < x.size(); ++i) xh[i] = q[i / quant::QK8_0].d * q[i / quant::QK8_0].qs[i % quant::QK8_0];
    } else if (is_q8K_weight(wt)) {
        std::vector<quant::BlockQ8K> q(x.size() / quant::QK_K);
        quant::quantize_row_q8_K(x.data(), q.data(), n);
        for (size_t i = 0; i < x.size(); ++i) xh[i] = q[i / quant::QK_K].d * q[i / quant::QK_K].qs[i % quant::QK_K];
    } else {
        xh = x;
    }
    return xh;
}

class FastOp : public ::testing::TestWithParam<GgmlType> {};

TEST_P(FastOp, ComputesTheQuantizedActivationProduct) {
    const GgmlType t = GetParam();
    const RandomWeights w(t, kIn, kOut, 11);
    const auto x = random_vector(kIn, 12);
    const auto y = run_matvec(w.view, x, Numerics::Fast);
    const auto xh = quantized_activation(t, x);
    std::vector<float> row(kIn);
    for (uint64_t r = 0; r < kOut; ++r) {
        quant::dequantize_row(t, w.view.row(r), row.data(), kIn);
        double ref = 0, mag = 0;
        for (uint64_t k = 0; k < kIn; ++k) {
            ref += double(row[k]) * xh[k];
            mag += std::fabs(double(row[k]) * xh[k]);
        }
        ASSERT_NEAR(y[r], ref, 1e-5 * mag) << ggml_type_name(t) << " row " << r;
    }
}

double expected_error_bound(GgmlType t) {
    if (t == GgmlType::Q8_0) return 0.008;  // ≈ 0.48 % expected
    if (t == GgmlType::F16) return 1e-5;    // f32 rounding only
    return 0.010;                           // Q8_K: ≈ 0.64 % expected
}

TEST_P(FastOp, DiffersFromExactByTheActivationQuantizationError) {
    const GgmlType t = GetParam();
    const RandomWeights w(t, kIn, kOut, 21);
    const auto x = random_vector(kIn, 22);
    const auto fast = run_matvec(w.view, x, Numerics::Fast);
    const auto exact = run_matvec(w.view, x, Numerics::Exact);
    const double err = rel_l2(fast, exact);
    std::cout << "[fast-op] " << ggml_type_name(t) << ": |fast - exact| / |exact| = " << err << "\n";
    EXPECT_LE(err, expected_error_bound(t));
    EXPECT_GT(err, 0.0);  // the fast path really ran
}

// A chunk computes every token as a one-token product would, whatever the thread count.
TEST_P(FastOp, ChunkAndThreadCountDoNotChangeBits) {
    const GgmlType t = GetParam();
    const RandomWeights w(t, kIn, kOut, 31);
    constexpr uint32_t kTok = 5;
    const auto x = random_vector(kIn * kTok, 32);
    std::vector<float> single(kTok * kOut);
    for (uint32_t i = 0; i < kTok; ++i) {
        const std::vector<float> xi(x.begin() + i * kIn, x.begin() + (i + 1) * kIn);
        const auto y = run_matvec(w.view, xi, Numerics::Fast);
        std::copy(y.begin(), y.end(), single.begin() + i * kOut);
    }
    for (unsigned threads : {1u, 2u, 3u}) {
        ThreadPool pool(threads);
        std::vector<float> chunk(kTok * kOut);
        matmul(w.view, kTok, x.data(), kIn, chunk.data(), kOut, &pool);
        EXPECT_EQ(chunk, single) << ggml_type_name(t) << " with " << threads << " threads";
    }
}

// The exact path on the same weights: the reference-decoded row dotted with f32 x in the
// golden accumulation order (dot_f32), bit for bit, on every thread count.
TEST_P(FastOp, ExactPathIsTheDecodedRowProduct) {
    const GgmlType t = GetParam();
    const RandomWeights w(t, kIn, kOut, 61);
    const auto x = random_vector(kIn, 62);
    std::vector<float> row(kIn), ref(kOut);
    for (uint64_t r = 0; r < kOut; ++r) {
        quant::dequantize_row(t, w.view.row(r), row.data(), kIn);
        ref[r] = dot_f32(row.data(), x.data(), kIn);
    }
    ThreadPool pool(2);
    EXPECT_EQ(run_matvec(w.view, x, Numerics::Exact), ref);
    EXPECT_EQ(run_matvec(w.view, x, Numerics::Exact, &pool), ref);
}

INSTANTIATE_TEST_SUITE_P(Types, FastOp,
                         ::testing::Values(GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS,
                                           GgmlType::F16),
                         [](const auto& param_info) { return ggml_type_name(param_info.param); });

// Q8_0 rows go through the multi-row kernel kDotRows at a time (with single-row tails
// where a thread's range is not a multiple): every element must equal the single-row
// kernel's dot bit for bit, for row counts and offsets that leave every tail length.
TEST(FastNumerics, Q80MultiRowMatvecEqualsSingleRowDots) {
    constexpr uint64_t kRows = 103;
    const RandomWeights w(GgmlType::Q8_0, kIn, kRows, 71);
    const auto x = random_vector(kIn, 72);
    std::vector<quant::BlockQ8_0F> xq(kIn / quant::QK8_0);
    quant::quantize_row_q8_0f(x.data(), xq.data(), static_cast<int64_t>(kIn));
    std::vector<float> ref(kRows);
    for (uint64_t r = 0; r < kRows; ++r)
        ref[r] = quant::best_kernels().dot_q8_0_q8_0f(static_cast<const quant::BlockQ8_0*>(w.view.row(r)), xq.data(),
                                                      static_cast<int64_t>(kIn));
    NumericsScope scope(Numerics::Fast);
    for (unsigned threads : {1u, 2u, 3u}) {
        ThreadPool pool(threads);
        for (uint64_t row0 : {0u, 1u, 2u, 3u, 5u}) {
            const uint64_t n = kRows - row0 - (row0 % 3);
            std::vector<float> y(n);
            matvec_rows(w.view, row0, n, x.data(), y.data(), &pool);
            for (uint64_t i = 0; i < n; ++i)
                ASSERT_EQ(y[i], ref[row0 + i]) << "row " << row0 + i << ", " << threads << " threads, row0 " << row0;
        }
    }
}

TEST(FastNumerics, F32WeightsAlwaysTakeTheExactPath) {
    EXPECT_FALSE(has_fast_path(GgmlType::F32));
    const RandomWeights w(GgmlType::F32, kIn, kOut, 41);
    const auto x = random_vector(kIn, 42);
    EXPECT_EQ(run_matvec(w.view, x, Numerics::Fast), run_matvec(w.view, x, Numerics::Exact));
}

TEST(FastNumerics, ScopeSetsAndRestoresTheMode) {
    EXPECT_EQ(numerics(), Numerics::Fast);
    {
        NumericsScope exact(Numerics::Exact);
        EXPECT_EQ(numerics(), Numerics::Exact);
        {
            NumericsScope fast(Numerics::Fast);
            EXPECT_EQ(numerics(), Numerics::Fast);
        }
        EXPECT_EQ(numerics(), Numerics::Exact);
    }
    EXPECT_EQ(numerics(), Numerics::Fast);
}

// ---- routed experts ----

constexpr uint64_t kDim = 512, kFf = 512;
constexpr uint32_t kExperts = 8, kUsed = 3, kTok = 4;

struct MoeFixture {
    RandomWeights gate{GgmlType::IQ2_XXS, kDim, kFf, 51, kExperts};
    RandomWeights up{GgmlType::IQ2_XXS, kDim, kFf, 52, kExperts};
    RandomWeights down{GgmlType::Q2_K, kFf, kDim, 53, kExperts};
    ExpertWeights w{gate.view, up.view, down.view};
    std::vector<float> x = random_vector(kTok * kDim, 54);
    // token 3 lists expert 5 twice: it must count once (first weight)
    std::vector<uint32_t> sel{0, 5, 7, 5, 2, 1, 7, 0, 3, 5, 6, 5};
    std::vector<float> sel_w{0.5f, 0.3f, 0.7f, 1.1f, 0.2f, 0.4f, 0.9f, 0.6f, 0.3f, 0.8f, 0.5f, 0.1f};

    std::vector<float> run_fast(ThreadPool* pool) const {
        std::vector<float> out(kTok * kDim, -1.0f);
        fast_routed_experts({&w, kTok, kUsed, kDim, kFf, 10.0f, x.data(), sel.data(), sel_w.data(), out.data()},
                            pool);
        return out;
    }

    // Decoded weights, f32 activations, double sums: the exact semantics.
    std::vector<float> reference() const {
        std::vector<float> out(kTok * kDim, 0.0f), g(kDim), u(kDim), d(kFf), mid(kFf);
        for (uint32_t t = 0; t < kTok; ++t)
            for (uint32_t k = 0; k < kUsed; ++k) {
                const uint32_t e = sel[t * kUsed + k];
                if (std::find(sel.begin() + t * kUsed, sel.begin() + t * kUsed + k, e) != sel.begin() + t * kUsed + k)
                    continue;
                const float* xt = x.data() + t * kDim;
                for (uint64_t r = 0; r < kFf; ++r) {
                    quant::dequantize_row(GgmlType::IQ2_XXS, gate.view.row(e * kFf + r), g.data(), kDim);
                    quant::dequantize_row(GgmlType::IQ2_XXS, up.view.row(e * kFf + r), u.data(), kDim);
                    double gv = 0, uv = 0;
                    for (uint64_t i = 0; i < kDim; ++i) gv += double(g[i]) * xt[i], uv += double(u[i]) * xt[i];
                    const float uc = std::clamp(float(uv), -10.0f, 10.0f), gc = std::min(float(gv), 10.0f);
                    mid[r] = sel_w[t * kUsed + k] * silu(gc) * uc;
                }
                for (uint64_t r = 0; r < kDim; ++r) {
                    quant::dequantize_row(GgmlType::Q2_K, down.view.row(e * kDim + r), d.data(), kFf);
                    double acc = 0;
                    for (uint64_t i = 0; i < kFf; ++i) acc += double(d[i]) * mid[i];
                    out[t * kDim + r] += float(acc);
                }
            }
        return out;
    }
};

// Two activation quantizations compound. The hidden row silu(g)·u is a product of two
// near-Gaussians, heavy-tailed (amax ≈ 5.5 RMS over 256 values), so its Q8_K step is
// larger relative to its RMS: ≈ 5.5/127/√12 ≈ 1.25 %; the input's 0.64 % reaches the
// output through both gate and up (≈ 0.9 %); in quadrature ≈ 1.5 %. Measured 1.81 %
// (printed); bound 2.7 % (1.5×).
TEST(FastMoe, MatchesTheExactExpertSumWithinQuantizationError) {
    const MoeFixture f;
    const auto fast = f.run_fast(nullptr);
    const auto ref = f.reference();
    const double err = rel_l2(fast, ref);
    std::cout << "[fast-moe] IQ2_XXS/Q2_K experts: |fast - exact| / |exact| = " << err << "\n";
    EXPECT_LE(err, 0.027);
    EXPECT_GT(err, 0.0);
}

TEST(FastMoe, ThreadCountDoesNotChangeBits) {
    const MoeFixture f;
    const auto single = f.run_fast(nullptr);
    for (unsigned threads : {2u, 3u}) {
        ThreadPool pool(threads);
        EXPECT_EQ(f.run_fast(&pool), single) << threads << " threads";
    }
}

TEST(FastMoe, RejectsWidthsThatAreNotWholeQ8KBlocks) {
    const MoeFixture f;
    std::vector<float> out(kTok * kDim);
    const RoutedExpertsJob job{&f.w, kTok, kUsed, kDim, 100, 10.0f, f.x.data(), f.sel.data(), f.sel_w.data(),
                               out.data()};
    EXPECT_THROW(fast_routed_experts(job, nullptr), Error);
}

}  // namespace
}  // namespace ds4::cpu::test
