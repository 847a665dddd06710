// CUDA bandwidth bench: (1) the ceiling, a large device-to-device copy counting bytes
// read + written; (2) each weight type's matmul at decode shape (n_tok 1) and small
// batches, over a weight matrix far larger than L2, in GB/s of weight bytes read, and
// the ratio to the ceiling, for the exact path and (types matmul_q8 supports) the fast
// int8-activation path; (3) dense Q8_0 products of 16-2048 tokens, matvec against the
// int8 tensor-core kernel (matmul_mma.h), in TOP/s (`ds4-bench-cuda MIB mma`: this table
// only). Prints tables; times are medians of CUDA-event timings.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/device.h"
#include "cuda/kernels.h"
#include "cuda/matmul_mma.h"
#include "cuda/matmul_q8.h"
#include "gguf/ggml_types.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace {

using namespace ds4;
using namespace ds4::cuda;

constexpr int kReps = 25;

template <typename F>
float median_ms(F&& body, cudaStream_t s) {
    body();  // warm-up (module load, IQ2 tables)
    DS4_CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<float> ms;
    for (int i = 0; i < kReps; ++i) {
        Event a, b;
        a.record(s);
        body();
        b.record(s);
        b.sync();
        ms.push_back(b.ms_since(a));
    }
    std::nth_element(ms.begin(), ms.begin() + kReps / 2, ms.end());
    return ms[kReps / 2];
}

std::vector<float> pseudo_random(size_t n, uint32_t seed) {
    std::vector<float> v(n);
    uint32_t s = seed * 2654435761u + 1;
    for (float& x : v) {
        s = s * 1664525u + 1013904223u;
        x = static_cast<float>(s >> 8) / static_cast<float>(1u << 24) * 2.f - 1.f;
    }
    return v;
}

// A few real quantized rows (reference quantizers), tiled by doubling copies to fill
// `bytes`: valid block contents everywhere, no slow host quantization of gigabytes.
DeviceBuffer<uint8_t> tiled_weights(GgmlType t, uint64_t cols, uint64_t rows) {
    constexpr uint64_t kSeedRows = 16;
    const uint64_t rb = ggml_row_bytes(t, cols);
    std::vector<uint8_t> seed(kSeedRows * rb);
    const std::vector<float> w = pseudo_random(kSeedRows * cols, 7);
    for (uint64_t r = 0; r < kSeedRows; ++r) {
        const float* src = w.data() + r * cols;
        uint8_t* dst = seed.data() + r * rb;
        const auto n = static_cast<int64_t>(cols);
        switch (t) {
            case GgmlType::F32: std::memcpy(dst, src, rb); break;
            case GgmlType::F16:
                for (uint64_t i = 0; i < cols; ++i) reinterpret_cast<uint16_t*>(dst)[i] = quant::f32_to_f16(src[i]);
                break;
            case GgmlType::Q8_0: quant::ref::quantize_q8_0(src, reinterpret_cast<quant::BlockQ8_0*>(dst), n); break;
            case GgmlType::Q2_K:
                quant::ref::quantize_q2_K(src, reinterpret_cast<quant::BlockQ2K*>(dst), n, nullptr);
                break;
            case GgmlType::Q4_K:
                quant::ref::quantize_q4_K(src, reinterpret_cast<quant::BlockQ4K*>(dst), n, nullptr);
                break;
            case GgmlType::IQ2_XXS:
                quant::ref::quantize_iq2_xxs(src, reinterpret_cast<quant::BlockIQ2XXS*>(dst), n, nullptr);
                break;
            default: fail("bench: type ", ggml_type_name(t));
        }
    }
    DeviceBuffer<uint8_t> d(rows * rb);
    const uint64_t total = rows * rb;
    uint64_t filled = std::min<uint64_t>(seed.size(), total);
    DS4_CUDA_CHECK(cudaMemcpy(d.data(), seed.data(), filled, cudaMemcpyHostToDevice));
    while (filled < total) {
        const uint64_t n = std::min(filled, total - filled);
        DS4_CUDA_CHECK(cudaMemcpy(d.data() + filled, d.data(), n, cudaMemcpyDeviceToDevice));
        filled += n;
    }
    return d;
}

double copy_bandwidth_gbs(cudaStream_t s) {
    const size_t bytes = size_t{2} << 30;
    DeviceBuffer<uint8_t> a(bytes), b(bytes);
    a.fill_bytes(1);
    const float ms = median_ms(
        [&] { DS4_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, s)); }, s);
    return 2.0 * static_cast<double>(bytes) / (ms * 1e6);
}

