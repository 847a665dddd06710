// ds4-bench: instantaneous prefill and generation throughput at context frontiers
// (interface.md §7.2, CSV formats.md §8.5), against ceilings measured in the same run.
//
// The model is loaded once; a fixed token sequence (the tokenized --prompt-file) is
// walked to each frontier, prefilling only the new interval. At each frontier the
// sequence is checkpointed (Engine::checkpoint: raw windows and compressor frontiers;
// compressed rows are append-only and only truncated back), --gen-tokens greedy tokens
// are decoded with EOS excluded, and the checkpoint is restored before the walk goes on,
// so every interval is prefilled exactly once and no decoded token leaks into the context.
//
// --batch N: the frontier state is forked N−1 times (Engine::fork_sequence, untimed) and
// the N sequences decode in lockstep, one step() per token for all of them. Sequence i
// starts from the (i+1)-th best non-EOS token of the frontier logits, so the N greedy
// paths differ and route to different experts, as independent requests would.
// --gen-warmup K (default 0) decodes K untimed steps first, so that one-time costs of a
// frontier's first steps (a GPU backend uploading the forked states, capturing the step
// as a graph) stay out of a short run's rate; those K tokens are not counted.
//
// Weight bytes per decode step (the "weights read" column): every 2-D/3-D tensor in full,
// except routed experts — min(n_expert, n_expert_used × batch) experts' slabs per layer
// (an upper bound on the distinct experts a batch touches) — and per-token rows of
// token_embd and tid2eid. 1-D tensors are tiny and not counted. gen_gbs = bytes × steps/s.
//
// FLOPs per prefill token (the "GEMM ceiling" column): 2 × the weights one token multiplies
// by — every 2-D/3-D tensor except token_embd (a lookup), tid2eid (ids), the output head
// (prefill asks for the last chunk row's logits only) and MTP, with routed experts counted
// n_expert_used / n_expert. Attention scores are left out (they grow with the context;
// the weights dominate at the frontiers benched here). prefill_gflops = that × prefill t/s.
//
// --synthetic q2|q4: the published-width model with --layers layers and random weights
// is generated into a memfd and opened as /proc/self/fd/N through Engine::open, the same
// path as a file model (synthetic.h); nothing is written to disk. It is refused up front,
// with the per-layer size, when it would not fit in MemAvailable (or --mem-limit-mib).
//
// --cuda (a -DDS4_CUDA=ON build): the engine runs on Backend::Cuda and the read ceiling is
// the GPU's device-to-device copy bandwidth (cuda/ceiling.h), measured after the model is
// uploaded; bw_ratio is gen_gbs over that. The GEMM ceiling is cuBLAS's bf16 8192³ product
// (the card's tensor-core peak; cuBLAS is loaded at run time, cuda/ceiling.h); where it
// cannot be loaded gemm_gflops is 0 and gemm_ratio stays 0, with the reason in the header,
// rather than a hand-written SGEMM's misleading number.
#include <CLI/CLI.hpp>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ceilings.h"
#include "ds4/engine.h"
#include "ds4/error.h"
#include "ds4/sampler.h"
#include "ds4/tokenizer.h"
#include "gguf/gguf.h"
#include "maker.h"
#include "model/tensor_plan.h"
#include "report.h"
#include "synthetic.h"
#ifdef DS4_BENCH_CUDA
#include "cuda/ceiling.h"
#include "cuda/kernel_trace.h"
#endif

#ifndef DS4_BENCH_DATA_DIR
#define DS4_BENCH_DATA_DIR "bench/data"
#endif

