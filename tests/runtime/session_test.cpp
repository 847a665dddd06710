#include "ds4/session.h"

#include <gtest/gtest.h>

#include "ds4/error.h"
#include "session_test_util.h"

namespace ds4 {
namespace {

using test::cold_logits;
using test::concat;
using test::prefix;
using test::random_tokens;
using test::same_bits;
using test::tiny_engine;

// Small spacing so the 16-token window, the ratio-4 and the ratio-128 frontiers all get
// overwritten between checkpoints, and few of them so thinning happens.
SessionOptions small_checkpoints() {
    SessionOptions o;
    o.checkpoint_interval = 32;
    o.max_checkpoints = 4;
    o.prefill_chunk = 40;
    return o;
}

// Divergence points: inside the first window, right after it, mid ratio-4 block, right
// after a ratio-128 row, deep, one before the end, at the end (pure extension).
TEST(Session, PrefixReuseGivesColdRunLogits) {
    const std::vector<int32_t> base = random_tokens(1, 300);
    Session s(tiny_engine(), small_checkpoints());
    s.sync(base);
    ASSERT_TRUE(same_bits(s.logits(), cold_logits(base)));
    uint64_t seed = 100;
    for (uint64_t d : {3u, 10u, 17u, 66u, 129u, 250u, 299u, 300u}) {
        const std::vector<int32_t> prompt = concat(prefix(base, d), random_tokens(++seed, 20));
        const SyncStats st = s.sync(prompt);
        EXPECT_EQ(st.reused, d) << "d=" << d;
        EXPECT_LE(st.restored_from, d);
        const uint64_t kept = d == base.size() ? d : st.restored_from;  // 300: a pure extension
        EXPECT_EQ(st.evaluated, prompt.size() - kept) << "d=" << d;
        EXPECT_EQ(s.tokens(), prompt);
        EXPECT_TRUE(same_bits(s.logits(), cold_logits(prompt))) << "d=" << d;
        // And back to the base history (divergence at d again).
        s.sync(base);
        EXPECT_TRUE(same_bits(s.logits(), cold_logits(base))) << "back from d=" << d;
    }
}

// The defaults follow the engine's pass size (the CPU's 256 tokens): steps of 256 and a
// checkpoint at every multiple, plus the one where the sync ends (the context is 512).
TEST(Session, DefaultsTakeTheEnginesPassSize) {
    Engine& e = tiny_engine();
    EXPECT_EQ(e.pass_tokens(), 256u);
    Session s(e, SessionOptions{});
    const std::vector<int32_t> p = random_tokens(7, 500);
    const SyncStats st = s.sync(p);
    EXPECT_EQ(st.evaluated, 500u);
    EXPECT_EQ(s.checkpoint_lengths(), (std::vector<uint64_t>{256, 500}));
    EXPECT_TRUE(same_bits(s.logits(), cold_logits(p)));
}

TEST(Session, PureExtensionEvaluatesOnlyTheSuffix) {
    const std::vector<int32_t> a = random_tokens(2, 150);
    Session s(tiny_engine(), small_checkpoints());
    s.sync(prefix(a, 100));
    const SyncStats st = s.sync(a);
    EXPECT_EQ(st.reused, 100u);
    EXPECT_EQ(st.evaluated, 50u);
    EXPECT_EQ(st.replayed, 0u);
    EXPECT_TRUE(same_bits(s.logits(), cold_logits(a)));
    const SyncStats same = s.sync(a);
    EXPECT_EQ(same.evaluated, 0u);
}

// The checkpoint at the end of the last sync makes "drop what was generated after the
// prompt" free of replay.
TEST(Session, DivergenceAtTheLastSyncEndReplaysNothing) {
    const std::vector<int32_t> prompt = random_tokens(3, 90);
    Session s(tiny_engine(), small_checkpoints());
    s.sync(prompt);
    for (int32_t t : random_tokens(4, 25)) s.append(t);  // "generated"
    const std::vector<int32_t> next = concat(prompt, random_tokens(5, 10));
    const SyncStats st = s.sync(next);
    EXPECT_EQ(st.restored_from, 90u);
    EXPECT_EQ(st.replayed, 0u);
    EXPECT_EQ(st.evaluated, 10u);
    EXPECT_TRUE(same_bits(s.logits(), cold_logits(next)));
}

TEST(Session, AppendMatchesColdRunTokenByToken) {
    const std::vector<int32_t> a = random_tokens(6, 70);
    Session s(tiny_engine(), small_checkpoints());
    s.sync(prefix(a, 30));
    for (size_t i = 30; i < a.size(); ++i) s.append(a[i]);
    EXPECT_TRUE(same_bits(s.logits(), cold_logits(a)));
    EXPECT_EQ(s.tokens(), a);
}

TEST(Session, RewindReplaysToTheRightLogits) {
    const std::vector<int32_t> a = random_tokens(7, 200);
    Session s(tiny_engine(), small_checkpoints());
    s.sync(a);
    for (uint64_t n : {199u, 150u, 129u, 64u, 5u}) {
        const SyncStats st = s.rewind(n);
        ASSERT_EQ(s.size(), n);
        EXPECT_LT(st.restored_from, n);
        EXPECT_TRUE(same_bits(s.logits(), cold_logits(prefix(a, n)))) << "n=" << n;
    }
    s.sync(a);  // forward again from 5
    EXPECT_TRUE(same_bits(s.logits(), cold_logits(a)));
    s.rewind(0);
    EXPECT_EQ(s.size(), 0u);
    EXPECT_TRUE(s.logits().empty());
    EXPECT_THROW(s.rewind(1), Error);
}

TEST(Session, CheckpointsStayBoundedAndKeepTheNewest) {
    const std::vector<int32_t> a = random_tokens(8, 300);
    Session s(tiny_engine(), small_checkpoints());
    s.sync(a);
    const std::vector<uint64_t> lengths = s.checkpoint_lengths();
    ASSERT_EQ(lengths.size(), 4u);
    EXPECT_EQ(lengths.back(), 300u);  // the sync end
    EXPECT_TRUE(std::is_sorted(lengths.begin(), lengths.end()));
    EXPECT_GT(s.checkpoint_bytes(), 0u);
    // Without checkpoints going back replays from zero and is still exact.
    SessionOptions none = small_checkpoints();
    none.max_checkpoints = 0;
    Session z(tiny_engine(), none);
    z.sync(a);
    EXPECT_EQ(z.checkpoint_count(), 0u);
    const SyncStats st = z.sync(prefix(a, 250));
    EXPECT_EQ(st.restored_from, 0u);
    EXPECT_EQ(st.evaluated, 250u);
    EXPECT_TRUE(same_bits(z.logits(), cold_logits(prefix(a, 250))));
}

TEST(Session, ForkIsIndependent) {
    const std::vector<int32_t> a = random_tokens(9, 140);
    Session s(tiny_engine(), small_checkpoints());
    s.sync(a);
    Session f = s.fork();
    EXPECT_NE(f.sequence(), s.sequence());
    EXPECT_EQ(f.tokens(), a);
    const std::vector<int32_t> x = random_tokens(10, 12), y = random_tokens(11, 7);
    f.append(x);
    s.append(y);
    EXPECT_TRUE(same_bits(f.logits(), cold_logits(concat(a, x))));
    EXPECT_TRUE(same_bits(s.logits(), cold_logits(concat(a, y))));
    // The fork goes back behind the fork point on its own (it has no checkpoints yet).
    f.sync(prefix(a, 100));
    EXPECT_TRUE(same_bits(f.logits(), cold_logits(prefix(a, 100))));
    s.append(x);
    EXPECT_TRUE(same_bits(s.logits(), cold_logits(concat(concat(a, y), x))));
}

TEST(Session, SaveLoadContinuesBitIdentically) {
    const std::vector<int32_t> a = random_tokens(12, 180), tail = random_tokens(13, 30);
    Session s(tiny_engine(), small_checkpoints());
    s.sync(a);
    std::vector<uint8_t> payload;
    s.save(payload);
    Session r(tiny_engine(), small_checkpoints());
    r.load(payload);
    EXPECT_EQ(r.tokens(), a);
    EXPECT_TRUE(same_bits(r.logits(), s.logits()));
    r.append(tail);
    EXPECT_TRUE(same_bits(r.logits(), cold_logits(concat(a, tail))));
    // Diverging inside the loaded prefix restores the load-point checkpoint or replays.
    r.sync(concat(prefix(a, 170), tail));
    EXPECT_TRUE(same_bits(r.logits(), cold_logits(concat(prefix(a, 170), tail))));
    // A corrupt payload is rejected and leaves the session as it was.
    std::vector<uint8_t> bad = payload;
    bad[8] ^= 0xff;  // a header word
    const std::vector<int32_t> before = r.tokens();
    EXPECT_THROW(r.load(bad), Error);
    EXPECT_EQ(r.tokens(), before);
    r.append(tail[0]);
    EXPECT_TRUE(same_bits(r.logits(), cold_logits(concat(before, {tail[0]}))));
}

TEST(Session, EmptyPromptResetsAndOversizedPromptThrows) {
    Session s(tiny_engine(), small_checkpoints());
    s.sync(random_tokens(14, 20));
    s.sync({});
    EXPECT_EQ(s.size(), 0u);
    EXPECT_EQ(s.checkpoint_count(), 0u);
    EXPECT_THROW(s.sync(random_tokens(15, test::kSessionCtx + 1)), Error);
    const std::vector<int32_t> a = random_tokens(16, 10);
    s.sync(a);
    EXPECT_TRUE(same_bits(s.logits(), cold_logits(a)));
}

// ---- the engine API underneath ----

std::vector<float> step_logits(Engine& e, SequenceId seq, const std::vector<int32_t>& t) {
    Batch b;
    b.add(seq, t);
    const Logits out = e.step(b);
    return {out.row(0).begin(), out.row(0).end()};
}

TEST(EngineState, CheckpointRestoreIsBitExact) {
    Engine& e = tiny_engine();
    const std::vector<int32_t> a = random_tokens(20, 137), b = random_tokens(21, 50);
    const SequenceId seq = e.create_sequence();
    step_logits(e, seq, a);
    const SequenceCheckpoint cp = e.checkpoint(seq);
    EXPECT_EQ(cp.length(), 137u);
    EXPECT_EQ(cp.sequence(), seq);
    const std::vector<float> first = step_logits(e, seq, b);
    e.restore(seq, cp);
    EXPECT_EQ(e.sequence_length(seq), 137u);
    EXPECT_TRUE(same_bits(step_logits(e, seq, b), first));
    // Restorable again (the evaluation after it started at its length).
    EXPECT_TRUE(e.can_restore(seq, cp));
    e.free_sequence(seq);
}

TEST(EngineState, StaleOrForeignCheckpointsAreRejected) {
    Engine& e = tiny_engine();
    const std::vector<int32_t> a = random_tokens(22, 160);
    const SequenceId seq = e.create_sequence();
    step_logits(e, seq, prefix(a, 100));
    const SequenceCheckpoint at100 = e.checkpoint(seq);
    step_logits(e, seq, {a.begin() + 100, a.end()});
    const SequenceCheckpoint at160 = e.checkpoint(seq);
    // Going back without evaluating keeps the later one valid.
    e.restore(seq, at100);
    EXPECT_TRUE(e.can_restore(seq, at160));
    e.restore(seq, at160);
    e.restore(seq, at100);
    step_logits(e, seq, random_tokens(23, 40));  // rewrites positions 100..139
    EXPECT_FALSE(e.can_restore(seq, at160));
    EXPECT_THROW(e.restore(seq, at160), Error);
    EXPECT_EQ(e.sequence_length(seq), 140u);  // untouched by the failed restore
    EXPECT_TRUE(e.can_restore(seq, at100));
    const SequenceId other = e.create_sequence();
    EXPECT_FALSE(e.can_restore(other, at100));
    EXPECT_THROW(e.restore(other, at100), Error);
    EXPECT_THROW(e.restore(seq, SequenceCheckpoint{}), Error);
    e.reset_sequence(seq);
    EXPECT_FALSE(e.can_restore(seq, at100));
    e.free_sequence(seq);
    e.free_sequence(other);
}

TEST(EngineState, SaveLoadAndForkThroughTheEngine) {
    Engine& e = tiny_engine();
    const std::vector<int32_t> a = random_tokens(24, 131), b = random_tokens(25, 20);
    const SequenceId seq = e.create_sequence();
    const std::vector<float> last = step_logits(e, seq, a);
    std::vector<uint8_t> payload;
    e.save_sequence(seq, a, last, payload);
    EXPECT_EQ(payload.size(), e.sequence_payload_bytes(seq));
    const SequenceId loaded = e.create_sequence();
    const SequenceHistory h = e.load_sequence(loaded, payload);
    EXPECT_EQ(h.tokens, a);
    EXPECT_TRUE(same_bits(h.logits, last));
    const SequenceId forked = e.fork_sequence(seq);
    EXPECT_EQ(e.sequence_length(forked), 131u);
    const std::vector<float> want = cold_logits(concat(a, b));
    EXPECT_TRUE(same_bits(step_logits(e, loaded, b), want));
    EXPECT_TRUE(same_bits(step_logits(e, forked, b), want));
    EXPECT_TRUE(same_bits(step_logits(e, seq, b), want));
    // Truncated payloads are rejected before the sequence changes.
    payload.resize(payload.size() - 4);
    EXPECT_THROW(e.load_sequence(loaded, payload), Error);
    EXPECT_EQ(e.sequence_length(loaded), 151u);
    for (SequenceId s : {seq, loaded, forked}) e.free_sequence(s);
}

}  // namespace
}  // namespace ds4
