// The synthetic model maker: the files it writes load and validate like a ds4 model,
// their weights have the documented statistics, and they are reproducible.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>
#include <unordered_set>

#include "ds4/error.h"
#include "fast_blocks.h"
#include "init.h"
#include "maker.h"
#include "model/metadata.h"
#include "model/tensor_plan.h"
#include "pipeline.h"
#include "quant/quant.h"
#include "test_util.h"
#include "vocab.h"

namespace ds4::synth {
namespace {

using model::Hparams;
using model::QuantMix;
using model::TensorKind;
using model::TensorPlan;
using model::TensorSpec;
using model::testing::TempDir;

MakeOptions tiny_options(QuantMix mix, uint64_t seed) {
    MakeOptions o;
    o.shape = shape_preset("tiny");
    o.plan.mix = mix;
    o.seed = seed;
    o.threads = 2;
    return o;
}

std::vector<char> read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<float> dequantize(const gguf::File& f, const gguf::TensorInfo& t) {
    const std::span<const uint8_t> bytes = f.tensor_data(t);
    std::vector<float> out(t.n_elements);
    if (t.ggml_type() == GgmlType::I32) {
        for (size_t i = 0; i < out.size(); ++i) {
            int32_t v;
            std::memcpy(&v, bytes.data() + 4 * i, 4);
            out[i] = static_cast<float>(v);
        }
        return out;
    }
    const uint64_t row_bytes = ggml_row_bytes(t.ggml_type(), t.dims[0]);
    for (uint64_t r = 0; r < t.n_elements / t.dims[0]; ++r)
        quant::dequantize_row(t.ggml_type(), bytes.data() + r * row_bytes,
                              out.data() + r * t.dims[0], static_cast<int64_t>(t.dims[0]));
    return out;
}

// The value every element of a kind is centred on (init.h), when it is not 0.
bool has_offset(TensorKind k) {
    return k == TensorKind::Norm || k == TensorKind::HcScale || k == TensorKind::HcBase;
}

// Checks one tensor's values against the init rules: finite, and either an RMS near
// init_std (matrices, vectors centred on 0) or values within 3.5σ of their offset.
void check_statistics(const TensorSpec& spec, const std::vector<float>& v, double rms_tolerance) {
    for (float x : v) ASSERT_TRUE(std::isfinite(x)) << spec.name;
    const double sd = init_std(spec);
    if (spec.kind == TensorKind::Tid2Eid) return;
    if (has_offset(spec.kind)) {
        if (spec.kind == TensorKind::HcBase) return;  // per-slot offsets, covered in InitRules
        for (float x : v) EXPECT_LE(std::fabs(x - 1.0), 3.5 * sd + 1e-3) << spec.name;
        return;
    }
    double ss = 0;
    for (float x : v) ss += double(x) * x;
    const double rms = std::sqrt(ss / v.size());
    if (v.size() < 4096) {  // too few values for a tight RMS: only the bound
        for (float x : v) EXPECT_LE(std::fabs(x), 3.5 * sd + 1e-3) << spec.name;
        return;
    }
    EXPECT_NEAR(rms / sd, 1.0, rms_tolerance)
        << spec.name << " (" << ggml_type_name(spec.type) << ")";
}

void check_model_file(const std::string& path, const MakeOptions& opt, double quant_rms_tolerance) {
    const gguf::File f = gguf::File::open(path);
    const Hparams h = model::read_hparams(f);
    EXPECT_EQ(h.n_layer, opt.shape.n_layer);
    EXPECT_EQ(h.n_embd, opt.shape.n_embd);
    EXPECT_EQ(h.compress_ratios, opt.shape.compress_ratios);
    const TensorPlan plan(h, opt.plan);
    EXPECT_EQ(model::detect_quant_mix(f), opt.plan.mix);
    ASSERT_NO_THROW(model::check_tensors(f, plan));
    ASSERT_NO_THROW(model::check_tid2eid(f, h));
    EXPECT_EQ(f.tensors().size(), plan.size());
    for (const TensorSpec& spec : plan.tensors()) {
        const gguf::TensorInfo& t = f.require_tensor(spec.name);
        const bool quantized = spec.type != GgmlType::F32 && spec.type != GgmlType::F16;
        check_statistics(spec, dequantize(f, t), quantized ? quant_rms_tolerance : 0.05);
    }
}

TEST(MakeModel, PresetsAreValidShapes) {
    for (const char* s : {"published", "demo", "tiny"}) {
        const Hparams h = shape_preset(s);
        EXPECT_NO_THROW(h.validate()) << s;
        EXPECT_NO_THROW(TensorPlan(h, {})) << s;  // q2 rows fit their blocks
    }
    EXPECT_TRUE(model::is_published_shape(shape_preset("published")));
    const Hparams demo = shape_preset("demo");
    EXPECT_EQ(demo.compress_ratios, (std::vector<uint32_t>{0, 0, 4, 128, 4, 128}));
    EXPECT_THROW(shape_preset("huge"), Error);
    EXPECT_TRUE(wants_fast_blocks(TensorPlan(shape_preset("published"), {})));
    EXPECT_FALSE(wants_fast_blocks(TensorPlan(demo, {})));
}

TEST(MakeModel, TinyQ2LoadsValidatesAndHasIntendedStatistics) {
    TempDir dir;
    // The reference IQ2_XXS search is slow (≈30k values/s under ASan): two layers (one CSA
    // hash layer, one HCA biased layer) with one expert each run every quantizer on
    // 131k IQ2_XXS values; the full tiny shape is covered with fast blocks below.
    MakeOptions opt = tiny_options(QuantMix::Q2, 7);
    opt.shape.n_layer = 2;
    opt.shape.compress_ratios = {4, 128};
    opt.shape.n_hash_layer = 1;
    opt.shape.n_expert = 1;
    opt.shape.n_expert_used = 1;
    const std::string path = dir.file("tiny.gguf");
    const MakeResult r = make_model(path, opt);
    EXPECT_EQ(r.n_tensors, TensorPlan(opt.shape, opt.plan).size());
    EXPECT_GT(r.file_bytes, r.tensor_bytes);
    // 2-bit quantization of Gaussian rows keeps their RMS within ~15%.
    check_model_file(path, opt, 0.15);
}

TEST(MakeModel, TinyQ2WithFastBlocksCoversEveryLayerKind) {
    TempDir dir;
    MakeOptions opt = tiny_options(QuantMix::Q2, 8);
    opt.fast_blocks = true;
    const std::string path = dir.file("tiny.gguf");
    make_model(path, opt);
    check_model_file(path, opt, 0.1);
}

TEST(MakeModel, TinyF32StoresTheGeneratedValues) {
    TempDir dir;
    const MakeOptions opt = tiny_options(QuantMix::F32, 11);
    const std::string path = dir.file("tiny32.gguf");
    make_model(path, opt);
    check_model_file(path, opt, 0.05);
}

TEST(MakeModel, FastRandomBlocksHaveIntendedStatistics) {
    TempDir dir;
    for (QuantMix mix : {QuantMix::Q4, QuantMix::F16}) {
        MakeOptions opt = tiny_options(mix, 5);
        opt.fast_blocks = true;
        const std::string path = dir.file("fast.gguf");
        make_model(path, opt);
        check_model_file(path, opt, 0.1);
    }
}

TEST(MakeModel, RandomBlocksDequantizeToTargetRms) {
    for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS}) {
        const int64_t n = 256 * 64;
        std::vector<uint8_t> blocks(ggml_row_bytes(t, n));
        Rng rng(99);
        random_blocks(t, 0.02f, rng, blocks, n);
        std::vector<float> v(n);
        quant::dequantize_row(t, blocks.data(), v.data(), n);
        double s = 0, ss = 0;
        for (float x : v) {
            ASSERT_TRUE(std::isfinite(x));
            s += x;
            ss += double(x) * x;
        }
        EXPECT_NEAR(std::sqrt(ss / n) / 0.02, 1.0, 0.05) << ggml_type_name(t);
        EXPECT_NEAR(s / n, 0.0, 0.02 * 0.05) << ggml_type_name(t);
    }
    std::vector<uint8_t> wrong(10);
    Rng rng(1);
    EXPECT_THROW(random_blocks(GgmlType::Q2_K, 1.0f, rng, wrong, 256), Error);
    EXPECT_FALSE(has_random_blocks(GgmlType::F16));
}

