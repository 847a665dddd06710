// Speculative greedy decoding with the MTP block (interface.md §4.8, model.md §10): each
// step drafts up to N tokens with the MTP block (chained on its own output state,
// Engine::mtp_draft_greedy), verifies them in ONE step() of the main model (the pending
// token and the drafts as one chunk, logits after each), keeps the longest prefix the
// main model agrees with plus its own token after it, and rolls back the rest.
//
// The output is token-identical to plain greedy decoding (feed a token, take the argmax,
// lowest id on ties; the engine's logits do not depend on chunking), and so is the
// sequence's state: after a partial acceptance the sequence is restored to the checkpoint
// taken before the verification and the accepted prefix is evaluated again, so the raw
// windows, compressor frontiers and compressed rows are exactly those of a run that never
// saw the rejected drafts.
//
// Cost model: a fully accepted step is one main-model step() for 1 + N tokens; a partially
// accepted one adds a replay step() of the accepted prefix (it avoids re-deriving the
// frontiers in place, which the engine cannot rewind). A rejected first draft costs a
// verify of N + 1 tokens plus a one-token replay.
//
// Where it is used: the ds4 CLI (--mtp FILE --mtp-draft N with --temp 0) through this
// class, and ds4-server's continuous-batching scheduler, which does the same per greedy
// sequence inside its shared step (src/server/scheduler.cpp: add_speculative,
// verify_speculative, settle_speculative): [pending, drafts...] with logits at every index
// as that sequence's batch entry, a checkpoint before the step, restore + replay of the
// confirmed prefix after it.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "ds4/engine.h"

namespace ds4 {

struct SpeculativeStats {
    uint64_t steps = 0;         // advance() calls
    uint64_t verify_steps = 0;  // main-model step() calls that verified drafts
    uint64_t replay_steps = 0;  // main-model step() calls that replayed an accepted prefix
    uint64_t plain_steps = 0;   // main-model step() calls of one token without drafts
    uint64_t drafted = 0;       // draft tokens verified
    uint64_t accepted = 0;      // draft tokens the main model agreed with
    uint64_t committed = 0;     // tokens added to the sequence (pending token + accepted)
    uint64_t main_tokens = 0;   // tokens evaluated by the main model (verify + replay + plain)

    uint64_t main_steps() const { return verify_steps + replay_steps + plain_steps; }
    double acceptance() const { return drafted ? double(accepted) / double(drafted) : 0.0; }
    // Committed tokens per main-model step() (1 without speculation).
    double tokens_per_step() const {
        return main_steps() ? double(committed) / double(main_steps()) : 0.0;
    }
};

class SpeculativeDecoder {
  public:
    // `seq` must already hold at least one token (a prefill) and the engine an MTP block.
    // `n_draft` (0..kMaxDraft) is the most drafts per step; 0 decodes plainly (no MTP
    // needed). Drafts never include a token for which `is_stop` is true (e.g. EOS): such a
    // token can only come back as the main model's pending token, which a caller checks
    // before feeding it, as plain decoding does. Throws ds4::Error for n_draft > 0 without
    // MTP, for an unknown or empty sequence or n_draft > kMaxDraft.
    SpeculativeDecoder(Engine& engine, SequenceId seq, uint32_t n_draft,
                       std::function<bool(int32_t)> is_stop = {});

    // Another draft source (e.g. prompt lookup, or a test oracle): called with the
    // sequence, the pending token and a span to fill with guesses of the tokens after it.
    // Needs no MTP block; everything else is the same.
    using Drafter = std::function<void(SequenceId seq, int32_t pending, std::span<int32_t> drafts)>;
    SpeculativeDecoder(Engine& engine, SequenceId seq, uint32_t n_draft, Drafter drafter,
                       std::function<bool(int32_t)> is_stop = {});

    static constexpr uint32_t kMaxDraft = 16;

    struct Step {
        std::span<const int32_t> accepted;  // drafts now in the sequence after `pending`
        int32_t next;                       // the greedy token after them (not yet fed)
    };
    // Feeds `pending` (the greedy token after the sequence: the argmax of the last logits)
    // followed by the accepted drafts, at most `max_drafts` of them (0: a plain one-token
    // step). Returns the accepted drafts (valid until the next call) and the next pending
    // token. On an error thrown by the engine the sequence may hold part of the step.
    Step advance(int32_t pending, uint32_t max_drafts = kMaxDraft);

    const SpeculativeStats& stats() const { return stats_; }
    uint32_t n_draft() const { return n_draft_; }
    SequenceId sequence() const { return seq_; }

  private:
    uint32_t draft(int32_t pending, uint32_t n);
    int32_t plain_step(int32_t pending);

    Engine& engine_;
    SequenceId seq_;
    uint32_t n_draft_;
    Drafter drafter_;  // empty: Engine::mtp_draft_greedy
    std::function<bool(int32_t)> is_stop_;
    SpeculativeStats stats_;
    std::vector<int32_t> chunk_;  // pending, drafts...
    std::vector<uint32_t> rows_;  // 0..n
    Batch batch_;
    Logits logits_;
};

// Greedy generation of up to `max_tokens` tokens after the sequence, `first` being the
// argmax of its last logits, speculating with `n_draft` drafts per step (0: plain
// decoding through the same loop). Mirrors the plain loop exactly: a stop token ends the
// run and is neither returned nor fed; every returned token but the last is fed (the
// sequence ends as plain decoding leaves it). `on_token` sees each token as it is known.
std::vector<int32_t> generate_greedy(Engine& engine, SequenceId seq, int32_t first,
                                     uint64_t max_tokens, uint32_t n_draft,
                                     const std::function<bool(int32_t)>& is_stop,
                                     SpeculativeStats* stats = nullptr,
                                     const std::function<void(int32_t)>& on_token = {});
// Same, driving an existing decoder (its drafter and n_draft).
std::vector<int32_t> generate_greedy(SpeculativeDecoder& decoder, int32_t first,
                                     uint64_t max_tokens,
                                     const std::function<bool(int32_t)>& is_stop,
                                     const std::function<void(int32_t)>& on_token = {});

}  // namespace ds4
