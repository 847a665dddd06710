#include "cpu/thread_pool.h"

#include <algorithm>
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

}  // namespace

ThreadPool::ThreadPool(unsigned n_threads) {
    const unsigned n_workers = n_threads > 1 ? n_threads - 1 : 0;
    workers_.reserve(n_workers);
    for (unsigned i = 0; i < n_workers; ++i) workers_.emplace_back([this, i] { worker_loop(i + 1); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    start_cv_.notify_all();
    for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(unsigned index) {
    uint64_t seen = 0;
    for (;;) {
        const RangeFn* job;
        uint64_t n;
        unsigned parts;
        {
            std::unique_lock lock(mu_);
            start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            job = job_;
            n = job_n_;
            parts = job_parts_;
        }
        std::exception_ptr error;
        if (index < parts) {
            try {
                const auto [b, e] = part_range(n, parts, index);
                (*job)(b, e);
            } catch (...) {
                error = std::current_exception();
            }
        }
        {
            std::lock_guard lock(mu_);
            if (error && !worker_error_) worker_error_ = error;
            if (--pending_ == 0) done_cv_.notify_one();
        }
    }
}

void ThreadPool::parallel_for(uint64_t n, uint64_t grain, const RangeFn& fn) {
    if (n == 0) return;
    const uint64_t by_grain = std::max<uint64_t>(1, n / std::max<uint64_t>(1, grain));
    const unsigned parts = static_cast<unsigned>(std::min<uint64_t>(size(), by_grain));
    if (parts <= 1) {
        fn(0, n);
        return;
    }
    {
        std::lock_guard lock(mu_);
        job_ = &fn;
        job_n_ = n;
        job_parts_ = parts;
        pending_ = static_cast<unsigned>(workers_.size());
        ++generation_;
    }
    start_cv_.notify_all();
    // The caller runs part 0; an exception there must still wait for the workers,
    // which hold a pointer to fn.
    std::exception_ptr error;
    try {
        const auto [b, e] = part_range(n, parts, 0);
        fn(b, e);
    } catch (...) {
        error = std::current_exception();
    }
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
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
