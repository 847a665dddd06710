// The inference worker: one thread owns the Engine and drives every admitted request
// through Engine::step with continuous batching — each step carries one decode token of
// every generating request plus prefill chunks of the requests still reading their
// prompt, so a long prompt never stalls the others for more than one chunk.
//
// A Job is shared between the HTTP connection thread (which created it and formats its
// events) and the worker (which fills it). Everything the worker publishes goes through
// the job's mutex; the connection thread waits on it with a timeout so it can write SSE
// keep-alive comments and notice a departed client (cancel()).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ds4/dsml.h"
#include "ds4/engine.h"
#include "ds4/sampler.h"
#include "ds4/tokenizer.h"
#include "server/tool_memory.h"

namespace ds4::server {

class Trace;
class ScriptedReplies;

// What a generation produced, as the formatters see it: the DSML stream's events with
// stop sequences already applied to the visible text.
enum class GenKind { reasoning, content, call_begin, arguments, call_end, calls_aborted };

struct GenEvent {
    GenKind kind = GenKind::content;
    std::size_t call = 0;
    std::string text;
};

struct GenResult {
    std::string finish = "stop";  // stop | length | tool_calls | error
    std::string error;            // why, for finish == error
    std::string stop_sequence;    // the stop string that matched ("" when none)
    uint64_t prompt_tokens = 0;
    uint64_t cached_tokens = 0;   // prompt tokens reused from a live sequence
    uint64_t completion_tokens = 0;
    // The DSML tool block the model sampled (exact bytes, "" when it made no call): the
    // exact-replay memory maps this turn's call ids to it (tool_memory.h).
    std::string tool_block;
};

struct GenRequest {
    std::vector<TokenId> prompt;
    SamplingParams sampling;
    uint64_t max_tokens = 0;
    DsmlOptions dsml;
    std::vector<std::string> stops;  // matched against visible content only (§8 item 7)
    // parallel_tool_calls: false — generation ends when the first call's invoke closes;
    // the block's closing tag is then fed (not sampled) so the KV holds a closed block.
    bool single_call = false;
    // Fed after a stop sequence matched, before the job finishes (forced single calls:
    // the tool block's closing tag after the invoke's).
    std::string stop_tail;
    std::string call_id_prefix = "call_";  // "toolu_" for Anthropic
    ToolMemory* tool_memory = nullptr;     // remembers the sampled block (null: off)
    ToolReplayStats replay;                // how the prompt's earlier tool calls were rendered
};

class Job {
public:
    explicit Job(GenRequest request) : request_(std::move(request)) {}

    const GenRequest& request() const { return request_; }

    // Moves the pending events into `out` (cleared first), waiting up to `timeout` for
    // some. Returns true once the job is finished and every event has been taken.
    bool wait(std::vector<GenEvent>& out, std::chrono::milliseconds timeout);
    // Blocks until finished, polling `alive` every `poll`; a false answer cancels.
    template <class Alive>
    void wait_done(Alive&& alive, std::chrono::milliseconds poll) {
        std::unique_lock lock(mutex_);
        while (!done_) {
            cv_.wait_for(lock, poll);
            if (!done_ && !alive()) cancelled_ = true;
        }
    }
    // Every event since the start (for non-streaming responses).
    std::vector<GenEvent> all_events() const;
    GenResult result() const;
    bool done() const;

    void cancel() { cancelled_ = true; }
    // The API id of tool call `call` of this response (call_id_prefix + 24 hex), made on
    // first use so the stream and the final object agree; call_ids() lists them in order.
    std::string call_id(std::size_t call);
    std::vector<std::string> call_ids() const;
    bool cancelled() const { return cancelled_; }

