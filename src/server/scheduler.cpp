#include "server/scheduler.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <system_error>
#include <thread>

#include "ds4/error.h"
#include "ds4/speculative.h"
#include "server/scripted_replies.h"
#include "server/tool_memory.h"
#include "server/trace.h"
#include "text/dsml_stream.h"
#include "text/stop_sequences.h"

namespace ds4::server {

// ---- Job ----

bool Job::wait(std::vector<GenEvent>& out, std::chrono::milliseconds timeout) {
    out.clear();
    std::unique_lock lock(mutex_);
    if (pending_.empty() && !done_) cv_.wait_for(lock, timeout);
    out.swap(pending_);
    return done_ && pending_.empty();
}

std::vector<GenEvent> Job::all_events() const {
    std::lock_guard lock(mutex_);
    return history_;
}

GenResult Job::result() const {
    std::lock_guard lock(mutex_);
    return result_;
}

bool Job::done() const {
    std::lock_guard lock(mutex_);
    return done_;
}

void Job::publish(GenEvent event) {
    {
        std::lock_guard lock(mutex_);
        // Consecutive text deltas of one kind are merged: fewer, larger SSE chunks.
        const bool text = event.kind == GenKind::reasoning || event.kind == GenKind::content ||
                          event.kind == GenKind::arguments;
        if (text && !pending_.empty() && pending_.back().kind == event.kind &&
            pending_.back().call == event.call) {
            pending_.back().text += event.text;
        } else {
            pending_.push_back(event);
        }
        if (text && !history_.empty() && history_.back().kind == event.kind &&
            history_.back().call == event.call) {
            history_.back().text += event.text;
        } else {
            history_.push_back(std::move(event));
        }
    }
    cv_.notify_all();
}

void Job::finish(GenResult result) {
    {
        std::lock_guard lock(mutex_);
        result_ = std::move(result);
        done_ = true;
    }
    cv_.notify_all();
}

// ---- SlotSequenceSource ----

uint64_t SlotSequenceSource::usable_prefix(const Idle& idle, std::span<const TokenId> prompt) const {
    const auto& h = idle.history;
    if (h.size() < prompt.size() && std::equal(h.begin(), h.end(), prompt.begin())) return h.size();
    const uint64_t n = idle.cp.empty() ? 0 : idle.cp.length();
    if (n > 0 && n < prompt.size() && n <= h.size() &&
        std::equal(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(n), prompt.begin()) &&
        engine_.can_restore(idle.seq, idle.cp))
        return n;
    return 0;
}

SequenceLease SlotSequenceSource::acquire(std::span<const TokenId> prompt, uint64_t) {
    auto best = idle_.end();
    uint64_t best_len = 0;
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
        const uint64_t n = usable_prefix(*it, prompt);
        if (n > best_len) best = it, best_len = n;
    }
    if (best != idle_.end()) {
        const SequenceId seq = best->seq;
        if (best_len != best->history.size()) engine_.restore(seq, best->cp);
        idle_.erase(best);
        SequenceLease lease;
        lease.seq = seq;
        lease.reused = best_len;
        lease.source = "slot";
        return lease;
    }
    SequenceLease lease;
    lease.source = "cold";
    if (!idle_.empty()) {
        lease.seq = idle_.front().seq;
        idle_.pop_front();
        engine_.reset_sequence(lease.seq);
        return lease;
    }
    lease.seq = engine_.create_sequence();
    return lease;
}

void SlotSequenceSource::release(SequenceId seq, std::vector<TokenId> history, SequenceCheckpoint prompt_cp, TokenId) {
    idle_.push_back({seq, std::move(history), std::move(prompt_cp)});
    while (idle_.size() > capacity_) {
        engine_.free_sequence(idle_.front().seq);
        idle_.pop_front();
    }
}

// ---- Scheduler ----

namespace {
GenResult failed(std::string why) {
    GenResult r;
    r.finish = "error";
    r.error = std::move(why);
    return r;
}
}  // namespace

