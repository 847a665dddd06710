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

namespace ds4::server {

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
};

struct GenRequest {
    std::vector<TokenId> prompt;
    SamplingParams sampling;
    uint64_t max_tokens = 0;
    DsmlOptions dsml;
    std::vector<std::string> stops;  // matched against visible content only (§8 item 7)
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
};

// The seam to the session layer: a sequence whose KV holds the longest usable prefix of a
// prompt. SlotSequenceSource is the simple in-process version; a SessionPool adapter with
// disk checkpoints can replace it without touching the scheduler.
struct SequenceLease {
    SequenceId seq = 0;
    uint64_t reused = 0;  // prompt tokens already in the sequence's KV
};

class SequenceSource {
public:
    virtual ~SequenceSource() = default;
    // A sequence holding a prefix of `prompt` (always shorter than the prompt, so the
    // caller has at least one token to evaluate for logits).
    virtual SequenceLease acquire(std::span<const TokenId> prompt) = 0;
    // Gives the sequence back; `history` is exactly the tokens its KV holds. `prompt_cp`
    // (may be empty) is a checkpoint taken one token before the end of the prompt, so an
    // identical or diverging later prompt can rewind to it instead of starting over.
    virtual void release(SequenceId seq, std::vector<TokenId> history, SequenceCheckpoint prompt_cp) = 0;
    virtual uint64_t live_sequences() const = 0;
};

// Keeps up to `capacity` idle sequences with their token histories. acquire() picks the
// idle sequence whose history is the longest prefix of the prompt, else recycles the
// least recently released one (reset), else creates one.
class SlotSequenceSource final : public SequenceSource {
public:
    SlotSequenceSource(Engine& engine, std::size_t capacity)
        : engine_(engine), capacity_(capacity) {}
    SequenceLease acquire(std::span<const TokenId> prompt) override;
    void release(SequenceId seq, std::vector<TokenId> history, SequenceCheckpoint prompt_cp) override;
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
};

struct SchedulerStats {
    std::atomic<uint64_t> prompt_tokens{0}, cached_tokens{0}, completion_tokens{0};
    std::atomic<uint64_t> prefill_tokens{0}, steps{0}, requests_done{0}, requests_cancelled{0};
    std::atomic<uint64_t> prefill_ns{0}, decode_ns{0};
    std::atomic<uint64_t> queue_depth{0}, active{0};
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
    uint64_t ctx() const { return ctx_; }

private:
    struct Active;
    void run();
    void admit(std::vector<std::unique_ptr<Active>>& active);
    void step(std::vector<std::unique_ptr<Active>>& active);
    void on_logits(Active& a, std::span<const float> logits);
    void retire(Active& a, GenResult result);

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
    std::thread worker_;
    Batch batch_;
    Logits logits_;
};

}  // namespace ds4::server
