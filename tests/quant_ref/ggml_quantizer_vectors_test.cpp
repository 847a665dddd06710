// Byte-exact agreement with ggml's own quantizers: tests/data/quant_ref/
// ggml_quantizer_vectors.safetensors holds 32 input rows of 256 values (normal, uniform,
// heavy-tailed, biased, one-signed, sparse, outliers, a zero group, nearly constant, all
// zero, constant, 1e-30-scaled, subnormal, large, zero and half-zero importance) and the
// bytes ggml (libggml-base.so, node-llama-cpp 3.22.1 prebuilt) wrote for them. See
// tools/gen_ggml_vectors.cpp for how it was made.
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "quant/reference.h"
#include "test_support.h"

namespace ds4::quant {
namespace {

constexpr int kRows = 32;
constexpr int kN = 256;

const test::TinySafetensors& vectors() {
    static const test::TinySafetensors st(std::string(DS4_TEST_DATA_DIR) +
                                          "/quant_ref/ggml_quantizer_vectors.safetensors");
    return st;
}

// Quantizes every row with `quantize` and compares with the stored ggml bytes.
template <typename Fn>
void expect_rows_match(const std::string& tensor, size_t row_bytes, Fn quantize) {
    const auto x = vectors().floats("input");
    const auto w = vectors().floats("importance");
    const auto& want = vectors().bytes(tensor);
    ASSERT_EQ(x.size(), size_t{kRows} * kN);
    ASSERT_EQ(want.size(), kRows * row_bytes);
    std::vector<uint8_t> got(row_bytes);
    for (int r = 0; r < kRows; ++r) {
        std::memset(got.data(), 0, got.size());
        quantize(&x[r * kN], &w[r * kN], got.data());
        for (size_t i = 0; i < row_bytes; ++i) {
            if (got[i] != want[r * row_bytes + i]) {
                ADD_FAILURE() << tensor << " row " << r << " first differing byte " << i << ": got "
                              << int{got[i]} << " want " << int{want[r * row_bytes + i]};
                break;
            }
        }
    }
}

TEST(RefGgmlQuantizerVectors, Q8_0) {
    expect_rows_match("Q8_0", 8 * sizeof(BlockQ8_0), [](const float* x, const float*, uint8_t* y) {
        ref::quantize_q8_0(x, reinterpret_cast<BlockQ8_0*>(y), kN);
    });
}

TEST(RefGgmlQuantizerVectors, Q2_K) {
    expect_rows_match("Q2_K", sizeof(BlockQ2K), [](const float* x, const float*, uint8_t* y) {
        ref::quantize_q2_K(x, reinterpret_cast<BlockQ2K*>(y), kN, nullptr);
    });
}

TEST(RefGgmlQuantizerVectors, Q2_KWithImportance) {
    expect_rows_match("Q2_K.imatrix", sizeof(BlockQ2K),
                      [](const float* x, const float* w, uint8_t* y) {
                          ref::quantize_q2_K(x, reinterpret_cast<BlockQ2K*>(y), kN, w);
                      });
}

TEST(RefGgmlQuantizerVectors, Q4_K) {
    expect_rows_match("Q4_K", sizeof(BlockQ4K), [](const float* x, const float*, uint8_t* y) {
        ref::quantize_q4_K(x, reinterpret_cast<BlockQ4K*>(y), kN, nullptr);
    });
}

TEST(RefGgmlQuantizerVectors, Q4_KWithImportance) {
    expect_rows_match("Q4_K.imatrix", sizeof(BlockQ4K),
                      [](const float* x, const float* w, uint8_t* y) {
                          ref::quantize_q4_K(x, reinterpret_cast<BlockQ4K*>(y), kN, w);
                      });
}

TEST(RefGgmlQuantizerVectors, IQ2_XXSWithImportance) {
    expect_rows_match("IQ2_XXS.imatrix", sizeof(BlockIQ2XXS),
                      [](const float* x, const float* w, uint8_t* y) {
                          ref::quantize_iq2_xxs(x, reinterpret_cast<BlockIQ2XXS*>(y), kN, w);
                      });
}

TEST(RefGgmlQuantizerVectors, Q8_K) {
    // ggml leaves the bsums of an all-zero block unwritten; the generator zero-filled its
    // output first, which is what ds4 writes
    expect_rows_match("Q8_K", sizeof(BlockQ8K), [](const float* x, const float*, uint8_t* y) {
        ref::quantize_q8_K(x, reinterpret_cast<BlockQ8K*>(y), kN);
    });
}

}  // namespace
}  // namespace ds4::quant
