// Logits' storage (ds4/engine.h, detail::LogitsAllocator): the heap by default, an
// engine's functions when it sets them (a CUDA engine: page-locked memory); the vector
// keeps its allocator through moves and copies, and a failed allocation is bad_alloc.
#include <gtest/gtest.h>

#include <cstdlib>
#include <new>
#include <utility>

#include "ds4/engine.h"

namespace ds4 {
namespace {

size_t g_allocs = 0, g_frees = 0, g_bytes = 0;
void* counting_alloc(size_t bytes) {
    ++g_allocs;
    g_bytes += bytes;
    return std::malloc(bytes);
}
void counting_free(void* p) {
    ++g_frees;
    std::free(p);
}
void* failing_alloc(size_t) {
    return nullptr;
}

using Alloc = detail::LogitsAllocator<float>;

TEST(LogitsAllocator, EngineFunctionsServeTheVectorThroughMoves) {
    g_allocs = g_frees = g_bytes = 0;
    const Alloc counting{counting_alloc, counting_free};
    {
        Logits::Values v(counting);
        v.resize(1000, 1.5f);
        EXPECT_EQ(g_allocs, 1u);
        EXPECT_GE(g_bytes, 1000 * sizeof(float));
        Logits::Values w;  // the heap
        EXPECT_FALSE(w.get_allocator() == counting);
        w = std::move(v);  // takes the counting allocator along
        EXPECT_TRUE(w.get_allocator() == counting);
        EXPECT_EQ(w[999], 1.5f);
        EXPECT_EQ(g_frees, 0u);
        const Logits::Values copy = w;  // a copy allocates from the same functions
        EXPECT_TRUE(copy.get_allocator() == counting);
        EXPECT_EQ(g_allocs, 2u);
        EXPECT_EQ(copy[0], 1.5f);
    }
    EXPECT_EQ(g_frees, 2u);
    EXPECT_EQ(g_allocs, 2u);
}

TEST(LogitsAllocator, DefaultIsTheHeapAndFailureIsBadAlloc) {
    Logits::Values heap;
    heap.resize(16, 2.0f);
    EXPECT_TRUE(heap.get_allocator() == Alloc{});
    Logits::Values failing(Alloc{failing_alloc, counting_free});
    EXPECT_THROW(failing.resize(8), std::bad_alloc);
    EXPECT_TRUE(failing.empty());
}

}  // namespace
}  // namespace ds4
