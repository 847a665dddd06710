// The SequenceSource of ds4-server: requests are bound to the live sessions of a
// runtime::SessionPool (longest common token prefix, several sessions within a memory
// budget, LRU eviction to the disk KV cache) and, on a live miss, to the disk cache
// (longest rendered-text prefix whose stored tokens are a token prefix of the prompt).
//
// The pool evaluates the prompt itself (Session::sync: only what the reused prefix does
// not cover, restoring the nearest checkpoint when the compressed state cannot be
// rewound), so a lease comes back with the logits after the last prompt token and the
// scheduler starts decoding at once. While a request decodes, its session is held: no
// other request picks it or evicts it, so concurrent requests sharing a prefix get
// separate sessions (a fork or a fresh one) and never share mutable KV. The scheduler
// advances the engine sequence outside the Session; release() rewinds the sequence to
// the prompt checkpoint taken at acquire() and lets the Session evaluate the fed tokens
// again, so the generated tokens become a reusable live prefix (a follow-up turn that
// replays them exactly evaluates only its new suffix), with continued saves on the way.
//
// Not thread-safe except kv_stats() and live_sequences(): acquire/release/shutdown run on
// the scheduler's worker thread.
#pragma once

#include <map>
#include <memory>

#include "ds4/session.h"
#include "ds4/tokenizer.h"
#include "kvstore/disk_cache.h"
#include "runtime/session_pool.h"
#include "server/scheduler.h"
#include "server/trace.h"

namespace ds4::server {

class PoolSequenceSource final : public SequenceSource {
public:
    // `disk` may be null (no disk cache); `trace` may be null. The engine must outlive
    // the source. Throws ds4::Error for an invalid pool or save-policy configuration.
    PoolSequenceSource(Engine& engine, Tokenizer tokenizer, runtime::SessionPoolOptions options,
                       std::unique_ptr<kvstore::DiskCache> disk, Trace* trace, bool exact_tool_replay = true,
                       uint64_t prefill_step = 0);
    ~PoolSequenceSource() override;

    SequenceLease acquire(std::span<const TokenId> prompt, uint64_t request) override;
    void release(SequenceId seq, std::vector<TokenId> history, SequenceCheckpoint prompt_cp, TokenId unfed) override;
    uint64_t live_sequences() const override;
    SourceProgress advance(SequenceId seq, uint64_t max_tokens) override;
    // Shutdown checkpoints of every live session (reason shutdown), then drops them.
    void shutdown() override;
    KvCacheStats kv_stats() const override;

private:
    struct Lease {
        Session* session = nullptr;
        SequenceCheckpoint at_prompt;  // the sequence right after the prompt
        uint64_t request = 0;
        std::vector<TokenId> prompt;   // the prompt the session is brought to
        bool whole = false;            // the pool syncs the whole prompt (else all but the last)
    };
    void on_pool_event(const runtime::PoolEvent& ev);
    std::vector<TokenId> with_live_tool_blocks(std::span<const TokenId> prompt, uint64_t request) const;
    bool held_whole(std::span<const TokenId> prompt) const;
    uint64_t finish_prompt(Lease& l);

    Engine& engine_;
    Tokenizer tok_;
    Trace* trace_;
    std::unique_ptr<kvstore::DiskCache> disk_;  // before pool_: the pool points at it
    std::unique_ptr<runtime::SessionPool> pool_;
    std::map<SequenceId, Lease> leases_;
    uint64_t current_request_ = 0;  // for trace lines of pool events
    bool shut_down_ = false;
    bool exact_tool_replay_;
    uint64_t prefill_step_;  // new prompt tokens per acquire()/advance() (0: all at once)
};

// Exact DSML replay against live KV (interface.md §3.9–3.10). Clients send earlier tool
// calls back as JSON and the encoder renders them canonically, which rarely matches the
// bytes the model sampled, so the prompt would diverge from the live session inside the
// tool block and everything after it would be evaluated again. Where `prompt` diverges
// from `live` inside a tool-call block and both blocks parse to the same calls (names
// equal, arguments equal as JSON), the live tokens of the block replace the prompt's:
// the model sees exactly what it wrote, and the prefix match continues past the block.
// Repeats for every later block. Returns the rewritten prompt and sets *replaced to the
// number of blocks swapped (0: `prompt` unchanged).
std::vector<TokenId> replay_live_tool_blocks(const Tokenizer& tok, std::span<const TokenId> live,
                                             std::span<const TokenId> prompt, int* replaced);

// The routed-expert quantization written into KVC headers (2 or 4): "q4" models are 4,
// everything else (q2, and the f16/f32 test models) counts as 2.
uint8_t kv_quant_bits(const ModelSummary& model);

}  // namespace ds4::server
