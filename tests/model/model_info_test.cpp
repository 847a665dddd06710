// ds4-model-info and the ds4-make-model CLI, run as the user runs them.
#include <gtest/gtest.h>

#include <string>

#include "maker.h"
#include "model/metadata.h"
#include "model/tensor_plan.h"
#include "test_util.h"
#include "vocab.h"

namespace ds4::model {
namespace {

using testing::CommandResult;
using testing::run_command;
using testing::TempDir;
using testing::tool_path;

void expect_contains(const std::string& out, const std::string& what) {
    EXPECT_NE(out.find(what), std::string::npos) << "missing \"" << what << "\" in:\n" << out;
}

TEST(ModelInfo, SummarisesAndValidatesAToolMadeModel) {
    TempDir dir;
    const std::string path = dir.file("m.gguf");
    const CommandResult made =
        run_command(tool_path("ds4-make-model") + " -o " + path + " --shape tiny --quant q4 --seed 3 -q");
    ASSERT_EQ(made.status, 0) << made.output;
    const CommandResult info = run_command(tool_path("ds4-model-info") + " " + path);
    ASSERT_EQ(info.status, 0) << info.output;
    expect_contains(info.output, "synthetic random-weight demo model");
    expect_contains(info.output, "scripts/download_model.sh q2-imatrix");
    expect_contains(info.output, "file " + path);
    expect_contains(info.output, "version 3, alignment 32");
    expect_contains(info.output, "published    no");
    expect_contains(info.output, "layers       4 (hash-routed: 0-2)");
    expect_contains(info.output, "ratio 0: 0-1 (2) | ratio 4: 2 (1) | ratio 128: 3 (1)");
    expect_contains(info.output, "D 256, vocab 320");
    expect_contains(info.output, "4 routed (2 used");
    expect_contains(info.output, "Q4_K");
    expect_contains(info.output, "mix q4, routed experts 4-bit (blk.0.ffn_gate_exps Q4_K)");
    expect_contains(info.output, "gpt2 / joyai-llm, 320 tokens");
    expect_contains(info.output, "<｜User｜>");
    expect_contains(info.output, "check        OK");
}

TEST(ModelInfo, RejectsAFileMissingAPlannedTensor) {
    TempDir dir;
    const Hparams h = synth::shape_preset("tiny");
    const TensorPlan plan(h, {});
    const std::string path = dir.file("broken.gguf");
    {
        gguf::Writer w;
        write_metadata(w, h);
        synth::write_tokenizer(w, synth::make_byte_vocab(h.n_vocab));
        std::vector<uint8_t> zeros;
        for (const TensorSpec& t : plan.tensors()) {
            if (t.name == "blk.2.indexer.proj.weight") continue;
            w.add_tensor(t.name, t.dims, t.type);
        }
        w.begin(path);
        for (size_t i = 0; i < w.tensor_count(); ++i) {
            zeros.assign(w.tensor_bytes(i), 0);
            w.write_data(zeros);
        }
        w.finish();
    }
    const CommandResult info = run_command(tool_path("ds4-model-info") + " " + path);
    EXPECT_EQ(info.status, 1) << info.output;
    expect_contains(info.output, "required tensor is missing: blk.2.indexer.proj.weight");
}

TEST(ModelInfo, RejectsWrongTypesAndDims) {
    TempDir dir;
    const Hparams h = synth::shape_preset("tiny");
    const TensorPlan plan(h, {});
    auto write_with = [&](const std::string& path, const std::string& victim, GgmlType type,
                          std::vector<uint64_t> dims) {
        gguf::Writer w;
        write_metadata(w, h);
        synth::write_tokenizer(w, synth::make_byte_vocab(h.n_vocab));
        for (const TensorSpec& t : plan.tensors()) {
            if (t.name == victim) {
                w.add_tensor(t.name, dims, type);
            } else {
                w.add_tensor(t.name, t.dims, t.type);
            }
        }
        w.begin(path);
        std::vector<uint8_t> zeros;
        for (size_t i = 0; i < w.tensor_count(); ++i) {
            zeros.assign(w.tensor_bytes(i), 0);
            w.write_data(zeros);
        }
        w.finish();
    };
    const std::string a = dir.file("type.gguf");
    write_with(a, "blk.1.attn_kv.weight", GgmlType::F16, {256, 128});
    CommandResult info = run_command(tool_path("ds4-model-info") + " " + a);
    EXPECT_EQ(info.status, 1);
    expect_contains(info.output, "tensor blk.1.attn_kv.weight has type F16, expected Q8_0");

    const std::string b = dir.file("dims.gguf");
    write_with(b, "blk.3.attn_sinks.weight", GgmlType::F32, {5});
    info = run_command(tool_path("ds4-model-info") + " " + b);
    EXPECT_EQ(info.status, 1);
    expect_contains(info.output, "tensor blk.3.attn_sinks.weight has dim[0]=5, expected 4");

    const std::string c = dir.file("mixed.gguf");
    write_with(c, "blk.3.ffn_up_exps.weight", GgmlType::Q4_K, {256, 256, 4});
    info = run_command(tool_path("ds4-model-info") + " " + c);
    EXPECT_EQ(info.status, 1);
    expect_contains(info.output, "routed gate/up experts use different quant types in layer 3");
}

TEST(MakeModelCli, RejectsInvalidShapesAndOptions) {
    TempDir dir;
    const std::string out = dir.file("x.gguf");
    CommandResult r = run_command(tool_path("ds4-make-model") + " -o " + out + " --shape tiny --heads 5 -q");
    EXPECT_EQ(r.status, 1);
    expect_contains(r.output, "o_groups");
    r = run_command(tool_path("ds4-make-model") + " -o " + out + " --shape tiny --quant q3 -q");
    EXPECT_EQ(r.status, 1);
    expect_contains(r.output, "unknown quant mix 'q3'");
    r = run_command(tool_path("ds4-make-model") + " -o " + out + " --shape tiny --embd 128 -q");
    EXPECT_EQ(r.status, 1);
    expect_contains(r.output, "not a multiple of the IQ2_XXS block");
    r = run_command(tool_path("ds4-make-model") + " -o " + out + " --shape tiny --vocab 100 -q");
    EXPECT_EQ(r.status, 1);
    expect_contains(r.output, "too small for the byte-level vocabulary");
}

TEST(MakeModelCli, OverridesReachTheFile) {
    TempDir dir;
    const std::string out = dir.file("o.gguf");
    const CommandResult r = run_command(tool_path("ds4-make-model") + " -o " + out +
                                        " --shape tiny --quant f16 --layers 3 --ratios 0,128,4 --hash-layers 1"
                                        " --window 8 --experts 8 --experts-used 3 --vocab 400 --ctx 2048 -q");
    ASSERT_EQ(r.status, 0) << r.output;
    const gguf::File f = gguf::File::open(out);
    const Hparams h = read_hparams(f);
    EXPECT_EQ(h.n_layer, 3u);
    EXPECT_EQ(h.compress_ratios, (std::vector<uint32_t>{0, 128, 4}));
    EXPECT_EQ(h.n_hash_layer, 1u);
    EXPECT_EQ(h.window, 8u);
    EXPECT_EQ(h.n_expert, 8u);
    EXPECT_EQ(h.n_expert_used, 3u);
    EXPECT_EQ(h.n_vocab, 400u);
    EXPECT_EQ(h.context_length, 2048u);
    EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens").size(), 400u);
    PlanOptions o;
    o.mix = QuantMix::F16;
    EXPECT_NO_THROW(check_tensors(f, TensorPlan(h, o)));
}

}  // namespace
}  // namespace ds4::model