// Decode-shaped expert products: one launch per expert matrix (the shapes of the routed
// experts, model.md), rotating over 256 experts so that no matrix is in L2 when its turn
// comes; 32 consecutive launches timed together, per launch = time / 32.
void expert_shapes(cudaStream_t s, double ceiling) {
    struct Case {
        GgmlType t;
        uint64_t rows, cols;
    };
    constexpr uint64_t kExperts = 256, kBurst = 32;
    std::printf("\nexpert-shaped, one launch per expert, %llu launches back to back (n_tok 1):\n",
                static_cast<unsigned long long>(kBurst));
    std::printf("%-8s %6s %6s %10s %9s %7s %10s %9s %7s\n", "type", "rows", "cols", "exact_us", "GB/s", "ratio",
                "fast_us", "GB/s", "ratio");
    for (const Case c : {Case{GgmlType::IQ2_XXS, 2048, 4096}, Case{GgmlType::Q2_K, 4096, 2048},
                         Case{GgmlType::Q4_K, 2048, 4096}, Case{GgmlType::Q4_K, 4096, 2048}}) {
        const uint64_t bytes = ggml_row_bytes(c.t, c.cols) * c.rows;
        DeviceBuffer<uint8_t> w = tiled_weights(c.t, c.cols, c.rows * kExperts);
        DeviceBuffer<float> x = to_device<float>(pseudo_random(c.cols, 5)), y(c.rows);
        DeviceBuffer<uint8_t> xq(q8_activation_bytes(c.cols, 1));
        quantize_q8_activations(x.data(), c.cols, c.cols, 1, xq.data(), s);
        uint64_t next = 0;
        const auto burst = [&](bool fast) {
            for (uint64_t i = 0; i < kBurst; ++i, next = (next + 1) % kExperts) {
                const uint8_t* we = w.data() + next * bytes;
                if (fast)
                    matmul_q8(c.t, we, c.rows, c.cols, xq.data(), 1, y.data(), c.rows, s);
                else
                    matmul(c.t, we, c.rows, c.cols, x.data(), c.cols, y.data(), c.rows, 1, s);
            }
        };
        const double us_exact = median_ms([&] { burst(false); }, s) * 1e3 / kBurst;
        const double us_fast = median_ms([&] { burst(true); }, s) * 1e3 / kBurst;
        const auto gbs = [&](double us) { return static_cast<double>(bytes) / (us * 1e3); };
        std::printf("%-8s %6llu %6llu %10.2f %9.0f %6.1f%% %10.2f %9.0f %6.1f%%\n", ggml_type_name(c.t).c_str(),
                    static_cast<unsigned long long>(c.rows), static_cast<unsigned long long>(c.cols), us_exact,
                    gbs(us_exact), 100 * gbs(us_exact) / ceiling, us_fast, gbs(us_fast), 100 * gbs(us_fast) / ceiling);
    }
}

