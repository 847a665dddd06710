// Tensor-core products (cuda/matmul_mma.h) on repacked Q8_0 rows against
//  1. the device's own int8 activations dequantized (d·q) and dotted in double with the
//     reference weights: each 32-block's integer dot is exact, so only the f32 scaling
//     and summing differ (1e-5 of Σ|w·x̂|);
//  2. the f32 activations (the exact path's input) and the exact kernel matmul_q8r: the
//     bound of matmul_q8.h, Σ_i |w_i| · d_x(i)/2, plus f32 rounding;
// for rows and token counts that are not multiples of the tiles (128 rows, 32/64 tokens),
// both spans (512 and 256 columns); and a token's bits alone equal its bits in a batch.
// The half path: its activations (f16(x · 2^e) in the codes' places, 2^−e per token)
// read back and checked, and its products within 2^−10 · Σ|w·x| of the f64 product.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/matmul_mma.h"
#include "cuda/matmul_q8.h"
#include "cuda_test_util.h"
#include "quant/reference.h"

namespace ds4::cuda {
namespace {

struct Q8Rows {
    std::vector<uint8_t> bytes;  // GGUF rows
    std::vector<float> dequant;  // reference values
};

Q8Rows make_rows(uint64_t rows, uint64_t cols, uint32_t seed) {
    const std::vector<float> w = test::random_floats(rows * cols, seed);
    const uint64_t rb = cols / 32 * 34;
    Q8Rows m{std::vector<uint8_t>(rows * rb), std::vector<float>(rows * cols)};
    for (uint64_t r = 0; r < rows; ++r) {
        auto* b = reinterpret_cast<quant::BlockQ8_0*>(m.bytes.data() + r * rb);
        quant::ref::quantize_q8_0(w.data() + r * cols, b, static_cast<int64_t>(cols));
        quant::ref::dequant_q8_0(b, m.dequant.data() + r * cols, static_cast<int64_t>(cols));
    }
    return m;
}

// The device's int8 activations as values d·q and per-value steps d, read from the
// layout matmul_mma.h documents (codes in q8r order, scales by q8r block then token), and
// checked against quantize_q8_activations' output (the same rule, its own layout).
struct HostActs {
    std::vector<double> xhat, d;
};
HostActs unpack(const std::vector<uint8_t>& raw, const std::vector<uint8_t>& q8, uint64_t cols, uint32_t n_tok) {
    const uint64_t n_pad = (n_tok + 63) / 64 * 64, S = cols % 512 == 0 ? 512 : 256, K = S / 128;
    EXPECT_GE(raw.size(), n_pad * cols / 32 * 36);
    HostActs h{std::vector<double>(n_tok * cols), std::vector<double>(n_tok * cols)};
    const uint64_t tb = q8_token_bytes(cols);
    int mismatched = 0;
    for (uint32_t t = 0; t < n_pad; ++t) {
        for (uint64_t c = 0; c < cols; ++c) {
            const uint64_t s = c / S, in = c % S, k = in / 128, l = in % 128 / 4, j = in % 4;
            const uint64_t b = in / 32, bk = b / 4, bg = b % 4;
            const auto q = static_cast<int8_t>(raw[t * cols + s * S + 4 * K * l + 4 * k + j]);
            float d = 0;
            std::memcpy(&d, raw.data() + n_pad * cols + 4 * ((s * 4 * K + bg * K + bk) * n_pad + t), 4);
            if (t >= n_tok) {  // padding: zeros
                mismatched += q != 0 || d != 0.f;
                continue;
            }
            h.d[t * cols + c] = d;
            h.xhat[t * cols + c] = static_cast<double>(d) * q;
            float d8 = 0;
            std::memcpy(&d8, q8.data() + t * tb + cols + 8 * (c / 32), 4);
            mismatched += q != static_cast<int8_t>(q8[t * tb + c]) || d != d8;
        }
    }
    EXPECT_EQ(mismatched, 0) << "the mma activations differ from quantize_q8_activations'";
    return h;
}

struct Run {
    std::vector<float> y;
    std::vector<uint8_t> xq, q8;  // the kernel's activations, quantize_q8_activations' (same rule)
};
Run run_mma(const DeviceBuffer<uint8_t>& w, uint64_t rows, uint64_t cols, const std::vector<float>& x,
            uint32_t n_tok) {
    DeviceBuffer<float> dx = to_device<float>(x);
    DeviceBuffer<uint8_t> dq(mma_activation_bytes(cols, n_tok)), d8(q8_activation_bytes(cols, n_tok));
    DeviceBuffer<float> dy(n_tok * rows);
    dy.fill_bytes(0xff);  // NaN poison: every output must be written
    dq.fill_bytes(0x55);  // the padding tokens must be written too
    quantize_mma_activations(dx.data(), cols, cols, n_tok, dq.data(), nullptr);
    quantize_q8_activations(dx.data(), cols, cols, n_tok, d8.data(), nullptr);
    matmul_q8r_mma(w.data(), rows, cols, dq.data(), n_tok, dy.data(), rows, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    return {dy.download(), dq.download(), d8.download()};
}

void check_shape(uint64_t rows, uint64_t cols, uint32_t n_tok, uint32_t seed) {
    SCOPED_TRACE(cat("rows=", rows, " cols=", cols, " n_tok=", n_tok));
    const Q8Rows m = make_rows(rows, cols, seed);
    const std::vector<float> x = test::random_floats(n_tok * cols, seed + 1, -2.f, 2.f);
    DeviceBuffer<uint8_t> w = to_device<uint8_t>(m.bytes);
    q8r_repack(w.data(), rows, cols, nullptr);
    const Run got = run_mma(w, rows, cols, x, n_tok);
    const HostActs h = unpack(got.xq, got.q8, cols, n_tok);

    DeviceBuffer<float> dx = to_device<float>(x), dy(n_tok * rows);
    matmul_q8r(w.data(), rows, cols, dx.data(), cols, dy.data(), rows, n_tok, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> exact = dy.download();

    int bad = 0;
    double worst = 0;  // |mma − f32 ref| / bound, reported
    for (uint32_t t = 0; t < n_tok; ++t) {
        for (uint64_t r = 0; r < rows; ++r) {
            double ref_q = 0, mag_q = 0, ref_f = 0, mag_f = 0, step = 0;
            for (uint64_t c = 0; c < cols; ++c) {
                const double wv = m.dequant[r * cols + c];
                const double pq = wv * h.xhat[t * cols + c], pf = wv * x[t * cols + c];
                ref_q += pq, mag_q += std::fabs(pq);
                ref_f += pf, mag_f += std::fabs(pf);
                step += std::fabs(wv) * h.d[t * cols + c] / 2;
            }
            const double y = got.y[t * rows + r], ye = exact[t * rows + r];
            const double tol_q = 1e-5 * mag_q + 1e-6, bound = step + 1e-5 * (mag_q + mag_f) + 1e-6;
            worst = std::max(worst, std::fabs(y - ref_f) / bound);
            const bool ok = std::fabs(y - ref_q) <= tol_q && std::fabs(y - ref_f) <= bound &&
                            std::fabs(y - ye) <= bound;
            if (!ok && bad++ < 5)
                ADD_FAILURE() << "tok " << t << " row " << r << ": mma " << y << ", int8-activation ref " << ref_q
                              << " (tol " << tol_q << "), f32 ref " << ref_f << ", matmul_q8r " << ye << " (bound "
                              << bound << ")";
        }
    }
    EXPECT_EQ(bad, 0);
    EXPECT_GT(worst, 0.0);  // it does round the activations
    std::printf("mma rows=%llu cols=%llu n_tok=%u: worst |mma - f32 ref| / bound = %.3f\n",
                static_cast<unsigned long long>(rows), static_cast<unsigned long long>(cols), n_tok, worst);
}

TEST(CudaMatmulMma, MatchesReferencesWithinActivationRounding) {
    DS4_REQUIRE_GPU();
    if (!mma_applies(uint64_t{1} << 20, 1u << 20, 0)) GTEST_SKIP() << "no int8 mma (sm < 80)";
    const test::MmaPrecisionScope scope(MmaPrecision::Int8);
    uint32_t seed = 300;
    for (uint32_t n_tok : {1u, 16u, 17u, 31u, 32u, 33u, 64u, 65u, 130u}) check_shape(67, 1024, n_tok, seed++);
    check_shape(1, 256, 5, seed++);      // one 256-column span, one row
    check_shape(300, 768, 40, seed++);   // 3 spans of 256, two row tiles and a partial one
    check_shape(128, 1536, 64, seed++);  // 3 spans of 512, exact tiles
    check_shape(200, 4096, 19, seed++);  // the model's width
    check_shape(3, 8192, 70, seed++);
}

// f16 bits → value (normal, subnormal, zero; the test's inputs are finite).
double half_value(uint16_t h) {
    const int e = (h >> 10) & 31, m = h & 1023;
    const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
    return (h & 0x8000) != 0 ? -v : v;
}

// The half path's activations read back: per token the scale 2^−e with the largest |x|
// times 2^e in [2^14, 2^15), each value f16(x · 2^e) (within half an f16 step) at its
// code's q8r place, padding tokens zero; returns the values x̂ = f16(x · 2^e) · 2^−e.
std::vector<double> unpack_half(const std::vector<uint8_t>& raw, const std::vector<float>& x, uint64_t cols,
                                uint32_t n_tok) {
    const uint64_t n_pad = (n_tok + 63) / 64 * 64, S = cols % 512 == 0 ? 512 : 256, K = S / 128;
    std::vector<double> xhat(n_tok * cols);
    int bad = 0;
    for (uint32_t t = 0; t < n_pad; ++t) {
        float inv = 0;
        std::memcpy(&inv, raw.data() + 2 * n_pad * cols + 4 * t, 4);
        double amax = 0;
        for (uint64_t c = 0; t < n_tok && c < cols; ++c) amax = std::max(amax, std::fabs(double{x[t * cols + c]}));
        const double scaled = amax / inv;
        if (t < n_tok ? !(scaled >= 16384 && scaled < 32768) : inv != 1.f) ++bad;
        for (uint64_t c = 0; c < cols; ++c) {
            const uint64_t s = c / S, in = c % S, k = in / 128, l = in % 128 / 4, j = in % 4;
            uint16_t h = 0;
            std::memcpy(&h, raw.data() + 2 * (t * cols + s * S + 4 * K * l + 4 * k + j), 2);
            const double v = half_value(h);
            if (t >= n_tok) {
                bad += h != 0;
                continue;
            }
            const double want = x[t * cols + c] / double{inv};
            bad += std::fabs(v - want) > std::ldexp(std::fabs(want), -11) + std::ldexp(1.0, -25);
            xhat[t * cols + c] = v * inv;
        }
    }
    EXPECT_EQ(bad, 0) << "the half activations are not f16(x · 2^e) in the q8r order";
    return xhat;
}

void check_half_shape(uint64_t rows, uint64_t cols, uint32_t n_tok, uint32_t seed) {
    SCOPED_TRACE(cat("half rows=", rows, " cols=", cols, " n_tok=", n_tok));
    const Q8Rows m = make_rows(rows, cols, seed);
    // a wide range of magnitudes per token (the power-of-two scaling must keep them)
    std::vector<float> x = test::random_floats(n_tok * cols, seed + 1, -2.f, 2.f);
    for (uint32_t t = 0; t < n_tok; ++t)
        for (uint64_t c = 0; c < cols; ++c) x[t * cols + c] *= std::ldexp(1.f, static_cast<int>(t % 7) * 9 - 30);
    DeviceBuffer<uint8_t> w = to_device<uint8_t>(m.bytes);
    q8r_repack(w.data(), rows, cols, nullptr);
    const Run got = run_mma(w, rows, cols, x, n_tok);
    const std::vector<double> xhat = unpack_half(got.xq, x, cols, n_tok);
    int bad = 0;
    double worst = 0;
    for (uint32_t t = 0; t < n_tok; ++t) {
        for (uint64_t r = 0; r < rows; ++r) {
            double ref = 0, mag = 0, ref_h = 0;
            for (uint64_t c = 0; c < cols; ++c) {
                const double wv = m.dequant[r * cols + c], p = wv * x[t * cols + c];
                ref += p, mag += std::fabs(p);
                ref_h += wv * xhat[t * cols + c];
            }
            const double y = got.y[t * rows + r], bound = std::ldexp(mag, -10) + 1e-30;
            worst = std::max(worst, std::fabs(y - ref) / bound);
            if (!(std::fabs(y - ref) <= bound) && bad++ < 5)
                ADD_FAILURE() << "tok " << t << " row " << r << ": half mma " << y << ", f64 ref " << ref
                              << " (bound " << bound << "), with the f16 activations " << ref_h;
        }
    }
    EXPECT_EQ(bad, 0);
    std::printf("half mma rows=%llu cols=%llu n_tok=%u: worst |mma - f64 ref| / (2^-10 sum|w x|) = %.4f\n",
                static_cast<unsigned long long>(rows), static_cast<unsigned long long>(cols), n_tok, worst);
}

TEST(CudaMatmulMma, HalfMatchesReferences) {
    DS4_REQUIRE_GPU();
    if (!mma_applies(uint64_t{1} << 20, 1u << 20, 0)) GTEST_SKIP() << "no mma (sm < 80)";
    const test::MmaPrecisionScope scope(MmaPrecision::Half);
    uint32_t seed = 700;
    for (uint32_t n_tok : {1u, 17u, 32u, 33u, 64u, 65u, 130u}) check_half_shape(67, 1024, n_tok, seed++);
    check_half_shape(1, 256, 5, seed++);
    check_half_shape(300, 768, 40, seed++);
    check_half_shape(128, 1536, 64, seed++);
    check_half_shape(200, 4096, 19, seed++);
    check_half_shape(3, 8192, 70, seed++);
}

// Per (row, token) the blocks add in a fixed order whatever the tile: one token alone
// gives the same bits as inside a batch of 97 (two token tiles and a partial one), on
// both paths.
TEST(CudaMatmulMma, TokenResultsDoNotDependOnTheBatch) {
    DS4_REQUIRE_GPU();
    if (!mma_applies(uint64_t{1} << 20, 1u << 20, 0)) GTEST_SKIP() << "no int8 mma (sm < 80)";
    for (const MmaPrecision prec : {MmaPrecision::Int8, MmaPrecision::Half})
    for (const auto& [rows, cols] : {std::pair<uint64_t, uint64_t>{300, 4096}, {70, 768}}) {
        const test::MmaPrecisionScope scope(prec);
        SCOPED_TRACE(cat(test::precision_name(prec), " rows=", rows, " cols=", cols));
        const Q8Rows m = make_rows(rows, cols, static_cast<uint32_t>(rows + cols));
        DeviceBuffer<uint8_t> w = to_device<uint8_t>(m.bytes);
        q8r_repack(w.data(), rows, cols, nullptr);
        constexpr uint32_t kTok = 97;
        const std::vector<float> x = test::random_floats(kTok * cols, 9);
        const std::vector<float> all = run_mma(w, rows, cols, x, kTok).y;
        for (uint32_t t : {0u, 31u, 32u, 63u, 64u, 96u}) {
            const std::vector<float> xt(x.begin() + t * cols, x.begin() + (t + 1) * cols);
            const std::vector<float> one = run_mma(w, rows, cols, xt, 1).y;
            ASSERT_EQ(0, std::memcmp(one.data(), all.data() + t * rows, rows * sizeof(float))) << "token " << t;
        }
    }
}

// Decode-sized passes keep the matvec kernels (their batch-of-4 == one-by-one bits),
// whatever the rows; so do small products.
TEST(CudaMatmulMma, ThresholdKeepsSmallPassesOnTheMatvecPath) {
    const uint64_t many = uint64_t{1} << 30;
    EXPECT_FALSE(mma_applies(many, kMmaMinTokens - 1, 0));
    EXPECT_FALSE(mma_applies(many, 8, 0));
    EXPECT_FALSE(mma_applies(many, 1, 0));
    EXPECT_FALSE(mma_applies(1024, 64, kMmaMinWork));
}

}  // namespace
}  // namespace ds4::cuda
