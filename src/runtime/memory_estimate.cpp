#include "runtime/memory_estimate.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "ds4/error.h"

namespace ds4 {

namespace {

std::string mib(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
    return buf;
}

}  // namespace

std::string MemoryEstimate::report() const {
    const uint64_t buffers = kv_per_sequence() + scratch;
    std::string vram;
    if (backend == "cuda")
        vram = cat("  VRAM weights         ", mib(device_weights), " (uploaded once)\n",
                   "  VRAM kv per sequence ", mib(kv_per_sequence()), " (allocated with the sequence)\n",
                   "  VRAM pass scratch    ", mib(device_scratch), " (passes of ", prefill_chunk,
                   " tokens, reserved at open)\n",
                   "  VRAM free            ", mib(device_free), " of ", mib(device_total), " (",
                   device_name, ")\n");
    return cat("context buffers ", mib(buffers), " (ctx=", ctx, ", backend=", backend, ", prefill_chunk=",
               prefill_chunk, ", raw_kv_rows=", raw_kv_rows,
               ", compressed_kv_rows=", compressed_kv_rows, ")\n",
               "  weights (mapped)     ", mib(weights), "\n",
               "  kv per sequence      ", mib(kv_per_sequence()), " (raw ", mib(kv_raw),
               ", compressed ", mib(kv_compressed), ", frontiers ", mib(kv_frontier), ")\n",
               "  scratch              ", mib(scratch), " (+", scratch_per_chunk_token,
               " B per prefill chunk token)\n",
               vram);
}

namespace runtime {

namespace {

constexpr uint64_t kF32 = sizeof(float);

// Frontier (kv + score) and row bytes of one compressor of row width d.
void add_compressor(MemoryEstimate& m, uint32_t ratio, uint64_t d, uint64_t ctx) {
    const uint64_t coff = ratio == 4 ? 2 : 1;
    m.kv_frontier += 2 * (coff * ratio) * (coff * d) * kF32;
    m.kv_compressed += (ctx / ratio) * d * kF32;
}

// Floats CpuForward keeps per token of a chunk (forward.h scratch list).
uint64_t floats_per_chunk_token(const model::Hparams& hp) {
    const uint64_t dim = hp.n_embd, H = hp.hc_mult, hd = hp.head_dim, idx = hp.idx_head_dim;
    return hp.hc_dim() + hp.hc_mix() + 2 * H + H * H  // HC state, mix, pre/post/comb
           + 3 * dim                                   // sublayer in, norm, out
           + hp.q_lora_rank + 2 * uint64_t{hp.n_head} * hd + hd  // qr, q, o, kv
           + 4 * hd + 4 * idx                          // compressor projections
           + uint64_t{hp.idx_n_heads} * idx + hp.idx_n_heads  // indexer q, weights
           + uint64_t{hp.o_groups} * hp.o_lora_rank    // grouped output
           + hp.n_expert + 2 * uint64_t{hp.n_expert_used}  // routing
           + 4 * dim + 2 * uint64_t{hp.ff_exp};       // expert in/out, moe, gate/up
}

}  // namespace

uint32_t cuda_prefill_chunk(uint64_t free_vram) {
    const char* v = std::getenv("DS4_CUDA_PREFILL_CHUNK");
    if (v == nullptr || *v == '\0') return free_vram >= kCudaLongPrefillFree ? kCudaLongPrefillChunk : kCudaPrefillChunk;
    char* end = nullptr;
    const unsigned long n = std::strtoul(v, &end, 10);
    if (*end != '\0' || n < 256 || n > 16384)
        fail("DS4_CUDA_PREFILL_CHUNK=", v, ": expected a token count from 256 to 16384");
    return static_cast<uint32_t>(n);
}

bool cuda_prefill_chunk_forced() {
    const char* v = std::getenv("DS4_CUDA_PREFILL_CHUNK");
    return v != nullptr && *v != '\0';
}

uint32_t fit_cuda_pass(uint32_t first, bool forced, uint64_t free_vram,
                       const std::function<bool(uint32_t)>& try_reserve,
                       const std::function<uint64_t(uint32_t)>& scratch_bytes) {
    uint32_t n = first;
    while (!try_reserve(n)) {
        if (forced || n / 2 < kCudaMinPass)
            fail("engine: CUDA passes of ", n, " tokens need ", mib(scratch_bytes(n)), " of VRAM scratch and ",
                 mib(free_vram), " is free after the weights",
                 forced ? " (DS4_CUDA_PREFILL_CHUNK: unset it or ask for fewer tokens)"
                        : " (a smaller model or a larger GPU is needed)");
        n /= 2;
    }
    return n;
}

MemoryEstimate estimate_memory(const model::Hparams& hp, uint64_t ctx) {
    MemoryEstimate m;
    m.ctx = ctx;
    m.prefill_chunk = kPrefillChunk;
    m.raw_kv_rows = hp.window;
    m.kv_raw = uint64_t{hp.n_layer} * hp.window * hp.head_dim * kF32;
    uint64_t attended = 0;  // compressed rows one query can attend (CpuForward::reserve)
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const uint32_t r = hp.ratio(il);
        if (r == 0) continue;
        m.compressed_kv_rows += ctx / r;
        add_compressor(m, r, hp.head_dim, ctx);
        if (r == 4) add_compressor(m, r, hp.idx_head_dim, ctx);
        attended = std::max<uint64_t>(attended, r == 4 ? std::min<uint64_t>(ctx / 4, hp.idx_topk) : ctx / r);
    }
    const uint64_t rows = hp.window + attended;
    const uint64_t per_token = floats_per_chunk_token(hp) * kF32;
    m.scratch_per_chunk_token = per_token;
    m.scratch = per_token                                   // one decode token
                + rows * (sizeof(const float*) + hp.n_head * kF32)  // attended rows, scores
                + (ctx / 4) * (kF32 + sizeof(uint32_t))     // indexer scores and order
                + uint64_t{hp.n_vocab} * kF32;              // one logits row
    return m;
}

}  // namespace runtime
}  // namespace ds4