// The worker's state of one admitted job.
struct Scheduler::Active {
    std::shared_ptr<Job> job;
    uint64_t id = 0;               // serial number (traces)
    std::vector<TokenId> prompt;   // the prompt the KV holds (the request's, or a disk hit's)
    std::string raw_text;          // everything decoded (trace, sampled tool block)
    SequenceId seq = 0;
    std::vector<TokenId> history;  // tokens in the sequence's KV
    std::size_t prompt_done = 0;   // prompt tokens in the KV
    bool generating = false;
    bool source_prefill = false;   // the source evaluates the prompt (SequenceLease::pending)
    TokenId next = -1;             // sampled, to be fed at the next step
    TokenId unfed = -1;            // the final sampled token (never fed)
    uint64_t generated = 0;
    Sampler sampler;
    StreamDecoder decoder;
    text::DsmlStream dsml;
    text::StopMatcher stops;
    std::size_t live_calls = 0;    // calls begun and not aborted
    SequenceCheckpoint prompt_cp;  // one token before the end of the prompt
    GenResult result;
    std::deque<TokenId> tail;      // fed instead of sampled before finishing (closing tags)
    GenResult tail_end;            // the result once the tail is fed
    // --test-script: the reply's tokens replace sampled ones (EOS after the last).
    bool scripted = false;
    std::deque<TokenId> script;
    std::size_t script_entry = 0;
    // A speculative step in flight: `spec` = [next, drafts...] was fed after the first
    // spec_base history tokens, from checkpoint spec_cp; spec_valid of them are confirmed.
    std::vector<TokenId> spec;
    std::size_t spec_base = 0, spec_valid = 0;
    SequenceCheckpoint spec_cp;
    // This step's token, drawn ahead of on_logits on a helper thread (Scheduler::presample),
    // or the sampler's error.
    bool presampled = false, presample_failed = false;
    TokenId presampled_id = -1;
    std::string presample_error;

    Active(std::shared_ptr<Job> j, const Tokenizer& tok)
        : job(std::move(j)), sampler(job->request().sampling), decoder(tok),
          dsml(job->request().dsml), stops(job->request().stops) {}
};

namespace {
// From this many plain decode rows a step samples them on helper threads (kSampleRowsPerThread
// or more each): a 129280-token row costs ~0.1-0.3 ms, which at 64 sequences kept the GPU
// idle for 6-20 ms a step while the worker drew them one by one.
constexpr std::size_t kParallelSampleRows = 8, kSampleRowsPerThread = 4, kMaxSampleThreads = 8;

// The next token of a --test-script reply; EOS once it is spent.
TokenId next_scripted(std::deque<TokenId>& script, TokenId eos) {
    if (script.empty()) return eos;
    const TokenId id = script.front();
    script.pop_front();
    return id;
}
}  // namespace

Scheduler::Scheduler(Engine& engine, Tokenizer tokenizer, SchedulerOptions options,
                     std::unique_ptr<SequenceSource> source)
    : engine_(engine), tok_(std::move(tokenizer)), options_(options),
      ctx_(engine.options().ctx), source_(std::move(source)) {
    if (!source_) source_ = std::make_unique<SlotSequenceSource>(engine_, options_.slots);
    options_.slots = std::max<std::size_t>(options_.slots, 1);
    options_.chunk = std::max(options_.chunk, options_.slots + 1);
    speculate_ = options_.mtp_draft > 1 && engine_.has_mtp() && std::getenv("DS4_MTP_SPEC_DISABLE") == nullptr;
    options_.mtp_draft = std::min<uint32_t>(options_.mtp_draft, SpeculativeDecoder::kMaxDraft);
    worker_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() { shutdown(); }

bool Scheduler::submit(std::shared_ptr<Job> job) {
    {
        std::lock_guard lock(mutex_);
        if (stopping_ || queue_.size() >= options_.queue_limit) return false;
        queue_.push_back(std::move(job));
        stats_.queue_depth = queue_.size();
    }
    cv_.notify_all();
    return true;
}

void Scheduler::shutdown() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
    // The worker is gone: this thread may use the engine now.
    std::lock_guard lock(mutex_);
    if (source_shut_) return;
    source_shut_ = true;
    try {
        source_->shutdown();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ds4-server: shutdown checkpoints failed: %s\n", e.what());
    }
}

