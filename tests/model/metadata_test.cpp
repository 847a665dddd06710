// deepseek4.* metadata: write → read round trips, the GGUF types written, and the
// published-shape validator's acceptance rules and messages (formats.md §1.5).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "ds4/error.h"
#include "model/metadata.h"
#include "test_util.h"

namespace ds4::model {
namespace {

using gguf::ValueType;
using testing::TempDir;
using testing::write_metadata_file;

Hparams reduced_shape() {
    Hparams h = Hparams::published();
    h.n_layer = 5;
    h.n_embd = 256;
    h.n_vocab = 300;
    h.n_head = 8;
    h.head_dim = 160;
    h.rope_dim = 32;
    h.q_lora_rank = 64;
    h.o_lora_rank = 64;
    h.o_groups = 2;
    h.n_expert = 16;
    h.n_expert_used = 4;
    h.ff_exp = 128;
    h.n_hash_layer = 2;
    h.window = 32;
    h.idx_n_heads = 4;
    h.idx_head_dim = 64;
    h.idx_topk = 16;
    h.hc_mult = 2;
    h.hc_sinkhorn_iters = 7;
    h.norm_eps = 1e-5f;
    h.route_scale = 2.5f;
    h.swiglu_limit = 7.0f;
    h.original_seq_len = 64;
    h.rope_factor = 4.0f;
    h.expert_weights_norm = false;
    h.context_length = 4096;
    h.compress_ratios = {0, 4, 128, 0, 4};
    return h;
}

void expect_same_shape(const Hparams& a, const Hparams& b) {
    EXPECT_EQ(a.n_layer, b.n_layer);
    EXPECT_EQ(a.n_embd, b.n_embd);
    EXPECT_EQ(a.n_vocab, b.n_vocab);
    EXPECT_EQ(a.n_head, b.n_head);
    EXPECT_EQ(a.n_head_kv, b.n_head_kv);
    EXPECT_EQ(a.head_dim, b.head_dim);
    EXPECT_EQ(a.rope_dim, b.rope_dim);
    EXPECT_EQ(a.q_lora_rank, b.q_lora_rank);
    EXPECT_EQ(a.o_lora_rank, b.o_lora_rank);
    EXPECT_EQ(a.o_groups, b.o_groups);
    EXPECT_EQ(a.n_expert, b.n_expert);
    EXPECT_EQ(a.n_expert_used, b.n_expert_used);
    EXPECT_EQ(a.n_expert_shared, b.n_expert_shared);
    EXPECT_EQ(a.ff_exp, b.ff_exp);
    EXPECT_EQ(a.n_hash_layer, b.n_hash_layer);
    EXPECT_EQ(a.window, b.window);
    EXPECT_EQ(a.idx_n_heads, b.idx_n_heads);
    EXPECT_EQ(a.idx_head_dim, b.idx_head_dim);
    EXPECT_EQ(a.idx_topk, b.idx_topk);
    EXPECT_EQ(a.hc_mult, b.hc_mult);
    EXPECT_EQ(a.hc_sinkhorn_iters, b.hc_sinkhorn_iters);
    EXPECT_EQ(a.norm_eps, b.norm_eps);
    EXPECT_EQ(a.hc_eps, b.hc_eps);
    EXPECT_EQ(a.route_scale, b.route_scale);
    EXPECT_EQ(a.swiglu_limit, b.swiglu_limit);
    EXPECT_EQ(a.rope_theta, b.rope_theta);
    EXPECT_EQ(a.compress_rope_theta, b.compress_rope_theta);
    EXPECT_EQ(a.rope_factor, b.rope_factor);
    EXPECT_EQ(a.original_seq_len, b.original_seq_len);
    EXPECT_EQ(a.beta_fast, b.beta_fast);
    EXPECT_EQ(a.beta_slow, b.beta_slow);
    EXPECT_EQ(a.expert_weights_norm, b.expert_weights_norm);
    EXPECT_EQ(a.context_length, b.context_length);
    EXPECT_EQ(a.compress_ratios, b.compress_ratios);
}

Hparams round_trip(const TempDir& dir, const Hparams& h, const MetadataOptions& opt = {}) {
    const std::string path = dir.file("meta.gguf");
    write_metadata_file(path, [&](gguf::Writer& w) { write_metadata(w, h, opt); });
    return read_hparams(gguf::File::open(path));
}

TEST(Metadata, PublishedRoundTrip) {
    TempDir dir;
    const Hparams h = Hparams::published();
    const Hparams back = round_trip(dir, h);
    expect_same_shape(back, h);
    EXPECT_TRUE(is_published_shape(back));
}

TEST(Metadata, ReducedShapeRoundTrip) {
    TempDir dir;
    const Hparams h = reduced_shape();
    expect_same_shape(round_trip(dir, h), h);
    MetadataOptions no_mtp;
    no_mtp.mtp_entry = false;
    expect_same_shape(round_trip(dir, h, no_mtp), h);
    EXPECT_FALSE(is_published_shape(h));
}

TEST(Metadata, WritesDs4Types) {
    TempDir dir;
    const std::string path = dir.file("types.gguf");
    write_metadata_file(path, [](gguf::Writer& w) { write_metadata(w, Hparams::published()); });
    const gguf::File f = gguf::File::open(path);
    auto type_of = [&](std::string_view k) {
        const gguf::KeyValue* kv = f.find(k);
        EXPECT_NE(kv, nullptr) << k;
        return kv ? kv->type : ValueType::U8;
    };
    EXPECT_EQ(f.get_string(key::architecture), "deepseek4");
    EXPECT_EQ(type_of(key::alignment), ValueType::U32);
    EXPECT_EQ(f.get_u32(key::alignment), 32u);
    EXPECT_EQ(f.alignment(), 32u);
    for (std::string_view k : {key::block_count,
                               key::embedding_length,
                               key::vocab_size,
                               key::head_count,
                               key::head_count_kv,
                               key::key_length,
                               key::value_length,
                               key::rope_dimension_count,
                               key::q_lora_rank,
                               key::output_lora_rank,
                               key::output_group_count,
                               key::expert_count,
                               key::expert_used_count,
                               key::expert_feed_forward_length,
                               key::expert_shared_count,
                               key::hash_layer_count,
                               key::expert_group_count,
                               key::expert_group_used_count,
                               key::sliding_window,
                               key::indexer_head_count,
                               key::indexer_key_length,
                               key::indexer_top_k,
                               key::hc_count,
                               key::hc_sinkhorn_iterations})
        EXPECT_EQ(type_of(k), ValueType::U32) << k;
    for (std::string_view k : {key::rope_freq_base, key::rope_scaling_factor, key::yarn_beta_fast,
                               key::yarn_beta_slow, key::compress_rope_freq_base,
                               key::expert_weights_scale, key::rms_epsilon, key::hc_epsilon})
        EXPECT_EQ(type_of(k), ValueType::F32) << k;
    EXPECT_EQ(type_of(key::original_context_length), ValueType::U64);
    EXPECT_EQ(type_of(key::context_length), ValueType::U64);  // ds4 prints it only as u64
    EXPECT_EQ(type_of(key::expert_weights_norm), ValueType::BOOL);
    const gguf::KeyValue* ratios = f.find(key::compress_ratios);
    ASSERT_NE(ratios, nullptr);
    EXPECT_EQ(ratios->type, ValueType::ARRAY);
    EXPECT_EQ(ratios->array_type, ValueType::U32);
    EXPECT_EQ(ratios->array_count, 44u);  // 43 layers + the MTP block's 0
    const std::vector<int64_t> r = f.get_int_array(key::compress_ratios);
    EXPECT_EQ(r[2], 4);
    EXPECT_EQ(r[3], 128);
    EXPECT_EQ(r[43], 0);
    const gguf::KeyValue* clamps = f.find(key::swiglu_clamp_exp);
    ASSERT_NE(clamps, nullptr);
    EXPECT_EQ(clamps->array_type, ValueType::F32);
    EXPECT_EQ(f.get_float_array(key::swiglu_clamp_exp), std::vector<double>(44, 10.0));
}

// The metadata of `h` with key `k` removed and `replace` (if any) writing another record.
std::string metadata_with(const TempDir& dir, const Hparams& h, std::string_view k,
                          const std::function<void(gguf::Writer&)>& replace) {
    const std::string good = dir.file("good.gguf");
    write_metadata_file(good, [&](gguf::Writer& w) { write_metadata(w, h); });
    const gguf::File f = gguf::File::open(good);
    const std::string bad = dir.file("bad.gguf");
    write_metadata_file(bad, [&](gguf::Writer& w) {
        for (const gguf::KeyValue& kv : f.metadata()) {
            if (kv.key == k) {
                if (replace) replace(w);
            } else {
                w.copy_kv(f, kv);
            }
        }
    });
    return bad;
}

std::string published_with(const TempDir& dir, std::string_view k,
                           const std::function<void(gguf::Writer&)>& replace) {
    return metadata_with(dir, Hparams::published(), k, replace);
}

// read_hparams must fail with a message containing every string of `want`.
void expect_rejected(const std::string& path, const std::vector<std::string>& want) {
    try {
        read_hparams(gguf::File::open(path));
        FAIL() << "accepted; expected an error containing " << want.front();
    } catch (const Error& e) {
        for (const std::string& w : want)
            EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
    }
}

void expect_accepted(const std::string& path) {
    EXPECT_TRUE(is_published_shape(read_hparams(gguf::File::open(path))));
}

std::vector<uint32_t> published_ratios_with(uint32_t il, uint32_t v) {
    std::vector<uint32_t> r = Hparams::published().compress_ratios;
    r[il] = v;
    return r;
}

TEST(MetadataPublished, U32KeyStoredAsOtherIntegerIsReportedMissing) {
    TempDir dir;
    const std::string k(key::embedding_length);
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_i32(k, 4096); }),
                    {k, "missing", "INT32"});
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_u64(k, 4096); }),
                    {k, "missing"});
    expect_rejected(published_with(dir, k, nullptr), {k, "missing"});
}

