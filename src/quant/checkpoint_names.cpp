// Tensor-name map between ds4 GGUF files and the official DeepSeek V4 checkpoint
// (formats.md §4.1, with the MTP names of model.md §2.4 and the golden files).
#include <charconv>

#include "quant/checkpoint.h"

#include "ds4/error.h"

namespace ds4::quant {
namespace {

struct GlobalName {
    std::string_view gguf;
    std::string_view official;
};

constexpr GlobalName kGlobal[] = {
    {"token_embd.weight", "embed.weight"},
    {"output_norm.weight", "norm.weight"},
    {"output.weight", "head.weight"},
    {"output_hc_base.weight", "hc_head_base"},
    {"output_hc_fn.weight", "hc_head_fn"},
    {"output_hc_scale.weight", "hc_head_scale"},
};

enum class Storage {
    Plain,   // one official tensor
    Scaled,  // FP8 weight with a sibling ".scale"
    Routed,  // one FP4 tensor (+ ".scale") per expert: official = "w1" | "w2" | "w3"
};

// Suffixes after "blk.L." / "layers.L." (and "mtp.N." on both sides).
struct BlockName {
    std::string_view gguf;
    std::string_view official;
    Storage storage;
    bool mtp_only;  // exists only in the MTP block (its head and input projections)
};

constexpr BlockName kBlock[] = {
    {"hc_attn_base.weight", "hc_attn_base", Storage::Plain, false},
    {"hc_attn_fn.weight", "hc_attn_fn", Storage::Plain, false},
    {"hc_attn_scale.weight", "hc_attn_scale", Storage::Plain, false},
    {"hc_ffn_base.weight", "hc_ffn_base", Storage::Plain, false},
    {"hc_ffn_fn.weight", "hc_ffn_fn", Storage::Plain, false},
    {"hc_ffn_scale.weight", "hc_ffn_scale", Storage::Plain, false},
    {"attn_norm.weight", "attn_norm.weight", Storage::Plain, false},
    {"ffn_norm.weight", "ffn_norm.weight", Storage::Plain, false},
    {"attn_sinks.weight", "attn.attn_sink", Storage::Plain, false},
    {"attn_q_a.weight", "attn.wq_a.weight", Storage::Scaled, false},
    {"attn_q_a_norm.weight", "attn.q_norm.weight", Storage::Plain, false},
    {"attn_q_b.weight", "attn.wq_b.weight", Storage::Scaled, false},
    {"attn_kv.weight", "attn.wkv.weight", Storage::Scaled, false},
    {"attn_kv_a_norm.weight", "attn.kv_norm.weight", Storage::Plain, false},
    {"attn_output_a.weight", "attn.wo_a.weight", Storage::Scaled, false},
    {"attn_output_b.weight", "attn.wo_b.weight", Storage::Scaled, false},
    {"attn_compressor_ape.weight", "attn.compressor.ape", Storage::Plain, false},
    {"attn_compressor_kv.weight", "attn.compressor.wkv.weight", Storage::Plain, false},
    {"attn_compressor_gate.weight", "attn.compressor.wgate.weight", Storage::Plain, false},
    {"attn_compressor_norm.weight", "attn.compressor.norm.weight", Storage::Plain, false},
    {"indexer.attn_q_b.weight", "attn.indexer.wq_b.weight", Storage::Scaled, false},
    {"indexer.proj.weight", "attn.indexer.weights_proj.weight", Storage::Plain, false},
    {"indexer_compressor_ape.weight", "attn.indexer.compressor.ape", Storage::Plain, false},
    {"indexer_compressor_kv.weight", "attn.indexer.compressor.wkv.weight", Storage::Plain, false},
    {"indexer_compressor_gate.weight", "attn.indexer.compressor.wgate.weight", Storage::Plain,
     false},
    {"indexer_compressor_norm.weight", "attn.indexer.compressor.norm.weight", Storage::Plain,
     false},
    {"ffn_gate_inp.weight", "ffn.gate.weight", Storage::Plain, false},
    {"exp_probs_b.bias", "ffn.gate.bias", Storage::Plain, false},
    {"ffn_gate_tid2eid.weight", "ffn.gate.tid2eid", Storage::Plain, false},
    {"ffn_gate_shexp.weight", "ffn.shared_experts.w1.weight", Storage::Scaled, false},
    {"ffn_up_shexp.weight", "ffn.shared_experts.w3.weight", Storage::Scaled, false},
    {"ffn_down_shexp.weight", "ffn.shared_experts.w2.weight", Storage::Scaled, false},
    {"ffn_gate_exps.weight", "w1", Storage::Routed, false},
    {"ffn_down_exps.weight", "w2", Storage::Routed, false},
    {"ffn_up_exps.weight", "w3", Storage::Routed, false},
    {"hc_head_base.weight", "hc_head_base", Storage::Plain, true},
    {"hc_head_fn.weight", "hc_head_fn", Storage::Plain, true},
    {"hc_head_scale.weight", "hc_head_scale", Storage::Plain, true},
    {"e_proj.weight", "e_proj.weight", Storage::Scaled, true},
    {"h_proj.weight", "h_proj.weight", Storage::Scaled, true},
    {"enorm.weight", "enorm.weight", Storage::Plain, true},
    {"hnorm.weight", "hnorm.weight", Storage::Plain, true},
    {"norm.weight", "norm.weight", Storage::Plain, true},
};

constexpr std::string_view kExpertsPrefix = "ffn.experts.";

// Reads a decimal index followed by '.' from the front of `s` and drops both. Leading
// zeros are refused so that every index has one spelling and names map one-to-one.
std::optional<uint32_t> take_index(std::string_view& s) {
    const size_t dot = s.find('.');
    if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
    if (s[0] == '0' && dot > 1) return std::nullopt;
    uint32_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + dot, v);
    if (ec != std::errc() || end != s.data() + dot) return std::nullopt;
    s.remove_prefix(dot + 1);
    return v;
}

// A block-level name split into its prefix form and the rest.
struct BlockPrefix {
    uint32_t index;
    bool mtp;
    std::string_view rest;
};

// "blk.L." (GGUF) or "layers.L." (official), and "mtp.N." on either side.
std::optional<BlockPrefix> split_block(std::string_view name, std::string_view layer_word) {
    bool mtp = false;
    if (name.starts_with(layer_word)) {
        name.remove_prefix(layer_word.size());
    } else if (name.starts_with("mtp.")) {
        name.remove_prefix(4);
        mtp = true;
    } else {
        return std::nullopt;
    }
    const std::optional<uint32_t> index = take_index(name);
    if (!index) return std::nullopt;
    return BlockPrefix{*index, mtp, name};
}

std::string block_prefix(const BlockPrefix& b, std::string_view layer_word) {
    return cat(b.mtp ? std::string_view("mtp.") : layer_word, b.index, ".");
}

const BlockName* find_gguf_suffix(const BlockPrefix& b) {
    for (const BlockName& e : kBlock)
        if (e.gguf == b.rest && (b.mtp || !e.mtp_only)) return &e;
    return nullptr;
}

const BlockName* find_official_suffix(std::string_view suffix, bool mtp, Storage storage) {
    for (const BlockName& e : kBlock)
        if (e.official == suffix && e.storage == storage &&
            (mtp || !e.mtp_only))
            return &e;
    return nullptr;
}

// "ffn.experts.E.wK.weight" / ".scale" → target in the GGUF block `gguf_prefix`.
std::optional<GgufTarget> routed_target(const BlockPrefix& b, const std::string& gguf_prefix) {
    std::string_view rest = b.rest.substr(kExpertsPrefix.size());
    const std::optional<uint32_t> expert = take_index(rest);
    if (!expert) return std::nullopt;
    const size_t dot = rest.find('.');
    if (dot == std::string_view::npos) return std::nullopt;
    const std::string_view kind = rest.substr(dot + 1);
    if (kind != "weight" && kind != "scale") return std::nullopt;
    const BlockName* e = find_official_suffix(rest.substr(0, dot), b.mtp, Storage::Routed);
    if (!e) return std::nullopt;
    return GgufTarget{gguf_prefix + std::string(e->gguf), expert, kind == "scale"};
}

}  // namespace

