// ds4-bench-cpu: CPU forward-pass throughput against memory bandwidth.
//
//   ds4-bench-cpu                          generate /tmp/ds4-bench-cpu-L2.gguf (published
//                                          width, 2 layers, q2, fast random blocks) if absent
//   ds4-bench-cpu --model FILE.gguf        any ds4 GGUF instead
//
// 1. Read bandwidth, STREAM-style: every thread of the pool sums its share of a 1 GiB
//    buffer (64-bit integer adds, so the loop vectorizes and is load-bound); best of 5.
// 2. The model is mapped and every byte read once (page cache warm, as after a first
//    token), then: prefill of --prefill tokens as one chunk, and --decode single-token
//    steps after it; best of --reps runs (the state is reset between runs).
// 3. Weight bytes a decoded token reads: every 2-D/3-D dense tensor in full, the
//    n_expert_used selected experts' gate/up/down slabs per layer, one token_embd row
//    and one tid2eid row; 1-D tensors are copied to f32 at load and not counted. Decode
//    GB/s = those bytes × t/s; ratio = GB/s ÷ the read bandwidth.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/resource.h>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "cpu/matvec.h"
#include "ds4/error.h"
#include "gguf/gguf.h"
#include "maker.h"
#include "model/metadata.h"

namespace {

using namespace ds4;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU seconds (user + system) used so far by all threads of the process.
double process_cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    const auto tv = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) * 1e-6; };
    return tv(u.ru_utime) + tv(u.ru_stime);
}

uint64_t sum_words(const uint64_t* p, uint64_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (uint64_t i = 0; i + 4 <= n; i += 4) a += p[i], b += p[i + 1], c += p[i + 2], d += p[i + 3];
    return a + b + c + d;
}

struct Bandwidth {
    double wall_gbs = 0;  // best of 5, wall time
    double cpu_gbs = 0;   // same run, CPU time ÷ threads (what a quiet machine would give)
};

// Best-of-5 multi-threaded read bandwidth over a 1 GiB buffer, GB/s (1e9 bytes).
Bandwidth read_bandwidth(cpu::ThreadPool& pool) {
    constexpr uint64_t kWords = (uint64_t{1} << 30) / 8;
    std::vector<uint64_t> buf(kWords);
    std::iota(buf.begin(), buf.end(), uint64_t{1});
    const unsigned parts = pool.size();
    Bandwidth best;
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < 5; ++rep) {
        std::vector<uint64_t> sums(parts, 0);
        const auto t0 = Clock::now();
        const double cpu0 = process_cpu_seconds();
        cpu::parallel_for(&pool, parts, 1, [&](uint64_t b, uint64_t e) {
            for (uint64_t p = b; p < e; ++p) {
                const uint64_t lo = kWords / parts * p, hi = p + 1 == parts ? kWords : kWords / parts * (p + 1);
                sums[p] = sum_words(buf.data() + lo, hi - lo);
            }
        });
        const double s = seconds_since(t0), cpu = (process_cpu_seconds() - cpu0) / parts;
        sink = sink + std::accumulate(sums.begin(), sums.end(), uint64_t{0});
        if (double(kWords * 8) / s / 1e9 > best.wall_gbs) best = {double(kWords * 8) / s / 1e9, double(kWords * 8) / cpu / 1e9};
    }
    return best;
}

// Weight bytes one decoded token reads (see the file comment), by storage type.
std::map<std::string, uint64_t> decode_bytes_by_type(const gguf::File& f, const model::Hparams& hp) {
    std::map<std::string, uint64_t> total;
    for (const auto& t : f.tensors()) {
        const std::string_view name = t.name;
        if (t.n_dims == 1) continue;
        uint64_t b = t.n_bytes;
        if (name.find("_exps.") != std::string_view::npos)
            b = t.n_bytes / hp.n_expert * hp.n_expert_used;
        else if (name == "token_embd.weight" || name.find("ffn_gate_tid2eid") != std::string_view::npos)
            b = t.n_bytes / t.dims[t.n_dims - 1];
        total[ggml_type_name(t.ggml_type())] += b;
    }
    return total;
}