namespace {

using namespace ds4;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One run of an --env-sweep: the variable's value (no name: no sweep) and its round.
struct SweepRun {
    std::string name, value;
    uint32_t round = 0;
};

struct Options {
    std::string model = "./ds4flash.gguf";
    std::string prompt_file;
    std::string csv_path;
    std::string plot_path;
    std::string synthetic;  // "", "q2" or "q4"
    uint32_t layers = 43;
    unsigned threads = 0;
    uint64_t ctx_start = 2048, ctx_max = 32768, ctx_alloc = 0, step_incr = 2048;
    double step_mul = 1.0;
    uint64_t gen_tokens = 128;
    uint64_t gen_warmup = 0;
    uint32_t batch = 1;
    uint64_t prefill_chunk = 0;  // 0: the engine's pass size
    uint64_t bw_mib = 1024;
    uint32_t gemm_n = 8192;
    uint64_t mem_limit_mib = 0;
    bool cuda = false;
    std::string env_sweep;  // "NAME=V1,V2,...": A/B runs in one process
    uint32_t sweep_rounds = 1;
    std::vector<SweepRun> runs;  // parse(): env_sweep and sweep_rounds as runs
};

// The runs of --env-sweep NAME=V1,V2 --sweep-rounds R: V1, V2, V1, V2, ... (R rounds), so
// drift over the process's life falls on every value alike.
std::vector<SweepRun> sweep_runs(const Options& o) {
    if (o.env_sweep.empty()) return {SweepRun{}};
    const auto eq = o.env_sweep.find('=');
    if (eq == 0 || eq == std::string::npos || eq + 1 == o.env_sweep.size())
        fail(cat("--env-sweep '", o.env_sweep, "': expected NAME=VALUE[,VALUE...]"));
    const std::string name = o.env_sweep.substr(0, eq);
    std::vector<std::string> values;
    for (size_t at = eq + 1;;) {
        const size_t comma = o.env_sweep.find(',', at);
        const size_t len = comma == std::string::npos ? std::string::npos : comma - at;
        values.push_back(o.env_sweep.substr(at, len));
        if (comma == std::string::npos) break;
        at = comma + 1;
    }
    std::vector<SweepRun> runs;
    for (uint32_t r = 0; r < o.sweep_rounds; ++r)
        for (const std::string& v : values) runs.push_back({name, v, r});
    return runs;
}

// Tokens per prefill step(): --prefill-chunk, else the engine's pass size (a Session's step).
uint64_t prefill_step(const Options& o, const Engine& engine) {
    return o.prefill_chunk != 0 ? o.prefill_chunk : engine.pass_tokens();
}

// Jane Austen's Persuasion, chapters 1–17 (public domain, Project Gutenberg text; see
// bench/data/README.md): ~290 KB, ~70k tokens with the V4 tokenizer.
constexpr const char* kDefaultPrompt = "austen-persuasion.txt";

std::string default_prompt_file() {
    // Installed binaries have no source tree: fall back to a path relative to the cwd.
    const std::filesystem::path p = std::filesystem::path(DS4_BENCH_DATA_DIR) / kDefaultPrompt;
    return std::filesystem::exists(p) ? p.string() : cat("bench/data/", kDefaultPrompt);
}

// Parses argv; returns an exit code when the program should stop (help, bad flag).
std::optional<int> parse(int argc, char** argv, Options& o) {
    CLI::App app{
        "ds4-bench: prefill and generation throughput at context frontiers, against "
        "memory-bandwidth and "
        "GEMM ceilings measured in the same run.\n"
        "--synthetic q2|q4 generates published-width random weights in memory (no file) and opens "
        "them through the engine like a GGUF; the full shape (43 layers) needs ~81 GB of RAM for "
        "q2 (more for q4): use --layers to bench fewer layers (it refuses what will not fit)."};
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // last one wins
    app.add_option("-m,--model", o.model, "GGUF model")->capture_default_str();
    app.add_option("--prompt-file", o.prompt_file,
                   cat("raw text, tokenized with the model's tokenizer (default: bench/data/",
                       kDefaultPrompt, ", public domain)"));
    app.add_option("-t,--threads", o.threads, "CPU threads (0: all)")->capture_default_str();
    app.add_option("--ctx-start", o.ctx_start, "first frontier")->capture_default_str();
    app.add_option("--ctx-max", o.ctx_max, "last frontier")->capture_default_str();
    app.add_option("--ctx-alloc", o.ctx_alloc,
                   "KV context allocated (default ctx-max + gen-tokens + 1)");
    app.add_option("--step-incr", o.step_incr, "linear frontier step (with --step-mul 1)")
        ->capture_default_str();
    app.add_option("--step-mul", o.step_mul, "geometric frontier factor (>= 1)")
        ->capture_default_str();
    app.add_option("-n,--gen-tokens,--tokens", o.gen_tokens, "greedy tokens decoded per frontier")
        ->capture_default_str();
    app.add_option("--gen-warmup", o.gen_warmup,
                   "untimed decode steps before the --gen-tokens timed ones")
        ->capture_default_str();
    app.add_option("--batch,--concurrency", o.batch,
                   "sequences decoding together through one step()")
        ->capture_default_str();
    app.add_option("--prefill-chunk", o.prefill_chunk,
                   "most tokens per prefill step() (default: the engine's pass size, as a Session steps)")
        ->capture_default_str();
    app.add_option("--csv", o.csv_path, "CSV output file (default stdout)");
    app.add_option("--plot", o.plot_path,
                   "write an SVG chart of prefill and generation t/s vs context");
    app.add_option("--synthetic", o.synthetic,
                   "q2|q4: full-width synthetic weights in memory instead of -m (~81 GB for q2)")
        ->check(CLI::IsMember({"q2", "q4"}));
    app.add_option("--layers", o.layers, "layers of the --synthetic model")->capture_default_str();
    app.add_flag("--cuda", o.cuda,
                 "run on the CUDA backend (a -DDS4_CUDA=ON build); the read ceiling is then the "
                 "GPU's device-to-device copy bandwidth and the GEMM ceiling cuBLAS's bf16 peak");
    app.add_option("--bw-mib", o.bw_mib, "buffer of the read-bandwidth ceiling, MiB")
        ->capture_default_str();
    app.add_option("--gemm-n", o.gemm_n, "--cuda: size of the square bf16 GEMM of the GEMM ceiling")
        ->check(CLI::Range(16u, 32768u))
        ->capture_default_str();
    app.add_option("--env-sweep", o.env_sweep,
                   "paired runs in one process: NAME=V1,V2,... sets the environment variable to "
                   "each value in turn and reopens the engine on the same weights (a --synthetic "
                   "model is generated once); each run's rows follow a '# sweep' comment line");
    app.add_option("--sweep-rounds", o.sweep_rounds, "--env-sweep: times through the values")
        ->check(CLI::Range(1u, 100u))
        ->capture_default_str();
    app.add_option("--mem-limit-mib", o.mem_limit_mib,
                   "--synthetic: refuse to generate more than this (MiB) even when MemAvailable "
                   "allows (0: MemAvailable only)")
        ->capture_default_str();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);
        // One line, no usage dump: scripts grep it.
        std::string msg = e.what();
        std::replace(msg.begin(), msg.end(), '\n', ' ');
        std::fprintf(stderr, "ds4-bench: error: %s (see --help)\n", msg.c_str());
        return 2;
    }
