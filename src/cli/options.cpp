// Command-line parsing for ds4 (interface.md §5.2). Hand-written rather than CLI11 so the
// messages are ds4's own ("unknown option: X", "missing value for X", "invalid value for
// X: V") and single-dash long flags such as -sys work.
#include "cli/options.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "ds4/error.h"

namespace ds4::cli {

namespace {

constexpr std::string_view kHelp = R"(Usage: ds4 [options]            interactive chat
       ds4 [options] -p TEXT    one prompt, answer on stdout

Runs DeepSeek V4 Flash from a GGUF file on this machine.

Invocation modes:
  ds4                        interactive multi-turn chat (prompt "ds4> ")
  ds4 -p TEXT                one prompt, stream the answer, exit
  ds4 --prompt-file FILE     same, prompt read from FILE
  ds4 --dump-tokens -p TEXT  print the token ids of TEXT (no template, no weights)

Model and runtime:
  -m, --model FILE           model GGUF (default ds4flash.gguf)
  -c, --ctx N                context size in tokens (default 32768); the KV state is
                             allocated up front
  -t, --threads N            CPU threads (default min(12, online CPUs); env DS4_THREADS)
  --cpu                      CPU backend (the default in this build)
  --cuda                     CUDA backend (needs a CUDA build)
  --mtp FILE                 MTP GGUF (ds4-convert --mtp-out, or a model that carries
                             the block) for speculative decoding
  --mtp-draft N              MTP drafts per step (default 1 = no speculation; max 16);
                             used with --temp 0: output identical to plain greedy
  --verbose                  memory report, prefill progress and speed line even when
                             stderr is not a terminal
  --dir-steering-file FILE   directional steering: one f32 direction per layer
                             (layers x hidden values, raw little-endian, no header)
  --dir-steering-ffn F       FFN outputs y -= F*d*(d.y), F in [-100,100]; positive removes
                             the direction, negative amplifies it (default 1 with a file
                             and neither scale given, else 0)
  --dir-steering-attn F      the same on attention outputs (default 0)

Prompt and generation:
  -p, --prompt TEXT          prompt (a prompt starting with <｜begin▁of▁sentence｜> is
                             taken as a fully rendered chat, without the template)
  --prompt-file FILE         read the prompt from FILE
  -sys, --system TEXT        system text (default "You are a helpful assistant";
                             "" for none)
  -n, --tokens N             most tokens to generate (default 50000; clamped to the
                             context room)
  --temp F                   temperature in [0,100] (default 1; 0 = greedy)
  --top-k N                  keep the N most likely tokens (default 0 = off; max 1024)
  --top-p F                  nucleus mass in [0,1] (default 1)
  --min-p F                  minimum probability relative to the top token, in [0,1]
                             (default 0.05)
  --seed N                   random seed > 0 (default: time based)
  --think                    thinking mode (default)
  --think-max                Think Max (needs --ctx >= 393216, else normal thinking)
  --nothink                  answer without thinking

Interactive commands:
  /help                      list the commands
  /think, /think-max, /nothink   change the thinking mode of the next turns
  /ctx N                     new context size (the transcript is kept and re-prefilled)
  /read FILE                 send the contents of FILE as the next message
  /clear                     forget the conversation
  /stats                     tokens in the transcript, context, speeds of the last turn
  /quit, /exit               leave (Ctrl+D too)
  Ctrl+C stops the answer being generated; Ctrl+C twice at an empty prompt exits.

Diagnostics:
  --dump-tokens              with -p/--prompt-file: token ids of the text as written
                             (special tokens recognised), one line per token
  --dump-logprobs FILE       greedy decoding with the top log-probabilities of every
                             step as JSON (use --nothink to match the official vectors)
  --logprobs-top-k N         alternatives per step in the dump (default 20, max 128)
  --trace FILE               write each turn's prompt, sampling and output to FILE
  --model-info               describe the model (-m FILE): metadata, tensors and bytes
                             by quant type, and the memory needed at --ctx N
  --version                  print the version, the git commit and the backends

Normal CLI commands:
  scripts/download_model.sh q2-imatrix          fetch the real weights (ds4flash.gguf)
  ds4 -p "Why is the sky blue?"                 one answer with thinking
  ds4 --nothink --temp 0 -p "2+2?"              greedy, no thinking
  ds4 -m build/ds4-demo.gguf -p "Hello, ds4"    the small synthetic demo (make run)
  ds4 --model-info --ctx 100000                 memory needed for a 100000-token context

Notes:
  Thinking text is shown in grey on a terminal. Exit status: 0 success, 1 runtime
  failure (model, I/O, context overflow), 2 usage error.

  -h, --help                 this text
)";

constexpr int64_t kIntMax = 0x7fffffff;

uint64_t parse_uint(std::string_view flag, std::string_view v, uint64_t max) {
    uint64_t n = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size() || n == 0 || n > max)
        throw UsageError{cat("invalid value for ", flag, ": ", v)};
    return n;
}

float parse_float(std::string_view flag, std::string_view v, float lo, float hi) {
    // strtof rather than from_chars<float>: g++ 12's libstdc++ has both, but strtof also
    // accepts what users type elsewhere ("1e-3", ".5") the same way.
    const std::string s(v);
    char* end = nullptr;
    const float f = std::strtof(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(f) || f < lo || f > hi)
        throw UsageError{cat("invalid value for ", flag, ": ", v)};
    return f;
}

