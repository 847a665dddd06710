// The interactive chat (interface.md §5.4): a transcript that grows turn by turn over one
// live engine sequence, slash commands, Ctrl+C handling.
#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <utility>

#include "cli/app.h"
#include "cli/generate.h"
#include "cli/line_editor.h"
#include "cli/output.h"
#include "ds4/error.h"

namespace ds4::cli {

namespace {

constexpr std::string_view kCommands = R"(Commands:
  /help          this list
  /think         thinking mode (default)
  /think-max     Think Max (needs a context of at least 393216 tokens)
  /nothink       answer without thinking
  /ctx N         new context size N (the conversation is kept and re-prefilled)
  /read FILE     send the contents of FILE as the next message
  /clear         forget the conversation
  /stats         transcript, context and speed of the last turn
  /quit, /exit   leave (Ctrl+D too)
Ctrl+C stops an answer; Ctrl+C twice at an empty prompt exits.
)";

void on_sigint(int) { g_interrupted.store(true); }

// SIGINT sets g_interrupted; no SA_RESTART so a blocked read returns EINTR.
void install_sigint_handler() {
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, nullptr);
}

std::string history_path() {
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : ".") + "/.ds4_history";
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

class Chat {
public:
    explicit Chat(const Options& o)
        : opt_(o), ctx_(o.ctx), requested_(o.think), tok_(load_tokenizer(o)),
          transcript_(tok_, o.system, false), trace_(o.trace) {
        reopen(ctx_);
        apply_mode(gate_thinking(requested_, o.think_flag, ctx_));
    }

    // One input line; false to leave.
    bool handle(std::string_view line) {
        if (line.empty()) return true;
        if (line.front() != '/') {
            turn(line);
            return true;
        }
        return command(line);
    }

private:
    bool command(std::string_view line) {
        const size_t sp = line.find(' ');
        const std::string_view name = line.substr(0, sp);
        const std::string_view arg = sp == std::string_view::npos ? "" : trim(line.substr(sp + 1));
        if (name == "/quit" || name == "/exit") return false;
        if (name == "/help") {
            std::fputs(kCommands.data(), stdout);
        } else if (name == "/think") {
            set_mode(ThinkingMode::high);
        } else if (name == "/think-max") {
            set_mode(ThinkingMode::max);
        } else if (name == "/nothink") {
            set_mode(ThinkingMode::none);
        } else if (name == "/ctx") {
            set_ctx(arg);
        } else if (name == "/read") {
            read_and_send(std::string(arg));
        } else if (name == "/clear") {
            transcript_.clear();
            gen_->invalidate();
            std::puts("Conversation cleared.");
        } else if (name == "/stats") {
            print_stats();
        } else {
            std::printf("unknown command: %.*s\ntype /help for commands\n",
                        static_cast<int>(line.size()), line.data());
        }
        return true;
    }

    void reopen(uint64_t ctx) {
        gen_.reset();
        engine_.reset();
        engine_ = std::make_unique<Engine>(open_engine(opt_, ctx));
        gen_ = std::make_unique<Generator>(*engine_, tok_.specials().eos);
        gen_->set_mtp_draft(opt_.mtp_draft);
        ctx_ = ctx;
    }

    // Puts the Think Max prefix in or out of the transcript; the KV no longer matches
    // when it changes.
    void apply_mode(ThinkingMode mode) {
        mode_ = mode;
        if (transcript_.set_think_max(mode == ThinkingMode::max)) gen_->invalidate();
    }

    void set_mode(ThinkingMode requested) {
        requested_ = requested;
        apply_mode(effective_thinking_mode(requested, ctx_));
        if (requested == ThinkingMode::max && mode_ != ThinkingMode::max)
            std::printf("Thinking mode: high (ctx below %llu).\n",
                        static_cast<unsigned long long>(kThinkMaxMinContext));
        else
            std::printf("Thinking mode: %s.\n", std::string(thinking_mode_name(mode_)).c_str());
    }

