// Random weight matrices and small helpers shared by the Numerics::Fast tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/tensor_view.h"
#include "fast_blocks.h"
#include "quant/quant.h"
#include "rng.h"

namespace ds4::cpu::test {

// A weight tensor of `type` with dims {in, out, n_mat}: valid random blocks of RMS
// 1/sqrt(in) (so products keep the activations' scale), or F16-rounded Gaussians.
struct RandomWeights {
    std::vector<uint8_t> bytes;
    TensorView view;

    RandomWeights(GgmlType type, uint64_t in, uint64_t out, uint64_t seed, uint64_t n_mat = 1) {
        const uint64_t rows = out * n_mat, rb = ggml_row_bytes(type, in);
        bytes.resize(rows * rb);
        synth::Rng rng(seed);
        const float rms = 1.0f / std::sqrt(static_cast<float>(in));
        std::vector<float> f(in);
        for (uint64_t r = 0; r < rows; ++r) {
            uint8_t* dst = bytes.data() + r * rb;
            if (synth::has_random_blocks(type)) {
                synth::random_blocks(type, rms, rng, {dst, rb}, static_cast<int64_t>(in));
            } else {
                for (auto& v : f) v = rms * rng.gauss();
                quant::quantize_row(type, f.data(), dst, static_cast<int64_t>(in));
            }
        }
        view.type = type;
        view.n_dims = n_mat > 1 ? 3 : 2;
        view.dims = {in, out, n_mat, 1};
        view.data = bytes.data();
    }
};

inline std::vector<float> random_vector(uint64_t n, uint64_t seed, float scale = 1.0f) {
    synth::Rng rng(seed);
    std::vector<float> v(n);
    for (auto& x : v) x = scale * rng.gauss();
    return v;
}

// ‖a − b‖₂ / ‖b‖₂
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num += double(a[i] - b[i]) * (a[i] - b[i]);
        den += double(b[i]) * b[i];
    }
    return std::sqrt(num / den);
}

}  // namespace ds4::cpu::test