// Walks argv, handing each flag its value on request.
class ArgReader {
public:
    explicit ArgReader(std::span<char* const> args) : args_(args) {}
    bool done() const { return i_ >= args_.size(); }
    std::string_view next() { return args_[i_++]; }
    std::string_view value(std::string_view flag) {
        if (done()) throw UsageError{cat("missing value for ", flag)};
        return next();
    }

private:
    std::span<char* const> args_;
    size_t i_ = 0;
};

void set_think(Options& o, std::string_view flag, ThinkingMode mode) {
    o.think = mode;
    o.think_flag = std::string(flag);
}

// One flag (and its value); false when the flag is unknown.
bool parse_flag(Options& o, std::string_view f, ArgReader& in) {
    const auto text = [&] { return std::string(in.value(f)); };
    if (f == "-m" || f == "--model") {
        o.model = text();
        o.model_given = true;
    } else if (f == "-p" || f == "--prompt") {
        o.prompt = text();
    } else if (f == "--prompt-file") {
        o.prompt_file = text();
    } else if (f == "-sys" || f == "--system") {
        o.system = text();
    } else if (f == "-n" || f == "--tokens") {
        o.n_predict = parse_uint(f, in.value(f), kIntMax);
    } else if (f == "-c" || f == "--ctx") {
        o.ctx = parse_uint(f, in.value(f), kIntMax);
    } else if (f == "-t" || f == "--threads") {
        o.threads = static_cast<unsigned>(parse_uint(f, in.value(f), 4096));
    } else if (f == "--temp") {
        o.sampling.temperature = parse_float(f, in.value(f), 0, 100);
    } else if (f == "--top-k") {
        o.sampling.top_k = static_cast<int>(parse_uint(f, in.value(f), SamplingParams::kMaxTopK));
    } else if (f == "--top-p") {
        o.sampling.top_p = parse_float(f, in.value(f), 0, 1);
    } else if (f == "--min-p") {
        o.sampling.min_p = parse_float(f, in.value(f), 0, 1);
    } else if (f == "--seed") {
        o.sampling.seed = parse_uint(f, in.value(f), UINT64_MAX);
    } else if (f == "--think") {
        set_think(o, f, ThinkingMode::high);
    } else if (f == "--think-max") {
        set_think(o, f, ThinkingMode::max);
    } else if (f == "--nothink") {
        set_think(o, f, ThinkingMode::none);
    } else if (f == "--cpu") {
        o.cuda = false;
    } else if (f == "--cuda") {
        o.cuda = true;
    } else if (f == "--mtp") {
        o.mtp = text();
    } else if (f == "--mtp-draft") {
        o.mtp_draft = static_cast<uint32_t>(parse_uint(f, in.value(f), 16));
    } else if (f == "--dump-tokens") {
        o.dump_tokens = true;
    } else if (f == "--dump-logprobs") {
        o.dump_logprobs = text();
    } else if (f == "--logprobs-top-k") {
        o.logprobs_top_k = static_cast<unsigned>(parse_uint(f, in.value(f), 128));
    } else if (f == "--trace") {
        o.trace = text();
    } else if (f == "--dir-steering-file") {
        o.steering.file = text();
    } else if (f == "--dir-steering-ffn") {
        o.steering.ffn = parse_float(f, in.value(f), -100, 100);
    } else if (f == "--dir-steering-attn") {
        o.steering.attn = parse_float(f, in.value(f), -100, 100);
    } else if (f == "--verbose") {
        o.verbose = true;
    } else if (f == "-h" || f == "--help") {
        o.help = true;
    } else if (f == "--version") {
        o.version = true;
    } else if (f == "--model-info") {
        o.model_info = true;
    } else {
        return false;
    }
    return true;
}

void check_combinations(const Options& o) {
    if (o.prompt && o.prompt_file) throw UsageError{"specify only one prompt source"};
    if (o.steering.file.empty() && (o.steering.ffn.value_or(0) != 0 || o.steering.attn.value_or(0) != 0))
        throw UsageError{"--dir-steering-ffn/--dir-steering-attn need --dir-steering-file"};
    if (o.dump_tokens && !o.one_shot())
        throw UsageError{"--dump-tokens needs -p TEXT or --prompt-file FILE"};
    if (!o.dump_logprobs.empty() && !o.one_shot())
        throw UsageError{"--dump-logprobs needs -p TEXT or --prompt-file FILE"};
    if (o.model_info && (o.one_shot() || o.dump_tokens || !o.dump_logprobs.empty()))
        throw UsageError{"--model-info takes no prompt (only -m FILE and --ctx N)"};
}

}  // namespace

Options parse_options(std::span<char* const> args) {
    Options o;
    ArgReader in(args);
    while (!in.done()) {
        const std::string_view f = in.next();
        if (f == "--server") throw UsageError{"use ds4-server for the HTTP server"};
        if (!parse_flag(o, f, in)) throw UsageError{cat("unknown option: ", f)};
        if (o.help || o.version) return o;
    }
    check_combinations(o);
    return o;
}

std::string_view help_text() { return kHelp; }

unsigned resolve_threads(unsigned option) {
    if (option) return option;
    if (const char* env = std::getenv("DS4_THREADS")) {
        unsigned n = 0;
        const std::string_view v(env);
        const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec == std::errc() && end == v.data() + v.size() && n > 0) return n;
    }
    return std::clamp(std::thread::hardware_concurrency(), 1u, 12u);
}

}  // namespace ds4::cli
