// Device code shared by the per-token attention kernels (attention_kernels.cu) and the
// batched ones (attention_batch.cu): the compressor's pooling and emitted-row finish,
// and one head's attention over a list of rows. Both paths call these same functions,
// with only the way a slot or row is found differing, so their arithmetic (and so their
// results) are bitwise the same.
#pragma once

#include <cstdint>

#include "cuda/device_math.cuh"

namespace ds4::cuda::attn {

constexpr uint32_t kMaxD = 1024;  // widest compressed row / head the kernels take

// Softmax over the n_cand candidate slots per column j < d, then the weighted sum in slot
// order, into row[j]. kv(s, j) / score(s, j): slot s's value at column j (the caller
// applies the overlap's column shift).
template <class Kv, class Score>
__device__ void pool_columns(float* row, uint32_t d, uint32_t n_cand, Kv kv, Score score) {
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) {
        float m = -INFINITY;
        for (uint32_t s = 0; s < n_cand; ++s) m = fmaxf(m, score(s, j));
        float fsum = 0;
        for (uint32_t s = 0; s < n_cand; ++s) fsum += expf(score(s, j) - m);
        float acc = 0;
        for (uint32_t s = 0; s < n_cand; ++s) {
            const float prob = expf(score(s, j) - m) / fsum;
            acc = __fadd_rn(acc, __fmul_rn(kv(s, j), prob));
        }
        row[j] = acc;
    }
}

struct FinishParams {
    const float* norm = nullptr;
    const float* omega = nullptr;
    uint32_t d = 0, ratio = 0, rope_dim = 0;
    float eps = 1e-6f;
    bool indexer = false;
};

// The pooled row (shared, d values, complete: the caller synchronised) of the window
// that ends at `pos`: RMS norm · weight, RoPE at the window's first position, then
// (indexer) Hadamard + FP4 or FP8, written to out_row. Every thread of the block calls it.
__device__ inline void compressor_finish(float* row, const FinishParams& c, uint64_t pos, float* out_row) {
    __shared__ double hbuf[kMaxD];
    __shared__ double dshared[32];
    __shared__ float block_scale[kMaxD / 32];
    const uint32_t d = c.d, r = c.ratio;
    const float inv = dev::block_rms_inv(row, d, c.eps, dshared);
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) row[j] = c.norm[j] * (row[j] * inv);
    __syncthreads();
    // [TRAP] §13.3: rotated at the FIRST position of its window
    const uint32_t rd = c.rope_dim;
    if (threadIdx.x < rd / 2) {
        float cs, sn;
        dev::rope_cs(static_cast<float>(pos + 1 - r), c.omega[threadIdx.x], cs, sn);
        float* p = row + (d - rd) + 2 * threadIdx.x;
        dev::rotate_pair(p, cs, sn);
    }
    __syncthreads();
    if (c.indexer) {
        for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) hbuf[j] = row[j];
        __syncthreads();
        dev::block_hadamard(hbuf, d);
        const float scale = dev::hadamard_scale(d);
        for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) row[j] = static_cast<float>(hbuf[j]) * scale;
        __syncthreads();
    }
    const uint32_t bs = c.indexer ? 32 : 64, qlen = c.indexer ? d : d - rd;
    for (uint32_t b = threadIdx.x; b < qlen / bs; b += blockDim.x) {
        float amax = 0.0f;
        for (uint32_t i = b * bs; i < (b + 1) * bs; ++i) amax = fmaxf(amax, fabsf(row[i]));
        block_scale[b] = c.indexer ? dev::pow2_ceil(fmaxf(amax, 6.0f * 0x1p-126f) * static_cast<float>(1.0 / 6.0))
                                   : dev::pow2_ceil(fmaxf(amax, static_cast<float>(1e-4)) *
                                                    static_cast<float>(1.0 / 448.0));
    }
    __syncthreads();
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) {
        float v = row[j];
        if (j < qlen) {
            const float s = block_scale[j / bs];
            v = c.indexer ? dev::e2m1_round(fminf(fmaxf(v / s, -6.0f), 6.0f)) * s
                          : dev::e4m3_round(fminf(fmaxf(v / s, -448.0f), 448.0f)) * s;
        }
        out_row[j] = v;
    }
}

struct HeadParams {
    uint32_t hd = 0, rope_dim = 0;
    float sink = 0.0f;
    const float* omega = nullptr;
};

