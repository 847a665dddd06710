// The CLI's conversation state (interface.md §2.6, §5.3, §5.4): a token transcript built
// from the real tokenizer, and one engine sequence that holds a prefix of it and grows
// turn by turn.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ds4/chat.h"
#include "ds4/engine.h"
#include "ds4/sampler.h"
#include "ds4/speculative.h"
#include "ds4/tokenizer.h"

namespace ds4::cli {

// The token transcript of the CLI: BOS, (Think Max prefix), system text, then per turn
// <｜User｜> text <｜Assistant｜> <think>|</think>, every generated token (reasoning kept:
// the REPL never drops it) and EOS. Text parts are plain-text BPE: special-token strings
// typed by the user stay text.
class Transcript {
public:
    Transcript(Tokenizer tokenizer, std::string system, bool think_max);

    const std::vector<TokenId>& tokens() const { return tokens_; }
    size_t size() const { return tokens_.size(); }

    // A prompt that starts with the BOS string is a fully rendered chat (§2.6): replaces
    // everything with its tokens, specials recognised, no template.
    void set_rendered(std::string_view rendered);
    void add_user_turn(std::string_view text, ThinkingMode mode);
    void add_generated(std::span<const TokenId> ids) { tokens_.insert(tokens_.end(), ids.begin(), ids.end()); }
    void add_eos() { tokens_.push_back(tok_.specials().eos); }
    void truncate(size_t n) { tokens_.resize(n); }
    // Inserts or removes the Think Max prefix after BOS; true when the tokens changed
    // (the live KV then no longer matches).
    bool set_think_max(bool on);
    void clear();  // back to BOS, prefix and system text
    bool think_max() const { return think_max_; }

private:
    Tokenizer tok_;
    std::string system_;
    bool think_max_;
    std::vector<TokenId> tokens_;
};

// Timings of one turn, for the speed line and /stats.
struct TurnStats {
    uint64_t prompt_tokens = 0;   // transcript tokens before generation
    uint64_t prefilled = 0;       // tokens evaluated by the prefill (the rest was cached)
    double prefill_seconds = 0;
    uint64_t generated = 0;       // tokens sampled (EOS included)
    double generate_seconds = 0;
    std::string finish;           // "stop" (EOS), "length", "interrupted"
};

using ProgressFn = std::function<void(uint64_t done, uint64_t total, double seconds)>;
using TokenFn = std::function<void(TokenId)>;

// One engine sequence that holds transcript[0, evaluated()) in its KV state.
class Generator {
public:
    Generator(Engine& engine, TokenId eos);

    // Evaluates transcript[evaluated(), end) in chunks, calling `progress` after each.
    // Returns false when `stop` was set between chunks (the KV then holds part of the
    // prompt: call invalidate() or truncate the transcript to evaluated()).
    bool prefill(std::span<const TokenId> transcript, const ProgressFn& progress,
                 const std::atomic<bool>& stop, TurnStats& stats);
    // Samples up to `max_tokens` tokens after a prefill, calling `on_token` for each (EOS
    // ends the turn and is not passed on). Every token but the last is fed back into the
    // KV. Returns the tokens, EOS excluded; stats.finish tells why it ended.
    std::vector<TokenId> generate(Sampler& sampler, uint64_t max_tokens, const TokenFn& on_token,
                                  const std::atomic<bool>& stop, TurnStats& stats);
    // The logits after the last evaluated token (valid after prefill()).
    std::span<const float> logits() const { return logits_.row(0); }
    // Feeds one token (greedy dumps drive decoding themselves).
    void feed(TokenId id);
    // Forgets the KV state: the next prefill starts from token 0.
    void invalidate();
    // Speculative greedy decoding (include/ds4/speculative.h) with n MTP drafts per step,
    // used by generate() when n > 1, the engine has an MTP block and the sampler is greedy
    // (interface.md §4.8). The tokens are those of plain greedy decoding.
    void set_mtp_draft(uint32_t n) { mtp_draft_ = n; }
    const SpeculativeStats& speculative_stats() const { return spec_stats_; }
    uint64_t evaluated() const { return evaluated_; }

    static constexpr uint64_t kChunk = 256;  // prefill chunk: progress granularity

private:
    Engine& engine_;
    TokenId eos_;
    SequenceId seq_;
    Batch batch_;
    Logits logits_;
    uint64_t evaluated_ = 0;
    uint32_t mtp_draft_ = 1;
    SpeculativeStats spec_stats_;  // of the last speculative generate()

    std::vector<TokenId> generate_speculative(uint64_t max_tokens, const TokenFn& on_token,
                                              const std::atomic<bool>& stop, TurnStats& stats);
};

// The most tokens a turn may generate: -n clamped to the context room (§4.6). Throws
// ds4::Error when the prompt leaves no room ("prompt of N tokens does not fit ...").
uint64_t generation_budget(uint64_t prompt_tokens, uint64_t ctx, uint64_t n_predict);

// The seed of a run: --seed, else time ^ (pid << 32) ^ clock() (§4.4).
uint64_t resolve_seed(uint64_t option);

}  // namespace ds4::cli