// Reads every mapped byte once so the timed runs find the weights in the page cache.
double touch_all(const gguf::File& f) {
    const auto t0 = Clock::now();
    const auto bytes = f.bytes();
    volatile uint64_t sink = 0;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < bytes.size(); i += 4096) acc += bytes[i];
    sink = acc;
    (void)sink;
    return seconds_since(t0);
}

std::string ensure_model(const std::string& path, uint32_t layers) {
    if (std::filesystem::exists(path)) return path;
    synth::MakeOptions opt;
    opt.shape = synth::shape_preset("published");
    opt.shape.n_layer = layers;
    opt.shape.compress_ratios = synth::default_ratios(layers);
    opt.shape.n_hash_layer = std::min(opt.shape.n_hash_layer, layers);
    opt.fast_blocks = true;
    opt.seed = 1;
    std::fprintf(stderr, "generating %s (published width, %u layers, q2, fast random blocks)...\n", path.c_str(),
                 layers);
    const auto r = synth::make_model(path, opt);
    std::fprintf(stderr, "  %.2f GB in %.1f s\n", double(r.file_bytes) / 1e9, r.seconds);
    return path;
}

struct Timings {
    double prefill_s = 1e30;  // one chunk
    double decode_s = 1e30;   // per token, mean of the decode steps of the best run
    double decode_cpu_s = 0;  // CPU seconds per token (all threads) of that run
};

Timings run(const cpu::CpuModel& model, cpu::ThreadPool& pool, uint32_t prefill, uint32_t decode, uint32_t reps) {
    const auto& hp = model.hparams();
    cpu::CpuForward fwd(model, &pool);
    cpu::KvState state(hp, prefill + decode + 1);
    std::vector<int32_t> tokens(prefill + decode);
    for (uint32_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7919u + 13u) % hp.n_vocab);
    std::vector<float> logits(hp.n_vocab);
    Timings best;
    for (uint32_t rep = 0; rep < reps; ++rep) {
        state.reset();
        const uint32_t last = prefill - 1;
        auto t0 = Clock::now();
        fwd.eval(state, 0, {tokens.data(), prefill}, {&last, 1}, logits);
        best.prefill_s = std::min(best.prefill_s, seconds_since(t0));
        const uint32_t row0 = 0;
        t0 = Clock::now();
        const double cpu0 = process_cpu_seconds();
        for (uint32_t i = 0; i < decode; ++i) fwd.eval(state, prefill + i, {tokens.data() + prefill + i, 1}, {&row0, 1}, logits);
        const double wall = seconds_since(t0) / decode;
        if (wall < best.decode_s) {
            best.decode_s = wall;
            best.decode_cpu_s = (process_cpu_seconds() - cpu0) / decode;
        }
    }
    return best;
}

struct Options {
    std::string model_path;
    uint32_t layers = 2, prefill = 64, decode = 16, reps = 3;
    unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    bool exact = false;
};

constexpr const char* kUsage =
    "usage: ds4-bench-cpu [--model FILE.gguf] [--layers N] [--prefill N] [--decode N]\n"
    "                     [--threads N] [--reps N] [--exact]\n"
    "  --model    ds4 GGUF to run (default: generate /tmp/ds4-bench-cpu-L<layers>.gguf)\n"
    "  --layers   layers of the generated model (default 2)\n"
    "  --prefill  prefill chunk length (default 64)\n"
    "  --decode   decode steps per run (default 16)\n"
    "  --threads  threads (default: all hardware threads)\n"
    "  --reps     runs, the best is reported (default 3)\n"
    "  --exact    Numerics::Exact (weights decoded to f32) instead of Fast\n";