    void set_ctx(std::string_view arg) {
        uint64_t n = 0;
        const auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
        if (ec != std::errc() || end != arg.data() + arg.size() || n == 0 || n > 0x7fffffff) {
            std::printf("usage: /ctx N (a context size in tokens > 0)\n");
            return;
        }
        try {
            reopen(n);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "ds4: %s\n", e.what());
            reopen(ctx_);
            return;
        }
        apply_mode(gate_thinking(requested_, "/think-max", ctx_));
        std::printf("Context: %llu tokens (the conversation is re-prefilled on the next turn).\n",
                    static_cast<unsigned long long>(ctx_));
    }

    void read_and_send(const std::string& path) {
        if (path.empty()) {
            std::printf("usage: /read FILE\n");
            return;
        }
        std::string text;
        try {
            text = read_file(path);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "ds4: %s\n", e.what());
            return;
        }
        turn(text);
    }

    void print_stats() {
        std::printf("transcript: %zu tokens, live KV: %llu tokens, context: %llu, thinking: %s\n",
                    transcript_.size(), static_cast<unsigned long long>(gen_->evaluated()),
                    static_cast<unsigned long long>(ctx_),
                    std::string(thinking_mode_name(mode_)).c_str());
        if (last_.finish.empty()) {
            std::printf("no turn yet\n");
        } else {
            std::printf("last turn: %llu prompt tokens (%llu prefilled), %llu generated, %s\n%s\n",
                        static_cast<unsigned long long>(last_.prompt_tokens),
                        static_cast<unsigned long long>(last_.prefilled),
                        static_cast<unsigned long long>(last_.generated), last_.finish.c_str(),
                        speed_line(last_).c_str());
        }
    }

    // One user message: prefill the new part of the transcript, stream the answer, keep
    // it (and EOS) in the transcript. Nothing is kept for a turn that fails or is stopped
    // before its first token.
    void turn(std::string_view text) {
        const size_t before = transcript_.size();
        transcript_.add_user_turn(text, mode_);
        TurnStats stats;
        try {
            const uint64_t budget = generation_budget(transcript_.size(), ctx_, opt_.n_predict);
            Sampler sampler(opt_.sampling);
            sampler.reseed(resolve_seed(opt_.sampling.seed));
            trace_.begin_turn(mode_, opt_.sampling, sampler.seed(),
                              tok_.decode(std::span(transcript_.tokens()).subspan(before)),
                              transcript_.size());
            g_interrupted.store(false);
            const PrefillProgress progress(show_diagnostics(opt_), isatty(STDERR_FILENO) != 0);
            if (!gen_->prefill(transcript_.tokens(), progress, g_interrupted, stats)) {
                rollback(before, "(interrupted)");
                return;
            }
            AnswerPrinter printer(tok_, mode_, isatty(STDOUT_FILENO) != 0, stdout);
            const std::vector<TokenId> out = gen_->generate(
                sampler, budget, [&](TokenId id) { printer.token(id); }, g_interrupted, stats);
            printer.finish();
            trace_.end_turn(stats, printer.raw());
            last_ = stats;
            interrupted_ = stats.finish == "interrupted";
            if (out.empty() && interrupted_) {
                rollback(before, "(interrupted)");
                return;
            }
            transcript_.add_generated(out);
            transcript_.add_eos();
            if (interrupted_) std::puts("(interrupted)");
            if (show_diagnostics(opt_)) std::fprintf(stderr, "%s\n", speed_line(stats).c_str());
        } catch (const std::exception& e) {
            rollback(before, "");
            std::fprintf(stderr, "ds4: %s\n", e.what());
        }
    }

    void rollback(size_t before, std::string_view note) {
        transcript_.truncate(before);
        gen_->invalidate();
        if (!note.empty()) std::printf("%.*s\n", static_cast<int>(note.size()), note.data());
        interrupted_ = note == "(interrupted)";
    }

public:
    // Whether the last turn ended with Ctrl+C (a Ctrl+C at the prompt right after exits).
    bool consume_interrupted() { return std::exchange(interrupted_, false); }

private:
    const Options& opt_;
    uint64_t ctx_;
    ThinkingMode requested_;
    ThinkingMode mode_ = ThinkingMode::high;
    Tokenizer tok_;
    Transcript transcript_;
    Trace trace_;
    std::unique_ptr<Engine> engine_;
    std::unique_ptr<Generator> gen_;
    TurnStats last_;
    bool interrupted_ = false;
};

}  // namespace

int run_interactive(const Options& o) {
    Chat chat(o);
    install_sigint_handler();
    std::fputs(kCommands.data(), stdout);
    LineEditor editor("ds4", "ds4> ", history_path(), g_interrupted);
    bool armed = false;  // a Ctrl+C just happened: the next one at the prompt exits
    for (std::string line;;) {
        std::fflush(stdout);
        g_interrupted.store(false);
        const LineEditor::Status st = editor.read(line);
        if (st == LineEditor::Status::eof) {
            std::puts("");
            return 0;
        }
        if (st == LineEditor::Status::interrupted) {
            if (armed) {
                std::puts("");
                return 0;
            }
            armed = true;
            std::puts("\n(Ctrl+C again to exit, or /quit)");
            continue;
        }
        armed = false;
        const std::string_view text = trim(line);
        editor.remember(std::string(text));
        if (!chat.handle(text)) return 0;
        armed = chat.consume_interrupted();
    }
}

}  // namespace ds4::cli
