#include "runtime/session_pool.h"

#include <algorithm>
#include <iostream>

#include "ds4/error.h"

namespace ds4::runtime {

const char* cache_source_name(CacheSource s) {
    switch (s) {
        case CacheSource::Live: return "memory-token";
        case CacheSource::Disk: return "disk-text";
        case CacheSource::Cold: return "cold";
    }
    return "?";
}

namespace {

uint64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
    const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    return static_cast<uint64_t>(ia - a.begin());
}

// The first `have + max_new` tokens (all when max_new is 0).
std::span<const int32_t> limited(std::span<const int32_t> tokens, uint64_t have, uint64_t max_new) {
    if (max_new == 0) return tokens;
    return tokens.first(std::min<uint64_t>(tokens.size(), have + max_new));
}

uint64_t cost_of_one_session(const Engine& engine, const SessionOptions& so) {
    const MemoryEstimate m = engine.memory_estimate();
    return m.kv_per_sequence() + uint64_t{so.max_checkpoints} * (m.kv_raw + m.kv_frontier);
}

}  // namespace

SessionPool::SessionPool(Engine& engine, SessionPoolOptions options, RenderFn render)
    : engine_(engine), opt_(std::move(options)), render_(std::move(render)) {
    opt_.policy.validate();
    if (opt_.max_sessions == 0) fail("session pool: max_sessions must be positive");
    session_cost_ = cost_of_one_session(engine_, opt_.session);
    if (opt_.memory_budget != 0 && session_cost_ > opt_.memory_budget)
        fail("session pool: one session needs ", session_cost_, " bytes (KV state + ",
             opt_.session.max_checkpoints, " checkpoints), over the memory budget of ",
             opt_.memory_budget, " bytes");
    if (opt_.disk && !render_) fail("session pool: a disk cache needs a renderer for its keys");
}

SessionPool::~SessionPool() = default;

PoolStats SessionPool::stats() const {
    const std::lock_guard lock(stats_mu_);
    return stats_;
}

SessionPool::List::iterator SessionPool::best_live(std::span<const int32_t> tokens, uint64_t* lcp) {
    auto best = live_.end();
    *lcp = 0;
    for (auto it = live_.begin(); it != live_.end(); ++it) {  // MRU first: ties go to it
        if (it->held) continue;
        const uint64_t n = common_prefix(it->session->tokens(), tokens);
        if (n > *lcp) {
            *lcp = n;
            best = it;
        }
    }
    return best;
}

PoolResult SessionPool::acquire(const PoolRequest& req) {
    PoolResult r;
    uint64_t lcp = 0;
    auto best = best_live(req.tokens, &lcp);
    if (try_disk(req, lcp, best, r)) return r;
    const bool extends = best != live_.end() && lcp == best->session->size();
    // A prompt lying wholly inside a live session (a regenerate) counts however short.
    if (best != live_.end() && (extends || lcp >= std::min<uint64_t>(opt_.min_live_prefix, req.tokens.size()))) {
        // Diverging inside a live session: keep it for its own client when a slot is free
        // without evicting anyone, and continue in a copy.
        if (!extends && live_.size() < opt_.max_sessions &&
            (opt_.memory_budget == 0 || (live_.size() + 1) * session_cost_ <= opt_.memory_budget)) {
            // The copy keeps the old history (its client only ever extends it); the
            // original, which holds the checkpoints, rewinds for the new prompt. A fork
            // has no checkpoints, so rewinding the copy would replay from token 0.
            Entry copy{std::make_unique<Session>(best->session->fork()), best->last_stored};
            live_.insert(std::next(best), std::move(copy));
            live_.splice(live_.begin(), live_, best);
            update_stats([](PoolStats& s) { ++s.forks; });
        } else {
            // In place: what lies past the common prefix is lost, so it goes to the disk
            // cache first (ds4 saves the live session before a miss replaces it).
            if (!extends && opt_.disk && best->session->size() >= opt_.policy.min_tokens)
                store(*best->session, kvstore::SaveReason::Evict);
            live_.splice(live_.begin(), live_, best);
        }
        r.source = CacheSource::Live;
        update_stats([](PoolStats& s) { ++s.live_hits; });
        sync_with_saves(live_.front(), limited(req.tokens, lcp, req.max_new_tokens), r);
        return r;
    }
    auto it = new_entry(live_.end());
    r.source = CacheSource::Cold;
    update_stats([](PoolStats& s) { ++s.cold_starts; });
    Session& s = *it->session;
    const std::span<const int32_t> target = limited(req.tokens, 0, req.max_new_tokens);
    if (opt_.disk) {
        const uint32_t cold = kvstore::cold_store_length(
            opt_.policy, req.tokens, 0, opt_.user_token, opt_.assistant_token);
        if (cold > target.size()) {
            it->pending_cold = cold;
        } else if (cold > 0) {
            sync_with_saves(*it, req.tokens.first(cold), r);
            store(s, kvstore::SaveReason::Cold);
        }
    }
    sync_with_saves(*it, target, r);
    return r;
}