void Scheduler::run() {
    std::vector<std::unique_ptr<Active>> active;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || !active.empty(); });
            if (stopping_) {
                for (auto& job : queue_) job->finish(failed("server shutting down"));
                queue_.clear();
                stats_.queue_depth = 0;
                for (auto& a : active) retire(*a, failed("server shutting down"));
                return;
            }
        }
        admit(active);
        // Departed clients free their slot before the step is built.
        for (auto& a : active) {
            if (a->job->cancelled()) {
                ++stats_.requests_cancelled;
                retire(*a, failed("cancelled"));
            }
        }
        std::erase_if(active, [](const auto& a) { return a->job->done(); });
        stats_.active = active.size();
        advance_source_prefills(active);
        if (!active.empty()) step(active);
        std::erase_if(active, [](const auto& a) { return a->job->done(); });
        stats_.active = active.size();
    }
}

void Scheduler::admit(std::vector<std::unique_ptr<Active>>& active) {
    while (active.size() < options_.slots) {
        std::shared_ptr<Job> job;
        {
            // Only the queue is touched under the lock: acquire() may evaluate a whole
            // prompt, and HTTP threads must still be able to queue meanwhile.
            std::lock_guard lock(mutex_);
            if (queue_.empty()) break;
            job = std::move(queue_.front());
            queue_.pop_front();
            stats_.queue_depth = queue_.size();
        }
        if (job->cancelled()) {
            ++stats_.requests_cancelled;
            job->finish(failed("cancelled"));
            continue;
        }
        auto a = std::make_unique<Active>(std::move(job), tok_);
        a->id = ++next_request_;
        const auto& prompt = a->job->request().prompt;
        if (options_.script) {
            auto reply = options_.script->pick(tok_, prompt, a->job->request().dsml.thinking, &a->script_entry);
            if (reply) {
                a->scripted = true;
                a->script.assign(reply->begin(), reply->end());
            }
        }
        SequenceLease lease;
        try {
            lease = source_->acquire(prompt, a->id);
        } catch (const std::exception& e) {
            if (options_.trace) options_.trace->write("error", {{"request", a->id}, {"message", e.what()}});
            a->job->finish(failed(e.what()));
            continue;
        }
        a->seq = lease.seq;
        if (lease.prompt.empty())
            a->prompt = prompt;
        else
            a->prompt = std::move(lease.prompt);
        a->prompt_done = !lease.logits.empty() ? a->prompt.size()
                         : lease.pending       ? lease.reused + lease.evaluated
                                               : lease.reused;
        a->source_prefill = lease.pending;
        a->history.assign(a->prompt.begin(), a->prompt.begin() + static_cast<std::ptrdiff_t>(a->prompt_done));
        a->result.prompt_tokens = prompt.size();
        a->result.cached_tokens = lease.reused;
        if (lease.logits.empty() && !lease.pending && lease.reused + 1 == a->prompt.size()) a->prompt_cp = engine_.checkpoint(a->seq);
        stats_.cached_tokens += lease.reused;
        const ToolReplayStats& rs = a->job->request().replay;
        stats_.replay_memory += static_cast<uint64_t>(rs.memory);
        stats_.replay_disk += static_cast<uint64_t>(rs.disk);
        stats_.replay_canonical += static_cast<uint64_t>(rs.canonical);
        stats_.replay_missing_ids += static_cast<uint64_t>(rs.missing_ids);
        stats_.prompt_tokens += prompt.size();
        stats_.prefill_tokens += lease.evaluated;
        trace_admitted(*a, lease);
        active.push_back(std::move(a));
        // The source evaluated the whole prompt: the first token comes from its logits.
        if (!lease.logits.empty()) on_logits(*active.back(), lease.logits);
    }
}

