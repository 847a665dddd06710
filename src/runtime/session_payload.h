// DS4 session payload v1 (formats.md §5): a sequence's token history, last logits and
// every KV cache row and compressor frontier, as plain little-endian u32/f32. The same
// bytes are embedded in disk KV cache files, so the layout follows ds4 exactly; a
// restored state continues with bit-identical logits.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cpu/kv_state.h"
#include "model/hparams.h"

namespace ds4::runtime {

// The 13 header words as ds4's CPU backend writes them for a context size.
struct PayloadLayout {
    uint32_t ctx = 0;
    uint32_t prefill_cap = 0;  // ctx up to 2048, else 2048 (the graph chunk of ds4)
    uint32_t raw_cap = 0;      // raw ring rows: min(window, ctx)
    uint32_t raw_window = 0;   // min(window, ctx)
    uint32_t comp_cap = 0;     // ctx/4 + 2
    uint32_t n_layer = 0;
    uint32_t head_dim = 0;
    uint32_t idx_head_dim = 0;
    uint32_t vocab = 0;
};
PayloadLayout payload_layout(const model::Hparams& hp, uint32_t ctx);

// Exact payload size for this state (formats.md §5.2 "Total size").
uint64_t payload_bytes(const model::Hparams& hp, const cpu::KvState& kv);

// Serialises state + history (tokens.size() == kv.n_tokens()) + last logits into out
// (cleared first; capacity is reused, so repeated saves do not reallocate).
void save_payload(const model::Hparams& hp, const cpu::KvState& kv, std::span<const int32_t> tokens,
                  std::span<const float> logits, std::vector<uint8_t>& out);

struct RestoredHistory {
    std::vector<int32_t> tokens;
    std::vector<float> logits;
};

// Validates every header field and count (§5.3, same error strings plus details) BEFORE
// touching kv, then restores kv and returns the history. On error kv is unchanged.
RestoredHistory load_payload(const model::Hparams& hp, std::span<const uint8_t> bytes,
                             cpu::KvState& kv);

}  // namespace ds4::runtime
