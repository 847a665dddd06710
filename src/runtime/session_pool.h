// Several live sessions within a memory budget (interface.md §6.13–6.14), instead of
// ds4's single live session, so two agents alternating requests do not thrash.
//
// acquire() picks, for a new prompt, the live session sharing the longest token prefix,
// else the disk checkpoint with the longest rendered-text prefix (formats.md §6.7: the
// stored tokens stay authoritative, only the remaining bytes are tokenized, by the
// caller), else a cold session; then syncs it. Sessions beyond max_sessions or the
// memory budget are evicted least recently used first and saved to the disk cache
// (reason evict) when it is enabled. Saves follow kvstore::SavePolicy (ds4's defaults):
// cold (a stable prefix of a cold prompt), continued (every continued_step tokens, in
// prefill and through note_decoded), evict, shutdown.
//
// The runtime neither renders nor tokenizes: the caller passes the rendered prompt, a
// tokenizer for byte suffixes, and a renderer giving the cache text of a token prefix.
//
// Threads: acquire/note_decoded/shutdown must be called from one thread at a time (the
// scheduler's worker, which also owns the Engine); stats() may be called concurrently
// from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ds4/engine.h"
#include "ds4/session.h"
#include "kvstore/disk_cache.h"
#include "kvstore/save_policy.h"

namespace ds4::runtime {

// What the pool did with the disk cache and its live sessions, for traces and logs.
struct PoolEvent {
    enum Kind { DiskSave, DiskHit, DiskLoadFailed, Evict } kind = DiskSave;
    std::string file;                                    // the cache file name (disk events)
    kvstore::SaveReason reason = kvstore::SaveReason::Unknown;  // DiskSave
    uint64_t tokens = 0;                                 // tokens saved, loaded or evicted
};

struct SessionPoolOptions {
    size_t max_sessions = 4;
    // Bytes for all live sessions: each counts its KV state plus room for max_checkpoints
    // checkpoints (Engine::memory_estimate). 0: no limit beyond max_sessions.
    uint64_t memory_budget = 0;
    // A live session that the prompt diverges from is reused (forked into a free slot,
    // else rewound in place) only when they share at least this many tokens: a short
    // shared head (BOS, a chat header) is cheaper to recompute than a copy of the whole
    // KV state or the loss of another client's session. Pure extensions always count.
    uint64_t min_live_prefix = 32;
    SessionOptions session;
    kvstore::DiskCache* disk = nullptr;  // not owned; null: no disk cache
    kvstore::SavePolicy policy;          // ds4's defaults
    uint8_t quant_bits = 2;              // written into KVC headers and used for lookups
    int32_t user_token = -1;             // <｜User｜> and <｜Assistant｜> (cold-save anchor)
    int32_t assistant_token = -1;
    std::function<void(const PoolEvent&)> observer;  // optional; called on the pool's thread
};

struct PoolRequest {
    std::span<const int32_t> tokens;  // the whole prompt, tokenized
    std::string_view text;            // the rendered prompt: disk lookup key ("" skips the disk)
    // Tokenizes the bytes after a disk checkpoint's text (needed for disk hits).
    std::function<std::vector<int32_t>(std::string_view)> tokenize;
    // A disk checkpoint is used only when its stored tokens are a prefix of `tokens` (the
    // server's prompts are exact token lists; formats.md §6.7's re-tokenization would
    // let a checkpoint change them).
    bool require_token_prefix = false;
    // At most this many new tokens are evaluated by acquire() (0: all): the caller
    // continues with extend(), interleaving a long prefill with other work. Replays to the
    // reused prefix are not counted.
    uint64_t max_new_tokens = 0;
};

// The cache text of a token prefix (what a disk save is keyed by).
using RenderFn = std::function<std::string(std::span<const int32_t>)>;

enum class CacheSource { Live, Disk, Cold };
const char* cache_source_name(CacheSource s);


struct PoolResult {
    Session* session = nullptr;  // valid until the next acquire() or shutdown()
    CacheSource source = CacheSource::Cold;
    uint64_t reused = 0;      // tokens not evaluated (live prefix or disk checkpoint)
    uint64_t evaluated = 0;   // tokens evaluated, replays included
};

struct PoolStats {
    size_t sessions = 0;
    uint64_t resident_bytes = 0;  // budget accounting of the live sessions
    uint64_t live_hits = 0, disk_hits = 0, cold_starts = 0, forks = 0;
    uint64_t evictions = 0, disk_saves = 0, disk_load_failures = 0;
};

class SessionPool {
public:
    // engine and options.disk must outlive the pool. Throws ds4::Error when one session
    // does not fit the memory budget or the save policy is invalid.
    SessionPool(Engine& engine, SessionPoolOptions options, RenderFn render);
    ~SessionPool();
    SessionPool(const SessionPool&) = delete;
    SessionPool& operator=(const SessionPool&) = delete;

    PoolResult acquire(const PoolRequest& request);
    // After decode tokens were appended to a session of this pool: continued save when due.
    void note_decoded(Session& session);

    // Leases: a held session is never picked by acquire() nor evicted, so its engine
    // sequence may be advanced outside the Session (a server decoding in its own batches)
    // without another request touching the same KV. release() brings the Session back to
    // `tokens` (continued saves on the way; empty: reset) and makes it available again.
    void hold(const Session& session);
    void release(Session& session, std::span<const int32_t> tokens);
    // Token histories of the sessions acquire() may pick (not held), most recent first;
    // valid until the pool changes.
    std::vector<std::span<const int32_t>> live_histories() const;
    // Continues a held session towards `tokens` (which extend its history), at most
    // max_new tokens (0: all), with the saves acquire() would have made (a cold save
    // deferred by max_new_tokens included). Returns what was evaluated.
    PoolResult extend(Session& session, std::span<const int32_t> tokens, uint64_t max_new);
    // Saves every live session of at least min_tokens (reason shutdown) and drops them.
    void shutdown();

    PoolStats stats() const;
    // Bytes one session is accounted for.
    uint64_t session_cost() const { return session_cost_; }

private:
    struct Entry {
        std::unique_ptr<Session> session;
        uint32_t last_stored = 0;  // frontier of the last continued save
        bool held = false;
        uint32_t pending_cold = 0;  // a cold save not reached yet (max_new_tokens)
    };
    using List = std::list<Entry>;  // front: most recently used

    List::iterator best_live(std::span<const int32_t> tokens, uint64_t* lcp);
    List::iterator new_entry(List::iterator keep);
    void make_room(List::iterator keep);
    void trim(size_t extra, List::iterator keep);
    void evict(List::iterator it);
    bool try_disk(const PoolRequest& req, uint64_t live_lcp, List::iterator keep, PoolResult& r);
    void sync_with_saves(Entry& e, std::span<const int32_t> tokens, PoolResult& r);
    void store(const Session& s, kvstore::SaveReason why);
    Entry& entry_of(const Session& s);
    void emit(PoolEvent ev) const {
        if (opt_.observer) opt_.observer(ev);
    }
    template <class F> void update_stats(F&& f) {
        const std::lock_guard lock(stats_mu_);
        f(stats_);
    }

    Engine& engine_;
    SessionPoolOptions opt_;
    RenderFn render_;
    uint64_t session_cost_ = 0;
    List live_;
    std::vector<uint8_t> payload_;  // save buffer, reused

    mutable std::mutex stats_mu_;
    PoolStats stats_;   // guarded by stats_mu_ (counters updated by the worker)
};

}  // namespace ds4::runtime
