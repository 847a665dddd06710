// Issue 11 on the CUDA backend: the MTP block (cuda/mtp.h) against the goldens'
// golden.mtp_logits_decode, speculative greedy decoding through the engine on
// Backend::Cuda (token-identical to plain greedy, exact rollback), and directional
// steering (cuda/steering.h) against the CPU path. Every test skips without a GPU.
// DS4_TEST_DATA overrides tests/data for the device machine.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <random>

#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "cpu/mtp.h"
#include "cpu/quant_matvec.h"
#include "cpu/steering.h"
#include "cuda/forward.h"
#include "cuda/mtp.h"
#include "cuda/steering.h"
#include "cuda_test_util.h"
#include "ds4/engine.h"
#include "ds4/error.h"
#include "ds4/speculative.h"
#include "gguf/gguf.h"
#include "golden_compare.h"
#include "golden_model.h"
#include "maker.h"
#include "model/metadata.h"

namespace ds4::cuda::test {
namespace {

using cpu::test::compare_logits;
using cpu::test::describe;
using cpu::test::Golden;
using cpu::test::LogitStats;
namespace fs = std::filesystem;

std::string test_data() {
    const char* v = std::getenv("DS4_TEST_DATA");
    return v != nullptr && *v != '\0' ? std::string(v) : std::string(DS4_TEST_DATA_DIR);
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
        lg.golden = Golden::load(test_data() + "/golden/golden_" + name + ".safetensors", name);
        lg.model = std::make_unique<cpu::CpuModel>(lg.golden->hp, lg.golden->weights);
        it = cache.emplace(name, std::move(lg)).first;
    }
    return it->second;
}

float max_abs_diff(std::span<const float> a, std::span<const float> b) {
    float m = 0.0f;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

// ---- MTP block vs golden.mtp_logits_decode ----

// The main model's final HC state after each token on the GPU, one token per call (mode (a)).
std::vector<float> cuda_final_hc_states(const LoadedGolden& lg) {
    const Golden& g = *lg.golden;
    const uint64_t hcd = g.hp.hc_dim();
    Forward fwd(*lg.model);
    cpu::KvState state(g.hp, g.T);
    std::vector<float> out(g.T * hcd);
    for (uint32_t t = 0; t < g.T; ++t) {
        fwd.eval(state, t, {g.tokens.data() + t, 1}, {}, {});
        const auto x = fwd.final_hc(0);
        std::copy(x.begin(), x.end(), out.begin() + t * hcd);
    }
    return out;
}

// MTP logits for positions 0..T−2 (DeepSeek-V3 pairing: the state at i with token i + 1),
// `chunk` slots per call.
std::vector<float> run_cuda_mtp(const Golden& g, const cpu::MtpModel& mtp,
                                const std::vector<float>& hc, uint32_t chunk) {
    const uint32_t V = g.hp.n_vocab, n_pos = g.T - 1;
    const uint64_t hcd = g.hp.hc_dim();
    cpu::KvState state = mtp.make_state(n_pos);
    MtpForward fwd(mtp);
    std::vector<float> logits(uint64_t{n_pos} * V);
    std::vector<uint32_t> rows;
    for (uint32_t i = 0; i < n_pos; i += chunk) {
        const uint32_t n = std::min(chunk, n_pos - i);
        rows.resize(n);
        std::iota(rows.begin(), rows.end(), 0u);
        fwd.eval(state, i, {g.tokens.data() + i + 1, n}, {hc.data() + i * hcd, n * hcd}, rows,
                 {logits.data() + uint64_t{i} * V, uint64_t{n} * V});
    }
    return logits;
}

class CudaGoldenMtp : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override { DS4_REQUIRE_GPU(); }
};

// The main model's rule on CUDA (tests/cuda/test_forward.cpp): every position within 2e-2
// of the reference, argmax identical where the reference margin exceeds 1e-2.
TEST_P(CudaGoldenMtp, TeacherForcedDraftsMatchReference) {
    const LoadedGolden& lg = golden(GetParam());
    const Golden& g = *lg.golden;
    ASSERT_EQ(g.mtp.T, g.T - 1) << "golden file has no golden.mtp_logits_decode";
    const cpu::MtpModel mtp(g.hp, g.weights);
    const auto hc = cuda_final_hc_states(lg);
    const auto logits = run_cuda_mtp(g, mtp, hc, 1);
    const LogitStats s = compare_logits(g.mtp, logits, 0, g.T - 1);
    std::cout << "[cuda golden] " << describe(GetParam() + " MTP teacher-forced", s)
              << "  argmax agreement " << s.argmax_agree_all << "/" << s.positions << "\n";
    EXPECT_LE(s.max, 2e-2) << "worst position " << s.worst_position;
    EXPECT_EQ(s.argmax_mismatch, 0u);
    EXPECT_GT(s.argmax_checked, (g.T - 1) / 2);

    // several slots per call (the window fill after a prefill) agree with one by one
    const auto chunked = run_cuda_mtp(g, mtp, hc, 37);
    const float d = max_abs_diff(chunked, logits);
    std::cout << "[cuda golden] " << GetParam()
              << " MTP 37-slot chunks vs one by one: max |dlogit| " << d << "\n";
    EXPECT_LE(d, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Goldens, CudaGoldenMtp,
                         ::testing::Values("tiny_s1", "tiny_s2", "small_s1"),
                         [](const auto& p) { return p.param; });

// ---- steering ----

std::shared_ptr<const cpu::SteeringDirections> unit_directions(uint32_t n_layer, uint32_t n_embd,
                                                               uint32_t seed) {
    std::vector<float> v = random_floats(uint64_t{n_layer} * n_embd, seed);
    for (uint32_t il = 0; il < n_layer; ++il) {
        float* d = v.data() + uint64_t{il} * n_embd;
        double norm = 0;
        for (uint32_t i = 0; i < n_embd; ++i) norm += double{d[i]} * d[i];
        for (uint32_t i = 0; i < n_embd; ++i) d[i] = static_cast<float>(d[i] / std::sqrt(norm));
    }
    return std::make_shared<const cpu::SteeringDirections>(std::move(v), n_layer, n_embd);
}

// The kernel against cpu::steer_rows: y − s·d·(d·y) per row; with s = 1 and a unit d the
// direction is gone (d·y ≈ 0 after).
TEST(CudaSteering, KernelMatchesCpuFormula) {
    DS4_REQUIRE_GPU();
    constexpr uint32_t n = 4096, rows = 5;
    const auto dirs = unit_directions(1, n, 7);
    for (float scale : {1.0f, -2.5f, 0.3f}) {
        std::vector<float> y = random_floats(uint64_t{rows} * n, 11), want = y;
        cpu::steer_rows(want.data(), rows, dirs->layer(0), scale);
        auto dy = to_device<float>(y);
        auto dd = to_device<float>(dirs->layer(0));
        steer_rows(dy.data(), rows, dd.data(), n, scale, nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> got = dy.download();
        EXPECT_LE(max_abs_diff(got, want), 2e-5f) << "scale " << scale;
        if (scale == 1.0f) {
            for (uint32_t r = 0; r < rows; ++r) {
                double dot = 0;
                for (uint32_t i = 0; i < n; ++i) dot += double{got[r * n + i]} * dirs->layer(0)[i];
                EXPECT_LE(std::fabs(dot), 1e-4) << "row " << r;
            }
        }
    }
}

// The whole forward pass with steering on both sites: CUDA vs CPU (exact path) logits and
// final HC states agree; steering really moves them; zero scales are bit-identical to off.
class CudaSteeringGolden : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override { DS4_REQUIRE_GPU(); }
};

TEST_P(CudaSteeringGolden, ForwardMatchesCpuWithSteering) {
    const LoadedGolden& lg = golden(GetParam());
    const Golden& g = *lg.golden;
    const uint32_t V = g.hp.n_vocab, T = g.T;
    const uint64_t hcd = g.hp.hc_dim();
    const auto dirs = unit_directions(g.hp.n_layer, g.hp.n_embd, 3);
    constexpr float kAttn = 0.8f, kFfn = -1.5f;
    const std::vector<uint32_t> sizes{7, 1, 1, 30, 5};
    // runs the golden tokens in chunks, logits at every row; final HC of the last chunk
    const auto run = [&](auto& fwd, std::vector<float>& hc_last) {
        cpu::KvState state(g.hp, T);
        std::vector<float> logits(uint64_t{T} * V);
        std::vector<uint32_t> rows;
        uint32_t n = 0;
        for (uint32_t pos = 0, i = 0; pos < T; pos += n, ++i) {
            n = std::min(sizes[std::min<size_t>(i, sizes.size() - 1)], T - pos);
            rows.resize(n);
            std::iota(rows.begin(), rows.end(), 0u);
            fwd.eval(state, pos, {g.tokens.data() + pos, n}, rows,
                     {logits.data() + uint64_t{pos} * V, uint64_t{n} * V});
        }
        hc_last.clear();
        for (uint32_t t = 0; t < n; ++t) {
            const auto x = fwd.final_hc(t);
            hc_last.insert(hc_last.end(), x.begin(), x.end());
        }
        return logits;
    };
    cpu::CpuForward cpu_plain(*lg.model), cpu_steered(*lg.model);
    cpu_steered.set_steering(cpu::Steering(dirs, kAttn, kFfn));
    Forward gpu_plain(*lg.model), gpu_steered(*lg.model), gpu_zero(*lg.model);
    gpu_steered.set_steering(*dirs, kAttn, kFfn);
    gpu_zero.set_steering(*dirs, 0.0f, 0.0f);
    std::vector<float> hc_cpu, hc_gpu, hc_unused;
    const auto want = run(cpu_steered, hc_cpu);
    const auto got = run(gpu_steered, hc_gpu);
    const auto plain_cpu = run(cpu_plain, hc_unused);
    const auto plain_gpu = run(gpu_plain, hc_unused);
    const auto zero_gpu = run(gpu_zero, hc_unused);
    const float d_logits = max_abs_diff(got, want), d_hc = max_abs_diff(hc_gpu, hc_cpu);
    const float moved = max_abs_diff(want, plain_cpu);
    uint32_t agree = 0;
    for (uint32_t t = 0; t < T; ++t) {
        const auto a = got.begin() + uint64_t{t} * V, b = want.begin() + uint64_t{t} * V;
        agree += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b ? 1 : 0;
    }
    std::cout << "[cuda steering] " << GetParam() << " attn " << kAttn << " ffn " << kFfn
              << ": CUDA vs CPU max |dlogit| " << d_logits << ", max |dHC| " << d_hc << " (final "
              << hc_gpu.size() / hcd << " rows), argmax " << agree << "/" << T
              << "; steering moved the logits by " << moved << "\n";
    EXPECT_LE(d_logits, 2e-2);
    EXPECT_LE(d_hc, 2e-2);
    EXPECT_GE(agree, T - 1);
    // the effect must dwarf the CUDA/CPU rounding (tiny_s1's logits are small: ~0.06)
    EXPECT_GT(moved, 0.02f) << "steering did not change the logits";
    EXPECT_GT(moved, 20 * d_logits);
    EXPECT_GT(max_abs_diff(got, plain_gpu), 0.02f);
    EXPECT_EQ(0, std::memcmp(zero_gpu.data(), plain_gpu.data(), zero_gpu.size() * sizeof(float)))
        << "zero scales must leave the logits bit-identical";
}

INSTANTIATE_TEST_SUITE_P(Goldens, CudaSteeringGolden, ::testing::Values("tiny_s1", "small_s1"),
                         [](const auto& p) { return p.param; });

// ---- the engine on Backend::Cuda: MTP drafts, speculative decoding, steering ----

// A synthetic model (ds4-make-model) in a temporary directory, removed with the object.
struct TempModel {
    fs::path dir;
    std::string path;
    TempModel(const std::string& tag, const char* shape, model::QuantMix mix, bool copy_head,
              uint64_t seed) {
        dir = fs::temp_directory_path() / cat("ds4-cuda-mtp-", ::getpid(), "-", tag);
        fs::create_directories(dir);
        path = (dir / "model.gguf").string();
        synth::MakeOptions o;
        o.shape = synth::shape_preset(shape);
        o.plan.mix = mix;  // F32: the engine's CPU default is then the exact path, as on CUDA
        o.fast_blocks = mix != model::QuantMix::F32;
        o.plan.mtp = true;
        o.seed = seed;
        o.threads = 2;
        o.mtp_copy_head = copy_head;
        synth::make_model(path, o);
    }
    ~TempModel() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
};

const TempModel& temp_model(const std::string& key) {
    static std::map<std::string, std::unique_ptr<TempModel>> cache;
    auto& m = cache[key];
    if (m) return *m;
    if (key == "copy")
        m = std::make_unique<TempModel>(key, "tiny", model::QuantMix::F32, true, 3);
    else if (key == "copy_demo_q2")
        m = std::make_unique<TempModel>(key, "demo", model::QuantMix::Q2, true, 5);
    else
        m = std::make_unique<TempModel>(key, "tiny", model::QuantMix::F32, false, 7);
    return *m;
}

Engine open(const TempModel& m, Backend backend, const DirectionalSteering& steering = {}) {
    EngineOptions o;
    o.threads = 2;
    o.ctx = 512;
    o.backend = backend;
    o.mtp_path = m.path;
    o.steering = steering;
    return Engine::open(m.path, o);
}

std::vector<int32_t> prompt_for(uint32_t n, uint32_t vocab, uint32_t salt) {
    std::vector<int32_t> p(n);
    for (uint32_t i = 0; i < n; ++i)
        p[i] = static_cast<int32_t>((i * 37u + salt * 11u + 5u) % vocab);
    return p;
}

int32_t prefill(Engine& e, SequenceId seq, std::span<const int32_t> prompt) {
    Batch b;
    b.add(seq, prompt);
    return e.step(b).argmax(0);
}

std::vector<int32_t> plain_greedy(Engine& e, SequenceId seq, int32_t first, uint64_t n) {
    std::vector<int32_t> out;
    int32_t t = first;
    Batch b;
    while (out.size() < n) {
        out.push_back(t);
        if (out.size() == n) break;
        b.clear();
        b.add_token(seq, t);
        t = e.step(b).argmax(0);
    }
    return out;
}

std::vector<uint8_t> state_bytes(const Engine& e, SequenceId seq) {
    const std::vector<int32_t> history(e.sequence_length(seq), 0);
    const std::vector<float> logits(e.model().n_vocab, 0.0f);
    std::vector<uint8_t> out;
    e.save_sequence(seq, history, logits, out);
    return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Plain greedy vs speculative greedy on CUDA, each in its own engine: identical tokens,
// identical KV state, identical next logits.
SpeculativeStats expect_speculation_exact(const TempModel& m, uint32_t n_draft, uint64_t n,
                                          const char* what) {
    Engine plain = open(m, Backend::Cuda), spec = open(m, Backend::Cuda);
    const SequenceId ps = plain.create_sequence(), ss = spec.create_sequence();
    const auto prompt = prompt_for(21, plain.model().n_vocab, n_draft);
    const int32_t first = prefill(plain, ps, prompt);
    EXPECT_EQ(prefill(spec, ss, prompt), first);
    auto t0 = std::chrono::steady_clock::now();
    const auto want = plain_greedy(plain, ps, first, n);
    const double plain_s = seconds_since(t0);
    SpeculativeDecoder dec(spec, ss, n_draft);
    t0 = std::chrono::steady_clock::now();
    const auto got = generate_greedy(dec, first, n, {});
    const double spec_s = seconds_since(t0);
    const SpeculativeStats& s = dec.stats();
    std::printf(
        "[cuda spec %s N=%u] %zu tokens: drafted %llu accepted %llu (%.1f%%), main steps %llu "
        "(verify %llu, "
        "replay %llu, plain %llu), %.2f tokens/step; %.1f t/s, plain %.1f t/s\n",
        what, n_draft, got.size(), (unsigned long long)s.drafted, (unsigned long long)s.accepted,
        100.0 * s.acceptance(), (unsigned long long)s.main_steps(),
        (unsigned long long)s.verify_steps, (unsigned long long)s.replay_steps,
        (unsigned long long)s.plain_steps, s.tokens_per_step(),
        double(got.size()) / std::max(spec_s, 1e-9), double(want.size()) / std::max(plain_s, 1e-9));
    EXPECT_EQ(got, want);
    EXPECT_EQ(spec.sequence_length(ss), plain.sequence_length(ps));
    EXPECT_TRUE(state_bytes(spec, ss) == state_bytes(plain, ps))
        << "KV state differs after speculative decoding";
    if (!want.empty()) {
        Batch a, b;
        a.add_token(ps, want.back());
        b.add_token(ss, got.back());
        const Logits la = plain.step(a), lb = spec.step(b);
        EXPECT_TRUE(std::equal(la.row(0).begin(), la.row(0).end(), lb.row(0).begin()))
            << "next logits differ after speculative decoding";
    }
    return s;
}

class CudaSpeculative : public ::testing::TestWithParam<uint32_t> {
  protected:
    void SetUp() override { DS4_REQUIRE_GPU(); }
};

// The forced-acceptance model (ds4-make-model --mtp-copy-head): every draft accepted.
TEST_P(CudaSpeculative, CopyHeadModelAcceptsEveryDraft) {
    const uint32_t n_draft = GetParam();
    constexpr uint64_t n = 41;
    const SpeculativeStats s =
        expect_speculation_exact(temp_model("copy"), n_draft, n, "copy-head f32");
    EXPECT_GT(s.drafted, 0u);
    EXPECT_EQ(s.accepted, s.drafted);
    EXPECT_EQ(s.replay_steps, 0u);
    EXPECT_EQ(s.main_steps(), (n - 1 + n_draft) / (n_draft + 1));
}

// A random MTP block: drafts nearly always rejected, a restore + replay on every step.
TEST_P(CudaSpeculative, RandomMtpMatchesPlainGreedy) {
    const SpeculativeStats s =
        expect_speculation_exact(temp_model("random"), GetParam(), 40, "random f32");
    EXPECT_GT(s.verify_steps, 0u);
}

// The demo shape (6 layers, every block type) in q2 with the copy head, 200 tokens: the
// mechanics at length, and the speed of speculation on the GPU (reported, not asserted).
TEST_P(CudaSpeculative, CopyHeadDemoShapeQ2200Tokens) {
    const uint32_t n_draft = GetParam();
    const SpeculativeStats s =
        expect_speculation_exact(temp_model("copy_demo_q2"), n_draft, 200, "copy-head demo q2");
    EXPECT_EQ(s.accepted, s.drafted);
}

INSTANTIATE_TEST_SUITE_P(Drafts, CudaSpeculative, ::testing::Values(1u, 2u, 4u),
                         [](const auto& i) { return cat("N", i.param); });

// Direct reference for an engine's MTP draft: the main model's final HC states of the whole
// history on the CPU exact path, then the MTP block over every position from 0.
struct DirectMtp {
    gguf::File file;
    cpu::WeightSet ws;
    model::Hparams hp;
    std::unique_ptr<cpu::CpuModel> model;
    std::unique_ptr<cpu::MtpModel> mtp;

    explicit DirectMtp(const std::string& path)
        : file(gguf::File::open(path)), hp(model::read_hparams(file)) {
        cpu::add_gguf_views(ws, file);
        model = std::make_unique<cpu::CpuModel>(hp, ws);
        mtp = std::make_unique<cpu::MtpModel>(hp, ws);
    }
    // The main model's final HC states of the history, on the GPU or the CPU.
    std::vector<float> final_states(std::span<const int32_t> history, bool gpu) const {
        const auto n = static_cast<uint32_t>(history.size());
        const uint64_t hcd = hp.hc_dim();
        cpu::KvState st(hp, n);
        std::vector<float> hc(n * hcd);
        const auto collect = [&](auto& fwd) {
            fwd.eval(st, 0, history, {}, {});
            for (uint32_t i = 0; i < n; ++i) {
                const auto x = fwd.final_hc(i);
                std::copy(x.begin(), x.end(), hc.begin() + i * hcd);
            }
        };
        if (gpu) {
            Forward fwd(*model);
            collect(fwd);
        } else {
            cpu::CpuForward fwd(*model);
            collect(fwd);
        }
        return hc;
    }
    // The draft for `next` after the history: the MTP block over every position from 0.
    std::vector<float> draft(std::span<const int32_t> history, int32_t next, bool gpu_main = false,
                             bool gpu_mtp = false) const {
        const cpu::NumericsScope exact(cpu::Numerics::Exact);
        const auto n = static_cast<uint32_t>(history.size());
        const std::vector<float> hc = final_states(history, gpu_main);
        std::vector<int32_t> ids(history.begin() + 1, history.end());
        ids.push_back(next);
        cpu::KvState ms = mtp->make_state(n);
        std::vector<float> logits(hp.n_vocab);
        const uint32_t row[] = {n - 1};
        if (gpu_mtp) {
            MtpForward mf(*mtp);
            mf.eval(ms, 0, ids, hc, row, logits);
        } else {
            cpu::MtpForward mf(*mtp);
            mf.eval(ms, 0, ids, hc, row, logits);
        }
        return logits;
    }
};

float max_abs(std::span<const float> v) {
    float m = 0.0f;
    for (float x : v) m = std::max(m, std::fabs(x));
    return m;
}

// The CPU engine's drafts against the direct reference (no GPU needed): the yardstick for
// the CUDA comparison below.
TEST(EngineMtpReference, CpuDraftsMatchDirect) {
    const TempModel& m = temp_model("random");
    const DirectMtp direct(m.path);
    Engine cpu = open(m, Backend::Cpu);
    const SequenceId cs = cpu.create_sequence();
    std::vector<int32_t> history = prompt_for(40, cpu.model().n_vocab, 5);
    int32_t next = prefill(cpu, cs, history);
    float worst = 0.0f, scale = 0.0f;
    for (int step = 0; step < 6; ++step) {
        const auto lc = cpu.mtp_draft(cs, next), ref = direct.draft(history, next);
        worst = std::max(worst, max_abs_diff(lc, ref));
        scale = std::max(scale, max_abs(ref));
        Batch b;
        b.add_token(cs, next);
        history.push_back(next);
        next = cpu.step(b).argmax(0);
    }
    std::cout << "[mtp engine ref] CPU engine drafts vs direct: max |dlogit| " << worst
              << " (max |logit| " << scale << ")\n";
}

// Engine::mtp_draft / mtp_draft_greedy on CUDA vs CPU after the same prefill and decode
// (a window's worth: the MTP cache catches up over the ring, then drafts one by one).
TEST(CudaEngineMtp, DraftsMatchCpu) {
    DS4_REQUIRE_GPU();
    const TempModel& m = temp_model("random");
    const DirectMtp direct(m.path);
    Engine gpu = open(m, Backend::Cuda), cpu = open(m, Backend::Cpu);
    const uint32_t V = gpu.model().n_vocab;
    const SequenceId gs = gpu.create_sequence(), cs = cpu.create_sequence();
    std::vector<int32_t> history = prompt_for(40, V, 5);
    int32_t next = prefill(gpu, gs, history);
    ASSERT_EQ(prefill(cpu, cs, history), next);
    float worst = 0.0f, vs_direct = 0.0f, block_only = 0.0f, scale = 0.0f;
    uint32_t agree = 0, drafts = 0;
    std::vector<int32_t> chain_g(4), chain_c(4);
    {
        // how far the main model's final HC states (the MTP input) differ, per stream
        const auto hg = direct.final_states(history, true),
                   hcpu = direct.final_states(history, false);
        const uint32_t dim = direct.hp.n_embd;
        float worst_rel = 0.0f, min_rms = 1e30f;
        for (size_t r = 0; r < hg.size() / dim; ++r) {
            double ss = 0, dd = 0;
            for (uint32_t i = 0; i < dim; ++i) {
                ss += double{hcpu[r * dim + i]} * hcpu[r * dim + i];
                dd += double{hg[r * dim + i] - hcpu[r * dim + i]} *
                      (hg[r * dim + i] - hcpu[r * dim + i]);
            }
            worst_rel = std::max(worst_rel, static_cast<float>(std::sqrt(dd / ss)));
            min_rms = std::min(min_rms, static_cast<float>(std::sqrt(ss / dim)));
        }
        std::printf(
            "[cuda mtp engine] main final HC streams CUDA vs CPU: max |d| %.3g (max |x| %.3g), "
            "worst relative "
            "per-stream error %.3g, smallest stream RMS %.3g\n",
            max_abs_diff(hg, hcpu), max_abs(hcpu), worst_rel, min_rms);
    }
    for (int step = 0; step < 12; ++step) {
        const auto lg = gpu.mtp_draft(gs, next), lc = cpu.mtp_draft(cs, next);
        // the engine's incremental MTP cache on CUDA vs the block run from position 0 on CUDA
        const auto ref_gpu = direct.draft(history, next, true, true);
        // the MTP block alone: CPU main states into the CUDA block vs all-CPU
        const auto ref_cpu = direct.draft(history, next),
                   hybrid = direct.draft(history, next, false, true);
        std::printf(
            "[cuda mtp engine] step %d: engine CUDA vs CPU %.3g, engine CUDA vs direct CUDA %.3g, "
            "CUDA block on CPU states vs CPU %.3g, engine CPU vs direct CPU %.3g\n",
            step, max_abs_diff(lg, lc), max_abs_diff(lg, ref_gpu), max_abs_diff(hybrid, ref_cpu),
            max_abs_diff(lc, ref_cpu));
        worst = std::max(worst, max_abs_diff(lg, lc));
        vs_direct = std::max(vs_direct, max_abs_diff(lg, ref_gpu));
        block_only = std::max(block_only, max_abs_diff(hybrid, ref_cpu));
        scale = std::max(scale, max_abs(ref_cpu));
        history.push_back(next);
        gpu.mtp_draft_greedy(gs, next, chain_g);
        cpu.mtp_draft_greedy(cs, next, chain_c);
        agree += chain_g == chain_c ? 1 : 0;
        ++drafts;
        // a single draft after a chain is unchanged (the chain left the MTP window intact)
        const auto again = gpu.mtp_draft(gs, next);
        EXPECT_TRUE(std::equal(again.begin(), again.end(), lg.begin())) << "step " << step;
        Batch b;
        b.add_token(gs, next);
        const int32_t ng = gpu.step(b).argmax(0);
        b.clear();
        b.add_token(cs, next);
        const int32_t nc = cpu.step(b).argmax(0);
        ASSERT_EQ(ng, nc) << "main model greedy differs at step " << step;
        next = ng;
    }
    std::cout << "[cuda mtp engine] 12 drafts: max |dlogit| CUDA vs CPU engine " << worst
              << " (max |logit| " << scale << "), CUDA engine vs direct CUDA " << vs_direct
              << ", CUDA block on CPU states vs CPU " << block_only << "; 4-token chains identical "
              << agree << "/" << drafts << "\n";
    EXPECT_LE(vs_direct, 1e-4) << "the engine's MTP cache on CUDA differs from a fresh run";
    EXPECT_LE(block_only, 2e-2);
    EXPECT_EQ(agree, drafts);
}

// --dir-steering-* through the engine on CUDA vs CPU: prompt logits and greedy tokens.
TEST(CudaEngineSteering, MatchesCpu) {
    DS4_REQUIRE_GPU();
    const TempModel& m = temp_model("random");
    Engine probe = open(m, Backend::Cpu);
    const ModelSummary& ms = probe.model();
    const auto dirs = unit_directions(ms.n_layer, ms.n_embd, 9);
    const std::string file = (m.dir / "dirs.f32").string();
    cpu::write_steering_file(file, dirs->values());
    DirectionalSteering st{file, 0.5f, -2.0f};
    Engine gpu = open(m, Backend::Cuda, st), cpu = open(m, Backend::Cpu, st),
           plain = open(m, Backend::Cuda);
    EXPECT_EQ(gpu.options().steering.attn.value_or(99.0f), 0.5f);
    EXPECT_EQ(gpu.options().steering.ffn.value_or(99.0f), -2.0f);
    const uint32_t V = ms.n_vocab;
    const auto prompt = prompt_for(60, V, 2);
    std::vector<uint32_t> rows(prompt.size());
    std::iota(rows.begin(), rows.end(), 0u);
    const SequenceId gs = gpu.create_sequence(), cs = cpu.create_sequence(),
                     ps = plain.create_sequence();
    Batch b;
    b.add(gs, prompt, rows);
    const Logits lg = gpu.step(b);
    b.clear();
    b.add(cs, prompt, rows);
    const Logits lc = cpu.step(b);
    b.clear();
    b.add(ps, prompt, rows);
    const Logits lp = plain.step(b);
    float worst = 0.0f, moved = 0.0f;
    for (size_t r = 0; r < prompt.size(); ++r) {
        worst = std::max(worst, max_abs_diff(lg.row(r), lc.row(r)));
        moved = std::max(moved, max_abs_diff(lg.row(r), lp.row(r)));
        EXPECT_EQ(lg.argmax(r), lc.argmax(r)) << "row " << r;
    }
    const auto tg = plain_greedy(gpu, gs, lg.argmax(prompt.size() - 1), 24);
    const auto tc = plain_greedy(cpu, cs, lc.argmax(prompt.size() - 1), 24);
    std::cout << "[cuda steering engine] prompt of " << prompt.size()
              << ": CUDA vs CPU max |dlogit| " << worst << ", steering moved the logits by "
              << moved << "; 24 greedy tokens " << (tg == tc ? "identical" : "DIFFER") << "\n";
    EXPECT_LE(worst, 2e-2);
    EXPECT_GT(moved, 0.1f);
    EXPECT_EQ(tg, tc);
}

}  // namespace
}  // namespace ds4::cuda::test
