// The DeepSeek V4 Flash forward pass on CPU (spec model.md §4–§8), golden-mode numerics:
// f32 activations, exact weight values, only the two QAT round trips of the official code
// (FP8 on K=V rows, Hadamard + FP4 on indexer rows and queries).
//
// CpuModel holds what never changes (hyperparameters, bound weights, RoPE frequencies).
// CpuForward holds the scratch of one evaluation context; eval() runs a chunk of tokens of
// ONE sequence at positions [pos, pos + n) against that sequence's KvState. n = 1 is a
// decode step; larger n is a prefill chunk with the streaming semantics of §8 (any split
// into chunks gives the same result as feeding the tokens one by one, bit for bit, since
// each token goes through the same code in the same order).
//
// A chunk is evaluated layer-major: every token passes layer il before any enters il + 1.
// Within a layer the projections are matrix products over the chunk, and the stateful part
// (raw window append, compressors, indexer, attention) walks the tokens in order, so a
// token sees exactly the rows that exist at its position.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "cpu/kv_state.h"
#include "cpu/numerics.h"
#include "cpu/steering.h"
#include "cpu/thread_pool.h"
#include "cpu/weight_set.h"
#include "model/hparams.h"

namespace ds4::cpu {

class CpuModel {
public:
    // Binds and validates the weights; `ws` must outlive the model.
    CpuModel(model::Hparams hp, const WeightSet& ws);

    const model::Hparams& hparams() const { return hp_; }
    const ModelWeights& weights() const { return w_; }
    // RoPE frequencies of layer il (by its compression ratio).
    const RopeFreqs& rope(uint32_t il) const { return hp_.ratio(il) != 0 ? rope_compressed_ : rope_dense_; }

private:
    model::Hparams hp_;
    ModelWeights w_;
    RopeFreqs rope_dense_, rope_compressed_;
};

class CpuForward {
public:
    // `pool` (optional) parallelises matrix rows, attention heads and experts; results do
    // not depend on the thread count.
    explicit CpuForward(const CpuModel& model, ThreadPool* pool = nullptr);

    // Evaluates tokens[0..n) at positions [pos, pos + n); pos must equal state.n_tokens().
    // For each entry i of `logit_rows` (chunk indices, each < n) writes the vocab logits
    // after token logit_rows[i] to logits[i·vocab ..]. Advances the state by n.
    // Arguments are checked before anything is touched; an exception after that (none is
    // expected once the checks pass) leaves the state unusable until reset().
    void eval(KvState& state, uint64_t pos, std::span<const int32_t> tokens,
              std::span<const uint32_t> logit_rows, std::span<float> logits);

    // Same, but the blocks start from the given HC states (n × hc_dim, stream-major per
    // token) instead of the token embeddings; `tokens` only feed hash routing. This is how
    // the MTP block (cpu/mtp.h) runs as a one-layer model.
    void eval_from_hc(KvState& state, uint64_t pos, std::span<const int32_t> tokens,
                      std::span<const float> hc_in, std::span<const uint32_t> logit_rows,
                      std::span<float> logits);

    // The final HC state (output of the last block, before the head's collapse;
    // hc_dim values) of chunk row t of the last eval, valid until the next one.
    std::span<const float> final_hc(uint32_t t) const;

    // Debug hook: called with each block's output HC state (hc_mult × dim, stream-major)
    // for every token of a chunk, after layer il.
    using BlockObserver = std::function<void(uint32_t il, uint64_t pos, std::span<const float> hc)>;
    void set_block_observer(BlockObserver observer) { observer_ = std::move(observer); }

    // Directional steering of every layer's attention and FFN outputs (cpu/steering.h);
    // off by default. Applied on both numerics paths, before the HC post step.
    void set_steering(Steering steering) { steering_ = std::move(steering); }
    Steering& steering() { return steering_; }

private:
    struct HcSite {
        const TensorView* fn;
        const std::vector<float>* scale;
        const std::vector<float>* base;
    };

