// The ds4 inference engine, batch first: one Engine holds a mapped model and any number
// of sequences (each with its own KV state for up to `ctx` tokens); step() advances any
// subset of them at once — prefill chunks and single decode tokens of different sequences
// in one call — and returns the requested logits rows.
//
// The API is deliberately narrow: plain integers, strings and float spans. No tensor,
// backend or GGUF type is visible here, so the CLI, the server and the bindings build on
// this header alone.
//
// Results are deterministic: a sequence's logits do not depend on what else is in the
// batch, on how its tokens are split into chunks, or on the thread count (the CPU backend
// evaluates every token through the same code in the same order).
//
// An Engine is not thread-safe: call it from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace ds4 {

// Cpu: the reference backend. Cuda: the whole forward pass on one CUDA GPU (weights and
// KV state in VRAM, CPU exact numerics); available when built with -DDS4_CUDA=ON, else
// Engine::open throws.
enum class Backend { Cpu, Cuda };

// Directional steering (interface.md §7.5, formats.md §8.1): `file` holds one direction d
// per layer (raw little-endian f32, n_layer × n_embd, no header; exactly that many bytes).
// Each layer's attention output y and/or FFN output y, before the HC post step, becomes
// y − scale · d · (d·y). Scales lie in [-100, 100]; positive removes the direction,
// negative amplifies it, 0 leaves the logits bit-identical to no steering. Unset scales:
// attn 0; ffn 1 when a file is given and neither scale is set, else 0. A non-zero scale
// without a file is an error. Engine::options() reports the scales in effect.
struct DirectionalSteering {
    std::string file;
    std::optional<float> attn;
    std::optional<float> ffn;
};

struct EngineOptions {
    unsigned threads = 0;    // 0: all hardware threads
    uint64_t ctx = 32768;    // context size: the most tokens one sequence may hold
    Backend backend = Backend::Cpu;
    // Optional MTP GGUF (the mtp.0.* block, spec model.md §2.4, e.g. written by
    // ds4-convert --mtp-out; or the model file itself when it carries the block, as
    // ds4-make-model --mtp writes): enables mtp_draft(). Only its tensors are validated.
    std::string mtp_path;
    DirectionalSteering steering;  // off by default
};

// What the model is, in plain numbers.
struct ModelSummary {
    std::string path;
    std::string name;          // general.name ("" when absent)
    std::string quant;         // "q2", "q4", "f16" or "f32" (the tensor type mix)
    uint32_t n_vocab = 0;
    uint32_t n_layer = 0;
    uint32_t n_embd = 0;
    uint32_t n_head = 0;
    uint32_t head_dim = 0;
    uint32_t n_expert = 0;
    uint32_t n_expert_used = 0;
    uint32_t window = 0;       // raw sliding window
    std::vector<uint32_t> compress_ratios;  // one per layer: 0, 4 or 128
    uint64_t n_params = 0;     // weights of the main model (MTP excluded)
    uint64_t file_bytes = 0;
    bool synthetic = false;    // written by ds4-make-model (random weights, not a real model)

    // For `ds4 --model-info`: what the file says and holds, read from its directory (no
    // tensor data is touched).
    std::string architecture;     // general.architecture
    uint64_t context_length = 0;  // deepseek4.context_length (0 when absent)
    // The file's tensors grouped by GGML type ("F32", "Q8_0", "IQ2_XXS", ...), in type-code
    // order; MTP tensors (mtp.*) included, and counted apart in mtp_tensor_bytes.
    struct TensorTypeGroup {
        std::string type;
        uint64_t tensors = 0;
        uint64_t bytes = 0;
    };
    std::vector<TensorTypeGroup> tensor_types;
    uint64_t tensor_bytes = 0;      // all tensor data (the sum of tensor_types)
    uint64_t mtp_tensor_bytes = 0;  // the mtp.* part of it
    // GGML types of the main model's routed experts (ffn_{gate,up,down}_exps); "" when a
    // layer has none. Every layer uses the same types (the tensor plan checks it).
    std::string expert_gate_type, expert_up_type, expert_down_type;
};