bool parse_args(int argc, char** argv, Options& o) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        const auto number = [&](uint32_t& dst) {
            const long v = has_value ? std::strtol(argv[++i], nullptr, 10) : 0;
            if (v <= 0) return false;
            dst = static_cast<uint32_t>(v);
            return true;
        };
        bool ok = true;
        if (a == "--model" && has_value) o.model_path = argv[++i];
        else if (a == "--layers") ok = number(o.layers);
        else if (a == "--prefill") ok = number(o.prefill);
        else if (a == "--decode") ok = number(o.decode);
        else if (a == "--threads") ok = number(o.threads);
        else if (a == "--reps") ok = number(o.reps);
        else if (a == "--exact") o.exact = true;
        else ok = false;
        if (!ok) {
            std::fprintf(stderr, "ds4-bench-cpu: bad argument %s\n%s", a.c_str(), kUsage);
            return false;
        }
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    if (!parse_args(argc, argv, o)) return 2;
    try {
        const unsigned threads = o.threads;
        const bool exact = o.exact;
        cpu::ThreadPool pool(threads);
        const Bandwidth rb = read_bandwidth(pool);
        const double bw = rb.wall_gbs;
        std::printf("read bandwidth (%u threads, 1 GiB, best of 5): %.2f GB/s (%.2f GB/s by CPU time)\n", threads, bw,
                    rb.cpu_gbs);

        const std::string model_path =
            o.model_path.empty() ? ensure_model("/tmp/ds4-bench-cpu-L" + std::to_string(o.layers) + ".gguf", o.layers)
                                 : o.model_path;
        const gguf::File file = gguf::File::open(model_path);
        const model::Hparams hp = model::read_hparams(file);
        cpu::WeightSet ws;
        cpu::add_gguf_views(ws, file);
        const cpu::CpuModel model(hp, ws);
        std::printf("model %s: %u layers, n_embd %u, %.2f GB; page-cache warm-up %.1f s\n", model_path.c_str(),
                    hp.n_layer, hp.n_embd, double(file.size()) / 1e9, touch_all(file));

        cpu::NumericsScope scope(exact ? cpu::Numerics::Exact : cpu::Numerics::Fast);
        const Timings t = run(model, pool, o.prefill, o.decode, o.reps);
        const auto by_type = decode_bytes_by_type(file, hp);
        uint64_t bytes = 0;
        std::printf("decode weight bytes/token by type:");
        for (const auto& [type, b] : by_type) {
            std::printf(" %s %.1f MB", type.c_str(), double(b) / 1e6);
            bytes += b;
        }
        std::printf("\n");
        const double dec_tps = 1.0 / t.decode_s, gbs = double(bytes) * dec_tps / 1e9;
        std::printf("numerics: %s, threads %u, best of %u\n", exact ? "exact" : "fast", threads, o.reps);
        std::printf("prefill: %u tokens in %.3f s = %.2f t/s\n", o.prefill, t.prefill_s, o.prefill / t.prefill_s);
        std::printf("decode: %.1f ms/token = %.2f t/s (CPU time %.1f ms/token over all threads, i.e. %.1f ms/token "
                    "if the %u threads had the cores to themselves)\n",
                    t.decode_s * 1e3, dec_tps, t.decode_cpu_s * 1e3, t.decode_cpu_s * 1e3 / threads, threads);
        std::printf("decode weight bytes/token: %.1f MB -> %.2f GB/s = %.1f%% of read bandwidth\n", double(bytes) / 1e6,
                    gbs, 100.0 * gbs / bw);
        const double gbs_cpu = double(bytes) / (t.decode_cpu_s / threads) / 1e9;
        std::printf("by CPU time (load-independent estimate): %.2f GB/s = %.1f%% of the CPU-time read bandwidth\n",
                    gbs_cpu, 100.0 * gbs_cpu / rb.cpu_gbs);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ds4-bench-cpu: %s\n", e.what());
        return 1;
    }
}
