// Shared fixtures of the steering tests: a synthetic tiny q2 model (4 layers, D 256,
// written once per process, mapped, then unlinked), seeded unit directions and
// per-process temporary file names.
#pragma once

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "gguf/gguf.h"
#include "maker.h"
#include "model/metadata.h"
#include "rng.h"

namespace ds4::cpu::test {

inline std::string temp_path(const std::string& stem) {
    return std::string(DS4_BINARY_DIR) + "/steering_" + stem + "." + std::to_string(getpid());
}

// Writes the tiny synthetic model to `path` (kept: the engine tests open it by name).
inline void write_tiny_model(const std::string& path) {
    synth::MakeOptions opt;
    opt.shape = synth::shape_preset("tiny");
    opt.seed = 5;
    opt.threads = 1;
    opt.fast_blocks = true;
    synth::make_model(path, opt);
}

struct TinyModel {
    std::string path = temp_path("tiny.gguf");
    gguf::File file;
    WeightSet ws;
    std::unique_ptr<CpuModel> model;

    TinyModel() : file((write_tiny_model(path), gguf::File::open(path))) {
        add_gguf_views(ws, file);
        model = std::make_unique<CpuModel>(model::read_hparams(file), ws);
    }
    ~TinyModel() { std::filesystem::remove(path); }
    const model::Hparams& hp() const { return model->hparams(); }
};

inline const TinyModel& tiny_model() {
    static const TinyModel m;
    return m;
}

// n_layer × n_embd values, each row a seeded random unit vector.
inline std::vector<float> unit_directions(uint32_t n_layer, uint32_t n_embd, uint64_t seed) {
    synth::Rng rng(seed);
    std::vector<float> v(uint64_t{n_layer} * n_embd);
    for (uint32_t il = 0; il < n_layer; ++il) {
        float* row = v.data() + uint64_t{il} * n_embd;
        double norm = 0;
        for (uint32_t i = 0; i < n_embd; ++i) {
            row[i] = static_cast<float>(rng.below(2001)) / 1000.0f - 1.0f;
            norm += double{row[i]} * row[i];
        }
        for (uint32_t i = 0; i < n_embd; ++i) row[i] = static_cast<float>(row[i] / std::sqrt(norm));
    }
    return v;
}

}  // namespace ds4::cpu::test
