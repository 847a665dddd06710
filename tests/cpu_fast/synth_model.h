// The small synthetic q2 model of the whole-model Fast tests (demo shape: 6 layers,
// D 256, IQ2_XXS/Q2_K experts, Q8_0 dense, F16 small projections), generated once per
// process, and a runner that feeds a token sequence in chunks.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "cpu/matvec.h"
#include "gguf/gguf.h"
#include "maker.h"
#include "model/metadata.h"
#include "rng.h"

namespace ds4::cpu::test {

constexpr uint32_t kTokens = 32;

struct SynthModel {
    gguf::File file;
    WeightSet ws;
    std::unique_ptr<CpuModel> model;
    std::vector<int32_t> tokens;

    explicit SynthModel(const std::string& path) : file(make(path)) {
        add_gguf_views(ws, file);
        model = std::make_unique<CpuModel>(model::read_hparams(file), ws);
        synth::Rng rng(7);
        for (uint32_t i = 0; i < kTokens; ++i) tokens.push_back(static_cast<int32_t>(rng.below(model->hparams().n_vocab)));
    }

    // Writes the model under a per-process name (ctest may run test cases of several
    // binaries at once), maps it and unlinks it: the mapping outlives the name.
    static gguf::File make(const std::string& path) {
        synth::MakeOptions opt;
        opt.shape = synth::shape_preset("demo");
        opt.seed = 3;
        opt.threads = 1;
        opt.fast_blocks = true;
        synth::make_model(path, opt);
        gguf::File f = gguf::File::open(path);
        std::filesystem::remove(path);
        return f;
    }

    // Logits after every token, fed in chunks of the given sizes (cycled).
    // `hc` (optional) receives every block's output HC state, layer-major.
    std::vector<float> run(Numerics mode, std::vector<uint32_t> chunks, ThreadPool* pool,
                           std::vector<std::vector<float>>* hc = nullptr) const {
        NumericsScope scope(mode);
        const uint32_t V = model->hparams().n_vocab;
        CpuForward fwd(*model, pool);
        if (hc != nullptr) {
            hc->assign(model->hparams().n_layer, {});
            fwd.set_block_observer([hc](uint32_t il, uint64_t, std::span<const float> s) {
                (*hc)[il].insert((*hc)[il].end(), s.begin(), s.end());
            });
        }
        KvState state(model->hparams(), kTokens);
        std::vector<float> logits(uint64_t{kTokens} * V);
        std::vector<uint32_t> rows;
        for (uint32_t pos = 0, c = 0; pos < kTokens; ++c) {
            const uint32_t n = std::min(chunks[c % chunks.size()], kTokens - pos);
            rows.resize(n);
            std::iota(rows.begin(), rows.end(), 0u);
            fwd.eval(state, pos, {tokens.data() + pos, n}, rows, {logits.data() + uint64_t{pos} * V, uint64_t{n} * V});
            pos += n;
        }
        return logits;
    }
};

inline const SynthModel& synth_model() {
    static const SynthModel m(std::string(DS4_BINARY_DIR) + "/cpu_fast_demo_q2." + std::to_string(getpid()) + ".gguf");
    return m;
}

}  // namespace ds4::cpu::test
