// ThreadPool: every index runs exactly once whatever the thread count and the gaps
// between jobs (spinning hand-offs and the sleeping fallback), and exceptions from a
// worker's or the caller's range reach the caller.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cpu/thread_pool.h"

namespace ds4::cpu::test {
namespace {

// Runs one job over [0, n) and checks each index was visited once.
void expect_each_index_once(ThreadPool& pool, uint64_t n, uint64_t grain) {
    std::vector<std::atomic<int>> hits(n);
    parallel_for(&pool, n, grain, [&](uint64_t b, uint64_t e) {
        for (uint64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i << " of " << n;
}

TEST(ThreadPool, BackToBackJobsVisitEveryIndexOnce) {
    for (unsigned threads : {1u, 2u, 3u, 8u}) {
        ThreadPool pool(threads);
        for (int rep = 0; rep < 300; ++rep) expect_each_index_once(pool, 1 + rep % 97, 1 + rep % 5);
    }
}

// Gaps longer than the spin window: the workers fall back to sleeping and must still
// wake for every job.
TEST(ThreadPool, JobsAfterIdleGapsWakeSleepingWorkers) {
    ThreadPool pool(4);
    for (int rep = 0; rep < 20; ++rep) {
        std::this_thread::sleep_for(std::chrono::microseconds(rep % 2 ? 3 * ThreadPool::kSpinMicros : 10));
        expect_each_index_once(pool, 64, 1);
    }
}

TEST(ThreadPool, UsesAllThreadsForLargeJobs) {
    ThreadPool pool(4);
    std::atomic<int> ranges{0};
    parallel_for(&pool, 1000, 1, [&](uint64_t, uint64_t) { ranges.fetch_add(1); });
    EXPECT_EQ(ranges.load(), 4);
    ranges = 0;
    parallel_for(&pool, 1000, 400, [&](uint64_t, uint64_t) { ranges.fetch_add(1); });  // grain caps it at 2
    EXPECT_EQ(ranges.load(), 2);
}

TEST(ThreadPool, ExceptionsReachTheCaller) {
    ThreadPool pool(3);
    // the last range runs on a worker, the first on the caller
    EXPECT_THROW(parallel_for(&pool, 30, 1,
                              [&](uint64_t b, uint64_t) {
                                  if (b >= 20) throw std::runtime_error("worker");
                              }),
                 std::runtime_error);
    EXPECT_THROW(parallel_for(&pool, 30, 1,
                              [&](uint64_t b, uint64_t) {
                                  if (b == 0) throw std::runtime_error("caller");
                              }),
                 std::runtime_error);
    expect_each_index_once(pool, 30, 1);  // the pool still works afterwards
}

TEST(ThreadPool, NullPoolRunsInline) {
    uint64_t seen_b = 1, seen_e = 0;
    parallel_for(nullptr, 7, 1, [&](uint64_t b, uint64_t e) { seen_b = b, seen_e = e; });
    EXPECT_EQ(seen_b, 0u);
    EXPECT_EQ(seen_e, 7u);
}

}  // namespace
}  // namespace ds4::cpu::test