void Scheduler::step(std::vector<std::unique_ptr<Active>>& active) {
    batch_.clear();
    std::vector<Active*> in_batch;
    std::size_t budget = options_.chunk;
    uint64_t prefill_tokens = 0;
    // Decode tokens first: they are one token each and keep streams flowing.
    for (auto& a : active) {
        if (!a->generating) continue;
        const uint32_t n = budget > 1 ? std::min<uint32_t>(drafts_for(*a), static_cast<uint32_t>(budget - 1)) : 0;
        if (n > 0) {
            add_speculative(*a, n);
        } else {
            batch_.add_token(a->seq, a->next);
            a->history.push_back(a->next);
        }
        in_batch.push_back(a.get());
        const std::size_t fed = a->spec.empty() ? 1 : a->spec.size();
        budget = budget > fed ? budget - fed : 0;
    }
    for (auto& a : active) {
        if (a->generating || a->source_prefill || a->job->done()) continue;
        const auto& prompt = a->prompt;
        const std::size_t left = prompt.size() - a->prompt_done;
        std::size_t n = std::min(left, std::max<std::size_t>(budget, 1));
        if (budget == 0 && !in_batch.empty()) break;
        // The last prompt token goes alone, after a checkpoint of everything before it:
        // a later identical prompt rewinds there (SlotSequenceSource).
        if (n == left && n > 1 && a->prompt_done + n == prompt.size()) --n;
        const bool last = n == left;
        batch_.add(a->seq, std::span(prompt).subspan(a->prompt_done, n),
                   last ? LogitsWanted::Last : LogitsWanted::None);
        a->history.insert(a->history.end(), prompt.begin() + static_cast<std::ptrdiff_t>(a->prompt_done),
                          prompt.begin() + static_cast<std::ptrdiff_t>(a->prompt_done + n));
        a->prompt_done += n;
        prefill_tokens += n;
        budget = budget > n ? budget - n : 0;
        in_batch.push_back(a.get());
    }
    if (batch_.empty()) return;
    const auto start = std::chrono::steady_clock::now();
    try {
        engine_.step(batch_, logits_);
    } catch (const std::exception& e) {
        for (Active* a : in_batch) {
            // The KV of a failed step is unknown: start the sequence over.
            engine_.reset_sequence(a->seq);
            a->history.clear();
            a->spec.clear();
            retire(*a, failed(e.what()));
        }
        return;
    }
    const auto ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
    ++stats_.steps;
    stats_.prefill_tokens += prefill_tokens;
    (prefill_tokens > 0 ? stats_.prefill_ns : stats_.decode_ns) += ns;
    for (Active* a : in_batch) {
        const auto& prompt = a->prompt;
        if (!a->generating && a->prompt_done + 1 == prompt.size() && a->prompt_cp.empty())
            a->prompt_cp = engine_.checkpoint(a->seq);
    }
    // Rows in batch order: one per decode token or finished prompt, 1 + n per speculation,
    // none for a prompt chunk. Each Active is one batch entry, so its rows are one run.
    std::vector<RowSpan> spans(in_batch.size());
    for (std::size_t i = 0, r = 0; i < in_batch.size(); ++i) {
        spans[i].first = r;
        while (r < logits_.rows() && logits_.info(r).seq == in_batch[i]->seq) ++r;
        spans[i].end = r;
    }
    presample(in_batch, spans);
    std::vector<std::size_t> rows;
    for (std::size_t i = 0; i < in_batch.size(); ++i) {
        Active* a = in_batch[i];
        rows.clear();
        for (std::size_t r = spans[i].first; r < spans[i].end; ++r) rows.push_back(r);
        if (!a->spec.empty())
            verify_speculative(*a, rows);
        else if (!rows.empty())
            on_logits(*a, logits_.row(rows.front()));
    }
}

