// Speculative greedy decoding (see include/ds4/speculative.h).
#include "ds4/speculative.h"

#include <algorithm>
#include <limits>

#include "ds4/error.h"

namespace ds4 {

SpeculativeDecoder::SpeculativeDecoder(Engine& engine, SequenceId seq, uint32_t n_draft,
                                       std::function<bool(int32_t)> is_stop)
    : SpeculativeDecoder(engine, seq, n_draft, Drafter{}, std::move(is_stop)) {}

SpeculativeDecoder::SpeculativeDecoder(Engine& engine, SequenceId seq, uint32_t n_draft,
                                       Drafter drafter, std::function<bool(int32_t)> is_stop)
    : engine_(engine),
      seq_(seq),
      n_draft_(n_draft),
      drafter_(std::move(drafter)),
      is_stop_(std::move(is_stop)) {
    if (n_draft > kMaxDraft)
        fail("speculative decoding: ", n_draft, " drafts per step exceed the maximum ", kMaxDraft);
    if (n_draft > 0 && !drafter_ && !engine.has_mtp())
        fail("speculative decoding: the engine has no MTP block (EngineOptions::mtp_path)");
    if (engine.sequence_length(seq) == 0)
        fail("speculative decoding: sequence ", seq, " is empty (prefill the prompt first)");
    chunk_.reserve(n_draft + 1);
    rows_.reserve(n_draft + 1);
}

// Drafts up to n tokens after `pending` into chunk_ = [pending, drafts...], cut before the
// first stop token; returns the number of drafts kept.
uint32_t SpeculativeDecoder::draft(int32_t pending, uint32_t n) {
    chunk_.assign(1 + n, pending);
    if (n == 0) return 0;
    const std::span<int32_t> drafts = std::span<int32_t>(chunk_).subspan(1);
    if (drafter_)
        drafter_(seq_, pending, drafts);
    else
        engine_.mtp_draft_greedy(seq_, pending, drafts);
    uint32_t kept = 0;
    while (kept < n && !(is_stop_ && is_stop_(drafts[kept]))) ++kept;
    chunk_.resize(1 + kept);
    return kept;
}

int32_t SpeculativeDecoder::plain_step(int32_t pending) {
    batch_.clear();
    batch_.add_token(seq_, pending);
    engine_.step(batch_, logits_);
    ++stats_.plain_steps;
    ++stats_.main_tokens;
    ++stats_.committed;
    return logits_.argmax(0);
}

SpeculativeDecoder::Step SpeculativeDecoder::advance(int32_t pending, uint32_t max_drafts) {
    ++stats_.steps;
    const uint64_t len = engine_.sequence_length(seq_), ctx = engine_.options().ctx;
    // the verification feeds 1 + n tokens; with no room at all step() reports the error
    const uint64_t room = ctx > len ? ctx - len - 1 : 0;
    const auto want = static_cast<uint32_t>(std::min<uint64_t>({n_draft_, max_drafts, room}));
    const uint32_t n = draft(pending, want);
    if (n == 0) return {{}, plain_step(pending)};

    // One step for the pending token and every draft, logits after each: row i is the
    // main model's greedy choice after chunk_[i], to compare with draft chunk_[i + 1].
    const SequenceCheckpoint before = engine_.checkpoint(seq_);
    rows_.resize(n + 1);
    for (uint32_t i = 0; i <= n; ++i) rows_[i] = i;
    batch_.clear();
    batch_.add(seq_, chunk_, rows_);
    engine_.step(batch_, logits_);
    ++stats_.verify_steps;
    stats_.main_tokens += n + 1;
    stats_.drafted += n;
    uint32_t k = 0;
    while (k < n && logits_.argmax(k) == chunk_[k + 1]) ++k;
    const int32_t next = logits_.argmax(k);
    stats_.accepted += k;
    stats_.committed += k + 1;
    if (k < n) {
        // Drafts k.. were wrong: back to before the verification, then the accepted prefix
        // again (same tokens in one chunk: the same state as if only they had been fed).
        engine_.restore(seq_, before);
        batch_.clear();
        batch_.add(seq_, std::span<const int32_t>(chunk_).first(k + 1), LogitsWanted::None);
        engine_.step(batch_, logits_);
        ++stats_.replay_steps;
        stats_.main_tokens += k + 1;
    }
    return {std::span<const int32_t>(chunk_).subspan(1, k), next};
}

std::vector<int32_t> generate_greedy(Engine& engine, SequenceId seq, int32_t first,
                                     uint64_t max_tokens, uint32_t n_draft,
                                     const std::function<bool(int32_t)>& is_stop,
                                     SpeculativeStats* stats,
                                     const std::function<void(int32_t)>& on_token) {
    SpeculativeDecoder dec(engine, seq, n_draft, is_stop);
    std::vector<int32_t> out = generate_greedy(dec, first, max_tokens, is_stop, on_token);
    if (stats) *stats = dec.stats();
    return out;
}

std::vector<int32_t> generate_greedy(SpeculativeDecoder& dec, int32_t first, uint64_t max_tokens,
                                     const std::function<bool(int32_t)>& is_stop,
                                     const std::function<void(int32_t)>& on_token) {
    std::vector<int32_t> out;
    auto emit = [&](int32_t t) {
        out.push_back(t);
        if (on_token) on_token(t);
    };
    int32_t pending = first;
    while (out.size() < max_tokens) {
        if (is_stop && is_stop(pending)) break;
        emit(pending);
        if (out.size() == max_tokens) break;  // the last token is not fed, as in plain decoding
        // Accepted drafts are emitted too; keep the last emitted token unfed.
        const uint64_t room = max_tokens - out.size() - 1;
        const auto max_drafts =
            static_cast<uint32_t>(std::min<uint64_t>(room, std::numeric_limits<uint32_t>::max()));
        const SpeculativeDecoder::Step s = dec.advance(pending, max_drafts);
        for (int32_t t : s.accepted) emit(t);
        pending = s.next;
    }
    return out;
}

}  // namespace ds4