// Memory the engine needs at a context size (bytes). The KV state is per sequence and is
// allocated up front when a sequence is created (spec model.md §9.2).
struct MemoryEstimate {
    uint64_t ctx = 0;
    uint64_t weights = 0;          // the mapped GGUF file (page cache, not heap)
    uint64_t kv_raw = 0;           // raw sliding windows, all layers
    uint64_t kv_compressed = 0;    // compressed attention + indexer rows for ctx tokens
    uint64_t kv_frontier = 0;      // compressor frontiers (kv + score)
    uint64_t scratch = 0;          // evaluation scratch for one decode token at ctx
    uint64_t scratch_per_chunk_token = 0;  // extra scratch per token of a prefill chunk
    uint32_t prefill_chunk = 0;    // most tokens of one entry the backend takes per pass
    uint64_t raw_kv_rows = 0;      // rows per layer
    uint64_t compressed_kv_rows = 0;  // attention rows over all compressed layers
    // Backend::Cuda: the weights are uploaded to VRAM once and every sequence's KV state
    // lives there too (the same bytes as kv_per_sequence()); filled by the engine.
    std::string backend = "cpu";
    std::string device_name;
    uint64_t device_weights = 0;  // VRAM held by the uploaded weights
    uint64_t device_scratch = 0;  // VRAM scratch of prefill_chunk-token passes, reserved at open
    uint64_t device_free = 0;     // free VRAM when the estimate was made
    uint64_t device_total = 0;

    uint64_t kv_per_sequence() const { return kv_raw + kv_compressed + kv_frontier; }
    // Weights + one sequence + scratch.
    uint64_t total() const { return weights + kv_per_sequence() + scratch; }
    // "context buffers X MiB (ctx=…, backend=cpu|cuda, raw_kv_rows=…, compressed_kv_rows=…)"
    // followed by one indented line per component (with cuda: VRAM lines too).
    std::string report() const;
};

using SequenceId = uint64_t;

// Which rows of a chunk need logits when not listed one by one.
enum class LogitsWanted { None, Last };

// The work of one step(): entries of (sequence, tokens, chunk indices that need logits).
// Reuse a Batch with clear() to keep its buffers.
class Batch {
public:
    struct Entry {
        SequenceId seq;
        std::span<const int32_t> tokens;
        std::span<const uint32_t> logits_at;  // indices into tokens, increasing
    };

    // Appends `tokens` for `seq`, with logits after each chunk index in `logits_at`.
    void add(SequenceId seq, std::span<const int32_t> tokens, std::span<const uint32_t> logits_at);
    // Appends `tokens` for `seq`, with logits after the last one or none. (An enum, not a
    // bool: an array of indices would silently convert to true.)
    void add(SequenceId seq, std::span<const int32_t> tokens, LogitsWanted want = LogitsWanted::Last);
    // Appends one decode token with its logits.
    void add_token(SequenceId seq, int32_t token);
    void clear();

    size_t size() const { return entries_.size(); }
    bool empty() const { return entries_.empty(); }
    Entry operator[](size_t i) const;
    uint64_t n_tokens() const { return tokens_.size(); }
    uint64_t n_logits() const { return logits_at_.size(); }

private:
    struct Slot {
        SequenceId seq;
        size_t token_begin, token_count, logit_begin, logit_count;
    };
    std::vector<Slot> entries_;
    std::vector<int32_t> tokens_;
    std::vector<uint32_t> logits_at_;
};

namespace detail {
// Where Logits keep their values: the heap, or memory an engine provides (a CUDA engine:
// page-locked host memory, which the GPU copies into directly instead of staging a
// pageable copy). Stateful: a vector moved or copied takes its allocator along.
template <class T>
struct LogitsAllocator {
    using value_type = T;
    using propagate_on_container_move_assignment = std::true_type;
    using propagate_on_container_copy_assignment = std::true_type;
    using propagate_on_container_swap = std::true_type;
    using is_always_equal = std::false_type;
    void* (*alloc)(size_t bytes) = nullptr;  // null: operator new; returns null when it cannot
    void (*release)(void* p) = nullptr;

    LogitsAllocator() = default;
    LogitsAllocator(void* (*a)(size_t), void (*r)(void*)) : alloc(a), release(r) {}
    template <class U>
    LogitsAllocator(const LogitsAllocator<U>& o) : alloc(o.alloc), release(o.release) {}

