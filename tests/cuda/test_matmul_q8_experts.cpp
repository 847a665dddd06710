// Grouped int8-activation expert products (cuda/matmul_q8_experts.h), for IQ2_XXS, Q2_K
// and Q4_K slabs (random blocks: every code, sign and scale pattern), against
//  1. the device's own int8 activations (quantize_q8_activations) dequantized and
//     dotted in double with the reference dequantized weights: each block's integer
//     dots are exact, so only f32 scaling and summing differ (1e-5 of Σ|w·x̂|);
//  2. the f32 activations and the exact kernel cuda::matmul per expert: matmul_q8.h's
//     bound Σ_i |w_i| · d_x(i)/2, plus f32 rounding;
// with 0, 1 and up to 15 tokens per expert, an expert not listed, rows not a multiple of
// the 4-row warp item, gate + up in one launch, rows that stage 16 bytes at a time and
// rows that do not. The same pairs regrouped into slots of at most 1, 2, 3, 4 or 8
// tokens, or the same slots with the chunks capped at 1, 4 or 8 tokens (the default cap
// is 2; together every token-chunk instance), must give every token the same bits: a
// token's result may not depend on the other tokens of the pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/matmul_q8.h"
#include "cuda/matmul_q8_experts.h"
#include "cuda_test_util.h"
#include "expert_slabs.h"

