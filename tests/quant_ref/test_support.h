// Helpers for the reference-quantizer tests: a minimal reader for the one golden
// safetensors file (kept local so these tests do not depend on the project's reader)
// and seeded test-data generators.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ds4::quant::test {

// All tensors of a small safetensors file, as raw bytes keyed by name.
class TinySafetensors {
  public:
    explicit TinySafetensors(const std::string& path) {
        std::ifstream in(path, std::ios::binary);
        if (!in) throw std::runtime_error("cannot open " + path);
        uint64_t header_len = 0;
        in.read(reinterpret_cast<char*>(&header_len), 8);
        std::string header(header_len, '\0');
        in.read(header.data(), static_cast<std::streamsize>(header_len));
        const std::vector<char> data((std::istreambuf_iterator<char>(in)),
                                     std::istreambuf_iterator<char>());
        const auto json = nlohmann::json::parse(header);
        for (const auto& [name, info] : json.items()) {
            if (name == "__metadata__") continue;
            const auto begin = info["data_offsets"][0].get<size_t>();
            const auto end = info["data_offsets"][1].get<size_t>();
            if (end > data.size() || begin > end)
                throw std::runtime_error("bad offsets for " + name);
            tensors_[name] = std::vector<uint8_t>(data.begin() + static_cast<std::ptrdiff_t>(begin),
                                                  data.begin() + static_cast<std::ptrdiff_t>(end));
        }
    }

    const std::vector<uint8_t>& bytes(const std::string& name) const {
        const auto it = tensors_.find(name);
        if (it == tensors_.end()) throw std::runtime_error("no tensor " + name);
        return it->second;
    }

    std::vector<float> floats(const std::string& name) const {
        const auto& b = bytes(name);
        std::vector<float> out(b.size() / 4);
        std::memcpy(out.data(), b.data(), out.size() * 4);
        return out;
    }

  private:
    std::map<std::string, std::vector<uint8_t>> tensors_;
};

inline std::string quant_vectors_path() {
    return std::string(DS4_TEST_DATA_DIR) + "/golden/quant_vectors.safetensors";
}

enum class Dist { Normal, Uniform, HeavyTailed, Zeros, Constant, Outlier };

inline const char* dist_name(Dist d) {
    switch (d) {
        case Dist::Normal:
            return "normal";
        case Dist::Uniform:
            return "uniform";
        case Dist::HeavyTailed:
            return "heavy-tailed";
        case Dist::Zeros:
            return "zeros";
        case Dist::Constant:
            return "constant";
        case Dist::Outlier:
            return "outlier";
    }
    return "?";
}

// n values drawn from `dist` (scale ~1): normal N(0,1); uniform U(-1,1); heavy-tailed
// Student-t with 3 degrees of freedom; all zeros; constant 0.37; normal with one
// element per 256-block replaced by ±60 (an outlier ~60σ).
inline std::vector<float> make_data(Dist dist, size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    std::uniform_real_distribution<float> uniform(-1.f, 1.f);
    std::student_t_distribution<float> student(3.f);
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) {
        switch (dist) {
            case Dist::Normal:
                x[i] = normal(rng);
                break;
            case Dist::Uniform:
                x[i] = uniform(rng);
                break;
            case Dist::HeavyTailed:
                x[i] = student(rng);
                break;
            case Dist::Zeros:
                x[i] = 0.f;
                break;
            case Dist::Constant:
                x[i] = 0.37f;
                break;
            case Dist::Outlier:
                x[i] = normal(rng);
                break;
        }
    }
    if (dist == Dist::Outlier) {
        for (size_t b = 0; b < n / 256; ++b)
            x[b * 256 + (rng() % 256)] = (rng() & 1) ? 60.f : -60.f;
    }
    return x;
}

// Positive importance weights shaped like an imatrix (mean of squared activations):
// log-normal spread over about two decades.
inline std::vector<float> make_importance(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<float> w(n);
    for (auto& v : w) v = std::exp(1.2f * normal(rng));
    return w;
}

// sqrt(Σ w(x−y)² / Σ w x²); w = null means unweighted.
inline double relative_rmse(const std::vector<float>& x, const std::vector<float>& y,
                            const float* w = nullptr) {
    double num = 0;
    double den = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const double wi = w != nullptr ? w[i] : 1.0;
        const double d = static_cast<double>(x[i]) - y[i];
        num += wi * d * d;
        den += wi * static_cast<double>(x[i]) * x[i];
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace ds4::quant::test
