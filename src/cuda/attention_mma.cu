// Batched attention on the tensor cores (attention_batch.h, issue 8). The f32 kernels spend
// a 2048-token pass of a ratio-4 layer (640 rows of 512 values a token, 64 heads) ~7.6 ms
// in fmaf chains on the CUDA cores, a fifth of a prefill; here a token's heads multiply
// its rows as bf16 mma with f32 sums: scores Sᵀ = K·Qᵀ (rows × heads), then O = P·V
// (heads × values). Every f32 operand is split into bf16 hi + lo (x − hi is exact in f32)
// and each product is hi·hi + lo·hi + hi·lo, so products keep ~16 bits and sums stay f32:
// within ~1e-5 of the exact kernels, not bitwise (another order of sums). Passes of fewer
// than batch_attend_mma() tokens (kF16MmaMinTokens; decode batches kAttendMmaDecodeMinTokens)
// keep the exact kernels, so a token's bits depend on its pass only through those thresholds.
#include <cuda_bf16.h>

#include <algorithm>

#include "cuda/attention_batch.h"
#include "cuda/attention_rows.cuh"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/device_math.cuh"
#include "cuda/env_switch.h"
#include "cuda/matmul_f16_mma.h"
#include "cuda/mma_s8.cuh"
#include "cuda/pdl.cuh"

