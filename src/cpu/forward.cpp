// Chunk orchestration, embedding, hyper-connections and the output head
// (spec model.md §4.1–§4.4, §4.7, §8). Attention is in attention.cpp, MoE in moe.cpp.
#include "cpu/forward.h"

#include <algorithm>

#include "cpu/matvec.h"
#include "ds4/error.h"

namespace ds4::cpu {

namespace {

// Shape constraints the forward pass relies on (beyond what binding checks).
void check_shape(const model::Hparams& hp) {
    if (hp.n_layer == 0 || hp.compress_ratios.size() < hp.n_layer)
        fail("hparams: compress_ratios has ", hp.compress_ratios.size(), " entries for ", hp.n_layer,
             " layers");
    if (hp.rope_dim == 0 || hp.rope_dim % 2 != 0 || hp.rope_dim > hp.head_dim)
        fail("hparams: rope_dim ", hp.rope_dim, " must be even and at most head_dim ", hp.head_dim);
    if (hp.nope_dim() % 64 != 0)
        fail("hparams: head_dim - rope_dim = ", hp.nope_dim(), " is not a multiple of the 64-wide FP8 block");
    if (hp.o_groups == 0 || hp.n_head % hp.o_groups != 0)
        fail("hparams: n_head ", hp.n_head, " is not a multiple of o_groups ", hp.o_groups);
    if (hp.n_head_kv != 1) fail("hparams: n_head_kv must be 1, got ", hp.n_head_kv);
    if (hp.n_expert_used == 0 || hp.n_expert_used > hp.n_expert)
        fail("hparams: n_expert_used ", hp.n_expert_used, " must be in [1, n_expert = ", hp.n_expert, "]");
    if (hp.hc_mult == 0) fail("hparams: hc_mult must be positive");
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const uint32_t r = hp.ratio(il);
        if (r != 0 && r != 4 && r != 128)
            fail("hparams: compress_ratios[", il, "] = ", r, ", expected 0, 4 or 128");
        if (r == 4) {
            const uint32_t d = hp.idx_head_dim;
            if (d == 0 || (d & (d - 1)) != 0 || d % 32 != 0 || d > 1024 || hp.rope_dim > d)
                fail("hparams: index_head_dim ", d,
                     " must be a power of two, a multiple of 32, at most 1024 and >= rope_dim");
            if (hp.idx_topk == 0 || hp.idx_n_heads == 0) fail("hparams: indexer top-k and heads must be positive");
        }
    }
}

}  // namespace

CpuModel::CpuModel(model::Hparams hp, const WeightSet& ws) : hp_(std::move(hp)) {
    check_shape(hp_);
    w_ = ModelWeights::bind(ws, hp_);
    rope_dense_ = RopeFreqs::for_layer(hp_, 0);
    rope_compressed_ = RopeFreqs::for_layer(hp_, 4);
}

CpuForward::CpuForward(const CpuModel& model, ThreadPool* pool)
    : model_(model), hp_(model.hparams()), pool_(pool) {}

void CpuForward::reserve(uint32_t n, const KvState& state) {
    const auto& hp = hp_;
    // rows one query can attend: the window plus the largest compressed set
    uint64_t comp = 0;
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const uint32_t r = hp.ratio(il);
        if (r == 0) continue;
        const uint64_t rows = state.ctx() / r;
        comp = std::max<uint64_t>(comp, r == 4 ? std::min<uint64_t>(rows, hp.idx_topk) : rows);
    }
    const uint64_t need_rows = hp.window + comp;
    const uint64_t need_index_rows = state.ctx() / 4;
    if (n <= cap_tokens_ && need_rows <= cap_rows_ && need_index_rows <= cap_index_rows_) return;
    n = std::max(n, cap_tokens_);
    cap_tokens_ = n;
    cap_rows_ = std::max(cap_rows_, need_rows);
    cap_index_rows_ = std::max(cap_index_rows_, need_index_rows);

    const uint64_t dim = hp.n_embd, hc = hp.hc_dim(), H = hp.hc_mult, hd = hp.head_dim;
    x_.resize(n * hc);
    mix_.resize(n * hp.hc_mix());
    pre_.resize(n * H);
    post_.resize(n * H);
    comb_.resize(n * H * H);
    u_.resize(n * dim);
    nrm_.resize(n * dim);
    y_.resize(n * dim);
    hc_tmp_.resize(hc);
    qr_.resize(n * hp.q_lora_rank);
    q_.resize(n * hp.n_head * hd);
    kv_.resize(n * hd);
    ckv_.resize(n * 2 * hd);
    csc_.resize(n * 2 * hd);
    ikv_.resize(n * 2 * hp.idx_head_dim);
    isc_.resize(n * 2 * hp.idx_head_dim);
    iq_.resize(n * hp.idx_n_heads * hp.idx_head_dim);
    iw_.resize(n * hp.idx_n_heads);
    o_.resize(n * hp.n_head * hd);
    z_.resize(n * hp.o_groups * hp.o_lora_rank);
    angles_.resize(2 * uint64_t{n});
    pooled_.resize(std::max(hd, uint64_t{hp.idx_head_dim}));
    rows_.resize(cap_rows_);
    scores_.resize(hp.n_head * cap_rows_);
    index_scores_.resize(cap_index_rows_);
    index_order_.resize(cap_index_rows_);
    probs_.resize(n * hp.n_expert);
    sel_.resize(n * hp.n_expert_used);
    sel_w_.resize(n * hp.n_expert_used);
    order_.resize(hp.n_expert);
    biased_.resize(hp.n_expert);
    users_.resize(n);
    users_w_.resize(n);
    ex_in_.resize(n * dim);
    ex_g_.resize(n * hp.ff_exp);
    ex_u_.resize(n * hp.ff_exp);
    ex_out_.resize(n * dim);
    moe_.resize(n * dim);
}

