// Initial values of the synthetic model's tensors: chosen so a forward pass through any
// number of layers keeps activations in a sane range (no overflow, no collapse) and so
// that every weight matters (no all-ones norms that would hide a missing multiply).
// The rules, per tensor kind (z ~ approx N(0,1), see rng.h; fan_in = dims[0]):
//
//   token_embd        z                       embeddings of RMS 1
//   linear, experts   z / sqrt(fan_in)        each projection roughly preserves RMS
//   output            4 z / sqrt(fan_in)      logits of std ≈ 4: a peaked distribution,
//                                             fewer near-ties in greedy decoding
//   router            2 z / sqrt(fan_in)      router logits of std ≈ 2: routing depends
//                                             clearly on the token
//   hc_*_fn           0.1 z / sqrt(fan_in)    mixing logits vary by ≈ 0.1 around the base
//   hc_*_scale        1 + 0.1 z
//   hc_*_base (layer) pre:  logit(1/H) + 0.1 z  → σ(·) ≈ 1/H: the sublayer input is
//                                                 about the mean of the H streams
//                     post: 0.1 z               → 2σ(·) ≈ 1: the sublayer output is
//                                                 added about once to every stream
//                     comb: 0.25 z              → Sinkhorn of a near-constant matrix:
//                                                 near-uniform mixing, not symmetric
//   hc head base      logit(1/H) + 0.1 z        collapse weights ≈ 1/H
//   norms             1 + 0.1 z               near 1 but distinct per channel
//   attn_sinks        0.5 z                   comparable to one attention score
//   compressor ape    0.1 z                   a mild slot preference
//   exp_probs_b       0.05 z                  a selection bias that rarely dominates
//   tid2eid           n_expert_used distinct ids per token, uniform (seeded)
#pragma once

#include <cstdint>
#include <span>

#include "model/hparams.h"
#include "model/tensor_plan.h"
#include "rng.h"

namespace ds4::synth {

// The standard deviation the rules above give a tensor's values (for the matrices:
// the RMS its rows should have; for the offset kinds: the spread around the offset).
float init_std(const model::TensorSpec& t);

// Fills one row (t.row_length() values) of a floating-point tensor.
void init_row(const model::TensorSpec& t, const model::Hparams& h, Rng& rng, std::span<float> row);

// One tid2eid row: n_expert_used distinct expert ids in [0, n_expert).
void init_tid2eid_row(const model::Hparams& h, Rng& rng, std::span<int32_t> row);

}  // namespace ds4::synth
