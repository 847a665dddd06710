// Helpers shared by the CUDA tests: a GPU-present guard and seeded random data.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "cuda/device.h"

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

}  // namespace ds4::cuda::test
