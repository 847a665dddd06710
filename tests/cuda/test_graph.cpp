// CUDA graphs of the forward pass (cuda/forward.h): a Forward that captures and replays
// its passes gives bitwise the logits of one that launches every kernel itself, over
// many decode steps crossing the raw window's wrap, compressor emits (ratio 4 and 128)
// and the indexer switching on; for a batch of sequences whose membership changes
// (several cached keys); and through the engine with checkpoint / restore. The graphs
// must really run (graph_stats).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>

#include "cpu/forward.h"
#include "cuda/forward.h"
#include "cuda_test_util.h"
#include "ds4/engine.h"
#include "golden_model.h"

namespace ds4::cuda::test {
namespace {

using cpu::test::Golden;

std::string env_or(const char* name, const std::string& fallback) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

struct Loaded {
    std::unique_ptr<Golden> golden;
    std::unique_ptr<cpu::CpuModel> model;
};

const Loaded& golden(const std::string& name) {
    static std::map<std::string, Loaded> cache;
    auto it = cache.find(name);
    if (it == cache.end()) {
        Loaded l;
        const std::string dir = env_or("DS4_TEST_DATA", DS4_TEST_DATA_DIR);
        l.golden = Golden::load(dir + "/golden/golden_" + name + ".safetensors", name);
        l.model = std::make_unique<cpu::CpuModel>(l.golden->hp, l.golden->weights);
        it = cache.emplace(name, std::move(l)).first;
    }
    return it->second;
}

// Number of float positions whose bits differ (0: bitwise identical).
size_t bit_differences(std::span<const float> a, std::span<const float> b) {
    size_t n = 0;
    for (size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(float)) != 0 ? 1 : 0;
    return n;
}

class CudaGraphGolden : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override { DS4_REQUIRE_GPU(); }
};

// A short prefill, then one token per step to the golden's end: tiny_s1 (window 8,
// ratios 4 / 128, indexer top 4) wraps the ring 30 times, emits 64 ratio-4 rows and
// two ratio-128 rows, and turns the indexer on at position 19.
TEST_P(CudaGraphGolden, DecodeStepsMatchEagerBitwise) {
    const Loaded& l = golden(GetParam());
    const Golden& g = *l.golden;
    const uint32_t V = g.hp.n_vocab, prefill = 5;
    Forward graph(*l.model), eager(*l.model);
    graph.set_graphs(true);
    eager.set_graphs(false);
    cpu::KvState sg(g.hp, g.T), se(g.hp, g.T);
    std::vector<float> lg(uint64_t{prefill} * V), le(lg.size());
    std::vector<uint32_t> rows(prefill);
    std::iota(rows.begin(), rows.end(), 0u);
    graph.eval(sg, 0, {g.tokens.data(), prefill}, rows, lg);
    eager.eval(se, 0, {g.tokens.data(), prefill}, rows, le);
    size_t differ = bit_differences(lg, le);
    const uint32_t row0[] = {0};
    std::vector<float> vg(V), ve(V);
    for (uint32_t p = prefill; p < g.T; ++p) {
        graph.eval(sg, p, {g.tokens.data() + p, 1}, row0, vg);
        eager.eval(se, p, {g.tokens.data() + p, 1}, row0, ve);
        const size_t d = bit_differences(vg, ve);
        if (d != 0 && differ == 0) ADD_FAILURE() << "first difference at position " << p;
        differ += d;
    }
    const Forward::GraphStats st = graph.graph_stats();
    std::cout << "[cuda graph] " << GetParam() << ": " << g.T - prefill << " decode steps, " << st.captures
              << " captures, " << st.replays << " replays, " << st.eager << " eager; differing logits " << differ
              << "\n";
    EXPECT_EQ(differ, 0u);
    EXPECT_EQ(eager.graph_stats().replays, 0u);
    EXPECT_GE(st.captures, 2u);  // the indexer's switch changes the key
    EXPECT_GE(st.replays, g.T - prefill - 2 * st.captures);
    // the host mirror of the row counts followed the device: the downloaded states agree
    graph.download(sg);
    eager.download(se);
    for (uint32_t il = 0; il < g.hp.n_layer; ++il) {
        EXPECT_EQ(bit_differences(sg.layer(il).raw, se.layer(il).raw), 0u) << "layer " << il;
        for (auto c : {&cpu::LayerKv::attn, &cpu::LayerKv::index}) {
            const auto& a = sg.layer(il).*c;
            const auto& b = se.layer(il).*c;
            if (!a) continue;
            EXPECT_EQ(a->n_rows, b->n_rows) << "layer " << il;
            EXPECT_EQ(bit_differences(a->rows, b->rows), 0u) << "layer " << il;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Goldens, CudaGraphGolden, ::testing::Values("tiny_s1", "small_s1"),
                         [](const auto& p) { return p.param; });

// Three sequences at different positions decode together; sequence 1 leaves the batch
// for a while and comes back (other keys, graphs cached side by side).
TEST(CudaGraph, BatchOfSequencesMatchesEagerBitwise) {
    DS4_REQUIRE_GPU();
    const Loaded& l = golden("tiny_s1");
    const Golden& g = *l.golden;
    const uint32_t V = g.hp.n_vocab;
    Forward graph(*l.model), eager(*l.model);
    graph.set_graphs(true);
    eager.set_graphs(false);
    const std::vector<uint32_t> starts{3, 17, 40};
    std::vector<std::unique_ptr<cpu::KvState>> sg, se;
    const uint32_t last[] = {0};
    std::vector<float> scratch(V);
    for (uint32_t n : starts) {
        sg.push_back(std::make_unique<cpu::KvState>(g.hp, g.T));
        se.push_back(std::make_unique<cpu::KvState>(g.hp, g.T));
        std::vector<uint32_t> row{n - 1};
        graph.eval(*sg.back(), 0, {g.tokens.data(), n}, row, scratch);
        eager.eval(*se.back(), 0, {g.tokens.data(), n}, row, scratch);
    }
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
            toks[j] = g.tokens[sg[i]->n_tokens() % g.T];
            cg.push_back({sg[i].get(), {&toks[j], 1}, last, {lg.data() + j * V, V}});
            ce.push_back({se[i].get(), {&toks[j], 1}, last, {le.data() + j * V, V}});
        }
        graph.eval_batch(cg);
        eager.eval_batch(ce);
        const size_t d = bit_differences(lg, le);
        if (d != 0 && differ == 0) ADD_FAILURE() << "first difference at step " << step;
        differ += d;
    }
    const Forward::GraphStats st = graph.graph_stats();
    std::cout << "[cuda graph] batch of 3 (one leaving and coming back), 150 steps: " << st.captures
              << " captures, " << st.replays << " replays, " << st.eager << " eager; differing logits " << differ
              << "\n";
    EXPECT_EQ(differ, 0u);
    EXPECT_GE(st.captures, 2u);
    EXPECT_GE(st.replays, 120u);
}

// Through the engine: greedy decoding with a checkpoint, a few steps, a restore and the
// same steps again, with graphs and with DS4_CUDA_GRAPH=0: bitwise the same logits.
TEST(CudaGraph, EngineGreedyWithRestoreMatchesEager) {
    DS4_REQUIRE_GPU();
    const std::string demo = env_or("DS4_DEMO_GGUF", std::string(DS4_SOURCE_DIR) + "/build/ds4-demo.gguf");
    if (!std::filesystem::exists(demo)) GTEST_SKIP() << "no demo model at " << demo;
    EngineOptions opt;
    opt.backend = Backend::Cuda;
    opt.ctx = 512;
    Engine with = Engine::open(demo, opt);
    setenv("DS4_CUDA_GRAPH", "0", 1);
    Engine without = Engine::open(demo, opt);
    unsetenv("DS4_CUDA_GRAPH");
    const uint32_t V = with.model().n_vocab;
    std::vector<int32_t> prompt(150);
    for (uint32_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 37u + 11u) % V);
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
    std::cout << "[cuda graph] engine, 60 greedy steps with a restore: differing logits " << differ << "\n";
    EXPECT_EQ(differ, 0u);
}

}  // namespace
}  // namespace ds4::cuda::test
