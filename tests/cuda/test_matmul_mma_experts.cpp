// Grouped expert products on the tensor cores (cuda/matmul_mma_experts.h), for IQ2_XXS,
// Q2_K and Q4_K slabs (random blocks: every code, sign and scale pattern). The device's
// Q8_K activations must be quant::ref::quantize_q8_K's bytes, and the products match
//  1. the CPU's quant::dot_q8_K on those activations (ds4's numerics; the integer sums
//     are exact, only the f32 order of the super-block values differs: 1e-5 of Σ|w·x̂|),
//     and the same activations dequantized and dotted in double;
//  2. the f32 activations and the exact kernel cuda::matmul per expert: the bound
//     Σ_i |w_i| · d_x(i)/2 (d_x the step of x_i's 256-block), plus f32 rounding;
// with odd token counts per expert, an active slot of 0 tokens, an expert not listed,
// rows not a multiple of the 128-row tile, gate + up in one launch, and the four token
// tile widths (8/16/32/64, chosen from the bounds), which must give the same bits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/matmul_mma_experts.h"
#include "cuda/matmul_q8.h"
#include "cuda_test_util.h"
#include "expert_slabs.h"
#include "quant/blocks.h"
#include "quant/iq2_tables.h"
#include "quant/quant.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace ds4::cuda {
namespace {

using test::make_slabs, test::Slabs;

struct Group {
    uint32_t expert, count;
};

// One IQ2_XXS row against Q8_K activations as experts_mma_kernel computes it.
float iq2xxs_kernel_dot(const uint8_t* row, const quant::BlockQ8K* x, uint64_t nsb) {
    float acc = 0.f;
    for (uint64_t k = 0; k < nsb; ++k) {
        const uint8_t* sb = row + 66 * k;
        uint16_t dh = 0;
        std::memcpy(&dh, sb, 2);
        int64_t isum = 0;
        for (int b = 0; b < 8; ++b) {
            uint32_t aux = 0;
            std::memcpy(&aux, sb + 2 + 8 * b + 4, 4);
            int64_t dot = 0;
            for (int l = 0; l < 4; ++l) {
                const uint64_t grid = quant::kIq2Grid[sb[2 + 8 * b + l]];
                const uint8_t signs = quant::kIq2Signs[(aux >> (7 * l)) & 127];
                for (int v = 0; v < 8; ++v) {
                    const int mag = static_cast<int>((grid >> (8 * v)) & 0xff);
                    dot += ((signs >> v) & 1 ? -mag : mag) * x[k].qs[32 * b + 8 * l + v];
                }
            }
            isum += (2 * (aux >> 28) + 1) * dot;
        }
        const volatile float v = quant::f16_to_f32(dh) * x[k].d;  // separate roundings, as the kernel
        const volatile float w = v * static_cast<float>(isum);
        acc = acc + w;
    }
    return acc * 0.125f;
}

void check_type(GgmlType type, uint32_t seed) {
    constexpr uint64_t kRows = 200, kCols = 768;  // rows of 198 / 252 / 432 bytes
    constexpr uint32_t kExperts = 5;
    // slot order as moe_group makes it would be ascending; any order must work
    const std::vector<Group> groups = {{3, 37}, {0, 0}, {4, 1}, {1, 70}};
    std::vector<uint32_t> expert, begin, count;
    uint32_t M = 0;
    for (const Group& g : groups) expert.push_back(g.expert), begin.push_back(M), count.push_back(g.count), M += g.count;
    SCOPED_TRACE(cat("type=", static_cast<int>(type), " pairs=", M));

    const Slabs w0 = make_slabs(type, kExperts * kRows, kCols, seed), w1 = make_slabs(type, kExperts * kRows, kCols, seed + 7);
    std::vector<float> x = test::random_floats(M * kCols, seed + 1, -2.f, 2.f);
    for (uint32_t p = 0; p < M; ++p) x[p * kCols + (p * 97) % kCols] = 9.f;  // uneven block steps
    // + 16 bytes: the kernel reads whole 16-byte granules (never past the last one)
    DeviceBuffer<uint8_t> dw0(w0.bytes.size() + 16), dw1(w1.bytes.size() + 16);
    dw0.upload(w0.bytes), dw1.upload(w1.bytes);
    ASSERT_TRUE(matmul_experts_mma_supported(type, kCols, w0.row_bytes, dw0.data()));
    DeviceBuffer<float> dx = to_device<float>(x);
    DeviceBuffer<uint8_t> xq(q8k_token_bytes(kCols) * M);
    quantize_q8k_activations(dx.data(), kCols, kCols, M, xq.data(), nullptr);
    DeviceBuffer<uint32_t> d_exp = to_device<uint32_t>(expert), d_beg = to_device<uint32_t>(begin),
                           d_cnt = to_device<uint32_t>(count);
    const std::vector<uint32_t> active = {static_cast<uint32_t>(groups.size())};
    DeviceBuffer<uint32_t> d_act = to_device<uint32_t>(active);
    const ExpertGroups eg{d_exp.data(), d_beg.data(), d_cnt.data(), d_act.data()};

    // bounds (max_slots, max_pairs) picking token tiles of 32, 16, 64, 8 and 128 (IQ2_XXS;
    // 64 for the K-quants or with DS4_CUDA_EXPERTS_BN=64) (IQ2_XXS: 16 and 8 decode with
    // the lane-private selector tables, 32 and up with the grid)
    const uint32_t bounds[][2] = {{4, M}, {16, M}, {4, 256}, {32, M}, {4, 400}};
    std::vector<float> y0, y1;
    for (const auto& b : bounds) {
        DeviceBuffer<uint32_t> tiles(mma_experts_tile_words(b[1], b[0]));
        DeviceBuffer<float> dy0(M * kRows), dy1(M * kRows);
        dy0.fill_bytes(0xff), dy1.fill_bytes(0xff);  // NaN poison: every output must be written
        matmul_experts_mma(type, dw0.data(), dw1.data(), kRows, kCols, xq.data(), dy0.data(), dy1.data(), kRows, eg,
                           b[0], b[1], tiles.data(), nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        if (y0.empty()) {
            y0 = dy0.download(), y1 = dy1.download();
            continue;
        }
        const std::vector<float> z0 = dy0.download(), z1 = dy1.download();
        EXPECT_EQ(std::memcmp(z0.data(), y0.data(), y0.size() * 4), 0) << "tile width " << b[1] / b[0];
        EXPECT_EQ(std::memcmp(z1.data(), y1.data(), y1.size() * 4), 0) << "tile width " << b[1] / b[0];
    }

    // the exact kernel per expert, f32 activations
    DeviceBuffer<float> de0(M * kRows), de1(M * kRows);
    for (size_t j = 0; j < groups.size(); ++j) {
        if (count[j] == 0) continue;
        const uint64_t at = uint64_t{expert[j]} * kRows * w0.row_bytes;
        matmul(type, dw0.data() + at, kRows, kCols, dx.data() + begin[j] * kCols, kCols, de0.data() + begin[j] * kRows,
               kRows, count[j], nullptr);
        matmul(type, dw1.data() + at, kRows, kCols, dx.data() + begin[j] * kCols, kCols, de1.data() + begin[j] * kRows,
               kRows, count[j], nullptr);
    }
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> e0 = de0.download(), e1 = de1.download();

    // the device's Q8_K activations: quantize_q8_K's bytes; as values and steps
    const std::vector<uint8_t> q = xq.download();
    const uint64_t tb = q8k_token_bytes(kCols), nsb = kCols / 256;
    std::vector<quant::BlockQ8K> xk(M * nsb);
    std::vector<double> xhat(M * kCols), step(M * kCols);
    for (uint32_t p = 0; p < M; ++p) {
        std::vector<quant::BlockQ8K> want(nsb);
        quant::ref::quantize_q8_K(x.data() + p * kCols, want.data(), static_cast<int64_t>(kCols));
        for (uint64_t k = 0; k < nsb; ++k) {
            quant::BlockQ8K& got = xk[p * nsb + k];
            std::memcpy(got.qs, q.data() + p * tb + 256 * k, 256);
            std::memcpy(&got.d, q.data() + p * tb + kCols + 48 * k, 4);
            std::memcpy(got.bsums, q.data() + p * tb + kCols + 48 * k + 4, 32);
            ASSERT_EQ(std::memcmp(&got, &want[k], sizeof(got)), 0) << "Q8_K block " << k << " of token " << p;
        }
        for (uint64_t c = 0; c < kCols; ++c) {
            const float d = xk[p * nsb + c / 256].d;
            xhat[p * kCols + c] = static_cast<double>(d) * xk[p * nsb + c / 256].qs[c % 256];
            step[p * kCols + c] = std::fabs(d);
        }
    }

    // IQ2_XXS: the kernel's arithmetic exactly (integer sums per super-block, then its f32
    // products and sums in super-block order, 1/8 at the end): the same bits, whatever
    // order of k the fragments use
    if (type == GgmlType::IQ2_XXS) {
        int diff = 0;
        for (size_t j = 0; j < groups.size(); ++j)
            for (uint32_t t = 0; t < count[j]; ++t)
                for (int m = 0; m < 2; ++m)
                    for (uint64_t r = 0; r < kRows; ++r) {
                        const uint32_t p = begin[j] + t;
                        const uint8_t* wb =
                            (m == 0 ? w0 : w1).bytes.data() + (uint64_t{expert[j]} * kRows + r) * w0.row_bytes;
                        const float want = iq2xxs_kernel_dot(wb, xk.data() + p * nsb, nsb);
                        const float got = (m == 0 ? y0 : y1)[p * kRows + r];
                        if (std::memcmp(&got, &want, 4) != 0 && diff++ < 5)
                            ADD_FAILURE() << "slot " << j << " tok " << t << " mat " << m << " row " << r << ": "
                                          << got << " != emulated " << want;
                    }
        EXPECT_EQ(diff, 0);
    }

    int bad = 0;
    double worst = 0;
    for (size_t j = 0; j < groups.size(); ++j)
        for (uint32_t t = 0; t < count[j]; ++t)
            for (int m = 0; m < 2; ++m)
                for (uint64_t r = 0; r < kRows; ++r) {
                    const uint32_t p = begin[j] + t;
                    const float* wr = (m == 0 ? w0 : w1).dequant.data() + (uint64_t{expert[j]} * kRows + r) * kCols;
                    const test::RowRef ref = test::row_ref(wr, xhat.data() + p * kCols, x.data() + p * kCols,
                                                           step.data() + p * kCols, kCols);
                    const double y = (m == 0 ? y0 : y1)[p * kRows + r], ye = (m == 0 ? e0 : e1)[p * kRows + r];
                    const uint8_t* wb = (m == 0 ? w0 : w1).bytes.data() + (uint64_t{expert[j]} * kRows + r) * w0.row_bytes;
                    const double cpu = quant::dot_q8_K(type, wb, xk.data() + p * nsb, static_cast<int64_t>(kCols));
                    const double tol_q = 1e-5 * ref.mag_q + 1e-6, bound = ref.bound + 1e-5 * (ref.mag_q + ref.mag_f) + 1e-6;
                    worst = std::max(worst, std::fabs(y - ref.f) / bound);
                    const bool ok = std::fabs(y - ref.q) <= tol_q && std::fabs(y - cpu) <= tol_q &&
                                    std::fabs(y - ref.f) <= bound && std::fabs(y - ye) <= bound;
                    if (!ok && bad++ < 5)
                        ADD_FAILURE() << "slot " << j << " tok " << t << " mat " << m << " row " << r << ": mma " << y
                                      << ", Q8_K ref " << ref.q << ", cpu dot " << cpu << " (tol " << tol_q << "), f32 ref "
                                      << ref.f << ", exact kernel " << ye << " (bound " << bound << ")";
                }
    EXPECT_EQ(bad, 0);
    EXPECT_GT(worst, 0.0);
    std::printf("experts mma type %d: %u pairs, worst |mma - f32 ref| / bound = %.3f\n", static_cast<int>(type), M,
                worst);
}

bool have_mma() {
    DeviceBuffer<uint8_t> p(16);
    return matmul_experts_mma_supported(GgmlType::Q4_K, 256, 144, p.data());
}

TEST(CudaMatmulMmaExperts, Iq2xxsMatchesReferences) {
    DS4_REQUIRE_GPU();
    if (!have_mma()) GTEST_SKIP() << "no int8 mma (sm < 80)";
    check_type(GgmlType::IQ2_XXS, 11);
}

TEST(CudaMatmulMmaExperts, Q2KMatchesReferences) {
    DS4_REQUIRE_GPU();
    if (!have_mma()) GTEST_SKIP() << "no int8 mma (sm < 80)";
    check_type(GgmlType::Q2_K, 21);
}

TEST(CudaMatmulMmaExperts, Q4KMatchesReferences) {
    DS4_REQUIRE_GPU();
    if (!have_mma()) GTEST_SKIP() << "no int8 mma (sm < 80)";
    check_type(GgmlType::Q4_K, 31);
}

}  // namespace
}  // namespace ds4::cuda
