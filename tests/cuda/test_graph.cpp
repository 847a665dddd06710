// CUDA graphs of the forward pass (cuda/forward.h) on the demo model: a Forward that
// captures and replays its passes gives bitwise the logits of one that launches every
// kernel itself, over many decode steps crossing the raw window's wrap, compressor emits
// (ratio 4 and 128) and the indexer switching on; for a batch of sequences whose
// membership changes (several cached keys); and through the engine with checkpoint /
// restore. The graphs must really run (graph_stats).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>

#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "cuda/forward.h"
#include "cuda/pdl.h"
#include "cuda_test_util.h"
#include "ds4/engine.h"
#include "gguf/gguf.h"
#include "model/metadata.h"

namespace ds4::cuda::test {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

std::string demo_path() {
    return env_or("DS4_DEMO_GGUF", std::string(DS4_SOURCE_DIR) + "/build/ds4-demo.gguf");
}

// The demo model (q2: its experts take the device grouping, so its passes can be
// captured; the goldens' f32 experts group on the host and always run eagerly):
// window 128, ratios 4 / 128, indexer top 16.
struct Demo {
    gguf::File file;
    cpu::WeightSet ws;
    std::unique_ptr<cpu::CpuModel> model;
    explicit Demo(const std::string& path) : file(gguf::File::open(path)) {
        cpu::add_gguf_views(ws, file);
        model = std::make_unique<cpu::CpuModel>(model::read_hparams(file), ws);
    }
    const model::Hparams& hp() const { return model->hparams(); }
    int32_t token(uint64_t i) const { return static_cast<int32_t>((i * 37u + 11u) % hp().n_vocab); }
};

// Number of float positions whose bits differ (0: bitwise identical).
size_t bit_differences(std::span<const float> a, std::span<const float> b) {
    size_t n = 0;
    for (size_t i = 0; i < a.size(); ++i)
        n += std::memcmp(&a[i], &b[i], sizeof(float)) != 0 ? 1 : 0;
    return n;
}

class CudaGraph : public ::testing::Test {
  protected:
    void SetUp() override {
        DS4_REQUIRE_GPU();
        if (!std::filesystem::exists(demo_path()))
            GTEST_SKIP() << "no demo model at " << demo_path();
        demo_ = std::make_unique<Demo>(demo_path());
    }
    std::unique_ptr<Demo> demo_;
};

// A short prefill, then one token per step to position 300: the raw ring (128 rows)
// wraps twice, the ratio-4 compressors emit 74 rows, the ratio-128 ones two, and the
// indexer switches on at position 67 (17 rows > top 16), which changes the key.
TEST_F(CudaGraph, DecodeStepsMatchEagerBitwise) {
    const Demo& d = *demo_;
    constexpr uint32_t kPrefill = 5, kEnd = 300;
    const uint32_t V = d.hp().n_vocab;
    Forward graph(*d.model), eager(*d.model);
    graph.set_graphs(true);
    eager.set_graphs(false);
    cpu::KvState sg(d.hp(), 512), se(d.hp(), 512);
    std::vector<int32_t> toks(kEnd);
    for (uint32_t i = 0; i < kEnd; ++i) toks[i] = d.token(i);
    std::vector<float> lg(uint64_t{kPrefill} * V), le(lg.size());
    std::vector<uint32_t> rows(kPrefill);
    std::iota(rows.begin(), rows.end(), 0u);
    graph.eval(sg, 0, {toks.data(), kPrefill}, rows, lg);
    eager.eval(se, 0, {toks.data(), kPrefill}, rows, le);
    size_t differ = bit_differences(lg, le);
    const uint32_t row0[] = {0};
    std::vector<float> vg(V), ve(V);
    for (uint32_t p = kPrefill; p < kEnd; ++p) {
        graph.eval(sg, p, {toks.data() + p, 1}, row0, vg);
        eager.eval(se, p, {toks.data() + p, 1}, row0, ve);
        const size_t n = bit_differences(vg, ve);
        if (n != 0 && differ == 0) ADD_FAILURE() << "first difference at position " << p;
        differ += n;
    }
    const Forward::GraphStats st = graph.graph_stats();
    std::cout << "[cuda graph] demo: " << kEnd - kPrefill << " decode steps, " << st.captures
              << " captures, " << st.replays << " replays, " << st.eager << " eager, " << st.failed
              << " failed captures; differing logits " << differ << "\n";
    EXPECT_EQ(differ, 0u);
    EXPECT_EQ(st.failed, 0u);
    EXPECT_EQ(eager.graph_stats().replays, 0u);
    EXPECT_EQ(st.captures, 2u);  // indexer off, then on
    EXPECT_EQ(st.replays, kEnd - kPrefill - 2);
    // the host mirror of the row counts followed the device: the downloaded states agree
    graph.download(sg);
    eager.download(se);
    for (uint32_t il = 0; il < d.hp().n_layer; ++il) {
        EXPECT_EQ(bit_differences(sg.layer(il).raw, se.layer(il).raw), 0u) << "layer " << il;
        for (auto c : {&cpu::LayerKv::attn, &cpu::LayerKv::index}) {
            const auto& a = sg.layer(il).*c;
            const auto& b = se.layer(il).*c;
            if (!a) continue;
            EXPECT_EQ(a->n_rows, b->n_rows) << "layer " << il;
            EXPECT_EQ(bit_differences(a->rows, b->rows), 0u) << "layer " << il;
            EXPECT_EQ(bit_differences(a->state_kv, b->state_kv), 0u) << "layer " << il;
        }
    }
}

// A pass captured as one graph per layer (DS4_CUDA_GRAPH_LAYERS=1) replays the same
// launches as the eager pass, split at layer boundaries: bitwise the same logits, also
// across the indexer's switch (a new key, a new capture).
TEST_F(CudaGraph, PassInOneGraphPerLayerMatchesEagerBitwise) {
    const Demo& d = *demo_;
    constexpr uint32_t kEnd = 90;
    const uint32_t V = d.hp().n_vocab;
    ::setenv("DS4_CUDA_GRAPH_LAYERS", "1", 1);
    Forward parts(*d.model);
    ::unsetenv("DS4_CUDA_GRAPH_LAYERS");
    Forward eager(*d.model);
    parts.set_graphs(true);
    eager.set_graphs(false);
    cpu::KvState sp(d.hp(), 256), se(d.hp(), 256);
    const uint32_t row0[] = {0};
    std::vector<float> vp(V), ve(V);
    size_t differ = 0;
    for (uint32_t p = 0; p < kEnd; ++p) {
        const int32_t tok = d.token(p);
        parts.eval(sp, p, {&tok, 1}, row0, vp);
        eager.eval(se, p, {&tok, 1}, row0, ve);
        differ += bit_differences(vp, ve);
    }
    const Forward::GraphStats st = parts.graph_stats();
    EXPECT_EQ(differ, 0u);
    EXPECT_EQ(st.failed, 0u);
    EXPECT_EQ(st.captures, 2u);  // indexer off, then on
    EXPECT_EQ(st.parts, d.hp().n_layer);
    EXPECT_EQ(st.replays, kEnd - 2);
}

// Three sequences at different positions decode together; sequence 1 leaves the batch
// for 30 steps and comes back (other keys, graphs cached side by side).
TEST_F(CudaGraph, BatchOfSequencesMatchesEagerBitwise) {
    const Demo& d = *demo_;
    const uint32_t V = d.hp().n_vocab;
    Forward graph(*d.model), eager(*d.model);
    graph.set_graphs(true);
    eager.set_graphs(false);
    const std::vector<uint32_t> starts{3, 60, 140};
    std::vector<std::unique_ptr<cpu::KvState>> sg, se;
    std::vector<float> scratch(V);
    for (uint32_t n : starts) {
        std::vector<int32_t> p(n);
        for (uint32_t i = 0; i < n; ++i) p[i] = d.token(i + n);
        sg.push_back(std::make_unique<cpu::KvState>(d.hp(), 512));
        se.push_back(std::make_unique<cpu::KvState>(d.hp(), 512));
        const std::vector<uint32_t> row{n - 1};
        graph.eval(*sg.back(), 0, p, row, scratch);
        eager.eval(*se.back(), 0, p, row, scratch);
    }
    const uint32_t last[] = {0};
    size_t differ = 0;
    for (int step = 0; step < 150; ++step) {
        const bool without_1 = step >= 40 && step < 70;
        std::vector<size_t> members;
        for (size_t i = 0; i < starts.size(); ++i)
            if (!(without_1 && i == 1)) members.push_back(i);
        std::vector<float> lg(members.size() * uint64_t{V}), le(lg.size());
        std::vector<int32_t> toks(members.size());
        std::vector<Forward::Chunk> cg, ce;
        for (size_t j = 0; j < members.size(); ++j) {
            const size_t i = members[j];
            toks[j] = d.token(sg[i]->n_tokens() * 3 + i);
            cg.push_back({sg[i].get(), {&toks[j], 1}, last, {lg.data() + j * V, V}});
            ce.push_back({se[i].get(), {&toks[j], 1}, last, {le.data() + j * V, V}});
        }
        graph.eval_batch(cg);
        eager.eval_batch(ce);
        const size_t n = bit_differences(lg, le);
        if (n != 0 && differ == 0) ADD_FAILURE() << "first difference at step " << step;
        differ += n;
    }
    const Forward::GraphStats st = graph.graph_stats();
    std::cout << "[cuda graph] batch of 3 (one leaving and coming back), 150 steps: " << st.captures
              << " captures, " << st.replays << " replays, " << st.eager << " eager, " << st.failed
              << " failed captures; differing logits " << differ << "\n";
    EXPECT_EQ(differ, 0u);
    EXPECT_EQ(st.failed, 0u);
    EXPECT_GE(st.captures, 3u);  // the first indexer switch, without 1, all three again with all on
    EXPECT_GE(st.replays, 130u);
}

// Through the engine: greedy decoding with a checkpoint, a few steps, a restore and the
// same steps again, with graphs and with DS4_CUDA_GRAPH=0: bitwise the same logits.
TEST_F(CudaGraph, EngineGreedyWithRestoreMatchesEager) {
    const std::string demo = demo_path();
    EngineOptions opt;
    opt.backend = Backend::Cuda;
    opt.ctx = 512;
    Engine with = Engine::open(demo, opt);
    setenv("DS4_CUDA_GRAPH", "0", 1);
    Engine without = Engine::open(demo, opt);
    unsetenv("DS4_CUDA_GRAPH");
    const uint32_t V = with.model().n_vocab;
    std::vector<int32_t> prompt(150);
    for (uint32_t i = 0; i < prompt.size(); ++i)
        prompt[i] = static_cast<int32_t>((i * 37u + 11u) % V);
    const auto run = [&](Engine& eng) {
        std::vector<float> out;
        const SequenceId seq = eng.create_sequence();
        Batch b;
        b.add(seq, prompt, LogitsWanted::Last);
        Logits lg = eng.step(b);
        int32_t next = lg.argmax(0);
        std::optional<SequenceCheckpoint> cp;
        for (int i = 0; i < 60; ++i) {
            if (i == 20) cp = eng.checkpoint(seq);
            if (i == 30) {
                eng.restore(seq, *cp);
                next = static_cast<int32_t>(i % V);
            }
            b.clear();
            b.add_token(seq, next);
            lg = eng.step(b);
            out.insert(out.end(), lg.row(0).begin(), lg.row(0).end());
            next = lg.argmax(0);
        }
        return out;
    };
    const std::vector<float> a = run(with), b = run(without);
    ASSERT_EQ(a.size(), b.size());
    const size_t differ = bit_differences(a, b);
    std::cout << "[cuda graph] engine, 60 greedy steps with a restore: differing logits " << differ
              << "\n";
    EXPECT_EQ(differ, 0u);
}

// The decode fast paths of issue 8 against the plain launches: a Forward made with the
// merged shared-input products (DS4_CUDA_MULTI), the fused small kernels (DS4_CUDA_FUSE),
// the sublayers' side-stream chains (DS4_CUDA_FORK) and programmatic dependent launch
// (DS4_CUDA_PDL), replaying graphs, gives bitwise the logits of one made with all four off
// that launches every kernel itself on one stream, over decode
// steps crossing compressor emits and the indexer switching on, and for a batch of 3.
TEST_F(CudaGraph, MergedLaunchesAndPdlMatchPlainBitwise) {
    const Demo& d = *demo_;
    constexpr uint32_t kPrefill = 6, kEnd = 120;
    const uint32_t V = d.hp().n_vocab;
    Forward fast(*d.model);
    ::setenv("DS4_CUDA_MULTI", "0", 1);
    ::setenv("DS4_CUDA_FUSE", "0", 1);
    ::setenv("DS4_CUDA_FORK", "0", 1);
    Forward plain(*d.model);
    ::unsetenv("DS4_CUDA_MULTI");
    ::unsetenv("DS4_CUDA_FUSE");
    ::unsetenv("DS4_CUDA_FORK");
    fast.set_graphs(true);
    plain.set_graphs(false);
    const auto eval = [&](Forward& f, bool pdl, cpu::KvState& st, uint64_t pos, std::span<const int32_t> toks,
                          std::span<const uint32_t> rows, std::span<float> lg) {
        set_pdl_enabled(pdl);
        f.eval(st, pos, toks, rows, lg);
        set_pdl_enabled(true);
    };
    cpu::KvState sf(d.hp(), 512), sp(d.hp(), 512);
    std::vector<int32_t> toks(kEnd);
    for (uint32_t i = 0; i < kEnd; ++i) toks[i] = d.token(i + 3);
    std::vector<float> lf(uint64_t{kPrefill} * V), lp(lf.size());
    std::vector<uint32_t> rows(kPrefill);
    std::iota(rows.begin(), rows.end(), 0u);
    eval(fast, true, sf, 0, {toks.data(), kPrefill}, rows, lf);
    eval(plain, false, sp, 0, {toks.data(), kPrefill}, rows, lp);
    size_t differ = bit_differences(lf, lp);
    const uint32_t row0[] = {0};
    std::vector<float> vf(V), vp(V);
    for (uint32_t p = kPrefill; p < kEnd; ++p) {
        eval(fast, true, sf, p, {toks.data() + p, 1}, row0, vf);
        eval(plain, false, sp, p, {toks.data() + p, 1}, row0, vp);
        const size_t n = bit_differences(vf, vp);
        if (n != 0 && differ == 0) ADD_FAILURE() << "first difference at position " << p;
        differ += n;
    }
    // three sequences in one pass (4-token chunks of the multi kernels' NT > 1 bodies)
    std::vector<std::unique_ptr<cpu::KvState>> bf, bp;
    for (int i = 0; i < 3; ++i) {
        bf.push_back(std::make_unique<cpu::KvState>(d.hp(), 256));
        bp.push_back(std::make_unique<cpu::KvState>(d.hp(), 256));
    }
    for (uint32_t step = 0; step < 12; ++step) {
        const uint32_t len = step == 0 ? 3 : 1;
        std::vector<std::vector<float>> of(3, std::vector<float>(V)), op(3, std::vector<float>(V));
        std::vector<Forward::Chunk> cf, cp;
        const uint32_t last[] = {len - 1};
        for (int i = 0; i < 3; ++i) {
            const std::span<const int32_t> t{toks.data() + 5 * i + bf[i]->n_tokens(), len};
            cf.push_back({bf[i].get(), t, last, of[i]});
            cp.push_back({bp[i].get(), t, last, op[i]});
        }
        set_pdl_enabled(true);
        fast.eval_batch(cf);
        set_pdl_enabled(false);
        plain.eval_batch(cp);
        set_pdl_enabled(true);
        for (int i = 0; i < 3; ++i) differ += bit_differences(of[i], op[i]);
    }
    std::cout << "[cuda multi+pdl] demo: " << kEnd - kPrefill << " decode steps + 12 batch-of-3 steps, "
              << fast.graph_stats().replays << " replays; differing logits " << differ << "\n";
    EXPECT_EQ(differ, 0u);
    EXPECT_EQ(fast.graph_stats().failed, 0u);
    EXPECT_GT(fast.graph_stats().replays, 0u);
}

}  // namespace
}  // namespace ds4::cuda::test
