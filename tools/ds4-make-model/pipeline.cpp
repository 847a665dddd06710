// Parallel work over an index range (see pipeline.h).
#include "pipeline.h"

#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

namespace ds4::synth {

void run_parallel(size_t n, unsigned threads, const std::function<void(size_t)>& work) {
    std::atomic<size_t> next{0};
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::exception_ptr error;
    const auto worker = [&] {
        for (;;) {
            const size_t i = next.fetch_add(1);
            if (i >= n || stop.load()) return;
            try {
                work(i);
            } catch (...) {
                std::lock_guard lk(mu);
                if (!error) error = std::current_exception();
                stop = true;
                return;
            }
        }
    };
    {
        std::vector<std::jthread> pool;
        for (unsigned t = 0; t < (threads ? threads : 1); ++t) pool.emplace_back(worker);
    }  // join
    if (error) std::rethrow_exception(error);
}

}  // namespace ds4::synth
