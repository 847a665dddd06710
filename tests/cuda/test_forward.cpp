// The whole-model CUDA forward pass (cuda::Forward) against the official goldens
// (tests/data/golden, the same files tests/cpu_forward uses) and against the CPU exact
// path on the demo model through the engine (Backend::Cuda). Every test skips without a
// GPU. Paths can be overridden for the device machine, where the tree lives elsewhere:
// DS4_TEST_DATA (tests/data) and DS4_DEMO_GGUF (build/ds4-demo.gguf).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>

#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "cpu/matvec.h"
#include "cuda/forward.h"
#include "cuda/matmul_mma.h"
#include "cuda/matmul_mma_experts.h"
#include "cuda/matmul_q8_experts.h"
#include "cuda_test_util.h"
#include "ds4/engine.h"
#include "golden_compare.h"
#include "golden_model.h"
#include "gguf/gguf.h"
#include "model/metadata.h"

namespace ds4::cuda::test {
namespace {

using cpu::test::compare_logits;
using cpu::test::describe;
using cpu::test::Golden;
using cpu::test::LogitStats;

std::string env_or(const char* name, const std::string& fallback) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

struct LoadedGolden {
    std::unique_ptr<Golden> golden;
    std::unique_ptr<cpu::CpuModel> model;
};

const LoadedGolden& golden(const std::string& name) {
    static std::map<std::string, LoadedGolden> cache;
    auto it = cache.find(name);
    if (it == cache.end()) {
        LoadedGolden lg;
        const std::string dir = env_or("DS4_TEST_DATA", DS4_TEST_DATA_DIR);
        lg.golden = Golden::load(dir + "/golden/golden_" + name + ".safetensors", name);
        lg.model = std::make_unique<cpu::CpuModel>(lg.golden->hp, lg.golden->weights);
        it = cache.emplace(name, std::move(lg)).first;
    }
    return it->second;
}

// Evaluates the golden's tokens through `fwd` in chunks of sizes[0], sizes[1], … (the
// last size repeating), logits at every row.
std::vector<float> run_chunks(Forward& fwd, const Golden& g, cpu::KvState& state, const std::vector<uint32_t>& sizes,
                              uint32_t from = 0, uint32_t to = 0) {
    const uint32_t V = g.hp.n_vocab, T = to != 0 ? to : g.T;
    std::vector<float> logits(uint64_t{T - from} * V);
    std::vector<uint32_t> rows;
    uint32_t pos = from;
    for (size_t i = 0; pos < T; ++i) {
        const uint32_t n = std::min(sizes[std::min(i, sizes.size() - 1)], T - pos);
        rows.resize(n);
        std::iota(rows.begin(), rows.end(), 0u);
        fwd.eval(state, pos, {g.tokens.data() + pos, n}, rows, {logits.data() + uint64_t{pos - from} * V, uint64_t{n} * V});
        pos += n;
    }
    return logits;
}

void report(const std::string& golden_name, const std::string& what, const LogitStats& s) {
    std::cout << "[cuda golden] " << golden_name << " " << describe(what, s) << "  argmax agreement "
              << s.argmax_agree_all << "/" << s.positions << "\n";
}

// The bound: every position within 2e-2 of the reference; argmax identical
// wherever the reference's top-1/top-2 margin exceeds 1e-2.
void expect_golden_bounds(const LogitStats& s) {
    EXPECT_LE(s.max, 2e-2) << "worst position " << s.worst_position;
    EXPECT_EQ(s.argmax_mismatch, 0u);
}

class CudaGolden : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override { DS4_REQUIRE_GPU(); }
    const Golden& g() { return *golden(GetParam()).golden; }
    const cpu::CpuModel& model() { return *golden(GetParam()).model; }
};

// Mode (a): one token per step, against golden.logits_decode.
TEST_P(CudaGolden, TeacherForcedDecodeMatchesReference) {
    Forward fwd(model());
    cpu::KvState state(g().hp, g().T);
    const auto logits = run_chunks(fwd, g(), state, {1});
    const LogitStats s = compare_logits(g().decode, logits, 0, g().T);
    report(GetParam(), "mode (a) teacher-forced decode", s);
    expect_golden_bounds(s);
}

// Mode (b): P tokens in one prefill call (every row's logits), then decode.
TEST_P(CudaGolden, PrefillThenDecodeMatchesReference) {
    Forward fwd(model());
    cpu::KvState state(g().hp, g().T);
    const auto logits = run_chunks(fwd, g(), state, {g().P, 1});
    const LogitStats s = compare_logits(g().prefill_then_decode, logits, 0, g().T);
    report(GetParam(), "mode (b) prefill-then-decode", s);
    expect_golden_bounds(s);
}

// Irregular chunks cross window and compressor boundaries at odd places (§8: any split
// gives the same logits), judged against the decode reference.
TEST_P(CudaGolden, IrregularChunksMatchReference) {
    Forward fwd(model());
    cpu::KvState state(g().hp, g().T);
    const auto logits = run_chunks(fwd, g(), state, {3, 1, 7, 1, 1, 64, 5});
    const LogitStats s = compare_logits(g().decode, logits, 0, g().T);
    report(GetParam(), "irregular chunks", s);
    expect_golden_bounds(s);
}

// The first half on the GPU, the state downloaded into the host KvState, the second
// half on the CPU: the downloaded windows, frontiers and rows are the CPU's format.
TEST_P(CudaGolden, DownloadedStateContinuesOnCpu) {
    const uint32_t half = g().T / 2, V = g().hp.n_vocab;
    Forward fwd(model());
    cpu::KvState state(g().hp, g().T);
    run_chunks(fwd, g(), state, {1}, 0, half);
    fwd.download(state);
    cpu::CpuForward cpu_fwd(model());
    std::vector<float> logits(uint64_t{g().T - half} * V);
    std::vector<uint32_t> row0{0};
    for (uint32_t p = half; p < g().T; ++p)
        cpu_fwd.eval(state, p, {g().tokens.data() + p, 1}, row0, {logits.data() + uint64_t{p - half} * V, V});
    std::vector<float> all(uint64_t{g().T} * V, 0.0f);
    std::copy(logits.begin(), logits.end(), all.begin() + uint64_t{half} * V);
    const LogitStats s = compare_logits(g().decode, all, half, g().T);
    report(GetParam(), "GPU first half, CPU second half", s);
    expect_golden_bounds(s);
}

// A pass whose scratch the VRAM cannot hold is refused, not thrown: nothing of it stays
// reserved, the failed allocation is not reported by a later launch check, and the
// forward still matches the reference after it (Engine::open's fallback relies on it).
TEST_P(CudaGolden, ReservePassRefusesWhatDoesNotFit) {
    Forward fwd(model());
    const uint32_t huge = 1u << 28;  // scratch far past any card's VRAM
    EXPECT_GT(fwd.pass_scratch_bytes(huge), device_info(0).total_bytes);
    EXPECT_FALSE(fwd.reserve_pass(huge));
    EXPECT_EQ(fwd.reserved_tokens(), 0u);
    EXPECT_TRUE(fwd.reserve_pass(512));
    EXPECT_EQ(fwd.reserved_tokens(), 512u);
    EXPECT_GT(fwd.pass_scratch_bytes(512), fwd.pass_scratch_bytes(256));
    cpu::KvState state(g().hp, g().T);
    const auto logits = run_chunks(fwd, g(), state, {g().P, 1});
    const LogitStats s = compare_logits(g().prefill_then_decode, logits, 0, g().T);
    report(GetParam(), "after a refused reservation", s);
    expect_golden_bounds(s);
}

INSTANTIATE_TEST_SUITE_P(Goldens, CudaGolden, ::testing::Values("tiny_s1", "tiny_s2", "small_s1"),
                         [](const auto& p) { return p.param; });

// ---- the engine on the demo model: CUDA vs the CPU exact path ----

std::string demo_path() { return env_or("DS4_DEMO_GGUF", std::string(DS4_SOURCE_DIR) + "/build/ds4-demo.gguf"); }

// CPU reference: the exact numerics (decoded weights, f32 activations), which is what
// the CUDA path computes (the engine's CPU default for quantized models is the Q8_K path).
struct CpuReference {
    gguf::File file;
    cpu::WeightSet ws;
    std::unique_ptr<cpu::CpuModel> model;
    std::unique_ptr<cpu::CpuForward> fwd;
    std::unique_ptr<cpu::KvState> state;

