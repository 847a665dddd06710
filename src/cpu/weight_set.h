// Weights by their ds4 GGUF tensor names (spec model.md §2.3, formats.md §1.6), and the
// per-layer binding the forward pass uses.
//
// A WeightSet maps names to TensorViews. It can also own buffers (add_f32 / add_i32), which
// is how an official checkpoint converted to f32 in memory is held (golden tests); views
// into an mmap'd GGUF are added with add_view and stay valid while the mapping lives.
//
// ModelWeights binds every tensor the forward pass reads once, checking type and dims
// against the Hparams, so the hot loops never look a name up. Small vectors (norm
// weights, HC scale/base, sinks, router bias, compressor APE) are copied to f32 there,
// whatever their storage type, because they are read element by element.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cpu/tensor_view.h"
#include "model/hparams.h"

namespace ds4::cpu {

class WeightSet {
public:
    WeightSet() = default;
    WeightSet(const WeightSet&) = delete;
    WeightSet& operator=(const WeightSet&) = delete;
    WeightSet(WeightSet&&) = default;
    WeightSet& operator=(WeightSet&&) = default;

    // Registers a view whose bytes the caller keeps alive. Throws on a duplicate name.
    void add_view(std::string name, const TensorView& view);
    // Takes ownership of f32 / i32 values; `dims` in GGUF order (innermost first) and
    // their product must equal values.size().
    void add_f32(std::string name, std::vector<uint64_t> dims, std::vector<float> values);
    void add_i32(std::string name, std::vector<uint64_t> dims, std::vector<int32_t> values);

    const TensorView* find(std::string_view name) const;
    const TensorView& require(std::string_view name) const;  // "required tensor is missing: NAME"
    size_t size() const { return views_.size(); }

private:
    void insert(std::string name, TensorView view);

    std::map<std::string, TensorView, std::less<>> views_;
    std::deque<std::vector<float>> owned_f32_;  // deque: growth never moves the buffers
    std::deque<std::vector<int32_t>> owned_i32_;
};

// The routed experts of one layer.
struct ExpertWeights {
    TensorView gate;  // [dim, ff, n_expert]  (official w1)
    TensorView up;    // [dim, ff, n_expert]  (official w3)
    TensorView down;  // [ff, dim, n_expert]  (official w2)
};

// One ratio != 0 KV compressor (attention or indexer).
struct CompressorWeights {
    TensorView kv;              // [dim, coff·d]
    TensorView gate;            // [dim, coff·d]
    std::vector<float> ape;     // [ratio][coff·d]
    std::vector<float> norm;    // [d]
};

struct LayerWeights {
    uint32_t ratio = 0;
    // hyper-connections (attention site, FFN site)
    TensorView hc_attn_fn;  // [hc_dim, mix]
    std::vector<float> hc_attn_scale, hc_attn_base;
    TensorView hc_ffn_fn;
    std::vector<float> hc_ffn_scale, hc_ffn_base;
    // attention
    std::vector<float> attn_norm;
    TensorView q_a;  // [dim, q_lora]
    std::vector<float> q_a_norm;
    TensorView q_b;  // [q_lora, n_head·head_dim]
    TensorView kv;   // [dim, head_dim]
    std::vector<float> kv_norm;
    std::vector<float> sinks;  // [n_head]
    TensorView out_a;          // [hpg·head_dim, G·R]
    TensorView out_b;          // [G·R, dim]
    std::optional<CompressorWeights> compressor;          // ratio != 0
    std::optional<CompressorWeights> indexer_compressor;  // ratio == 4
    TensorView indexer_q_b;                               // [q_lora, idx_heads·idx_dim]
    TensorView indexer_proj;                              // [dim, idx_heads]
    // FFN
    std::vector<float> ffn_norm;
    TensorView router;               // [dim, n_expert]
    std::vector<float> router_bias;  // [n_expert], non-hash layers (zeros when absent)
    TensorView tid2eid;              // I32 [n_expert_used, vocab], hash layers
    ExpertWeights experts;
    TensorView shared_gate, shared_up, shared_down;
};

struct ModelWeights {
    TensorView token_embd;  // [dim, vocab]
    TensorView output_hc_fn;  // [hc_dim, H]
    std::vector<float> output_hc_scale, output_hc_base;
    std::vector<float> output_norm;
    TensorView output;  // [dim, vocab]
    std::vector<LayerWeights> layers;

    // Binds and validates every tensor the main forward pass reads (MTP is not bound).
    static ModelWeights bind(const WeightSet& ws, const model::Hparams& hp);
};

// f32 copy of a small tensor of a type we can decode element-wise (F32/F16/BF16).
std::vector<float> to_f32_vector(const TensorView& v);

}  // namespace ds4::cpu
