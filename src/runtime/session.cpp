#include "ds4/session.h"

#include <algorithm>
#include <utility>

#include "ds4/error.h"

namespace ds4 {

namespace {

uint64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
    const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    return static_cast<uint64_t>(ia - a.begin());
}

// Checked before anything moves, so a bad request never costs the session its state.
void check_tokens(const Engine& engine, uint64_t have, std::span<const int32_t> add) {
    const uint64_t ctx = engine.options().ctx, vocab = engine.model().n_vocab;
    if (add.size() > ctx - std::min(have, ctx))
        fail("session: ", have, " + ", add.size(), " tokens exceed the context size ", ctx);
    for (size_t i = 0; i < add.size(); ++i)
        if (add[i] < 0 || static_cast<uint64_t>(add[i]) >= vocab)
            fail("session: token id ", add[i], " at index ", have + i, " is out of range [0, ", vocab, ")");
}

}  // namespace

Session::Session(Engine& engine, SessionOptions options)
    : Session(engine, options, engine.create_sequence()) {}

Session::Session(Engine& engine, SessionOptions options, SequenceId seq)
    : engine_(&engine), opt_(options), seq_(seq) {
    if (opt_.prefill_chunk == 0) opt_.prefill_chunk = engine.pass_tokens();
    if (opt_.checkpoint_interval == 0) opt_.checkpoint_interval = engine.pass_tokens();
}

Session::~Session() {
    if (engine_) engine_->free_sequence(seq_);
}

Session::Session(Session&& o) noexcept
    : engine_(std::exchange(o.engine_, nullptr)),
      opt_(o.opt_),
      seq_(o.seq_),
      tokens_(std::move(o.tokens_)),
      logits_(std::move(o.logits_)),
      checkpoints_(std::move(o.checkpoints_)) {}

Session& Session::operator=(Session&& o) noexcept {
    if (this != &o) {
        if (engine_) engine_->free_sequence(seq_);
        engine_ = std::exchange(o.engine_, nullptr);
        opt_ = o.opt_;
        seq_ = o.seq_;
        tokens_ = std::move(o.tokens_);
        logits_ = std::move(o.logits_);
        checkpoints_ = std::move(o.checkpoints_);
    }
    return *this;
}

SyncStats Session::sync(std::span<const int32_t> prompt_in) {
    check_tokens(*engine_, 0, prompt_in);
    // A copy: the prompt may alias tokens_ (rewind passes a prefix of it).
    const std::vector<int32_t> prompt(prompt_in.begin(), prompt_in.end());
    SyncStats st;
    const uint64_t P = prompt.size();
    const uint64_t common = common_prefix(tokens_, prompt);
    st.reused = common;
    if (P == 0) {
        engine_->reset_sequence(seq_);
        tokens_.clear();
        logits_.clear();
        checkpoints_.clear();
        return st;
    }
    if (common == P && common == tokens_.size()) return st;
    try {
        uint64_t from = common;
        if (common < tokens_.size()) {
            // Going back: the logits after prompt's last token must be recomputed, so at
            // least that token is evaluated again.
            from = restore_at_or_below(std::min(common, P - 1));
            st.restored_from = from;
            st.replayed = std::min(common, P) - from;
        }
        evaluate(std::span<const int32_t>(prompt).subspan(from), st);
    } catch (...) {
        recover();
        throw;
    }
    if (opt_.checkpoint_at_sync_end) maybe_checkpoint();
    return st;
}

// After a failed step: the engine leaves a sequence untouched when it rejects a batch,
// and empties it when evaluation itself failed; keep tokens_ in line with it.
void Session::recover() {
    if (engine_->sequence_length(seq_) == tokens_.size()) return;
    engine_->reset_sequence(seq_);
    tokens_.clear();
    logits_.clear();
    checkpoints_.clear();
}

std::span<const float> Session::append(std::span<const int32_t> tokens) {
    if (tokens.empty()) return logits_;
    check_tokens(*engine_, tokens_.size(), tokens);
    // A copy: `tokens` may alias tokens_, which grows. Decode steps take only the
    // aligned checkpoints.
    const std::vector<int32_t> add(tokens.begin(), tokens.end());
    SyncStats st;
    try {
        evaluate(add, st);
    } catch (...) {
        recover();
        throw;
    }
    return logits_;
}

SyncStats Session::rewind(uint64_t n) {
    if (n > tokens_.size()) fail("session: cannot rewind to ", n, " tokens, the session holds ", tokens_.size());
    return sync(std::span<const int32_t>(tokens_).first(n));
}

