#include "golden_model.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "ds4/error.h"
#include "quant/checkpoint.h"

namespace ds4::cpu::test {

float GoldenLogits::max_abs_diff(uint32_t t, const float* ours) const {
    float d = 0.0f;
    if (!full.empty()) {
        for (uint32_t v = 0; v < V; ++v) d = std::max(d, std::fabs(ours[v] - full[uint64_t{t} * V + v]));
        return d;
    }
    for (uint32_t i = 0; i < k; ++i) {
        const uint64_t at = uint64_t{t} * k + i;
        d = std::max(d, std::fabs(ours[topk_indices[at]] - topk_values[at]));
    }
    for (size_t r = 0; r < full_rows_pos.size(); ++r) {
        if (static_cast<uint32_t>(full_rows_pos[r]) != t) continue;
        for (uint32_t v = 0; v < V; ++v) d = std::max(d, std::fabs(ours[v] - full_rows[r * V + v]));
    }
    return d;
}

int32_t GoldenLogits::argmax(uint32_t t) const {
    if (full.empty()) return topk_indices[uint64_t{t} * k];
    const float* row = full.data() + uint64_t{t} * V;
    return static_cast<int32_t>(std::max_element(row, row + V) - row);
}

float GoldenLogits::margin(uint32_t t) const {
    if (full.empty()) return topk_values[uint64_t{t} * k] - topk_values[uint64_t{t} * k + 1];
    std::vector<float> row(full.begin() + uint64_t{t} * V, full.begin() + uint64_t{t + 1} * V);
    std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<>());
    return row[0] - row[1];
}

model::Hparams hparams_from_model_args(const std::string& text) {
    const auto j = nlohmann::json::parse(text);
    model::Hparams hp;
    hp.n_layer = j.at("n_layers");
    hp.n_embd = j.at("dim");
    hp.n_vocab = j.at("vocab_size");
    hp.n_head = j.at("n_heads");
    hp.n_head_kv = 1;
    hp.head_dim = j.at("head_dim");
    hp.rope_dim = j.at("rope_head_dim");
    hp.q_lora_rank = j.at("q_lora_rank");
    hp.o_lora_rank = j.at("o_lora_rank");
    hp.o_groups = j.at("o_groups");
    hp.n_expert = j.at("n_routed_experts");
    hp.n_expert_used = j.at("n_activated_experts");
    hp.n_expert_shared = j.at("n_shared_experts");
    hp.ff_exp = j.at("moe_inter_dim");
    hp.n_hash_layer = j.at("n_hash_layers");
    hp.window = j.at("window_size");
    hp.idx_n_heads = j.at("index_n_heads");
    hp.idx_head_dim = j.at("index_head_dim");
    hp.idx_topk = j.at("index_topk");
    hp.hc_mult = j.at("hc_mult");
    hp.hc_sinkhorn_iters = j.at("hc_sinkhorn_iters");
    hp.norm_eps = j.at("norm_eps");
    hp.hc_eps = j.at("hc_eps");
    hp.route_scale = j.at("route_scale");
    hp.swiglu_limit = j.at("swiglu_limit");
    hp.rope_theta = j.at("rope_theta");
    hp.compress_rope_theta = j.at("compress_rope_theta");
    hp.rope_factor = j.at("rope_factor");
    hp.original_seq_len = j.at("original_seq_len");
    hp.beta_fast = j.at("beta_fast");
    hp.beta_slow = j.at("beta_slow");
    hp.context_length = j.at("max_seq_len");
    const std::vector<uint32_t> ratios = j.at("compress_ratios");
    if (ratios.size() < hp.n_layer) fail("model_args: compress_ratios shorter than n_layers");
    hp.compress_ratios.assign(ratios.begin(), ratios.begin() + hp.n_layer);
    if (j.at("score_func") != "sqrtsoftplus") fail("model_args: score_func must be sqrtsoftplus");
    return hp;
}

namespace {

std::vector<uint64_t> gguf_dims(const std::vector<uint64_t>& shape) {
    return {shape.rbegin(), shape.rend()};
}

bool is_weight(std::string_view official) { return !official.starts_with("golden."); }

}  // namespace

