// Opening models: the summary, the vocabulary, the memory estimate, option checks, and
// clear errors for missing, corrupt and incomplete files.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "cpu/kv_state.h"
#include "ds4/engine.h"
#include "ds4/error.h"
#include "engine_test_util.h"
#include "gguf/gguf.h"
#include "model/metadata.h"
#include "runtime/memory_estimate.h"

namespace ds4::testing {
namespace {

std::string open_error(const std::string& path, const EngineOptions& opt = options(64)) {
    try {
        Engine::open(path, opt);
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "Engine::open(" << path << ") did not throw";
    return {};
}

std::vector<char> read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const std::string& path, const char* data, size_t n) {
    std::ofstream out(path, std::ios::binary);
    out.write(data, static_cast<std::streamsize>(n));
}

// A copy of `src` without tensor `drop`.
void copy_without_tensor(const std::string& src, const std::string& dst, std::string_view drop) {
    const gguf::File f = gguf::File::open(src);
    gguf::Writer w;
    for (const gguf::KeyValue& kv : f.metadata()) w.copy_kv(f, kv);
    for (const gguf::TensorInfo& t : f.tensors())
        if (t.name != drop) w.add_tensor(std::string(t.name), t.shape(), t.ggml_type());
    w.begin(dst);
    for (const gguf::TensorInfo& t : f.tensors())
        if (t.name != drop) w.write_data(f.tensor_data(t));
    w.finish();
}

TEST(EngineOpen, DemoModelSummary) {
    const Engine e = Engine::open(kDemoModel, options(256, 1));
    const ModelSummary& m = e.model();
    EXPECT_EQ(m.path, kDemoModel);
    EXPECT_EQ(m.n_vocab, 129280u);  // the demo carries the real DeepSeek V4 vocabulary
    EXPECT_EQ(m.n_layer, 6u);
    EXPECT_EQ(m.n_embd, 256u);
    EXPECT_EQ(m.n_head, 8u);
    EXPECT_EQ(m.head_dim, 128u);
    EXPECT_EQ(m.n_expert, 16u);
    EXPECT_EQ(m.n_expert_used, 4u);
    EXPECT_EQ(m.window, 128u);
    EXPECT_EQ(m.compress_ratios, (std::vector<uint32_t>{0, 0, 4, 128, 4, 128}));
    EXPECT_EQ(m.quant, "q2");
    EXPECT_TRUE(m.synthetic);
    EXPECT_NE(m.name.find("synthetic random weights"), std::string::npos) << m.name;
    EXPECT_EQ(m.file_bytes, std::filesystem::file_size(kDemoModel));
    EXPECT_GT(m.n_params, 1'000'000u);
    EXPECT_EQ(e.options().ctx, 256u);
    EXPECT_EQ(e.options().threads, 1u);
    EXPECT_EQ(e.sequence_count(), 0u);
}

TEST(EngineOpen, VocabHasGpt2ByteTokens) {
    const Engine e = Engine::open(kDemoModel, options(64, 1));
    const std::vector<std::string>& v = e.vocab();
    // The demo carries the DeepSeek V4 vocabulary: BOS 0, EOS 1, GPT-2 byte tokens.
    ASSERT_EQ(v.size(), 129280u);
    EXPECT_EQ(v[0], "<｜begin▁of▁sentence｜>");
    EXPECT_EQ(v[1], "<｜end▁of▁sentence｜>");
    EXPECT_NE(std::find(v.begin(), v.end(), "A"), v.end());
    EXPECT_NE(std::find(v.begin(), v.end(), "\xc4\xa0"), v.end());  // 'Ġ'
}

TEST(EngineOpen, ZeroThreadsMeansHardwareThreads) {
    const Engine e = Engine::open(kTinyModel, options(64, 0));
    EXPECT_GE(e.options().threads, 1u);
}

TEST(EngineOpen, RejectsZeroContext) {
    EXPECT_NE(open_error(kTinyModel, options(0)).find("context size must be positive"), std::string::npos);
}

TEST(EngineOpen, MissingFileNamesThePath) {
    const std::string msg = open_error("/nonexistent/dir/model.gguf");
    EXPECT_NE(msg.find("/nonexistent/dir/model.gguf"), std::string::npos) << msg;
}

TEST(EngineOpen, TruncatedFileIsRejected) {
    TempDir dir;
    const std::vector<char> bytes = read_all(kTinyModel);
    const std::string path = dir.file("truncated.gguf");
    write_all(path, bytes.data(), bytes.size() / 2);
    const std::string msg = open_error(path);
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST(EngineOpen, GarbageFileIsRejected) {
    TempDir dir;
    const std::string path = dir.file("garbage.gguf");
    const std::string junk(200, 'x');
    write_all(path, junk.data(), junk.size());
    const std::string msg = open_error(path);
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST(EngineOpen, MissingTensorIsNamed) {
    TempDir dir;
    const std::string path = dir.file("no-output.gguf");
    copy_without_tensor(kTinyModel, path, "output.weight");
    const std::string msg = open_error(path);
    EXPECT_NE(msg.find("required tensor is missing: output.weight"), std::string::npos) << msg;
}

TEST(EngineOpen, MissingMetadataIsNamed) {
    TempDir dir;
    const std::string path = dir.file("metadata-only.gguf");
    gguf::Writer w;
    w.add_string("general.architecture", "deepseek4");
    w.begin(path);
    w.finish();
    const std::string msg = open_error(path);
    EXPECT_NE(msg.find("deepseek4."), std::string::npos) << msg;
}

// ---- memory estimate ----

uint64_t allocated_kv_bytes(const cpu::KvState& kv) {
    uint64_t floats = 0;
    const auto compressor = [&](const std::optional<cpu::CompressorState>& c) {
        if (c) floats += c->state_kv.size() + c->state_score.size() + c->rows.size();
    };
    for (uint32_t il = 0; il < kv.n_layer(); ++il) {
        floats += kv.layer(il).raw.size();
        compressor(kv.layer(il).attn);
        compressor(kv.layer(il).index);
    }
    return floats * sizeof(float);
}

TEST(EngineMemory, KvEstimateMatchesTheAllocatedState) {
    const Engine e = Engine::open(kDemoModel, options(64, 1));
    const model::Hparams hp = model::read_hparams(gguf::File::open(kDemoModel));
    for (uint64_t ctx : {1u, 100u, 512u, 4096u, 5000u}) {
        const MemoryEstimate m = e.memory_estimate(ctx);
        EXPECT_EQ(m.kv_per_sequence(), allocated_kv_bytes(cpu::KvState(hp, ctx))) << "ctx " << ctx;
    }
}

TEST(EngineMemory, GrowsLinearlyWithContext) {
    const Engine e = Engine::open(kDemoModel, options(64, 1));
    const MemoryEstimate a = e.memory_estimate(1024), b = e.memory_estimate(2048), c = e.memory_estimate(3072);
    // Fixed parts do not depend on ctx.
    EXPECT_EQ(a.weights, std::filesystem::file_size(kDemoModel));
    EXPECT_EQ(a.weights, c.weights);
    EXPECT_EQ(a.kv_raw, c.kv_raw);
    EXPECT_EQ(a.kv_frontier, c.kv_frontier);
    EXPECT_EQ(a.kv_raw, 6u * 128 * 128 * 4);
    // The compressed rows grow by the same amount for each 1024 tokens (multiples of 128):
    // layers 2, 4 (ratio 4: 128 + 128 floats per 4 tokens) and 3, 5 (ratio 128: 128 floats
    // per 128 tokens).
    const uint64_t per_1024 = 2 * (1024 / 4) * 256 * 4 + 2 * (1024 / 128) * 128 * 4;
    EXPECT_EQ(b.kv_compressed - a.kv_compressed, per_1024);
    EXPECT_EQ(c.kv_compressed - b.kv_compressed, per_1024);
    EXPECT_EQ(b.compressed_kv_rows - a.compressed_kv_rows, 2u * 256 + 2u * 8);
    EXPECT_GT(c.scratch, a.scratch);
    EXPECT_EQ(c.total(), c.weights + c.kv_per_sequence() + c.scratch);
}

TEST(EngineMemory, ReportNamesContextAndComponents) {
    const Engine e = Engine::open(kDemoModel, options(4096, 1));
    const std::string r = e.memory_estimate().report();
    EXPECT_EQ(r.rfind("context buffers ", 0), 0u) << r;
    EXPECT_NE(r.find("ctx=4096"), std::string::npos) << r;
    EXPECT_NE(r.find("backend=cpu"), std::string::npos) << r;
    EXPECT_NE(r.find("raw_kv_rows=128"), std::string::npos) << r;
    EXPECT_NE(r.find("compressed_kv_rows=2112"), std::string::npos) << r;  // 2·1024 + 2·32
    EXPECT_NE(r.find("weights (mapped)"), std::string::npos) << r;
    EXPECT_NE(r.find("kv per sequence"), std::string::npos) << r;
}

// Engine::open's CUDA pass: the first size whose scratch the VRAM holds, halving from
// the chosen size; DS4_CUDA_PREFILL_CHUNK's size or nothing; none: an error with sizes.
TEST(EngineMemory, CudaPassFallsBackToTheLargestThatFits) {
    std::vector<uint32_t> tried;
    const auto fits_up_to = [&](uint32_t limit) {
        return [&tried, limit](uint32_t n) {
            tried.push_back(n);
            return n <= limit;
        };
    };
    const auto bytes = [](uint32_t n) { return uint64_t{n} << 20; };  // 1 MiB per token
    EXPECT_EQ(runtime::fit_cuda_pass(8192, false, 0, fits_up_to(8192), bytes), 8192u);
    EXPECT_EQ(tried, (std::vector<uint32_t>{8192}));
    tried.clear();
    EXPECT_EQ(runtime::fit_cuda_pass(8192, false, 0, fits_up_to(3000), bytes), 2048u);
    EXPECT_EQ(tried, (std::vector<uint32_t>{8192, 4096, 2048}));
    tried.clear();
    try {
        runtime::fit_cuda_pass(8192, false, uint64_t{100} << 20, fits_up_to(100), bytes);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(),
                     "engine: CUDA passes of 256 tokens need 256.00 MiB of VRAM scratch and 100.00 MiB is free after "
                     "the weights (a smaller model or a larger GPU is needed)");
    }
    EXPECT_EQ(tried, (std::vector<uint32_t>{8192, 4096, 2048, 1024, 512, 256}));
    tried.clear();
    try {
        runtime::fit_cuda_pass(12000, true, uint64_t{9000} << 20, fits_up_to(8192), bytes);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(),
                     "engine: CUDA passes of 12000 tokens need 12000.00 MiB of VRAM scratch and 9000.00 MiB is free "
                     "after the weights (DS4_CUDA_PREFILL_CHUNK: unset it or ask for fewer tokens)");
    }
    EXPECT_EQ(tried, (std::vector<uint32_t>{12000}));
}

TEST(EngineMemory, CudaReportAddsTheVramLines) {
    MemoryEstimate m;
    m.ctx = 1024;
    m.kv_raw = 3u << 20;
    m.backend = "cuda";
    m.device_name = "NVIDIA H200";
    m.device_weights = 80ull << 30;
    m.device_scratch = 7ull << 30;
    m.prefill_chunk = 8192;
    m.device_free = 50ull << 30;
    m.device_total = 140ull << 30;
    const std::string r = m.report();
    EXPECT_NE(r.find("backend=cuda"), std::string::npos) << r;
    EXPECT_NE(r.find("  VRAM weights         81920.00 MiB (uploaded once)\n"), std::string::npos) << r;
    EXPECT_NE(r.find("  VRAM kv per sequence 3.00 MiB (allocated with the sequence)\n"), std::string::npos) << r;
    EXPECT_NE(r.find("  VRAM pass scratch    7168.00 MiB (passes of 8192 tokens, reserved at open)\n"),
              std::string::npos)
        << r;
    EXPECT_NE(r.find("  VRAM free            51200.00 MiB of 143360.00 MiB (NVIDIA H200)\n"), std::string::npos)
        << r;
    m.backend = "cpu";
    EXPECT_EQ(m.report().find("VRAM"), std::string::npos);
}

}  // namespace
}  // namespace ds4::testing
