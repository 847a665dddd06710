// The synthetic DS4 model maker: writes a GGUF with ds4's exact metadata, tokenizer keys,
// tensor names, shapes and types, filled with seeded random weights (init.h) that keep a
// forward pass numerically sane. Tensors are generated, quantized and written in a
// streaming pipeline, so memory stays at a few hundred MB even for the 81 GB published
// shape. The output depends only on the options (not on the thread count).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/hparams.h"
#include "model/tensor_plan.h"

namespace ds4::synth {

struct MakeOptions {
    model::Hparams shape = model::Hparams::published();
    model::PlanOptions plan;
    uint64_t seed = 1;
    unsigned threads = 0;      // 0: all hardware threads
    bool fast_blocks = false;  // random quant blocks instead of quantizing (fast_blocks.h)
    std::string name;          // general.name; empty: a description of the options
    // A GGUF whose tokenizer metadata the model carries instead of the synthetic byte
    // vocabulary (shape.n_vocab must equal its token count); empty: synthetic vocabulary.
    std::string vocab_gguf;
    bool progress = false;     // progress lines on stderr for large files
    // Forced-acceptance MTP test model (copy_head.h): blocks that add nothing and an MTP
    // block whose greedy draft is the main model's next greedy token. Needs plan.mtp.
    bool mtp_copy_head = false;
};

struct MakeResult {
    size_t n_tensors = 0;
    uint64_t tensor_bytes = 0;  // payload
    uint64_t file_bytes = 0;    // with header, metadata and padding
    double seconds = 0;
};

// Named starting shapes: "published" (43 layers, exact), "demo" (the few-MB embedded
// model: 6 layers 0,0,4,128,4,128, D 256, 16 experts), "tiny" (unit tests: 4 layers, D 256,
// 4 experts). Throws for other names.
model::Hparams shape_preset(std::string_view name);

// The published compress-ratio rule (model.md §1.2) for any layer count.
std::vector<uint32_t> default_ratios(uint32_t n_layer);

// Fast random blocks are the default above 1e10 weights: beyond that the reference
// IQ2_XXS search takes hours.
bool wants_fast_blocks(const model::TensorPlan& plan);

MakeResult make_model(const std::string& path, const MakeOptions& opt);

}  // namespace ds4::synth
