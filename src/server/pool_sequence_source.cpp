#include "server/pool_sequence_source.h"

#include <algorithm>
#include <iostream>

#include "ds4/dsml.h"
#include "ds4/error.h"

namespace ds4::server {

uint8_t kv_quant_bits(const ModelSummary& model) { return model.quant == "q4" ? 4 : 2; }

PoolSequenceSource::PoolSequenceSource(Engine& engine, Tokenizer tokenizer,
                                       runtime::SessionPoolOptions options,
                                       std::unique_ptr<kvstore::DiskCache> disk, Trace* trace,
                                       bool exact_tool_replay, uint64_t prefill_step)
    : engine_(engine), tok_(std::move(tokenizer)), trace_(trace), disk_(std::move(disk)),
      exact_tool_replay_(exact_tool_replay), prefill_step_(prefill_step) {
    options.disk = disk_.get();
    options.user_token = tok_.specials().user;
    options.assistant_token = tok_.specials().assistant;
    options.observer = [this](const runtime::PoolEvent& ev) { on_pool_event(ev); };
    // The cache text of a token prefix is its bytes: the rendered prompt tokenizes back to
    // exactly these tokens, and decode(encode(x)) == x for any text.
    runtime::RenderFn render = [tok = tok_](std::span<const int32_t> ids) { return tok.decode(ids); };
    pool_ = std::make_unique<runtime::SessionPool>(engine_, std::move(options), std::move(render));
}

PoolSequenceSource::~PoolSequenceSource() = default;

void PoolSequenceSource::on_pool_event(const runtime::PoolEvent& ev) {
    if (!trace_) return;
    const char* names[] = {"disk_save", "disk_hit", "disk_load_failed", "evict"};
    nlohmann::ordered_json j = {{"request", current_request_}, {"tokens", ev.tokens}};
    if (!ev.file.empty()) j["file"] = ev.file;
    if (ev.kind == runtime::PoolEvent::DiskSave) j["reason"] = kvstore::save_reason_name(ev.reason);
    trace_->write(names[ev.kind], std::move(j));
}

namespace {

// off[i]: bytes of tokens[0, i).
std::vector<std::size_t> byte_offsets(const Tokenizer& tok, std::span<const TokenId> tokens) {
    std::vector<std::size_t> off(tokens.size() + 1, 0);
    for (std::size_t i = 0; i < tokens.size(); ++i) off[i + 1] = off[i] + tok.token_bytes(tokens[i]).size();
    return off;
}

// The token index whose boundary lies exactly at `bytes`, or npos.
std::size_t boundary_at(const std::vector<std::size_t>& off, std::size_t bytes) {
    const auto it = std::lower_bound(off.begin(), off.end(), bytes);
    return it != off.end() && *it == bytes ? static_cast<std::size_t>(it - off.begin()) : std::string::npos;
}

bool same_arguments(const std::string& a, const std::string& b) {
    const auto ja = nlohmann::json::parse(a, nullptr, false), jb = nlohmann::json::parse(b, nullptr, false);
    if (ja.is_discarded() || jb.is_discarded()) return a == b;
    return ja == jb;
}

// Both texts are one closed tool block with the same calls.
bool same_calls(std::string_view a, std::string_view b) {
    DsmlOptions o;
    const DsmlMessage ma = parse_dsml(a, o), mb = parse_dsml(b, o);
    if (!ma.block_closed || !mb.block_closed || ma.tool_calls.empty() ||
        ma.tool_calls.size() != mb.tool_calls.size() || !ma.content.empty() || !mb.content.empty())
        return false;
    for (std::size_t i = 0; i < ma.tool_calls.size(); ++i)
        if (ma.tool_calls[i].name != mb.tool_calls[i].name ||
            !same_arguments(ma.tool_calls[i].arguments, mb.tool_calls[i].arguments))
            return false;
    return true;
}

}  // namespace

std::vector<TokenId> replay_live_tool_blocks(const Tokenizer& tok, std::span<const TokenId> live,
                                             std::span<const TokenId> prompt, int* replaced) {
    constexpr std::string_view open_tag = "<｜DSML｜tool_calls>", close_tag = "</｜DSML｜tool_calls>";
    *replaced = 0;
    std::vector<TokenId> cur(prompt.begin(), prompt.end());
    const std::string live_text = tok.decode(live);
    const std::vector<std::size_t> live_off = byte_offsets(tok, live);
    for (;;) {
        const auto t = static_cast<std::size_t>(std::mismatch(live.begin(), live.end(), cur.begin(), cur.end()).first - live.begin());
        if (t == live.size() || t == cur.size()) break;
        // Both texts are equal up to the token boundary `div`; the block must have started
        // before it (its opener is the same in both) and end after it in the live text.
        const std::size_t div = live_off[t];
        const std::size_t open = div == 0 ? std::string::npos : live_text.rfind(open_tag, div - 1);
        if (open == std::string::npos) break;
        const std::size_t live_close = live_text.find(close_tag, open);
        if (live_close == std::string::npos || live_close + close_tag.size() <= div) break;
        const std::string text = tok.decode(cur);
        const std::size_t cur_close = text.find(close_tag, open);
        if (text.compare(open, open_tag.size(), open_tag) != 0 || cur_close == std::string::npos) break;
        const std::size_t live_end = live_close + close_tag.size(), cur_end = cur_close + close_tag.size();
        if (!same_calls(std::string_view(live_text).substr(open, live_end - open),
                        std::string_view(text).substr(open, cur_end - open)))
            break;
        const std::size_t k = boundary_at(live_off, live_end);
        const std::size_t j = boundary_at(byte_offsets(tok, cur), cur_end);
        if (k == std::string::npos || j == std::string::npos) break;
        std::vector<TokenId> next(live.begin(), live.begin() + static_cast<std::ptrdiff_t>(k));
        next.insert(next.end(), cur.begin() + static_cast<std::ptrdiff_t>(j), cur.end());
        cur = std::move(next);
        ++*replaced;
    }
    return cur;
}

// The prompt with its tool blocks swapped for the live bytes of the session it continues
// furthest (see replay_live_tool_blocks).
std::vector<TokenId> PoolSequenceSource::with_live_tool_blocks(std::span<const TokenId> prompt, uint64_t request) const {
    std::vector<TokenId> best(prompt.begin(), prompt.end());
    const TokenId dsml = tok_.specials().dsml;
    if (!exact_tool_replay_ || dsml < 0 || std::find(prompt.begin(), prompt.end(), dsml) == prompt.end()) return best;
    auto common = [](std::span<const TokenId> a, std::span<const TokenId> b) {
        return static_cast<std::size_t>(std::mismatch(a.begin(), a.end(), b.begin(), b.end()).first - a.begin());
    };
    std::size_t best_common = 0, before = 0;
    int blocks = 0;
    for (std::span<const TokenId> live : pool_->live_histories()) {
        int n = 0;
        std::vector<TokenId> p = replay_live_tool_blocks(tok_, live, prompt, &n);
        const std::size_t c = common(live, p);
        if (n > 0 && c > best_common) {
            best_common = c;
            before = common(live, prompt);
            blocks = n;
            best = std::move(p);
        }
    }
    if (blocks > 0 && trace_)
        trace_->write("tool_replay", {{"request", request}, {"blocks", blocks}, {"live_common_before", before},
                                      {"live_common_after", best_common}, {"prompt_tokens", prompt.size()},
                                      {"effective_prompt_tokens", best.size()}});
    return best;
}

SequenceLease PoolSequenceSource::acquire(std::span<const TokenId> prompt_in, uint64_t request) {
    if (prompt_in.empty()) fail("empty prompt");
    current_request_ = request;
    const std::vector<TokenId> replayed = with_live_tool_blocks(prompt_in, request);
    const std::span<const TokenId> prompt(replayed);
    // The rendered text is the disk key; without a disk cache it is not needed.
    const std::string text = disk_ ? tok_.decode(prompt) : std::string();
    // The pool syncs all but the last prompt token, so the session's sync-end checkpoint
    // sits one token before the end, and the last token is appended here. An identical
    // later prompt (a regenerate), which a live session holds whole, is synced whole: the
    // session restores that checkpoint and evaluates one token for the logits.
    const auto head = prompt.first(prompt.size() - 1);
    const bool whole = held_whole(prompt);
    runtime::PoolRequest req;
    req.tokens = whole ? prompt : head;
    req.text = text;
    req.tokenize = [this](std::string_view s) { return tok_.encode_chat(s); };
    req.require_token_prefix = true;
    req.max_new_tokens = prefill_step_;
    const runtime::PoolResult r = pool_->acquire(req);
    Session& s = *r.session;
    pool_->hold(s);
    SequenceLease lease;
    lease.seq = s.sequence();
    lease.source = runtime::cache_source_name(r.source);
    lease.evaluated = r.evaluated;
    lease.reused = s.size() - std::min<uint64_t>(r.evaluated, s.size());
    lease.prompt.assign(prompt.begin(), prompt.end());
    Lease& l = leases_[lease.seq];
    l.session = &s;
    l.request = request;
    l.prompt = lease.prompt;
    l.whole = whole;
    try {
        lease.evaluated += finish_prompt(l);
    } catch (...) {
        leases_.erase(lease.seq);
        pool_->release(s, s.tokens());
        throw;
    }
    if (l.at_prompt.empty()) {
        lease.pending = true;
        return lease;
    }
    lease.logits.assign(s.logits().begin(), s.logits().end());
    return lease;
}

bool PoolSequenceSource::held_whole(std::span<const TokenId> prompt) const {
    for (std::span<const TokenId> h : pool_->live_histories())
        if (h.size() >= prompt.size() && std::equal(prompt.begin(), prompt.end(), h.begin())) return true;
    return false;
}

// Once the session holds the synced part of the prompt: appends the last token when the
// head was synced, then takes the checkpoint release() rewinds to. Returns the tokens
// evaluated.
uint64_t PoolSequenceSource::finish_prompt(Lease& l) {
    Session& s = *l.session;
    const std::span<const TokenId> prompt(l.prompt);
    uint64_t evaluated = 0;
    if (!l.whole && s.size() + 1 == prompt.size()) {
        s.append(prompt.back());
        evaluated = 1;
    }
    if (s.size() == prompt.size()) l.at_prompt = engine_.checkpoint(s.sequence());
    return evaluated;
}

SourceProgress PoolSequenceSource::advance(SequenceId seq, uint64_t max_tokens) {
    Lease& l = leases_.at(seq);
    Session& s = *l.session;
    SourceProgress p;
    const std::span<const TokenId> prompt(l.prompt);
    const auto target = l.whole ? prompt : prompt.first(prompt.size() - 1);
    if (s.size() < target.size()) p.evaluated = pool_->extend(s, target, max_tokens).evaluated;
    p.evaluated += finish_prompt(l);
    if (!l.at_prompt.empty()) p.logits.assign(s.logits().begin(), s.logits().end());
    p.done = s.size();
    return p;
}

void PoolSequenceSource::release(SequenceId seq, std::vector<TokenId> history, SequenceCheckpoint, TokenId unfed) {
    auto it = leases_.find(seq);
    if (it == leases_.end()) return;
    Lease lease = std::move(it->second);
    leases_.erase(it);
    current_request_ = lease.request;
    Session& s = *lease.session;
    try {
        // Back to the prompt, so the Session's history and checkpoints describe the KV
        // again; it then evaluates the fed tokens itself. A sequence the scheduler reset
        // (failed step) is started over.
        if (history.size() < s.size()) {
            history.clear();
        } else if (engine_.sequence_length(seq) != s.size()) {
            if (!lease.at_prompt.empty() && engine_.can_restore(seq, lease.at_prompt))
                engine_.restore(seq, lease.at_prompt);
            else
                history.clear();
        }
        // The session evaluates the final sampled token too: the next turn renders it
        // (EOS after an answer, the end of a tool block), so it extends instead of
        // diverging one token before the end.
        if (!history.empty() && unfed >= 0 && history.size() + 1 < engine_.options().ctx) history.push_back(unfed);
        pool_->release(s, history);
    } catch (const std::exception& e) {
        std::cerr << "ds4-server: session of request " << lease.request << " dropped: " << e.what() << "\n";
        try {
            pool_->release(s, {});
        } catch (const std::exception&) {
        }
    }
}

uint64_t PoolSequenceSource::live_sequences() const { return pool_->stats().sessions; }

void PoolSequenceSource::shutdown() {
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& [seq, lease] : leases_) {
        try {
            pool_->release(*lease.session, {});
        } catch (const std::exception&) {
        }
    }
    leases_.clear();
    current_request_ = 0;
    pool_->shutdown();
    if (trace_) trace_->write("shutdown", {{"disk_saves", pool_->stats().disk_saves}});
}

KvCacheStats PoolSequenceSource::kv_stats() const {
    const runtime::PoolStats ps = pool_->stats();
    KvCacheStats k;
    k.live_hits = ps.live_hits;
    k.disk_hits = ps.disk_hits;
    k.misses = ps.cold_starts;
    k.forks = ps.forks;
    k.evictions = ps.evictions;
    k.disk_saves = ps.disk_saves;
    k.disk_load_failures = ps.disk_load_failures;
    k.live_sessions = ps.sessions;
    k.live_bytes = ps.resident_bytes;
    if (disk_) {
        k.disk_enabled = true;
        for (const kvstore::CacheEntry& e : disk_->entries()) {
            ++k.disk_files;
            k.disk_bytes += e.file_bytes;
        }
        k.disk_scans = disk_->scans();  // after entries(), which may have rescanned
    }
    return k;
}

}  // namespace ds4::server