// Multi-token dense Q8_0 products (prefill, large batches): the matvec kernel on repacked
// rows (matmul_q8r, 8 tokens per pass over the weights) against the int8 tensor-core
// kernel (matmul_q8r_mma; activations quantized beforehand, "+q" with the quantization
// timed in), in TOP/s of 2·rows·cols·n_tok and as a share of the card's dense int8
// peak (H100/H200 SXM: 1979 TOP/s, the datasheet figure for wgmma; mma.sync reaches less).
void mma_shapes(cudaStream_t s) {
    constexpr double kPeakTops = 1979;
    std::printf("\ndense Q8_0, many tokens: matvec (matmul_q8r) vs int8 mma (matmul_q8r_mma); TOP/s, %% of %.0f\n",
                kPeakTops);
    std::printf("%6s %6s %5s %10s %8s %10s %8s %7s %10s %8s\n", "rows", "cols", "ntok", "matvec_us", "TOP/s", "mma_us",
                "TOP/s", "peak", "mma+q_us", "speedup");
    struct Shape {
        uint64_t rows, cols;
    };
    for (const Shape sh : {Shape{4096, 4096}, Shape{1024, 4096}, Shape{4096, 8192}, Shape{32768, 1024}}) {
        DeviceBuffer<uint8_t> w = tiled_weights(GgmlType::Q8_0, sh.cols, sh.rows);
        q8r_repack(w.data(), sh.rows, sh.cols, s);
        constexpr uint32_t kMaxTok = 2048;
        DeviceBuffer<float> x = to_device<float>(pseudo_random(kMaxTok * sh.cols, 3)), y(kMaxTok * sh.rows);
        DeviceBuffer<uint8_t> xq(mma_activation_bytes(sh.cols, kMaxTok));
        for (const uint32_t n : {16u, 32u, 64u, 128u, 512u, 2048u}) {
            const double ops = 2.0 * static_cast<double>(sh.rows * sh.cols) * n;
            const float ms_v = median_ms(
                [&] { matmul_q8r(w.data(), sh.rows, sh.cols, x.data(), sh.cols, y.data(), sh.rows, n, s); }, s);
            quantize_mma_activations(x.data(), sh.cols, sh.cols, n, xq.data(), s);
            const float ms_m =
                median_ms([&] { matmul_q8r_mma(w.data(), sh.rows, sh.cols, xq.data(), n, y.data(), sh.rows, s); }, s);
            const float ms_q = median_ms(
                [&] {
                    quantize_mma_activations(x.data(), sh.cols, sh.cols, n, xq.data(), s);
                    matmul_q8r_mma(w.data(), sh.rows, sh.cols, xq.data(), n, y.data(), sh.rows, s);
                },
                s);
            const auto tops = [&](float ms) { return ops / (ms * 1e9); };
            std::printf("%6llu %6llu %5u %10.1f %8.1f %10.1f %8.1f %6.1f%% %10.1f %7.1fx\n",
                        static_cast<unsigned long long>(sh.rows), static_cast<unsigned long long>(sh.cols), n,
                        ms_v * 1e3, tops(ms_v), ms_m * 1e3, tops(ms_m), 100 * tops(ms_m) / kPeakTops, ms_q * 1e3,
                        ms_v / ms_q);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (device_count() == 0) {
            std::fprintf(stderr, "ds4-bench-cuda: no CUDA GPU\n");
            return 1;
        }
        const uint64_t target_bytes = (argc > 1 ? std::stoull(argv[1]) : 1024) << 20;  // MiB of weights
        const DeviceInfo info = device_info(0);
        std::printf("card: %s, %d SMs, %.1f GiB, L2 %zu MB\n", info.name.c_str(), info.sm_count,
                    static_cast<double>(info.total_bytes) / (1 << 30), info.l2_bytes >> 20);
        Stream stream;
        if (argc > 2 && std::string(argv[2]) == "mma") {  // ds4-bench-cuda MiB mma: the tensor-core table only
            mma_shapes(stream.get());
            return 0;
        }
        const double ceiling = copy_bandwidth_gbs(stream.get());
        std::printf("device-to-device copy (read+write): %.0f GB/s\n\n", ceiling);
        std::printf("exact: f32 activations (cuda::matmul); fast: int8 activations + dp4a (matmul_q8, the\n"
                    "activations quantized beforehand); fast+q: the quantization timed in.\n");
        std::printf("%-8s %6s %7s %5s %9s %9s %7s %9s %9s %7s %9s\n", "type", "cols", "rows", "ntok", "exact_us",
                    "GB/s", "ratio", "fast_us", "GB/s", "ratio", "fast+q");

        const GgmlType types[] = {GgmlType::IQ2_XXS, GgmlType::Q2_K, GgmlType::Q4_K,
                                  GgmlType::Q8_0,    GgmlType::F16,  GgmlType::F32};
        for (const GgmlType t : types) {
            for (const uint64_t cols : {uint64_t{4096}, uint64_t{2048}}) {
                const uint64_t rb = ggml_row_bytes(t, cols);
                const uint64_t rows = target_bytes / rb;
                DeviceBuffer<uint8_t> w = tiled_weights(t, cols, rows);
                const std::vector<float> xh = pseudo_random(8 * cols, 3);
                DeviceBuffer<float> x = to_device<float>(xh), y(8 * rows);
                DeviceBuffer<uint8_t> xq(q8_activation_bytes(cols, 8));
                const bool fast = matmul_q8_supported(t);
                for (const uint32_t n_tok : {1u, 2u, 4u, 8u}) {
                    const auto gbs = [&](float ms) { return static_cast<double>(w.bytes()) / (ms * 1e6); };
                    const float ms = median_ms(
                        [&] { matmul(t, w.data(), rows, cols, x.data(), cols, y.data(), rows, n_tok, stream.get()); },
                        stream.get());
                    std::printf("%-8s %6llu %7llu %5u %9.1f %9.0f %6.1f%%", ggml_type_name(t).c_str(),
                                static_cast<unsigned long long>(cols), static_cast<unsigned long long>(rows), n_tok,
                                ms * 1e3, gbs(ms), 100.0 * gbs(ms) / ceiling);
                    if (fast) {
                        quantize_q8_activations(x.data(), cols, cols, n_tok, xq.data(), stream.get());
                        const float ms_f = median_ms(
                            [&] { matmul_q8(t, w.data(), rows, cols, xq.data(), n_tok, y.data(), rows, stream.get()); },
                            stream.get());
                        const float ms_q = median_ms(
                            [&] {
                                matmul(t, w.data(), rows, cols, x.data(), cols, y.data(), rows, n_tok, stream.get(),
                                       MatmulPath::Fast, xq.data());
                            },
                            stream.get());
                        std::printf(" %9.1f %9.0f %6.1f%% %9.0f", ms_f * 1e3, gbs(ms_f), 100.0 * gbs(ms_f) / ceiling,
                                    gbs(ms_q));
                    }
                    std::printf("\n");
                }
            }
        }
        expert_shapes(stream.get(), ceiling);
        mma_shapes(stream.get());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ds4-bench-cuda: %s\n", e.what());
        return 1;
    }
}
