// quant.h entry points: type dispatch, row validation, and agreement with the scalar
// references for every type (BF16 and I32 included).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ds4/error.h"
#include "gguf/ggml_types.h"
#include "kernel_test_util.h"
#include "quant/kernels.h"
#include "quant/quant.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace ds4::quant::test {
namespace {

constexpr GgmlType kDequantizable[] = {GgmlType::F32,  GgmlType::F16,     GgmlType::BF16,
                                       GgmlType::Q8_0, GgmlType::Q2_K,    GgmlType::Q4_K,
                                       GgmlType::IQ2_XXS, GgmlType::Q8_K, GgmlType::I32};

// Raw bytes of one row of n values: random codes with sane scales for the block types,
// small exact integers for I32, normal values for the float types.
std::vector<uint8_t> random_row(GgmlType t, int64_t n, Rng& rng) {
    std::vector<uint8_t> row(ggml_row_bytes(t, static_cast<uint64_t>(n)));
    auto put = [&row](const auto& v) { std::memcpy(row.data(), v.data(), row.size()); };
    switch (t) {
        case GgmlType::F32: put(random_floats(n, rng)); break;
        case GgmlType::F16: put(random_f16(n, rng)); break;
        case GgmlType::BF16: {
            std::vector<uint16_t> v(static_cast<size_t>(n));
            for (auto& h : v) h = f32_to_bf16(rng.normal());
            put(v);
            break;
        }
        case GgmlType::Q8_0: put(random_blocks<BlockQ8_0>(n / QK8_0, Fill::Random, rng)); break;
        case GgmlType::Q2_K: put(random_blocks<BlockQ2K>(n / QK_K, Fill::Random, rng)); break;
        case GgmlType::Q4_K: put(random_blocks<BlockQ4K>(n / QK_K, Fill::Random, rng)); break;
        case GgmlType::IQ2_XXS: put(random_blocks<BlockIQ2XXS>(n / QK_K, Fill::Random, rng)); break;
        case GgmlType::Q8_K: put(random_q8_K(n / QK_K, ActFill::Random, rng)); break;
        case GgmlType::I32: {
            std::vector<int32_t> v(static_cast<size_t>(n));
            for (auto& i : v) i = static_cast<int32_t>(rng.below(2 * 129280)) - 129280;
            put(v);
            break;
        }
        default: ADD_FAILURE() << "no generator for " << ggml_type_name(t);
    }
    return row;
}

// The scalar reference dequantization of a row, written independently of quant.cpp.
std::vector<float> reference_dequant(GgmlType t, const std::vector<uint8_t>& row, int64_t n) {
    std::vector<float> y(static_cast<size_t>(n));
    const void* p = row.data();
    switch (t) {
        case GgmlType::F32: std::memcpy(y.data(), p, y.size() * 4); break;
        case GgmlType::F16: ref::dequant_f16(static_cast<const uint16_t*>(p), y.data(), n); break;
        case GgmlType::BF16: ref::dequant_bf16(static_cast<const uint16_t*>(p), y.data(), n); break;
        case GgmlType::Q8_0: ref::dequant_q8_0(static_cast<const BlockQ8_0*>(p), y.data(), n); break;
        case GgmlType::Q2_K: ref::dequant_q2_K(static_cast<const BlockQ2K*>(p), y.data(), n); break;
        case GgmlType::Q4_K: ref::dequant_q4_K(static_cast<const BlockQ4K*>(p), y.data(), n); break;
        case GgmlType::IQ2_XXS: ref::dequant_iq2_xxs(static_cast<const BlockIQ2XXS*>(p), y.data(), n); break;
        case GgmlType::Q8_K: ref::dequant_q8_K(static_cast<const BlockQ8K*>(p), y.data(), n); break;
        case GgmlType::I32:
            for (int64_t i = 0; i < n; ++i) {
                int32_t v = 0;
                std::memcpy(&v, row.data() + 4 * i, 4);
                y[static_cast<size_t>(i)] = static_cast<float>(v);
            }
            break;
        default: ADD_FAILURE();
    }
    return y;
}

TEST(QuantApi, DequantizeRowEveryTypeMatchesReference) {
    Rng rng(51);
    for (GgmlType t : kDequantizable) {
        EXPECT_TRUE(can_dequantize(t)) << ggml_type_name(t);
        for (int64_t n : {256, 2048, 4096}) {
            const auto row = random_row(t, n, rng);
            std::vector<float> got(static_cast<size_t>(n));
            dequantize_row(t, row.data(), got.data(), n);
            const std::vector<float> want = reference_dequant(t, row, n);
            ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << ggml_type_name(t) << " n=" << n;
        }
    }
}

TEST(QuantApi, DequantizeI32IsExactIntegers) {
    const std::vector<int32_t> ids = {0, 1, -1, 129279, -129280, 1 << 23, 16777216, -7};
    std::vector<float> got(ids.size());
    dequantize_row(GgmlType::I32, ids.data(), got.data(), static_cast<int64_t>(ids.size()));
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(got[i], static_cast<float>(ids[i]));
    EXPECT_EQ(got[3], 129279.f);
}

TEST(QuantApi, BF16DequantizeIsShift) {
    const std::vector<uint16_t> h = {0x3f80, 0xc000, 0x0000, 0x8000, 0x7f80, 0x4049};
    std::vector<float> got(h.size());
    dequantize_row(GgmlType::BF16, h.data(), got.data(), static_cast<int64_t>(h.size()));
    EXPECT_EQ(got[0], 1.f);
    EXPECT_EQ(got[1], -2.f);
    EXPECT_EQ(got[2], 0.f);
    EXPECT_TRUE(std::signbit(got[3]));
    EXPECT_TRUE(std::isinf(got[4]));
    EXPECT_EQ(float_bits(got[5]), 0x40490000u);
}

TEST(QuantApi, UnsupportedTypesAndPartialBlocksThrow) {
    std::vector<uint8_t> buf(4096);
    std::vector<float> out(1024);
    EXPECT_FALSE(can_dequantize(GgmlType::Q4_0));
    EXPECT_FALSE(can_quantize(GgmlType::Q8_K));
    EXPECT_FALSE(can_quantize(GgmlType::I32));
    EXPECT_THROW(dequantize_row(GgmlType::Q4_0, buf.data(), out.data(), 32), Error);
    EXPECT_THROW(dequantize_row(GgmlType::Q2_K, buf.data(), out.data(), 100), Error);
    EXPECT_THROW(quantize_row(GgmlType::Q8_K, out.data(), buf.data(), 256), Error);
    EXPECT_THROW(quantize_row(GgmlType::Q8_0, out.data(), buf.data(), 33), Error);
    try {
        dequantize_row(GgmlType::Q4_K, buf.data(), out.data(), 300);
        FAIL() << "expected ds4::Error";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("Q4_K"), std::string::npos) << msg;
        EXPECT_NE(msg.find("300"), std::string::npos) << msg;
        EXPECT_NE(msg.find("256"), std::string::npos) << msg;
    }
}

