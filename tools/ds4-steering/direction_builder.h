// Building steering directions from the model's own activations (formats.md §8.1, the
// builder of ds4's dir-steering/tools): for each prompt the chosen sublayer output
// (FFN or attention, before steering and before the HC post step) of its LAST token at
// every layer; then per layer
//
//     d = normalize(mean(good) − mean(bad))                (or the mean of normalized
//                                                            per-pair differences)
//     d = normalize(d − (d·b)·b),  b = normalize(mean(bad))  (unless disabled)
//
// so steering with d removes what separates the good prompts from the bad ones without
// also removing the bad prompts' common direction.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cpu/forward.h"
#include "cpu/steering.h"

namespace ds4::steering {

// n_layer × n_embd: the site's output of the last token of `tokens` at every layer, with
// the model's default numerics. `tokens` must be non-empty.
std::vector<float> last_token_activations(const cpu::CpuModel& model, std::span<const int32_t> tokens,
                                          cpu::SteeringSite site, cpu::ThreadPool* pool = nullptr);

struct DirectionOptions {
    bool pair_normalize = false;   // mean of normalized (good_i − bad_i) instead of mean difference
    bool orthogonalize = true;     // remove the component along normalize(mean(bad))
};

// Directions (n_layer × n_embd, unit rows; an all-zero row stays zero) from activation
// tables of equal shape. pair_normalize needs as many good as bad tables.
std::vector<float> build_directions(std::span<const std::vector<float>> good, std::span<const std::vector<float>> bad,
                                    uint32_t n_layer, uint32_t n_embd, const DirectionOptions& options);

// In place: every n-wide row scaled to unit length (zero rows left alone).
void normalize_rows(std::span<float> values, uint32_t n);

// The JSON sidecar ds4 writes next to a direction file (formats.md §8.1; never read by the
// engine).
std::string sidecar_json(uint32_t n_layer, uint32_t n_embd, cpu::SteeringSite site, bool thinking,
                         const DirectionOptions& options, const std::string& good_file, const std::string& bad_file,
                         const std::string& model_path);

}  // namespace ds4::steering
