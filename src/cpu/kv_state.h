// Per-sequence attention state of the CPU backend (spec model.md §9): everything the next
// token needs so that any split of a sequence into prefill chunks and decode steps gives
// the same logits as feeding it token by token.
//
// Per layer:
//   raw window    window_size rows of head_dim (K=V after kv_norm, RoPE and FP8), token p
//                 in slot p mod window_size (a ring: the chunk evaluator appends each token
//                 before it attends, so no row still needed is ever overwritten)
//   ratio != 0    the attention compressor: frontier (kv + score, coff·ratio slots of
//                 coff·head_dim) and the append-only compressed rows
//   ratio == 4    the indexer compressor: same, with index_head_dim rows
// Values are plain f32 (golden mode: no f16 rounding of cached rows). Unused frontier
// slots hold kv = 0 and score = -inf, the official initial state.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "model/hparams.h"

namespace ds4::cpu {

struct CompressorState {
    uint32_t ratio = 0;
    uint32_t d = 0;       // width of one compressed row
    uint32_t coff = 1;    // 2 for the overlapping ratio-4 compressor
    uint32_t n_rows = 0;  // compressed rows emitted so far
    uint32_t capacity = 0;
    std::vector<float> state_kv;     // [coff·ratio][coff·d]
    std::vector<float> state_score;  // [coff·ratio][coff·d]
    std::vector<float> rows;         // [capacity][d]

    uint32_t width() const { return coff * d; }
    uint32_t slots() const { return coff * ratio; }
    float* slot_kv(uint32_t s) { return state_kv.data() + uint64_t{s} * width(); }
    float* slot_score(uint32_t s) { return state_score.data() + uint64_t{s} * width(); }
    const float* row(uint32_t c) const { return rows.data() + uint64_t{c} * d; }
    float* row(uint32_t c) { return rows.data() + uint64_t{c} * d; }
    void reset();
};

struct LayerKv {
    std::vector<float> raw;  // [window][head_dim]
    std::optional<CompressorState> attn;
    std::optional<CompressorState> index;
};

class KvState {
public:
    // Allocates everything for sequences of up to `ctx` tokens.
    KvState(const model::Hparams& hp, uint64_t ctx);

    uint64_t n_tokens() const { return n_tokens_; }  // = position of the next token
    uint64_t ctx() const { return ctx_; }
    uint32_t window() const { return window_; }
    uint32_t head_dim() const { return head_dim_; }
    void reset();  // back to the empty sequence

    LayerKv& layer(uint32_t il) { return layers_.at(il); }
    const LayerKv& layer(uint32_t il) const { return layers_.at(il); }
    uint32_t n_layer() const { return static_cast<uint32_t>(layers_.size()); }

    // Raw window row of absolute position p (valid for the last `window` positions).
    float* raw_row(uint32_t il, uint64_t p) {
        return layers_[il].raw.data() + (p % window_) * head_dim_;
    }
    const float* raw_row(uint32_t il, uint64_t p) const {
        return layers_[il].raw.data() + (p % window_) * head_dim_;
    }

    // Called by the evaluator after a chunk of n tokens.
    void advance(uint64_t n) { n_tokens_ += n; }

    // Forgets the positions from n on (n <= n_tokens()). Only for states without
    // compressors (the MTP block's window cache): the raw ring still holds every row
    // before n, and the next token at position n overwrites the slot of the old one.
    // Throws for a state with compressed layers, whose frontiers cannot be rewound.
    void rewind(uint64_t n);

private:
    uint64_t ctx_;
    uint32_t window_;
    uint32_t head_dim_;
    uint64_t n_tokens_ = 0;
    std::vector<LayerKv> layers_;
};

}  // namespace ds4::cpu
