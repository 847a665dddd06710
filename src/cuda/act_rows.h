// Where an activation quantizer (quantize_q8_activations, quantize_q8k_activations) takes
// row i of its input, so that the routed experts skip a copy pass (issue 8): the rows of
// x by an index (the pairs' tokens, no gathered copy), or the weighted SwiGLU of the gate
// and up outputs computed on the way in (no written-back activations). The values, and so
// the quantized records, are bitwise those of gather_rows / weighted_swiglu followed by
// the plain quantizer.
#pragma once

#include <cstdint>

namespace ds4::cuda {

struct ActRows {
    // row i of x is row src[i] (null: row i)
    const uint32_t* src = nullptr;
    // rows i >= *m_dev are skipped (null: all n_tok rows); the launch is sized for n_tok
    const uint32_t* m_dev = nullptr;
    // not null: row i is weighted_swiglu's, w[widx[i]] · silu(min(g, L)) · clamp(u, −L, L)
    // of x's row i (the gate) and up's row i (same stride)
    const float* up = nullptr;
    const float* w = nullptr;
    const uint32_t* widx = nullptr;
    float limit = 0.f;
};

}  // namespace ds4::cuda