// The tokens on_logits would draw for this step's plain decode rows (no speculation, no
// tail being fed, not scripted), drawn on helper threads when there are enough of them.
// Each Active's sampler is used by one thread, in the order on_logits would use it: the
// same tokens as drawing them one by one.
void Scheduler::presample(std::span<Active* const> in_batch, std::span<const RowSpan> spans) {
    std::vector<std::pair<Active*, std::size_t>> work;
    for (std::size_t i = 0; i < in_batch.size(); ++i) {
        Active* a = in_batch[i];
        a->presampled = false;  // only this step's rows are drawn ahead
        if (spans[i].first == spans[i].end) continue;  // a prompt chunk
        if (a->spec.empty() && a->tail.empty() && !a->scripted && !a->job->done()) work.emplace_back(a, spans[i].first);
    }
    if (work.size() < kParallelSampleRows) return;
    const auto draw = [this](Active& a, std::size_t row) {
        try {
            a.presampled_id = a.sampler.sample(logits_.row(row), a.dsml.force_greedy());
            a.presample_failed = false;
        } catch (const std::exception& e) {
            a.presample_failed = true;
            a.presample_error = e.what();
        }
        a.presampled = true;
    };
    const std::size_t n = work.size();
    const std::size_t threads = std::min({n / kSampleRowsPerThread, kMaxSampleThreads,
                                          std::max<std::size_t>(1, std::thread::hardware_concurrency())});
    const auto draw_part = [&](std::size_t k) {
        for (std::size_t i = n * k / threads; i < n * (k + 1) / threads; ++i) draw(*work[i].first, work[i].second);
    };
    std::vector<std::size_t> left{0};  // parts the worker draws: its own, and any whose thread did not start
    {
        std::vector<std::jthread> pool;
        for (std::size_t k = 1; k < threads; ++k) {
            try {
                pool.emplace_back(draw_part, k);
            } catch (const std::system_error&) {
                left.push_back(k);
            }
        }
        for (std::size_t k : left) draw_part(k);
    }
}

// Drafts worth verifying for `a` at this step: greedy requests only (the output must be
// what plain greedy decoding gives), none while closing tags are fed, and never past the
// context or the tokens the request may still generate.
uint32_t Scheduler::drafts_for(const Active& a) const {
    if (!speculate_ || !a.tail.empty() || a.scripted || a.job->request().sampling.temperature > 0) return 0;
    const uint64_t len = a.history.size();
    const uint64_t room = ctx_ > len + 1 ? ctx_ - len - 1 : 0;
    const uint64_t max_tokens = a.job->request().max_tokens;
    const uint64_t left = max_tokens > a.generated + 1 ? max_tokens - a.generated - 1 : 0;
    return static_cast<uint32_t>(std::min<uint64_t>({options_.mtp_draft, room, left}));
}

// [next, drafts...] as one chunk with logits after every token (interface.md §4.8), after
// a checkpoint to come back to when a draft is rejected. Drafts stop before an EOS: that
// token only ever comes as a sampled one, as in plain decoding.
void Scheduler::add_speculative(Active& a, uint32_t n) {
    a.spec.assign(1 + n, a.next);
    engine_.mtp_draft_greedy(a.seq, a.next, std::span<TokenId>(a.spec).subspan(1));
    std::size_t kept = 1;
    while (kept < a.spec.size() && a.spec[kept] != tok_.specials().eos) ++kept;
    a.spec.resize(kept);
    a.spec_cp = engine_.checkpoint(a.seq);
    a.spec_base = a.history.size();
    a.spec_valid = 0;
    std::vector<uint32_t> at(a.spec.size());
    for (uint32_t i = 0; i < at.size(); ++i) at[i] = i;
    batch_.add(a.seq, a.spec, at);
    a.history.insert(a.history.end(), a.spec.begin(), a.spec.end());
    stats_.mtp_drafted += a.spec.size() - 1;
}

// Row i holds the logits after spec[i]. Each row is handled as a plain decode step would
// handle it; a draft counts as accepted when the token sampled from the row before it is
// that draft (then it is already in the KV). The first disagreement, a finished job or
// closing tags to feed end the walk; settle_speculative then drops what was not confirmed.
void Scheduler::verify_speculative(Active& a, std::span<const std::size_t> rows) {
    for (std::size_t i = 0; i < rows.size() && i < a.spec.size(); ++i) {
        a.spec_valid = i + 1;
        on_logits(a, logits_.row(rows[i]));
        if (a.job->done() || a.spec.empty()) return;  // retired (and settled)
        if (i + 1 >= a.spec.size() || !a.tail.empty() || a.next != a.spec[i + 1]) break;
        ++stats_.mtp_accepted;
    }
    settle_speculative(a);
}

