// ds4-bench-cuda-forward MODEL [PROMPT_TOKENS] [DECODE_TOKENS] [BATCH...]: times the
// engine's CUDA backend on a GGUF: one prefill of PROMPT_TOKENS (default 512), then
// DECODE_TOKENS (default 64) greedy decode steps at batch 1; then for each BATCH, that
// many sequences (64-token prompts, prefilled in one step) decoding together for
// DECODE_TOKENS steps (aggregate tokens/s). Prints tokens/s and ms per token and per
// layer. A smoke benchmark for scripts/gpu-check.sh, not ds4-bench's frontier method.
// DS4_TRACE_DECODE=N prints the kernel timeline of the last N batch-1 decode steps.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include <cuda_profiler_api.h>

#include <memory>

#include "cuda/device.h"
#include "ds4/engine.h"
#include "ds4/error.h"
#include "cuda/kernel_trace.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// FNV-1a over the bytes of v, from h.
uint64_t fnv1a(std::span<const float> v, uint64_t h) {
    const auto* p = reinterpret_cast<const unsigned char*>(v.data());
    for (size_t i = 0; i < v.size_bytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

int run(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL [PROMPT_TOKENS] [DECODE_TOKENS]\n", argv[0]);
        return 2;
    }
    const std::string path = argv[1];
    const uint32_t n_prompt = argc > 2 ? static_cast<uint32_t>(std::stoul(argv[2])) : 512;
    const uint32_t n_decode = argc > 3 ? static_cast<uint32_t>(std::stoul(argv[3])) : 64;
    const ds4::cuda::DeviceInfo dev = ds4::cuda::device_info(0);
    ds4::EngineOptions opt;
    opt.backend = ds4::Backend::Cuda;
    opt.ctx = std::max(n_prompt, 64u) + n_decode + 8;
    auto t0 = std::chrono::steady_clock::now();
    ds4::Engine eng = ds4::Engine::open(path, opt);
    const double open_s = seconds_since(t0);
    const ds4::ModelSummary& m = eng.model();
    std::printf("card %s (%d SMs), model %s: %u layers, D %u, vocab %u, %s; open + upload %.1f s\n", dev.name.c_str(),
                dev.sm_count, m.name.c_str(), m.n_layer, m.n_embd, m.n_vocab, m.quant.c_str(), open_s);

    const char* fast = std::getenv("DS4_CUDA_FAST_EXPERTS");
    std::printf("routed experts: %s\n", fast != nullptr && std::string(fast) == "1"
                                             ? "fast int8 path (DS4_CUDA_FAST_EXPERTS=1)"
                                             : "exact path");
    std::vector<int32_t> prompt(n_prompt);
    for (uint32_t i = 0; i < n_prompt; ++i) prompt[i] = static_cast<int32_t>((i * 7919u + 13u) % m.n_vocab);
    const ds4::SequenceId seq = eng.create_sequence();
    ds4::Batch b;
    // warm-up on a second sequence (kernel loads, scratch growth)
    {
        const ds4::SequenceId w = eng.create_sequence();
        b.add(w, std::span<const int32_t>(prompt).first(std::min<uint32_t>(n_prompt, 16)));
        eng.step(b);
        b.clear();
        b.add_token(w, 1);
        eng.step(b);
        eng.free_sequence(w);
        b.clear();
    }
    b.add(seq, prompt);
    // DS4_PROFILE_PREFILL=1: the profiler sees the prefill step.
    const bool prof_prefill = std::getenv("DS4_PROFILE_PREFILL") != nullptr;
    if (prof_prefill) cudaProfilerStart();
    t0 = std::chrono::steady_clock::now();
    ds4::Logits out = eng.step(b);
    const double prefill_s = seconds_since(t0);
    if (prof_prefill) cudaProfilerStop();
    int32_t next = out.argmax(0);
    // DS4_PROFILE_DECODE=N: the profiler (ncu --profile-from-start off) sees only the
    // last N decode steps at batch 1.
    // DS4_BENCH_HASH=1: prints a hash of the batch-1 decode logits (two builds or switches
    // that must agree bitwise print the same)
    const bool hash_logits = std::getenv("DS4_BENCH_HASH") != nullptr;
    const char* prof = std::getenv("DS4_PROFILE_DECODE");
    const uint32_t n_prof = prof != nullptr ? static_cast<uint32_t>(std::stoul(prof)) : 0;
    t0 = std::chrono::steady_clock::now();
    uint64_t fnv =
        14695981039346656037ull;  // of every decode step's logit bits: equal runs, equal sums
    // DS4_TRACE_DECODE=N: the kernel timeline of the last N batch-1 decode steps
    // (kernel_trace.h: CUPTI, graphs and PDL overlap as they ran)
    const char* trace_env = std::getenv("DS4_TRACE_DECODE");
    const uint32_t n_trace = trace_env != nullptr ? static_cast<uint32_t>(std::stoul(trace_env)) : 0;
    std::unique_ptr<ds4::cuda::KernelTrace> trace;
    if (n_trace != 0) trace = std::make_unique<ds4::cuda::KernelTrace>();
    for (uint32_t i = 0; i < n_decode; ++i) {
        if (n_prof != 0 && i + n_prof == n_decode) cudaProfilerStart();
        if (trace && i + n_trace == n_decode) {
            cudaDeviceSynchronize();
            trace->start();
        }
        b.clear();
        b.add_token(seq, next);
        eng.step(b, out);
        next = out.argmax(0);
        if (hash_logits) fnv = fnv1a(out.row(0), fnv);
    }
    if (n_prof != 0) cudaProfilerStop();
    const double decode_s = seconds_since(t0);
    if (trace) {
        cudaDeviceSynchronize();
        trace->stop();
        trace->print(stdout, std::min(n_trace, n_decode));
    }
    std::printf("prefill %u tokens: %.3f s, %.1f t/s\n", n_prompt, prefill_s, n_prompt / prefill_s);
    std::printf("decode %u tokens at batch 1: %.2f ms/token, %.1f t/s, %.3f ms per layer\n", n_decode,
                1e3 * decode_s / n_decode, n_decode / decode_s, 1e3 * decode_s / n_decode / m.n_layer);
    if (hash_logits)
        std::printf("decode logits fnv1a %016llx\n", static_cast<unsigned long long>(fnv));
    eng.free_sequence(seq);

    // DS4_PROFILE_BATCH=N: the profiler sees the last N decode steps of each BATCH.
    const char* prof_b = std::getenv("DS4_PROFILE_BATCH");
    const uint32_t n_prof_b = prof_b != nullptr ? static_cast<uint32_t>(std::stoul(prof_b)) : 0;
    // DS4_BENCH_DISTINCT_PROMPTS=1: each sequence of a BATCH gets its own prompt (its tokens
    // shifted by the sequence index), so their routing spreads over the experts as unrelated
    // requests do; by default they share one prompt and mostly one set of experts.
    const bool distinct = std::getenv("DS4_BENCH_DISTINCT_PROMPTS") != nullptr;
    // DS4_TRACE_BATCH=N: the kernel timeline of the last N decode steps of each BATCH.
    const char* trace_b_env = std::getenv("DS4_TRACE_BATCH");
    const uint32_t n_trace_b = trace_b_env != nullptr ? static_cast<uint32_t>(std::stoul(trace_b_env)) : 0;
    for (int a = 4; a < argc; ++a) {
        const auto batch = static_cast<uint32_t>(std::stoul(argv[a]));
        std::vector<ds4::SequenceId> seqs(batch);
        std::vector<std::vector<int32_t>> own(batch);  // distinct prompts (the Batch holds spans)
        b.clear();
        for (uint32_t i = 0; i < batch; ++i) {
            seqs[i] = eng.create_sequence();
            if (distinct) {
                std::vector<int32_t>& p = own[i];
                p.assign(prompt.begin(), prompt.begin() + std::min<uint32_t>(n_prompt, 64));
                for (int32_t& t : p) t = static_cast<int32_t>((static_cast<uint32_t>(t) + 7907u * (i + 1)) % m.n_vocab);
                b.add(seqs[i], p);
            } else {
                b.add(seqs[i], std::span<const int32_t>(prompt).first(std::min<uint32_t>(n_prompt, 64)));
            }
        }
        t0 = std::chrono::steady_clock::now();
        eng.step(b, out);
        const double batch_prefill_s = seconds_since(t0);
        std::vector<int32_t> next_tokens(batch);
        for (uint32_t i = 0; i < batch; ++i) next_tokens[i] = out.argmax(i);
        double argmax_s = 0;
        t0 = std::chrono::steady_clock::now();
        for (uint32_t step = 0; step < n_decode; ++step) {
            if (n_prof_b != 0 && step + n_prof_b == n_decode) cudaProfilerStart();
            if (n_trace_b != 0 && step + n_trace_b == n_decode) {
                cudaDeviceSynchronize();
                if (!trace) trace = std::make_unique<ds4::cuda::KernelTrace>();
                trace->start();
            }
            b.clear();
            for (uint32_t i = 0; i < batch; ++i) b.add_token(seqs[i], next_tokens[i]);
            eng.step(b, out);
            const auto ta = std::chrono::steady_clock::now();
            for (uint32_t i = 0; i < batch; ++i) next_tokens[i] = out.argmax(i);
            argmax_s += seconds_since(ta);
        }
        const double s = seconds_since(t0);
        if (n_prof_b != 0) cudaProfilerStop();
        if (n_trace_b != 0 && trace) {
            cudaDeviceSynchronize();
            trace->stop();
            std::printf("# batch %u trace\n", batch);
            trace->print(stdout, std::min(n_trace_b, n_decode));
        }
        std::printf("batch %u: prefill %u x %u tokens %.3f s; decode %.2f ms/step, aggregate %.1f t/s (%.1f t/s per sequence); host argmax %.2f ms/step\n",
                    batch, batch, std::min<uint32_t>(n_prompt, 64), batch_prefill_s, 1e3 * s / n_decode,
                    batch * n_decode / s, n_decode / s, 1e3 * argmax_s / n_decode);
        for (ds4::SequenceId q : seqs) eng.free_sequence(q);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ds4-bench-cuda-forward: %s\n", e.what());
        return 1;
    }
}
