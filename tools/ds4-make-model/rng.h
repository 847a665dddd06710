// Counter-based random numbers for the synthetic model: every tensor row gets its own
// generator seeded from (model seed, tensor name, row), so the file is byte-identical for
// a seed whatever the thread count or chunking, and independent of the C++ library
// (std::normal_distribution is implementation-defined; this is not).
#pragma once

#include <cstdint>
#include <string_view>

namespace ds4::synth {

// SplitMix64 (Steele, Lea, Flood 2014): one add and a 64-bit finaliser per draw, passes
// BigCrush, and any 64-bit state is a valid seed.
class Rng {
  public:
    explicit Rng(uint64_t seed) : state_(seed) {}

    uint64_t next() {
        uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }

    // Uniform in [0, n) (n > 0). Lemire's multiply-shift; the bias (< n / 2^64) is far
    // below anything a synthetic model could notice.
    uint32_t below(uint32_t n) {
        return static_cast<uint32_t>(((next() >> 32) * uint64_t(n)) >> 32);
    }

    // Approximately standard normal: the sum of four independent 16-bit uniforms
    // (Irwin-Hall, n = 4), centred and scaled to unit variance. Bounded to ±3.46σ, which
    // suits random weights (no rare huge outliers) and costs one draw per value.
    float gauss() {
        const uint64_t r = next();
        const uint64_t s = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
        // mean 4·65535/2; variance 4·(65536² − 1)/12 → σ = 37837.23...
        constexpr double kMean = 2.0 * 65535.0;
        constexpr float kInvSigma = 1.0f / 37837.2266f;
        return static_cast<float>(static_cast<double>(s) - kMean) * kInvSigma;
    }

  private:
    uint64_t state_;
};

// FNV-1a 64 of a string: a stable per-tensor stream id.
inline uint64_t name_hash(std::string_view s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return h;
}

// The seed of one row: the three inputs pushed through the SplitMix finaliser so that
// neighbouring rows and seeds give unrelated streams.
inline uint64_t row_seed(uint64_t model_seed, uint64_t tensor_hash, uint64_t row) {
    Rng a(model_seed ^ 0x6a09e667f3bcc909ull);
    Rng b(a.next() ^ tensor_hash);
    Rng c(b.next() ^ row);
    return c.next();
}

}  // namespace ds4::synth
