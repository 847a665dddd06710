// Hparams::published() against spec model.md §1.1/§1.2, and Hparams::validate().
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>

#include "ds4/error.h"
#include "model/hparams.h"

namespace ds4::model {
namespace {

TEST(HparamsPublished, FixedShapeMatchesSpecTable) {
    const Hparams h = Hparams::published();
    EXPECT_EQ(h.n_layer, 43u);
    EXPECT_EQ(h.n_embd, 4096u);
    EXPECT_EQ(h.n_vocab, 129280u);
    EXPECT_EQ(h.n_head, 64u);
    EXPECT_EQ(h.n_head_kv, 1u);
    EXPECT_EQ(h.head_dim, 512u);
    EXPECT_EQ(h.rope_dim, 64u);
    EXPECT_EQ(h.nope_dim(), 448u);
    EXPECT_EQ(h.q_lora_rank, 1024u);
    EXPECT_EQ(h.o_lora_rank, 1024u);
    EXPECT_EQ(h.o_groups, 8u);
    EXPECT_EQ(h.n_expert, 256u);
    EXPECT_EQ(h.n_expert_used, 6u);
    EXPECT_EQ(h.n_expert_shared, 1u);
    EXPECT_EQ(h.ff_exp, 2048u);
    EXPECT_EQ(h.n_hash_layer, 3u);
    EXPECT_EQ(h.window, 128u);
    EXPECT_EQ(h.idx_n_heads, 64u);
    EXPECT_EQ(h.idx_head_dim, 128u);
    EXPECT_EQ(h.idx_topk, 512u);
    EXPECT_EQ(h.hc_mult, 4u);
    EXPECT_EQ(h.hc_dim(), 16384u);
    EXPECT_EQ(h.hc_mix(), 24u);
    EXPECT_EQ(h.hc_sinkhorn_iters, 20u);
    EXPECT_FLOAT_EQ(h.norm_eps, 1e-6f);
    EXPECT_FLOAT_EQ(h.hc_eps, 1e-6f);
    EXPECT_FLOAT_EQ(h.route_scale, 1.5f);
    EXPECT_FLOAT_EQ(h.swiglu_limit, 10.0f);
    EXPECT_FLOAT_EQ(h.rope_theta, 10000.0f);
    EXPECT_FLOAT_EQ(h.compress_rope_theta, 160000.0f);
    EXPECT_FLOAT_EQ(h.rope_factor, 16.0f);
    EXPECT_EQ(h.original_seq_len, 65536u);
    EXPECT_FLOAT_EQ(h.beta_fast, 32.0f);
    EXPECT_FLOAT_EQ(h.beta_slow, 1.0f);
    EXPECT_TRUE(h.expert_weights_norm);
    EXPECT_EQ(h.context_length, 1048576u);
}

TEST(HparamsPublished, RatioScheduleIsTwoWindowLayersThenAlternatingCsaHca) {
    const Hparams h = Hparams::published();
    ASSERT_EQ(h.compress_ratios.size(), 43u);
    for (uint32_t il = 0; il < 43; ++il) {
        const uint32_t want = il < 2 ? 0 : (il % 2 == 0 ? 4 : 128);
        EXPECT_EQ(h.ratio(il), want) << "layer " << il;
        EXPECT_EQ(h.has_indexer(il), want == 4) << "layer " << il;
        EXPECT_EQ(h.is_hash_layer(il), il < 3) << "layer " << il;
    }
    const auto& r = h.compress_ratios;
    EXPECT_EQ(std::count(r.begin(), r.end(), 0u), 2);
    EXPECT_EQ(std::count(r.begin(), r.end(), 4u), 21);
    EXPECT_EQ(std::count(r.begin(), r.end(), 128u), 20);
    EXPECT_EQ(h.compressor_width(2), 1024u);  // two overlapping 512-wide halves
    EXPECT_EQ(h.compressor_width(3), 512u);
}

TEST(HparamsValidate, AcceptsPublishedAndGoldenConfigs) {
    EXPECT_NO_THROW(Hparams::published().validate());

    // shared/golden tiny model_args (head_dim 80, index_head_dim 32, see golden README).
    Hparams tiny = Hparams::published();
    tiny.n_layer = 9;
    tiny.n_embd = 64;
    tiny.n_vocab = 256;
    tiny.n_head = 4;
    tiny.head_dim = 80;
    tiny.rope_dim = 16;
    tiny.q_lora_rank = 16;
    tiny.o_groups = 2;
    tiny.o_lora_rank = 16;
    tiny.n_expert = 8;
    tiny.n_expert_used = 2;
    tiny.ff_exp = 32;
    tiny.window = 8;
    tiny.idx_n_heads = 2;
    tiny.idx_head_dim = 32;
    tiny.idx_topk = 4;
    tiny.original_seq_len = 64;
    tiny.compress_ratios = {0, 0, 4, 128, 4, 128, 4, 128, 4};
    EXPECT_NO_THROW(tiny.validate());

    // shared/golden small model_args.
    Hparams small = tiny;
    small.n_layer = 6;
    small.n_embd = 256;
    small.n_vocab = 1024;
    small.n_head = 8;
    small.head_dim = 160;
    small.rope_dim = 32;
    small.q_lora_rank = 64;
    small.o_lora_rank = 64;
    small.n_expert = 16;
    small.n_expert_used = 4;
    small.ff_exp = 128;
    small.window = 128;
    small.idx_n_heads = 4;
    small.idx_head_dim = 64;
    small.idx_topk = 16;
    small.compress_ratios = {0, 0, 4, 128, 4, 128};
    EXPECT_NO_THROW(small.validate());
}

// Applies `edit` to the published shape and expects validate() to name `field`.
void expect_rejected(const std::function<void(Hparams&)>& edit, const std::string& field) {
    Hparams h = Hparams::published();
    edit(h);
    try {
        h.validate();
        FAIL() << "accepted an invalid shape; expected an error naming " << field;
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
}

TEST(HparamsValidate, RejectsInconsistentShapesNamingTheField) {
    expect_rejected([](Hparams& h) { h.n_head = 60; }, "o_groups");
    expect_rejected([](Hparams& h) { h.compress_ratios.pop_back(); }, "compress_ratios");
    expect_rejected([](Hparams& h) { h.compress_ratios[5] = 8; }, "compress_ratios");
    expect_rejected([](Hparams& h) { h.head_dim = 500; }, "multiple of 64");
    expect_rejected([](Hparams& h) { h.rope_dim = 0; }, "rope_dim");
    expect_rejected([](Hparams& h) { h.rope_dim = 63; }, "rope_dim");
    expect_rejected([](Hparams& h) { h.n_expert_used = 300; }, "n_expert_used");
    expect_rejected([](Hparams& h) { h.n_head_kv = 2; }, "n_head_kv");
    expect_rejected([](Hparams& h) { h.n_expert_shared = 2; }, "n_expert_shared");
    expect_rejected([](Hparams& h) { h.idx_head_dim = 96; }, "idx_head_dim");
    expect_rejected([](Hparams& h) { h.idx_head_dim = 48; }, "idx_head_dim");
    expect_rejected([](Hparams& h) { h.n_hash_layer = 44; }, "n_hash_layer");
    expect_rejected([](Hparams& h) { h.n_embd = 0; }, "n_embd");
    expect_rejected([](Hparams& h) { h.window = 0; }, "window");
    expect_rejected([](Hparams& h) { h.norm_eps = 0; }, "norm_eps");
    expect_rejected([](Hparams& h) { h.rope_theta = -1; }, "rope_theta");
    expect_rejected([](Hparams& h) { h.beta_slow = 40; }, "beta_fast");
}

}  // namespace
}  // namespace ds4::model