#ifndef DS4_BENCH_CUDA
    // Refused before the model is mapped (or a synthetic one generated), like ds4 --cuda.
    if (o.cuda)
        fail("--cuda: this ds4-bench was built without CUDA (configure with -DDS4_CUDA=ON)");
#endif
    if (o.prompt_file.empty()) o.prompt_file = default_prompt_file();
    if (o.gen_tokens == 0) fail("--gen-tokens must be at least 1");
    if (o.batch == 0) fail("--batch must be at least 1");
    if (o.layers == 0) fail("--layers must be at least 1");
    o.runs = sweep_runs(o);  // its syntax errors before anything is loaded
    if (!o.env_sweep.empty() && !o.plot_path.empty())
        fail("--plot draws one run: not with --env-sweep");
    const uint64_t decoded = o.gen_warmup + o.gen_tokens;
    if (o.ctx_alloc == 0) o.ctx_alloc = o.ctx_max + decoded + 1;
    if (o.ctx_alloc <= o.ctx_max + decoded)
        fail(cat("--ctx-alloc ", o.ctx_alloc, " must be larger than ctx-max + gen-warmup + gen-tokens = ",
                 o.ctx_max + decoded));
    return std::nullopt;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(cat(path, ": cannot open the prompt file"));
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The model's tokenizer, or byte ids (mod n_vocab) when the GGUF carries none.
std::vector<int32_t> tokenize(const std::string& model_path, const std::string& text,
                              uint32_t n_vocab, std::string& how) {
    try {
        const auto tok = Tokenizer::load(model_path);
        how = "model tokenizer";
        return tok.encode_text(text);
    } catch (const Error& e) {
        how = cat("byte ids (no usable tokenizer: ", e.what(), ")");
        std::vector<int32_t> ids;
        ids.reserve(text.size());
        for (unsigned char c : text) ids.push_back(int32_t(c % n_vocab));
        return ids;
    }
}