    // Worker side.
    void publish(GenEvent event);
    void finish(GenResult result);

private:
    GenRequest request_;
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<GenEvent> pending_;
    std::vector<GenEvent> history_;
    GenResult result_;
    bool done_ = false;
    std::atomic<bool> cancelled_{false};
    std::vector<std::pair<std::size_t, std::string>> call_ids_;
};

// The seam to the session layer: a sequence whose KV holds the longest usable prefix of a
// prompt. SlotSequenceSource is the simple in-process version; a SessionPool adapter with
// disk checkpoints can replace it without touching the scheduler.
struct SequenceLease {
    SequenceId seq = 0;
    uint64_t reused = 0;  // prompt tokens already in the sequence's KV
    // Sources that evaluate the prompt themselves (PoolSequenceSource) also give the tokens
    // the KV holds — the prompt, or after a disk hit the stored tokens followed by the rest
    // (formats.md §6.7) — and the logits after the last one: decoding starts at once.
    std::vector<TokenId> prompt;
    std::vector<float> logits;
    uint64_t evaluated = 0;  // prompt tokens the source evaluated (replays included)
    std::string source;      // cache decision for traces: memory-token, disk-text, cold, slot
    // The source holds the first `reused + evaluated` tokens of `prompt` and evaluates the
    // rest itself, a chunk per advance() call, so a long prompt does not stall the others.
    bool pending = false;
};

// What one SequenceSource::advance() did.
struct SourceProgress {
    uint64_t done = 0;          // prompt tokens the KV now holds
    uint64_t evaluated = 0;     // tokens evaluated by this call
    std::vector<float> logits;  // after the last prompt token, once done == prompt size
};

// KV cache counters for /metrics (all zero for sources without a cache).
struct KvCacheStats {
    uint64_t live_hits = 0, disk_hits = 0, misses = 0, forks = 0, evictions = 0;
    uint64_t disk_saves = 0, disk_load_failures = 0;
    uint64_t live_sessions = 0, live_bytes = 0;
    bool disk_enabled = false;
    uint64_t disk_files = 0, disk_bytes = 0, disk_scans = 0;
};

class SequenceSource {
public:
    virtual ~SequenceSource() = default;
    // A sequence holding a prefix of `prompt` (always shorter than the prompt, so the
    // caller has at least one token to evaluate for logits).
    // `request` is the scheduler's serial number of the job (for traces). Throws
    // ds4::Error when the prompt cannot be served (the job then fails).
    virtual SequenceLease acquire(std::span<const TokenId> prompt, uint64_t request) = 0;
    // Gives the sequence back; `history` is exactly the tokens its KV holds. `prompt_cp`
    // (may be empty) is a checkpoint taken one token before the end of the prompt, so an
    // identical or diverging later prompt can rewind to it instead of starting over.
    // `unfed` (-1: none) is the last token sampled and never fed (EOS, the token closing a
    // tool block, the last one of a length cut): the next turn usually starts with it.
    virtual void release(SequenceId seq, std::vector<TokenId> history, SequenceCheckpoint prompt_cp,
                         TokenId unfed) = 0;
    virtual uint64_t live_sequences() const = 0;
    // For a pending lease: evaluates up to `max_tokens` more prompt tokens.
    virtual SourceProgress advance(SequenceId, uint64_t) { return {}; }
    // After the last release: final work (shutdown checkpoints). Called once.
    virtual void shutdown() {}
    // May be called from any thread.
    virtual KvCacheStats kv_stats() const { return {}; }
};

// Keeps up to `capacity` idle sequences with their token histories. acquire() picks the
// idle sequence whose history is the longest prefix of the prompt, else recycles the
// least recently released one (reset), else creates one.
class SlotSequenceSource final : public SequenceSource {
public:
    SlotSequenceSource(Engine& engine, std::size_t capacity)
        : engine_(engine), capacity_(capacity) {}
    SequenceLease acquire(std::span<const TokenId> prompt, uint64_t request) override;
    void release(SequenceId seq, std::vector<TokenId> history, SequenceCheckpoint prompt_cp, TokenId unfed) override;
    uint64_t live_sequences() const override { return engine_.sequence_count(); }

private:
    struct Idle {
        SequenceId seq;
        std::vector<TokenId> history;
        SequenceCheckpoint cp;
    };
    // Prompt tokens `idle` can serve without re-evaluation (0: none).
    uint64_t usable_prefix(const Idle& idle, std::span<const TokenId> prompt) const;
    Engine& engine_;
    std::size_t capacity_;
    std::deque<Idle> idle_;  // oldest first
};

struct SchedulerOptions {
    std::size_t slots = 4;         // requests generating at once
    std::size_t queue_limit = 64;  // waiting requests beyond the slots (503 when full)
    std::size_t chunk = 256;       // tokens per step (prefill chunks plus decode tokens)
    Trace* trace = nullptr;        // --trace (not owned; null: off)
    // --mtp-draft: MTP drafts verified per step for greedy requests (interface.md §4.8);
    // below 2 (or without an MTP block, or with DS4_MTP_SPEC_DISABLE set) no speculation.
    uint32_t mtp_draft = 0;
    // --test-script: canned replies for chosen prompts (not owned; null: off).
    const ScriptedReplies* script = nullptr;
};

struct SchedulerStats {
    std::atomic<uint64_t> prompt_tokens{0}, cached_tokens{0}, completion_tokens{0};
    std::atomic<uint64_t> prefill_tokens{0}, steps{0}, requests_done{0}, requests_cancelled{0};
    std::atomic<uint64_t> prefill_ns{0}, decode_ns{0};
    std::atomic<uint64_t> queue_depth{0}, active{0};
    // speculative decoding: drafts verified / accepted, and replays after a rejection
    std::atomic<uint64_t> mtp_drafted{0}, mtp_accepted{0}, mtp_replays{0};
    // assistant messages with tool calls in admitted prompts, by how they were rendered
    std::atomic<uint64_t> replay_memory{0}, replay_disk{0}, replay_canonical{0}, replay_missing_ids{0};
};

class Scheduler {
public:
    Scheduler(Engine& engine, Tokenizer tokenizer, SchedulerOptions options,
              std::unique_ptr<SequenceSource> source = nullptr);
    ~Scheduler();
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    // Queues a job; false when the queue is full or the scheduler is stopping.
    bool submit(std::shared_ptr<Job> job);
    // Stops admitting, ends running and queued jobs with finish "error", joins the worker.
    void shutdown();
    const SchedulerStats& stats() const { return stats_; }
    uint64_t live_sequences() const { return source_->live_sequences(); }
    KvCacheStats kv_stats() const { return source_->kv_stats(); }
    uint64_t ctx() const { return ctx_; }

private:
    struct Active;
    void run();
    void admit(std::vector<std::unique_ptr<Active>>& active);
    void step(std::vector<std::unique_ptr<Active>>& active);
    void advance_source_prefills(std::vector<std::unique_ptr<Active>>& active);
    struct RowSpan {  // one Active's logits rows of a step: [first, end)
        std::size_t first = 0, end = 0;
    };
    void presample(std::span<Active* const> in_batch, std::span<const RowSpan> spans);
    void on_logits(Active& a, std::span<const float> logits);
    uint32_t drafts_for(const Active& a) const;
    void add_speculative(Active& a, uint32_t n);
    void verify_speculative(Active& a, std::span<const std::size_t> rows);
    void settle_speculative(Active& a);
    void begin_tail(Active& a, TokenId last, const std::string& text, GenResult end);
    void retire(Active& a, GenResult result);
    void trace_admitted(const Active& a, const SequenceLease& lease);
    void trace_finished(const Active& a, const GenResult& result);

    Engine& engine_;
    Tokenizer tok_;
    SchedulerOptions options_;
    uint64_t ctx_;
    std::unique_ptr<SequenceSource> source_;
    SchedulerStats stats_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<Job>> queue_;
    bool stopping_ = false;
    bool source_shut_ = false;
    uint64_t next_request_ = 0;  // worker only
    std::thread worker_;
    Batch batch_;
    Logits logits_;
    Batch replay_batch_;  // settle_speculative's own step (batch_/logits_ may be in use)
    Logits replay_logits_;
    bool speculate_ = false;
};

}  // namespace ds4::server
