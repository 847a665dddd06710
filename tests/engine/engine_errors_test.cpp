// step() and the sequence calls reject bad input with a message naming the sequence and
// the limit, and a rejected batch modifies nothing (not even its valid entries).
#include <gtest/gtest.h>

#include "ds4/engine.h"
#include "ds4/error.h"
#include "engine_test_util.h"

namespace ds4::testing {
namespace {

class EngineErrors : public ::testing::Test {
  protected:
    void SetUp() override {
        a = engine.create_sequence();
        b = engine.create_sequence();
        Batch p;
        p.add(a, tokens(3, 320, 1), LogitsWanted::None);
        engine.step(p);
        reference.add_token(a, 5);
    }

    // Runs a batch of a valid entry for `a` followed by `bad`'s entries; expects a
    // ds4::Error containing every `parts` and nothing changed.
    void expect_rejected(const Batch& batch, std::initializer_list<std::string_view> parts) {
        try {
            engine.step(batch);
            ADD_FAILURE() << "step did not throw";
        } catch (const Error& e) {
            const std::string msg = e.what();
            for (std::string_view p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << " lacks " << p;
        }
        EXPECT_EQ(engine.sequence_length(a), 3u);
        EXPECT_EQ(engine.sequence_length(b), 0u);
        // a still continues exactly as if nothing had been attempted.
        Engine fresh = Engine::open(kTinyModel, options(16));
        const SequenceId s = fresh.create_sequence();
        Batch p;
        p.add(s, tokens(3, 320, 1), LogitsWanted::None);
        fresh.step(p);
        p.clear();
        p.add_token(s, 5);
        const std::vector<float> want = row(fresh.step(p), 0);
        EXPECT_TRUE(bit_equal(engine.step(reference).row(0), want));
    }

    Batch with_valid_first() {
        Batch batch;
        batch.add_token(a, 9);
        return batch;
    }

    Engine engine = Engine::open(kTinyModel, options(16));
    SequenceId a = 0, b = 0;
    Batch reference;
};

TEST_F(EngineErrors, UnknownSequence) {
    Batch batch = with_valid_first();
    batch.add_token(999, 1);
    expect_rejected(batch, {"unknown sequence 999"});
}

TEST_F(EngineErrors, FreedSequence) {
    const SequenceId c = engine.create_sequence();
    engine.free_sequence(c);
    Batch batch = with_valid_first();
    batch.add_token(c, 1);
    expect_rejected(batch, {"unknown sequence " + std::to_string(c)});
    EXPECT_THROW(engine.free_sequence(c), Error);
    EXPECT_THROW(engine.reset_sequence(c), Error);
}

TEST_F(EngineErrors, SameSequenceTwice) {
    Batch batch = with_valid_first();
    batch.add_token(a, 2);
    expect_rejected(batch, {"sequence " + std::to_string(a), "more than once"});
}

TEST_F(EngineErrors, NegativeTokenId) {
    Batch batch = with_valid_first();
    const int32_t t[] = {4, -1};
    batch.add(b, t);
    expect_rejected(batch, {"sequence " + std::to_string(b), "token id -1", "chunk index 1", "[0, 320)"});
}

TEST_F(EngineErrors, TokenIdAtVocabSize) {
    Batch batch = with_valid_first();
    batch.add_token(b, 320);
    expect_rejected(batch, {"sequence " + std::to_string(b), "token id 320", "[0, 320)"});
}

TEST_F(EngineErrors, EmptyChunk) {
    Batch batch = with_valid_first();
    batch.add(b, std::span<const int32_t>{}, LogitsWanted::None);
    expect_rejected(batch, {"sequence " + std::to_string(b), "empty token chunk"});
}

TEST_F(EngineErrors, LogitsIndexOutsideChunk) {
    Batch batch = with_valid_first();
    const int32_t t[] = {1, 2};
    const uint32_t rows[] = {2};
    batch.add(b, t, rows);
    expect_rejected(batch, {"sequence " + std::to_string(b), "logits index 2", "chunk of 2 tokens"});
}

TEST_F(EngineErrors, LogitsIndicesNotIncreasing) {
    Batch batch = with_valid_first();
    const int32_t t[] = {1, 2, 3};
    const uint32_t rows[] = {1, 1};
    batch.add(b, t, rows);
    expect_rejected(batch, {"sequence " + std::to_string(b), "increasing"});
}

TEST_F(EngineErrors, ContextOverflow) {
    Batch batch = with_valid_first();
    batch.add(b, tokens(17, 320, 2));
    expect_rejected(batch, {"sequence " + std::to_string(b), "17 tokens at position 0",
                            "context size 16"});
}

TEST_F(EngineErrors, ContextOverflowAfterHistory) {
    Batch batch;
    batch.add(a, tokens(14, 320, 3));  // a holds 3: 3 + 14 > 16
    expect_rejected(batch, {"sequence " + std::to_string(a), "14 tokens at position 3",
                            "context size 16", "room for 13"});
}

}  // namespace
}  // namespace ds4::testing
