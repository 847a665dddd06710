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
// prompt in 2048-token passes gives each expert ~48 tokens per read instead of ~6, and
// the tensor-core tiles fill (bench/RESULTS.md, issue 8). Scratch ~0.9 MB per token.
inline constexpr uint32_t kCudaPrefillChunk = 2048;
// ... and the most tokens of a multi-sequence CUDA pass (the server's steps stay at or
// under 2048): step() evaluates a larger batch in several passes of whole entries.
inline constexpr uint32_t kCudaMaxPassTokens = 4096;

// Fills every field but `weights`.
MemoryEstimate estimate_memory(const model::Hparams& hp, uint64_t ctx);

}  // namespace ds4::runtime