int32_t eos_id(const std::string& model_path) {
    try {
        return Tokenizer::load(model_path).specials().eos;
    } catch (const Error&) {
        return -1;
    }
}

uint64_t weight_bytes_per_step(const gguf::File& f, const ModelSummary& m, uint32_t batch) {
    const uint64_t experts = std::min<uint64_t>(m.n_expert, uint64_t{m.n_expert_used} * batch);
    uint64_t total = 0;
    for (const auto& t : f.tensors()) {
        if (t.n_dims == 1) continue;
        const std::string_view name = t.name;
        if (name.starts_with("mtp.")) continue;
        if (name.find("_exps.") != std::string_view::npos)
            total += t.n_bytes / m.n_expert * experts;
        else if (name == "token_embd.weight" ||
                 name.find("ffn_gate_tid2eid") != std::string_view::npos)
            total += t.n_bytes / t.dims[t.n_dims - 1] * batch;
        else
            total += t.n_bytes;
    }
    return total;
}

uint64_t prefill_flops_per_token(const gguf::File& f, const ModelSummary& m) {
    uint64_t weights = 0;
    for (const auto& t : f.tensors()) {
        if (t.n_dims == 1) continue;
        const std::string_view name = t.name;
        if (name.starts_with("mtp.") || name == "token_embd.weight" || name == "output.weight" ||
            name.find("ffn_gate_tid2eid") != std::string_view::npos)
            continue;
        if (name.find("_exps.") != std::string_view::npos)
            weights += t.n_elements / m.n_expert * m.n_expert_used;
        else
            weights += t.n_elements;
    }
    return 2 * weights;
}

// Reads one byte per page so the timed runs find the weights resident.
double touch_all(const gguf::File& f) {
    const auto t0 = Clock::now();
    const auto bytes = f.bytes();
    uint64_t acc = 0;
    for (uint64_t i = 0; i < bytes.size(); i += 4096) acc += bytes[i];
    volatile uint64_t sink = acc;
    (void)sink;
    return seconds_since(t0);
}

// The `rank`-th largest logit's id (0: argmax), EOS excluded; lowest id on ties.
int32_t ranked_non_eos(std::span<const float> row, int32_t eos, uint32_t rank) {
    std::vector<int32_t> best;
    for (int32_t i = 0; i < int32_t(row.size()); ++i) {
        if (i == eos) continue;
        const auto worse = [&](int32_t a) { return row[size_t(a)] < row[size_t(i)]; };
        auto pos = std::find_if(best.begin(), best.end(), worse);
        if (best.size() <= rank || pos != best.end()) {
            best.insert(pos, i);
            if (best.size() > rank + 1) best.pop_back();
        }
    }
    return best.at(std::min<size_t>(rank, best.size() - 1));
}

// The largest finite logit's id, EOS excluded, lowest id on ties (ds4::argmax on both
// sides of EOS: its vectorized scan, since a 64-sequence step does 64 of these rows).
int32_t argmax_non_eos(std::span<const float> row, int32_t eos) {
    if (eos < 0 || size_t(eos) >= row.size()) return std::max(ds4::argmax(row), 0);
    const auto cut = size_t(eos);
    const int32_t a = ds4::argmax(row.first(cut)), b = ds4::argmax(row.subspan(cut + 1));
    if (b < 0) return a >= 0 ? a : (eos == 0 ? 1 : 0);
    const int32_t bi = b + eos + 1;
    return a >= 0 && row[size_t(a)] >= row[size_t(bi)] ? a : bi;
}

