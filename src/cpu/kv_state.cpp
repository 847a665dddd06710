#include "cpu/kv_state.h"

#include <algorithm>
#include <limits>

#include "ds4/error.h"

namespace ds4::cpu {

namespace {

CompressorState make_compressor(uint32_t ratio, uint32_t d, uint64_t ctx) {
    CompressorState c;
    c.ratio = ratio;
    c.d = d;
    c.coff = ratio == 4 ? 2 : 1;
    const uint64_t cap = ctx / ratio;
    if (cap > std::numeric_limits<uint32_t>::max()) fail("kv state: context ", ctx, " is too large");
    c.capacity = static_cast<uint32_t>(cap);
    c.state_kv.resize(uint64_t{c.slots()} * c.width());
    c.state_score.resize(uint64_t{c.slots()} * c.width());
    c.rows.resize(cap * d);
    c.reset();
    return c;
}

}  // namespace

void CompressorState::reset() {
    n_rows = 0;
    std::fill(state_kv.begin(), state_kv.end(), 0.0f);
    std::fill(state_score.begin(), state_score.end(), -std::numeric_limits<float>::infinity());
}

KvState::KvState(const model::Hparams& hp, uint64_t ctx)
    : ctx_(ctx), window_(hp.window), head_dim_(hp.head_dim) {
    if (ctx == 0) fail("kv state: context size must be positive");
    if (window_ == 0) fail("kv state: window_size must be positive");
    if (hp.compress_ratios.size() < hp.n_layer)
        fail("kv state: compress_ratios has ", hp.compress_ratios.size(), " entries, need ",
             hp.n_layer);
    layers_.resize(hp.n_layer);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        LayerKv& l = layers_[il];
        l.raw.assign(uint64_t{window_} * head_dim_, 0.0f);
        const uint32_t r = hp.ratio(il);
        if (r != 0) l.attn = make_compressor(r, hp.head_dim, ctx);
        if (r == 4) l.index = make_compressor(r, hp.idx_head_dim, ctx);
    }
}

void KvState::rewind(uint64_t n) {
    if (n > n_tokens_) fail("kv state: cannot rewind to ", n, " tokens, the state holds ", n_tokens_);
    for (const auto& l : layers_)
        if (l.attn || l.index) fail("kv state: a state with compressed layers cannot be rewound");
    n_tokens_ = n;
}

void KvState::reset() {
    n_tokens_ = 0;
    for (auto& l : layers_) {
        std::fill(l.raw.begin(), l.raw.end(), 0.0f);
        if (l.attn) l.attn->reset();
        if (l.index) l.index->reset();
    }
}

}  // namespace ds4::cpu