    void check_chunk(const KvState& state, uint64_t pos, uint32_t n,
                     std::span<const uint32_t> logit_rows, std::span<float> logits) const;
    void run_blocks(KvState& state, uint64_t pos, std::span<const int32_t> tokens,
                    std::span<const uint32_t> logit_rows, std::span<float> logits);
    void reserve(uint32_t n, const KvState& state);
    void embed(std::span<const int32_t> tokens);
    void compute_rope_angles(uint64_t pos, uint32_t n);
    // §4.2–§4.4
    void hc_pre(const HcSite& site, uint32_t n);
    void hc_post(uint32_t n);
    // §4.5
    void attention(uint32_t il, KvState& state, uint64_t pos, uint32_t n);
    void attention_projections(uint32_t il, uint32_t n);
    void indexer_queries(uint32_t il, uint32_t n);
    void attend_token(uint32_t il, KvState& state, uint64_t p, uint32_t t);
    void output_projection(uint32_t il, uint32_t n);
    // §5, §6
    void compressor_step(CompressorState& cs, const CompressorWeights& w, const float* kv,
                         const float* score, uint64_t p, bool indexer_row, uint32_t il);
    uint32_t indexer_select(const CompressorState& index, uint32_t t);
    // §4.6
    void moe(uint32_t il, std::span<const int32_t> tokens, uint32_t n);
    void route(uint32_t il, std::span<const int32_t> tokens, uint32_t n);
    void routed_experts(uint32_t il, uint32_t n);
    void shared_expert(uint32_t il, uint32_t n);
    // §4.7
    void output_head(uint32_t t, float* logits);

    const CpuModel& model_;
    const model::Hparams& hp_;
    ThreadPool* pool_;
    BlockObserver observer_;
    Steering steering_;

    // ---- scratch, sized for the largest chunk / context seen ----
    uint32_t cap_tokens_ = 0;
    uint32_t last_n_ = 0;  // rows of the last eval (final_hc)
    uint64_t cap_rows_ = 0;  // attention rows per query
    uint64_t cap_index_rows_ = 0;
    std::vector<float> x_;       // n × hc_dim: the residual HC state
    std::vector<float> mix_;     // n × hc_mix
    std::vector<float> pre_, post_, comb_;  // n × H, n × H, n × H·H
    std::vector<float> u_;       // n × dim: sublayer input (HC pre result)
    std::vector<float> nrm_;     // n × dim: attn_norm / ffn_norm output
    std::vector<float> y_;       // n × dim: sublayer output
    std::vector<float> hc_tmp_;  // hc_dim
    std::vector<float> qr_;      // n × q_lora
    std::vector<float> q_;       // n × n_head·head_dim
    std::vector<float> kv_;      // n × head_dim
    std::vector<float> ckv_, csc_;  // n × 2·head_dim: attention compressor projections
    std::vector<float> ikv_, isc_;  // n × 2·idx_dim: indexer compressor projections
    std::vector<float> iq_;      // n × idx_heads·idx_dim
    std::vector<float> iw_;      // n × idx_heads
    std::vector<float> o_;       // n × n_head·head_dim
    std::vector<float> z_;       // n × G·R
    std::vector<RopeAngles> angles_;  // per token: [0] dense, [1] compressed
    RopeAngles row_angles_;           // compressed-row RoPE
    std::vector<float> pooled_;       // one compressed row
    // attention
    std::vector<const float*> rows_;  // rows attended by the current token
    std::vector<float> scores_;       // n_head × cap_rows_
    std::vector<float> index_scores_;
    std::vector<uint32_t> index_order_;
    // MoE
    std::vector<float> probs_;       // n × n_expert
    std::vector<uint32_t> sel_;      // n × n_used
    std::vector<float> sel_w_;       // n × n_used
    std::vector<uint32_t> order_;    // n_expert: top-k scratch
    std::vector<float> biased_;      // n_expert
    std::vector<uint32_t> users_;    // n: tokens routed to one expert
    std::vector<float> users_w_;     // n
    std::vector<float> ex_in_;       // n × dim
    std::vector<float> ex_g_, ex_u_;  // n × ff
    std::vector<float> ex_out_;      // n × dim
    std::vector<float> moe_;         // n × dim
};

}  // namespace ds4::cpu