// next[i] = argmax_non_eos of row i, the rows spread over the host's threads: a
// 64-sequence step's 64 rows of 129280 logits took 11-13 ms on one thread of the H200
// host, ~12 % of a 43-layer step (the rows are independent: the same ids).
void argmax_rows(const Logits& logits, int32_t eos, std::span<int32_t> next) {
    const size_t n = next.size();
    const size_t threads = std::min<size_t>(n / 4, std::max(1u, std::thread::hardware_concurrency()));
    if (threads <= 1) {
        for (size_t i = 0; i < n; ++i) next[i] = argmax_non_eos(logits.row(i), eos);
        return;
    }
    std::vector<std::jthread> pool;
    for (size_t k = 0; k < threads; ++k)
        pool.emplace_back([&, k] {
            for (size_t i = n * k / threads; i < n * (k + 1) / threads; ++i) next[i] = argmax_non_eos(logits.row(i), eos);
        });
}

struct Walk {
    Engine& engine;
    const Options& o;
    std::span<const int32_t> tokens;
    int32_t eos;
    uint64_t weight_bytes;
    uint64_t flops_per_token;
    bench::Ceilings ceil;
};

// Prefills tokens [from, to) in chunks; returns the logits after the last one.
std::vector<float> prefill(Engine& engine, SequenceId seq, std::span<const int32_t> part,
                           uint64_t chunk) {
    Batch batch;
    Logits logits;
    for (uint64_t at = 0; at < part.size(); at += chunk) {
        const auto piece = part.subspan(at, std::min<uint64_t>(chunk, part.size() - at));
        batch.clear();
        batch.add(seq, piece,
                  at + piece.size() == part.size() ? LogitsWanted::Last : LogitsWanted::None);
        engine.step(batch, logits);
    }
    const auto row = logits.row(0);
    // Synthetic weights are scaled to keep activations sane; a NaN here would make every
    // rate meaningless (and greedy decoding degenerate), so it is an error, not a number.
    if (!std::all_of(row.begin(), row.end(), [](float v) { return std::isfinite(v); }))
        fail(cat("non-finite logits after prefilling to position ", logits.info(0).position));
    return {row.begin(), row.end()};
}

// Decodes gen_tokens greedy tokens on `seqs` in lockstep; returns the seconds taken.
double decode(Engine& engine, std::span<const SequenceId> seqs, std::span<const float> first_logits,
              int32_t eos, uint64_t warmup, uint64_t gen_tokens) {
    std::vector<int32_t> next(seqs.size());
    for (uint32_t i = 0; i < seqs.size(); ++i) next[i] = ranked_non_eos(first_logits, eos, i);
    Batch batch;
    Logits logits;
#ifdef DS4_BENCH_CUDA
    // DS4_TRACE_DECODE=N (--cuda): the kernel timeline of the last N timed steps on stderr
    // (cuda/kernel_trace.h); the traced steps run a little slower than untraced ones.
    const char* trace_env = std::getenv("DS4_TRACE_DECODE");
    const uint64_t n_trace = trace_env != nullptr ? std::min<uint64_t>(std::stoull(trace_env), gen_tokens) : 0;
    std::optional<cuda::KernelTrace> trace;
    if (n_trace != 0) trace.emplace();
#endif
    auto t0 = Clock::now();
    for (uint64_t step = 0; step < warmup + gen_tokens; ++step) {
        if (step == warmup) t0 = Clock::now();
#ifdef DS4_BENCH_CUDA
        if (trace && step + n_trace == warmup + gen_tokens) trace->start();
#endif
        batch.clear();
        for (size_t i = 0; i < seqs.size(); ++i) batch.add_token(seqs[i], next[i]);
        engine.step(batch, logits);
        argmax_rows(logits, eos, next);
    }
    const double s = seconds_since(t0);
#ifdef DS4_BENCH_CUDA
    if (trace) {
        trace->stop();  // step() returned its logits: the traced work is done
        std::fprintf(stderr, "# decode trace: batch %zu\n", seqs.size());
        trace->print(stderr, static_cast<unsigned>(n_trace));
    }
#endif
    return s;
}

