#include "cli/generate.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>

#include "ds4/error.h"
#include "text/chat_encode.h"

namespace ds4::cli {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

Transcript::Transcript(Tokenizer tokenizer, std::string system, bool think_max)
    : tok_(std::move(tokenizer)), system_(std::move(system)), think_max_(think_max) {
    clear();
}

void Transcript::clear() {
    tokens_.assign(1, tok_.specials().bos);
    if (think_max_) tok_.encode_text(text::kThinkMaxPrefix, tokens_);
    tok_.encode_text(system_, tokens_);
}

void Transcript::set_rendered(std::string_view rendered) { tokens_ = tok_.encode_chat(rendered); }

void Transcript::add_user_turn(std::string_view text, ThinkingMode mode) {
    const SpecialTokens& s = tok_.specials();
    tokens_.push_back(s.user);
    tok_.encode_text(text, tokens_);
    tokens_.push_back(s.assistant);
    tokens_.push_back(mode == ThinkingMode::none ? s.think_end : s.think);
}

bool Transcript::set_think_max(bool on) {
    if (on == think_max_) return false;
    think_max_ = on;
    const std::vector<TokenId> prefix = tok_.encode_text(text::kThinkMaxPrefix);
    if (on) {
        tokens_.insert(tokens_.begin() + 1, prefix.begin(), prefix.end());
    } else {
        tokens_.erase(tokens_.begin() + 1,
                      tokens_.begin() + 1 + static_cast<std::ptrdiff_t>(prefix.size()));
    }
    return true;
}

Generator::Generator(Engine& engine, TokenId eos)
    : engine_(engine), eos_(eos), seq_(engine.create_sequence()) {}

bool Generator::prefill(std::span<const TokenId> transcript, const ProgressFn& progress,
                        const std::atomic<bool>& stop, TurnStats& stats) {
    if (evaluated_ > transcript.size()) invalidate();
    const auto todo = transcript.subspan(evaluated_);
    stats.prompt_tokens = transcript.size();
    stats.prefilled = todo.size();
    if (todo.empty()) fail("internal: nothing to prefill (the transcript is already in the KV)");
    const auto start = Clock::now();
    for (size_t done = 0; done < todo.size();) {
        if (stop.load()) return false;
        const size_t n = std::min<size_t>(kChunk, todo.size() - done);
        const bool last = done + n == todo.size();
        batch_.clear();
        batch_.add(seq_, todo.subspan(done, n), last ? LogitsWanted::Last : LogitsWanted::None);
        engine_.step(batch_, logits_);
        done += n;
        evaluated_ += n;
        stats.prefill_seconds = seconds_since(start);
        if (progress) progress(done, todo.size(), stats.prefill_seconds);
    }
    return true;
}

std::vector<TokenId> Generator::generate(Sampler& sampler, uint64_t max_tokens,
                                         const TokenFn& on_token, const std::atomic<bool>& stop,
                                         TurnStats& stats) {
    if (mtp_draft_ > 1 && engine_.has_mtp() && sampler.params().temperature <= 0)
        return generate_speculative(max_tokens, on_token, stop, stats);
    std::vector<TokenId> out;
    const auto start = Clock::now();
    stats.finish = "length";
    while (out.size() < max_tokens) {
        if (stop.load()) {
            stats.finish = "interrupted";
            break;
        }
        const TokenId id = sampler.sample(logits());
        ++stats.generated;
        if (id == eos_) {
            stats.finish = "stop";
            break;
        }
        out.push_back(id);
        if (on_token) on_token(id);
        if (out.size() < max_tokens) feed(id);
    }
    stats.generate_seconds = seconds_since(start);
    return out;
}

// The loop of generate() with each feed replaced by a speculative step: the pending token
// and the accepted drafts go in together and are passed on one by one. Same tokens, same
// stop rules (EOS is never drafted, never fed), same KV state at the end.
std::vector<TokenId> Generator::generate_speculative(uint64_t max_tokens, const TokenFn& on_token,
                                                     const std::atomic<bool>& stop, TurnStats& stats) {
    std::vector<TokenId> out;
    const auto start = Clock::now();
    stats.finish = "length";
    SpeculativeDecoder dec(engine_, seq_, std::min<uint32_t>(mtp_draft_, SpeculativeDecoder::kMaxDraft),
                           [eos = eos_](int32_t t) { return t == eos; });
    TokenId pending = logits_.argmax(0);
    auto emit = [&](TokenId id) {
        ++stats.generated;
        out.push_back(id);
        if (on_token) on_token(id);
    };
    while (out.size() < max_tokens) {
        if (stop.load()) {
            stats.finish = "interrupted";
            break;
        }
        if (pending == eos_) {
            ++stats.generated;
            stats.finish = "stop";
            break;
        }
        emit(pending);
        if (out.size() == max_tokens) break;
        const auto room = static_cast<uint32_t>(std::min<uint64_t>(max_tokens - out.size() - 1, 16));
        const SpeculativeDecoder::Step s = dec.advance(pending, room);
        for (TokenId id : s.accepted) emit(id);
        pending = s.next;
        evaluated_ = engine_.sequence_length(seq_);
    }
    spec_stats_ = dec.stats();
    stats.generate_seconds = seconds_since(start);
    return out;
}

void Generator::feed(TokenId id) {
    batch_.clear();
    batch_.add_token(seq_, id);
    engine_.step(batch_, logits_);
    ++evaluated_;
}

void Generator::invalidate() {
    engine_.reset_sequence(seq_);
    evaluated_ = 0;
}

uint64_t generation_budget(uint64_t prompt_tokens, uint64_t ctx, uint64_t n_predict) {
    if (prompt_tokens + 1 >= ctx)
        fail("prompt of ", prompt_tokens, " tokens does not fit the context (ctx=", ctx,
             "): use a larger --ctx");
    return std::min(n_predict, ctx - prompt_tokens - 1);
}

uint64_t resolve_seed(uint64_t option) {
    if (option) return option;
    const auto now = static_cast<uint64_t>(std::time(nullptr));
    const uint64_t seed = now ^ (static_cast<uint64_t>(getpid()) << 32) ^
                          static_cast<uint64_t>(std::clock());
    return seed ? seed : 1;
}

}  // namespace ds4::cli