namespace ds4::cuda {
namespace {

constexpr uint32_t kThreads = 256, kWarps = kThreads / 32;
constexpr uint64_t kMaxBytes = 200 * 1024;  // dynamic shared memory (sm_90 allows 227 KiB)

uint32_t g_min_tokens = env_switch_on("DS4_CUDA_ATTN_MMA") ? kF16MmaMinTokens : kAttendMmaOff;

// Score rows a block keeps: the row cap rounded up to whole 16-row mma steps.
__host__ __device__ inline uint64_t cap16(uint64_t cap) {
    return (cap + 15) & ~uint64_t{15};
}
// Floats per score row: HB heads + 2, so the P fragments' column reads are conflict-free.
__host__ __device__ constexpr uint32_t score_pitch(uint32_t hb) {
    return hb + 2;
}
// Shared memory: Q fragments (later the output) [HB][hd] words, row pointers, scores.
uint64_t mma_bytes(uint32_t hb, uint32_t hd, uint64_t cap) {
    return uint64_t{hb} * hd * 4 + cap16(cap) * sizeof(const float*) +
           cap16(cap) * score_pitch(hb) * 4;
}

// bf16 hi and lo words of two f32 values (the first in the low half: the lower k).
__device__ __forceinline__ void split2(float x0, float x1, uint32_t& hi, uint32_t& lo) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
    const float2 hf = __bfloat1622float2(h);
    const __nv_bfloat162 l = __floats2bfloat162_rn(x0 - hf.x, x1 - hf.y);
    hi = *reinterpret_cast<const uint32_t*>(&h);
    lo = *reinterpret_cast<const uint32_t*>(&l);
}

// c += a·b on hi/lo pairs: hi·hi + lo·hi + hi·lo (lo·lo is below f32's rounding of the sum).
__device__ __forceinline__ void mma3(const uint32_t (&ah)[4], const uint32_t (&al)[4], uint32_t bh0,
                                     uint32_t bh1, uint32_t bl0, uint32_t bl1, float (&c)[4]) {
    mma::mma_bf16_acc(ah[0], ah[1], ah[2], ah[3], bh0, bh1, c);
    mma::mma_bf16_acc(al[0], al[1], al[2], al[3], bh0, bh1, c);
    mma::mma_bf16_acc(ah[0], ah[1], ah[2], ah[3], bl0, bl1, c);
}

// N consecutive floats from p (16-byte aligned for N ≥ 4, 8-byte for N = 2).
template <uint32_t N>
__device__ __forceinline__ void load_run(const float* p, float (&v)[N]) {
    if constexpr (N >= 4) {
#pragma unroll
        for (uint32_t i = 0; i < N; i += 4) {
            const float4 x = __ldg(reinterpret_cast<const float4*>(p + i));
            v[i] = x.x, v[i + 1] = x.y, v[i + 2] = x.z, v[i + 3] = x.w;
        }
    } else if constexpr (N == 2) {
        const float2 x = __ldg(reinterpret_cast<const float2*>(p));
        v[0] = x.x, v[1] = x.y;
    } else {
        v[0] = __ldg(p);
    }
}

// One block per (HB heads, token), 8 warps. A 16-wide k step hands lane (g, c) the k
// values 2c, 2c+1, 2c+8, 2c+9 of its fragments; they are mapped to the step's elements
// 4c .. 4c+3, so one 16-byte load gives a lane all four (the sum is the same over any
// order of k, as long as A and B agree). Likewise each lane's B column g of the output
// n-tile nt is value warp·hd/8 + g·NT + nt: a lane's NT values of a row are consecutive.
//  1. Q of the block's heads, split, in B-fragment order; the token's row pointers.
//  2. Scores: warp w takes row tiles w, w+8, …: Sᵀ (16 rows × HB heads) over hd/16 steps.
//  3. Softmax per head over the rows (f32, expf), the sink in the denominator.
//  4. O = P·V: warp w the values [w·hd/8, (w+1)·hd/8) of every head, over 16-row steps.
//  5. O / denominator, inverse RoPE at the token's position, out.
template <uint32_t HB, uint32_t NT>
__global__ void __launch_bounds__(kThreads) batch_attend_mma_kernel(BatchPass p, BatchAttend a) {
    dev::pdl_wait_and_release();
    constexpr uint32_t hd = NT * 64, KS = hd / 16, NTS = HB / 8, MT = (HB + 15) / 16,
                       P = score_pitch(HB);
    constexpr uint32_t kParts = kThreads / HB;
    extern __shared__ float4 smem4[];
    __shared__ float red[kParts][HB];
    __shared__ float mx[HB], den[HB];
    const uint32_t h0 = blockIdx.x * HB, t = blockIdx.y, tid = threadIdx.x;
    const uint32_t warp = tid / 32, lane = tid % 32, g = lane / 4, c = lane % 4;
    const attn::TokRows rows(p, a, t);
    const uint32_t n = rows.count(), n16 = (n + 15) & ~15u;
    auto* qf = reinterpret_cast<uint4*>(smem4);  // [KS][NTS][32]: b0 hi, b1 hi, b0 lo, b1 lo
    const auto** rp = reinterpret_cast<const float**>(qf + KS * NTS * 32);
    float* sc = reinterpret_cast<float*>(rp + cap16(a.cap_rows));  // [rows][P]
    const uint64_t qoff = (uint64_t{t} * a.n_head + h0) * hd;
    for (uint32_t e = tid; e < KS * NTS * 32; e += kThreads) {
        const uint32_t l = e % 32, nt = (e / 32) % NTS, ks = e / (32 * NTS);
        const float4 v = __ldg(reinterpret_cast<const float4*>(
            a.q + qoff + uint64_t{nt * 8 + l / 4} * hd + ks * 16 + 4 * (l % 4)));
        uint4 f;
        split2(v.x, v.y, f.x, f.z);
        split2(v.z, v.w, f.y, f.w);
        qf[e] = f;
    }
    for (uint32_t i = tid; i < n16; i += kThreads)
        rp[i] = rows(i < n ? i : 0);  // padding: row 0, weight 0
    __syncthreads();

    const auto scale = static_cast<float>(1.0 / sqrt(static_cast<double>(hd)));
    for (uint32_t rt = warp; rt < n16 / 16; rt += kWarps) {
        const float* r0 = rp[rt * 16 + g] + 4 * c;
        const float* r1 = rp[rt * 16 + g + 8] + 4 * c;
        float acc[NTS][4] = {};
#pragma unroll 4
        for (uint32_t ks = 0; ks < KS; ++ks) {
            const float4 x0 = __ldg(reinterpret_cast<const float4*>(r0 + ks * 16));
            const float4 x1 = __ldg(reinterpret_cast<const float4*>(r1 + ks * 16));
            uint32_t ah[4], al[4];
            split2(x0.x, x0.y, ah[0], al[0]);  // row g, k 2c, 2c+1
            split2(x1.x, x1.y, ah[1], al[1]);  // row g+8
            split2(x0.z, x0.w, ah[2], al[2]);  // row g, k 2c+8, 2c+9
            split2(x1.z, x1.w, ah[3], al[3]);
#pragma unroll
            for (uint32_t nt = 0; nt < NTS; ++nt) {
                const uint4 b = qf[(ks * NTS + nt) * 32 + lane];
                mma3(ah, al, b.x, b.y, b.z, b.w, acc[nt]);
            }
        }
        float* s0 = sc + (rt * 16 + g) * P + 2 * c;
#pragma unroll
        for (uint32_t nt = 0; nt < NTS; ++nt) {
            *reinterpret_cast<float2*>(s0 + nt * 8) =
                make_float2(acc[nt][0] * scale, acc[nt][1] * scale);
            *reinterpret_cast<float2*>(s0 + 8 * P + nt * 8) =
                make_float2(acc[nt][2] * scale, acc[nt][3] * scale);
        }
    }
    __syncthreads();

    {  // softmax: thread (head hh, part) takes the rows ≡ part mod kParts
        const uint32_t hh = tid % HB, part = tid / HB;
        float m = -INFINITY;
        for (uint32_t i = part; i < n; i += kParts) m = fmaxf(m, sc[i * P + hh]);
        red[part][hh] = m;
        __syncthreads();
        if (tid < HB) {
            float v = red[0][tid];
            for (uint32_t q = 1; q < kParts; ++q) v = fmaxf(v, red[q][tid]);
            mx[tid] = v;
        }
        __syncthreads();
        m = mx[hh];
        float sum = 0.0f;
        for (uint32_t i = part; i < n16; i += kParts) {
            const float e = i < n ? expf(sc[i * P + hh] - m) : 0.0f;
            sc[i * P + hh] = e;
            sum += e;
        }
        red[part][hh] = sum;
        __syncthreads();
        if (tid < HB) {
            float v = 0.0f;
            for (uint32_t q = 0; q < kParts; ++q) v += red[q][tid];
            den[tid] = v + expf(a.sinks[h0 + tid] - mx[tid]);
        }
        __syncthreads();
    }

    constexpr uint32_t DW = hd / kWarps;  // values per warp: NT n-tiles of 8
    float acc[MT][NT][4] = {};
    const float* const* rq = rp + 4 * c;
    const uint32_t vbase = warp * DW + g * NT;
    for (uint32_t r0 = 0; r0 < n16; r0 += 16) {
        float v[4][NT];
#pragma unroll
        for (uint32_t j = 0; j < 4; ++j) load_run<NT>(rq[r0 + j] + vbase, v[j]);
        uint32_t bh[NT][2], bl[NT][2];
#pragma unroll
        for (uint32_t nt = 0; nt < NT; ++nt) {
            split2(v[0][nt], v[1][nt], bh[nt][0], bl[nt][0]);  // k 2c, 2c+1: rows 4c, 4c+1
            split2(v[2][nt], v[3][nt], bh[nt][1], bl[nt][1]);  // k 2c+8, 2c+9: rows 4c+2, 4c+3
        }
#pragma unroll
        for (uint32_t mt = 0; mt < MT; ++mt) {
            const float* pr = sc + (r0 + 4 * c) * P + mt * 16 + g;
            uint32_t ah[4] = {0, 0, 0, 0}, al[4] = {0, 0, 0, 0};
            split2(pr[0], pr[P], ah[0], al[0]);  // head g
            split2(pr[2 * P], pr[3 * P], ah[2], al[2]);
            if constexpr (HB >= 16) {  // head g+8 (HB = 8: no such head, zero)
                split2(pr[8], pr[P + 8], ah[1], al[1]);
                split2(pr[2 * P + 8], pr[3 * P + 8], ah[3], al[3]);
            }
#pragma unroll
            for (uint32_t nt = 0; nt < NT; ++nt)
                mma3(ah, al, bh[nt][0], bh[nt][1], bl[nt][0], bl[nt][1], acc[mt][nt]);
        }
    }
    float* ob = reinterpret_cast<float*>(smem4);  // [HB][hd]: qf is dead since the scores
#pragma unroll
    for (uint32_t mt = 0; mt < MT; ++mt)
#pragma unroll
        for (uint32_t nt = 0; nt < NT; ++nt) {
            const uint32_t ha = mt * 16 + g, d0 = warp * DW + 2 * c * NT + nt, d1 = d0 + NT;
            ob[ha * hd + d0] = acc[mt][nt][0] / den[ha];
            ob[ha * hd + d1] = acc[mt][nt][1] / den[ha];
            if (ha + 8 < HB) {
                ob[(ha + 8) * hd + d0] = acc[mt][nt][2] / den[ha + 8];
                ob[(ha + 8) * hd + d1] = acc[mt][nt][3] / den[ha + 8];
            }
        }
    __syncthreads();
    const uint32_t half = a.rope_dim / 2;
    for (uint32_t e = tid; e < HB * half;
         e += kThreads) {  // [TRAP] §13.4: back-rotation at the query position
        const uint32_t h = e / half, k = e % half;
        float cs, sn;
        dev::rope_cs(static_cast<float>(rows.pos), a.omega[k], cs, sn);
        sn = -sn;
        dev::rotate_pair(ob + h * hd + (hd - a.rope_dim) + 2 * k, cs, sn);
    }
    __syncthreads();
    auto* out4 = reinterpret_cast<float4*>(a.out + qoff);
    const auto* ob4 = reinterpret_cast<const float4*>(ob);
    for (uint32_t e = tid; e < HB * hd / 4; e += kThreads) out4[e] = ob4[e];
}

template <uint32_t HB, uint32_t NT>
void launch(const BatchPass& p, const BatchAttend& a, cudaStream_t s) {
    const auto kernel = batch_attend_mma_kernel<HB, NT>;
    DS4_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(kMaxBytes)));
    launch_pdl("launch of batch_attend_mma_kernel", kernel, dim3(a.n_head / HB, p.n),
               dim3(kThreads), mma_bytes(HB, a.hd, a.cap_rows), s, p, a);
}

