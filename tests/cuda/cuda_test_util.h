// Helpers shared by the CUDA tests: a GPU-present guard and seeded random data.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "cuda/device.h"
#include "cuda/matmul_mma.h"

namespace ds4::cuda::test {

#define DS4_REQUIRE_GPU()                                                   \
    do {                                                                    \
        if (::ds4::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA GPU"; \
    } while (0)

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

// The f64 dot of a dequantized weight row and an activation row, and the sum of the
// products' magnitudes: the scale of an f32 kernel's rounding error (the matvec tests
// allow 1e-5 * mag + 1e-6).
struct RefDot {
    double sum = 0, mag = 0;
};
inline RefDot ref_dot(const float* w, const float* x, uint64_t n) {
    RefDot d;
    for (uint64_t c = 0; c < n; ++c) {
        const double p = static_cast<double>(w[c]) * x[c];
        d.sum += p;
        d.mag += std::fabs(p);
    }
    return d;
}

// Sets the tensor-core path of matmul_q8r_mma for a scope (tests of either path).
class MmaPrecisionScope {
public:
    explicit MmaPrecisionScope(MmaPrecision p) : old_(mma_precision()) { set_mma_precision(p); }
    ~MmaPrecisionScope() { set_mma_precision(old_); }
    MmaPrecisionScope(const MmaPrecisionScope&) = delete;
    MmaPrecisionScope& operator=(const MmaPrecisionScope&) = delete;

private:
    MmaPrecision old_;
};
inline const char* precision_name(MmaPrecision p) { return p == MmaPrecision::Half ? "half" : "int8"; }

}  // namespace ds4::cuda::test
