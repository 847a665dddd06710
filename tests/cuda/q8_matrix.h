// Random Q8_0 matrices for the repacked-row kernels' tests (test_matmul_q8r*.cpp): the
// GGUF bytes, their dequantized values (the reference), and the repacked device copy.
#pragma once

#include <cstdint>
#include <vector>

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

}  // namespace ds4::cuda::test