bench::Row frontier_row(Walk& w, SequenceId seq, uint64_t from, uint64_t to) {
    bench::Row r;
    r.ctx_tokens = to;
    r.prefill_tokens = to - from;
    const auto t0 = Clock::now();
    const auto logits =
        prefill(w.engine, seq, w.tokens.subspan(from, to - from), prefill_step(w.o, w.engine));
    r.prefill_tps = double(r.prefill_tokens) / seconds_since(t0);
    r.flops_per_token = w.flops_per_token;
    r.prefill_gflops = double(w.flops_per_token) * r.prefill_tps / 1e9;
    r.gemm_ratio = w.ceil.gemm_gflops > 0 ? r.prefill_gflops / w.ceil.gemm_gflops : 0;
    r.kvcache_bytes = w.engine.sequence_payload_bytes(seq);

    const SequenceCheckpoint cp = w.engine.checkpoint(seq);
    std::vector<SequenceId> seqs{seq};
    for (uint32_t i = 1; i < w.o.batch; ++i) seqs.push_back(w.engine.fork_sequence(seq));
    const double s = decode(w.engine, seqs, logits, w.eos, w.o.gen_warmup, w.o.gen_tokens);
    for (size_t i = 1; i < seqs.size(); ++i) w.engine.free_sequence(seqs[i]);
    w.engine.restore(seq, cp);

    r.batch = w.o.batch;
    r.gen_tokens = w.o.gen_tokens;
    r.gen_tps = double(w.o.gen_tokens) * w.o.batch / s;
    r.seq_gen_tps = r.gen_tps / w.o.batch;
    r.weight_bytes_per_step = w.weight_bytes;
    r.gen_gbs = double(w.weight_bytes) * (double(w.o.gen_tokens) / s) / 1e9;
    r.bw_ratio = w.ceil.read_gbs > 0 ? r.gen_gbs / w.ceil.read_gbs : 0;
    return r;
}

std::string two_decimals(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f", v);
    return buf;
}

void write_text(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) fail(cat(path, ": cannot open for writing"));
    out << text;
    if (!out.flush()) fail(cat(path, ": write failed"));
}

// The --synthetic model's options, once the memory check passed (the full shape is ~81 GB
// for q2: refused before anything is generated).
synth::MakeOptions checked_synthetic_options(const Options& o) {
    const synth::MakeOptions opt = bench::synthetic_options(o.synthetic, o.layers, o.threads);
    const uint64_t gemm_bytes = 3ull * 512 * 512 * sizeof(float);
    bench::check_fits(opt,
                      bench::run_memory_bytes(opt, o.ctx_alloc, o.batch, o.prefill_chunk,
                                              (o.bw_mib << 20) + gemm_bytes),
                      bench::available_memory_bytes(), o.mem_limit_mib << 20);
    std::fprintf(stderr,
                 "generating the synthetic model in memory (published width, %u layers, %s, fast "
                 "random blocks, %.2f GiB)...\n",
                 o.layers, o.synthetic.c_str(),
                 double(bench::synthetic_image_bytes(opt)) / (1024.0 * 1024.0 * 1024.0));
    return opt;
}

// The ceilings of this run and their header lines: the CPU's (STREAM-style read, f32
// GEMM), or with --cuda the GPU's device-to-device copy (and no GEMM: see the top).
struct Ceilings {
    bench::Ceilings c;
    std::string device;
    std::string read_line, gemm_line;
};

Ceilings measure(const Options& o, unsigned threads) {
    Ceilings r;
    if (o.cuda) {
#ifdef DS4_BENCH_CUDA
        const cuda::CopyCeiling g = cuda::measure_copy_ceiling(o.bw_mib << 20);
        r.c.read_gbs = g.copy_gbs;
        r.c.read_bytes = g.bytes;
        r.device = g.device;
        r.read_line =
            cat("ceiling read_gbs=", g.copy_gbs, " (GPU device-to-device cudaMemcpy of ",
                g.bytes >> 20, " MiB, read+write bytes, median of ", g.reps, ", ", g.device, ")");
        const cuda::GemmCeiling m = cuda::measure_gemm_ceiling(o.gemm_n);
        r.c.gemm_gflops = m.gflops;
        r.gemm_line = m.gflops > 0
                          ? cat("ceiling gemm_gflops=", m.gflops, " (cuBLAS bf16 GEMM ", m.n,
                                "^3, f32 accumulate, median of ", m.reps, ", ", m.library, ")")
                          : cat("ceiling gemm_gflops=0 (not measured: ", m.why_not, ")");
#endif
        return r;
    }
    r.c = bench::measure_ceilings(threads, o.bw_mib << 20);
    r.read_line = cat("ceiling read_gbs=", r.c.read_gbs, " (STREAM-style sum over ",
                      r.c.read_bytes >> 20, " MiB, ", r.c.threads, " threads, best of 5)");
    r.gemm_line = cat("ceiling gemm_gflops=", r.c.gemm_gflops, " (f32 GEMM 512^3, ",
                      bench::gemm_kernel_name(), ", ", r.c.threads, " threads, best of 3)");
    return r;
}

