// Steady-state decode must not touch the heap (DESIGN.md "No allocation per token in
// steady state"): global operator new is replaced here to count allocations made while a
// flag is set. This lives in its own test binary so the replacement affects nothing else.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "golden_runs.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_allocations{0};
}  // namespace

// GCC flags free() in a replaced operator delete as mismatched with operator new once
// both are inlined into a caller; here they are a matched pair by construction.
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

namespace ds4::cpu::test {
namespace {

void decode_steps_allocate_nothing(ThreadPool* pool) {
    const LoadedGolden& lg = loaded_golden("tiny_s1");
    const Golden& g = *lg.golden;
    KvState state(g.hp, g.T);
    CpuForward fwd(*lg.model, pool);
    std::vector<float> logits(g.hp.n_vocab);
    const std::vector<uint32_t> last{0};
    // warm-up: a prefill past the indexer threshold and the first ratio-128 row
    const uint32_t warm = 140;
    std::vector<uint32_t> rows(warm);
    std::vector<float> warm_logits(uint64_t{warm} * g.hp.n_vocab);
    for (uint32_t i = 0; i < warm; ++i) rows[i] = i;
    fwd.eval(state, 0, {g.tokens.data(), warm}, rows, warm_logits);
    fwd.eval(state, warm, {g.tokens.data() + warm, 1}, last, logits);
    g_allocations = 0;
    g_counting = true;
    for (uint32_t p = warm + 1; p < g.T; ++p) fwd.eval(state, p, {g.tokens.data() + p, 1}, last, logits);
    g_counting = false;
    EXPECT_EQ(g_allocations.load(), 0u) << "heap allocations during " << g.T - warm - 1 << " decode steps";
}

TEST(ForwardAllocations, CounterSeesAllocations) {
    static volatile size_t n = 100;  // volatile: the allocation cannot be elided
    g_allocations = 0;
    g_counting = true;
    std::vector<float> v(n);
    g_counting = false;
    EXPECT_EQ(g_allocations.load(), 1u);
    EXPECT_EQ(v.size(), 100u);
}

TEST(ForwardAllocations, DecodeStepsAllocateNothing) { decode_steps_allocate_nothing(nullptr); }

TEST(ForwardAllocations, DecodeStepsWithThreadPoolAllocateNothing) {
    ThreadPool pool(2);
    decode_steps_allocate_nothing(&pool);
}

}  // namespace
}  // namespace ds4::cpu::test
