// Steady-state engine steps must not touch the heap: once a Batch and a Logits have been
// used, step(batch, logits) for decode tokens of several sequences allocates nothing.
// Global operator new is replaced to count allocations, hence a binary of its own.
#include <gtest/gtest.h>

#include <vector>

#include "../common/alloc_counter.h"
#include "ds4/engine.h"
#include "engine_test_util.h"

namespace ds4::testing {
namespace {

TEST(EngineAllocations, CounterSeesAllocations) {
    EXPECT_EQ(ds4::test::allocations_of_one_vector(), 1u);
}

TEST(EngineAllocations, BatchedDecodeStepsAllocateNothing) {
    Engine e = Engine::open(kTinyModel, options(128, 2));
    const SequenceId s[3] = {e.create_sequence(), e.create_sequence(), e.create_sequence()};
    Batch b;
    Logits l;
    // Warm-up: prefills of different lengths (past the window and the indexer top-k),
    // then one batched decode step to size every buffer.
    for (int i = 0; i < 3; ++i) {
        b.clear();
        b.add(s[i], tokens(20 + 10 * i, 320, i), LogitsWanted::None);
        e.step(b, l);
    }
    int32_t next[3] = {1, 2, 3};
    const auto decode_all = [&] {
        b.clear();
        for (int i = 0; i < 3; ++i) b.add_token(s[i], next[i]);
        e.step(b, l);
        for (int i = 0; i < 3; ++i) next[i] = l.argmax(static_cast<size_t>(i));
    };
    decode_all();
    ds4::test::AllocationCounter counter;
    for (int step = 0; step < 20; ++step) decode_all();
    EXPECT_EQ(counter.count(), 0u) << "heap allocations during 20 batched decode steps";
    EXPECT_EQ(e.sequence_length(s[2]), 40u + 21u);
}

}  // namespace
}  // namespace ds4::testing
