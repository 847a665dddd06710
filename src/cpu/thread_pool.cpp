#include "cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <utility>

namespace ds4::cpu {

namespace {

// Range `part` of `parts` equal-ish contiguous pieces of [0, n).
std::pair<uint64_t, uint64_t> part_range(uint64_t n, unsigned parts, unsigned part) {
    const uint64_t base = n / parts, extra = n % parts;
    const uint64_t begin = part * base + std::min<uint64_t>(part, extra);
    return {begin, begin + base + (part < extra ? 1 : 0)};
}

// One spin-wait step: tells the core (and an SMT sibling) that this is a busy-wait.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
}

// Polls `ready` for up to kSpinMicros; true when it held. After the first few µs each
// round of polling also yields, so a pool with more threads than free cores (a loaded
// machine) hands its core to the threads that have work instead of burning it.
template <typename Ready>
bool spin_until(const Ready& ready) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    const int window = ThreadPool::spin_micros();
    if (window == 0) return ready();
    const auto yield_after = start + std::chrono::microseconds(window / 10);
    const auto deadline = start + std::chrono::microseconds(window);
    for (;;) {
        for (int i = 0; i < 64; ++i) {
            if (ready()) return true;
            cpu_relax();
        }
        const auto now = Clock::now();
        if (now > deadline) return ready();
        if (now > yield_after) std::this_thread::yield();
    }
}

}  // namespace

int ThreadPool::spin_micros() {
    static const int window = [] {
        const char* env = std::getenv("DS4_POOL_SPIN_US");
        return env != nullptr && *env != '\0' ? std::max(0, std::atoi(env)) : kSpinMicros;
    }();
    return window;
}

ThreadPool::ThreadPool(unsigned n_threads) {
    const unsigned n_workers = n_threads > 1 ? n_threads - 1 : 0;
    workers_.reserve(n_workers);
    for (unsigned i = 0; i < n_workers; ++i) workers_.emplace_back([this, i] { worker_loop(i + 1); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard lock(mu_);
        stop_.store(true);
    }
    start_cv_.notify_all();
    for (auto& t : workers_) t.join();
}

// The next generation after `seen` (or `seen` itself once stop_ is set). The sleeper
// count and generation_ are sequentially consistent, so either the caller sees a worker
// that is going to sleep (and notifies under the mutex) or the worker sees the new
// generation before it waits.
uint64_t ThreadPool::wait_for_job(uint64_t seen) {
    const auto ready = [&] { return stop_.load() || generation_.load() != seen; };
    if (!spin_until(ready)) {
        std::unique_lock lock(mu_);
        sleepers_.fetch_add(1);
        start_cv_.wait(lock, ready);
        sleepers_.fetch_sub(1);
    }
    return generation_.load();
}

void ThreadPool::worker_loop(unsigned index) {
    uint64_t seen = 0;
    for (;;) {
        seen = wait_for_job(seen);
        if (stop_.load()) return;
        const RangeFn* job = job_;
        const uint64_t n = job_n_;
        const unsigned parts = job_parts_;
        if (index < parts) {
            try {
                const auto [b, e] = part_range(n, parts, index);
                (*job)(b, e);
            } catch (...) {
                std::lock_guard lock(mu_);
                if (!worker_error_) worker_error_ = std::current_exception();
            }
        }
        if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
            std::lock_guard lock(mu_);
            done_cv_.notify_one();
        }
    }
}

void ThreadPool::wait_until_done() {
    const auto done = [&] { return pending_.load() == 0; };
    if (spin_until(done)) return;
    std::unique_lock lock(mu_);
    caller_sleeping_.store(true);
    done_cv_.wait(lock, done);
    caller_sleeping_.store(false);
}

void ThreadPool::parallel_for(uint64_t n, uint64_t grain, const RangeFn& fn) {
    if (n == 0) return;
    const uint64_t by_grain = std::max<uint64_t>(1, n / std::max<uint64_t>(1, grain));
    const unsigned parts = static_cast<unsigned>(std::min<uint64_t>(size(), by_grain));
    if (parts <= 1) {
        fn(0, n);
        return;
    }
    job_ = &fn;
    job_n_ = n;
    job_parts_ = parts;
    pending_.store(static_cast<unsigned>(workers_.size()));
    generation_.fetch_add(1);
    if (sleepers_.load() > 0) {
        std::lock_guard lock(mu_);  // a worker between its check and its wait holds mu_
        start_cv_.notify_all();
    }
    // The caller runs part 0; an exception there must still wait for the workers,
    // which hold a pointer to fn.
    std::exception_ptr error;
    try {
        const auto [b, e] = part_range(n, parts, 0);
        fn(b, e);
    } catch (...) {
        error = std::current_exception();
    }
    wait_until_done();
    std::lock_guard lock(mu_);
    if (!error) error = std::exchange(worker_error_, nullptr);
    worker_error_ = nullptr;
    if (error) std::rethrow_exception(error);
}

void parallel_for(ThreadPool* pool, uint64_t n, uint64_t grain, const RangeFn& fn) {
    if (pool == nullptr) {
        if (n > 0) fn(0, n);
        return;
    }
    pool->parallel_for(n, grain, fn);
}

}  // namespace ds4::cpu
