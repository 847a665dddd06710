// Sizes of the CPU backend's buffers for a shape and context (spec model.md §9.2): the
// KV state exactly as cpu::KvState allocates it, the evaluation scratch as cpu::CpuForward
// sizes it (up to small fixed vectors).
#pragma once

#include <cstdint>
#include <functional>

#include "ds4/engine.h"
#include "model/hparams.h"

namespace ds4::runtime {

// The largest chunk the engine hands the backend at once; longer entries are split
// (which gives the same results, model.md §8), so scratch stays bounded.
inline constexpr uint32_t kPrefillChunk = 256;
// The CUDA backend's chunk: a pass reads every routed expert it touches once, so a long
// prompt in 4096-token passes gives each expert ~96 tokens per read instead of ~6, and
// the tensor-core tiles fill (bench/RESULTS.md, issue 8: 43 layers, prefill to 8k 2520
// t/s in 2048-token passes, 2684 in 4096, 2748 in 8192). Scratch ~0.9 MB per token; a
// multi-sequence pass takes at most as many tokens (step() splits a larger batch).
inline constexpr uint32_t kCudaPrefillChunk = 4096;
// Where the weights leave at least kCudaLongPrefillFree of VRAM (an H200 with the q2
// model: ~50 GiB) the passes are twice as long (43 layers, prefill to 8k on an H200:
// 3623 t/s in 8192-token passes, 3482 in 4096), for ~7.4 GB of scratch.
inline constexpr uint32_t kCudaLongPrefillChunk = 8192;
inline constexpr uint64_t kCudaLongPrefillFree = uint64_t{24} << 30;
// The CUDA pass size for free_vram bytes left after the weights, or
// DS4_CUDA_PREFILL_CHUNK (256 to 16384 tokens; other values are an error).
uint32_t cuda_prefill_chunk(uint64_t free_vram);
bool cuda_prefill_chunk_forced();  // DS4_CUDA_PREFILL_CHUNK is set

// The pass size Engine::open keeps, its scratch allocated there (not at the first long
// prompt, when sequences may hold the VRAM): `first` if try_reserve(first) holds it,
// else the largest of its halvings down to kCudaMinPass that does; only `first` when
// `forced`. None fitting is an error naming the pass, its scratch and the free VRAM.
inline constexpr uint32_t kCudaMinPass = 256;
uint32_t fit_cuda_pass(uint32_t first, bool forced, uint64_t free_vram,
                       const std::function<bool(uint32_t)>& try_reserve,
                       const std::function<uint64_t(uint32_t)>& scratch_bytes);

// Fills every field but `weights`.
MemoryEstimate estimate_memory(const model::Hparams& hp, uint64_t ctx);

}  // namespace ds4::runtime
