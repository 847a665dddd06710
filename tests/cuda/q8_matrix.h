// Random Q8_0 matrices for the repacked-row kernels' tests (test_matmul_q8r*.cpp): the
// GGUF bytes, their dequantized values (the reference), and the repacked device copy.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda_test_util.h"
#include "quant/reference.h"

namespace ds4::cuda::test {

struct Q8Matrix {
    uint64_t rows = 0, cols = 0;
    std::vector<uint8_t> bytes;  // GGUF rows
    std::vector<float> dequant;  // reference values
};

inline Q8Matrix make_q8(uint64_t rows, uint64_t cols, uint32_t seed) {
    const std::vector<float> w = random_floats(rows * cols, seed);
    const uint64_t rb = cols / 32 * 34;
    Q8Matrix m{rows, cols, std::vector<uint8_t>(rows * rb), std::vector<float>(rows * cols)};
    for (uint64_t r = 0; r < rows; ++r) {
        auto* b = reinterpret_cast<quant::BlockQ8_0*>(m.bytes.data() + r * rb);
        quant::ref::quantize_q8_0(w.data() + r * cols, b, static_cast<int64_t>(cols));
        quant::ref::dequant_q8_0(b, m.dequant.data() + r * cols, static_cast<int64_t>(cols));
    }
    return m;
}

// The matrix on the device in matmul_q8r's row layout.
inline DeviceBuffer<uint8_t> repacked(const Q8Matrix& m) {
    DeviceBuffer<uint8_t> d = to_device<uint8_t>(m.bytes);
    q8r_repack(d.data(), m.rows, m.cols, nullptr);
    return d;
}

// matmul_q8r of n_tok activation rows (x: n_tok x cols) into NaN-poisoned outputs (every
// output must be written), downloaded.
inline std::vector<float> run_q8r(const DeviceBuffer<uint8_t>& w, const Q8Matrix& m,
                                  const std::vector<float>& x, uint32_t n_tok) {
    DeviceBuffer<float> dx = to_device<float>(x);
    DeviceBuffer<float> dy(n_tok * m.rows);
    dy.fill_bytes(0xff);
    matmul_q8r(w.data(), m.rows, m.cols, dx.data(), m.cols, dy.data(), m.rows, n_tok, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    return dy.download();
}

// Each of 15 tokens alone gives bit for bit its rows of one call over all of them.
inline void expect_tokens_independent(const Q8Matrix& m) {
    const DeviceBuffer<uint8_t> w = repacked(m);
    constexpr uint32_t kTok = 15;
    const std::vector<float> x = random_floats(kTok * m.cols, 5);
    const std::vector<float> all = run_q8r(w, m, x, kTok);
    for (uint32_t t = 0; t < kTok; ++t) {
        const std::vector<float> xt(x.begin() + t * m.cols, x.begin() + (t + 1) * m.cols);
        const std::vector<float> one = run_q8r(w, m, xt, 1);
        ASSERT_EQ(0, std::memcmp(one.data(), all.data() + t * m.rows, m.rows * sizeof(float)))
            << "token " << t;
    }
}

}  // namespace ds4::cuda::test