// What one engine measures: every frontier's row (printed as it comes), then the
// aggregate line; `tag` (" [NAME=V]" in a sweep) ends the human-readable lines.
std::vector<bench::Row> walk_frontiers(Walk& w, std::span<const uint64_t> points, std::FILE* csv,
                                       const std::string& tag) {
    const Options& o = w.o;
    const SequenceId seq = w.engine.create_sequence();
    std::vector<bench::Row> rows;
    uint64_t prev = 0;
    for (const uint64_t f : points) {
        rows.push_back(frontier_row(w, seq, prev, f));
        prev = f;
        std::fprintf(csv, "%s\n", bench::csv_row(rows.back()).c_str());
        std::fflush(csv);
        // --cuda measures no GEMM ceiling: say so rather than print "0.0% of" it.
        char gemm_pct[32] = "n/a";
        if (w.ceil.gemm_gflops > 0)
            std::snprintf(gemm_pct, sizeof gemm_pct, "%.1f%%", 100 * rows.back().gemm_ratio);
        std::fprintf(stderr,
                     "ctx %6llu: prefill %8.2f t/s (%.2f GFLOP/s = %s of GEMM ceiling), gen "
                     "%8.2f t/s (%u seq, %.2f t/s each; %.2f GB/s = %.1f%% of read ceiling)%s\n",
                     (unsigned long long)f, rows.back().prefill_tps, rows.back().prefill_gflops,
                     gemm_pct, rows.back().gen_tps, o.batch, rows.back().seq_gen_tps,
                     rows.back().gen_gbs, 100 * rows.back().bw_ratio, tag.c_str());
    }
    w.engine.free_sequence(seq);

    double sum_gen = 0, sum_seq = 0, sum_pre = 0;
    for (const auto& r : rows)
        sum_gen += r.gen_tps, sum_seq += r.seq_gen_tps, sum_pre += r.prefill_tps;
    const double k = double(rows.size());
    const std::string agg =
        cat("aggregate batch=", o.batch, " frontiers=", rows.size(), " mean_gen_tps=", sum_gen / k,
            " mean_seq_gen_tps=", sum_seq / k, " mean_prefill_tps=", sum_pre / k, tag);
    std::fprintf(csv, "# %s\n", agg.c_str());
    std::fprintf(stderr, "# %s\n", agg.c_str());
    return rows;
}