TEST(MakeModel, SameSeedSameBytesWhateverTheThreadCount) {
    TempDir dir;
    // Fast blocks: the row seeding (what thread independence depends on) is the same for
    // quantized rows, and reference quantizers are pure functions of their input.
    MakeOptions a = tiny_options(QuantMix::Q2, 3);
    a.fast_blocks = true;
    a.threads = 1;
    MakeOptions b = a;
    b.threads = 3;
    MakeOptions c = a;
    c.seed = 4;
    make_model(dir.file("a.gguf"), a);
    make_model(dir.file("b.gguf"), b);
    make_model(dir.file("c.gguf"), c);
    const std::vector<char> fa = read_all(dir.file("a.gguf")), fb = read_all(dir.file("b.gguf")),
                            fc = read_all(dir.file("c.gguf"));
    ASSERT_FALSE(fa.empty());
    EXPECT_TRUE(fa == fb) << "thread count changed the output";
    EXPECT_FALSE(fa == fc) << "another seed gave the same file";
    // Every tensor differs with the seed, not just a few bytes.
    const gguf::File ga = gguf::File::open(dir.file("a.gguf")),
                     gc = gguf::File::open(dir.file("c.gguf"));
    for (const auto& t : ga.tensors()) {
        const auto da = ga.tensor_data(t), dc = gc.tensor_data(gc.require_tensor(t.name));
        EXPECT_FALSE(std::equal(da.begin(), da.end(), dc.begin(), dc.end())) << t.name;
    }
}