TEST(MetadataPublished, IntegerMismatchNamesKeyAndBothValues) {
    TempDir dir;
    const std::string k(key::embedding_length);
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_u32(k, 4095); }),
                    {k, "4095", "4096"});
    const std::string v(key::vocab_size);
    expect_rejected(published_with(dir, v, [&](gguf::Writer& w) { w.add_u32(v, 129281); }),
                    {v, "129281", "129280"});
    const std::string kl(key::value_length);
    expect_rejected(published_with(dir, kl, [&](gguf::Writer& w) { w.add_u32(kl, 448); }),
                    {kl, "448", "512"});
}

TEST(MetadataPublished, FloatToleranceIsRelativeOneInAMillion) {
    TempDir dir;
    const std::string k(key::rope_freq_base);
    // 10000.02 (f32: 10000.01953) is 0.0195 off; the tolerance is 10000·1e-6 = 0.01.
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_f32(k, 10000.02f); }),
                    {k, "10000.0195", "expected 10000"});
    expect_accepted(published_with(dir, k, [&](gguf::Writer& w) { w.add_f64(k, 10000.005); }));
    expect_accepted(published_with(dir, k, [&](gguf::Writer& w) { w.add_u32(k, 10000); }));
    expect_accepted(published_with(dir, k, [&](gguf::Writer& w) { w.add_i32(k, 10000); }));
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_string(k, "10000"); }),
                    {k, "missing", "STRING"});
    // Small values get an absolute tolerance of 1e-6 (max(1, |expected|)·1e-6).
    const std::string e(key::rms_epsilon);
    expect_accepted(published_with(dir, e, [&](gguf::Writer& w) { w.add_f64(e, 1.5e-6); }));
    expect_rejected(published_with(dir, e, [&](gguf::Writer& w) { w.add_f64(e, 2.5e-6); }),
                    {e, "2.5e-06", "1e-06"});
    const std::string s(key::expert_weights_scale);
    expect_rejected(published_with(dir, s, [&](gguf::Writer& w) { w.add_f32(s, 2.0f); }),
                    {s, "= 2,", "1.5"});
}

