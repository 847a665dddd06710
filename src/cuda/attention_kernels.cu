// The stateful per-token part of attention on the GPU (launchers in forward_kernels.h):
// one compressor step (cpu::CpuForward::compressor_step), the indexer's top-k selection
// (indexer_select) and one token's attention over its raw window and compressed rows
// (attend_token). Each is a plain, correct first version: one block per compressor step
// or per head, no tiling. Positions and compressed-row counts are read from device
// memory, so the launches do not change from step to step (CUDA graph capture).
#include "cuda/check.h"
#include "cuda/device_math.cuh"
#include "cuda/forward_kernels.h"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

constexpr uint32_t kMaxD = 1024;  // widest compressed row / head the kernels take

// One block of 1024 threads (width ≤ 1024 values per slot).
__global__ void __launch_bounds__(kMaxD) compressor_kernel(CompressorStep c) {
    __shared__ float row[kMaxD];
    __shared__ double hbuf[kMaxD];
    __shared__ double dshared[32];
    __shared__ float block_scale[kMaxD / 32];
    const uint32_t r = c.ratio, d = c.d, width = c.coff * d;
    const bool overlap = c.coff == 2;
    const uint64_t pos = *c.pos;
    const auto in_window = static_cast<uint32_t>(pos % r);
    const uint32_t slot = overlap ? r + in_window : in_window;
    const float* ape = c.ape + uint64_t{in_window} * width;
    for (uint32_t j = threadIdx.x; j < width; j += blockDim.x) {
        c.state_kv[uint64_t{slot} * width + j] = c.kv[j];
        c.state_score[uint64_t{slot} * width + j] = c.score[j] + ape[j];
    }
    if ((pos + 1) % r != 0) return;  // uniform over the block
    const uint32_t n_row = *c.n_rows;
    if (n_row >= c.capacity) return;  // the host refuses a full cache before the step
    float* out_row = c.rows + uint64_t{n_row} * d;
    __syncthreads();

    // softmax over the candidate slots per column, then the weighted sum (slot order)
    const uint32_t n_cand = overlap ? 2 * r : r;
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) {
        auto at = [&](const float* base, uint32_t s) {
            return base[uint64_t{s} * width + (overlap && s >= r ? d + j : j)];
        };
        float m = -INFINITY;
        for (uint32_t s = 0; s < n_cand; ++s) m = fmaxf(m, at(c.state_score, s));
        float fsum = 0;
        for (uint32_t s = 0; s < n_cand; ++s) fsum += expf(at(c.state_score, s) - m);
        float acc = 0;
        for (uint32_t s = 0; s < n_cand; ++s) {
            const float prob = expf(at(c.state_score, s) - m) / fsum;
            acc = __fadd_rn(acc, __fmul_rn(at(c.state_kv, s), prob));
        }
        row[j] = acc;
    }
    __syncthreads();
    if (overlap) {  // the current window becomes the previous one
        const uint64_t n = uint64_t{r} * width;
        for (uint64_t i = threadIdx.x; i < n; i += blockDim.x) {
            c.state_kv[i] = c.state_kv[n + i];
            c.state_score[i] = c.state_score[n + i];
        }
    }
    const float inv = dev::block_rms_inv(row, d, c.eps, dshared);
    for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) row[j] = c.norm[j] * (row[j] * inv);
    __syncthreads();
    // [TRAP] §13.3: rotated at the FIRST position of its window
    const uint32_t rd = c.rope_dim;
    if (threadIdx.x < rd / 2) {
        float cs, sn;
        dev::rope_cs(static_cast<float>(pos + 1 - r), c.omega[threadIdx.x], cs, sn);
        float* p = row + (d - rd) + 2 * threadIdx.x;
        const float re = p[0], im = p[1];
        p[0] = __fsub_rn(__fmul_rn(re, cs), __fmul_rn(im, sn));
        p[1] = __fadd_rn(__fmul_rn(re, sn), __fmul_rn(im, cs));
    }
    __syncthreads();
    if (c.indexer) {
        for (uint32_t j = threadIdx.x; j < d; j += blockDim.x) hbuf[j] = row[j];
        __syncthreads();
        for (uint32_t len = 1; len < d; len <<= 1) {
            for (uint32_t k = threadIdx.x; k < d / 2; k += blockDim.x) {
                const uint32_t j = (k / len) * 2 * len + k % len;
                const double a = hbuf[j], b = hbuf[j + len];
                hbuf[j] = a + b;
                hbuf[j + len] = a - b;
            }
            __syncthreads();
        }
        const auto scale = static_cast<float>(1.0 / sqrt(static_cast<double>(d)));
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
    __syncthreads();  // every thread has read *n_rows (above) before it moves
    if (threadIdx.x == 0) *c.n_rows = n_row + 1;
}