void load_official_weights(const st::File& file, const model::Hparams& hp, WeightSet& ws) {
    struct Assembly {
        std::vector<uint64_t> shape;  // one expert, [out, in]
        std::vector<float> values;    // n_expert × out × in
        uint32_t filled = 0;
    };
    std::map<std::string, Assembly> experts;
    for (const st::Tensor& t : file.tensors()) {
        if (!is_weight(t.name)) continue;
        const auto target = quant::gguf_name_for_official(t.name);
        if (!target) fail(file.path(), ": no ds4 name for official tensor ", t.name);
        if (target->scale) continue;  // decoded together with its weight
        if (target->name.ends_with("tid2eid.weight")) {
            auto ids = quant::narrow_i64_to_i32(quant::tensor_ref(file, t.name));
            ws.add_i32(target->name, gguf_dims(t.shape), std::move(ids));
            continue;
        }
        quant::DecodedTensor dec = quant::decode_official(file, t.name);
        if (!target->expert) {
            ws.add_f32(target->name, gguf_dims(dec.shape), std::move(dec.values));
            continue;
        }
        Assembly& a = experts[target->name];
        if (a.values.empty()) {
            a.shape = dec.shape;
            a.values.resize(uint64_t{hp.n_expert} * dec.values.size());
        }
        if (dec.shape != a.shape || *target->expert >= hp.n_expert)
            fail(file.path(), ": expert tensor ", t.name, " does not fit ", target->name);
        std::copy(dec.values.begin(), dec.values.end(),
                  a.values.begin() + static_cast<std::ptrdiff_t>(*target->expert * dec.values.size()));
        ++a.filled;
    }
    for (auto& [name, a] : experts) {
        if (a.filled != hp.n_expert)
            fail(file.path(), ": ", name, " has ", a.filled, " of ", hp.n_expert, " experts");
        std::vector<uint64_t> dims = gguf_dims(a.shape);
        dims.push_back(hp.n_expert);
        ws.add_f32(name, std::move(dims), std::move(a.values));
    }
}

namespace {

std::vector<int32_t> read_i32(const st::File& f, std::string_view name) {
    const auto v = f.to_i64(f.require(name));
    return {v.begin(), v.end()};
}

GoldenLogits read_logits(const st::File& f, const std::string& stem, uint32_t T, uint32_t V,
                         const std::string& full_rows_positions = "golden.logits_full_rows_positions") {
    GoldenLogits g;
    g.T = T;
    g.V = V;
    if (f.find(stem) != nullptr) {
        g.full = quant::decode_f32(f, f.require(stem));
        if (g.full.size() != uint64_t{T} * V) fail(f.path(), ": ", stem, " is not [T, V]");
        return g;
    }
    const st::Tensor& tv = f.require(stem + ".topk_values");
    g.k = static_cast<uint32_t>(tv.shape.at(1));
    g.topk_values = quant::decode_f32(f, tv);
    g.topk_indices = read_i32(f, stem + ".topk_indices");
    g.full_rows = quant::decode_f32(f, f.require(stem + ".full_rows"));
    g.full_rows_pos = read_i32(f, full_rows_positions);
    return g;
}

}  // namespace

std::unique_ptr<Golden> Golden::load(const std::string& path, const std::string& name) {
    const st::File f = st::File::open(path);
    auto g = std::make_unique<Golden>();
    g->name = name;
    const auto& meta = f.metadata();
    const auto args = meta.find("model_args");
    if (args == meta.end()) fail(path, ": __metadata__ has no model_args");
    g->hp = hparams_from_model_args(args->second);
    g->tokens = read_i32(f, "golden.tokens");
    g->T = static_cast<uint32_t>(g->tokens.size());
    g->P = static_cast<uint32_t>(std::stoul(meta.at("prefill_len")));
    load_official_weights(f, g->hp, g->weights);
    g->decode = read_logits(f, "golden.logits_decode", g->T, g->hp.n_vocab);
    g->prefill_then_decode = read_logits(f, "golden.logits_prefill_then_decode", g->T, g->hp.n_vocab);
    g->full_prefill_last = quant::decode_f32(f, f.require("golden.logits_full_prefill_last"));
    g->block_out_positions = read_i32(f, "golden.block_out_positions");
    const bool has_mtp = f.find("golden.mtp_logits_decode") || f.find("golden.mtp_logits_decode.topk_values");
    if (has_mtp && g->T > 1)
        g->mtp = read_logits(f, "golden.mtp_logits_decode", g->T - 1, g->hp.n_vocab,
                             "golden.mtp_full_rows_positions");
    for (uint32_t il = 0; il < g->hp.n_layer; ++il)
        g->block_out.push_back(quant::decode_f32(f, f.require(cat("golden.block_out.L", il))));
    return g;
}

}  // namespace ds4::cpu::test
