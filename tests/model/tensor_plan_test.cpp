// The tensor plan against formats.md §1.4/§1.6 and model.md §2.3/§2.4.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "ds4/error.h"
#include "model/tensor_plan.h"

namespace ds4::model {
namespace {

using Dims = std::vector<uint64_t>;

PlanOptions mix(QuantMix m) {
    PlanOptions o;
    o.mix = m;
    return o;
}

void expect_tensor(const TensorPlan& p, const std::string& name, GgmlType type, const Dims& dims) {
    const TensorSpec* t = p.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->type, type) << name << " is " << ggml_type_name(t->type);
    EXPECT_EQ(t->dims, dims) << name;
}

TEST(TensorPlan, PublishedQ2CountsAndNames) {
    const TensorPlan p(Hparams::published(), mix(QuantMix::Q2));
    // 6 global + 43 × 23 always-present + 41 compressed × 4 + 21 indexer × 6
    // + 3 tid2eid + 40 exp_probs_b.
    EXPECT_EQ(p.size(), 6u + 43 * 23 + 41 * 4 + 21 * 6 + 3 + 40);
    PlanOptions no_bias = mix(QuantMix::Q2);
    no_bias.router_bias = false;
    EXPECT_EQ(TensorPlan(Hparams::published(), no_bias).size(), p.size() - 40);

    std::set<std::string> names;
    for (const TensorSpec& t : p.tensors())
        EXPECT_TRUE(names.insert(t.name).second) << "duplicate " << t.name;
    EXPECT_EQ(p.tensors().front().name, "token_embd.weight");
    EXPECT_EQ(p.find("blk.2.exp_probs_b.bias"), nullptr);  // hash layers have no bias
    EXPECT_NE(p.find("blk.3.exp_probs_b.bias"), nullptr);
    EXPECT_NE(p.find("blk.2.ffn_gate_tid2eid.weight"), nullptr);
    EXPECT_EQ(p.find("blk.3.ffn_gate_tid2eid.weight"), nullptr);
    EXPECT_EQ(p.find("blk.1.attn_compressor_kv.weight"), nullptr);  // ratio 0
    EXPECT_EQ(p.find("blk.3.indexer.proj.weight"), nullptr);        // ratio 128
    EXPECT_NE(p.find("blk.42.indexer.proj.weight"), nullptr);       // ratio 4
    EXPECT_EQ(p.find("mtp.0.e_proj.weight"), nullptr);
    EXPECT_THROW(p.at("blk.43.attn_norm.weight"), Error);
}

TEST(TensorPlan, PublishedQ2TypesAndDims) {
    const TensorPlan p(Hparams::published(), mix(QuantMix::Q2));
    expect_tensor(p, "token_embd.weight", GgmlType::F16, {4096, 129280});
    expect_tensor(p, "output_hc_base.weight", GgmlType::F32, {4});
    expect_tensor(p, "output_hc_fn.weight", GgmlType::F16, {16384, 4});
    expect_tensor(p, "output_hc_scale.weight", GgmlType::F32, {1});
    expect_tensor(p, "output_norm.weight", GgmlType::F32, {4096});
    expect_tensor(p, "output.weight", GgmlType::Q8_0, {4096, 129280});
    expect_tensor(p, "blk.0.hc_attn_fn.weight", GgmlType::F16, {16384, 24});
    expect_tensor(p, "blk.0.hc_attn_scale.weight", GgmlType::F32, {3});
    expect_tensor(p, "blk.0.hc_attn_base.weight", GgmlType::F32, {24});
    expect_tensor(p, "blk.0.attn_q_a.weight", GgmlType::Q8_0, {4096, 1024});
    expect_tensor(p, "blk.0.attn_q_a_norm.weight", GgmlType::F32, {1024});
    expect_tensor(p, "blk.0.attn_q_b.weight", GgmlType::Q8_0, {1024, 32768});
    expect_tensor(p, "blk.0.attn_kv.weight", GgmlType::Q8_0, {4096, 512});
    expect_tensor(p, "blk.0.attn_kv_a_norm.weight", GgmlType::F32, {512});
    expect_tensor(p, "blk.0.attn_sinks.weight", GgmlType::F32, {64});
    expect_tensor(p, "blk.0.attn_output_a.weight", GgmlType::Q8_0, {4096, 8192});
    expect_tensor(p, "blk.0.attn_output_b.weight", GgmlType::Q8_0, {8192, 4096});
    expect_tensor(p, "blk.2.attn_compressor_ape.weight", GgmlType::F16, {1024, 4});
    expect_tensor(p, "blk.3.attn_compressor_ape.weight", GgmlType::F16, {512, 128});
    expect_tensor(p, "blk.2.attn_compressor_kv.weight", GgmlType::F16, {4096, 1024});
    expect_tensor(p, "blk.3.attn_compressor_gate.weight", GgmlType::F16, {4096, 512});
    expect_tensor(p, "blk.3.attn_compressor_norm.weight", GgmlType::F32, {512});
    expect_tensor(p, "blk.2.indexer.attn_q_b.weight", GgmlType::F16, {1024, 8192});
    expect_tensor(p, "blk.2.indexer.proj.weight", GgmlType::F16, {4096, 64});
    expect_tensor(p, "blk.2.indexer_compressor_ape.weight", GgmlType::F16, {256, 4});
    expect_tensor(p, "blk.2.indexer_compressor_kv.weight", GgmlType::F16, {4096, 256});
    expect_tensor(p, "blk.2.indexer_compressor_gate.weight", GgmlType::F16, {4096, 256});
    expect_tensor(p, "blk.2.indexer_compressor_norm.weight", GgmlType::F32, {128});
    expect_tensor(p, "blk.5.ffn_norm.weight", GgmlType::F32, {4096});
    expect_tensor(p, "blk.5.ffn_gate_inp.weight", GgmlType::F16, {4096, 256});
    expect_tensor(p, "blk.5.exp_probs_b.bias", GgmlType::F32, {256});
    expect_tensor(p, "blk.5.ffn_gate_exps.weight", GgmlType::IQ2_XXS, {4096, 2048, 256});
    expect_tensor(p, "blk.5.ffn_up_exps.weight", GgmlType::IQ2_XXS, {4096, 2048, 256});
    expect_tensor(p, "blk.5.ffn_down_exps.weight", GgmlType::Q2_K, {2048, 4096, 256});
    expect_tensor(p, "blk.5.ffn_gate_shexp.weight", GgmlType::Q8_0, {4096, 2048});
    expect_tensor(p, "blk.5.ffn_up_shexp.weight", GgmlType::Q8_0, {4096, 2048});
    expect_tensor(p, "blk.5.ffn_down_shexp.weight", GgmlType::Q8_0, {2048, 4096});
    expect_tensor(p, "blk.1.ffn_gate_tid2eid.weight", GgmlType::I32, {6, 129280});
}

TEST(TensorPlan, PublishedByteSizesMatchFormatsSpec) {
    const TensorPlan q2(Hparams::published(), mix(QuantMix::Q2));
    EXPECT_EQ(q2.at("blk.0.ffn_gate_exps.weight").n_bytes(), 553'648'128u);
    EXPECT_EQ(q2.at("blk.0.ffn_up_exps.weight").n_bytes(), 553'648'128u);
    EXPECT_EQ(q2.at("blk.0.ffn_down_exps.weight").n_bytes(), 704'643'072u);
    EXPECT_EQ(q2.at("blk.0.ffn_gate_exps.weight").row_bytes(), 1056u);
    EXPECT_EQ(q2.at("blk.0.ffn_down_exps.weight").row_bytes(), 672u);
    EXPECT_EQ(q2.at("blk.0.attn_q_a.weight").row_bytes(), 4352u);
    EXPECT_EQ(q2.at("token_embd.weight").n_bytes(), 4096ull * 129280 * 2);
    const TensorPlan q4(Hparams::published(), mix(QuantMix::Q4));
    for (const char* n : {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"}) {
        const TensorSpec& t = q4.at(std::string("blk.7.") + n + ".weight");
        EXPECT_EQ(t.type, GgmlType::Q4_K) << n;
        EXPECT_EQ(t.n_bytes(), 1'207'959'552u) << n;
    }
    EXPECT_EQ(q4.at("blk.7.ffn_gate_exps.weight").row_bytes(), 2304u);
    EXPECT_EQ(q4.at("blk.7.ffn_down_exps.weight").row_bytes(), 1152u);
    // formats.md §10: ds4 prints 80.76 GiB for the published q2 file's tensors.
    EXPECT_NEAR(q2.total_bytes() / 1073741824.0, 80.76, 0.005);
    EXPECT_GT(q4.total_bytes(), q2.total_bytes());
    // ≈ 284B parameters (DeepSeek V4 Flash).
    EXPECT_NEAR(q2.total_elements() / 1e9, 284.0, 2.0);
    EXPECT_EQ(q2.total_elements(), q4.total_elements());
}

TEST(TensorPlan, FloatMixesReplaceQuantTypes) {
    const TensorPlan q2(Hparams::published(), mix(QuantMix::Q2));
    const TensorPlan f16(Hparams::published(), mix(QuantMix::F16));
    const TensorPlan f32(Hparams::published(), mix(QuantMix::F32));
    ASSERT_EQ(f16.size(), q2.size());
    ASSERT_EQ(f32.size(), q2.size());
    for (size_t i = 0; i < q2.size(); ++i) {
        const TensorSpec &a = q2.tensors()[i], &b = f16.tensors()[i], &c = f32.tensors()[i];
        EXPECT_EQ(a.name, b.name);
        EXPECT_EQ(a.dims, c.dims);
        if (a.type == GgmlType::I32) {
            EXPECT_EQ(b.type, GgmlType::I32);
            EXPECT_EQ(c.type, GgmlType::I32);
        } else {
            EXPECT_EQ(b.type, a.type == GgmlType::F32 ? GgmlType::F32 : GgmlType::F16) << a.name;
            EXPECT_EQ(c.type, GgmlType::F32) << a.name;
        }
    }
}

TEST(TensorPlan, MtpBlockFollowsSpec) {
    PlanOptions o = mix(QuantMix::Q2);
    o.mtp = true;
    const TensorPlan p(Hparams::published(), o);
    const TensorPlan base(Hparams::published(), mix(QuantMix::Q2));
    // 8 MTP-only tensors + one ratio-0, non-hash block with its required bias.
    EXPECT_EQ(p.size(), base.size() + 8 + 23 + 1);
    expect_tensor(p, "mtp.0.e_proj.weight", GgmlType::Q8_0, {4096, 4096});
    expect_tensor(p, "mtp.0.h_proj.weight", GgmlType::Q8_0, {4096, 4096});
    expect_tensor(p, "mtp.0.hc_head_fn.weight", GgmlType::F16, {16384, 4});
    expect_tensor(p, "mtp.0.hc_head_scale.weight", GgmlType::F32, {1});
    expect_tensor(p, "mtp.0.enorm.weight", GgmlType::F32, {4096});
    expect_tensor(p, "mtp.0.exp_probs_b.bias", GgmlType::F32, {256});
    expect_tensor(p, "mtp.0.ffn_down_exps.weight", GgmlType::Q2_K, {2048, 4096, 256});
    EXPECT_EQ(p.find("mtp.0.ffn_gate_tid2eid.weight"), nullptr);
    EXPECT_EQ(p.find("mtp.0.attn_compressor_kv.weight"), nullptr);
    EXPECT_EQ(p.at("mtp.0.attn_q_b.weight").layer, 43);
}

TEST(TensorPlan, ReducedShapeDimsFollowHparams) {
    Hparams h = Hparams::published();
    h.n_layer = 4;
    h.n_embd = 256;
    h.n_head = 8;
    h.head_dim = 128;
    h.o_groups = 2;
    h.o_lora_rank = 64;
    h.q_lora_rank = 96;
    h.n_expert = 4;
    h.n_expert_used = 2;
    h.ff_exp = 256;
    h.idx_n_heads = 2;
    h.idx_head_dim = 64;
    h.hc_mult = 2;
    h.n_vocab = 300;
    h.compress_ratios = {0, 4, 128, 4};
    h.n_hash_layer = 1;
    const TensorPlan p(h, mix(QuantMix::Q4));
    expect_tensor(p, "blk.0.hc_attn_fn.weight", GgmlType::F16,
                  {512, 8});  // hc_dim 2·256, mix (2+2)·2
    expect_tensor(p, "blk.0.attn_output_a.weight", GgmlType::Q8_0,
                  {512, 128});  // 4 heads × 128 per group
    expect_tensor(p, "blk.0.attn_output_b.weight", GgmlType::Q8_0, {128, 256});
    expect_tensor(p, "blk.1.attn_compressor_ape.weight", GgmlType::F16, {256, 4});
    expect_tensor(p, "blk.1.indexer_compressor_kv.weight", GgmlType::F16, {256, 128});
    expect_tensor(p, "blk.1.indexer.attn_q_b.weight", GgmlType::F16, {96, 128});
    expect_tensor(p, "blk.2.attn_compressor_ape.weight", GgmlType::F16, {128, 128});
    expect_tensor(p, "blk.0.ffn_gate_tid2eid.weight", GgmlType::I32, {2, 300});
    expect_tensor(p, "blk.1.exp_probs_b.bias", GgmlType::F32, {4});
    expect_tensor(p, "blk.3.ffn_down_exps.weight", GgmlType::Q4_K, {256, 256, 4});
    expect_tensor(p, "output_hc_fn.weight", GgmlType::F16, {512, 2});
}

TEST(TensorPlan, RejectsRowsThatDoNotFillQuantBlocks) {
    Hparams h = Hparams::published();
    h.n_layer = 3;
    h.n_embd = 64;  // not a multiple of 256: no IQ2_XXS/K-quant rows
    h.compress_ratios = {0, 0, 4};
    try {
        TensorPlan p(h, mix(QuantMix::Q2));
        FAIL() << "accepted 64-wide IQ2_XXS rows";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("blk.0.ffn_gate_exps.weight"), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("not a multiple of the IQ2_XXS block (256)"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_NO_THROW(TensorPlan(h, mix(QuantMix::F32)));
    h.n_embd = 0;
    EXPECT_THROW(TensorPlan(h, mix(QuantMix::F32)), Error);  // the shape is validated first
}

TEST(TensorPlan, QuantMixNames) {
    for (QuantMix m : {QuantMix::Q2, QuantMix::Q4, QuantMix::F16, QuantMix::F32})
        EXPECT_EQ(parse_quant_mix(quant_mix_name(m)), m);
    EXPECT_THROW(parse_quant_mix("q3"), Error);
    EXPECT_TRUE(is_routed_type(GgmlType::IQ2_XXS));
    EXPECT_TRUE(is_routed_type(GgmlType::Q2_K));
    EXPECT_TRUE(is_routed_type(GgmlType::Q4_K));
    EXPECT_FALSE(is_routed_type(GgmlType::Q8_0));
}

}  // namespace
}  // namespace ds4::model