// Brings the KV back to exactly the confirmed tokens: restore the checkpoint and evaluate
// them again when some drafts were not confirmed (the same state as if only they had been
// fed, as SpeculativeDecoder does).
void Scheduler::settle_speculative(Active& a) {
    if (a.spec.empty()) return;
    const std::size_t valid = a.spec_valid;
    if (valid < a.spec.size()) {
        engine_.restore(a.seq, a.spec_cp);
        if (valid > 0) {
            replay_batch_.clear();
            replay_batch_.add(a.seq, std::span<const TokenId>(a.spec).first(valid), LogitsWanted::None);
            engine_.step(replay_batch_, replay_logits_);
        }
        ++stats_.mtp_replays;
    }
    a.history.resize(a.spec_base + valid);
    a.spec.clear();
    a.spec_cp = SequenceCheckpoint{};
}

// Prompts the source evaluates itself, one chunk each per step, between the batched steps:
// a long prompt delays the running streams by one chunk per step at most. Alone, a
// request takes bigger chunks (fewer, larger steps; newcomers still get in between), at
// least the engine's pass size (4096 tokens with CUDA: larger passes fill its tiles).
void Scheduler::advance_source_prefills(std::vector<std::unique_ptr<Active>>& active) {
    const bool others_generating =
        std::any_of(active.begin(), active.end(), [](const auto& a) { return a->generating; });
    const uint64_t chunk =
        others_generating ? options_.chunk : std::max<uint64_t>(8 * options_.chunk, engine_.pass_tokens());
    for (auto& a : active) {
        if (!a->source_prefill || a->job->done()) continue;
        const auto start = std::chrono::steady_clock::now();
        SourceProgress p;
        try {
            p = source_->advance(a->seq, chunk);
        } catch (const std::exception& e) {
            retire(*a, failed(e.what()));
            continue;
        }
        stats_.prefill_ns += static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
        stats_.prefill_tokens += p.evaluated;
        const auto& prompt = a->prompt;
        a->history.insert(a->history.end(), prompt.begin() + static_cast<std::ptrdiff_t>(a->prompt_done),
                          prompt.begin() + static_cast<std::ptrdiff_t>(p.done));
        a->prompt_done = p.done;
        if (p.logits.empty()) continue;
        a->source_prefill = false;
        if (options_.trace) options_.trace->write("prefill_done", {{"request", a->id}, {"prompt_tokens", prompt.size()}});
        on_logits(*a, p.logits);
    }
    std::erase_if(active, [](const auto& a) { return a->job->done(); });
    stats_.active = active.size();
}

namespace {

GenKind gen_kind(text::DsmlEventKind k) {
    switch (k) {
        case text::DsmlEventKind::reasoning: return GenKind::reasoning;
        case text::DsmlEventKind::content: return GenKind::content;
        case text::DsmlEventKind::call_begin: return GenKind::call_begin;
        case text::DsmlEventKind::arguments: return GenKind::arguments;
        case text::DsmlEventKind::call_end: return GenKind::call_end;
        case text::DsmlEventKind::calls_aborted: return GenKind::calls_aborted;
        case text::DsmlEventKind::block_closed: break;
    }
    return GenKind::content;
}

}  // namespace

// Routes DSML events to the job; visible text passes the stop matcher first. Returns
// true when a stop sequence matched.
// With `single_call`, events end at the first call's call_end and *call_closed is set.
static bool forward_events(Job& job, text::StopMatcher& stops, std::size_t& live_calls,
                           std::vector<text::DsmlEvent>& events, bool single_call = false,
                           bool* call_closed = nullptr) {
    for (auto& ev : events) {
        if (ev.kind == text::DsmlEventKind::block_closed) continue;
        if (ev.kind == text::DsmlEventKind::content) {
            std::string emit;
            const bool hit = stops.feed(ev.text, emit);
            if (!emit.empty()) job.publish({GenKind::content, 0, std::move(emit)});
            if (hit) return true;
            continue;
        }
        if (ev.kind == text::DsmlEventKind::call_begin) {
            // Text held back by the matcher precedes the call.
            std::string emit;
            stops.finish(emit);
            if (!emit.empty()) job.publish({GenKind::content, 0, std::move(emit)});
            ++live_calls;
        }
        if (ev.kind == text::DsmlEventKind::calls_aborted) live_calls = std::min(live_calls, ev.call);
        const bool closes_first = single_call && ev.kind == text::DsmlEventKind::call_end;
        job.publish({gen_kind(ev.kind), ev.call, std::move(ev.text)});
        if (closes_first && call_closed) {
            *call_closed = true;
            break;
        }
    }
    events.clear();
    return false;
}