TEST(MakeModel, Tid2EidRowsAreDistinctIdsInRange) {
    TempDir dir;
    MakeOptions opt = tiny_options(QuantMix::F16, 21);
    opt.shape.n_expert = 8;
    opt.shape.n_expert_used = 6;
    const std::string path = dir.file("hash.gguf");
    make_model(path, opt);
    const gguf::File f = gguf::File::open(path);
    std::vector<int> hits(8, 0);
    for (uint32_t il = 0; il < opt.shape.n_hash_layer; ++il) {
        const gguf::TensorInfo& t =
            f.require_tensor("blk." + std::to_string(il) + ".ffn_gate_tid2eid.weight");
        ASSERT_EQ(t.dims[0], 6u);
        ASSERT_EQ(t.dims[1], opt.shape.n_vocab);
        const std::vector<float> ids = dequantize(f, t);
        for (uint64_t tok = 0; tok < t.dims[1]; ++tok) {
            std::set<int> row;
            for (int k = 0; k < 6; ++k) {
                const int id = static_cast<int>(ids[tok * 6 + k]);
                ASSERT_GE(id, 0);
                ASSERT_LT(id, 8);
                row.insert(id);
                ++hits[id];
            }
            EXPECT_EQ(row.size(), 6u) << "layer " << il << " token " << tok;
        }
    }
    // Uniform choice: each expert gets about 3·320·6/8 = 720 hits.
    for (int e = 0; e < 8; ++e) EXPECT_NEAR(hits[e], 720, 120) << "expert " << e;
}

TEST(MakeModel, InitRulesGiveDocumentedOffsets) {
    const Hparams h = shape_preset("tiny");
    const TensorPlan plan(h, {});
    std::vector<float> base(h.hc_mix());
    Rng rng(1);
    init_row(plan.at("blk.0.hc_attn_base.weight"), h, rng, base);
    const float pre = -std::log(3.0f);  // logit(1/4): σ(pre) = 1/4
    for (uint32_t i = 0; i < 4; ++i) EXPECT_NEAR(base[i], pre, 0.35f);
    for (uint32_t i = 4; i < 8; ++i) EXPECT_NEAR(base[i], 0.0f, 0.35f);
    for (uint32_t i = 8; i < 24; ++i) EXPECT_NEAR(base[i], 0.0f, 0.87f);
    std::vector<float> head(4);
    init_row(plan.at("output_hc_base.weight"), h, rng, head);
    for (float v : head) EXPECT_NEAR(v, pre, 0.35f);
    EXPECT_FLOAT_EQ(init_std(plan.at("blk.0.attn_q_a.weight")), 1.0f / 16.0f);  // 1/sqrt(256)
    EXPECT_FLOAT_EQ(init_std(plan.at("output.weight")), 4.0f / 16.0f);
    EXPECT_FLOAT_EQ(init_std(plan.at("token_embd.weight")), 1.0f);
}

TEST(MakeModel, GaussianApproximationHasUnitVariance) {
    Rng rng(12345);
    double s = 0, ss = 0, m4 = 0;
    const int n = 200000;
    for (int i = 0; i < n; ++i) {
        const double z = rng.gauss();
        ASSERT_LE(std::fabs(z), 3.47);
        s += z;
        ss += z * z;
        m4 += z * z * z * z;
    }
    EXPECT_NEAR(s / n, 0.0, 0.01);
    EXPECT_NEAR(ss / n, 1.0, 0.01);
    EXPECT_NEAR(m4 / n, 2.7, 0.05);  // Irwin-Hall(4) kurtosis: 3 − 1.2/4
    EXPECT_NE(row_seed(1, 2, 3), row_seed(1, 2, 4));
    EXPECT_NE(row_seed(1, 2, 3), row_seed(2, 2, 3));
    EXPECT_NE(name_hash("blk.0.attn_q_a.weight"), name_hash("blk.1.attn_q_a.weight"));
}

