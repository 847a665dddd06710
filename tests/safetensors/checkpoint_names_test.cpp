// GGUF ↔ official checkpoint tensor names (formats.md §4.1): every weight tensor of the
// golden files maps to a ds4 GGUF name and back, the spec's examples hold, and malformed
// or foreign names map to nothing.
#include <gtest/gtest.h>

#include <set>

#include "gguf/safetensors.h"
#include "quant/checkpoint.h"
#include "st_builder.h"

namespace ds4 {
namespace {

using quant::GgufTarget;

// The official name that `target` stands for, computed with the forward functions.
std::optional<std::string> official_name_of(const GgufTarget& target) {
    const std::optional<std::string> weight =
        target.expert ? quant::official_expert_name(target.name, *target.expert)
                      : quant::official_name_for_gguf(target.name);
    if (!weight) return std::nullopt;
    return target.scale ? quant::official_scale_name(*weight) : *weight;
}

// Maps every non-golden tensor to GGUF and back; returns the GGUF names produced.
std::set<std::string> round_trip_all(const char* file) {
    const st::File f = st::File::open(test::golden_path(file));
    std::set<std::string> gguf_names;
    for (const st::Tensor& t : f.tensors()) {
        const std::optional<GgufTarget> target = quant::gguf_name_for_official(t.name);
        if (t.name.starts_with("golden.")) {
            EXPECT_FALSE(target) << t.name;
            continue;
        }
        if (!target) {
            ADD_FAILURE() << file << ": no GGUF name for " << t.name;
            continue;
        }
        EXPECT_EQ(official_name_of(*target), t.name) << "via " << target->name;
        EXPECT_EQ(quant::is_routed_expert_gguf_name(target->name), target->expert.has_value())
            << t.name;
        EXPECT_EQ(target->scale, t.name.ends_with(".scale")) << t.name;
        gguf_names.insert(target->name);
    }
    return gguf_names;
}

TEST(CheckpointNames, EveryGoldenTinyTensorMapsAndBack) {
    const std::set<std::string> names = round_trip_all("golden_tiny_s1.safetensors");
    // 6 global + 9 layers × 24 + 7 compressors × 4 + 4 indexers × 6 + MTP block (24 + 3
    // hc_head + e_proj/h_proj + enorm/hnorm/norm = 32).
    EXPECT_EQ(names.size(), 6u + 9u * 24u + 7u * 4u + 4u * 6u + 32u);
    EXPECT_TRUE(names.contains("blk.8.indexer_compressor_ape.weight"));
    EXPECT_TRUE(names.contains("blk.2.ffn_gate_tid2eid.weight"));
    EXPECT_TRUE(names.contains("blk.3.exp_probs_b.bias"));
    EXPECT_TRUE(names.contains("mtp.0.ffn_down_exps.weight"));
    EXPECT_TRUE(names.contains("mtp.0.hc_head_fn.weight"));
}

TEST(CheckpointNames, EveryGoldenSmallTensorMapsAndBack) {
    const std::set<std::string> names = round_trip_all("golden_small_s1.safetensors");
    // 6 layers (ratios 0,0,4,128,4,128): compressors in layers 2-5, indexers in 2 and 4.
    EXPECT_EQ(names.size(), 6u + 6u * 24u + 4u * 4u + 2u * 6u + 32u);
}

TEST(CheckpointNames, SpecExamples) {
    const std::pair<const char*, const char*> pairs[] = {
        {"token_embd.weight", "embed.weight"},
        {"output_norm.weight", "norm.weight"},
        {"output.weight", "head.weight"},
        {"output_hc_base.weight", "hc_head_base"},
        {"output_hc_fn.weight", "hc_head_fn"},
        {"output_hc_scale.weight", "hc_head_scale"},
        {"blk.0.hc_attn_fn.weight", "layers.0.hc_attn_fn"},
        {"blk.42.hc_ffn_scale.weight", "layers.42.hc_ffn_scale"},
        {"blk.3.attn_sinks.weight", "layers.3.attn.attn_sink"},
        {"blk.3.attn_q_a.weight", "layers.3.attn.wq_a.weight"},
        {"blk.3.attn_q_b.weight", "layers.3.attn.wq_b.weight"},
        {"blk.3.attn_q_a_norm.weight", "layers.3.attn.q_norm.weight"},
        {"blk.3.attn_kv.weight", "layers.3.attn.wkv.weight"},
        {"blk.3.attn_kv_a_norm.weight", "layers.3.attn.kv_norm.weight"},
        {"blk.3.attn_output_a.weight", "layers.3.attn.wo_a.weight"},
        {"blk.3.attn_output_b.weight", "layers.3.attn.wo_b.weight"},
        {"blk.4.attn_compressor_ape.weight", "layers.4.attn.compressor.ape"},
        {"blk.4.attn_compressor_kv.weight", "layers.4.attn.compressor.wkv.weight"},
        {"blk.4.attn_compressor_gate.weight", "layers.4.attn.compressor.wgate.weight"},
        {"blk.4.attn_compressor_norm.weight", "layers.4.attn.compressor.norm.weight"},
        {"blk.4.indexer.attn_q_b.weight", "layers.4.attn.indexer.wq_b.weight"},
        {"blk.4.indexer.proj.weight", "layers.4.attn.indexer.weights_proj.weight"},
        {"blk.4.indexer_compressor_ape.weight", "layers.4.attn.indexer.compressor.ape"},
        {"blk.4.indexer_compressor_kv.weight", "layers.4.attn.indexer.compressor.wkv.weight"},
        {"blk.4.indexer_compressor_gate.weight", "layers.4.attn.indexer.compressor.wgate.weight"},
        {"blk.4.indexer_compressor_norm.weight", "layers.4.attn.indexer.compressor.norm.weight"},
        {"blk.5.attn_norm.weight", "layers.5.attn_norm.weight"},
        {"blk.5.ffn_norm.weight", "layers.5.ffn_norm.weight"},
        {"blk.5.ffn_gate_shexp.weight", "layers.5.ffn.shared_experts.w1.weight"},
        {"blk.5.ffn_up_shexp.weight", "layers.5.ffn.shared_experts.w3.weight"},
        {"blk.5.ffn_down_shexp.weight", "layers.5.ffn.shared_experts.w2.weight"},
        {"blk.5.ffn_gate_inp.weight", "layers.5.ffn.gate.weight"},
        {"blk.5.exp_probs_b.bias", "layers.5.ffn.gate.bias"},
        {"blk.1.ffn_gate_tid2eid.weight", "layers.1.ffn.gate.tid2eid"},
        {"mtp.0.e_proj.weight", "mtp.0.e_proj.weight"},
        {"mtp.0.h_proj.weight", "mtp.0.h_proj.weight"},
        {"mtp.0.enorm.weight", "mtp.0.enorm.weight"},
        {"mtp.0.hnorm.weight", "mtp.0.hnorm.weight"},
        {"mtp.0.norm.weight", "mtp.0.norm.weight"},
        {"mtp.0.hc_head_base.weight", "mtp.0.hc_head_base"},
        {"mtp.0.attn_q_a.weight", "mtp.0.attn.wq_a.weight"},
        {"mtp.0.attn_sinks.weight", "mtp.0.attn.attn_sink"},
    };
    for (const auto& [gguf, official] : pairs) {
        EXPECT_EQ(quant::official_name_for_gguf(gguf), official) << gguf;
        EXPECT_EQ(quant::gguf_name_for_official(official), (GgufTarget{gguf, {}, false}))
            << official;
    }
}

TEST(CheckpointNames, RoutedExperts) {
    EXPECT_EQ(quant::official_expert_name("blk.0.ffn_gate_exps.weight", 0),
              "layers.0.ffn.experts.0.w1.weight");
    EXPECT_EQ(quant::official_expert_name("blk.42.ffn_down_exps.weight", 255),
              "layers.42.ffn.experts.255.w2.weight");
    EXPECT_EQ(quant::official_expert_name("blk.7.ffn_up_exps.weight", 17),
              "layers.7.ffn.experts.17.w3.weight");
    EXPECT_EQ(quant::official_expert_name("mtp.0.ffn_up_exps.weight", 3),
              "mtp.0.ffn.experts.3.w3.weight");
    EXPECT_EQ(quant::official_expert_name("blk.0.attn_norm.weight", 0), std::nullopt);
    EXPECT_EQ(quant::official_name_for_gguf("blk.0.ffn_gate_exps.weight"), std::nullopt);
    EXPECT_TRUE(quant::is_routed_expert_gguf_name("blk.9.ffn_down_exps.weight"));
    EXPECT_FALSE(quant::is_routed_expert_gguf_name("blk.9.ffn_down_shexp.weight"));
    EXPECT_EQ(quant::gguf_name_for_official("layers.0.ffn.experts.3.w2.scale"),
              (GgufTarget{"blk.0.ffn_down_exps.weight", 3u, true}));
    EXPECT_EQ(quant::gguf_name_for_official("layers.12.ffn.experts.255.w1.weight"),
              (GgufTarget{"blk.12.ffn_gate_exps.weight", 255u, false}));
}

TEST(CheckpointNames, ScaleNames) {
    EXPECT_EQ(quant::official_scale_name("layers.0.attn.wq_a.weight"), "layers.0.attn.wq_a.scale");
    EXPECT_EQ(quant::official_scale_name("x"), "x.scale");
    EXPECT_EQ(quant::gguf_name_for_official("layers.2.attn.indexer.wq_b.scale"),
              (GgufTarget{"blk.2.indexer.attn_q_b.weight", {}, true}));
    EXPECT_EQ(quant::gguf_name_for_official("mtp.0.e_proj.scale"),
              (GgufTarget{"mtp.0.e_proj.weight", {}, true}));
    // Only FP8-stored tensors have scales.
    EXPECT_EQ(quant::gguf_name_for_official("layers.0.attn_norm.scale"), std::nullopt);
    EXPECT_EQ(quant::gguf_name_for_official("embed.scale"), std::nullopt);
}

TEST(CheckpointNames, ForeignAndMalformedNamesMapToNothing) {
    for (const char* gguf : {"", "blk.", "blk.0.", "blk.01.attn_norm.weight",
                             "blk..attn_norm.weight", "blk.-1.attn_norm.weight",
                             "blk.4294967296.attn_norm.weight", "blk.0.unknown.weight",
                             "blk.0.attn_norm", "blk.0.e_proj.weight", "blk.0.norm.weight",
                             "mtp.0.token_embd.weight", "layers.0.attn_norm.weight",
                             "token_embd", "golden.tokens"})
        EXPECT_EQ(quant::official_name_for_gguf(gguf), std::nullopt) << gguf;
    for (const char* official :
         {"", "golden.tokens", "layers.0.", "layers.00.attn_norm.weight",
          "layers.0.attn.wq_a", "layers.0.e_proj.weight", "layers.0.ffn.experts.0.w4.weight",
          "layers.0.ffn.experts.x.w1.weight", "layers.0.ffn.experts.01.w1.weight",
          "layers.0.ffn.experts.0.w1.bias", "layers.0.ffn.experts.0.w1", "layers.0.ffn.experts.",
          "blk.0.attn_norm.weight", "mtp.0.embed.weight", "model.layers.0.attn_norm.weight"})
        EXPECT_EQ(quant::gguf_name_for_official(official), std::nullopt) << official;
}

}  // namespace
}  // namespace ds4
