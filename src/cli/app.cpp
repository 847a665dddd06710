// One-shot generation, --dump-tokens and --dump-logprobs (interface.md §5.3, §5.6, §1.8).
#include "cli/app.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/generate.h"
#include "cli/output.h"
#include "ds4/error.h"

namespace ds4::cli {

std::atomic<bool> g_interrupted{false};

bool show_diagnostics(const Options& o) { return o.verbose || isatty(STDERR_FILENO); }

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, ": cannot open for reading");
    std::ostringstream s;
    s << in.rdbuf();
    if (in.bad()) fail(path, ": read error");
    return s.str();
}

namespace {

void check_model_path(const Options& o) {
    if (std::filesystem::exists(o.model)) return;
    if (!o.model_given)
        fail("no model: ", kDefaultModel,
             " not found; get the weights with scripts/download_model.sh q2-imatrix, or run the "
             "demo model (make run, or ds4 -m build/ds4-demo.gguf)");
    fail(o.model, ": no such file");
}

// The prompt's transcript: the template around the text, or a fully rendered chat
// taken as is when it starts with the BOS string (§2.6).
Transcript one_shot_transcript(const Options& o, const Tokenizer& tok, const std::string& prompt,
                               ThinkingMode mode) {
    Transcript t(tok, o.system, mode == ThinkingMode::max);
    if (prompt.starts_with("<｜begin▁of▁sentence｜>")) {
        t.set_rendered(prompt);
    } else {
        t.add_user_turn(prompt, mode);
    }
    return t;
}

std::string prompt_text(const Options& o) {
    return o.prompt ? *o.prompt : read_file(*o.prompt_file);
}

int dump_logprobs(const Options& o, Engine& engine, const Tokenizer& tok, const Transcript& t) {
    const uint64_t budget = generation_budget(t.size(), o.ctx, o.n_predict);
    Generator gen(engine, tok.specials().eos);
    TurnStats stats;
    const std::atomic<bool> never{false};
    gen.prefill(t.tokens(), PrefillProgress(show_diagnostics(o), isatty(STDERR_FILENO) != 0),
                never, stats);
    std::vector<LogprobStep> steps;
    for (uint64_t i = 0; i < budget; ++i) {
        const TokenId id = argmax(gen.logits());
        steps.push_back(logprob_step(gen.logits(), id, o.logprobs_top_k));
        if (id == tok.specials().eos || i + 1 == budget) break;
        gen.feed(id);
    }
    std::ofstream out(o.dump_logprobs, std::ios::binary);
    out << format_logprob_dump(tok, t.size(), o.ctx, o.logprobs_top_k, steps);
    out.close();
    if (!out) fail(o.dump_logprobs, ": cannot write the logprob dump");
    std::fprintf(stderr, "ds4: wrote %zu steps to %s\n", steps.size(), o.dump_logprobs.c_str());
    return 0;
}

}  // namespace

Tokenizer load_tokenizer(const Options& o) {
    check_model_path(o);
    return Tokenizer::load(o.model);
}

Engine map_model(const Options& o, uint64_t ctx) {
    check_model_path(o);
    EngineOptions eo;
    eo.ctx = ctx;
    eo.threads = resolve_threads(o.threads);
    // The CPU stays the default even in a CUDA build: the engine has no cheap "is a GPU
    // there" query, and the CPU backend is the reference. --cuda selects the GPU.
#ifdef DS4_CUDA_ARCHS
    eo.backend = o.cuda ? Backend::Cuda : Backend::Cpu;
#else
    if (o.cuda) fail("--cuda: this ds4 was built without CUDA (configure with -DDS4_CUDA=ON, or use --cpu)");
    eo.backend = Backend::Cpu;
#endif
    eo.mtp_path = o.mtp;
    eo.steering = o.steering;
    return Engine::open(o.model, eo);
}

Engine open_engine(const Options& o, uint64_t ctx) {
    Engine engine = map_model(o, ctx);
    if (engine.model().synthetic)
        std::fprintf(stderr, "ds4: %s: small synthetic random-weight model; output is not meaningful text\n",
                     o.model.c_str());
    if (show_diagnostics(o)) std::cerr << "ds4: " << engine.memory_estimate().report() << std::flush;
    return engine;
}

ThinkingMode gate_thinking(ThinkingMode requested, std::string_view flag, uint64_t ctx) {
    const ThinkingMode mode = effective_thinking_mode(requested, ctx);
    if (mode != requested)
        std::fprintf(stderr, "ds4: warning: %.*s needs --ctx >= %llu; ctx=%llu uses normal thinking instead\n",
                     static_cast<int>(flag.size()), flag.data(),
                     static_cast<unsigned long long>(kThinkMaxMinContext),
                     static_cast<unsigned long long>(ctx));
    return mode;
}

int run_one_shot(const Options& o) {
    const std::string prompt = prompt_text(o);
    const Tokenizer tok = load_tokenizer(o);
    if (o.dump_tokens) {
        // Exactly as written, specials recognised, no template, no weights (§1.8).
        std::cout << format_token_dump(tok, tok.encode_chat(prompt)) << std::flush;
        return 0;
    }
    if (prompt.empty()) fail("empty prompt");
    Trace trace(o.trace);
    Engine engine = open_engine(o, o.ctx);
    const ThinkingMode mode = gate_thinking(o.think, o.think_flag, o.ctx);
    const Transcript t = one_shot_transcript(o, tok, prompt, mode);
    if (!o.dump_logprobs.empty()) return dump_logprobs(o, engine, tok, t);

    const uint64_t budget = generation_budget(t.size(), o.ctx, o.n_predict);
    Sampler sampler(o.sampling);
    sampler.reseed(resolve_seed(o.sampling.seed));
    trace.begin_turn(mode, o.sampling, sampler.seed(), tok.decode(t.tokens()), t.size());

    Generator gen(engine, tok.specials().eos);
    gen.set_mtp_draft(o.mtp_draft);
    TurnStats stats;
    const std::atomic<bool> never{false};  // SIGINT keeps its default in one-shot mode
    gen.prefill(t.tokens(), PrefillProgress(show_diagnostics(o), isatty(STDERR_FILENO) != 0),
                never, stats);
    AnswerPrinter printer(tok, mode, isatty(STDOUT_FILENO) != 0, stdout);
    gen.generate(sampler, budget, [&](TokenId id) { printer.token(id); }, never, stats);
    printer.finish();
    trace.end_turn(stats, printer.raw());
    if (show_diagnostics(o)) std::fprintf(stderr, "%s\n", speed_line(stats).c_str());
    if (const SpeculativeStats& s = gen.speculative_stats(); show_diagnostics(o) && s.steps > 0)
        std::fprintf(stderr,
                     "ds4: mtp: %u drafts/step, %llu of %llu drafts accepted (%.1f%%), %.2f tokens "
                     "per main-model step (%llu steps)\n",
                     o.mtp_draft, static_cast<unsigned long long>(s.accepted),
                     static_cast<unsigned long long>(s.drafted), 100.0 * s.acceptance(),
                     s.tokens_per_step(), static_cast<unsigned long long>(s.main_steps()));
    return 0;
}

}  // namespace ds4::cli
