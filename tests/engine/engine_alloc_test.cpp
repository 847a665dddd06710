// Steady-state engine steps must not touch the heap: once a Batch and a Logits have been
// used, step(batch, logits) for decode tokens of several sequences allocates nothing.
// Global operator new is replaced to count allocations, hence a binary of its own.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "ds4/engine.h"
#include "engine_test_util.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_allocations{0};
}  // namespace

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
    if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace ds4::testing {
namespace {

TEST(EngineAllocations, CounterSeesAllocations) {
    static volatile size_t n = 100;  // volatile: the allocation cannot be elided
    g_allocations = 0;
    g_counting = true;
    std::vector<float> v(n);
    g_counting = false;
    EXPECT_EQ(g_allocations.load(), 1u);
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
    g_allocations = 0;
    g_counting = true;
    for (int step = 0; step < 20; ++step) decode_all();
    g_counting = false;
    EXPECT_EQ(g_allocations.load(), 0u) << "heap allocations during 20 batched decode steps";
    EXPECT_EQ(e.sequence_length(s[2]), 40u + 21u);
}

}  // namespace
}  // namespace ds4::testing
