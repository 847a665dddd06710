// ds4-bench-quant: throughput of the quant kernels (dequantize and matvec dots; for
// Q8_0 also "matvec4", the multi-row kernel kDotRows rows per call) per weight type
// and ISA, in GB/s of weight bytes and as a ratio to the memory copy bandwidth measured
// by the same binary at start-up (STREAM convention: a copy of B bytes moves 2·B bytes).
//
// Shapes: 2048 rows × 4096 (one routed-expert gate/up matrix; a matvec = one dot per
// row) for every type, and 32768 rows × 4096 (a quarter of the output head) for Q8_0
// and F16. "hot" repeats one matrix (cache-resident when it fits the LLC), "cold"
// rotates through 512 MiB of copies so weights stream from DRAM as they do in decode,
// where every token touches different experts; "l2" repeats 32 rows (≤ 288 KiB, inside
// any L2) to show the kernels' compute throughput. Threads split the rows.
//
// Single-thread cases report CPU time (so a shared, loaded machine still measures the
// kernel); multi-thread cases report wall time.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gguf/ggml_types.h"
#include "quant/kernels.h"
#include "quant/scalars.h"

namespace ds4::quant::bench {
namespace {

// ---- memory -----------------------------------------------------------------------

// Page-aligned, zero-initialised buffer (the zeroing also faults every page in, so
// first-touch costs stay out of the timed loops).
class Buffer {
public:
    explicit Buffer(size_t bytes) : bytes_(bytes), data_(static_cast<uint8_t*>(std::aligned_alloc(4096, round_up(bytes)))) {
        if (!data_) throw std::bad_alloc();
        std::memset(data_.get(), 0, round_up(bytes));
    }
    uint8_t* data() { return data_.get(); }
    const uint8_t* data() const { return data_.get(); }
    size_t size() const { return bytes_; }

private:
    static size_t round_up(size_t b) { return (b + 4095) / 4096 * 4096; }
    struct Free {
        void operator()(uint8_t* p) const { std::free(p); }
    };
    size_t bytes_;
    std::unique_ptr<uint8_t, Free> data_;
};

// ---- a small persistent thread pool over row ranges --------------------------------

class RowPool {
public:
    explicit RowPool(int threads) : threads_(threads), start_(threads), done_(threads) {
        for (int t = 1; t < threads_; ++t) workers_.emplace_back([this, t] { worker(t); });
    }
    RowPool(const RowPool&) = delete;
    RowPool& operator=(const RowPool&) = delete;
    ~RowPool() {
        stop_ = true;
        if (threads_ > 1) start_.arrive_and_wait();
        for (auto& w : workers_) w.join();
    }
    int threads() const { return threads_; }

    using Job = std::function<void(int thread, int64_t begin, int64_t end)>;

    // fn(t, begin, end) on `threads` contiguous slices of [0, rows); returns when all are done.
    void run(int64_t rows, const Job& fn) {
        if (threads_ == 1) return fn(0, 0, rows);
        job_ = &fn;
        rows_ = rows;
        start_.arrive_and_wait();
        slice(0);
        done_.arrive_and_wait();
    }

private:
    void slice(int t) const {
        const int64_t begin = rows_ * t / threads_, end = rows_ * (t + 1) / threads_;
        (*job_)(t, begin, end);
    }
    void worker(int t) {
        for (;;) {
            start_.arrive_and_wait();
            if (stop_) return;
            slice(t);
            done_.arrive_and_wait();
        }
    }

