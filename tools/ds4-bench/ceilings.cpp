#include "ceilings.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <thread>
#include <vector>

#include "ds4/error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

#if defined(__x86_64__)
// The FMA kernel: the machine's f32 peak is what the quantized prefill kernels compete
// with, and the portable loop above reaches a fraction of it (no FMA contraction in ISO
// C++ mode, and -O2 leaves runtime-length loops scalar). A 4 × 16 register tile (8 ymm
// accumulators) over a packed 16-column panel of b (k-major, 512 × 16 × 4 B = 32 KiB:
// L1/L2-resident), a broadcast of a per row and k: 8 FMAs per 2 loads of b.
constexpr uint32_t kTileRows = 4, kTileCols = 16;

__attribute__((target("avx2,fma"))) void gemm_tile_fma(const float* a, const float* panel, float* c,
                                                       uint32_t n, uint32_t i0, uint32_t j0) {
    __m256 acc[kTileRows][2];
    for (auto& row : acc) row[0] = row[1] = _mm256_setzero_ps();
    for (uint32_t k = 0; k < n; ++k) {
        const __m256 b0 = _mm256_loadu_ps(panel + uint64_t{k} * kTileCols);
        const __m256 b1 = _mm256_loadu_ps(panel + uint64_t{k} * kTileCols + 8);
        for (uint32_t r = 0; r < kTileRows; ++r) {
            const __m256 av = _mm256_broadcast_ss(a + uint64_t{i0 + r} * n + k);
            acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
        }
    }
    for (uint32_t r = 0; r < kTileRows; ++r) {
        float* crow = c + uint64_t{i0 + r} * n + j0;
        _mm256_storeu_ps(crow, acc[r][0]);
        _mm256_storeu_ps(crow + 8, acc[r][1]);
    }
}

// Rows [r0, r1) of c = a × b with the FMA tile; n a multiple of 16, r1 − r0 of 4.
__attribute__((target("avx2,fma"))) void gemm_rows_fma(const float* a, const float* b, float* c,
                                                       uint32_t n, uint32_t r0, uint32_t r1) {
    std::vector<float> panel(uint64_t{n} * kTileCols);
    for (uint32_t j0 = 0; j0 < n; j0 += kTileCols) {
        for (uint32_t k = 0; k < n; ++k)
            std::copy_n(b + uint64_t{k} * n + j0, kTileCols,
                        panel.data() + uint64_t{k} * kTileCols);
        for (uint32_t i0 = r0; i0 < r1; i0 += kTileRows)
            gemm_tile_fma(a, panel.data(), c, n, i0, j0);
    }
}

bool has_fma() {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
bool has_fma() {
    return false;
}
void gemm_rows_fma(const float*, const float*, float*, uint32_t, uint32_t, uint32_t) {}
#endif

// A rate from a kernel that computes the wrong thing is no ceiling: spot-check entries
// (corners and the middle, so every thread's rows and both tile halves are covered).
void check_product(const std::vector<float>& a, const std::vector<float>& b,
                   const std::vector<float>& c, uint32_t n) {
    for (const uint32_t i : {0u, n / 2 + 1, n - 1})
        for (const uint32_t j : {0u, 9u, n / 2 + 3, n - 1}) {
            double want = 0;
            for (uint32_t k = 0; k < n; ++k)
                want += double(a[uint64_t{i} * n + k]) * double(b[uint64_t{k} * n + j]);
            const double got = c[uint64_t{i} * n + j];
            if (std::abs(got - want) > 1e-4 * std::max(1.0, std::abs(want)))
                fail(cat("GEMM ceiling kernel (", gemm_kernel_name(), ") computed c[", i, "][", j,
                         "] = ", got, ", expected ", want));
        }
}

}  // namespace

const char* gemm_kernel_name() {
    return has_fma() ? "avx2+fma 4x16 register tile" : "portable blocked loop";
}

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
    const bool fma = has_fma();
    if (fma) n = std::max<uint32_t>(64, n / 64 * 64);  // whole tiles for every thread's rows
    // Row split in whole tiles (the last thread takes the remainder).
    const uint32_t unit = fma ? kTileRows : 1;
    const uint32_t units = n / unit;
    const uint64_t nn = uint64_t{n} * n;
    std::vector<float> a(nn), b(nn), c(nn);
    for (uint64_t i = 0; i < nn; ++i) a[i] = float(i % 7) * 0.25f, b[i] = float(i % 5) * 0.5f;
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
        std::fill(c.begin(), c.end(), 0.0f);
        const auto t0 = Clock::now();
        run_parts(threads, [&](unsigned p) {
            const uint32_t lo = units / threads * p * unit,
                           hi = p + 1 == threads ? n : units / threads * (p + 1) * unit;
            if (fma)
                gemm_rows_fma(a.data(), b.data(), c.data(), n, lo, hi);
            else
                gemm_rows(a.data(), b.data(), c.data(), n, lo, hi);
        });
        best = std::max(best, 2.0 * double(nn) * n / seconds_since(t0) / 1e9);
    }
    check_product(a, b, c, n);
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
