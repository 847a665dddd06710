// The whole-model forward pass on one CUDA GPU (issue 8), behind the same contract as
// cpu::CpuForward::eval: a chunk of tokens of ONE sequence at positions [pos, pos + n),
// any split into chunks giving the same logits (model.md §8). Weights are uploaded once
// (the bound cpu::ModelWeights: big matrices in their GGUF type, small vectors as f32);
// each sequence's KV state (raw window ring, compressor frontiers, compressed rows)
// lives in VRAM, keyed by the host cpu::KvState that the engine keeps for it.
//
// Numerics are the CPU exact path's (f32 activations, weights decoded exactly, the FP8 /
// FP4 round trips), op by op, so the CPU and CUDA logits agree to rounding (expf, FMAs
// in the dot products, reduction order). The token embedding is looked up on the host.
//
// State ownership: after eval() the device copy is authoritative and the host KvState
// only has its length advanced. download() brings the host contents up to date (before
// checkpoints, payloads, forks); invalidate() says the host contents changed (restore,
// load, fork) so the next eval() uploads them. A state whose length differs from the
// device copy's (e.g. after KvState::reset) has its windows and frontiers uploaded too.
//
// Routed experts are grouped on the device (no host round trip inside a step) for the
// exact path; the fast int8 path still brings the router's choice to the host.
//
// CUDA graphs: positions, ring slots, compressed-row counts and the indexer's on/off are
// device values the kernels read, so the launches of a pass depend only on its key (the
// sequences of its tokens, each token's indexer grid bound, the logit rows). A pass of
// at most 64 tokens whose key one of the last 4 eager passes had is captured, cached
// (8 keys, least recently used goes) and replayed for every later pass of that key:
// batch-1 decode replays one graph per step. The embedding / position uploads before
// and the logits download after stay outside the graph. $DS4_CUDA_GRAPH=0 (or
// set_graphs(false)) launches one by one; both give bitwise the same logits.
//
// Batched attention (issue 8): the stateful attention part (raw ring, compressors,
// indexer, attention) of a pass of 2 or more tokens runs for all of them in ~6 launches
// per layer instead of ~5 per token, bitwise the same as token by token;
// $DS4_CUDA_BATCH_ATTN=0 (or set_batch_attn(false)) walks the tokens one by one, =all
// batches single-token passes too.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "cpu/forward.h"
#include "cpu/kv_state.h"
#include "cpu/steering.h"

namespace ds4::cuda {

class Forward {
public:
    // Uploads the model's weights; `model` must outlive the Forward. Throws ds4::Error when
    // no GPU is present or the weights do not fit.
    explicit Forward(const cpu::CpuModel& model);
    ~Forward();
    Forward(const Forward&) = delete;
    Forward& operator=(const Forward&) = delete;

    // cpu::CpuForward::eval's contract (same checks, same logits layout).
    void eval(cpu::KvState& state, uint64_t pos, std::span<const int32_t> tokens,
              std::span<const uint32_t> logit_rows, std::span<float> logits);

    // Chunks of DIFFERENT sequences in one pass: every projection, the MoE and the head
    // run over all their tokens at once (experts grouped over the whole batch); the
    // stateful attention part sees each token against its own sequence (batched
    // attention, above: all tokens in the same launches). Each chunk
    // starts at its state's length; a sequence's logits equal those of eval() alone, up
    // to the matmul's rounding.
    struct Chunk {
        cpu::KvState* state = nullptr;
        std::span<const int32_t> tokens;
        std::span<const uint32_t> logit_rows;
        std::span<float> logits;
    };
    void eval_batch(std::span<const Chunk> chunks);

    // eval() with the chunk's input HC state given instead of the token embeddings (the
    // MTP block, cuda/mtp.h): x_dev holds tokens.size() rows of hc_dim floats in device
    // memory, complete before the call; `tokens` still feed the checks and the routing.
    void eval_from_hc(cpu::KvState& state, uint64_t pos, std::span<const int32_t> tokens, const float* x_dev,
                      std::span<const uint32_t> logit_rows, std::span<float> logits);

    // Directional steering of every layer's attention and FFN outputs (cuda/steering.h,
    // cpu/steering.h's formula at the same two sites); zero scales: off.
    void set_steering(const cpu::SteeringDirections& dirs, float attn_scale, float ffn_scale);

    // The final HC state of row t (over all chunks) of the last eval (downloaded on demand).
    std::span<const float> final_hc(uint32_t t);

    void download(cpu::KvState& state);          // device → host contents (no-op when current)
    // The host contents changed: the next eval() uploads the raw windows and frontiers,
    // and the compressed rows too when `rows_changed` (a load or a fork; a restore only
    // truncates the append-only rows, whose device copy stays valid).
    void invalidate(const cpu::KvState& state, bool rows_changed);
    void forget(const cpu::KvState& state);      // frees the device copy