std::optional<std::string> official_name_for_gguf(std::string_view gguf_name) {
    for (const GlobalName& g : kGlobal)
        if (g.gguf == gguf_name) return std::string(g.official);
    const std::optional<BlockPrefix> b = split_block(gguf_name, "blk.");
    if (!b) return std::nullopt;
    const BlockName* e = find_gguf_suffix(*b);
    if (!e || e->storage == Storage::Routed) return std::nullopt;
    return block_prefix(*b, "layers.") + std::string(e->official);
}

bool is_routed_expert_gguf_name(std::string_view gguf_name) {
    const std::optional<BlockPrefix> b = split_block(gguf_name, "blk.");
    if (!b) return false;
    const BlockName* e = find_gguf_suffix(*b);
    return e && e->storage == Storage::Routed;
}

std::optional<std::string> official_expert_name(std::string_view gguf_name, uint32_t expert) {
    const std::optional<BlockPrefix> b = split_block(gguf_name, "blk.");
    if (!b) return std::nullopt;
    const BlockName* e = find_gguf_suffix(*b);
    if (!e || e->storage != Storage::Routed) return std::nullopt;
    return cat(block_prefix(*b, "layers."), kExpertsPrefix, expert, ".", e->official, ".weight");
}

std::string official_scale_name(std::string_view weight_name) {
    constexpr std::string_view kWeight = ".weight";
    if (weight_name.ends_with(kWeight)) weight_name.remove_suffix(kWeight.size());
    return cat(weight_name, ".scale");
}

std::optional<GgufTarget> gguf_name_for_official(std::string_view official_name) {
    for (const GlobalName& g : kGlobal)
        if (g.official == official_name) return GgufTarget{std::string(g.gguf), {}, false};
    const std::optional<BlockPrefix> b = split_block(official_name, "layers.");
    if (!b) return std::nullopt;
    const std::string gguf_prefix = block_prefix(*b, "blk.");
    if (b->rest.starts_with(kExpertsPrefix)) return routed_target(*b, gguf_prefix);

    if (const BlockName* e = find_official_suffix(b->rest, b->mtp, Storage::Plain))
        return GgufTarget{gguf_prefix + std::string(e->gguf), {}, false};
    if (const BlockName* e = find_official_suffix(b->rest, b->mtp, Storage::Scaled))
        return GgufTarget{gguf_prefix + std::string(e->gguf), {}, false};
    constexpr std::string_view kScale = ".scale";
    if (b->rest.ends_with(kScale)) {
        const std::string weight =
            cat(b->rest.substr(0, b->rest.size() - kScale.size()), ".weight");
        if (const BlockName* e = find_official_suffix(weight, b->mtp, Storage::Scaled))
            return GgufTarget{gguf_prefix + std::string(e->gguf), {}, true};
    }
    return std::nullopt;
}

}  // namespace ds4::quant