// A disk checkpoint longer than the best live prefix: load it into a new session and
// continue with the tokenized remaining bytes. False (logged) when none applies or it
// cannot be used.
bool SessionPool::try_disk(const PoolRequest& req, uint64_t live_lcp, List::iterator keep,
                           PoolResult& r) {
    kvstore::DiskCache* disk = opt_.disk;
    if (!disk || req.text.empty() || !req.tokenize) return false;
    const auto ctx = static_cast<uint32_t>(std::min<uint64_t>(engine_.options().ctx, UINT32_MAX));
    const std::optional<kvstore::CacheEntry> entry = disk->find_best(req.text, ctx, opt_.quant_bits);
    if (!entry || entry->header.tokens <= live_lcp) return false;
    std::optional<kvstore::CacheHit> hit = disk->load(*entry, req.text);
    if (!hit) {
        update_stats([](PoolStats& s) { ++s.disk_load_failures; });
        emit({PoolEvent::DiskLoadFailed, entry->path.filename().string(), entry->header.reason, entry->header.tokens});
        return false;
    }
    auto it = new_entry(keep);
    Session& s = *it->session;
    try {
        s.load(hit->payload);
    } catch (const Error& e) {
        disk->remove(*entry, e.what());
        update_stats([](PoolStats& st) { ++st.disk_load_failures; });
        emit({PoolEvent::DiskLoadFailed, entry->path.filename().string(), entry->header.reason, entry->header.tokens});
        live_.erase(it);
        return false;
    }
    // formats.md §6.7: the stored tokens are authoritative; only the byte suffix is new.
    // When they are a token prefix of the prompt (the usual case), the prompt's own
    // tokens follow them and nothing is re-tokenized.
    std::vector<int32_t> tokens = s.tokens();
    const auto stored = static_cast<std::ptrdiff_t>(tokens.size());
    if (tokens.size() <= req.tokens.size() &&
        std::equal(tokens.begin(), tokens.end(), req.tokens.begin())) {
        tokens.assign(req.tokens.begin(), req.tokens.end());
    } else if (req.require_token_prefix) {
        std::cerr << "ds4: kv cache: " << entry->path.filename().string()
                  << " matches the prompt text but not its tokens; not used\n";
        update_stats([](PoolStats& st) { ++st.disk_load_failures; });
        emit({PoolEvent::DiskLoadFailed, entry->path.filename().string(), entry->header.reason, entry->header.tokens});
        live_.erase(it);
        return false;
    } else {
        const std::vector<int32_t> rest = req.tokenize(req.text.substr(hit->text.size()));
        tokens.insert(tokens.begin() + stored, rest.begin(), rest.end());
    }
    emit({PoolEvent::DiskHit, entry->path.filename().string(), entry->header.reason, s.size()});
    it->last_stored = static_cast<uint32_t>(s.size());
    disk->record_hit(*entry, static_cast<uint32_t>(s.size()));
    r.source = CacheSource::Disk;
    update_stats([](PoolStats& st) { ++st.disk_hits; });
    sync_with_saves(*it, limited(tokens, s.size(), req.max_new_tokens), r);
    return true;
}

// Syncs e's session to tokens, stopping at each continued-save frontier on the way.
void SessionPool::sync_with_saves(Entry& e, std::span<const int32_t> tokens, PoolResult& r) {
    Session& s = *e.session;
    const uint32_t step = opt_.disk ? kvstore::continued_step(opt_.policy) : 0;
    auto add = [&](const SyncStats& st) {
        r.evaluated += st.evaluated;
    };
    if (step != 0) {
        const uint64_t start = common_prefix(s.tokens(), tokens);
        for (uint64_t m = (start / step + 1) * step; m < tokens.size(); m += step) {
            if (!kvstore::continued_save_due(opt_.policy, static_cast<uint32_t>(m), e.last_stored))
                continue;
            add(s.sync(tokens.first(m)));
            store(s, kvstore::SaveReason::Continued);
            e.last_stored = static_cast<uint32_t>(m);
        }
    }
    const SyncStats st = s.sync(tokens);
    add(st);
    r.session = &s;
    r.reused = tokens.size() - std::min<uint64_t>(tokens.size(), r.evaluated);
    if (step != 0 && kvstore::continued_save_due(opt_.policy, static_cast<uint32_t>(s.size()), e.last_stored)) {
        store(s, kvstore::SaveReason::Continued);
        e.last_stored = static_cast<uint32_t>(s.size());
    }
    update_stats([&](PoolStats& ps) {
        ps.sessions = live_.size();
        ps.resident_bytes = live_.size() * session_cost_;
    });
}

void SessionPool::note_decoded(Session& session) {
    for (Entry& e : live_) {
        if (e.session.get() != &session) continue;
        const auto n = static_cast<uint32_t>(session.size());
        if (opt_.disk && kvstore::continued_save_due(opt_.policy, n, e.last_stored)) {
            store(session, kvstore::SaveReason::Continued);
            e.last_stored = n;
        }
        return;
    }
    fail("session pool: note_decoded for a session that is not in the pool");
}