TEST(Vocab, ByteTokensUseTheGpt2Map) {
    EXPECT_EQ(byte_token('A'), "A");
    EXPECT_EQ(byte_token(' '), "Ġ");   // U+0120
    EXPECT_EQ(byte_token('\n'), "Ċ");  // U+010A
    EXPECT_EQ(byte_token(0), "Ā");     // U+0100
    EXPECT_EQ(byte_token(127), "ġ");   // U+0121: 33 + 0
    EXPECT_EQ(byte_token(173), "Ń");   // U+0143: the 68th and last remapped byte
    EXPECT_EQ(byte_token(0xe9), "é");  // printable Latin-1 stays
    std::unordered_set<std::string> all;
    for (int b = 0; b < 256; ++b) all.insert(byte_token(static_cast<uint8_t>(b)));
    EXPECT_EQ(all.size(), 256u);
}

void check_vocab_invariants(const Vocab& v, uint32_t n) {
    ASSERT_EQ(v.tokens.size(), n);
    ASSERT_EQ(v.types.size(), n);
    std::unordered_set<std::string> seen;
    for (const std::string& t : v.tokens)
        EXPECT_TRUE(seen.insert(t).second) << "duplicate token " << t;
    for (const std::string& s : required_special_tokens()) EXPECT_TRUE(seen.count(s)) << s;
    for (int b = 0; b < 256; ++b) EXPECT_TRUE(seen.count(byte_token(static_cast<uint8_t>(b))));
    for (const std::string& m : v.merges) {
        const size_t sp = m.find(' ');
        ASSERT_NE(sp, std::string::npos) << m;
        EXPECT_TRUE(seen.count(m.substr(0, sp))) << m;
        EXPECT_TRUE(seen.count(m.substr(sp + 1))) << m;
        EXPECT_TRUE(seen.count(m.substr(0, sp) + m.substr(sp + 1))) << m;
    }
    EXPECT_EQ(v.tokens[v.bos], "<｜begin▁of▁sentence｜>");
    EXPECT_EQ(v.tokens[v.eos], "<｜end▁of▁sentence｜>");
}

TEST(Vocab, PackedLayoutForSmallVocabularies) {
    EXPECT_THROW(make_byte_vocab(min_vocab_size() - 1), Error);
    const Vocab tight = make_byte_vocab(min_vocab_size());
    check_vocab_invariants(tight, min_vocab_size());
    EXPECT_TRUE(tight.merges.empty());
    const Vocab v = make_byte_vocab(512);
    check_vocab_invariants(v, 512);
    EXPECT_EQ(v.bos, 0u);
    EXPECT_EQ(v.eos, 1u);
    EXPECT_EQ(v.tokens[3], byte_token(0));
    EXPECT_EQ(v.tokens[258], byte_token(255));
    EXPECT_GT(v.merges.size(), 60u);
    EXPECT_EQ(v.types[0], 3);
    EXPECT_EQ(v.types[100], 1);
}

TEST(Vocab, PublishedSizePutsSpecialsAtTheirV4Ids) {
    const Vocab v = make_byte_vocab(129280);
    check_vocab_invariants(v, 129280);
    EXPECT_EQ(v.tokens[0], "<｜begin▁of▁sentence｜>");
    EXPECT_EQ(v.tokens[1], "<｜end▁of▁sentence｜>");
    EXPECT_EQ(v.tokens[128803], "<｜User｜>");
    EXPECT_EQ(v.tokens[128804], "<｜Assistant｜>");
    EXPECT_EQ(v.tokens[128821], "<think>");
    EXPECT_EQ(v.tokens[128822], "</think>");
    EXPECT_EQ(v.tokens[128825], "｜DSML｜");
    EXPECT_EQ(v.tokens[128828], "<｜latest_reminder｜>");
    EXPECT_EQ(v.tokens[259], "Ġt");  // the first merge
    EXPECT_EQ(v.tokens[129279].rfind("<｜place▁holder▁no▁", 0), 0u);
}

TEST(Pipeline, RunsEveryIndexOnceAndPropagatesErrors) {
    std::vector<std::atomic<int>> seen(1000);
    run_parallel(seen.size(), 4, [&](size_t i) { ++seen[i]; });
    for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i].load(), 1) << i;
    run_parallel(3, 0, [&](size_t i) { ++seen[i]; });  // 0 threads: one
    EXPECT_EQ(seen[2].load(), 2);

    std::atomic<int> after{0};
    EXPECT_THROW(run_parallel(5000, 3,
                              [&](size_t i) {
                                  if (i == 17) throw std::runtime_error("boom");
                                  if (i > 4000) ++after;
                              }),
                 std::runtime_error);
    EXPECT_LT(after.load(), 1000);  // the workers stopped taking more
}

}  // namespace
}  // namespace ds4::synth
