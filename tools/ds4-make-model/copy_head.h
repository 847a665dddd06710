// --mtp-copy-head: a forced-acceptance test model for speculative decoding. The random
// model is changed so that its greedy next token depends on the current token only, and
// the MTP block computes that same function of its input token:
//
//   main model  every block adds nothing (attn_output_b, ffn_down_exps, ffn_down_shexp = 0):
//               the HC state stays the embedding e_t copied to every stream, mixed by the
//               positive Sinkhorn combinations, so it is c_k · e_t on stream k (c_k > 0);
//               the head collapse (positive weights) and RMSNorm (output_norm = 1) remove
//               the scale: logits = s · output · e_t with s > 0, next token f(t).
//   MTP block   h_proj = 0 (the main state is ignored), e_proj = I, enorm = norm = 1, its
//               block adds nothing either: on input token t its logits are s' · output ·
//               e_t, s' > 0, so its greedy draft is f(t) as well.
//
// With the V3 pairing (state of position i, token i + 1 → token i + 2) the first draft is
// f(t_{i+1}) = t_{i+2}, exactly the main model's next greedy token, and each chained draft
// f(d) is the main model's token after d: every draft is accepted. The only deviation is
// float rounding of the two positive scales, which can swap two logits that tie within
// ~1e-6 relative; the output head's logit spread (std 4, init.h) makes that practically
// impossible, and the tests check acceptance is 100% on the runs they make. Works with
// every quant mix: zero rows quantize to zero and the Q8_0/F16/F32 identity to a constant
// multiple of I (a positive scale again); f32 is the exact choice.
#pragma once

#include <cstdint>
#include <span>

#include "model/tensor_plan.h"

namespace ds4::synth {

// Fills row `row` of tensor t with its forced-acceptance value and returns true, or returns
// false for a tensor that keeps its random initialisation.
bool copy_head_row(const model::TensorSpec& t, uint64_t row, std::span<float> values);

}  // namespace ds4::synth