void CpuForward::check_chunk(const KvState& state, uint64_t pos, uint32_t n,
                             std::span<const uint32_t> logit_rows, std::span<float> logits) const {
    if (n == 0) fail("cpu forward: empty chunk");
    if (pos != state.n_tokens())
        fail("cpu forward: chunk starts at position ", pos, " but the sequence has ", state.n_tokens(),
             " tokens");
    if (pos + n > state.ctx())
        fail("cpu forward: positions up to ", pos + n, " exceed the context of ", state.ctx());
    if (state.n_layer() != hp_.n_layer || state.head_dim() != hp_.head_dim || state.window() != hp_.window)
        fail("cpu forward: kv state was made for another model shape");
    if (logits.size() < logit_rows.size() * uint64_t{hp_.n_vocab})
        fail("cpu forward: logits buffer holds ", logits.size(), " values, need ",
             logit_rows.size() * uint64_t{hp_.n_vocab});
    for (uint32_t r : logit_rows)
        if (r >= n) fail("cpu forward: logits requested for chunk row ", r, " of ", n);
}

void CpuForward::eval(KvState& state, uint64_t pos, std::span<const int32_t> tokens,
                      std::span<const uint32_t> logit_rows, std::span<float> logits) {
    const auto n = static_cast<uint32_t>(tokens.size());
    check_chunk(state, pos, n, logit_rows, logits);
    reserve(n, state);
    embed(tokens);
    run_blocks(state, pos, tokens, logit_rows, logits);
}

void CpuForward::eval_from_hc(KvState& state, uint64_t pos, std::span<const int32_t> tokens,
                              std::span<const float> hc_in, std::span<const uint32_t> logit_rows,
                              std::span<float> logits) {
    const auto n = static_cast<uint32_t>(tokens.size());
    check_chunk(state, pos, n, logit_rows, logits);
    const uint64_t hc = hp_.hc_dim();
    if (hc_in.size() != n * hc)
        fail("cpu forward: input HC states hold ", hc_in.size(), " values, expected ", n, " x ", hc);
    for (int32_t tok : tokens)
        if (tok < 0 || static_cast<uint32_t>(tok) >= hp_.n_vocab)
            fail("cpu forward: token id ", tok, " is outside the vocabulary of ", hp_.n_vocab);
    reserve(n, state);
    std::copy(hc_in.begin(), hc_in.end(), x_.begin());
    run_blocks(state, pos, tokens, logit_rows, logits);
}

std::span<const float> CpuForward::final_hc(uint32_t t) const {
    if (t >= last_n_) fail("cpu forward: final HC state of chunk row ", t, " requested, the last chunk had ", last_n_);
    const uint64_t hc = hp_.hc_dim();
    return {x_.data() + t * hc, hc};
}

// The blocks and the head, once x_ holds the chunk's input HC states.
void CpuForward::run_blocks(KvState& state, uint64_t pos, std::span<const int32_t> tokens,
                            std::span<const uint32_t> logit_rows, std::span<float> logits) {
    const auto n = static_cast<uint32_t>(tokens.size());
    last_n_ = 0;
    compute_rope_angles(pos, n);
    for (uint32_t il = 0; il < hp_.n_layer; ++il) {
        attention(il, state, pos, n);
        moe(il, tokens, n);
        if (observer_) {
            const uint64_t hc = hp_.hc_dim();
            for (uint32_t t = 0; t < n; ++t) observer_(il, pos + t, {x_.data() + t * hc, hc});
        }
    }
    state.advance(n);
    last_n_ = n;
    for (size_t i = 0; i < logit_rows.size(); ++i)
        output_head(logit_rows[i], logits.data() + i * uint64_t{hp_.n_vocab});
}

// §4.1: every stream starts as the token's embedding row (no scaling).
void CpuForward::embed(std::span<const int32_t> tokens) {
    const uint64_t dim = hp_.n_embd, hc = hp_.hc_dim();
    for (size_t t = 0; t < tokens.size(); ++t) {
        const int32_t tok = tokens[t];
        if (tok < 0 || static_cast<uint32_t>(tok) >= hp_.n_vocab)
            fail("cpu forward: token id ", tok, " is outside the vocabulary of ", hp_.n_vocab);
        float* xt = x_.data() + t * hc;
        dequant_row(model_.weights().token_embd, static_cast<uint64_t>(tok), xt);
        for (uint32_t h = 1; h < hp_.hc_mult; ++h) std::copy(xt, xt + dim, xt + h * dim);
    }
}

