// Shared by the session tests: an Engine over the tiny synthetic model (window 16, layers
// with compress ratios 0, 0, 4, 128), random token streams and cold-run logits.
#pragma once

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "ds4/engine.h"
#include "maker.h"
#include "rng.h"

namespace ds4::test {

inline constexpr uint64_t kSessionCtx = 512;

inline Engine& tiny_engine() {
    static Engine engine = [] {
        const std::string path = (std::filesystem::temp_directory_path() /
                                  ("ds4-session-test-" + std::to_string(::getpid()) + ".gguf"))
                                     .string();
        synth::MakeOptions opt;
        opt.shape = synth::shape_preset("tiny");
        opt.seed = 5;
        opt.threads = 1;
        opt.fast_blocks = true;
        synth::make_model(path, opt);
        EngineOptions eo;
        eo.threads = 1;
        eo.ctx = kSessionCtx;
        Engine e = Engine::open(path, eo);
        std::filesystem::remove(path);  // the mapping outlives the name
        return e;
    }();
    return engine;
}

inline std::vector<int32_t> random_tokens(uint64_t seed, size_t n) {
    synth::Rng rng(seed);
    std::vector<int32_t> t;
    for (size_t i = 0; i < n; ++i)
        t.push_back(static_cast<int32_t>(rng.below(tiny_engine().model().n_vocab)));
    return t;
}

inline std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

inline std::vector<int32_t> prefix(const std::vector<int32_t>& a, size_t n) {
    return {a.begin(), a.begin() + static_cast<std::ptrdiff_t>(n)};
}

// The logits after the last token, evaluated from scratch in one fresh sequence.
inline std::vector<float> cold_logits(const std::vector<int32_t>& tokens) {
    Engine& e = tiny_engine();
    const SequenceId seq = e.create_sequence();
    Batch b;
    b.add(seq, tokens);
    const Logits out = e.step(b);
    std::vector<float> v(out.row(0).begin(), out.row(0).end());
    e.free_sequence(seq);
    return v;
}

inline bool same_bits(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace ds4::test