namespace ds4::cuda {
namespace {

using test::make_slabs, test::Slabs;

struct Groups {  // host slot tables
    std::vector<uint32_t> expert, begin, count;
};

// Slots of at most `most` tokens: each (expert, count) group cut into pieces in order.
Groups split(const Groups& g, uint32_t most) {
    Groups s;
    for (size_t j = 0; j < g.expert.size(); ++j) {
        if (g.count[j] == 0) s.expert.push_back(g.expert[j]), s.begin.push_back(g.begin[j]), s.count.push_back(0);
        for (uint32_t t = 0; t < g.count[j]; t += most)
            s.expert.push_back(g.expert[j]), s.begin.push_back(g.begin[j] + t),
                s.count.push_back(std::min(most, g.count[j] - t));
    }
    return s;
}

// y0, y1 (M x rows each) from the kernel with these slots and max_tokens bound.
void run(GgmlType type, const DeviceBuffer<uint8_t>& dw0, const DeviceBuffer<uint8_t>& dw1, uint64_t rows,
         uint64_t cols, const DeviceBuffer<uint8_t>& xq, uint32_t M, const Groups& g, uint32_t max_tokens,
         std::vector<float>& y0, std::vector<float>& y1) {
    DeviceBuffer<uint32_t> d_exp = to_device<uint32_t>(g.expert), d_beg = to_device<uint32_t>(g.begin),
                           d_cnt = to_device<uint32_t>(g.count);
    const std::vector<uint32_t> active = {static_cast<uint32_t>(g.expert.size())};
    DeviceBuffer<uint32_t> d_act = to_device<uint32_t>(active);
    const ExpertGroups eg{d_exp.data(), d_beg.data(), d_cnt.data(), d_act.data()};
    DeviceBuffer<float> dy0(M * rows), dy1(M * rows);
    dy0.fill_bytes(0xff), dy1.fill_bytes(0xff);  // NaN poison: every output must be written
    // max_slots above the active count: the grid's extra items must do nothing
    matmul_experts_q8(type, dw0.data(), dw1.data(), rows, cols, xq.data(), dy0.data(), dy1.data(), rows, eg,
                      static_cast<uint32_t>(g.expert.size()) + 3, max_tokens, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    y0 = dy0.download(), y1 = dy1.download();
}

void check_type(GgmlType type, uint64_t kRows, uint64_t kCols, uint32_t seed) {
    constexpr uint32_t kExperts = 6;
    // slot order as moe_group makes it would be ascending; any order must work
    Groups g;
    uint32_t M = 0;
    for (const auto& [e, c] : std::vector<std::pair<uint32_t, uint32_t>>{{3, 15}, {0, 0}, {5, 1}, {1, 6}, {2, 3}}) {
        g.expert.push_back(e), g.begin.push_back(M), g.count.push_back(c);
        M += c;
    }
    SCOPED_TRACE(cat("type=", static_cast<int>(type), " rows=", kRows, " cols=", kCols));

    const Slabs w0 = make_slabs(type, kExperts * kRows, kCols, seed), w1 = make_slabs(type, kExperts * kRows, kCols, seed + 7);
    std::vector<float> x = test::random_floats(M * kCols, seed + 1, -2.f, 2.f);
    for (uint32_t p = 0; p < M; ++p) x[p * kCols + (p * 97) % kCols] = 9.f;  // uneven block steps
    DeviceBuffer<uint8_t> dw0(w0.bytes.size()), dw1(w1.bytes.size());
    dw0.upload(w0.bytes), dw1.upload(w1.bytes);
    ASSERT_TRUE(matmul_experts_q8_supported(type, kCols, dw0.data()));
    DeviceBuffer<float> dx = to_device<float>(x);
    DeviceBuffer<uint8_t> xq(q8_activation_bytes(kCols, M));
    quantize_q8_activations(dx.data(), kCols, kCols, M, xq.data(), nullptr);

    std::vector<float> y0, y1;
    run(type, dw0, dw1, kRows, kCols, xq, M, g, 15, y0, y1);
    for (uint32_t most : {1u, 2u, 3u, 4u, 8u}) {  // token chunks of 1, 2, 4, 4, 8
        std::vector<float> z0, z1;
        run(type, dw0, dw1, kRows, kCols, xq, M, split(g, most), most, z0, z1);
        EXPECT_EQ(std::memcmp(z0.data(), y0.data(), y0.size() * 4), 0) << "slots of at most " << most << " tokens";
        EXPECT_EQ(std::memcmp(z1.data(), y1.data(), y1.size() * 4), 0) << "slots of at most " << most << " tokens";
    }
    for (uint32_t cap : {1u, 4u, 8u}) {  // the same slots, other chunk caps (set_q8_experts_max_chunk)
        set_q8_experts_max_chunk(cap);
        std::vector<float> z0, z1;
        run(type, dw0, dw1, kRows, kCols, xq, M, g, 15, z0, z1);
        set_q8_experts_max_chunk(kQ8ExpertsMaxChunk);
        EXPECT_EQ(std::memcmp(z0.data(), y0.data(), y0.size() * 4), 0) << "chunks of at most " << cap << " tokens";
        EXPECT_EQ(std::memcmp(z1.data(), y1.data(), y1.size() * 4), 0) << "chunks of at most " << cap << " tokens";
    }

    // the exact kernel per expert, f32 activations
    DeviceBuffer<float> de0(M * kRows), de1(M * kRows);
    const uint64_t slab = kRows * w0.row_bytes;
    for (size_t j = 0; j < g.expert.size(); ++j) {
        if (g.count[j] == 0) continue;
        const uint64_t at = g.expert[j] * slab;
        const float* xj = dx.data() + g.begin[j] * kCols;
        matmul(type, dw0.data() + at, kRows, kCols, xj, kCols, de0.data() + g.begin[j] * kRows, kRows, g.count[j], nullptr);
        matmul(type, dw1.data() + at, kRows, kCols, xj, kCols, de1.data() + g.begin[j] * kRows, kRows, g.count[j], nullptr);
    }
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> e0 = de0.download(), e1 = de1.download();

    // the device's int8 activations as values and steps
    const std::vector<uint8_t> q = xq.download();
    const uint64_t tb = q8_token_bytes(kCols);
    std::vector<double> xhat(M * kCols), step(M * kCols);
    for (uint32_t p = 0; p < M; ++p)
        for (uint64_t c = 0; c < kCols; ++c) {
            float d = 0;
            std::memcpy(&d, q.data() + p * tb + kCols + 8 * (c / 32), 4);
            xhat[p * kCols + c] = static_cast<double>(d) * static_cast<int8_t>(q[p * tb + c]);
            step[p * kCols + c] = d;
        }

    int bad = 0;
    double worst = 0;
    for (size_t j = 0; j < g.expert.size(); ++j)
        for (uint32_t t = 0; t < g.count[j]; ++t)
            for (int m = 0; m < 2; ++m)
                for (uint64_t r = 0; r < kRows; ++r) {
                    const uint32_t p = g.begin[j] + t;
                    const float* wr = (m == 0 ? w0 : w1).dequant.data() + (uint64_t{g.expert[j]} * kRows + r) * kCols;
                    const test::RowRef ref = test::row_ref(wr, xhat.data() + p * kCols, x.data() + p * kCols,
                                                           step.data() + p * kCols, kCols);
                    const double y = (m == 0 ? y0 : y1)[p * kRows + r], ye = (m == 0 ? e0 : e1)[p * kRows + r];
                    const double tol_q = 1e-5 * ref.mag_q + 1e-6, bound = ref.bound + 1e-5 * (ref.mag_q + ref.mag_f) + 1e-6;
                    worst = std::max(worst, std::fabs(y - ref.f) / bound);
                    const bool ok = std::fabs(y - ref.q) <= tol_q && std::fabs(y - ref.f) <= bound &&
                                    std::fabs(y - ye) <= bound;
                    if (!ok && bad++ < 5)
                        ADD_FAILURE() << "slot " << j << " tok " << t << " mat " << m << " row " << r << ": q8 " << y
                                      << ", int8-activation ref " << ref.q << " (tol " << tol_q << "), f32 ref "
                                      << ref.f << ", exact kernel " << ye << " (bound " << bound << ")";
                }
    EXPECT_EQ(bad, 0);
    EXPECT_GT(worst, 0.0);
    std::printf("experts q8 type %d, %llu x %llu: %u pairs, worst |q8 - f32 ref| / bound = %.3f\n",
                static_cast<int>(type), static_cast<unsigned long long>(kRows), static_cast<unsigned long long>(kCols),
                M, worst);
}

// 768 columns: IQ2_XXS and Q2_K rows of 198 / 252 bytes (2-byte staging), Q4_K 432
// (16-byte); 2048 columns: all rows a multiple of 16 bytes.
TEST(CudaMatmulQ8Experts, Iq2xxsMatchesReferences) {
    DS4_REQUIRE_GPU();
    check_type(GgmlType::IQ2_XXS, 202, 768, 11);
    check_type(GgmlType::IQ2_XXS, 64, 2048, 12);
}

TEST(CudaMatmulQ8Experts, Q2KMatchesReferences) {
    DS4_REQUIRE_GPU();
    check_type(GgmlType::Q2_K, 202, 768, 21);
    check_type(GgmlType::Q2_K, 64, 2048, 22);
}

TEST(CudaMatmulQ8Experts, Q4KMatchesReferences) {
    DS4_REQUIRE_GPU();
    check_type(GgmlType::Q4_K, 201, 768, 31);
}

TEST(CudaMatmulQ8Experts, NoActiveSlotWritesNothing) {
    DS4_REQUIRE_GPU();
    const Slabs w = make_slabs(GgmlType::Q2_K, 2 * 64, 256, 5);
    DeviceBuffer<uint8_t> dw(w.bytes.size());
    dw.upload(w.bytes);
    DeviceBuffer<uint8_t> xq(q8_activation_bytes(256, 1));
    DeviceBuffer<uint32_t> z = to_device<uint32_t>(std::vector<uint32_t>{1, 0, 1, 0});  // expert, begin, count, n_active 0
    const ExpertGroups eg{z.data(), z.data() + 1, z.data() + 2, z.data() + 3};
    DeviceBuffer<float> y(64);
    y.fill_bytes(0x7f);
    matmul_experts_q8(GgmlType::Q2_K, dw.data(), nullptr, 64, 256, xq.data(), y.data(), nullptr, 64, eg, 2, 1, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    for (float v : y.download()) ASSERT_EQ(std::memcmp(&v, "\x7f\x7f\x7f\x7f", 4), 0);
}

}  // namespace
}  // namespace ds4::cuda
