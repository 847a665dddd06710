// `ds4 --model-info [-m FILE] [--ctx N]`: what a model file is and what it needs, from
// the engine's summary and memory estimate (the weights are mapped, never read).
#pragma once

#include <string>

#include "cli/options.h"
#include "ds4/engine.h"

namespace ds4::cli {

// The report: metadata, tensors by GGML type with their bytes, the routed experts'
// types, and the memory estimate at `est.ctx` with its total.
std::string format_model_info(const ModelSummary& m, const MemoryEstimate& est);

// Opens the model (one thread, context o.ctx) and prints format_model_info on stdout.
int run_model_info(const Options& o);

}  // namespace ds4::cli
