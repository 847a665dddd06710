// What the CLI prints (interface.md §5.5, §5.6, §1.8): the answer stream with thinking
// shown apart, the prefill progress bar, the speed line, token and logprob dumps, and the
// --trace file.
#pragma once

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cli/generate.h"
#include "ds4/chat.h"
#include "ds4/sampler.h"
#include "ds4/tokenizer.h"

namespace ds4::cli {

inline constexpr std::string_view kGrey = "\x1b[90m";
inline constexpr std::string_view kReset = "\x1b[0m";

// Streams generated tokens to `out` as text. In thinking modes the turn starts inside
// the reasoning (the prompt ends with <think>): reasoning is grey when `color`, the
// <think>/</think> tokens are not printed, and a newline separates reasoning from the
// answer. Filtering works on token ids, not bytes: the tags are single special tokens.
class AnswerPrinter {
public:
    AnswerPrinter(Tokenizer tokenizer, ThinkingMode mode, bool color, std::FILE* out);

    void token(TokenId id);
    // Releases held bytes, ends the grey colour, and ensures the output ends with a newline.
    void finish();
    const std::string& raw() const { return raw_; }  // every byte generated, tags included

private:
    void write(std::string_view bytes);
    void set_grey(bool on);

    Tokenizer tok_;
    StreamDecoder decoder_;
    bool color_;
    std::FILE* out_;
    bool in_reasoning_;
    bool grey_ = false;
    bool at_line_start_ = true;
    std::string raw_;
};

// "processing N input tokens: a/N (p%), X t/s" on stderr, rewritten in place on a TTY,
// one line per update otherwise. Silent when disabled.
class PrefillProgress {
public:
    PrefillProgress(bool enabled, bool tty) : enabled_(enabled), tty_(tty) {}
    void operator()(uint64_t done, uint64_t total, double seconds);

private:
    bool enabled_, tty_;
};

// "ds4: prefill: X t/s, generation: Y t/s".
std::string speed_line(const TurnStats& s);

// --dump-tokens (§1.8): "[id, id, ...]" then "%6d  <vocab string>" per token.
std::string format_token_dump(const Tokenizer& tok, std::span<const TokenId> ids);

// --dump-logprobs (§5.6): one step's line and the whole file.
struct LogprobStep {
    TokenId selected = 0;
    std::vector<std::pair<TokenId, float>> top;  // id, logit; most likely first
    std::vector<double> logprobs;                // matching `top`
};
// The top-k alternatives of a logits row (ties: lower id first) with full-vocabulary
// log-softmax values computed in double precision.
LogprobStep logprob_step(std::span<const float> logits, TokenId selected, size_t top_k);
std::string format_logprob_dump(const Tokenizer& tok, uint64_t prompt_tokens, uint64_t ctx,
                                size_t top_k, std::span<const LogprobStep> steps);

// JSON string literal of arbitrary bytes (invalid UTF-8 becomes U+FFFD; the dump's
// "bytes" arrays carry the exact bytes).
std::string json_string(std::string_view bytes);

// The --trace file: unbuffered, truncated at start, one block per turn.
class Trace {
public:
    // An empty path: disabled. Throws ds4::Error when the file cannot be opened.
    explicit Trace(const std::string& path);
    ~Trace();
    Trace(const Trace&) = delete;
    Trace& operator=(const Trace&) = delete;

    bool enabled() const { return f_ != nullptr; }
    void begin_turn(ThinkingMode mode, const SamplingParams& sp, uint64_t seed,
                    const std::string& rendered_prompt, uint64_t prompt_tokens);
    void end_turn(const TurnStats& stats, std::string_view generated);

private:
    std::FILE* f_ = nullptr;
    unsigned turn_ = 0;
};

}  // namespace ds4::cli
