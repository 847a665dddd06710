// Seeded test data for the quant kernel tests: random weight blocks (random bytes with
// sane f16 scales), random Q8_K / Q8_0F activations with consistent bsums, and the
// error bounds the dot tests use.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "quant/blocks.h"
#include "quant/kernels.h"
#include "quant/scalars.h"

namespace ds4::quant::test {

// How block contents are drawn.
enum class Fill {
    Random,   // random bytes, scales uniform in ±[1e-3, 1e-1] (f16)
    Zero,     // random codes, every scale 0
    MaxCode,  // every code/scale byte 0xff (Q8_0: +127 and −128 alternating)
    ExtremeScales,  // random bytes, f16 scales from {±subnormal, ±0, 1, ±65504, ...}
};

inline const char* fill_name(Fill f) {
    switch (f) {
        case Fill::Random: return "random";
        case Fill::Zero: return "zero-scales";
        case Fill::MaxCode: return "max-codes";
        case Fill::ExtremeScales: return "extreme-scales";
    }
    return "?";
}

class Rng {
public:
    explicit Rng(uint64_t seed) : gen_(seed) {}
    uint8_t byte() { return static_cast<uint8_t>(gen_() & 0xff); }
    void bytes(void* dst, size_t n) {
        auto* p = static_cast<uint8_t*>(dst);
        for (size_t i = 0; i < n; ++i) p[i] = byte();
    }
    float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen_); }
    float normal() { return std::normal_distribution<float>(0.f, 1.f)(gen_); }
    // ±[1e-3, 1e-1] as f16: the magnitudes real checkpoints use
    uint16_t f16_scale(bool allow_negative = true) {
        float v = uniform(1e-3f, 1e-1f);
        if (allow_negative && (gen_() & 1)) v = -v;
        return f32_to_f16(v);
    }
    int64_t below(int64_t n) { return static_cast<int64_t>(gen_() % static_cast<uint64_t>(n)); }

private:
    std::mt19937_64 gen_;
};

inline uint16_t pick_scale(Fill fill, Rng& rng) {
    static constexpr uint16_t kExtreme[] = {0x0001, 0x8001, 0x03ff, 0x0400, 0x7bff,
                                            0xfbff, 0x8000, 0x0000, 0x3c00};
    switch (fill) {
        case Fill::Zero: return 0;
        case Fill::ExtremeScales: return kExtreme[rng.below(std::size(kExtreme))];
        default: return rng.f16_scale();
    }
}

template <typename Block>
std::vector<Block> random_blocks(int64_t nb, Fill fill, Rng& rng) {
    std::vector<Block> v(static_cast<size_t>(nb));
    if (fill == Fill::MaxCode) {
        std::memset(v.data(), 0xff, v.size() * sizeof(Block));
    } else {
        rng.bytes(v.data(), v.size() * sizeof(Block));
    }
    for (Block& b : v) {
        b.d = pick_scale(fill, rng);
        if constexpr (requires { b.dmin; }) b.dmin = pick_scale(fill, rng);
        if constexpr (std::is_same_v<Block, BlockQ8_0>) {
            if (fill == Fill::MaxCode) {
                for (int i = 0; i < QK8_0; ++i) b.qs[i] = static_cast<int8_t>(i % 2 ? -128 : 127);
            }
        }
    }
    return v;
}

// Activations as the kernels see them. Random: random int8 (the full range, −128
// included) and d in ±[1e-3, 1]; MinQ: every q = −128; Zero: d = 0.
enum class ActFill { Random, MinQ, Zero };

inline const char* act_fill_name(ActFill f) {
    switch (f) {
        case ActFill::Random: return "random";
        case ActFill::MinQ: return "all -128";
        case ActFill::Zero: return "zero scale";
    }
    return "?";
}

inline void fill_bsums(BlockQ8K& y) {
    for (int g = 0; g < QK_K / 16; ++g) {
        int sum = 0;
        for (int i = 0; i < 16; ++i) sum += y.qs[16 * g + i];
        y.bsums[g] = static_cast<int16_t>(sum);
    }
}

inline std::vector<BlockQ8K> random_q8_K(int64_t nb, ActFill fill, Rng& rng) {
    std::vector<BlockQ8K> v(static_cast<size_t>(nb));
    for (BlockQ8K& y : v) {
        if (fill == ActFill::MinQ) {
            std::memset(y.qs, 0x80, sizeof(y.qs));
        } else {
            rng.bytes(y.qs, sizeof(y.qs));
        }
        y.d = fill == ActFill::Zero ? 0.f : rng.uniform(1e-3f, 1.f) * ((rng.byte() & 1) ? -1.f : 1.f);
        fill_bsums(y);
    }
    return v;
}

inline std::vector<BlockQ8_0F> random_q8_0f(int64_t nb, ActFill fill, Rng& rng) {
    std::vector<BlockQ8_0F> v(static_cast<size_t>(nb));
    for (BlockQ8_0F& y : v) {
        if (fill == ActFill::MinQ) {
            std::memset(y.qs, 0x80, sizeof(y.qs));
        } else {
            rng.bytes(y.qs, sizeof(y.qs));
        }
        y.d = fill == ActFill::Zero ? 0.f : rng.uniform(1e-3f, 1.f);
    }
    return v;
}

inline std::vector<float> random_floats(int64_t n, Rng& rng, float scale = 1.f) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = scale * rng.normal();
    return v;
}

inline std::vector<uint16_t> random_f16(int64_t n, Rng& rng) {
    std::vector<uint16_t> v(static_cast<size_t>(n));
    for (uint16_t& h : v) h = f32_to_f16(rng.normal());
    return v;
}

inline uint32_t float_bits(float f) {
    uint32_t u = 0;
    std::memcpy(&u, &f, sizeof(u));
    return u;
}

inline std::string isa_list() {
    std::string s;
    for (const Kernels* k : available_kernels()) s += std::string(s.empty() ? "" : ", ") + isa_name(k->isa);
    return s;
}

// The ISAs compared against scalar (everything available except scalar itself).
inline std::vector<const Kernels*> fast_kernels() {
    std::vector<const Kernels*> v;
    for (const Kernels* k : available_kernels()) {
        if (k->isa != Isa::Scalar) v.push_back(k);
    }
    return v;
}

// Unit roundoff of f32.
constexpr double kU32 = 1.0 / (1 << 24);

}  // namespace ds4::quant::test