TEST(QuantApi, QuantizeRowMatchesReferenceQuantizers) {
    Rng rng(52);
    const int64_t n = 4096;
    const std::vector<float> x = random_floats(n, rng, 0.05f);
    std::vector<float> imp(static_cast<size_t>(n));
    for (auto& v : imp) v = rng.uniform(0.1f, 2.f);

    auto check = [&](GgmlType t, const float* importance, auto ref_fn) {
        std::vector<uint8_t> got(ggml_row_bytes(t, n) + 8, 0xcd), want(ggml_row_bytes(t, n) + 8, 0xcd);
        EXPECT_EQ(quantize_row(t, x.data(), got.data(), n, importance), ggml_row_bytes(t, n)) << ggml_type_name(t);
        ref_fn(want.data());
        EXPECT_EQ(got, want) << ggml_type_name(t) << (importance ? " with importance" : "");
        // and it decodes back close to the input (a sanity check of the wiring, not of the quantizer)
        std::vector<float> back(static_cast<size_t>(n));
        dequantize_row(t, got.data(), back.data(), n);
        double err = 0, energy = 0;
        for (int64_t i = 0; i < n; ++i) {
            err += std::pow(back[static_cast<size_t>(i)] - x[static_cast<size_t>(i)], 2);
            energy += std::pow(x[static_cast<size_t>(i)], 2);
        }
        EXPECT_LT(err / energy, 0.5) << ggml_type_name(t);
    };
    check(GgmlType::Q8_0, nullptr, [&](uint8_t* p) { ref::quantize_q8_0(x.data(), reinterpret_cast<BlockQ8_0*>(p), n); });
    const float* no_importance = nullptr;
    for (const float* w : {no_importance, static_cast<const float*>(imp.data())}) {
        check(GgmlType::Q2_K, w, [&](uint8_t* p) { ref::quantize_q2_K(x.data(), reinterpret_cast<BlockQ2K*>(p), n, w); });
        check(GgmlType::Q4_K, w, [&](uint8_t* p) { ref::quantize_q4_K(x.data(), reinterpret_cast<BlockQ4K*>(p), n, w); });
        check(GgmlType::IQ2_XXS, w,
              [&](uint8_t* p) { ref::quantize_iq2_xxs(x.data(), reinterpret_cast<BlockIQ2XXS*>(p), n, w); });
    }
    check(GgmlType::F32, nullptr, [&](uint8_t* p) { std::memcpy(p, x.data(), x.size() * 4); });
    check(GgmlType::F16, nullptr, [&](uint8_t* p) {
        for (size_t i = 0; i < x.size(); ++i) {
            const uint16_t h = f32_to_f16(x[i]);
            std::memcpy(p + 2 * i, &h, 2);
        }
    });
    check(GgmlType::BF16, nullptr, [&](uint8_t* p) {
        for (size_t i = 0; i < x.size(); ++i) {
            const uint16_t h = f32_to_bf16(x[i]);
            std::memcpy(p + 2 * i, &h, 2);
        }
    });
}

