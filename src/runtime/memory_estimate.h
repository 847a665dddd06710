// Sizes of the CPU backend's buffers for a shape and context (spec model.md §9.2): the
// KV state exactly as cpu::KvState allocates it, the evaluation scratch as cpu::CpuForward
// sizes it (up to small fixed vectors).
#pragma once

#include <cstdint>

#include "ds4/engine.h"
#include "model/hparams.h"

namespace ds4::runtime {

// The largest chunk the engine hands the backend at once; longer entries are split
// (which gives the same results, model.md §8), so scratch stays bounded.
inline constexpr uint32_t kPrefillChunk = 256;
// The CUDA backend's chunk: a pass reads every routed expert it touches once, so a long
// prompt in 4096-token passes gives each expert ~96 tokens per read instead of ~6, and
// the tensor-core tiles fill (bench/RESULTS.md, issue 8: 43 layers, prefill to 8k 2520
// t/s in 2048-token passes, 2684 in 4096, 2748 in 8192). Scratch ~0.9 MB per token, as
// a multi-sequence pass (kCudaMaxPassTokens) already takes.
inline constexpr uint32_t kCudaPrefillChunk = 4096;
// ... and the most tokens of a multi-sequence CUDA pass: step() evaluates a larger batch
// in several passes of whole entries.
inline constexpr uint32_t kCudaMaxPassTokens = 4096;
// DS4_CUDA_PREFILL_CHUNK overrides kCudaPrefillChunk (256 to 16384 tokens; other values
// are an error), to measure how the pass size trades scratch for expert tile fill.
uint32_t cuda_prefill_chunk_from_env();

// Fills every field but `weights`.
MemoryEstimate estimate_memory(const model::Hparams& hp, uint64_t ctx);

}  // namespace ds4::runtime
