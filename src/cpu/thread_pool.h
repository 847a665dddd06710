// A small fork-join pool for the CPU forward pass: parallel_for splits [0, n) into
// contiguous ranges, runs them on the workers and the calling thread, and returns when
// all are done. Every output element is computed by exactly one thread with the same
// code as in a single-threaded run, so results do not depend on the thread count.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace ds4::cpu {

// A non-owning reference to a callable `void(uint64_t begin, uint64_t end)`: unlike
// std::function it never allocates, so the per-token parallel loops stay allocation-free.
// The referenced callable must outlive the call it is passed to.
class RangeFn {
public:
    template <typename F>
        requires(!std::is_same_v<std::decay_t<F>, RangeFn>)
    RangeFn(const F& f)  // NOLINT: implicit on purpose, call sites pass lambdas
        : obj_(&f), call_([](const void* o, uint64_t b, uint64_t e) { (*static_cast<const F*>(o))(b, e); }) {}
    void operator()(uint64_t b, uint64_t e) const { call_(obj_, b, e); }

private:
    const void* obj_;
    void (*call_)(const void*, uint64_t, uint64_t);
};

// Hand-offs spin first: a worker that has finished its range polls for the next job
// for up to kSpinMicros before it blocks on a condition variable, and the calling thread
// polls for the workers' completion the same way. A decode step runs a few dozen short
// parallel loops per layer with little serial work in between, and a futex wake-up per
// loop and thread (tens of µs each in a VM or sandbox) measured as ~30 % of the 16-thread
// decode time. Idle pools still sleep. DS4_POOL_SPIN_US overrides the spin window
// (0: block at once, the pre-spinning behaviour; for A/B runs).
class ThreadPool {
public:
    // n_threads counts the calling thread; 1 (or 0) means no workers.
    explicit ThreadPool(unsigned n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    unsigned size() const { return static_cast<unsigned>(workers_.size()) + 1; }

    // Runs fn over [0, n) in at most size() ranges of at least `grain` items each.
    // Not reentrant: fn must not call parallel_for on the same pool.
    void parallel_for(uint64_t n, uint64_t grain, const RangeFn& fn);

    static constexpr int kSpinMicros = 200;  // default spin window
    static int spin_micros();                 // kSpinMicros or DS4_POOL_SPIN_US

private:
    void worker_loop(unsigned index);
    uint64_t wait_for_job(uint64_t seen);
    void wait_until_done();

    std::vector<std::thread> workers_;
    std::mutex mu_;
    std::condition_variable start_cv_, done_cv_;
    // The job: written by the calling thread before generation_ is bumped (release),
    // read by the workers after they see the new generation (acquire).
    const RangeFn* job_ = nullptr;
    uint64_t job_n_ = 0;
    unsigned job_parts_ = 0;
    std::atomic<uint64_t> generation_{0};
    std::atomic<unsigned> pending_{0};         // workers still running this job
    std::atomic<unsigned> sleepers_{0};        // workers blocked (or about to) on start_cv_
    std::atomic<bool> caller_sleeping_{false};  // the caller blocked on done_cv_
    std::atomic<bool> stop_{false};
    std::exception_ptr worker_error_;  // first exception thrown by a worker's range (under mu_)
};

// parallel_for on `pool`, or a plain call fn(0, n) when pool is null.
void parallel_for(ThreadPool* pool, uint64_t n, uint64_t grain, const RangeFn& fn);

}  // namespace ds4::cpu
