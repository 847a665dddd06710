// The rows a token of a batched pass attends (attention_batch.h), shared by the batched
// attention kernels (attention_batch.cu, attention_mma.cu).
#pragma once

#include <cstdint>

#include "cuda/attention_batch.h"

namespace ds4::cuda::attn {

// Rows a compressor of count n0 at the segment's start holds after the token at p
// (emits at positions q ≡ r−1 mod r of [pos0, p]); a full cache stops growing (the host
// refuses one before the pass).
__device__ inline uint32_t rows_after(uint32_t n0, uint64_t pos0, uint64_t p, uint32_t r,
                                      uint32_t capacity) {
    const uint64_t n = n0 + (p + 1) / r - pos0 / r;
    return n0 >= capacity ? n0 : static_cast<uint32_t>(n < capacity ? n : capacity);
}

// The indexer's rows that token t sees.
__device__ inline uint32_t index_rows(const BatchPass& p, uint32_t ratio, const TokSeg& ts, uint32_t t) {
    const CompPtrs& c = p.seg[ts.seg].index;
    return rows_after(*c.n_rows, p.pos[ts.first], p.pos[t], ratio, c.capacity);
}

// The rows token t attends, in order, as batch_attend_kernel finds them: the raw
// window (ring slots before the pass, the pass's rows after), then the compressed rows
// (the indexer's choice where it has one). The tile and mma kernels call it once per row.
struct TokRows {
    const float* raw = nullptr;
    const float* fresh = nullptr;  // the pass's row of position q0 + n_old
    const float* comp = nullptr;
    const uint32_t* sel = nullptr;
    uint32_t n_old = 0, n_raw = 0, n_comp = 0, first_slot = 0, window = 0, hd = 0;
    uint64_t pos = 0;

    __device__ TokRows(const BatchPass& p, const BatchAttend& a, uint32_t t)
        : window(a.window), hd(a.hd) {
        const TokSeg ts = p.tok[t];
        const SegKv& kv = p.seg[ts.seg];
        pos = p.pos[t];
        const uint64_t pos0 = p.pos[ts.first];
        raw = kv.raw;
        if (a.comp) {
            comp = kv.attn.rows;
            const CompPtrs& cnt = a.index ? kv.index : kv.attn;
            n_comp = rows_after(*cnt.n_rows, pos0, pos, a.comp_ratio, cnt.capacity);
            if (a.index && n_comp > a.topk) {  // the indexer chose topk rows
                sel = a.sel + uint64_t{t} * a.topk;
                n_comp = a.topk;
            }
        }
        n_raw = static_cast<uint32_t>(pos + 1 < window ? pos + 1 : window);
        const uint64_t q0 = pos + 1 - n_raw;
        n_old = static_cast<uint32_t>(q0 < pos0 ? pos0 - q0 : 0);
        first_slot = static_cast<uint32_t>(q0 % window);
        fresh = a.kvb + (ts.first + (q0 + n_old - pos0)) * hd;
    }
    __device__ uint32_t count() const { return n_raw + n_comp; }
    __device__ const float* operator()(uint32_t i) const {
        if (i < n_old) {
            uint32_t slot = first_slot + i;
            if (slot >= window) slot -= window;
            return raw + uint64_t{slot} * hd;
        }
        if (i < n_raw) return fresh + uint64_t{i - n_old} * hd;
        const uint32_t c = i - n_raw;
        return comp + uint64_t{sel != nullptr ? __ldg(sel + c) : c} * hd;
    }
};

}  // namespace ds4::cuda::attn