namespace {

// The tag closing the tool block `raw` opened, in the spelling it used (§3.2).
std::string block_close_for(std::string_view raw) {
    if (raw.find("<｜DSML｜tool_calls>") != std::string_view::npos) return "\n</｜DSML｜tool_calls>";
    if (raw.find("<DSML｜tool_calls>") != std::string_view::npos) return "\n</DSML｜tool_calls>";
    return "\n</tool_calls>";
}

}  // namespace

// Ends the generation after `last` (sampled, fed at the next step) and the tokens of
// `text`, which are fed without sampling; the last of them stays unfed like an EOS.
void Scheduler::begin_tail(Active& a, TokenId last, const std::string& text, GenResult end) {
    std::vector<TokenId> t;
    tok_.encode_chat(text, t);
    a.raw_text += text;
    if (a.live_calls > 0) end.tool_block = sampled_tool_block(a.raw_text);
    if (t.empty() || a.history.size() + t.size() + 1 >= ctx_) {
        a.unfed = last;
        retire(a, std::move(end));
        return;
    }
    a.next = last;
    a.tail.assign(t.begin(), t.end());
    a.tail_end = std::move(end);
}

void Scheduler::on_logits(Active& a, std::span<const float> logits) {
    const GenRequest& req = a.job->request();
    a.generating = true;
    if (!a.tail.empty()) {
        const TokenId id = a.tail.front();
        a.tail.pop_front();
        if (!a.tail.empty()) {
            a.next = id;
            return;
        }
        a.unfed = id;
        retire(a, std::move(a.tail_end));
        return;
    }
    TokenId id = -1;
    if (a.presampled) {  // drawn by presample from this very row
        a.presampled = false;
        if (a.presample_failed) {
            a.presample_failed = false;
            const std::string error = std::move(a.presample_error);
            retire(a, failed(error));
            return;
        }
        id = a.presampled_id;
    } else {
        try {
            id = a.scripted ? next_scripted(a.script, tok_.specials().eos)
                            : a.sampler.sample(logits, a.dsml.force_greedy());
        } catch (const std::exception& e) {
            retire(a, failed(e.what()));
            return;
        }
    }
    ++a.generated;
    ++stats_.completion_tokens;
    std::vector<text::DsmlEvent> events;
    GenResult end;
    bool finished = false;
    if (id == tok_.specials().eos) {
        end.finish = "stop";
        finished = true;
    } else {
        const std::string_view piece = a.decoder.push(id);
        a.raw_text += piece;
        a.dsml.feed(piece, events);
        bool call_closed = false;
        if (forward_events(*a.job, a.stops, a.live_calls, events, req.single_call, &call_closed)) {
            end.finish = "stop";
            end.stop_sequence = std::string(a.stops.matched());
            if (!req.stop_tail.empty()) return begin_tail(a, id, req.stop_tail, std::move(end));
            finished = true;
        } else if (call_closed) {
            // parallel_tool_calls: false — one call, then the block's closing tag.
            end.finish = "tool_calls";
            return begin_tail(a, id, block_close_for(a.raw_text), std::move(end));
        } else if (a.dsml.block_closed()) {
            end.finish = "stop";
            finished = true;
        } else if (a.generated >= req.max_tokens || a.history.size() + 1 >= ctx_) {
            end.finish = "length";
            finished = true;
        }
    }
    if (!finished) {
        a.next = id;
        return;
    }
    a.unfed = id;
    if (end.stop_sequence.empty()) {
        const std::string_view piece = a.decoder.finish();
        a.raw_text += piece;
        a.dsml.feed(piece, events);
        a.dsml.finish(events);
        if (forward_events(*a.job, a.stops, a.live_calls, events)) {
            end.finish = "stop";
            end.stop_sequence = std::string(a.stops.matched());
        } else {
            std::string tail;
            a.stops.finish(tail);
            if (!tail.empty()) a.job->publish({GenKind::content, 0, std::move(tail)});
        }
    }
    if (a.live_calls > 0 && end.finish == "stop" && end.stop_sequence.empty()) end.finish = "tool_calls";
    if (a.live_calls > 0) end.tool_block = sampled_tool_block(a.raw_text);
    retire(a, std::move(end));
}

