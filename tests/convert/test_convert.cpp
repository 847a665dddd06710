// Converter unit tests: type policy against the released plans, fallbacks, the produced
// GGUF against read_hparams / check_tensors, exact F32 values, directory input, imatrix
// and clear errors for malformed inputs.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "convert.h"
#include "ds4/error.h"
#include "gguf/gguf.h"
#include "model/metadata.h"
#include "model/tensor_plan.h"
#include "quant/checkpoint.h"

namespace ds4::convert {
namespace {

namespace fs = std::filesystem;

const std::string kTiny = std::string(DS4_TEST_DATA_DIR) + "/golden/golden_tiny_s1.safetensors";

// A scratch directory removed at the end of the test.
class ScratchDir {
  public:
    ScratchDir() {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        path_ = fs::temp_directory_path() / cat("ds4-convert-", ::getpid(), "-", info->name());
        fs::remove_all(path_);
        fs::create_directories(path_);
    }
    ~ScratchDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    std::string operator/(const std::string& name) const { return (path_ / name).string(); }
    const fs::path& path() const { return path_; }

  private:
    fs::path path_;
};

ConvertOptions opts(TypePolicy type, unsigned threads = 1) {
    ConvertOptions o;
    o.type = type;
    o.threads = threads;
    return o;
}

std::string expect_error(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "no ds4::Error thrown";
    return {};
}

// Writes a safetensors file: tensors copied from `src` (optionally renamed / reshaped /
// dropped by `edit`), plus __metadata__.
struct StEntry {
    std::string name, dtype;
    std::vector<uint64_t> shape;
    std::vector<uint8_t> bytes;
};

void write_safetensors(const std::string& path, const std::vector<StEntry>& entries,
                       const std::map<std::string, std::string>& meta) {
    nlohmann::ordered_json h;
    if (!meta.empty()) h["__metadata__"] = meta;
    uint64_t off = 0;
    for (const StEntry& e : entries) {
        h[e.name] = {
            {"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {off, off + e.bytes.size()}}};
        off += e.bytes.size();
    }
    std::string header = h.dump();
    header.append((8 - header.size() % 8) % 8, ' ');
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const StEntry& e : entries)
        out.write(reinterpret_cast<const char*>(e.bytes.data()),
                  static_cast<std::streamsize>(e.bytes.size()));
}

std::vector<StEntry> entries_of(const st::File& f) {
    std::vector<StEntry> out;
    for (const st::Tensor& t : f.tensors()) {
        if (t.name.starts_with("golden.")) continue;
        out.push_back({t.name,
                       std::string(st::dtype_name(t.dtype)),
                       t.shape,
                       {t.data.begin(), t.data.end()}});
    }
    return out;
}

TEST(ConvertPolicy, MatchesTheReleasedPlansOnThePublishedShape) {
    const model::Hparams h = model::Hparams::published();
    const std::pair<TypePolicy, model::QuantMix> pairs[] = {
        {TypePolicy::Q2, model::QuantMix::Q2},
        {TypePolicy::Q4, model::QuantMix::Q4},
        {TypePolicy::F16, model::QuantMix::F16},
        {TypePolicy::F32, model::QuantMix::F32}};
    for (const auto& [policy, mix] : pairs) {
        const TypedPlan typed = typed_plan(h, policy, true);
        const model::TensorPlan plan(h, {.mix = mix});
        ASSERT_EQ(typed.tensors.size(), plan.size());
        EXPECT_TRUE(typed.fallbacks.empty());
        for (size_t i = 0; i < plan.size(); ++i) {
            EXPECT_EQ(typed.tensors[i].name, plan.tensors()[i].name);
            EXPECT_EQ(typed.tensors[i].type, plan.tensors()[i].type)
                << type_policy_name(policy) << " " << plan.tensors()[i].name;
        }
    }
}

TEST(ConvertPolicy, Q8_0KeepsTheF16ClassAndExperts) {
    const model::Hparams h = model::Hparams::published();
    const TypedPlan typed = typed_plan(h, TypePolicy::Q8_0, true);
    const model::TensorPlan q2(h, {.mix = model::QuantMix::Q2});
    for (size_t i = 0; i < q2.size(); ++i) {
        const auto& want = q2.tensors()[i];
        const GgmlType got = typed.tensors[i].type;
        if (want.kind == model::TensorKind::Experts) {
            EXPECT_EQ(got, GgmlType::F16) << want.name;
        } else {
            EXPECT_EQ(got, want.type) << want.name;  // Q8_0 / F16 / F32 / I32 as released
        }
    }
}

TEST(ConvertPolicy, FallbacksFollowTheRowLength) {
    EXPECT_EQ(fitting_type(GgmlType::Q2_K, 256), GgmlType::Q2_K);
    EXPECT_EQ(fitting_type(GgmlType::Q2_K, 128), GgmlType::Q8_0);
    EXPECT_EQ(fitting_type(GgmlType::IQ2_XXS, 64), GgmlType::Q8_0);
    EXPECT_EQ(fitting_type(GgmlType::Q4_K, 48), GgmlType::F16);
    EXPECT_EQ(fitting_type(GgmlType::Q8_0, 16), GgmlType::F16);
    EXPECT_EQ(fitting_type(GgmlType::Q8_0, 64), GgmlType::Q8_0);
    EXPECT_EQ(fitting_type(GgmlType::F32, 3), GgmlType::F32);
    // tiny: dim 64, moe_inter 32, q_lora 16 → every expert tensor and q_b fall back.
    const Checkpoint ck = Checkpoint::open(kTiny);
    const model::Hparams h = hparams_from_model_args(ck.model_args(), kTiny);
    const TypedPlan q2 = typed_plan(h, TypePolicy::Q2, true);
    EXPECT_EQ(q2.fallbacks.size(), size_t{h.n_layer} * 4);
    for (const auto& t : q2.tensors) {
        if (t.name == "blk.0.ffn_gate_exps.weight" || t.name == "blk.0.ffn_down_exps.weight") {
            EXPECT_EQ(t.type, GgmlType::Q8_0);
        } else if (t.name == "blk.0.attn_q_b.weight") {
            EXPECT_EQ(t.type, GgmlType::F16);
        } else if (t.name == "output.weight") {
            EXPECT_EQ(t.type, GgmlType::Q8_0);
        }
    }
}

TEST(ConvertModelArgs, MapsOfficialKeys) {
    const Checkpoint ck = Checkpoint::open(kTiny);
    const model::Hparams h = hparams_from_model_args(ck.model_args(), kTiny);
    EXPECT_EQ(h.n_layer, 9u);
    EXPECT_EQ(h.n_embd, 64u);
    EXPECT_EQ(h.head_dim, 80u);
    EXPECT_EQ(h.idx_head_dim, 32u);
    EXPECT_EQ(h.ff_exp, 32u);
    EXPECT_EQ(h.window, 8u);
    EXPECT_EQ(h.original_seq_len, 64u);
    EXPECT_EQ(h.compress_ratios, (std::vector<uint32_t>{0, 0, 4, 128, 4, 128, 4, 128, 4}));
    EXPECT_NE(
        expect_error([] { hparams_from_model_args(R"({"dim": 64})", "cfg"); }).find("n_layers"),
        std::string::npos);
    EXPECT_NE(expect_error([] { hparams_from_model_args("{", "cfg"); }).find("invalid JSON"),
              std::string::npos);
}

TEST(ConvertOutput, PassesReadHparamsAndPlanChecks) {
    ScratchDir dir;
    for (const auto& [policy, mix] : {std::pair{TypePolicy::F32, model::QuantMix::F32},
                                      std::pair{TypePolicy::F16, model::QuantMix::F16}}) {
        const std::string out = dir / cat(type_policy_name(policy), ".gguf");
        const ConvertResult r = convert_checkpoint(kTiny, out, opts(policy, 2));
        EXPECT_TRUE(r.fallbacks.empty());
        EXPECT_FALSE(r.tokenizer);  // vocab 256 is below the byte-level minimum
        const gguf::File f = gguf::File::open(out);
        const model::Hparams h = model::read_hparams(f);
        EXPECT_EQ(h.n_layer, r.hparams.n_layer);
        EXPECT_EQ(h.n_vocab, r.hparams.n_vocab);
        EXPECT_EQ(h.compress_ratios, r.hparams.compress_ratios);
        EXPECT_EQ(h.original_seq_len, r.hparams.original_seq_len);
        EXPECT_FLOAT_EQ(h.rope_factor, r.hparams.rope_factor);
        EXPECT_NO_THROW(model::check_tensors(f, model::TensorPlan(h, {.mix = mix})));
        EXPECT_NO_THROW(model::check_tid2eid(f, h));
        EXPECT_EQ(model::detect_quant_mix(f), mix);
        EXPECT_EQ(r.tensors, f.tensors().size());
        // Every official main-model tensor was consumed; only golden.* and mtp.* remain.
        for (const std::string& n : r.ignored)
            EXPECT_TRUE(n.starts_with("golden.") || n.starts_with("mtp.")) << n;
    }
}

TEST(ConvertOutput, F32ReproducesTheDecodedCheckpointExactly) {
    ScratchDir dir;
    const std::string out = dir / "f32.gguf";
    convert_checkpoint(kTiny, out, opts(TypePolicy::F32, 2));
    const gguf::File f = gguf::File::open(out);
    const st::File ck = st::File::open(kTiny);
    size_t checked = 0;
    for (const gguf::TensorInfo& t : f.tensors()) {
        const auto data = f.tensor_data(t);
        const std::string name(t.name);
        if (t.ggml_type() == GgmlType::I32) {
            const auto ids = quant::narrow_i64_to_i32(
                quant::tensor_ref(ck, *quant::official_name_for_gguf(name)));
            ASSERT_EQ(data.size(), ids.size() * 4);
            EXPECT_EQ(std::memcmp(data.data(), ids.data(), data.size()), 0) << name;
            ++checked;
            continue;
        }
        ASSERT_EQ(t.ggml_type(), GgmlType::F32) << name;
        std::vector<float> want;
        if (quant::is_routed_expert_gguf_name(name)) {
            for (uint32_t e = 0; e < t.dims[2]; ++e) {
                const auto d = quant::decode_official(ck, *quant::official_expert_name(name, e));
                want.insert(want.end(), d.values.begin(), d.values.end());
            }
        } else {
            want = quant::decode_official(ck, *quant::official_name_for_gguf(name)).values;
        }
        ASSERT_EQ(data.size(), want.size() * 4) << name;
        EXPECT_EQ(std::memcmp(data.data(), want.data(), data.size()), 0) << name;
        ++checked;
    }
    EXPECT_EQ(checked, f.tensors().size());
    EXPECT_GT(checked, 200u);
}

TEST(ConvertInput, DirectoryCheckpointGivesTheSameFile) {
    ScratchDir dir;
    const st::File golden = st::File::open(kTiny);
    // Two shards, split in the middle; scales and weights may land in different shards.
    const std::vector<StEntry> all = entries_of(golden);
    const size_t half = all.size() / 2;
    fs::create_directories(dir.path() / "ckpt");
    write_safetensors(dir / "ckpt/model-00001-of-00002.safetensors",
                      {all.begin(), all.begin() + half}, {});
    write_safetensors(dir / "ckpt/model-00002-of-00002.safetensors",
                      {all.begin() + half, all.end()}, {});
    nlohmann::json index;
    for (size_t i = 0; i < all.size(); ++i)
        index["weight_map"][all[i].name] =
            i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    std::ofstream(dir / "ckpt/model.safetensors.index.json") << index.dump();
    std::ofstream(dir / "ckpt/config.json") << golden.metadata().at("model_args");

    convert_checkpoint(kTiny, dir / "a.gguf", opts(TypePolicy::F16, 1));
    convert_checkpoint(dir / "ckpt", dir / "b.gguf", opts(TypePolicy::F16, 2));
    const gguf::File a = gguf::File::open(dir / "a.gguf");
    const gguf::File b = gguf::File::open(dir / "b.gguf");
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.bytes().data(), b.bytes().data(), a.size()), 0);
}

TEST(ConvertInput, MalformedInputsGiveClearErrors) {
    ScratchDir dir;
    const st::File golden = st::File::open(kTiny);
    const std::map<std::string, std::string> meta = {
        {"model_args", golden.metadata().at("model_args")}};
    std::vector<StEntry> all = entries_of(golden);

    // A missing tensor is named, and no output file is left behind.
    std::vector<StEntry> missing;
    for (const StEntry& e : all)
        if (e.name != "layers.4.attn.wq_b.weight") missing.push_back(e);
    write_safetensors(dir / "missing.safetensors", missing, meta);
    std::string msg = expect_error(
        [&] { convert_checkpoint(dir / "missing.safetensors", dir / "m.gguf", ConvertOptions{}); });
    EXPECT_NE(msg.find("layers.4.attn.wq_b.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(dir / "m.gguf"));

    // A wrong shape names the official tensor and the GGUF tensor it feeds.
    std::vector<StEntry> reshaped = all;
    for (StEntry& e : reshaped)
        if (e.name == "layers.2.attn_norm.weight") {
            e.shape = {32};
            e.bytes.resize(64);
        }
    write_safetensors(dir / "shape.safetensors", reshaped, meta);
    msg = expect_error([&] {
        convert_checkpoint(dir / "shape.safetensors", dir / "s.gguf", opts(TypePolicy::F32));
    });
    EXPECT_NE(msg.find("layers.2.attn_norm.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("blk.2.attn_norm.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[32]"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(dir / "s.gguf"));

    // A wrong expert shape names the expert.
    std::vector<StEntry> bad_expert = all;
    for (StEntry& e : bad_expert)
        if (e.name == "layers.1.ffn.experts.3.w2.weight") {
            e.shape = {64, 8};  // [out, in/2] of a 16-wide row instead of 32
            e.bytes.resize(64 * 8);
        }
    write_safetensors(dir / "expert.safetensors", bad_expert, meta);
    msg = expect_error([&] {
        convert_checkpoint(dir / "expert.safetensors", dir / "e.gguf", opts(TypePolicy::F32));
    });
    EXPECT_NE(msg.find("layers.1.ffn.experts.3.w2"), std::string::npos) << msg;

    // No ModelArgs anywhere.
    write_safetensors(dir / "noargs.safetensors", all, {});
    msg = expect_error(
        [&] { convert_checkpoint(dir / "noargs.safetensors", dir / "n.gguf", ConvertOptions{}); });
    EXPECT_NE(msg.find("model_args"), std::string::npos) << msg;

    // A directory without config.json / without the index.
    fs::create_directories(dir.path() / "noconfig");
    msg = expect_error(
        [&] { convert_checkpoint(dir / "noconfig", dir / "c.gguf", ConvertOptions{}); });
    EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
    std::ofstream(dir / "noconfig/config.json") << golden.metadata().at("model_args");
    msg = expect_error(
        [&] { convert_checkpoint(dir / "noconfig", dir / "c.gguf", ConvertOptions{}); });
    EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;

    msg = expect_error(
        [&] { convert_checkpoint(dir / "nothing-here", dir / "x.gguf", ConvertOptions{}); });
    EXPECT_NE(msg.find("nothing-here"), std::string::npos) << msg;
    EXPECT_NE(expect_error([] { parse_type_policy("q3"); }).find("q8_0"), std::string::npos);
}

void write_imatrix(const std::string& path,
                   const std::vector<std::pair<std::string, std::vector<float>>>& entries,
                   int32_t ncall) {
    std::ofstream out(path, std::ios::binary);
    auto i32 = [&](int32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
    i32(static_cast<int32_t>(entries.size()));
    for (const auto& [name, values] : entries) {
        i32(static_cast<int32_t>(name.size()));
        out.write(name.data(), static_cast<std::streamsize>(name.size()));
        i32(ncall);
        i32(static_cast<int32_t>(values.size()));
        out.write(reinterpret_cast<const char*>(values.data()),
                  static_cast<std::streamsize>(values.size() * 4));
    }
}

TEST(ConvertImatrix, LookupOrderAndSlicing) {
    ScratchDir dir;
    std::vector<float> packed(4 * 3);
    for (size_t i = 0; i < packed.size(); ++i) packed[i] = static_cast<float>(2 * i);
    write_imatrix(dir / "m.dat",
                  {{"blk.0.ffn_gate_exps.weight", packed},
                   {"blk.0.ffn_gate_exps.weight.expert.1", {8, 8, 8, 8}},
                   {"layers.0.ffn.experts.2.w3.weight.expert_2", {6, 6, 6, 6}}},
                  2);
    const Imatrix m = Imatrix::load(dir / "m.dat");
    EXPECT_EQ(m.size(), 3u);
    // pass 1 hit (values divided by ncall = 2)
    auto v =
        m.for_expert("blk.0.ffn_gate_exps.weight", "layers.0.ffn.experts.1.w1.weight", 1, 4, 3);
    ASSERT_EQ(v.size(), 4u);
    EXPECT_EQ(v[0], 4.0f);
    // pass 3: the packed entry sliced at expert 2 → values 16..22 / 2
    v = m.for_expert("blk.0.ffn_gate_exps.weight", "layers.0.ffn.experts.2.w1.weight", 2, 4, 3);
    ASSERT_EQ(v.size(), 4u);
    EXPECT_EQ(v[0], 8.0f);
    EXPECT_EQ(v[3], 11.0f);
    // pass 2 on the official name
    v = m.for_expert("blk.0.ffn_up_exps.weight", "layers.0.ffn.experts.2.w3.weight", 2, 4, 3);
    ASSERT_EQ(v.size(), 4u);
    EXPECT_EQ(v[0], 3.0f);
    EXPECT_TRUE(m.for_expert("blk.1.ffn_up_exps.weight", "x", 0, 4, 3).empty());
    // wrong length is fatal and named
    const std::string msg =
        expect_error([&] { m.for_expert("blk.0.ffn_gate_exps.weight", "x", 0, 5, 3); });
    EXPECT_NE(msg.find("blk.0.ffn_gate_exps.weight"), std::string::npos) << msg;
    // truncated file
    std::ofstream(dir / "bad.dat", std::ios::binary) << "\x01\x00";
    EXPECT_NE(expect_error([&] { Imatrix::load(dir / "bad.dat"); }).find("truncated"),
              std::string::npos);
}

// --mtp-out: the MTP block alone in its own GGUF, typed like the main file.
TEST(ConvertMtp, SeparateGgufHoldsExactlyTheMtpBlock) {
    ScratchDir dir;
    ConvertOptions o = opts(TypePolicy::F32, 2);
    o.mtp_output = dir / "mtp.gguf";
    const ConvertResult r = convert_checkpoint(kTiny, dir / "main.gguf", o);
    const gguf::File main_file = gguf::File::open(dir / "main.gguf");
    const gguf::File mtp = gguf::File::open(o.mtp_output);
    const TypedPlan plan = typed_mtp_plan(r.hparams, TypePolicy::F32);
    ASSERT_EQ(mtp.tensors().size(), plan.tensors.size());
    EXPECT_EQ(r.mtp_tensors, plan.tensors.size());
    for (const gguf::TensorInfo& t : mtp.tensors())
        EXPECT_TRUE(std::string_view(t.name).starts_with("mtp.0.")) << t.name;
    for (const gguf::TensorInfo& t : main_file.tensors())
        EXPECT_FALSE(std::string_view(t.name).starts_with("mtp.")) << t.name;
    EXPECT_NO_THROW(model::check_mtp_tensors(mtp, r.hparams));
    EXPECT_EQ(model::detect_mtp_quant_mix(mtp), model::QuantMix::F32);
    // every official tensor was consumed but the golden outputs
    for (const std::string& n : r.ignored) EXPECT_TRUE(n.starts_with("golden.")) << n;
    // FP8 e_proj decodes exactly into the F32 file
    const st::File ck = st::File::open(kTiny);
    const auto want = quant::decode_official(ck, "mtp.0.e_proj.weight").values;
    const auto data = mtp.tensor_data(mtp.require_tensor("mtp.0.e_proj.weight"));
    ASSERT_EQ(data.size(), want.size() * sizeof(float));
    EXPECT_EQ(std::memcmp(data.data(), want.data(), data.size()), 0);
    // the main file is not an MTP file
    const std::string msg = expect_error([&] { model::check_mtp_tensors(main_file, r.hparams); });
    EXPECT_NE(msg.find("mtp.0.attn_q_a.weight"), std::string::npos) << msg;
}

TEST(ConvertMtp, TypePolicyFollowsTheReleasedMtpFile) {
    // small: dim 256, moe_inter 128 (down rows of 128 fall back to Q8_0)
    const std::string small =
        std::string(DS4_TEST_DATA_DIR) + "/golden/golden_small_s1.safetensors";
    const Checkpoint ck = Checkpoint::open(small);
    const model::Hparams h = hparams_from_model_args(ck.model_args(), small);
    EXPECT_TRUE(has_mtp_block(ck));
    const TypedPlan q2 = typed_mtp_plan(h, TypePolicy::Q2);
    std::map<std::string, GgmlType> type;
    for (const auto& t : q2.tensors) type[t.name] = t.type;
    EXPECT_EQ(type.at("mtp.0.e_proj.weight"), GgmlType::Q8_0);
    EXPECT_EQ(type.at("mtp.0.h_proj.weight"), GgmlType::Q8_0);
    EXPECT_EQ(type.at("mtp.0.attn_q_a.weight"), GgmlType::Q8_0);
    EXPECT_EQ(type.at("mtp.0.hc_head_fn.weight"), GgmlType::F16);
    EXPECT_EQ(type.at("mtp.0.ffn_gate_inp.weight"), GgmlType::F16);
    EXPECT_EQ(type.at("mtp.0.exp_probs_b.bias"), GgmlType::F32);
    EXPECT_EQ(type.at("mtp.0.enorm.weight"), GgmlType::F32);
    EXPECT_EQ(type.at("mtp.0.ffn_gate_exps.weight"), GgmlType::IQ2_XXS);
    EXPECT_EQ(type.at("mtp.0.ffn_down_exps.weight"), GgmlType::Q8_0);
    EXPECT_EQ(q2.fallbacks.size(), 1u);
    EXPECT_EQ(typed_mtp_plan(h, TypePolicy::Q4).tensors.size(), q2.tensors.size());
    for (const auto& t : typed_mtp_plan(h, TypePolicy::F16).tensors)
        EXPECT_EQ(t.type, t.dims.size() == 1 ? GgmlType::F32 : GgmlType::F16) << t.name;
}

// --mtp-out needs the block: a checkpoint without it, or with a piece missing, fails
// before anything is written, naming what is missing.
TEST(ConvertMtp, MissingBlockOrTensorIsNamed) {
    ScratchDir dir;
    const st::File golden = st::File::open(kTiny);
    const std::map<std::string, std::string> meta = {
        {"model_args", golden.metadata().at("model_args")}};
    std::vector<StEntry> no_mtp, no_hnorm;
    for (const StEntry& e : entries_of(golden)) {
        if (!e.name.starts_with("mtp.")) no_mtp.push_back(e);
        if (e.name != "mtp.0.hnorm.weight") no_hnorm.push_back(e);
    }
    write_safetensors(dir / "no_mtp.safetensors", no_mtp, meta);
    write_safetensors(dir / "no_hnorm.safetensors", no_hnorm, meta);
    ConvertOptions o = opts(TypePolicy::F32);
    o.mtp_output = dir / "mtp.gguf";
    std::string msg =
        expect_error([&] { convert_checkpoint(dir / "no_mtp.safetensors", dir / "a.gguf", o); });
    EXPECT_NE(msg.find("no MTP block"), std::string::npos) << msg;
    msg =
        expect_error([&] { convert_checkpoint(dir / "no_hnorm.safetensors", dir / "b.gguf", o); });
    EXPECT_NE(msg.find("mtp.0.hnorm.weight"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(dir / "mtp.gguf"));
    EXPECT_FALSE(fs::exists(dir / "b.gguf"));
    // without --mtp-out the same checkpoint converts (the block is optional then)
    EXPECT_NO_THROW(
        convert_checkpoint(dir / "no_mtp.safetensors", dir / "c.gguf", opts(TypePolicy::F32)));
}

}  // namespace
}  // namespace ds4::convert
