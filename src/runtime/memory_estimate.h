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

// Fills every field but `weights`.
MemoryEstimate estimate_memory(const model::Hparams& hp, uint64_t ctx);

}  // namespace ds4::runtime
