// Random expert slabs for the grouped expert kernels' tests (matmul_mma_experts.h,
// matmul_q8_experts.h): GGUF rows of IQ2_XXS, Q2_K or Q4_K and their reference values.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gguf/ggml_types.h"
#include "quant/reference.h"

namespace ds4::cuda::test {

struct Slabs {
    std::vector<uint8_t> bytes;  // GGUF rows, all slabs
    std::vector<float> dequant;  // reference values
    uint64_t row_bytes = 0;
};

// Random super-blocks with small positive f16 scales (random bytes elsewhere: any
// pattern is a valid block of these types).
inline Slabs make_slabs(GgmlType type, uint64_t rows, uint64_t cols, uint32_t seed) {
    const uint64_t sb = type == GgmlType::IQ2_XXS ? 66 : type == GgmlType::Q2_K ? 84 : 144, n_sb = rows * cols / 256;
    Slabs m{std::vector<uint8_t>(n_sb * sb), std::vector<float>(rows * cols), cols / 256 * sb};
    std::mt19937 rng(seed);
    for (uint8_t& b : m.bytes) b = static_cast<uint8_t>(rng());
    const auto put_f16 = [&](uint8_t* p) {
        const auto h = static_cast<uint16_t>(0x2000 + rng() % 0x400);  // [2^-7, 2^-6)
        std::memcpy(p, &h, 2);
    };
    for (uint64_t i = 0; i < n_sb; ++i) {
        uint8_t* p = m.bytes.data() + i * sb;
        if (type == GgmlType::IQ2_XXS) put_f16(p);
        if (type == GgmlType::Q2_K) put_f16(p + 80), put_f16(p + 82);
        if (type == GgmlType::Q4_K) put_f16(p), put_f16(p + 2);
    }
    const auto n = static_cast<int64_t>(rows * cols);
    if (type == GgmlType::IQ2_XXS)
        quant::ref::dequant_iq2_xxs(reinterpret_cast<const quant::BlockIQ2XXS*>(m.bytes.data()), m.dequant.data(), n);
    else if (type == GgmlType::Q2_K)
        quant::ref::dequant_q2_K(reinterpret_cast<const quant::BlockQ2K*>(m.bytes.data()), m.dequant.data(), n);
    else
        quant::ref::dequant_q4_K(reinterpret_cast<const quant::BlockQ4K*>(m.bytes.data()), m.dequant.data(), n);
    return m;
}

// One weight row against one token, in double: the dot with the quantized activations
// (xhat, and Σ|w·x̂| for its tolerance), with the f32 activations (and Σ|w·x|), and the
// activation-rounding bound Σ|w|·step/2 (step: each value's quantization step).
struct RowRef {
    double q = 0, mag_q = 0, f = 0, mag_f = 0, bound = 0;
};
inline RowRef row_ref(const float* w, const double* xhat, const float* x, const double* step, uint64_t cols) {
    RowRef r;
    for (uint64_t c = 0; c < cols; ++c) {
        const double wv = w[c], pq = wv * xhat[c], pf = wv * x[c];
        r.q += pq, r.mag_q += std::fabs(pq), r.f += pf, r.mag_f += std::fabs(pf);
        r.bound += std::fabs(wv) * step[c] / 2;
    }
    return r;
}

}  // namespace ds4::cuda::test
