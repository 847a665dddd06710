#include "ceilings.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <thread>
#include <vector>

namespace ds4::bench {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs body(part) for part in [0, parts) on `parts` threads (the caller runs part 0).
template <class F>
void run_parts(unsigned parts, F&& body) {
    std::vector<std::jthread> workers;
    workers.reserve(parts - 1);
    for (unsigned p = 1; p < parts; ++p) workers.emplace_back([&body, p] { body(p); });
    body(0);
}

uint64_t sum_words(const uint64_t* p, uint64_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) a += p[i], b += p[i + 1], c += p[i + 2], d += p[i + 3];
    for (; i < n; ++i) a += p[i];
    return a + b + c + d;
}

// c[rows] += a[rows] × b for one block of rows; the k-then-j order keeps the inner loop
// a contiguous axpy the compiler vectorizes.
void gemm_rows(const float* __restrict a, const float* __restrict b, float* __restrict c,
               uint32_t n, uint32_t r0, uint32_t r1) {
    constexpr uint32_t kBlock = 64;
    for (uint32_t kk = 0; kk < n; kk += kBlock)
        for (uint32_t i = r0; i < r1; ++i)
            for (uint32_t k = kk; k < std::min(n, kk + kBlock); ++k) {
                const float aik = a[uint64_t{i} * n + k];
                const float* __restrict brow = b + uint64_t{k} * n;
                float* __restrict crow = c + uint64_t{i} * n;
                for (uint32_t j = 0; j < n; ++j) crow[j] += aik * brow[j];
            }
}

}  // namespace

double read_bandwidth_gbs(unsigned threads, uint64_t bytes, int reps) {
    threads = std::max(1u, threads);
    const uint64_t words = std::max<uint64_t>(bytes / 8, threads * 4);
    std::vector<uint64_t> buf(words);
    std::iota(buf.begin(), buf.end(), uint64_t{1});
    std::vector<uint64_t> sums(threads);
    double best = 0;
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < reps; ++rep) {
        const auto t0 = Clock::now();
        run_parts(threads, [&](unsigned p) {
            const uint64_t lo = words / threads * p,
                           hi = p + 1 == threads ? words : words / threads * (p + 1);
            sums[p] = sum_words(buf.data() + lo, hi - lo);
        });
        const double s = seconds_since(t0);
        sink = sink + std::accumulate(sums.begin(), sums.end(), uint64_t{0});
        best = std::max(best, double(words * 8) / s / 1e9);
    }
    return best;
}

double gemm_gflops(unsigned threads, uint32_t n) {
    threads = std::max(1u, threads);
    const uint64_t nn = uint64_t{n} * n;
    std::vector<float> a(nn), b(nn), c(nn);
    for (uint64_t i = 0; i < nn; ++i) a[i] = float(i % 7) * 0.25f, b[i] = float(i % 5) * 0.5f;
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
        std::fill(c.begin(), c.end(), 0.0f);
        const auto t0 = Clock::now();
        run_parts(threads, [&](unsigned p) {
            gemm_rows(a.data(), b.data(), c.data(), n, n / threads * p,
                      p + 1 == threads ? n : n / threads * (p + 1));
        });
        best = std::max(best, 2.0 * double(nn) * n / seconds_since(t0) / 1e9);
    }
    return best;
}

Ceilings measure_ceilings(unsigned threads, uint64_t read_bytes) {
    Ceilings c;
    c.threads = std::max(1u, threads);
    c.read_bytes = read_bytes;
    c.read_gbs = read_bandwidth_gbs(c.threads, read_bytes);
    c.gemm_gflops = gemm_gflops(c.threads);
    return c;
}

}  // namespace ds4::bench
