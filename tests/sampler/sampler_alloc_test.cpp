// The sampler must not allocate per token once warmed up: count every global operator new
// in this binary and sample in a loop.
#include "ds4/sampler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>

namespace {
std::atomic<long> g_allocations{0};
}

// g++ 12 cannot see that these replacements pair malloc with free.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

void* operator new(std::size_t size) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(size ? size : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace ds4 {
namespace {

TEST(SamplerAllocation, SteadyStateSamplingDoesNotAllocate) {
    std::mt19937 gen(3);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<float> z(129280);
    for (float& v : z) v = normal(gen);
    std::vector<TokenLogprob> top;
    top.reserve(20);
    for (int top_k : {0, 40}) {
        for (float top_p : {1.0f, 0.9f}) {
            SamplingParams p;
            p.top_k = top_k;
            p.top_p = top_p;
            p.seed = 1;
            Sampler s(p);
            s.sample(z);  // sizes the scratch buffers
            s.top_logprobs(z, 20, top);
            const long before = g_allocations.load();
            long sum = 0;
            for (int i = 0; i < 50; ++i) {
                sum += s.sample(z);
                sum += s.sample(z, /*force_greedy=*/true);
                s.top_logprobs(z, 20, top);
                sum += static_cast<long>(s.logprob(z, 5) < 0);
            }
            EXPECT_EQ(g_allocations.load() - before, 0) << "top_k " << top_k << " top_p " << top_p;
            EXPECT_GT(sum, 0);
        }
    }
}

}  // namespace
}  // namespace ds4