Session Session::fork() const {
    Session f(*engine_, opt_, engine_->fork_sequence(seq_));
    f.tokens_ = tokens_;
    f.logits_ = logits_;
    return f;
}

void Session::save(std::vector<uint8_t>& out) const {
    if (!logits_.empty()) {
        engine_->save_sequence(seq_, tokens_, logits_, out);
        return;
    }
    const std::vector<float> zeros(engine_->model().n_vocab, 0.0f);
    engine_->save_sequence(seq_, tokens_, zeros, out);
}

void Session::load(std::span<const uint8_t> payload) {
    SequenceHistory h = engine_->load_sequence(seq_, payload);
    tokens_ = std::move(h.tokens);
    logits_ = tokens_.empty() ? std::vector<float>{} : std::move(h.logits);
    checkpoints_.clear();
    // A later divergence inside the loaded prefix would otherwise replay it all.
    if (!tokens_.empty() && opt_.max_checkpoints > 0) checkpoints_.push_back(engine_->checkpoint(seq_));
}

uint64_t Session::checkpoint_bytes() const {
    uint64_t n = 0;
    for (const SequenceCheckpoint& c : checkpoints_) n += c.bytes();
    return n;
}

std::vector<uint64_t> Session::checkpoint_lengths() const {
    std::vector<uint64_t> v;
    for (const SequenceCheckpoint& c : checkpoints_) v.push_back(c.length());
    return v;
}

// Evaluates `tokens` after the current history in chunks that end at every checkpoint
// boundary, and keeps the logits of the last one.
void Session::evaluate(std::span<const int32_t> tokens, SyncStats& stats) {
    const uint64_t interval = opt_.max_checkpoints > 0 ? opt_.checkpoint_interval : 0;
    size_t done = 0;
    while (done < tokens.size()) {
        const uint64_t pos = tokens_.size();
        uint64_t n = std::min<uint64_t>(opt_.prefill_chunk, tokens.size() - done);
        if (interval > 0) n = std::min(n, (pos / interval + 1) * interval - pos);
        const bool last = done + n == tokens.size();
        batch_.clear();
        batch_.add(seq_, tokens.subspan(done, n), last ? LogitsWanted::Last : LogitsWanted::None);
        engine_->step(batch_, out_);
        tokens_.insert(tokens_.end(), tokens.begin() + static_cast<std::ptrdiff_t>(done),
                       tokens.begin() + static_cast<std::ptrdiff_t>(done + n));
        if (last) logits_.assign(out_.row(0).begin(), out_.row(0).end());
        done += n;
        stats.evaluated += n;
        if (interval > 0 && tokens_.size() % interval == 0) maybe_checkpoint();
    }
}

// Puts the engine state back at the longest restorable checkpoint of at most n tokens
// (or empty) and truncates the history to it. Returns its length.
uint64_t Session::restore_at_or_below(uint64_t n) {
    while (!checkpoints_.empty() && (checkpoints_.back().length() > n ||
                                     !engine_->can_restore(seq_, checkpoints_.back())))
        checkpoints_.pop_back();
    logits_.clear();
    if (checkpoints_.empty()) {
        engine_->reset_sequence(seq_);
        tokens_.clear();
        return 0;
    }
    const SequenceCheckpoint& cp = checkpoints_.back();
    engine_->restore(seq_, cp);
    tokens_.resize(cp.length());
    return cp.length();
}

void Session::maybe_checkpoint() {
    if (opt_.max_checkpoints == 0 || tokens_.empty()) return;
    if (!checkpoints_.empty() && checkpoints_.back().length() >= tokens_.size()) return;
    checkpoints_.push_back(engine_->checkpoint(seq_));
    thin_checkpoints();
}

// Drops the checkpoint whose removal leaves the smallest gap between its neighbours
// (never the newest) until at most max_checkpoints remain: recent prefixes keep a fine
// spacing while old ones stay reachable.
void Session::thin_checkpoints() {
    while (checkpoints_.size() > opt_.max_checkpoints) {
        size_t best = 0;
        uint64_t best_gap = UINT64_MAX;
        for (size_t i = 0; i + 1 < checkpoints_.size(); ++i) {
            const uint64_t prev = i == 0 ? 0 : checkpoints_[i - 1].length();
            const uint64_t gap = checkpoints_[i + 1].length() - prev;
            if (gap < best_gap) {
                best_gap = gap;
                best = i;
            }
        }
        checkpoints_.erase(checkpoints_.begin() + static_cast<std::ptrdiff_t>(best));
    }
}

}  // namespace ds4
