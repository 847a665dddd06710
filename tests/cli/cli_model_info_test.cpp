// `ds4 --version` and `ds4 --model-info` on the demo model: every number the report prints
// is checked against the GGUF directory read here with the gguf library and against the
// engine's own memory estimate.
#include <gtest/gtest.h>

#include <map>
#include <regex>

#include "cli/model_info.h"
#include "cli_test_util.h"
#include "ds4/engine.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"

namespace ds4::testing {
namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string mib(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
    return buf;
}

// The report's "  label  value" line for `label`, without the label ("" when absent).
std::string field(const std::string& report, const std::string& label) {
    const std::regex re("\n  " + label + " +([^\n]*)\n");
    std::smatch m;
    return std::regex_search(report, m, re) ? m[1].str() : "";
}

TEST(CliVersion, PrintsVersionCommitAndBackends) {
    const CliResult r = run_ds4("--version");
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.err, "");
    EXPECT_TRUE(std::regex_match(
        r.out, std::regex("ds4 0\\.1\\.0\ncommit ([0-9a-f]{12}|unknown)\nbackends: cpu[^\n]*\n")))
        << r.out;
}

TEST(CliModelInfo, DemoModelMetadataMatchesItsFile) {
    const CliResult r = run_ds4("--model-info -m '" + kDemoModel + "' --ctx 4096");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "");  // no banner, no memory report on stderr: stdout has it all
    const gguf::File f = gguf::File::open(kDemoModel);
    EXPECT_TRUE(r.out.starts_with("model " + kDemoModel + "\n")) << r.out;
    EXPECT_EQ(field(r.out, "architecture"), "deepseek4");
    EXPECT_EQ(field(r.out, "name"), std::string(*f.get_string("general.name")));
    EXPECT_EQ(field(r.out, "layers"), std::to_string(f.require_u32("deepseek4.block_count")));
    EXPECT_EQ(field(r.out, "hidden size"), std::to_string(f.require_u32("deepseek4.embedding_length")));
    EXPECT_EQ(field(r.out, "experts"),
              std::to_string(f.require_u32("deepseek4.expert_count")) + " routed, " +
                  std::to_string(f.require_u32("deepseek4.expert_used_count")) + " used per token");
    EXPECT_EQ(field(r.out, "vocabulary"), "129280 tokens");  // the real V4 vocabulary
    EXPECT_EQ(field(r.out, "context length"),
              std::to_string(f.require_integer("deepseek4.context_length")) + " tokens (model metadata)");
    EXPECT_EQ(field(r.out, "quant mix"), "q2");
    // The q2 recipe (formats.md §4.2): IQ2_XXS gate/up, Q2_K down.
    EXPECT_EQ(field(r.out, "routed experts"), "gate IQ2_XXS, up IQ2_XXS, down Q2_K");
    EXPECT_TRUE(contains(field(r.out, "synthetic"), "random weights")) << r.out;
}

TEST(CliModelInfo, DemoModelTensorsByTypeMatchItsDirectory) {
    const CliResult r = run_ds4("--model-info -m '" + kDemoModel + "'");
    ASSERT_EQ(r.status, 0) << r.err;
    const gguf::File f = gguf::File::open(kDemoModel);
    std::map<std::string, std::pair<uint64_t, uint64_t>> by_type;  // count, bytes
    uint64_t total = 0;
    for (const gguf::TensorInfo& t : f.tensors()) {
        auto& [count, bytes] = by_type[ggml_type_name(t.type)];
        count += 1;
        bytes += t.n_bytes;
        total += t.n_bytes;
    }
    ASSERT_GE(by_type.size(), 4u);  // F32, F16, Q8_0, IQ2_XXS, Q2_K at least
    for (const auto& [type, cb] : by_type) {
        const std::regex line("\n  " + type + " +" + std::to_string(cb.first) + " tensors  " +
                               std::to_string(cb.second) + " bytes \\(" + mib(cb.second) + "\\)\n");
        EXPECT_TRUE(std::regex_search(r.out, line)) << type << "\n" << r.out;
    }
    EXPECT_TRUE(contains(r.out, "  weights   " + std::to_string(f.tensors().size()) + " tensors, " +
                                    std::to_string(total) + " bytes"))
        << r.out;
    EXPECT_TRUE(contains(r.out, "  file      " + std::to_string(f.size()) + " bytes")) << r.out;
    EXPECT_LT(total, f.size());  // the directory and metadata are the rest
}