// One warp per row: Σ_h w_h·relu(q_h·k).
// Nothing when n ≤ k (the indexer is off: the attention takes every row).
__global__ void indexer_scores_kernel(const float* q, const float* w, const float* rows, const uint32_t* n_rows,
                                      uint32_t k_top, uint32_t d, uint32_t n_heads, float* scores) {
    const uint32_t c = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    const uint32_t n = *n_rows;
    if (n <= k_top || c >= n) return;
    const float* k = rows + uint64_t{c} * d;
    float s = 0.0f;
    for (uint32_t h = 0; h < n_heads; ++h) {
        const float* qh = q + uint64_t{h} * d;
        float dot = 0.0f;
        for (uint32_t j = lane; j < d; j += 32) dot = fmaf(qh[j], k[j], dot);
        dot = dev::warp_sum(dot);
        s = __fadd_rn(s, __fmul_rn(fmaxf(dot, 0.0f), w[h]));
    }
    if (lane == 0) scores[c] = s;
}

// rank of row c in (score descending, row ascending); the first k go to sel[rank].
__global__ void topk_rank_kernel(const float* scores, const uint32_t* n_rows, uint32_t k, uint32_t* sel) {
    const uint32_t c = blockIdx.x * blockDim.x + threadIdx.x, n = *n_rows;
    if (n <= k || c >= n) return;
    const float v = scores[c];
    uint32_t rank = 0;
    for (uint32_t o = 0; o < n && rank < k; ++o) rank += (scores[o] > v || (scores[o] == v && o < c)) ? 1 : 0;
    if (rank < k) sel[rank] = c;
}

// first_slot: the ring slot of the oldest raw row, (pos + 1 − n_raw) % window, computed
// once per thread (a 64-bit modulo per row and value made the first version slow).
__device__ const float* attended_row(const AttendToken& a, const uint32_t* sel, uint32_t n_raw, uint32_t first_slot,
                                    uint32_t i) {
    if (i < n_raw) {
        uint32_t slot = first_slot + i;
        if (slot >= a.window) slot -= a.window;
        return a.raw + uint64_t{slot} * a.hd;
    }
    const uint32_t c = i - n_raw;
    return a.comp + uint64_t{sel != nullptr ? sel[c] : c} * a.hd;
}

