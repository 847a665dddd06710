#include "cpu/numerics.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numbers>

#include "ds4/error.h"

namespace ds4::cpu {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

float silu(float x) { return x / (1.0f + std::exp(-x)); }

float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

float rms_inv(const float* x, uint64_t n, float eps) {
    // The official code squares in f32 (x.square()), then averages; keep the f32
    // squares and sum them exactly.
    double sum = 0;
    for (uint64_t i = 0; i < n; ++i) {
        const float sq = x[i] * x[i];
        sum += sq;
    }
    const auto mean = static_cast<float>(sum / static_cast<double>(n));
    return 1.0f / std::sqrt(mean + eps);
}

void rms_norm(const float* x, const float* w, uint64_t n, float eps, float* out) {
    const float r = rms_inv(x, n, eps);
    for (uint64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * r);
}

void rms_norm_inplace(float* x, uint64_t n, float eps) {
    const float r = rms_inv(x, n, eps);
    for (uint64_t i = 0; i < n; ++i) x[i] *= r;
}

// ---- RoPE ----

RopeFreqs RopeFreqs::for_layer(const model::Hparams& hp, uint32_t ratio) {
    const uint32_t rd = hp.rope_dim;
    const uint32_t half = rd / 2;
    const bool compressed = ratio != 0;
    const double base = compressed ? hp.compress_rope_theta : hp.rope_theta;
    RopeFreqs f;
    f.omega.resize(half);
    // official: 1 / base^(arange(0, rd, 2) / rd), all f32
    for (uint32_t j = 0; j < half; ++j) {
        const float e = static_cast<float>(2 * j) / static_cast<float>(rd);
        const auto p = static_cast<float>(std::pow(base, static_cast<double>(e)));
        f.omega[j] = 1.0f / p;
    }
    // YaRN only on compressed layers, and then at every position ([TRAP] §13.2). The
    // correction range is real arithmetic on the config values; the ramp is f32.
    if (compressed && hp.original_seq_len > 0) {
        const auto corr = [&](double rotations) {
            return rd * std::log(static_cast<double>(hp.original_seq_len) /
                                 (rotations * 2 * std::numbers::pi)) /
                   (2 * std::log(base));
        };
        const double low = std::max(std::floor(corr(hp.beta_fast)), 0.0);
        double high = std::min(std::ceil(corr(hp.beta_slow)), static_cast<double>(rd - 1));
        if (high == low) high += 0.001;
        const auto flow = static_cast<float>(low);
        const auto span = static_cast<float>(high - low);
        for (uint32_t j = 0; j < half; ++j) {
            const float ramp = std::clamp((static_cast<float>(j) - flow) / span, 0.0f, 1.0f);
            const float smooth = 1.0f - ramp;
            const float w = f.omega[j];
            f.omega[j] = w / hp.rope_factor * (1.0f - smooth) + w * smooth;
        }
    }
    return f;
}

void RopeAngles::compute(const RopeFreqs& f, uint64_t pos) {
    const size_t half = f.omega.size();
    cos.resize(half);
    sin.resize(half);
    const auto p = static_cast<float>(pos);
    for (size_t j = 0; j < half; ++j) {
        const float theta = p * f.omega[j];  // one f32 rounding, as torch.outer
        cos[j] = static_cast<float>(std::cos(static_cast<double>(theta)));
        sin[j] = static_cast<float>(std::sin(static_cast<double>(theta)));
    }
}

void rope_rotate(float* x, const RopeAngles& a, bool inverse) {
    const size_t half = a.cos.size();
    for (size_t j = 0; j < half; ++j) {
        const float re = x[2 * j], im = x[2 * j + 1];
        const float c = a.cos[j], s = inverse ? -a.sin[j] : a.sin[j];
        x[2 * j] = re * c - im * s;
        x[2 * j + 1] = re * s + im * c;
    }
}

// ---- QAT ----

float e4m3_round(float v) {
    const float a = std::fabs(v);
    if (a == 0.0f) return v;
    // Below the smallest normal (2^-6) the grid is the subnormal step 2^-9; above it,
    // 3 mantissa bits give a step of 2^(e-3). nearbyint rounds half to even.
    const int e = a < 0x1p-6f ? -6 : std::ilogb(a);
    const float step = std::ldexp(1.0f, e - 3);
    const float q = std::nearbyint(a / step) * step;
    return std::copysign(q, v);
}

float e2m1_round(float v) {
    static constexpr float kGrid[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    static constexpr float kMids[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    const float a = std::fabs(v);
    // bucketize(right=False): the index of the first midpoint >= a, so an exact midpoint
    // goes down; the midpoints whose even neighbour is the upper value go up instead.
    int idx = 0;
    while (idx < 7 && kMids[idx] < a) ++idx;
    if (a == 0.75f || a == 1.75f || a == 3.5f) ++idx;
    if (v == 0.0f) return 0.0f;
    return v < 0 ? -kGrid[idx] : kGrid[idx];
}

float pow2_ceil(float t) {
    const auto bits = std::bit_cast<uint32_t>(t);
    const int exp = static_cast<int>((bits >> 23) & 0xff);
    const int e = exp - 127 + ((bits & 0x7fffff) != 0 ? 1 : 0);
    return std::bit_cast<float>(static_cast<uint32_t>(e + 127) << 23);
}

namespace {

float block_amax(const float* x, uint64_t n) {
    float m = 0.0f;
    for (uint64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
    return m;
}

}  // namespace

void fp8_simulate(float* x, uint64_t n) {
    constexpr uint64_t kBlock = 64;
    const float inv_max = static_cast<float>(1.0 / 448.0);
    const float amax_floor = static_cast<float>(1e-4);
    for (uint64_t b = 0; b < n; b += kBlock) {
        const float amax = std::max(block_amax(x + b, kBlock), amax_floor);
        const float s = pow2_ceil(amax * inv_max);
        for (uint64_t i = b; i < b + kBlock; ++i) {
            const float y = std::clamp(x[i] / s, -448.0f, 448.0f);
            x[i] = e4m3_round(y) * s;
        }
    }
}

void fp4_simulate(float* x, uint64_t n) {
    constexpr uint64_t kBlock = 32;
    const float inv_max = static_cast<float>(1.0 / 6.0);
    const float amax_floor = 6.0f * 0x1p-126f;
    for (uint64_t b = 0; b < n; b += kBlock) {
        const float amax = std::max(block_amax(x + b, kBlock), amax_floor);
        const float s = pow2_ceil(amax * inv_max);
        for (uint64_t i = b; i < b + kBlock; ++i) {
            const float y = std::clamp(x[i] / s, -6.0f, 6.0f);
            x[i] = e2m1_round(y) * s;
        }
    }
}

void hadamard_scaled(float* x, uint64_t n) {
    if (n == 0 || (n & (n - 1)) != 0) fail("hadamard: size ", n, " is not a power of two");
    // Butterflies in double give x·H essentially exactly (the official shim multiplies by
    // the Sylvester matrix in f32); then one f32 rounding and the f32 scale product.
    double buf[1024];
    if (n > 1024) fail("hadamard: size ", n, " exceeds 1024");
    for (uint64_t i = 0; i < n; ++i) buf[i] = x[i];
    for (uint64_t len = 1; len < n; len <<= 1) {
        for (uint64_t i = 0; i < n; i += 2 * len) {
            for (uint64_t j = i; j < i + len; ++j) {
                const double a = buf[j], b = buf[j + len];
                buf[j] = a + b;
                buf[j + len] = a - b;
            }
        }
    }
    const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
    for (uint64_t i = 0; i < n; ++i) x[i] = static_cast<float>(buf[i]) * scale;
}

// ---- Sinkhorn ----

void sinkhorn(float* c, uint32_t h, uint32_t iters, float eps) {
    const auto row_sum = [&](uint32_t a) {
        float s = 0.0f;
        for (uint32_t b = 0; b < h; ++b) s += c[a * h + b];
        return s;
    };
    const auto col_sum = [&](uint32_t b) {
        float s = 0.0f;
        for (uint32_t a = 0; a < h; ++a) s += c[a * h + b];
        return s;
    };
    const auto normalise_columns = [&] {
        for (uint32_t b = 0; b < h; ++b) {
            const float d = col_sum(b) + eps;
            for (uint32_t a = 0; a < h; ++a) c[a * h + b] /= d;
        }
    };
    // round 1: row softmax, then + eps, then columns
    for (uint32_t a = 0; a < h; ++a) {
        float m = c[a * h];
        for (uint32_t b = 1; b < h; ++b) m = std::max(m, c[a * h + b]);
        for (uint32_t b = 0; b < h; ++b) c[a * h + b] = std::exp(c[a * h + b] - m);
        const float s = row_sum(a);
        for (uint32_t b = 0; b < h; ++b) c[a * h + b] = c[a * h + b] / s + eps;
    }
    normalise_columns();
    for (uint32_t it = 1; it < iters; ++it) {
        for (uint32_t a = 0; a < h; ++a) {
            const float d = row_sum(a) + eps;
            for (uint32_t b = 0; b < h; ++b) c[a * h + b] /= d;
        }
        normalise_columns();
    }
}

// ---- top-k ----

void top_k_lower_index(std::span<const float> scores, uint32_t k, std::span<uint32_t> idx) {
    const auto n = static_cast<uint32_t>(scores.size());
    if (idx.size() < n) fail("top_k: index scratch of ", idx.size(), " < ", n);
    if (k > n) fail("top_k: k = ", k, " > ", n, " candidates");
    for (uint32_t i = 0; i < n; ++i) idx[i] = i;
    // A strict total order (score descending, then index ascending) makes the selected
    // set unique, so exact ties always resolve to the lower index.
    const auto before = [&](uint32_t a, uint32_t b) {
        return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
    };
    if (k < n) std::nth_element(idx.begin(), idx.begin() + k, idx.begin() + n, before);
    std::sort(idx.begin(), idx.begin() + k);
}

}  // namespace ds4::cpu
