// DeepSeek V4 Flash hyperparameters (spec model.md §1). The published shape is fixed
// (published()); reduced shapes (tests, goldens, the embedded demo) use the same fields
// with other values. Everything the forward pass needs to know about the shape is here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ds4::model {

struct Hparams {
    uint32_t n_layer = 43;
    uint32_t n_embd = 4096;         // D
    uint32_t n_vocab = 129280;
    uint32_t n_head = 64;
    uint32_t n_head_kv = 1;
    uint32_t head_dim = 512;        // K = V row width
    uint32_t rope_dim = 64;         // last rope_dim dims of a head are rotary
    uint32_t q_lora_rank = 1024;
    uint32_t o_lora_rank = 1024;
    uint32_t o_groups = 8;
    uint32_t n_expert = 256;
    uint32_t n_expert_used = 6;
    uint32_t n_expert_shared = 1;
    uint32_t ff_exp = 2048;         // routed and shared expert hidden width
    uint32_t n_hash_layer = 3;
    uint32_t window = 128;          // raw sliding window, current token included
    uint32_t idx_n_heads = 64;
    uint32_t idx_head_dim = 128;
    uint32_t idx_topk = 512;
    uint32_t hc_mult = 4;
    uint32_t hc_sinkhorn_iters = 20;
    float norm_eps = 1e-6f;
    float hc_eps = 1e-6f;
    float route_scale = 1.5f;
    float swiglu_limit = 10.0f;
    float rope_theta = 10000.0f;
    float compress_rope_theta = 160000.0f;
    float rope_factor = 16.0f;
    uint64_t original_seq_len = 65536;
    float beta_fast = 32.0f;
    float beta_slow = 1.0f;
    bool expert_weights_norm = true;
    uint64_t context_length = 1048576;  // informational only (never enforced, like ds4)
    std::vector<uint32_t> compress_ratios;  // n_layer entries

    static Hparams published();  // the 43-layer release shape

    uint32_t ratio(uint32_t il) const { return compress_ratios.at(il); }
    bool has_indexer(uint32_t il) const { return ratio(il) == 4; }
    bool is_hash_layer(uint32_t il) const { return il < n_hash_layer; }
    uint32_t hc_dim() const { return hc_mult * n_embd; }
    uint32_t hc_mix() const { return (2 + hc_mult) * hc_mult; }
    uint32_t nope_dim() const { return head_dim - rope_dim; }
    // compressor row width: two overlapping halves for ratio 4
    uint32_t compressor_width(uint32_t il) const { return ratio(il) == 4 ? 2 * head_dim : head_dim; }

    // Internal consistency (divisibility, ranges, ratios in {0,4,128}); throws ds4::Error
    // naming the field.
    void validate() const;
};

}  // namespace ds4::model