// One block per head.
__global__ void attend_kernel(AttendToken a) {
    __shared__ float qs[kMaxD];
    __shared__ float fshared[32];
    const uint32_t h = blockIdx.x, hd = a.hd;
    const uint64_t pos = *a.pos;
    uint32_t n_comp = a.n_comp != nullptr ? *a.n_comp : 0;
    const uint32_t* sel = nullptr;
    if (a.comp_sel != nullptr && n_comp > a.topk) {  // the indexer chose topk rows
        sel = a.comp_sel;
        n_comp = a.topk;
    }
    const uint32_t n_raw = static_cast<uint32_t>(pos + 1 < a.window ? pos + 1 : a.window);
    const uint32_t n_rows = n_raw + n_comp;
    const auto first_slot = static_cast<uint32_t>((pos + 1 - n_raw) % a.window);
    const float* qh = a.q + uint64_t{h} * hd;
    for (uint32_t j = threadIdx.x; j < hd; j += blockDim.x) qs[j] = qh[j];
    __syncthreads();
    const auto scale = static_cast<float>(1.0 / sqrt(static_cast<double>(hd)));
    float* s = a.scores + uint64_t{h} * a.cap_rows;
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
    for (uint32_t i = warp; i < n_rows; i += n_warps) {
        const float* row = attended_row(a, sel, n_raw, first_slot, i);
        float dot = 0.0f;
        for (uint32_t j = lane; j < hd; j += 32) dot = fmaf(qs[j], row[j], dot);
        dot = dev::warp_sum(dot);
        if (lane == 0) s[i] = dot * scale;
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
    den += expf(a.sinks[h] - m);
    for (uint32_t j = threadIdx.x; j < hd; j += blockDim.x) {
        float acc = 0.0f;
        for (uint32_t i = 0; i < n_rows; ++i) acc = fmaf(s[i], attended_row(a, sel, n_raw, first_slot, i)[j], acc);
        qs[j] = acc / den;
    }
    __syncthreads();
    const uint32_t rd = a.rope_dim;
    if (threadIdx.x < rd / 2) {  // [TRAP] §13.4: back-rotation at the query position
        float cs, sn;
        dev::rope_cs(static_cast<float>(pos), a.omega[threadIdx.x], cs, sn);
        sn = -sn;
        float* p = qs + (hd - rd) + 2 * threadIdx.x;
        const float re = p[0], im = p[1];
        p[0] = __fsub_rn(__fmul_rn(re, cs), __fmul_rn(im, sn));
        p[1] = __fadd_rn(__fmul_rn(re, sn), __fmul_rn(im, cs));
    }
    __syncthreads();
    float* out = a.out + uint64_t{h} * hd;
    for (uint32_t j = threadIdx.x; j < hd; j += blockDim.x) out[j] = qs[j];
}

}  // namespace

void compressor_step(const CompressorStep& c, cudaStream_t s) {
    if (c.coff * c.d > kMaxD || c.d == 0 || c.ratio == 0)
        fail("cuda compressor: row width ", c.coff * c.d, " (ratio ", c.ratio, ") outside (0, ", kMaxD, "]");
    compressor_kernel<<<1, kMaxD, 0, s>>>(c);
    DS4_CUDA_CHECK_LAUNCH("compressor_kernel");
}

void indexer_topk(const float* q, const float* w, const float* rows, const uint32_t* n_rows, uint32_t max_rows,
                  uint32_t d, uint32_t n_heads, uint32_t k, float* scores, uint32_t* sel, cudaStream_t s) {
    if (max_rows <= k) return;
    constexpr unsigned kThreads = 256;
    const uint64_t warps = uint64_t{max_rows} * 32;
    indexer_scores_kernel<<<static_cast<unsigned>((warps + kThreads - 1) / kThreads), kThreads, 0, s>>>(
        q, w, rows, n_rows, k, d, n_heads, scores);
    DS4_CUDA_CHECK_LAUNCH("indexer_scores_kernel");
    topk_rank_kernel<<<(max_rows + kThreads - 1) / kThreads, kThreads, 0, s>>>(scores, n_rows, k, sel);
    DS4_CUDA_CHECK_LAUNCH("topk_rank_kernel");
}

// A kernel, not a memcpy: the ring slot moves with the device position, which a memcpy
// node of a captured graph cannot follow.
__global__ void store_raw_kernel(float* raw, const float* row, uint32_t hd, uint32_t window, const uint64_t* pos) {
    float* dst = raw + (*pos % window) * hd;
    for (uint32_t j = threadIdx.x; j < hd; j += blockDim.x) dst[j] = row[j];
}

void store_raw_row(float* raw, const float* row, uint32_t hd, uint32_t window, const uint64_t* pos,
                   cudaStream_t s) {
    if (window == 0) fail("cuda attention: raw window of 0 rows");
    store_raw_kernel<<<1, 256, 0, s>>>(raw, row, hd, window, pos);
    DS4_CUDA_CHECK_LAUNCH("store_raw_kernel");
}

void attend_token(const AttendToken& a, cudaStream_t s) {
    if (a.hd > kMaxD) fail("cuda attention: head_dim ", a.hd, " > ", kMaxD);
    attend_kernel<<<a.n_head, 256, 0, s>>>(a);
    DS4_CUDA_CHECK_LAUNCH("attend_kernel");
}

}  // namespace ds4::cuda