SessionPool::Entry& SessionPool::entry_of(const Session& session) {
    for (Entry& e : live_)
        if (e.session.get() == &session) return e;
    fail("session pool: the session is not in the pool");
}

PoolResult SessionPool::extend(Session& session, std::span<const int32_t> tokens, uint64_t max_new) {
    Entry& e = entry_of(session);
    PoolResult r;
    const std::span<const int32_t> target = limited(tokens, session.size(), max_new);
    if (e.pending_cold != 0 && target.size() >= e.pending_cold) {
        if (session.size() <= e.pending_cold) {
            sync_with_saves(e, tokens.first(e.pending_cold), r);
            store(session, kvstore::SaveReason::Cold);
        }
        e.pending_cold = 0;
    }
    sync_with_saves(e, target, r);
    return r;
}

std::vector<std::span<const int32_t>> SessionPool::live_histories() const {
    std::vector<std::span<const int32_t>> out;
    for (const Entry& e : live_)
        if (!e.held) out.emplace_back(e.session->tokens());
    return out;
}

void SessionPool::hold(const Session& session) { entry_of(session).held = true; }

void SessionPool::release(Session& session, std::span<const int32_t> tokens) {
    auto it = std::find_if(live_.begin(), live_.end(), [&](const Entry& x) { return x.session.get() == &session; });
    if (it == live_.end()) fail("session pool: release of a session that is not in the pool");
    live_.splice(live_.begin(), live_, it);  // most recently used
    Entry& e = live_.front();
    e.held = false;
    e.pending_cold = 0;
    PoolResult ignored;
    if (tokens.empty()) {
        session.sync(tokens);
        return;
    }
    sync_with_saves(e, tokens, ignored);
    trim(0, live_.end());  // leases may have pushed the pool over its bounds
}

// A new empty session at the front, after making room for it (never evicting `keep`).
SessionPool::List::iterator SessionPool::new_entry(List::iterator keep) {
    make_room(keep);
    live_.push_front(Entry{std::make_unique<Session>(engine_, opt_.session), 0});
    update_stats([&](PoolStats& s) {
        s.sessions = live_.size();
        s.resident_bytes = live_.size() * session_cost_;
    });
    return live_.begin();
}

void SessionPool::make_room(List::iterator keep) { trim(1, keep); }

void SessionPool::trim(size_t extra, List::iterator keep) {
    auto over = [&] {
        const uint64_t n = live_.size() + extra;
        return n > opt_.max_sessions || (opt_.memory_budget != 0 && n * session_cost_ > opt_.memory_budget);
    };
    while (over()) {
        // The least recently used session that is neither `keep` nor held; none: the
        // pool goes over its bound until a lease ends rather than touch a held KV.
        auto victim = live_.end();
        for (auto it = live_.rbegin(); it != live_.rend(); ++it) {
            const auto cand = std::prev(it.base());
            if (cand != keep && !cand->held) {
                victim = cand;
                break;
            }
        }
        if (victim == live_.end()) break;
        evict(victim);
    }
}

void SessionPool::evict(List::iterator it) {
    const Session& s = *it->session;
    if (opt_.disk && s.size() >= opt_.policy.min_tokens) store(s, kvstore::SaveReason::Evict);
    emit({PoolEvent::Evict, "", kvstore::SaveReason::Evict, s.size()});
    live_.erase(it);
    update_stats([&](PoolStats& st) {
        ++st.evictions;
        st.sessions = live_.size();
        st.resident_bytes = live_.size() * session_cost_;
    });
}

void SessionPool::shutdown() {
    while (!live_.empty()) {
        const Session& s = *live_.front().session;
        if (opt_.disk && s.size() >= opt_.policy.min_tokens) store(s, kvstore::SaveReason::Shutdown);
        live_.pop_front();
    }
    update_stats([](PoolStats& st) {
        st.sessions = 0;
        st.resident_bytes = 0;
    });
}

// Writes the whole session to the disk cache, keyed by the rendered text of its tokens.
// A failed write is logged, never fatal: the live state is still good.
void SessionPool::store(const Session& s, kvstore::SaveReason why) {
    if (!opt_.disk || s.size() == 0) return;
    try {
        s.save(payload_);
        const std::string text = render_(s.tokens());
        kvstore::StoreRequest req;
        req.text = text;
        req.payload = payload_;
        req.tokens = static_cast<uint32_t>(s.size());
        req.ctx = static_cast<uint32_t>(std::min<uint64_t>(engine_.options().ctx, UINT32_MAX));
        req.quant_bits = opt_.quant_bits;
        req.reason = why;
        if (opt_.disk->store(req) == kvstore::StoreOutcome::Written) {
            update_stats([](PoolStats& st) { ++st.disk_saves; });
            emit({PoolEvent::DiskSave, kvstore::sha1_hex(text) + ".kv", why, s.size()});
        }
    } catch (const Error& e) {
        std::cerr << "ds4: kv cache " << kvstore::save_reason_name(why) << " save failed: " << e.what() << "\n";
    }
}

}  // namespace ds4::runtime
