// Helpers shared by the engine tests: model paths, a self-deleting temporary directory,
// running the CLI, and comparing logits bit for bit.
#pragma once

#include <sys/wait.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "ds4/engine.h"

namespace ds4::testing {

inline const std::string kDemoModel = DS4_BINARY_DIR "/ds4-demo.gguf";
inline const std::string kTinyModel = DS4_ENGINE_TINY_MODEL;

inline EngineOptions options(uint64_t ctx, unsigned threads = 2) {
    EngineOptions o;
    o.ctx = ctx;
    o.threads = threads;
    return o;
}

class TempDir {
  public:
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "ds4-engine-test-XXXXXX").string();
        if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string file(const std::string& name) const { return (path_ / name).string(); }
    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
};

// Deterministic pseudo-random token ids in [0, vocab).
inline std::vector<int32_t> tokens(size_t n, uint32_t vocab, uint32_t seed) {
    std::vector<int32_t> t(n);
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (auto& x : t) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x = static_cast<int32_t>((s >> 33) % vocab);
    }
    return t;
}

// Copies row i of `l` (the logits object is reused by later steps).
inline std::vector<float> row(const Logits& l, size_t i) {
    const std::span<const float> r = l.row(i);
    return {r.begin(), r.end()};
}

inline bool bit_equal(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Logits after every token of `toks`, fed one by one to a fresh sequence.
inline std::vector<std::vector<float>> decode_one_by_one(Engine& e, std::span<const int32_t> toks) {
    const SequenceId s = e.create_sequence();
    std::vector<std::vector<float>> out;
    Batch b;
    for (int32_t t : toks) {
        b.clear();
        b.add_token(s, t);
        out.push_back(row(e.step(b), 0));
    }
    e.free_sequence(s);
    return out;
}

}  // namespace ds4::testing
