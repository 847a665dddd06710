// ds4: the preliminary command-line front end, built on include/ds4/engine.h only.
// One prompt, greedy decoding, a speed line. Text goes through a temporary byte-level
// mapping (byte_tokens.h) until the real tokenizer lands.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "cli/byte_tokens.h"
#include "ds4/engine.h"
#include "ds4/error.h"

namespace {

constexpr std::string_view kDefaultModel = "ds4flash.gguf";

constexpr std::string_view kHelp = R"(Usage: ds4 [options] -p TEXT

Runs one prompt through a DeepSeek V4 Flash GGUF and greedy-decodes the answer.
This is a preliminary CLI: the prompt is mapped byte by byte onto the vocabulary's
byte tokens (the GPT-2 byte-to-unicode characters) and generated tokens are printed
the same way (other tokens as <id>). The real BPE tokenizer, the chat template,
sampling and interactive chat come in later issues.

Model and runtime:
  -m, --model FILE     model GGUF (default ds4flash.gguf)
  -c, --ctx N          context size in tokens (default 32768)
  -t, --threads N      CPU threads (default min(12, online CPUs))

Prompt and generation:
  -p, --prompt TEXT    prompt text
  -n, --tokens N       tokens to generate (default 32)

Examples:
  ds4 -m build/ds4-demo.gguf -p "Hello, ds4" -n 32   the embedded demo (make run)
  scripts/download_model.sh q2-imatrix              fetch the real weights

  -h, --help           this text
)";

struct Args {
    std::optional<std::string> model;
    std::optional<std::string> prompt;
    uint64_t ctx = 32768;
    unsigned threads = 0;
    uint64_t n_predict = 32;
};

// Thrown for command-line mistakes: exit status 2, like ds4.
struct UsageError {
    std::string message;
};

uint64_t parse_positive(std::string_view flag, std::string_view v) {
    uint64_t n = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size() || n == 0 || n > 0x7fffffff)
        throw UsageError{ds4::cat("invalid value for ", flag, ": ", v)};
    return n;
}

// Returns nullopt for --help.
std::optional<Args> parse_args(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string_view f = argv[i];
        if (f == "-h" || f == "--help") return std::nullopt;
        const auto value = [&]() -> std::string_view {
            if (i + 1 >= argc) throw UsageError{ds4::cat("missing value for ", f)};
            return argv[++i];
        };
        if (f == "-m" || f == "--model") a.model = std::string(value());
        else if (f == "-p" || f == "--prompt") a.prompt = std::string(value());
        else if (f == "-c" || f == "--ctx") a.ctx = parse_positive(f, value());
        else if (f == "-t" || f == "--threads") a.threads = static_cast<unsigned>(parse_positive(f, value()));
        else if (f == "-n" || f == "--tokens") a.n_predict = parse_positive(f, value());
        else throw UsageError{ds4::cat("unknown option: ", f)};
    }
    if (!a.prompt) throw UsageError{"no prompt: pass -p TEXT (interactive chat is not implemented yet)"};
    return a;
}

unsigned default_threads() {
    return std::clamp(std::thread::hardware_concurrency(), 1u, 12u);
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

double rate(uint64_t tokens, double seconds) { return seconds > 0 ? tokens / seconds : 0.0; }

int run(const Args& a) {
    const std::string path = a.model.value_or(std::string(kDefaultModel));
    if (!a.model && !std::filesystem::exists(path)) {
        std::cerr << "ds4: no model: " << kDefaultModel
                  << " not found; get the weights with scripts/download_model.sh q2-imatrix, "
                     "or run the embedded demo (make run, or ds4 -m build/ds4-demo.gguf -p TEXT)\n";
        return 1;
    }
    ds4::EngineOptions opt;
    opt.ctx = a.ctx;
    opt.threads = a.threads ? a.threads : default_threads();
    ds4::Engine engine = ds4::Engine::open(path, opt);
    if (engine.model().synthetic)
        std::cerr << "ds4: " << path
                  << ": small synthetic random-weight model; output is not meaningful text\n";
    std::cerr << "ds4: " << engine.memory_estimate().report();

    const ds4::cli::ByteTokens bytes(engine.vocab());
    const std::vector<int32_t> prompt = bytes.encode(*a.prompt);
    if (prompt.empty()) throw ds4::Error("empty prompt");
    if (prompt.size() > a.ctx) ds4::fail("prompt of ", prompt.size(), " tokens exceeds --ctx ", a.ctx);
    // The last generated token is never fed back, so ctx − prompt + 1 tokens fit.
    const uint64_t n_gen = std::min<uint64_t>(a.n_predict, a.ctx - prompt.size() + 1);

    const ds4::SequenceId seq = engine.create_sequence();
    ds4::Batch batch;
    batch.add(seq, prompt);
    auto t0 = std::chrono::steady_clock::now();
    ds4::Logits logits = engine.step(batch);
    const double prefill_s = seconds_since(t0);

    bool ends_with_newline = false;
    t0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < n_gen; ++i) {
        const int32_t token = logits.argmax(0);
        const std::string text = bytes.decode(token);
        std::cout << text << std::flush;
        ends_with_newline = text == "\n";
        if (i + 1 == n_gen) break;
        batch.clear();
        batch.add_token(seq, token);
        engine.step(batch, logits);
    }
    const double gen_s = seconds_since(t0);
    if (!ends_with_newline) std::cout << '\n';
    std::cout.flush();
    std::fprintf(stderr, "ds4: prefill: %.2f t/s, generation: %.2f t/s\n",
                 rate(prompt.size(), prefill_s), rate(n_gen > 0 ? n_gen - 1 : 0, gen_s));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::optional<Args> args = parse_args(argc, argv);
        if (!args) {
            std::cout << kHelp;
            return 0;
        }
        return run(*args);
    } catch (const UsageError& e) {
        std::cerr << "ds4: " << e.message << "\n" << "usage: ds4 [options] -p TEXT (see ds4 --help)\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "ds4: " << e.what() << "\n";
        return 1;
    }
}