TEST(MetadataPublished, CompressRatiosChecked) {
    TempDir dir;
    const std::string k(key::compress_ratios);
    expect_rejected(
        published_with(dir, k,
                       [&](gguf::Writer& w) { w.add_array_u32(k, published_ratios_with(3, 4)); }),
        {k + "[3]", "= 4", "expected 128"});
    // INT32 elements are accepted, and 43 entries (no MTP entry) are enough.
    const std::vector<uint32_t> r = Hparams::published().compress_ratios;
    const std::vector<int32_t> as_i32(r.begin(), r.end());
    expect_accepted(published_with(dir, k, [&](gguf::Writer& w) { w.add_array_i32(k, as_i32); }));
    std::vector<int32_t> negative = as_i32;
    negative[7] = -128;
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_array_i32(k, negative); }),
                    {k + "[7]", "-128"});
    const std::vector<uint32_t> short_list(r.begin(), r.end() - 1);
    expect_rejected(
        published_with(dir, k, [&](gguf::Writer& w) { w.add_array_u32(k, short_list); }),
        {k, "42 entries", "at least 43"});
    const std::vector<uint64_t> as_u64(r.begin(), r.end());
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_array_u64(k, as_u64); }),
                    {k, "missing", "UINT64"});
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_u32(k, 4); }),
                    {k, "missing"});
}