    T* allocate(size_t n) {
        if (alloc == nullptr) return static_cast<T*>(::operator new(n * sizeof(T)));
        void* p = alloc(n * sizeof(T));
        if (p == nullptr) throw std::bad_alloc();
        return static_cast<T*>(p);
    }
    void deallocate(T* p, size_t) {
        if (alloc == nullptr)
            ::operator delete(p);
        else
            release(p);
    }
    template <class U>
    bool operator==(const LogitsAllocator<U>& o) const {
        return alloc == o.alloc && release == o.release;
    }
};
}  // namespace detail

// The logits rows of one step(), in batch order (entry by entry, each entry's rows in
// logits_at order).
class Logits {
public:
    struct RowInfo {
        SequenceId seq;
        uint64_t position;  // absolute position in the sequence of the token the row follows
    };

    size_t rows() const { return info_.size(); }
    uint32_t vocab() const { return vocab_; }
    std::span<const float> row(size_t i) const;
    const RowInfo& info(size_t i) const { return info_.at(i); }
    // Index of the largest finite logit of row i (lowest id on ties; 0 if none is finite).
    int32_t argmax(size_t i) const;

    using Values = std::vector<float, detail::LogitsAllocator<float>>;

private:
    friend class Engine;
    uint32_t vocab_ = 0;
    std::vector<RowInfo> info_;
    Values values_;  // rows × vocab
};

// An in-memory checkpoint of one sequence (Engine::checkpoint): its length, raw windows
// and compressor frontiers. Compressed rows are append-only, so they are not copied:
// restoring truncates their counts. Movable, opaque; empty when default-constructed.
class SequenceCheckpoint {
public:
    SequenceCheckpoint();
    ~SequenceCheckpoint();
    SequenceCheckpoint(SequenceCheckpoint&&) noexcept;
    SequenceCheckpoint& operator=(SequenceCheckpoint&&) noexcept;
    SequenceCheckpoint(const SequenceCheckpoint&) = delete;
    SequenceCheckpoint& operator=(const SequenceCheckpoint&) = delete;

    bool empty() const { return data_ == nullptr; }
    SequenceId sequence() const { return seq_; }
    uint64_t length() const { return length_; }  // tokens of the sequence when taken
    uint64_t bytes() const;                       // memory held by the copy

private:
    friend class Engine;
    struct Data;
    std::unique_ptr<Data> data_;
    SequenceId seq_ = 0;
    uint64_t length_ = 0;
};

// A sequence restored from a session payload: its token history and last logits.
struct SequenceHistory {
    std::vector<int32_t> tokens;
    std::vector<float> logits;  // n_vocab values: the logits after the last token
};

class Engine {
public:
    // Maps the GGUF (no copy), validates metadata and every tensor against the ds4 plan,
    // and prepares the backend. Throws ds4::Error naming the file and what was wrong.
    static Engine open(const std::string& path, const EngineOptions& options = {});

    ~Engine();
    Engine(Engine&&) noexcept;
    Engine& operator=(Engine&&) noexcept;
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    const ModelSummary& model() const;
    const EngineOptions& options() const;  // threads resolved to the actual count
    MemoryEstimate memory_estimate(uint64_t ctx) const;
    MemoryEstimate memory_estimate() const { return memory_estimate(options().ctx); }
    // Most tokens of one sequence the backend evaluates in one pass (longer entries are
    // split): 256 on the CPU; with CUDA 4096, or 8192 where the weights leave 24 GiB of
    // VRAM free (expert tiles fill, issue 8). Session steps of this size waste nothing.
    uint32_t pass_tokens() const;
    // tokenizer.ggml.tokens, index = token id (empty when the file has no vocabulary).
    const std::vector<std::string>& vocab() const;

    // Sequences. Ids are never reused, so a freed id stays invalid. A sequence's KV state
    // (memory_estimate().kv_per_sequence() bytes) is allocated by create_sequence; a freed
    // one is kept and handed to the next create_sequence instead of being reallocated.
    SequenceId create_sequence();
    void free_sequence(SequenceId seq);
    void reset_sequence(SequenceId seq);  // back to zero tokens
    uint64_t sequence_length(SequenceId seq) const;
    size_t sequence_count() const;