    uint64_t weight_bytes() const;  // VRAM held by the uploaded weights

    // Allocates the scratch of passes of up to n tokens now (Engine::open: its pass size),
    // so that a long prompt later cannot fail on an allocation. False, with the token
    // scratch released, when the VRAM does not hold it; other CUDA errors throw.
    bool reserve_pass(uint32_t n);
    uint64_t pass_scratch_bytes(uint32_t n) const;  // what reserve_pass(n) allocates
    uint32_t reserved_tokens() const;               // the largest pass reserved so far

    // Routed experts through the fast int8 matvec (cuda/matmul_q8.h: activations rounded
    // to int8 per block of 32) instead of the exact path, for the expert matrices whose
    // type it takes (Q8_0, Q2_K, Q4_K, IQ2_XXS). Off by default (the exact numerics),
    // unless $DS4_CUDA_FAST_EXPERTS=1 when the Forward is made (the engine and CLI opt in
    // that way). Measured against the exact path in tests/cuda/test_forward.cpp
    // (CudaFastExperts).
    void set_fast_experts(bool on);
    bool fast_experts() const;

    // The batched attention state kernels (see above) for passes of at least min_tokens
    // tokens; on unless $DS4_CUDA_BATCH_ATTN=0 when the Forward is made.
    void set_batch_attn(bool on, uint32_t min_tokens = 2);
    bool batch_attn() const;

    // Dense Q8_0 products of multi-token passes on the tensor cores (cuda/matmul_mma.h:
    // activations rounded to int8 per block of 32) where mma_applies(rows, n, min_work)
    // says so; decode and small batches keep the exact matvec path. On by default unless
    // $DS4_CUDA_MMA=0 when the Forward is made. min_work (rows · tokens) below the default
    // forces the path onto small products (tests). Measured against the exact path in
    // tests/cuda/test_forward.cpp (CudaMma).
    void set_mma(bool on, uint64_t min_work);
    bool mma() const;
    // The routed experts of passes of at least kMmaExpertsMinTokens tokens (or
    // $DS4_CUDA_MMA_EXPERTS_MIN) on the tensor cores too (cuda/matmul_mma_experts.h:
    // IQ2_XXS, Q2_K, Q4_K; int8 activations as above), under the same set_mma switch, for
    // expert matrices of at least min_values weights (default kMmaExpertsMinValues; 0
    // forces the demo model's onto it: tests). On by default unless
    // $DS4_CUDA_MMA_EXPERTS=0 when the Forward is made. Measured against the exact path in
    // tests/cuda/test_forward.cpp (CudaMmaExperts).
    void set_mma_experts(bool on, uint64_t min_values);
    bool mma_experts() const;
    // The routed experts of the passes below that threshold (decode, small batches) on
    // the grouped int8-activation matvec (cuda/matmul_q8_experts.h: IQ2_XXS, Q2_K, Q4_K;
    // the same int8 activations), for expert matrices of at least min_values weights
    // (default kQ8ExpertsMinValues; 0 forces the demo model's onto it: tests). On by
    // default unless $DS4_CUDA_Q8_EXPERTS=0 when the Forward is made. Measured against the
    // exact path in tests/cuda/test_forward.cpp (CudaQ8Experts).
    void set_q8_experts(bool on, uint64_t min_values);
    bool q8_experts() const;

    // Graph capture of small passes (see above); on unless $DS4_CUDA_GRAPH=0 when the
    // Forward is made. Fast experts (a host round trip per layer) always run eagerly.
    void set_graphs(bool on);
    bool graphs() const;
    struct GraphStats {
        uint64_t captures = 0;  // graphs captured
        uint64_t replays = 0;   // passes run as a graph launch (including each capture's first)
        uint64_t eager = 0;     // graphable passes run one launch at a time (a key seen once)
        uint64_t failed = 0;    // captures that failed (graphs are then off for this Forward)
        uint64_t parts = 0;     // graphs the last capture made (layers in parts, kGraphPartLayers)
    };
    GraphStats graph_stats() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Number of usable CUDA devices (0 without a driver or GPU; never throws).
int gpu_count();

// Host memory for logits (Logits' allocator in a CUDA engine): page-locked up to
// kPinnedLogitsMaxBytes, where the device's copy lands directly (a pageable destination
// is copied in staged pieces), else the heap, as when page-locking fails. Null when out
// of memory. pinned_logits_free takes either kind.
inline constexpr size_t kPinnedLogitsMaxBytes = size_t{64} << 20;  // 128 rows of 129280
void* pinned_logits_alloc(size_t bytes);
void pinned_logits_free(void* p);

}  // namespace ds4::cuda
