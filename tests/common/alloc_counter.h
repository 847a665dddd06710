// Heap-allocation counting for "no allocation per token in steady state" tests.
//
// Including this header REPLACES the global operator new/delete of the binary, so it must
// be included by exactly one translation unit of a test binary that exists for this
// purpose alone (the replacement would otherwise count allocations of unrelated tests).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

namespace ds4::test {

inline std::atomic<bool> g_count_allocations{false};
inline std::atomic<uint64_t> g_allocation_count{0};

// Counts allocations made between construction and count() (or destruction).
class AllocationCounter {
  public:
    AllocationCounter() {
        g_allocation_count = 0;
        g_count_allocations = true;
    }
    ~AllocationCounter() { g_count_allocations = false; }
    AllocationCounter(const AllocationCounter&) = delete;
    AllocationCounter& operator=(const AllocationCounter&) = delete;

    // Stops counting and returns how many allocations were seen.
    uint64_t count() {
        g_count_allocations = false;
        return g_allocation_count.load();
    }
};

// Proves the replacement is live in this binary: one vector allocation must be seen.
inline uint64_t allocations_of_one_vector() {
    static volatile size_t n = 100;  // volatile: the allocation cannot be elided
    AllocationCounter counter;
    std::vector<float> v(n);
    const uint64_t seen = counter.count();
    return v.size() == n ? seen : 0;
}

}  // namespace ds4::test

// GCC flags free() in a replaced operator delete as mismatched with operator new once
// both are inlined into a caller; here they are a matched pair by construction.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
    if (ds4::test::g_count_allocations.load(std::memory_order_relaxed))
        ds4::test::g_allocation_count.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
#pragma GCC diagnostic pop