    explicit CpuReference(const std::string& path, uint64_t ctx) : file(gguf::File::open(path)) {
        cpu::add_gguf_views(ws, file);
        model = std::make_unique<cpu::CpuModel>(model::read_hparams(file), ws);
        fwd = std::make_unique<cpu::CpuForward>(*model);
        state = std::make_unique<cpu::KvState>(model->hparams(), ctx);
    }
    std::vector<float> eval(std::span<const int32_t> tokens, bool all_rows) {
        const cpu::NumericsScope exact(cpu::Numerics::Exact);
        const uint32_t V = model->hparams().n_vocab;
        std::vector<uint32_t> rows;
        if (all_rows) {
            rows.resize(tokens.size());
            std::iota(rows.begin(), rows.end(), 0u);
        } else {
            rows.push_back(static_cast<uint32_t>(tokens.size() - 1));
        }
        std::vector<float> out(rows.size() * uint64_t{V});
        fwd->eval(*state, state->n_tokens(), tokens, rows, out);
        return out;
    }
};

int32_t argmax(std::span<const float> v) {
    return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

float max_abs_diff(std::span<const float> a, std::span<const float> b) {
    float m = 0.0f;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

// The exact path against another configuration of the same demo model, as the int8
// tests below measure it: a 150-token prompt, then 32 decode steps in which both sides
// are fed the exact path's greedy token (so every step compares the two paths on the
// same input; a free-running comparison stops comparing at the first near-tie flip,
// which on this amplifying random model can be the prompt's last row). worst: max
// |dlogit| over the prompt and the decode steps; scale: max |logit| of the exact prompt;
// agree / decode_agree: prompt rows / decode steps with the same argmax.
struct PathDiff {
    float worst = 0.0f, scale = 0.0f;
    uint32_t prompt = 0, agree = 0, decode_agree = 0;
};
// chunk > 0: the prompt goes in passes of that many tokens (both sides).
PathDiff diff_from_exact(const cpu::CpuModel& model, Forward& exact, Forward& other, uint64_t ctx,
                         uint32_t chunk = 0) {
    const uint32_t V = model.hparams().n_vocab;
    cpu::KvState se(model.hparams(), ctx), so(model.hparams(), ctx);
    std::vector<int32_t> toks(150);
    for (uint32_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<int32_t>((i * 37u + 11u) % V);
    std::vector<uint32_t> rows(toks.size());
    std::iota(rows.begin(), rows.end(), 0u);
    std::vector<float> le(rows.size() * uint64_t{V}), lo(le.size());
    const uint32_t step = chunk > 0 ? chunk : static_cast<uint32_t>(toks.size());
    for (uint32_t t0 = 0; t0 < toks.size(); t0 += step) {
        const uint32_t len = std::min<uint32_t>(step, static_cast<uint32_t>(toks.size()) - t0);
        const std::span<const int32_t> part(toks.data() + t0, len);
        const std::span<const uint32_t> part_rows(rows.data(), len);
        exact.eval(se, t0, part, part_rows, {le.data() + uint64_t{t0} * V, uint64_t{len} * V});
        other.eval(so, t0, part, part_rows, {lo.data() + uint64_t{t0} * V, uint64_t{len} * V});
    }
    PathDiff d;
    d.prompt = static_cast<uint32_t>(toks.size());
    d.worst = max_abs_diff(lo, le);
    for (float v : le) d.scale = std::max(d.scale, std::fabs(v));
    for (size_t r = 0; r < rows.size(); ++r)
        d.agree += argmax({lo.data() + r * V, V}) == argmax({le.data() + r * V, V}) ? 1 : 0;
    int32_t tok = argmax({le.data() + (rows.size() - 1) * V, V});
    const uint32_t row0[] = {0};
    std::vector<float> ve(V), vo(V);
    for (int i = 0; i < 32; ++i) {
        exact.eval(se, se.n_tokens(), {&tok, 1}, row0, ve);
        other.eval(so, so.n_tokens(), {&tok, 1}, row0, vo);
        d.worst = std::max(d.worst, max_abs_diff(vo, ve));
        d.decode_agree += argmax(vo) == argmax(ve) ? 1 : 0;
        tok = argmax(ve);
    }
    return d;
}

// "[tag] prompt of N + 32 forced decode steps: max |dlogit| ..., prompt argmax A/N,
// decode argmax D/32"
void report_diff(const char* tag, const PathDiff& d) {
    std::cout << "[" << tag << "] prompt of " << d.prompt << " + 32 forced decode steps: max |dlogit| " << d.worst
              << " (max |logit| " << d.scale << "), prompt argmax " << d.agree << "/" << d.prompt
              << ", decode argmax " << d.decode_agree << "/32\n";
}

class CudaEngine : public ::testing::Test {
protected:
    void SetUp() override {
        DS4_REQUIRE_GPU();
        if (!std::filesystem::exists(demo_path())) GTEST_SKIP() << "no demo model at " << demo_path();
    }
    static Engine open_cuda(uint64_t ctx) {
        EngineOptions opt;
        opt.backend = Backend::Cuda;
        opt.ctx = ctx;
        return Engine::open(demo_path(), opt);
    }
    static std::vector<int32_t> prompt(uint32_t n, uint32_t vocab) {
        std::vector<int32_t> p(n);
        for (uint32_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>((i * 37u + 11u) % vocab);
        return p;
    }
};

// Prompt logits at every position and 32 greedy tokens: CUDA engine vs CPU exact path.
TEST_F(CudaEngine, MatchesCpuExactPathAndGreedyTokens) {
    constexpr uint64_t kCtx = 512;
    Engine eng = open_cuda(kCtx);
    CpuReference ref(demo_path(), kCtx);
    const uint32_t V = eng.model().n_vocab;
    const auto toks = prompt(150, V);  // past the 128-row window and one ratio-128 row
    std::vector<uint32_t> rows(toks.size());
    std::iota(rows.begin(), rows.end(), 0u);
    const SequenceId seq = eng.create_sequence();
    Batch b;
    b.add(seq, toks, rows);
    const Logits got = eng.step(b);
    const std::vector<float> want = ref.eval(toks, true);
    float worst = 0.0f, scale = 0.0f;
    uint32_t agree = 0;
    for (size_t r = 0; r < toks.size(); ++r) {
        const std::span<const float> w(want.data() + r * V, V);
        worst = std::max(worst, max_abs_diff(got.row(r), w));
        for (float v : w) scale = std::max(scale, std::fabs(v));
        agree += got.argmax(r) == argmax(w) ? 1 : 0;
    }
    std::cout << "[cuda engine] prompt of " << toks.size() << ": max |dlogit| " << worst << " (max |logit| " << scale
              << "), argmax agreement " << agree << "/" << toks.size() << "\n";
    EXPECT_LE(worst, 2e-2);
    EXPECT_EQ(agree, toks.size());

    // greedy: each side feeds its own choice; the sequences must be identical
    int32_t next_gpu = got.argmax(toks.size() - 1), next_cpu = argmax({want.data() + (toks.size() - 1) * V, V});
    std::vector<int32_t> gpu_seq, cpu_seq;
    float worst_decode = 0.0f;
    for (int i = 0; i < 32; ++i) {
        gpu_seq.push_back(next_gpu);
        cpu_seq.push_back(next_cpu);
        b.clear();
        b.add_token(seq, next_gpu);
        const Logits g1 = eng.step(b);
        const std::vector<float> c1 = ref.eval({&next_cpu, 1}, false);
        if (next_gpu == next_cpu) worst_decode = std::max(worst_decode, max_abs_diff(g1.row(0), c1));
        next_gpu = g1.argmax(0);
        next_cpu = argmax(c1);
    }
    std::cout << "[cuda engine] 32 greedy tokens: max |dlogit| " << worst_decode << ", sequences "
              << (gpu_seq == cpu_seq ? "identical" : "DIFFER") << "\n";
    EXPECT_EQ(gpu_seq, cpu_seq);
    EXPECT_LE(worst_decode, 2e-2);
}

// Chunk splits, checkpoint / restore and fork on the CUDA backend give the logits of
// one straight run (device state synced through the engine's hooks).
TEST_F(CudaEngine, SplitsCheckpointsAndForksAgree) {
    Engine eng = open_cuda(512);
    const uint32_t V = eng.model().n_vocab;
    const auto toks = prompt(140, V);
    const SequenceId a = eng.create_sequence(), b = eng.create_sequence();
    Batch batch;
    batch.add(a, toks);
    const Logits one = eng.step(batch);
    batch.clear();
    batch.add(b, std::span<const int32_t>(toks).first(61), LogitsWanted::None);
    eng.step(batch);
    batch.clear();
    batch.add(b, std::span<const int32_t>(toks).subspan(61));
    const Logits two = eng.step(batch);
    EXPECT_LE(max_abs_diff(one.row(0), two.row(0)), 1e-4);

    const SequenceCheckpoint cp = eng.checkpoint(a);
    batch.clear();
    batch.add_token(a, 5);
    const Logits first = eng.step(batch);
    const SequenceId f = eng.fork_sequence(a);
    eng.restore(a, cp);
    batch.clear();
    batch.add_token(a, 5);
    const Logits again = eng.step(batch);
    EXPECT_LE(max_abs_diff(first.row(0), again.row(0)), 1e-5);
    // the fork (taken after token 5) continues like a does
    batch.clear();
    batch.add_token(a, 9);
    batch.add_token(f, 9);
    const Logits both = eng.step(batch);
    EXPECT_LE(max_abs_diff(both.row(0), both.row(1)), 1e-5);
    EXPECT_EQ(eng.sequence_length(a), 142u);
    EXPECT_EQ(eng.sequence_length(f), 142u);
}

// The CUDA backend takes a long entry in passes of up to kCudaPrefillChunk tokens (one
// pass here) instead of the CPU's 256: with the int8 tensor cores off (as the demo's
// experts are anyway) a token's logits do not depend on the pass it ran in, so 700
// tokens in one step equal the same prompt fed 350 at a time, bit for bit. (The F16
// products take the tensor cores from kF16MmaMinTokens = 256 tokens on, so steps stay at
// or above it.)
TEST_F(CudaEngine, LongPassMatchesSmallChunksBitwise) {
    setenv("DS4_CUDA_MMA", "0", 1);
    Engine one = open_cuda(1024), chunked = open_cuda(1024);
    unsetenv("DS4_CUDA_MMA");
    const uint32_t V = one.model().n_vocab;
    const auto toks = prompt(700, V);
    std::vector<uint32_t> rows(toks.size());
    std::iota(rows.begin(), rows.end(), 0u);
    const SequenceId a = one.create_sequence(), b = chunked.create_sequence();
    Batch batch;
    batch.add(a, toks, rows);
    const Logits whole = one.step(batch);
    float worst = 0.0f;
    for (size_t at = 0; at < toks.size(); at += 350) {
        const size_t n = std::min<size_t>(350, toks.size() - at);
        std::vector<uint32_t> r(n);
        std::iota(r.begin(), r.end(), 0u);
        batch.clear();
        batch.add(b, std::span<const int32_t>(toks).subspan(at, n), r);
        const Logits part = chunked.step(batch);
        for (size_t i = 0; i < n; ++i) worst = std::max(worst, max_abs_diff(whole.row(at + i), part.row(i)));
    }
    std::cout << "[cuda engine] 700 tokens in one pass vs 350-token steps: max |dlogit| " << worst << "\n";
    EXPECT_EQ(worst, 0.0f);
    // 4096 tokens a pass, 8192 where the weights leave 24 GiB free (the demo's do)
    EXPECT_EQ(one.pass_tokens(), device_info(0).total_bytes >= (uint64_t{32} << 30) ? 8192u : 4096u);
    EXPECT_EQ(one.memory_estimate(1024).prefill_chunk, one.pass_tokens());
}

// A batch of more tokens than one CUDA pass takes (Engine::pass_tokens) runs as several
// passes of whole entries; each sequence still gets its one-by-one logits.
TEST_F(CudaEngine, LargeBatchRunsInSeveralPasses) {
    Engine batched = open_cuda(8192), single = open_cuda(8192);
    const uint32_t V = batched.model().n_vocab, pass = batched.pass_tokens();
    Batch b;
    std::vector<std::vector<int32_t>> prompts;
    std::vector<SequenceId> bs, ss;
    for (uint32_t i = 0; i < 3; ++i) {
        prompts.push_back(prompt(pass * 2 / 5 + 13 * i, V));  // 1.2 passes: passes of 2 and 1 entries
        bs.push_back(batched.create_sequence());
        ss.push_back(single.create_sequence());
    }
    for (uint32_t i = 0; i < 3; ++i) b.add(bs[i], prompts[i]);
    const Logits got = batched.step(b);
    float worst = 0.0f;
    for (uint32_t i = 0; i < 3; ++i) {
        Batch one;
        one.add(ss[i], prompts[i]);
        const Logits want = single.step(one);
        worst = std::max(worst, max_abs_diff(got.row(i), want.row(0)));
        EXPECT_EQ(batched.sequence_length(bs[i]), prompts[i].size());
    }
    std::cout << "[cuda engine] 3 x " << prompts[0].size() << "+ tokens in one step (passes of " << pass
              << ") vs one by one: max |dlogit| " << worst << "\n";
    EXPECT_LE(worst, 1e-4);
}

// Several sequences in one step (the batched CUDA pass: prefill chunks of different
// lengths, then decode tokens) give each sequence the logits it gets stepped alone.
TEST_F(CudaEngine, BatchOfSequencesMatchesOneByOne) {
    Engine batched = open_cuda(512), single = open_cuda(512);
    const uint32_t V = batched.model().n_vocab;
    const std::vector<uint32_t> lengths{20, 133, 70, 1};
    std::vector<std::vector<int32_t>> prompts;
    std::vector<SequenceId> bs, ss;
    Batch b;
    for (size_t i = 0; i < lengths.size(); ++i) {
        std::vector<int32_t> p = prompt(lengths[i] + 7 * static_cast<uint32_t>(i), V);
        p.resize(lengths[i]);
        prompts.push_back(p);
        bs.push_back(batched.create_sequence());
        ss.push_back(single.create_sequence());
    }
    for (size_t i = 0; i < lengths.size(); ++i) b.add(bs[i], prompts[i]);
    Logits got = batched.step(b);
    float worst = 0.0f;
    for (size_t i = 0; i < lengths.size(); ++i) {
        Batch one;
        one.add(ss[i], prompts[i]);
        const Logits want = single.step(one);
        worst = std::max(worst, max_abs_diff(got.row(i), want.row(0)));
        EXPECT_EQ(got.info(i).seq, bs[i]);
        EXPECT_EQ(got.info(i).position, lengths[i] - 1);
    }
    for (int step = 0; step < 6; ++step) {
        b.clear();
        for (size_t i = 0; i < lengths.size(); ++i) b.add_token(bs[i], static_cast<int32_t>((step * 5 + i) % V));
        got = batched.step(b);
        for (size_t i = 0; i < lengths.size(); ++i) {
            Batch one;
            one.add_token(ss[i], static_cast<int32_t>((step * 5 + i) % V));
            const Logits want = single.step(one);
            worst = std::max(worst, max_abs_diff(got.row(i), want.row(0)));
        }
    }
    std::cout << "[cuda engine] batch of 4 sequences vs one by one: max |dlogit| " << worst << "\n";
    EXPECT_LE(worst, 1e-4);
    for (size_t i = 0; i < lengths.size(); ++i) EXPECT_EQ(batched.sequence_length(bs[i]), lengths[i] + 6);
}

// The fast int8 routed experts (Forward::set_fast_experts) against the exact path on the
// demo model (q2 experts, V4 vocabulary): a 150-token prompt, then 32 decode steps fed
// the exact path's greedy tokens (diff_from_exact). Measured on an H200 (2026-11-28):
// max |dlogit| 4.28 (max |logit| 22.6), prompt argmax 142/150, decode argmax 27/32. That
// size is the demo model's, not the kernel's: its random RMS-preserving layers amplify
// any perturbation (f32 rounding alone gives 1.5e-3 here), and the CPU's own int8
// numerics on the same shape (tests/cpu_fast/test_fast_model.cpp) give max |dlogit| 2.14
// and top-1 28/32. A wrong block, scale or expert shows up as O(1) differences on most
// rows and an argmax near chance. Bounds ≈ 1.5× the measure (misses included); the fast
// path must really run (some logit differs).
TEST(CudaFastExperts, GreedyTokensMatchTheExactPath) {
    DS4_REQUIRE_GPU();
    if (!std::filesystem::exists(demo_path())) GTEST_SKIP() << "no demo model at " << demo_path();
    constexpr uint64_t kCtx = 512;
    CpuReference host(demo_path(), kCtx);  // its model and weights, shared by both sides
    Forward exact(*host.model), fast(*host.model);
    exact.set_fast_experts(false);
    fast.set_fast_experts(true);
    ASSERT_TRUE(fast.fast_experts());
    const PathDiff d = diff_from_exact(*host.model, exact, fast, kCtx);
    report_diff("cuda fast experts", d);
    EXPECT_GT(d.worst, 0.0f) << "the fast path did not run";
    EXPECT_LE(d.worst, 6.5f);
    EXPECT_GE(d.agree, 138u);
    EXPECT_GE(d.decode_agree, 24u);
}

// The tensor-core path for dense Q8_0 (Forward::set_mma, cuda/matmul_mma.h: activations
// rounded to int8 per block of 32), forced onto every repacked product of the 150-token
// prompt (min_work 0: at the default threshold no demo-sized product takes it), against
// the exact path; the decode steps (1 token) run the matvec kernels on both sides, so
// they only carry the prompt's state differences. The demo model amplifies any
// perturbation (see CudaFastExperts above). Measured on an H200 (2026-11-28): max
// |dlogit| 3.41 (max |logit| 22.6), prompt argmax 147/150, decode argmax 30/32. Bounds:
// dlogit 5, argmax 135/150 and 28/32. A wrong tile, scale or layout gives O(1)
// differences on most rows and a prompt argmax near chance (seen: 0/150 when a grouped
// launch read repacked rows).
TEST(CudaMma, GreedyTokensMatchTheExactPath) {
    DS4_REQUIRE_GPU();
    if (!std::filesystem::exists(demo_path())) GTEST_SKIP() << "no demo model at " << demo_path();
    constexpr uint64_t kCtx = 512;
    CpuReference host(demo_path(), kCtx);
    Forward exact(*host.model), mma(*host.model);
    exact.set_mma(false, kMmaMinWork);
    mma.set_mma(true, 0);
    mma.set_mma_experts(false, 0);  // the dense products alone, as measured (CudaMmaExperts below)
    const PathDiff d = diff_from_exact(*host.model, exact, mma, kCtx);
    report_diff("cuda mma", d);
    EXPECT_GT(d.worst, 0.0f) << "the mma path did not run";
    EXPECT_LE(d.worst, 5.0f);
    EXPECT_GE(d.agree, 135u);
    EXPECT_GE(d.decode_agree, 28u);
}

// The routed experts of the prompt on the tensor cores (matmul_mma_experts.h), the dense
// products on their exact path (min_work beyond any product), against the exact path.
// The experts' int8 activations are CudaFastExperts' (the same records and integer
// dots, another f32 order of the block sums). Measured on an H200 (2026-11-28): max
// |dlogit| 4.71 (max |logit| 22.6), prompt argmax 144/150, decode argmax 30/32 (the
// decode steps' experts take the q8 path on both sides). Bounds ≈ 1.5× the measure.
TEST(CudaMmaExperts, GreedyTokensMatchTheExactPath) {
    DS4_REQUIRE_GPU();
    if (!std::filesystem::exists(demo_path())) GTEST_SKIP() << "no demo model at " << demo_path();
    constexpr uint64_t kCtx = 512;
    CpuReference host(demo_path(), kCtx);
    Forward exact(*host.model), mx(*host.model);
    exact.set_mma(false, kMmaMinWork);
    mx.set_mma(true, ~uint64_t{0});
    mx.set_mma_experts(true, 0);  // the demo's 256 x 256 slabs
    const PathDiff d = diff_from_exact(*host.model, exact, mx, kCtx);
    report_diff("cuda mma experts", d);
    EXPECT_GT(d.worst, 0.0f) << "the expert mma path did not run";
    EXPECT_LE(d.worst, 7.0f);
    EXPECT_GE(d.agree, 140u);
    EXPECT_GE(d.decode_agree, 28u);
}

// The routed experts of passes under 16 tokens on the grouped int8 matvec
// (matmul_q8_experts.h), forced onto the demo's 256 x 256 slabs, against the exact
// path: the prompt in passes of 10 tokens (the q8 path's batches), then 32 forced decode
// steps (its batch 1). The dense products and the expert mma stay exact on both sides.
// Same int8 activations and integer dots as CudaFastExperts, so its bounds apply.
// Measured on an H200 (2026-11-28): max |dlogit| 4.28 (max |logit| 22.6), prompt argmax
// 142/150, decode argmax 27/32: CudaFastExperts' figures.
TEST(CudaQ8Experts, GreedyTokensMatchTheExactPath) {
    DS4_REQUIRE_GPU();
    if (!std::filesystem::exists(demo_path())) GTEST_SKIP() << "no demo model at " << demo_path();
    constexpr uint64_t kCtx = 512;
    CpuReference host(demo_path(), kCtx);
    Forward exact(*host.model), q8(*host.model);
    for (Forward* f : {&exact, &q8}) f->set_mma(false, kMmaMinWork), f->set_mma_experts(false, kMmaExpertsMinValues);
    exact.set_q8_experts(false, kQ8ExpertsMinValues);
    q8.set_q8_experts(true, 0);
    ASSERT_TRUE(q8.q8_experts());
    const PathDiff d = diff_from_exact(*host.model, exact, q8, kCtx, 10);
    report_diff("cuda q8 experts", d);
    EXPECT_GT(d.worst, 0.0f) << "the q8 expert path did not run";
    EXPECT_LE(d.worst, 6.5f);
    EXPECT_GE(d.agree, 138u);
    EXPECT_GE(d.decode_agree, 24u);
}

}  // namespace
}  // namespace ds4::cuda::test
