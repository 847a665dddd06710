// Steady-state decode with Numerics::Fast must not touch the heap either: the quantized
// activations and the routed-expert scratch live in buffers that only grow. Global
// operator new is replaced to count allocations, hence a binary of its own.
#include <gtest/gtest.h>

#include "../common/alloc_counter.h"
#include "synth_model.h"

namespace ds4::cpu::test {
namespace {

void fast_decode_allocates_nothing(ThreadPool* pool) {
    const SynthModel& m = synth_model();
    const auto& hp = m.model->hparams();
    NumericsScope fast(Numerics::Fast);
    KvState state(hp, kTokens);
    CpuForward fwd(*m.model, pool);
    std::vector<float> logits(hp.n_vocab);
    const std::vector<uint32_t> last{0};
    constexpr uint32_t kWarm = 8;  // a prefill chunk, then one decode step
    std::vector<uint32_t> rows(kWarm);
    std::iota(rows.begin(), rows.end(), 0u);
    std::vector<float> warm_logits(uint64_t{kWarm} * hp.n_vocab);
    fwd.eval(state, 0, {m.tokens.data(), kWarm}, rows, warm_logits);
    fwd.eval(state, kWarm, {m.tokens.data() + kWarm, 1}, last, logits);
    ds4::test::AllocationCounter counter;
    for (uint32_t p = kWarm + 1; p < kTokens; ++p)
        fwd.eval(state, p, {m.tokens.data() + p, 1}, last, logits);
    EXPECT_EQ(counter.count(), 0u)
        << "heap allocations during " << kTokens - kWarm - 1 << " decode steps";
}

TEST(FastAllocations, CounterSeesAllocations) {
    EXPECT_EQ(ds4::test::allocations_of_one_vector(), 1u);
}

TEST(FastAllocations, DecodeStepsAllocateNothing) {
    fast_decode_allocates_nothing(nullptr);
}

TEST(FastAllocations, DecodeStepsWithThreadPoolAllocateNothing) {
    ThreadPool pool(2);
    fast_decode_allocates_nothing(&pool);
}

}  // namespace
}  // namespace ds4::cpu::test
