// Loads a golden file of shared/golden (official DeepSeek V4 reference outputs, see
// tests/data/golden/README.md): the ModelArgs as Hparams, the official-format weights
// converted to f32 under their ds4 GGUF names, the tokens and the reference logits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cpu/weight_set.h"
#include "gguf/safetensors.h"
#include "model/hparams.h"

namespace ds4::cpu::test {

// One stored logits mode: either full [T, V], or the compact layout of the `small` files
// (top-k values/indices per position plus full rows at some positions).
struct GoldenLogits {
    uint32_t T = 0, V = 0;
    std::vector<float> full;  // T × V, or empty
    uint32_t k = 0;
    std::vector<float> topk_values;       // T × k, descending
    std::vector<int32_t> topk_indices;    // T × k
    std::vector<float> full_rows;         // n × V
    std::vector<int32_t> full_rows_pos;   // n

    // max_v |ours[v] − ref[t, v]| over the values stored for position t
    float max_abs_diff(uint32_t t, const float* ours) const;
    int32_t argmax(uint32_t t) const;  // reference top-1
    float margin(uint32_t t) const;    // reference top-1 − top-2
};

struct Golden {
    std::string name;
    model::Hparams hp;
    uint32_t T = 0, P = 0;
    std::vector<int32_t> tokens;
    WeightSet weights;
    GoldenLogits decode;                // (a) teacher-forced decode
    GoldenLogits prefill_then_decode;   // (b)
    std::vector<float> full_prefill_last;  // [V]
    std::vector<int32_t> block_out_positions;
    std::vector<std::vector<float>> block_out;  // per layer: positions × hc_mult × dim
    // golden.mtp_logits_decode (T − 1 rows: row i predicts token i + 2); T = 0 when the
    // file has none. The mtp.0.* weights are in `weights` under their ds4 names.
    GoldenLogits mtp;

    static std::unique_ptr<Golden> load(const std::string& path, const std::string& name);
};

// Hparams from the official ModelArgs JSON (golden `model_args`): only the first n_layers
// compress ratios belong to the main model (the last one is the MTP block's).
model::Hparams hparams_from_model_args(const std::string& json);

// Converts every model tensor of an official checkpoint file (the main model and the
// mtp.0.* block) to f32 under its ds4 GGUF name (experts assembled into
// [in, out, n_expert], tid2eid narrowed to I32).
void load_official_weights(const st::File& file, const model::Hparams& hp, WeightSet& ws);

}  // namespace ds4::cpu::test