// The most heads per block (32, 16, 8) that divide n_head and whose scores fit (the
// card's opt-in shared memory less the static arrays, at most kMaxBytes).
uint32_t mma_heads(const BatchAttend& a) {
    const uint64_t limit = std::min<uint64_t>(kMaxBytes, device_smem_optin() - 2048);
    for (uint32_t hb : {32u, 16u, 8u})
        if (a.n_head % hb == 0 && mma_bytes(hb, a.hd, a.cap_rows) <= limit) return hb;
    return 0;
}

template <uint32_t NT>
bool launch_heads(const BatchPass& p, const BatchAttend& a, cudaStream_t s) {
    switch (mma_heads(a)) {
        case 32:
            launch<32, NT>(p, a, s);
            return true;
        case 16:
            launch<16, NT>(p, a, s);
            return true;
        case 8:
            launch<8, NT>(p, a, s);
            return true;
        default:
            return false;
    }
}

}  // namespace

void set_batch_attend_mma(uint32_t min_tokens) {
    g_min_tokens = min_tokens;
}
uint32_t batch_attend_mma() {
    return g_min_tokens;
}

bool batch_attend_mma_launch(const BatchPass& p, const BatchAttend& a, cudaStream_t s) {
    // a decode batch (one token a sequence) from kAttendMmaDecodeMinTokens
    const uint32_t need = g_min_tokens != kAttendMmaOff && p.n_seg == p.n
                              ? std::min(g_min_tokens, kAttendMmaDecodeMinTokens)
                              : g_min_tokens;
    if (p.n == 0 || p.n < need || !mma::device_has_mma()) return false;
    if (a.rope_dim % 2 != 0 || a.rope_dim > a.hd) return false;
    switch (a.hd) {
        case 64:
            return launch_heads<1>(p, a, s);
        case 128:
            return launch_heads<2>(p, a, s);
        case 256:
            return launch_heads<4>(p, a, s);
        case 512:
            return launch_heads<8>(p, a, s);
        default:
            return false;
    }
}

}  // namespace ds4::cuda