TEST(MetadataPublished, SwigluClampMustBeTenEverywhere) {
    TempDir dir;
    const std::string k(key::swiglu_clamp_exp);
    std::vector<float> clamps(43, 10.0f);
    clamps[7] = 9.0f;
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_array_f32(k, clamps); }),
                    {k + "[7]", "= 9", "expected 10"});
    const std::vector<double> f64(44, 10.0);
    expect_accepted(published_with(dir, k, [&](gguf::Writer& w) { w.add_array_f64(k, f64); }));
    const std::vector<uint32_t> ints(43, 10);
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_array_u32(k, ints); }),
                    {k, "missing"});
}

TEST(MetadataPublished, ExpertGroupsMustBeZero) {
    TempDir dir;
    const std::string k(key::expert_group_count);
    expect_rejected(published_with(dir, k, [&](gguf::Writer& w) { w.add_u32(k, 2); }),
                    {k, "= 2", "expected 0"});
    expect_accepted(published_with(dir, k, nullptr));  // optional: absent means 0
    const std::string u(key::expert_group_used_count);
    expect_rejected(published_with(dir, u, [&](gguf::Writer& w) { w.add_u32(u, 1); }),
                    {u, "= 1", "expected 0"});
}

TEST(MetadataPublished, OtherKeysFollowDs4TypeRules) {
    TempDir dir;
    const std::string o(key::original_context_length);
    expect_accepted(published_with(dir, o, [&](gguf::Writer& w) { w.add_u32(o, 65536); }));
    expect_rejected(published_with(dir, o, [&](gguf::Writer& w) { w.add_i64(o, 65536); }),
                    {o, "missing"});
    expect_rejected(published_with(dir, o, [&](gguf::Writer& w) { w.add_u64(o, 4096); }),
                    {o, "4096", "65536"});
    const std::string n(key::expert_weights_norm);
    expect_rejected(published_with(dir, n, [&](gguf::Writer& w) { w.add_bool(n, false); }),
                    {n, "false", "true"});
    expect_rejected(published_with(dir, n, [&](gguf::Writer& w) { w.add_u8(n, 1); }),
                    {n, "missing"});
    const std::string h(key::hc_sinkhorn_iterations);
    expect_rejected(published_with(dir, h, [&](gguf::Writer& w) { w.add_u32(h, 10); }),
                    {h, "10", "20"});
    // context_length is informational: any integer type, or absent.
    const std::string c(key::context_length);
    expect_accepted(published_with(dir, c, nullptr));
}

TEST(MetadataReduced, InconsistentShapeIsRejectedNamingFileAndField) {
    TempDir dir;
    const std::string v(key::value_length);
    const std::string bad =
        metadata_with(dir, reduced_shape(), v, [&](gguf::Writer& w) { w.add_u32(v, 96); });
    expect_rejected(bad, {bad, v, "96", "160"});
    const std::string hc(key::head_count);
    expect_rejected(
        metadata_with(dir, reduced_shape(), hc, [&](gguf::Writer& w) { w.add_u32(hc, 7); }),
        {bad, "o_groups"});  // 7 heads do not split into 2 groups
    const std::string c(key::swiglu_clamp_exp);
    expect_rejected(metadata_with(dir, reduced_shape(), c,
                                  [&](gguf::Writer& w) {
                                      w.add_array_f32(c, std::vector<float>{7, 7, 8, 7, 7});
                                  }),
                    {c + "[2]", "8", "same clamp"});
    const std::string r(key::compress_ratios);
    expect_rejected(metadata_with(dir, reduced_shape(), r,
                                  [&](gguf::Writer& w) {
                                      w.add_array_u32(r, std::vector<uint32_t>{0, 4, 64, 0, 4});
                                  }),
                    {"compress_ratios", "64"});
}

}  // namespace
}  // namespace ds4::model