void Scheduler::retire(Active& a, GenResult result) {
    if (a.job->done()) return;
    // The sequence goes back to the source with exactly the tokens in its KV.
    try {
        settle_speculative(a);
    } catch (const std::exception& e) {
        engine_.reset_sequence(a.seq);
        a.history.clear();
        a.spec.clear();
        result = failed(e.what());
    }
    result.prompt_tokens = a.result.prompt_tokens;
    result.cached_tokens = a.result.cached_tokens;
    result.completion_tokens = a.generated;
    // A sequence cut during prefill holds only part of the prompt: still a valid prefix.
    source_->release(a.seq, std::move(a.history), std::move(a.prompt_cp), a.unfed);
    ++stats_.requests_done;
    trace_finished(a, result);
    a.job->finish(std::move(result));
}

void Scheduler::trace_admitted(const Active& a, const SequenceLease& lease) {
    Trace* t = options_.trace;
    if (!t) return;
    const auto& req = a.job->request();
    t->write("request", {{"request", a.id}, {"prompt_tokens", req.prompt.size()}, {"max_tokens", req.max_tokens},
                         {"temperature", req.sampling.temperature}, {"prompt", tok_.decode(req.prompt)}});
    const ToolReplayStats& rs = req.replay;
    if (rs.memory + rs.disk + rs.canonical + rs.missing_ids > 0)
        t->write("tool_history", {{"request", a.id}, {"memory", rs.memory}, {"disk", rs.disk},
                                 {"canonical", rs.canonical}, {"missing_ids", rs.missing_ids}});
    if (a.scripted) t->write("script", {{"request", a.id}, {"entry", a.script_entry}, {"tokens", a.script.size()}});
    nlohmann::ordered_json cache = {{"request", a.id},
                                    {"source", lease.source},
                                    {"hit", lease.reused > 0},
                                    {"common_prefix", lease.reused},
                                    {"evaluated", lease.logits.empty() ? a.prompt.size() - lease.reused : lease.evaluated},
                                    {"prompt_tokens", req.prompt.size()},
                                    {"effective_prompt_tokens", a.prompt.size()}};
    t->write("cache", std::move(cache));
}

// The finished generation: raw text (reasoning and DSML included), finish reason and the
// tool calls as the DSML parser delivered them to the API layer.
void Scheduler::trace_finished(const Active& a, const GenResult& result) {
    Trace* t = options_.trace;
    if (!t) return;
    nlohmann::ordered_json calls = nlohmann::ordered_json::array();
    for (const GenEvent& ev : a.job->all_events()) {
        if (ev.kind == GenKind::call_begin) {
            while (calls.size() <= ev.call) calls.push_back({{"name", ""}, {"arguments", ""}});
            calls[ev.call]["name"] = ev.text;
        } else if (ev.kind == GenKind::arguments && ev.call < calls.size()) {
            calls[ev.call]["arguments"] = calls[ev.call]["arguments"].get<std::string>() + ev.text;
        } else if (ev.kind == GenKind::calls_aborted) {
            while (calls.size() > ev.call) calls.erase(calls.size() - 1);
        }
    }
    nlohmann::ordered_json j = {{"request", a.id},
                                {"finish", result.finish},
                                {"completion_tokens", result.completion_tokens},
                                {"prompt_tokens", result.prompt_tokens},
                                {"cached_tokens", result.cached_tokens},
                                {"text", a.raw_text},
                                {"tool_calls", std::move(calls)}};
    if (!result.error.empty()) j["error"] = result.error;
    if (!result.stop_sequence.empty()) j["stop_sequence"] = result.stop_sequence;
    t->write("generated", std::move(j));
}

}  // namespace ds4::server
