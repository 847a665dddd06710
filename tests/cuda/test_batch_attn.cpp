// The batched attention state kernels (cuda/attention_batch.h) against the per-token
// walk (set_batch_attn(false)) on the demo model (window 128, compressor ratios 4 and
// 128, indexer top 16): bitwise the same logits of every row and the same downloaded KV
// states, for prefill chunks longer than the raw window (the ring wraps inside a chunk),
// chunks that start mid-window of both compressors, single-token passes, the indexer
// switching on inside a chunk, several sequences (long and one-token chunks) in one pass,
// and graph-captured decode steps of a batch. Each test runs with the batched attend's
// one-block-per-head kernel and with its head-group tile kernel forced on every pass
// (groups of 8 and of 2 heads).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <numeric>
#include <string>

#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "cuda/attention_batch.h"
#include "cuda/forward.h"
#include "cuda_test_util.h"
#include "gguf/gguf.h"
#include "model/metadata.h"

namespace ds4::cuda::test {
namespace {

std::string demo_file() {
    const char* v = std::getenv("DS4_DEMO_GGUF");
    return v != nullptr && *v != '\0' ? std::string(v) : std::string(DS4_SOURCE_DIR) + "/build/ds4-demo.gguf";
}

struct DemoModel {
    gguf::File file;
    cpu::WeightSet ws;
    std::unique_ptr<cpu::CpuModel> model;
    explicit DemoModel(const std::string& path) : file(gguf::File::open(path)) {
        cpu::add_gguf_views(ws, file);
        model = std::make_unique<cpu::CpuModel>(model::read_hparams(file), ws);
    }
    const model::Hparams& hp() const { return model->hparams(); }
    int32_t token(uint64_t i) const { return static_cast<int32_t>((i * 53u + 7u) % hp().n_vocab); }
};

size_t bits_differ(std::span<const float> a, std::span<const float> b) {
    size_t n = a.size() == b.size() ? 0 : 1;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) n += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return n;
}

// Every layer's ring, frontiers, rows and counts.
size_t state_differences(const cpu::KvState& a, const cpu::KvState& b) {
    size_t n = 0;
    for (uint32_t il = 0; il < a.n_layer(); ++il) {
        n += bits_differ(a.layer(il).raw, b.layer(il).raw);
        for (auto c : {&cpu::LayerKv::attn, &cpu::LayerKv::index}) {
            const auto& x = a.layer(il).*c;
            const auto& y = b.layer(il).*c;
            if (!x || !y) {
                n += x.has_value() != y.has_value();
                continue;
            }
            n += x->n_rows != y->n_rows;
            n += bits_differ(x->rows, y->rows) + bits_differ(x->state_kv, y->state_kv) +
                 bits_differ(x->state_score, y->state_score);
        }
    }
    return n;
}

class CudaBatchAttn : public ::testing::TestWithParam<uint32_t> {  // param: the tile's heads (0: per head)
  protected:
    void SetUp() override {
        tile_was_ = batch_attend_tile();
        DS4_REQUIRE_GPU();
        if (!std::filesystem::exists(demo_file())) GTEST_SKIP() << "no demo model at " << demo_file();
        demo_ = std::make_unique<DemoModel>(demo_file());
        if (GetParam() != 0 && demo_->hp().n_head % GetParam() != 0) GTEST_SKIP() << "n_head not a multiple";
        set_batch_attend_tile({GetParam(), 0});  // every pass, however few blocks
    }
    void TearDown() override { set_batch_attend_tile(tile_was_); }
    std::unique_ptr<DemoModel> demo_;
    TileConfig tile_was_;
};
INSTANTIATE_TEST_SUITE_P(AttendTile, CudaBatchAttn, ::testing::Values(0u, 8u, 2u),
                         [](const ::testing::TestParamInfo<uint32_t>& i) {
                             return i.param == 0 ? std::string("per_head") : "tile" + std::to_string(i.param);
                         });

// One sequence in chunks of 5, 200 (the ring wraps inside it; ratio-4 emits, the
// indexer switches on at 67, a ratio-128 emit at 127), 61, 130 (ratio-128 emit at 383
// from mid-window) and 3 one-token steps; logits of every row.
TEST_P(CudaBatchAttn, PrefillChunksMatchPerTokenBitwise) {
    const DemoModel& d = *demo_;
    const uint32_t V = d.hp().n_vocab;
    Forward batched(*d.model), walk(*d.model);
    batched.set_batch_attn(true, 1);  // single-token passes batched too
    walk.set_batch_attn(false);
    cpu::KvState sb(d.hp(), 512), sw(d.hp(), 512);
    size_t differ = 0;
    uint64_t pos = 0;
    for (uint32_t len : {5u, 200u, 61u, 130u, 1u, 1u, 1u}) {
        std::vector<int32_t> toks(len);
        for (uint32_t i = 0; i < len; ++i) toks[i] = d.token(pos + i);
        std::vector<uint32_t> rows(len);
        std::iota(rows.begin(), rows.end(), 0u);
        std::vector<float> lb(uint64_t{len} * V), lw(lb.size());
        batched.eval(sb, pos, toks, rows, lb);
        walk.eval(sw, pos, toks, rows, lw);
        const size_t n = bits_differ(lb, lw);
        if (n != 0) ADD_FAILURE() << n << " logits differ in the chunk at " << pos << " (" << len << " tokens)";
        differ += n;
        pos += len;
    }
    batched.download(sb);
    walk.download(sw);
    const size_t states = state_differences(sb, sw);
    std::cout << "[cuda batch attn] one sequence, chunks to position " << pos << ": differing logits " << differ
              << ", differing state values " << states << "\n";
    EXPECT_EQ(differ, 0u);
    EXPECT_EQ(states, 0u);
}

// Three sequences in one pass, each pass mixing a long chunk and one-token steps, at
// positions where the compressors emit and the ring wraps; then a graph-captured decode
// batch (batched) against the eager per-token walk.
TEST_P(CudaBatchAttn, MixedBatchesMatchPerTokenBitwise) {
    const DemoModel& d = *demo_;
    const uint32_t V = d.hp().n_vocab;
    Forward batched(*d.model), walk(*d.model);
    batched.set_batch_attn(true, 1);  // single-token passes batched too
    batched.set_graphs(true);
    walk.set_batch_attn(false);
    walk.set_graphs(false);
    constexpr size_t kSeqs = 3;
    std::vector<std::unique_ptr<cpu::KvState>> sb, sw;
    for (size_t i = 0; i < kSeqs; ++i) {
        sb.push_back(std::make_unique<cpu::KvState>(d.hp(), 512));
        sw.push_back(std::make_unique<cpu::KvState>(d.hp(), 512));
    }
    // per pass, the chunk length of each sequence (0: not in the pass)
    std::vector<std::array<uint32_t, kSeqs>> passes{{7, 1, 130}, {150, 0, 1}, {1, 70, 3}, {129, 1, 0}, {2, 64, 1}};
    for (int i = 0; i < 40; ++i) passes.push_back({1, 1, 1});  // graph capture and replays
    size_t differ = 0;
    for (size_t pi = 0; pi < passes.size(); ++pi) {
        std::vector<std::vector<int32_t>> toks(kSeqs);
        std::vector<std::vector<uint32_t>> rows(kSeqs);
        std::vector<Forward::Chunk> cb, cw;
        uint64_t total = 0;
        for (size_t i = 0; i < kSeqs; ++i) total += passes[pi][i];
        std::vector<float> lb(total * V), lw(lb.size());
        uint64_t at = 0;
        for (size_t i = 0; i < kSeqs; ++i) {
            const uint32_t len = passes[pi][i];
            if (len == 0) continue;
            for (uint32_t k = 0; k < len; ++k) toks[i].push_back(d.token(sb[i]->n_tokens() * 3 + k + 100 * i));
            rows[i].resize(len);
            std::iota(rows[i].begin(), rows[i].end(), 0u);
            const std::span<float> ob{lb.data() + at * V, uint64_t{len} * V}, ow{lw.data() + at * V, uint64_t{len} * V};
            cb.push_back({sb[i].get(), toks[i], rows[i], ob});
            cw.push_back({sw[i].get(), toks[i], rows[i], ow});
            at += len;
        }
        batched.eval_batch(cb);
        walk.eval_batch(cw);
        const size_t n = bits_differ(lb, lw);
        if (n != 0) ADD_FAILURE() << n << " logits differ in pass " << pi;
        differ += n;
    }
    size_t states = 0;
    for (size_t i = 0; i < kSeqs; ++i) {
        batched.download(*sb[i]);
        walk.download(*sw[i]);
        states += state_differences(*sb[i], *sw[i]);
        EXPECT_GT(sb[i]->n_tokens(), 128u);  // every ring wrapped
    }
    const Forward::GraphStats st = batched.graph_stats();
    std::cout << "[cuda batch attn] 3 sequences, " << passes.size() << " mixed passes (" << st.replays
              << " graph replays): differing logits " << differ << ", differing state values " << states << "\n";
    EXPECT_EQ(differ, 0u);
    EXPECT_EQ(states, 0u);
    EXPECT_GE(st.replays, 30u);
    EXPECT_EQ(st.failed, 0u);
}

// The tile kernel against the one-block-per-head kernel at the published attention shape
// (64 heads of 512, window 128, rope 64, ratio 4 with the indexer's top 512) for tokens of
// two sequences in one pass: one deep (ring rows from before the pass, the indexer's
// choice of rows) and one young (fewer raw rows than the window, every compressed row);
// groups of 8 and of 2 heads: bitwise the same outputs.
TEST(CudaBatchAttnKernel, TileMatchesPerHeadAtPublishedShape) {
    DS4_REQUIRE_GPU();
    constexpr uint32_t kHeads = 64, kHd = 512, kWindow = 128, kTop = 512, kCap = 1024, kRatio = 4;
    constexpr uint32_t kDeep = 40, kYoung = 8, kN = kDeep + kYoung;
    const uint64_t pos0[2] = {3000, 100};
    const uint32_t n0[2] = {750, 25};  // compressed rows before the pass
    std::vector<TokSeg> tok(kN);
    std::vector<uint64_t> pos(kN);
    for (uint32_t t = 0; t < kN; ++t) {
        const uint32_t sg = t < kDeep ? 0 : 1;
        tok[t] = sg == 0 ? TokSeg{0, 0, kDeep - 1} : TokSeg{1, kDeep, kN - 1};
        pos[t] = pos0[sg] + (t - tok[t].first);
    }
    std::vector<DeviceBuffer<float>> bufs;
    std::vector<DeviceBuffer<uint32_t>> counts;
    const auto dev_floats = [&](size_t n, uint32_t seed) {
        bufs.push_back(to_device<float>(random_floats(n, seed)));
        return bufs.back().data();
    };
    std::vector<SegKv> seg(2);
    for (uint32_t sg = 0; sg < 2; ++sg) {
        seg[sg].raw = dev_floats(uint64_t{kWindow} * kHd, 10 + sg);
        for (CompPtrs* c : {&seg[sg].attn, &seg[sg].index}) {
            counts.push_back(to_device<uint32_t>(std::vector<uint32_t>{n0[sg]}));
            c->n_rows = counts.back().data();
            c->capacity = kCap;
        }
        seg[sg].attn.rows = dev_floats(uint64_t{kCap} * kHd, 20 + sg);
    }
    std::vector<uint32_t> sel(uint64_t{kN} * kTop);
    uint32_t x = 12345;
    for (auto& v : sel) v = (x = x * 1664525u + 1013904223u) % n0[0];
    const DeviceBuffer<TokSeg> tok_dev = to_device<TokSeg>(tok);
    const DeviceBuffer<SegKv> seg_dev = to_device<SegKv>(seg);
    const DeviceBuffer<uint64_t> pos_dev = to_device<uint64_t>(pos);
    const DeviceBuffer<uint32_t> sel_dev = to_device<uint32_t>(sel);
    const BatchPass p{kN, 2, tok_dev.data(), seg_dev.data(), pos_dev.data()};
    BatchAttend a;
    a.q = dev_floats(uint64_t{kN} * kHeads * kHd, 30);
    a.kvb = dev_floats(uint64_t{kN} * kHd, 31);
    a.sel = sel_dev.data();
    a.comp = a.index = true;
    a.comp_ratio = kRatio;
    a.topk = kTop;
    a.sinks = dev_floats(kHeads, 32);
    bufs.push_back(to_device<float>(random_floats(32, 33, 1e-4f, 1.0f)));
    a.omega = bufs.back().data();
    a.cap_rows = kWindow + kCap;
    a.n_head = kHeads;
    a.hd = kHd;
    a.rope_dim = 64;
    a.window = kWindow;
    const TileConfig was = batch_attend_tile();
    const auto run = [&](uint32_t heads) {
        DeviceBuffer<float> out(uint64_t{kN} * kHeads * kHd);
        out.fill_bytes(0xff);
        a.out = out.data();
        set_batch_attend_tile({heads, 0});
        batch_attend(p, a, nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        return out.download();
    };
    const std::vector<float> per_head = run(0), tile8 = run(8), tile2 = run(2);
    set_batch_attend_tile(was);
    size_t nan = 0;
    for (float v : per_head) nan += std::isnan(v) ? 1 : 0;
    EXPECT_EQ(nan, 0u);
    EXPECT_EQ(bits_differ(tile8, per_head), 0u);
    EXPECT_EQ(bits_differ(tile2, per_head), 0u);
}

}  // namespace
}  // namespace ds4::cuda::test