TEST(CliModelInfo, MemoryIsTheEngineEstimateAndGrowsWithTheContext) {
    EngineOptions eo;
    eo.threads = 1;
    const Engine engine = Engine::open(kDemoModel, eo);
    for (const uint64_t ctx : {4096u, 65536u}) {
        const CliResult r = run_ds4("--model-info -m '" + kDemoModel + "' --ctx " + std::to_string(ctx));
        ASSERT_EQ(r.status, 0) << r.err;
        const MemoryEstimate est = engine.memory_estimate(ctx);
        EXPECT_TRUE(contains(r.out, "memory at --ctx " + std::to_string(ctx) + "\n  " + est.report()))
            << r.out;
        EXPECT_TRUE(contains(r.out, "  total                " + std::to_string(est.total()) + " bytes"))
            << r.out;
    }
    // Weights are the same at any context; the compressed KV grows with it.
    const MemoryEstimate small = engine.memory_estimate(4096), large = engine.memory_estimate(65536);
    EXPECT_EQ(small.weights, large.weights);
    EXPECT_EQ(small.kv_raw, large.kv_raw);  // the sliding windows do not depend on ctx
    EXPECT_GT(large.kv_compressed, small.kv_compressed);
}

TEST(CliModelInfo, FormatsAHandMadeSummaryExactly) {
    ModelSummary m;
    m.path = "x.gguf";
    m.name = "tiny";
    m.architecture = "deepseek4";
    m.n_layer = 2;
    m.n_embd = 64;
    m.n_head = 4;
    m.head_dim = 16;
    m.window = 8;
    m.compress_ratios = {0, 4};
    m.n_expert = 8;
    m.n_expert_used = 2;
    m.n_vocab = 100;
    m.context_length = 1048576;
    m.n_params = 12345;
    m.quant = "q4";
    m.expert_gate_type = m.expert_up_type = m.expert_down_type = "Q4_K";
    m.tensor_types = {{"F32", 3, 1024}, {"Q4_K", 6, 3 * 1048576}};
    m.tensor_bytes = 1024 + 3 * 1048576;
    m.file_bytes = m.tensor_bytes + 4096;
    MemoryEstimate est;
    est.ctx = 512;
    est.weights = m.file_bytes;
    est.kv_raw = 1000;
    est.scratch = 24;
    const std::string out = cli::format_model_info(m, est);
    const std::string head =
        "model x.gguf\n"
        "  name              tiny\n"
        "  architecture      deepseek4\n"
        "  layers            2\n"
        "  hidden size       64\n"
        "  attention         4 heads x 16, sliding window 8\n"
        "  compress ratios   0,4\n"
        "  experts           8 routed, 2 used per token\n"
        "  vocabulary        100 tokens\n"
        "  context length    1048576 tokens (model metadata)\n"
        "  parameters        12345 (main model)\n"
        "  quant mix         q4\n"
        "  routed experts    gate Q4_K, up Q4_K, down Q4_K\n"
        "tensors by type\n"
        "  F32            3 tensors  1024 bytes (0.00 MiB)\n"
        "  Q4_K           6 tensors  3145728 bytes (3.00 MiB)\n"
        "  weights   9 tensors, 3146752 bytes (3.00 MiB)\n"
        "  file      3150848 bytes (3.00 MiB)\n"
        "memory at --ctx 512\n  ";
    EXPECT_EQ(out.substr(0, head.size()), head);
    EXPECT_TRUE(out.ends_with("  total                3151872 bytes (3.01 MiB) = 0.00 GiB (weights + "
                              "one sequence + scratch)\n"))
        << out;
}

TEST(CliModelInfo, Errors) {
    TempDir dir;
    CliResult r = run_ds4("--model-info -m '" + dir.file("missing.gguf") + "'");
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(contains(r.err, "missing.gguf: no such file")) << r.err;
    r = run_ds4("--model-info", dir.path());  // the default ds4flash.gguf is not there
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(contains(r.err, "scripts/download_model.sh")) << r.err;
    r = run_ds4("--model-info -p hi");
    EXPECT_EQ(r.status, 2);
    EXPECT_TRUE(contains(r.err, "--model-info takes no prompt")) << r.err;
    write_file(dir.file("junk.gguf"), "not a gguf");
    r = run_ds4("--model-info -m '" + dir.file("junk.gguf") + "'");
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(contains(r.err, "junk.gguf")) << r.err;
}

}  // namespace
}  // namespace ds4::testing
