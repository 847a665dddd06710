// Ordered producer pipeline (see pipeline.h).
#include "pipeline.h"

#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

namespace ds4::synth {

namespace {

class OrderedPipeline {
  public:
    OrderedPipeline(size_t n, size_t window, const std::function<Bytes(size_t)>& produce)
        : n_(n), window_(window ? window : 1), produce_(produce) {}

    void worker() {
        for (;;) {
            size_t i;
            {
                std::unique_lock lk(mu_);
                space_.wait(lk,
                            [&] { return stop_ || next_ >= n_ || next_ < consumed_ + window_; });
                if (stop_ || next_ >= n_) return;
                i = next_++;
            }
            Bytes b;
            try {
                b = produce_(i);
            } catch (...) {
                abort(std::current_exception());
                return;
            }
            {
                std::lock_guard lk(mu_);
                done_.emplace(i, std::move(b));
            }
            ready_.notify_all();
        }
    }

    // Blocks until item i is produced; false when a worker failed.
    bool take(size_t i, Bytes& out) {
        std::unique_lock lk(mu_);
        ready_.wait(lk, [&] { return error_ || done_.count(i) != 0; });
        if (error_) return false;
        auto it = done_.find(i);
        out = std::move(it->second);
        done_.erase(it);
        return true;
    }

    void mark_consumed(size_t i) {
        {
            std::lock_guard lk(mu_);
            consumed_ = i + 1;
        }
        space_.notify_all();
    }

    void abort(std::exception_ptr e) {
        {
            std::lock_guard lk(mu_);
            if (e && !error_) error_ = e;
            stop_ = true;
        }
        space_.notify_all();
        ready_.notify_all();
    }

    std::exception_ptr error() {
        std::lock_guard lk(mu_);
        return error_;
    }

  private:
    const size_t n_;
    const size_t window_;
    const std::function<Bytes(size_t)>& produce_;
    std::mutex mu_;
    std::condition_variable ready_;  // an item was produced (or a worker failed)
    std::condition_variable space_;  // the consumer advanced (or the pipeline stops)
    std::map<size_t, Bytes> done_;
    size_t next_ = 0;
    size_t consumed_ = 0;
    bool stop_ = false;
    std::exception_ptr error_;
};

}  // namespace

void run_ordered(size_t n, unsigned threads, size_t window,
                 const std::function<Bytes(size_t)>& produce,
                 const std::function<void(size_t, Bytes&&)>& consume) {
    OrderedPipeline p(n, window, produce);
    std::vector<std::jthread> pool;
    for (unsigned t = 0; t < (threads ? threads : 1); ++t) pool.emplace_back([&p] { p.worker(); });
    try {
        Bytes b;
        for (size_t i = 0; i < n && p.take(i, b); ++i) {
            consume(i, std::move(b));
            p.mark_consumed(i);
        }
    } catch (...) {
        p.abort(std::current_exception());
    }
    p.abort(nullptr);  // release workers waiting for space (normal end included)
    pool.clear();      // join
    if (std::exception_ptr e = p.error()) std::rethrow_exception(e);
}

}  // namespace ds4::synth