void CpuForward::compute_rope_angles(uint64_t pos, uint32_t n) {
    // find one layer of each kind for its frequency table
    const RopeFreqs* dense = nullptr;
    const RopeFreqs* compressed = nullptr;
    for (uint32_t il = 0; il < hp_.n_layer; ++il)
        (hp_.ratio(il) == 0 ? dense : compressed) = &model_.rope(il);
    for (uint32_t t = 0; t < n; ++t) {
        if (dense) angles_[2 * t].compute(*dense, pos + t);
        if (compressed) angles_[2 * t + 1].compute(*compressed, pos + t);
    }
}

// §4.2: mixes from the flat RMS-normalised state (official order: fn·x, then × rsqrt),
// pre/post/comb split, Sinkhorn on comb, u = Σ_h pre[h]·X[h] on the un-normalised streams.
void CpuForward::hc_pre(const HcSite& site, uint32_t n) {
    const uint32_t H = hp_.hc_mult, mix = hp_.hc_mix();
    const uint64_t dim = hp_.n_embd, hc = hp_.hc_dim();
    matmul(*site.fn, n, x_.data(), hc, mix_.data(), mix, pool_);
    const std::vector<float>& sc = *site.scale;
    const std::vector<float>& base = *site.base;
    for (uint32_t t = 0; t < n; ++t) {
        const float* xt = x_.data() + t * hc;
        float* m = mix_.data() + uint64_t{t} * mix;
        const float r = rms_inv(xt, hc, hp_.norm_eps);
        for (uint32_t k = 0; k < mix; ++k) m[k] *= r;
        float* pre = pre_.data() + uint64_t{t} * H;
        float* post = post_.data() + uint64_t{t} * H;
        float* comb = comb_.data() + uint64_t{t} * H * H;
        for (uint32_t h = 0; h < H; ++h) {
            pre[h] = sigmoid(m[h] * sc[0] + base[h]) + hp_.hc_eps;
            post[h] = 2.0f * sigmoid(m[H + h] * sc[1] + base[H + h]);
        }
        for (uint32_t k = 0; k < H * H; ++k) comb[k] = m[2 * H + k] * sc[2] + base[2 * H + k];
        sinkhorn(comb, H, hp_.hc_sinkhorn_iters, hp_.hc_eps);
        float* u = u_.data() + t * dim;
        for (uint64_t d = 0; d < dim; ++d) {
            float s = pre[0] * xt[d];
            for (uint32_t h = 1; h < H; ++h) s += pre[h] * xt[h * dim + d];
            u[d] = s;
        }
    }
}

// §4.4: X_new[b] = post[b]·f + Σ_a C[a][b]·X[a]  ([TRAP] C is applied transposed).
void CpuForward::hc_post(uint32_t n) {
    const uint32_t H = hp_.hc_mult;
    const uint64_t dim = hp_.n_embd, hc = hp_.hc_dim();
    for (uint32_t t = 0; t < n; ++t) {
        float* xt = x_.data() + t * hc;
        const float* f = y_.data() + t * dim;
        const float* post = post_.data() + uint64_t{t} * H;
        const float* comb = comb_.data() + uint64_t{t} * H * H;
        for (uint32_t b = 0; b < H; ++b) {
            float* out = hc_tmp_.data() + b * dim;
            for (uint64_t d = 0; d < dim; ++d) {
                float s = comb[b] * xt[d];
                for (uint32_t a = 1; a < H; ++a) s += comb[a * H + b] * xt[a * dim + d];
                out[d] = post[b] * f[d] + s;
            }
        }
        std::copy(hc_tmp_.begin(), hc_tmp_.begin() + static_cast<std::ptrdiff_t>(hc), xt);
    }
}

// §4.7: sigmoid collapse of the streams (no Sinkhorn, one scalar scale), output_norm, head.
void CpuForward::output_head(uint32_t t, float* logits) {
    const ModelWeights& w = model_.weights();
    const uint32_t H = hp_.hc_mult;
    const uint64_t dim = hp_.n_embd, hc = hp_.hc_dim();
    const float* xt = x_.data() + uint64_t{t} * hc;
    float* m = mix_.data();
    matvec(w.output_hc_fn, xt, m, pool_);
    const float r = rms_inv(xt, hc, hp_.norm_eps);
    float* collapsed = u_.data();
    float wts[64];
    if (H > 64) fail("cpu forward: hc_mult ", H, " > 64");
    for (uint32_t h = 0; h < H; ++h)
        wts[h] = sigmoid(m[h] * r * w.output_hc_scale[0] + w.output_hc_base[h]) + hp_.hc_eps;
    for (uint64_t d = 0; d < dim; ++d) {
        float s = wts[0] * xt[d];
        for (uint32_t h = 1; h < H; ++h) s += wts[h] * xt[h * dim + d];
        collapsed[d] = s;
    }
    rms_norm(collapsed, w.output_norm.data(), dim, hp_.norm_eps, nrm_.data());
    matvec(w.output, nrm_.data(), logits, pool_);
}

}  // namespace ds4::cpu
