// A session: one engine sequence plus its token history and last logits, with prefix reuse
// (interface.md §6.13). sync(prompt) keeps the longest common prefix of the history and
// the prompt and evaluates only the rest. The KV state cannot be rewound behind its end
// (raw windows and compressor frontiers are overwritten as tokens are added), so the
// session keeps a bounded number of in-memory checkpoints at aligned lengths and, to go
// back, restores the nearest one at or below the common prefix and replays from there:
// at most checkpoint_interval tokens when the checkpoints are dense there.
//
// The results are bit-identical to a cold run of the same tokens: the engine's logits do
// not depend on how a sequence is split into chunks.
//
// Not thread-safe: use a Session (and its Engine) from one thread at a time.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "ds4/engine.h"

namespace ds4 {

struct SessionOptions {
    // Checkpoints are taken whenever the history reaches a multiple of this many tokens
    // (a prompt step never crosses one); 0: the engine's pass size (Engine::pass_tokens:
    // 256 on the CPU, 4096-8192 with CUDA, whose passes of 256 would leave its
    // tensor-core tiles mostly empty: half the prefill rate).
    uint32_t checkpoint_interval = 0;
    // At most this many are kept; beyond that, the one whose removal leaves the smallest
    // gap goes (the newest is always kept), so old prefixes stay reachable at a coarser
    // spacing. 0 disables checkpoints: going back then replays from token 0.
    uint32_t max_checkpoints = 8;
    // Also checkpoint where each sync() ends: the next request usually extends the prompt
    // but drops part of what was generated after it (e.g. hidden reasoning), so it
    // diverges right there and then nothing needs replaying.
    bool checkpoint_at_sync_end = true;
    // Prompt tokens per engine step (any split gives the same logits); 0: the engine's
    // pass size (Engine::pass_tokens).
    uint32_t prefill_chunk = 0;
};

// What one sync() did.
struct SyncStats {
    uint64_t reused = 0;     // history tokens kept (the common prefix)
    uint64_t replayed = 0;   // tokens before the common prefix evaluated again (after a restore)
    uint64_t evaluated = 0;  // tokens evaluated in all (replayed + new)
    uint64_t restored_from = 0;  // length of the checkpoint restored (0: none or from scratch)
};

class Session {
public:
    // Creates a sequence on `engine`, which must outlive the session.
    explicit Session(Engine& engine, SessionOptions options = {});
    ~Session();
    Session(Session&&) noexcept;
    Session& operator=(Session&&) noexcept;
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    const SessionOptions& options() const { return opt_; }
    SequenceId sequence() const { return seq_; }
    const std::vector<int32_t>& tokens() const { return tokens_; }
    uint64_t size() const { return tokens_.size(); }
    // The logits after the last token (n_vocab values; empty for an empty session).
    std::span<const float> logits() const { return logits_; }

    // Makes the history equal to `prompt`, reusing the longest common prefix; afterwards
    // logits() are those after prompt's last token. An empty prompt resets the session.
    // Token ids and the context size are checked first: a ds4::Error for a bad prompt
    // leaves the session as it was.
    SyncStats sync(std::span<const int32_t> prompt);
    // Appends tokens (one decode token or a chunk) and returns the logits after the last.
    std::span<const float> append(std::span<const int32_t> tokens);
    std::span<const float> append(int32_t token) { return append(std::span<const int32_t>(&token, 1)); }
    // Keeps the first n tokens (n <= size()).
    SyncStats rewind(uint64_t n);
    // A new session on the same engine with a copy of this one's state (no checkpoints:
    // the copy takes its own as it grows).
    Session fork() const;

    // DS4 session payload v1 (formats.md §5) of the whole session; load replaces the
    // session by a payload (a ds4::Error leaves it untouched).
    void save(std::vector<uint8_t>& out) const;
    void load(std::span<const uint8_t> payload);

    // In-memory checkpoints held, and their bytes.
    size_t checkpoint_count() const { return checkpoints_.size(); }
    uint64_t checkpoint_bytes() const;
    std::vector<uint64_t> checkpoint_lengths() const;

private:
    Session(Engine& engine, SessionOptions options, SequenceId seq);
    void evaluate(std::span<const int32_t> tokens, SyncStats& stats);
    uint64_t restore_at_or_below(uint64_t n);
    void maybe_checkpoint();
    void recover();
    void thin_checkpoints();

    Engine* engine_;
    SessionOptions opt_;
    SequenceId seq_ = 0;
    std::vector<int32_t> tokens_;
    std::vector<float> logits_;
    std::deque<SequenceCheckpoint> checkpoints_;  // increasing lengths
    Batch batch_;
    Logits out_;
};

}  // namespace ds4