int run(const Options& o) {
    std::optional<bench::InMemoryModel> synthetic;
    if (!o.synthetic.empty()) synthetic.emplace(checked_synthetic_options(o));
    const std::string path = synthetic ? synthetic->path() : o.model;

    EngineOptions eo;
    eo.threads = o.threads;
    eo.ctx = o.ctx_alloc;
    eo.backend = o.cuda ? Backend::Cuda : Backend::Cpu;
    const std::vector<SweepRun>& runs = o.runs;
    const auto set_env = [](const SweepRun& r) {
        if (!r.name.empty()) ::setenv(r.name.c_str(), r.value.c_str(), 1);
    };
    set_env(runs[0]);
    const auto t_load = Clock::now();
    std::optional<Engine> engine(Engine::open(path, eo));
    const gguf::File file = gguf::File::open(path);
    const ModelSummary m = engine->model();
    std::string tok_how;
    const auto tokens = tokenize(path, read_file(o.prompt_file), m.n_vocab, tok_how);
    const int32_t eos = eos_id(path);
    const double load_s = seconds_since(t_load);
    if (tokens.size() < o.ctx_max)
        fail(cat(o.prompt_file, ": ", tokens.size(), " tokens, fewer than --ctx-max ", o.ctx_max,
                 " (use a longer --prompt-file or a smaller --ctx-max)"));
    const auto points = bench::frontiers(o.ctx_start, o.ctx_max, o.step_incr, o.step_mul);

    const double warm_s = touch_all(file);
    const unsigned threads = engine->options().threads;
    const Ceilings ceil = measure(o, threads);
    const uint64_t wbytes = weight_bytes_per_step(file, m, o.batch);
    const uint64_t flops = prefill_flops_per_token(file, m);

    std::vector<std::string> meta = {
        cat("ds4-bench model=", m.path, " name=", m.name.empty() ? "-" : m.name, " quant=", m.quant,
            " synthetic=", m.synthetic ? "yes" : "no", " layers=", m.n_layer, " n_embd=", m.n_embd,
            " experts=", m.n_expert_used, "/", m.n_expert, " params=", m.n_params,
            " file_bytes=", m.file_bytes),
        cat("backend=", o.cuda ? cat("cuda device=", ceil.device) : std::string("cpu"),
            " threads=", threads, " ctx_alloc=", o.ctx_alloc, " batch=", o.batch,
            " gen_tokens=", o.gen_tokens, " gen_warmup=", o.gen_warmup, " prefill_chunk=", prefill_step(o, *engine)),
        cat("prompt=", o.prompt_file, " tokens=", tokens.size(), " tokenized_with=", tok_how),
        ceil.read_line,
        ceil.gemm_line,
        cat("weight_bytes_per_step=", wbytes, " prefill_flops_per_token=", flops,
            " load_s=", load_s, " warm_s=", warm_s,
            synthetic ? cat(" synthetic_in_memory_bytes=", synthetic->bytes(),
                            " synthetic_generate_s=", synthetic->seconds())
                      : std::string()),
    };
    for (const auto& line : meta) std::fprintf(stderr, "# %s\n", line.c_str());

    std::FILE* csv = stdout;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> owned(nullptr, &std::fclose);
    if (!o.csv_path.empty()) {
        owned.reset(std::fopen(o.csv_path.c_str(), "wb"));
        if (!owned) fail(cat(o.csv_path, ": cannot open for writing"));
        csv = owned.get();
    }
    for (const auto& line : meta) std::fprintf(csv, "# %s\n", line.c_str());
    std::fprintf(csv, "%s\n", bench::csv_header().c_str());
    std::fflush(csv);

    std::vector<bench::Row> rows;
    for (size_t i = 0; i < runs.size(); ++i) {
        const SweepRun& r = runs[i];
        std::string tag;
        if (!r.name.empty()) {
            double reload_s = load_s;
            if (i > 0) {  // the previous engine's memory back before the next one loads
                engine.reset();
                set_env(r);
                const auto t0 = Clock::now();
                engine.emplace(Engine::open(path, eo));
                reload_s = seconds_since(t0);
            }
            tag = cat(" [", r.name, "=", r.value, "]");
            const std::string line =
                cat("sweep ", r.name, "=", r.value, " round=", r.round, " load_s=", reload_s);
            std::fprintf(csv, "# %s\n", line.c_str());
            std::fprintf(stderr, "# %s\n", line.c_str());
        }
        Walk w{*engine, o, tokens, eos, wbytes, flops, ceil.c};
        rows = walk_frontiers(w, points, csv, tag);
    }

    if (!o.plot_path.empty())
        write_text(
            o.plot_path,
            bench::svg_chart(
                rows, cat("ds4-bench: ", m.name.empty() ? m.path : m.name),
                o.cuda ? cat(m.quant, ", ", m.n_layer, " layers, cuda ", ceil.device, ", batch ",
                             o.batch, ", D2D copy ceiling ", two_decimals(ceil.c.read_gbs),
                             " GB/s, GEMM ", two_decimals(ceil.c.gemm_gflops), " GFLOP/s")
                       : cat(m.quant, ", ", m.n_layer, " layers, cpu ", threads, " threads, batch ",
                             o.batch, ", read ceiling ", two_decimals(ceil.c.read_gbs),
                             " GB/s, GEMM ", two_decimals(ceil.c.gemm_gflops), " GFLOP/s")));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Options o;
        if (const auto code = parse(argc, argv, o)) return *code;
        return run(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ds4-bench: error: %s\n", e.what());
        return 1;
    }
}