    // Evaluates every entry and returns the requested logits. Everything is validated
    // first (known sequences, each at most once, non-empty chunks, token ids < n_vocab,
    // logits indices increasing and inside their chunk, room in the context); on a
    // ds4::Error from validation nothing is modified.
    Logits step(const Batch& batch);
    // Same, reusing `out`'s buffers (no allocation once they are large enough).
    void step(const Batch& batch, Logits& out);

    // ---- MTP drafts (speculative decoding) ----
    // True when the engine was opened with EngineOptions::mtp_path. On Backend::Cuda the
    // block runs on the GPU too (cuda/mtp.h), as does directional steering.
    bool has_mtp() const;
    // Draft logits (n_vocab values) for the token after `next`, where `next` is the token
    // that will follow the sequence's last token: the MTP block runs on the main model's
    // final hidden state of the last token (position p = sequence_length − 1) paired with
    // `next`, at MTP position p (the DeepSeek-V3 pairing of spec model.md §10.1; row p of
    // the goldens' mtp_logits_decode). The sequence is not modified: the MTP window cache
    // is brought up to date from the states recorded by step() and the draft's own row
    // is forgotten afterwards, so drafts may be asked for any candidate `next`, repeatedly.
    // Throws without MTP, for an empty sequence or a token id out of range.
    void mtp_draft(SequenceId seq, int32_t next, std::span<float> logits);
    std::vector<float> mtp_draft(SequenceId seq, int32_t next);
    // Greedy chained drafts for speculative decoding (include/ds4/speculative.h):
    // drafts[0] = argmax of mtp_draft(seq, next); each later drafts[k] is the argmax of the
    // MTP block run at position p + k on its OWN output HC state of step k − 1 paired with
    // drafts[k − 1] (the recursive step of model.md §10.2). Fills drafts.size() tokens
    // (argmax ties: lowest id). As with mtp_draft, the sequence is not modified: the MTP
    // window rows the chain wrote are forgotten and the ring slots they overwrote put back.
    void mtp_draft_greedy(SequenceId seq, int32_t next, std::span<int32_t> drafts);

    // ---- Sequence state (sessions, interface.md §6.13–6.14) ----
    // The engine keeps no token history: callers pass it in. All of these are whole-state
    // operations of the CPU backend, in the same deterministic arithmetic as step().

    // The sequence as a DS4 session payload v1 (formats.md §5): `tokens` is its history
    // (tokens.size() == sequence_length) and `logits` the n_vocab logits after the last
    // token. `out` is cleared first and its capacity reused.
    void save_sequence(SequenceId seq, std::span<const int32_t> tokens,
                       std::span<const float> logits, std::vector<uint8_t>& out) const;
    uint64_t sequence_payload_bytes(SequenceId seq) const;
    // Replaces the sequence's state by a payload and returns its history. Every header
    // field and count is checked first: on a ds4::Error the sequence is untouched. With
    // MTP, the recorded final states before the loaded length are unknown (zero), so
    // drafts in the first `window` tokens after a load are poorer (never wrong output:
    // drafts are verified).
    SequenceHistory load_sequence(SequenceId seq, std::span<const uint8_t> payload);

    // Checkpoints. restore() puts the sequence back at cp.length() tokens, exactly as it
    // was when cp was taken. It is valid while the positions before cp.length() have not
    // been re-evaluated since (rewinding below cp.length() and evaluating again rewrites
    // compressed rows the checkpoint does not copy); the engine tracks this and throws,
    // leaving the sequence untouched, for a checkpoint of another sequence or one no
    // longer valid.
    SequenceCheckpoint checkpoint(SequenceId seq) const;
    bool can_restore(SequenceId seq, const SequenceCheckpoint& cp) const;
    void restore(SequenceId seq, const SequenceCheckpoint& cp);

    // A new sequence with a copy of seq's state (checkpoints of seq do not apply to it).
    SequenceId fork_sequence(SequenceId seq);

private:
    struct Impl;
    explicit Engine(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace ds4
