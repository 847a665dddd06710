// Steady-state decode must not touch the heap (DESIGN.md "No allocation per token in
// steady state"): global operator new is replaced here to count allocations made while a
// flag is set. This lives in its own test binary so the replacement affects nothing else.
#include <gtest/gtest.h>

#include "../common/alloc_counter.h"
#include "golden_runs.h"

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
    ds4::test::AllocationCounter counter;
    for (uint32_t p = warm + 1; p < g.T; ++p)
        fwd.eval(state, p, {g.tokens.data() + p, 1}, last, logits);
    EXPECT_EQ(counter.count(), 0u)
        << "heap allocations during " << g.T - warm - 1 << " decode steps";
}

TEST(ForwardAllocations, CounterSeesAllocations) {
    EXPECT_EQ(ds4::test::allocations_of_one_vector(), 1u);
}

TEST(ForwardAllocations, DecodeStepsAllocateNothing) {
    decode_steps_allocate_nothing(nullptr);
}

TEST(ForwardAllocations, DecodeStepsWithThreadPoolAllocateNothing) {
    ThreadPool pool(2);
    decode_steps_allocate_nothing(&pool);
}

}  // namespace
}  // namespace ds4::cpu::test