// Scores q·row(i)/sqrt(hd) for i < n_rows into s (q staged in qs), then s[i] ← exp(s[i] − m)
// with m their max; returns the softmax denominator (the sink included). Every thread of
// the block calls it; qs: kMaxD shared floats; fshared: 32.
template <class Row>
__device__ float head_softmax(const float* qh, float* s, uint32_t n_rows, Row row, const HeadParams& a, float* qs,
                              float* fshared) {
    const uint32_t hd = a.hd;
    for (uint32_t j = threadIdx.x; j < hd; j += blockDim.x) qs[j] = qh[j];
    __syncthreads();
    const auto scale = static_cast<float>(1.0 / sqrt(static_cast<double>(hd)));
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
    // kRows rows per warp at a time: their loads go out together (one row per warp left
    // the scores a chain of n_rows / n_warps memory round trips, most of a decode step's
    // attention at long context); each row's dot is the same chain as one at a time
    constexpr uint32_t kRows = 4;
    for (uint32_t i0 = warp * kRows; i0 < n_rows; i0 += n_warps * kRows) {
        const float* r[kRows];
        float dot[kRows];
#pragma unroll
        for (uint32_t u = 0; u < kRows; ++u) r[u] = row(min(i0 + u, n_rows - 1)), dot[u] = 0.0f;
#pragma unroll 4
        for (uint32_t j = lane; j < hd; j += 32) {
            const float qj = qs[j];
#pragma unroll
            for (uint32_t u = 0; u < kRows; ++u) dot[u] = fmaf(qj, r[u][j], dot[u]);
        }
#pragma unroll
        for (uint32_t u = 0; u < kRows; ++u) {
            const float d = dev::warp_sum(dot[u]);
            if (lane == 0 && i0 + u < n_rows) s[i0 + u] = d * scale;
        }
    }
    __syncthreads();
    float m = -INFINITY;
    for (uint32_t i = threadIdx.x; i < n_rows; i += blockDim.x) m = fmaxf(m, s[i]);
    m = dev::block_max(m, fshared);
    float den = 0.0f;
    for (uint32_t i = threadIdx.x; i < n_rows; i += blockDim.x) {
        const float e = expf(s[i] - m);
        s[i] = e;
        den += e;
    }
    den = dev::block_sum(den, fshared);  // also orders the writes of s before the reads below
    den += expf(a.sink - m);
    return den;
}

// One head of one token (one block): head_softmax, the weighted row sum, inverse RoPE at
// `pos` on the last rope_dim values, written to out. qs: kMaxD shared floats; fshared: 32.
template <class Row>
__device__ void attend_head(const float* qh, float* s, uint32_t n_rows, Row row, const HeadParams& a, uint64_t pos,
                            float* out, float* qs, float* fshared) {
    const uint32_t hd = a.hd;
    const float den = head_softmax(qh, s, n_rows, row, a, qs, fshared);
    for (uint32_t j = threadIdx.x; j < hd; j += blockDim.x) {
        float acc = 0.0f;
        for (uint32_t i = 0; i < n_rows; ++i) acc = fmaf(s[i], row(i)[j], acc);
        qs[j] = acc / den;
    }
    __syncthreads();
    const uint32_t rd = a.rope_dim;
    if (threadIdx.x < rd / 2) {  // [TRAP] §13.4: back-rotation at the query position
        float cs, sn;
        dev::rope_cs(static_cast<float>(pos), a.omega[threadIdx.x], cs, sn);
        sn = -sn;
        float* p = qs + (hd - rd) + 2 * threadIdx.x;
        dev::rotate_pair(p, cs, sn);
    }
    __syncthreads();
    for (uint32_t j = threadIdx.x; j < hd; j += blockDim.x) out[j] = qs[j];
}

// Σ_h w_h·relu(q_h·k) for one compressed row k, one warp (lane 0's value is the result).
__device__ inline float indexer_score(const float* q, const float* w, const float* k, uint32_t d,
                                      uint32_t n_heads) {
    const uint32_t lane = threadIdx.x % 32;
    float s = 0.0f;
    for (uint32_t h = 0; h < n_heads; ++h) {
        const float* qh = q + uint64_t{h} * d;
        float dot = 0.0f;
        for (uint32_t j = lane; j < d; j += 32) dot = fmaf(qh[j], k[j], dot);
        dot = dev::warp_sum(dot);
        s = __fadd_rn(s, __fmul_rn(fmaxf(dot, 0.0f), w[h]));
    }
    return s;
}

// Rank of scores[c] in (score descending, row ascending) among n, stopping at k.
__device__ inline uint32_t topk_rank(const float* scores, uint32_t n, uint32_t k, uint32_t c) {
    const float v = scores[c];
    uint32_t rank = 0;
    for (uint32_t o = 0; o < n && rank < k; ++o) rank += (scores[o] > v || (scores[o] == v && o < c)) ? 1 : 0;
    return rank;
}

}  // namespace ds4::cuda::attn