TEST(QuantApi, ActivationQuantizersMatchReference) {
    Rng rng(53);
    const std::vector<float> x = random_floats(4096, rng, 0.3f);
    std::vector<BlockQ8K> k_got(16), k_want(16);
    quantize_row_q8_K(x.data(), k_got.data(), 4096);
    ref::quantize_q8_K(x.data(), k_want.data(), 4096);
    EXPECT_EQ(std::memcmp(k_got.data(), k_want.data(), 16 * sizeof(BlockQ8K)), 0);
    std::vector<BlockQ8_0F> f_got(128), f_want(128);
    quantize_row_q8_0f(x.data(), f_got.data(), 4096);
    ref::quantize_q8_0f(x.data(), f_want.data(), 4096);
    EXPECT_EQ(std::memcmp(f_got.data(), f_want.data(), 128 * sizeof(BlockQ8_0F)), 0);
    EXPECT_THROW(quantize_row_q8_K(x.data(), k_got.data(), 100), Error);
    EXPECT_THROW(quantize_row_q8_0f(x.data(), f_got.data(), 100), Error);
}

// dot_q8_K / dot_q8_0f go through best_kernels(): bit-identical to the scalar dots.
TEST(QuantApi, QuantizedDotsMatchScalar) {
    Rng rng(54);
    for (int64_t n : {256, 2048, 4096}) {
        const auto x = random_q8_K(n / QK_K, ActFill::Random, rng);
        const auto q2 = random_blocks<BlockQ2K>(n / QK_K, Fill::Random, rng);
        const auto q4 = random_blocks<BlockQ4K>(n / QK_K, Fill::Random, rng);
        const auto iq = random_blocks<BlockIQ2XXS>(n / QK_K, Fill::Random, rng);
        const Kernels& s = scalar_kernels();
        EXPECT_EQ(dot_q8_K(GgmlType::Q2_K, q2.data(), x.data(), n), s.dot_q2_K_q8_K(q2.data(), x.data(), n));
        EXPECT_EQ(dot_q8_K(GgmlType::Q4_K, q4.data(), x.data(), n), s.dot_q4_K_q8_K(q4.data(), x.data(), n));
        EXPECT_EQ(dot_q8_K(GgmlType::IQ2_XXS, iq.data(), x.data(), n), s.dot_iq2_xxs_q8_K(iq.data(), x.data(), n));
        const auto w8 = random_blocks<BlockQ8_0>(n / QK8_0, Fill::Random, rng);
        const auto x8 = random_q8_0f(n / QK8_0, ActFill::Random, rng);
        EXPECT_EQ(dot_q8_0f(w8.data(), x8.data(), n), s.dot_q8_0_q8_0f(w8.data(), x8.data(), n));
    }
    const auto x = random_q8_K(1, ActFill::Random, rng);
    const auto w8 = random_blocks<BlockQ8_0>(8, Fill::Random, rng);
    EXPECT_THROW(dot_q8_K(GgmlType::Q8_0, w8.data(), x.data(), 256), Error);
    EXPECT_THROW(dot_q8_K(GgmlType::Q2_K, w8.data(), x.data(), 255), Error);
}

// dot_f32 for every dequantizable weight type: F32 (double accumulation), F16 (f32),
// block types (dequantize, then f32 in order). All within n·u·Σ|w·x| of the exact dot.
TEST(QuantApi, DotF32EveryTypeWithinBoundOfExact) {
    Rng rng(55);
    for (GgmlType t : kDequantizable) {
        for (int64_t n : {256, 4096, 8192}) {
            const auto row = random_row(t, n, rng);
            const std::vector<float> x = random_floats(n, rng);
            const std::vector<float> w = reference_dequant(t, row, n);
            double exact = 0, abs_sum = 0;
            for (size_t i = 0; i < w.size(); ++i) {
                exact += static_cast<double>(w[i]) * x[i];
                abs_sum += std::fabs(static_cast<double>(w[i]) * x[i]);
            }
            const float got = dot_f32(t, row.data(), x.data(), n);
            EXPECT_NEAR(got, exact, static_cast<double>(n) * kU32 * abs_sum + 1e-30) << ggml_type_name(t) << " n=" << n;
            if (t == GgmlType::F32) {
                EXPECT_NEAR(got, exact, 1.0001 * kU32 * std::fabs(exact) + 1e-9 * abs_sum);
            }
        }
    }
    std::vector<uint8_t> buf(1024);
    std::vector<float> x(256);
    EXPECT_THROW(dot_f32(GgmlType::Q4_0, buf.data(), x.data(), 32), Error);
}

}  // namespace
}  // namespace ds4::quant::test