    int threads_;
    std::barrier<> start_, done_;
    std::vector<std::thread> workers_;
    const Job* job_ = nullptr;
    int64_t rows_ = 0;
    bool stop_ = false;
};

int max_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

// ---- copy bandwidth ---------------------------------------------------------------

constexpr size_t kCopyBytes = size_t{1} << 30;

struct CopyBuffers {
    Buffer src{kCopyBytes};
    Buffer dst{kCopyBytes};
};
CopyBuffers& copy_buffers() {
    static CopyBuffers b;
    return b;
}

// One pass of the 1 GiB copy, each thread copying its contiguous share.
void copy_pass(RowPool& pool) {
    CopyBuffers& b = copy_buffers();
    const size_t chunk = kCopyBytes / static_cast<size_t>(pool.threads());
    pool.run(pool.threads(), [&](int, int64_t lo, int64_t hi) {
        for (int64_t t = lo; t < hi; ++t) {
            std::memcpy(b.dst.data() + static_cast<size_t>(t) * chunk, b.src.data() + static_cast<size_t>(t) * chunk, chunk);
        }
    });
}

// Seconds of this thread's CPU time (single-thread figures) or of wall time.
double now_s(bool cpu_time) {
    if (cpu_time) {
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of `reps` 1 GiB memcpy passes split over `threads`, STREAM-counted (2 bytes per
// byte copied), in GB/s; timed like the kernels (CPU time on one thread, else wall).
double copy_gbps(int threads, int reps) {
    std::memset(copy_buffers().src.data(), 1, kCopyBytes);
    RowPool pool(threads);
    copy_pass(pool);  // warm-up
    double best = 0;
    for (int r = 0; r < reps; ++r) {
        const double t0 = now_s(threads == 1);
        copy_pass(pool);
        best = std::max(best, 2.0 * kCopyBytes / (now_s(threads == 1) - t0) / 1e9);
    }
    return best;
}

struct CopyBandwidth {
    double single = 0;
    double multi = 0;
};
CopyBandwidth g_copy;

void bm_copy(benchmark::State& state, int threads) {
    RowPool pool(threads);
    for (auto _ : state) {
        copy_pass(pool);
        benchmark::ClobberMemory();
    }
    state.counters["GBps"] =
        benchmark::Counter(2.0 * kCopyBytes * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

// STREAM triad a = b + s·c over three 256 Mi-float arrays (12 bytes per element).
void bm_triad(benchmark::State& state, int threads) {
    constexpr size_t kN = size_t{1} << 26;
    static Buffer a(kN * 4), b(kN * 4), c(kN * 4);
    auto* pa = reinterpret_cast<float*>(a.data());
    const auto* pb = reinterpret_cast<const float*>(b.data());
    const auto* pc = reinterpret_cast<const float*>(c.data());
    RowPool pool(threads);
    for (auto _ : state) {
        pool.run(static_cast<int64_t>(kN), [&](int, int64_t lo, int64_t hi) {
            for (int64_t i = lo; i < hi; ++i) pa[i] = pb[i] + 3.f * pc[i];
        });
        benchmark::ClobberMemory();
    }
    state.counters["GBps"] =
        benchmark::Counter(12.0 * kN * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

// ---- weights ------------------------------------------------------------------------

struct Shape {
    int64_t rows;
    int64_t cols;
};

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// One row of plausible data for `t`: random codes, f16 scales in [1e-3, 1e-1], F16
// values in (−1, 1) (no NaN/inf/denormal slow paths).
std::vector<uint8_t> random_row(GgmlType t, int64_t cols, uint64_t seed) {
    std::vector<uint8_t> row(ggml_row_bytes(t, static_cast<uint64_t>(cols)));
    for (auto& b : row) b = static_cast<uint8_t>(splitmix(seed));
    auto scale = [&] { return f32_to_f16(1e-3f + 1e-1f * static_cast<float>(splitmix(seed) % 1000) / 1000.f); };
    auto set_u16 = [&](size_t off, uint16_t v) { std::memcpy(row.data() + off, &v, 2); };
    switch (t) {
        case GgmlType::F16:
            for (int64_t i = 0; i < cols; ++i) {
                set_u16(2 * static_cast<size_t>(i),
                        f32_to_f16(static_cast<float>(splitmix(seed) % 2001) / 1000.f - 1.f));
            }
            break;
        case GgmlType::Q8_0:
            // codes within ±127 as the Q8_0 quantizer writes them (a −128 would send the
            // row through the dots' exact fallback path)
            for (size_t b = 0; b < row.size(); b += sizeof(BlockQ8_0)) {
                set_u16(b + offsetof(BlockQ8_0, d), scale());
                for (size_t i = 0; i < QK8_0; ++i) {
                    uint8_t& q = row[b + offsetof(BlockQ8_0, qs) + i];
                    if (q == 0x80) q = 0x81;
                }
            }
            break;
        case GgmlType::Q2_K:
            for (size_t b = 0; b < row.size(); b += sizeof(BlockQ2K)) {
                set_u16(b + offsetof(BlockQ2K, d), scale());
                set_u16(b + offsetof(BlockQ2K, dmin), scale());
            }
            break;
        case GgmlType::Q4_K:
            for (size_t b = 0; b < row.size(); b += sizeof(BlockQ4K)) {
                set_u16(b + offsetof(BlockQ4K, d), scale());
                set_u16(b + offsetof(BlockQ4K, dmin), scale());
            }
            break;
        case GgmlType::IQ2_XXS:
            for (size_t b = 0; b < row.size(); b += sizeof(BlockIQ2XXS)) set_u16(b + offsetof(BlockIQ2XXS, d), scale());
            break;
        default: break;
    }
    return row;
}

// `copies` back-to-back matrices of `shape`, built from 64 distinct random rows.
struct Weights {
    GgmlType type;
    Shape shape;
    size_t row_bytes;
    size_t matrix_bytes;
    int64_t copies;
    Buffer data;
    const uint8_t* matrix(int64_t i) const { return data.data() + static_cast<size_t>(i % copies) * matrix_bytes; }
};

constexpr size_t kColdPoolBytes = size_t{512} << 20;

const Weights& weights(GgmlType t, Shape shape, bool cold) {
    static std::unique_ptr<Weights> cached;  // one at a time: the pools are large
    const size_t row_bytes = ggml_row_bytes(t, static_cast<uint64_t>(shape.cols));
    const size_t matrix_bytes = row_bytes * static_cast<size_t>(shape.rows);
    const int64_t copies = cold ? static_cast<int64_t>(std::max<size_t>(1, kColdPoolBytes / matrix_bytes)) : 1;
    if (cached && cached->type == t && cached->shape.rows == shape.rows && cached->shape.cols == shape.cols &&
        cached->copies == copies) {
        return *cached;
    }
    cached.reset();
    cached = std::make_unique<Weights>(Weights{t, shape, row_bytes, matrix_bytes, copies,
                                               Buffer(matrix_bytes * static_cast<size_t>(copies))});
    std::vector<std::vector<uint8_t>> rows;
    for (uint64_t r = 0; r < 64; ++r) rows.push_back(random_row(t, shape.cols, 1234 + r));
    for (int64_t r = 0; r < shape.rows * copies; ++r) {
        std::memcpy(cached->data.data() + static_cast<size_t>(r) * row_bytes, rows[static_cast<size_t>(r % 64)].data(),
                    row_bytes);
    }
    return *cached;
}

// ---- activations ------------------------------------------------------------------

struct Activations {
    std::vector<float> f32;
    std::vector<BlockQ8K> q8_K;
    std::vector<BlockQ8_0F> q8_0f;
    explicit Activations(int64_t n) : f32(static_cast<size_t>(n)), q8_K(static_cast<size_t>(n / QK_K)), q8_0f(static_cast<size_t>(n / QK8_0)) {
        uint64_t s = 99;
        for (float& v : f32) v = static_cast<float>(splitmix(s) % 20001) / 10000.f - 1.f;
        best_kernels().quantize_q8_K(f32.data(), q8_K.data(), n);
        best_kernels().quantize_q8_0f(f32.data(), q8_0f.data(), n);
    }
};

// ---- the measured work ------------------------------------------------------------

// y[r] = dot(row r, x) for r in [r0, r1).
void matvec_rows(const Kernels& k, GgmlType t, const uint8_t* w, size_t row_bytes, const Activations& x, float* y,
                 int64_t cols, int64_t r0, int64_t r1) {
    auto row = [&](int64_t r) { return w + static_cast<size_t>(r) * row_bytes; };
    switch (t) {
        case GgmlType::Q8_0:
            for (int64_t r = r0; r < r1; ++r)
                y[r] = k.dot_q8_0_q8_0f(reinterpret_cast<const BlockQ8_0*>(row(r)), x.q8_0f.data(), cols);
            break;
        case GgmlType::Q2_K:
            for (int64_t r = r0; r < r1; ++r)
                y[r] = k.dot_q2_K_q8_K(reinterpret_cast<const BlockQ2K*>(row(r)), x.q8_K.data(), cols);
            break;
        case GgmlType::Q4_K:
            for (int64_t r = r0; r < r1; ++r)
                y[r] = k.dot_q4_K_q8_K(reinterpret_cast<const BlockQ4K*>(row(r)), x.q8_K.data(), cols);
            break;
        case GgmlType::IQ2_XXS:
            for (int64_t r = r0; r < r1; ++r)
                y[r] = k.dot_iq2_xxs_q8_K(reinterpret_cast<const BlockIQ2XXS*>(row(r)), x.q8_K.data(), cols);
            break;
        case GgmlType::F16:
            for (int64_t r = r0; r < r1; ++r)
                y[r] = k.dot_f16_f32(reinterpret_cast<const uint16_t*>(row(r)), x.f32.data(), cols);
            break;
        default: break;
    }
}

// Q8_0 only: y[r] for r in [r0, r1), kDotRows rows per call of the multi-row kernel
// (single-row dots for the remainder).
void matvec_rows_multi(const Kernels& k, const uint8_t* w, size_t row_bytes, const Activations& x, float* y,
                       int64_t cols, int64_t r0, int64_t r1) {
    auto row = [&](int64_t r) { return reinterpret_cast<const BlockQ8_0*>(w + static_cast<size_t>(r) * row_bytes); };
    int64_t r = r0;
    for (; r + kDotRows <= r1; r += kDotRows) {
        const BlockQ8_0* rows[kDotRows];
        for (int i = 0; i < kDotRows; ++i) rows[i] = row(r + i);
        k.dot_q8_0_q8_0f_rows(rows, x.q8_0f.data(), cols, y + r);
    }
    for (; r < r1; ++r) y[r] = k.dot_q8_0_q8_0f(row(r), x.q8_0f.data(), cols);
}

// Dequantizes rows [r0, r1) into one row-sized buffer (L1-resident), keeping a checksum.
float dequant_rows(const Kernels& k, GgmlType t, const uint8_t* w, size_t row_bytes, float* buf, int64_t cols,
                   int64_t r0, int64_t r1) {
    float check = 0;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* p = w + static_cast<size_t>(r) * row_bytes;
        switch (t) {
            case GgmlType::Q8_0: k.dequant_q8_0(reinterpret_cast<const BlockQ8_0*>(p), buf, cols); break;
            case GgmlType::Q2_K: k.dequant_q2_K(reinterpret_cast<const BlockQ2K*>(p), buf, cols); break;
            case GgmlType::Q4_K: k.dequant_q4_K(reinterpret_cast<const BlockQ4K*>(p), buf, cols); break;
            case GgmlType::IQ2_XXS: k.dequant_iq2_xxs(reinterpret_cast<const BlockIQ2XXS*>(p), buf, cols); break;
            case GgmlType::F16: k.dequant_f16(reinterpret_cast<const uint16_t*>(p), buf, cols); break;
            default: break;
        }
        check += buf[r % cols];
    }
    return check;
}

enum class Op { Matvec, MatvecRows, Dequant };

struct KernelCase {
    Op op;
    GgmlType type;
    const Kernels* kernels;
    Shape shape;
    bool cold;
    int threads;
};

void bm_kernel(benchmark::State& state, KernelCase c) {
    const Weights& w = weights(c.type, c.shape, c.cold);
    const Activations x(c.shape.cols);
    std::vector<float> y(static_cast<size_t>(c.shape.rows));
    std::vector<std::vector<float>> bufs(static_cast<size_t>(c.threads), std::vector<float>(static_cast<size_t>(c.shape.cols)));
    RowPool pool(c.threads);
    int64_t next = 0;
    for (auto _ : state) {
        const uint8_t* m = w.matrix(next++);
        if (c.op == Op::Matvec) {
            pool.run(c.shape.rows, [&](int, int64_t r0, int64_t r1) {
                matvec_rows(*c.kernels, c.type, m, w.row_bytes, x, y.data(), c.shape.cols, r0, r1);
            });
            benchmark::DoNotOptimize(y.data());
        } else if (c.op == Op::MatvecRows) {
            pool.run(c.shape.rows, [&](int, int64_t r0, int64_t r1) {
                matvec_rows_multi(*c.kernels, m, w.row_bytes, x, y.data(), c.shape.cols, r0, r1);
            });
            benchmark::DoNotOptimize(y.data());
        } else {
            pool.run(c.shape.rows, [&](int t, int64_t r0, int64_t r1) {
                float check = dequant_rows(*c.kernels, c.type, m, w.row_bytes, bufs[static_cast<size_t>(t)].data(),
                                           c.shape.cols, r0, r1);
                benchmark::DoNotOptimize(check);
            });
        }
        benchmark::ClobberMemory();
    }
    const double gb = static_cast<double>(w.matrix_bytes) * static_cast<double>(state.iterations()) / 1e9;
    const double copy = c.threads == 1 ? g_copy.single : g_copy.multi;
    state.counters["GBps"] = benchmark::Counter(gb, benchmark::Counter::kIsRate);
    state.counters["ratio_to_copy"] = benchmark::Counter(gb / copy, benchmark::Counter::kIsRate);
    state.counters["rows_per_us"] =
        benchmark::Counter(static_cast<double>(c.shape.rows) * static_cast<double>(state.iterations()) / 1e6,
                           benchmark::Counter::kIsRate);
}

void register_all() {
    const int mt = max_threads();
    std::vector<int> thread_counts = {1};
    if (mt > 1) thread_counts.push_back(mt);
    for (int t : thread_counts) {
        const std::string suffix = "/threads:" + std::to_string(t);
        auto* copy = benchmark::RegisterBenchmark(("copy_1GiB" + suffix).c_str(), bm_copy, t);
        auto* triad = benchmark::RegisterBenchmark(("triad_768MiB" + suffix).c_str(), bm_triad, t);
        for (auto* b : {copy, triad}) {
            b->Unit(benchmark::kMillisecond);
            if (t > 1) b->UseRealTime();
        }
    }
    const GgmlType types[] = {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS, GgmlType::F16};
    for (GgmlType type : types) {
        std::vector<std::pair<Shape, bool>> cases = {{{32, 4096}, false}, {{2048, 4096}, false}, {{2048, 4096}, true}};
        if (type == GgmlType::Q8_0 || type == GgmlType::F16) cases.push_back({{32768, 4096}, false});
        for (const auto& [shape, cold] : cases) {
            for (Op op : {Op::Matvec, Op::MatvecRows, Op::Dequant}) {
                if (op == Op::MatvecRows && type != GgmlType::Q8_0) continue;
                for (const Kernels* k : available_kernels()) {
                    for (int t : thread_counts) {
                        const char* mode = shape.rows > 2048 ? "dram" : shape.rows < 2048 ? "l2" : cold ? "cold" : "hot";
                        const char* op_name = op == Op::Matvec ? "matvec/" : op == Op::MatvecRows ? "matvec4/" : "dequant/";
                        const std::string name = std::string(op_name) +
                                                 ggml_type_name(type) + "/" + isa_name(k->isa) + "/" +
                                                 std::to_string(shape.rows) + "x" + std::to_string(shape.cols) + "/" +
                                                 mode + "/threads:" +
                                                 std::to_string(t);
                        auto* b = benchmark::RegisterBenchmark(name.c_str(), bm_kernel,
                                                               KernelCase{op, type, k, shape, cold, t});
                        b->Unit(benchmark::kMicrosecond);
                        if (t > 1) b->UseRealTime();
                    }
                }
            }
        }
    }
}

}  // namespace
}  // namespace ds4::quant::bench

int main(int argc, char** argv) {
    using namespace ds4::quant::bench;
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    g_copy.single = copy_gbps(1, 3);
    g_copy.multi = copy_gbps(max_threads(), 3);
    std::fprintf(stderr, "reference copy bandwidth (1 GiB memcpy, best of 3, read+write counted): %.2f GB/s on 1 "
                         "thread (CPU time), %.2f GB/s on %d threads (wall); best kernels: %s\n",
                 g_copy.single, g_copy.multi, max_threads(), ds4::quant::isa_name(ds4::quant::best_kernels().isa));
    benchmark::AddCustomContext("copy_GBps_1thread", std::to_string(g_copy.single));
    benchmark::AddCustomContext("copy_GBps_" + std::to_string(max_threads()) + "threads", std::to_string(g_copy.multi));
    register_all();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
