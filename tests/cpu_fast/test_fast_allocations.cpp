// Steady-state decode with Numerics::Fast must not touch the heap either: the quantized
// activations and the routed-expert scratch live in buffers that only grow. Global
// operator new is replaced to count allocations, hence a binary of its own.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "synth_model.h"

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
    g_allocations = 0;
    g_counting = true;
    for (uint32_t p = kWarm + 1; p < kTokens; ++p) fwd.eval(state, p, {m.tokens.data() + p, 1}, last, logits);
    g_counting = false;
    EXPECT_EQ(g_allocations.load(), 0u) << "heap allocations during " << kTokens - kWarm - 1 << " decode steps";
}

TEST(FastAllocations, CounterSeesAllocations) {
    static volatile size_t n = 100;  // volatile: the allocation cannot be elided
    g_allocations = 0;
    g_counting = true;
    std::vector<float> v(n);
    g_counting = false;
    EXPECT_EQ(g_allocations.load(), 1u);
}

TEST(FastAllocations, DecodeStepsAllocateNothing) { fast_decode_allocates_nothing(nullptr); }

TEST(FastAllocations, DecodeStepsWithThreadPoolAllocateNothing) {
    ThreadPool pool(2);
    fast_decode_allocates_nothing(&pool);
}

}  // namespace
}  // namespace ds4::cpu::test
