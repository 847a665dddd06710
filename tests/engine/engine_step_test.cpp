// step(): batching, chunking, sequence lifecycle and thread count never change a
// sequence's logits (bit for bit), and rows come back in batch order with their
// (sequence, position).
#include <gtest/gtest.h>

#include <cmath>

#include "ds4/engine.h"
#include "ds4/error.h"
#include "engine_test_util.h"

namespace ds4::testing {
namespace {

constexpr uint32_t kTinyVocab = 320;

// Prefills `toks` into `s` in one chunk without logits.
void prefill(Engine& e, SequenceId s, std::span<const int32_t> toks) {
    Batch b;
    b.add(s, toks, LogitsWanted::None);
    EXPECT_EQ(e.step(b).rows(), 0u);
}

TEST(EngineStep, LogitsAreFiniteAndNotConstant) {
    Engine e = Engine::open(kTinyModel, options(64));
    const SequenceId s = e.create_sequence();
    Batch b;
    b.add(s, tokens(5, kTinyVocab, 1));
    const Logits l = e.step(b);
    ASSERT_EQ(l.rows(), 1u);
    ASSERT_EQ(l.vocab(), kTinyVocab);
    const std::span<const float> r = l.row(0);
    float lo = r[0], hi = r[0];
    for (float x : r) {
        ASSERT_TRUE(std::isfinite(x));
        lo = std::min(lo, x);
        hi = std::max(hi, x);
    }
    EXPECT_GT(hi - lo, 1e-3f);
    EXPECT_EQ(r[static_cast<size_t>(l.argmax(0))], hi);
    EXPECT_EQ(e.sequence_length(s), 5u);
}

TEST(EngineStep, BatchedEqualsEachSequenceAlone) {
    const std::vector<int32_t> a = tokens(20, kTinyVocab, 11);       // prefill chunk
    const std::vector<int32_t> b_hist = tokens(13, kTinyVocab, 12);  // b: history + 1 decode
    const std::vector<int32_t> c_hist = tokens(30, kTinyVocab, 13);  // c: history + 1 decode
    const int32_t b_next = 7, c_next = 300;
    const std::vector<uint32_t> a_rows = {0, 9, 15, 19};

    // Alone: each sequence in its own engine.
    std::vector<std::vector<float>> alone;
    {
        Engine e = Engine::open(kTinyModel, options(64));
        const SequenceId s = e.create_sequence();
        Batch batch;
        batch.add(s, a, a_rows);
        const Logits l = e.step(batch);
        for (size_t i = 0; i < l.rows(); ++i) alone.push_back(row(l, i));
    }
    for (const auto& [hist, next] : {std::pair{&b_hist, b_next}, std::pair{&c_hist, c_next}}) {
        Engine e = Engine::open(kTinyModel, options(64));
        const SequenceId s = e.create_sequence();
        prefill(e, s, *hist);
        Batch batch;
        batch.add_token(s, next);
        alone.push_back(row(e.step(batch), 0));
    }

    // Together: one engine, one step with all three.
    Engine e = Engine::open(kTinyModel, options(64));
    const SequenceId sb = e.create_sequence(), sa = e.create_sequence(), sc = e.create_sequence();
    prefill(e, sb, b_hist);
    prefill(e, sc, c_hist);
    Batch batch;
    batch.add_token(sc, c_next);
    batch.add(sa, a, a_rows);
    batch.add_token(sb, b_next);
    const Logits l = e.step(batch);
    ASSERT_EQ(l.rows(), 6u);
    // Batch order: c, then a's four rows, then b.
    const std::vector<size_t> want = {5, 0, 1, 2, 3, 4};
    const std::vector<std::pair<SequenceId, uint64_t>> where = {
        {sc, 30}, {sa, 0}, {sa, 9}, {sa, 15}, {sa, 19}, {sb, 13}};
    for (size_t i = 0; i < l.rows(); ++i) {
        EXPECT_TRUE(bit_equal(l.row(i), alone[want[i]])) << "row " << i;
        EXPECT_EQ(l.info(i).seq, where[i].first) << "row " << i;
        EXPECT_EQ(l.info(i).position, where[i].second) << "row " << i;
    }
    EXPECT_EQ(e.sequence_length(sa), 20u);
    EXPECT_EQ(e.sequence_length(sb), 14u);
    EXPECT_EQ(e.sequence_length(sc), 31u);
}

TEST(EngineStep, ChunkedPrefillEqualsTokenByToken) {
    // 44 tokens on the tiny model: the 16-row window wraps, the ratio-4 layers emit 11
    // compressed rows (> indexer top-k 4).
    const std::vector<int32_t> toks = tokens(44, kTinyVocab, 21);
    Engine e = Engine::open(kTinyModel, options(64));
    const std::vector<std::vector<float>> ref = decode_one_by_one(e, toks);

    for (size_t chunk : {size_t{3}, size_t{7}, size_t{16}, size_t{44}}) {
        const SequenceId s = e.create_sequence();
        Batch b;
        Logits l;
        for (size_t begin = 0; begin < toks.size(); begin += chunk) {
            const size_t n = std::min(chunk, toks.size() - begin);
            std::vector<uint32_t> all(n);
            for (uint32_t i = 0; i < n; ++i) all[i] = i;
            b.clear();
            b.add(s, std::span(toks).subspan(begin, n), all);
            e.step(b, l);
            ASSERT_EQ(l.rows(), n);
            for (size_t i = 0; i < n; ++i) {
                EXPECT_TRUE(bit_equal(l.row(i), ref[begin + i])) << "chunk " << chunk << " token " << begin + i;
                EXPECT_EQ(l.info(i).position, begin + i);
            }
        }
        e.free_sequence(s);
    }
}

TEST(EngineStep, LongEntryIsSplitTransparently) {
    // Longer than the engine's internal prefill chunk (256): 300 tokens in one entry equal
    // the same tokens fed in chunks of 100, rows straddling the internal split included.
    const std::vector<int32_t> toks = tokens(300, kTinyVocab, 31);
    const std::vector<uint32_t> rows = {0, 254, 255, 256, 257, 299};
    Engine e = Engine::open(kTinyModel, options(512));
    const SequenceId whole = e.create_sequence(), parts = e.create_sequence();
    Batch b;
    b.add(whole, toks, rows);
    const Logits lw = e.step(b);
    ASSERT_EQ(lw.rows(), rows.size());
    size_t next = 0;
    for (size_t begin = 0; begin < toks.size(); begin += 100) {
        std::vector<uint32_t> local;
        for (uint32_t r : rows)
            if (r >= begin && r < begin + 100) local.push_back(static_cast<uint32_t>(r - begin));
        b.clear();
        b.add(parts, std::span(toks).subspan(begin, 100), local);
        const Logits lp = e.step(b);
        for (size_t i = 0; i < lp.rows(); ++i, ++next) {
            EXPECT_TRUE(bit_equal(lp.row(i), lw.row(next))) << "row " << rows[next];
            EXPECT_EQ(lw.info(next).position, rows[next]);
        }
    }
    EXPECT_EQ(next, rows.size());
    EXPECT_EQ(e.sequence_length(whole), 300u);
}

TEST(EngineStep, ThreadCountDoesNotChangeLogits) {
    const std::vector<int32_t> toks = tokens(24, kTinyVocab, 41);
    const std::vector<uint32_t> rows = {5, 23};
    std::vector<std::vector<float>> per_threads[2];
    const unsigned counts[2] = {1, 3};
    for (int k = 0; k < 2; ++k) {
        Engine e = Engine::open(kTinyModel, options(64, counts[k]));
        const SequenceId s = e.create_sequence();
        Batch b;
        b.add(s, toks, rows);
        const Logits l = e.step(b);
        for (size_t i = 0; i < l.rows(); ++i) per_threads[k].push_back(row(l, i));
    }
    ASSERT_EQ(per_threads[0].size(), 2u);
    for (size_t i = 0; i < 2; ++i) EXPECT_TRUE(bit_equal(per_threads[0][i], per_threads[1][i])) << i;
}

TEST(EngineStep, ResetFreeAndReuse) {
    const std::vector<int32_t> toks = tokens(10, kTinyVocab, 51);
    Engine e = Engine::open(kTinyModel, options(64));
    const SequenceId s = e.create_sequence();
    Batch b;
    b.add(s, toks);
    const std::vector<float> fresh = row(e.step(b), 0);
    EXPECT_EQ(e.sequence_length(s), 10u);

    // Reset: back to zero tokens, same logits again.
    e.reset_sequence(s);
    EXPECT_EQ(e.sequence_length(s), 0u);
    EXPECT_TRUE(bit_equal(e.step(b).row(0), fresh));

    // Free, then a new sequence (reusing the freed state) behaves like a fresh one.
    e.free_sequence(s);
    EXPECT_EQ(e.sequence_count(), 0u);
    EXPECT_THROW(e.sequence_length(s), Error);
    const SequenceId t = e.create_sequence();
    EXPECT_NE(t, s);  // ids are never reused
    EXPECT_EQ(e.sequence_length(t), 0u);
    b.clear();
    b.add(t, toks);
    EXPECT_TRUE(bit_equal(e.step(b).row(0), fresh));
    EXPECT_EQ(e.sequence_count(), 1u);
}

TEST(EngineStep, EmptyBatchAndNoLogitsRows) {
    Engine e = Engine::open(kTinyModel, options(64));
    const SequenceId s = e.create_sequence();
    EXPECT_EQ(e.step(Batch{}).rows(), 0u);
    Batch b;
    b.add(s, tokens(4, kTinyVocab, 61), LogitsWanted::None);
    EXPECT_EQ(e.step(b).rows(), 0u);
    EXPECT_EQ(e.sequence_length(s), 4u);
}

TEST(EngineStep, ContextCanBeFilledExactly) {
    Engine e = Engine::open(kTinyModel, options(8));
    const SequenceId s = e.create_sequence();
    Batch b;
    b.add(s, tokens(8, kTinyVocab, 71));
    EXPECT_EQ(e.step(b).rows(), 1u);
    EXPECT_EQ(e.sequence_length(s), 8u);
}

TEST(EngineStep, GreedyDemoDecodeIsReproducible) {
    const std::vector<int32_t> prompt = tokens(6, 512, 81);
    std::vector<int32_t> runs[2];
    for (auto& out : runs) {
        Engine e = Engine::open(kDemoModel, options(64, 2));
        const SequenceId s = e.create_sequence();
        Batch b;
        b.add(s, prompt);
        Logits l = e.step(b);
        for (int i = 0; i < 6; ++i) {
            out.push_back(l.argmax(0));
            b.clear();
            b.add_token(s, out.back());
            e.step(b, l);
        }
    }
    EXPECT_EQ(runs[0], runs[1]);
}

}  // namespace
}  // namespace ds4::testing
