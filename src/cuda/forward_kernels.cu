// Hyper-connections, RoPE over token chunks, FP8 rows, routing and the MoE gather /
// scatter of the CUDA forward pass (launchers in forward_kernels.h). Products use the
// round-to-nearest intrinsics where the CPU code has separate multiply and add, so the
// compiler cannot contract them into FMAs the CPU does not do.
#include "cuda/check.h"
#include "cuda/act_rows.cuh"
#include "cuda/device_math.cuh"
#include "cuda/env_switch.h"
#include "cuda/forward_kernels.h"
#include "cuda/pdl.cuh"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr uint32_t kMaxH = 16;

unsigned blocks_for(uint64_t n, int threads = kThreads) {
    return static_cast<unsigned>((n + threads - 1) / threads);
}

// cpu::sinkhorn, one thread.
__device__ void sinkhorn(float* c, uint32_t h, uint32_t iters, float eps) {
    auto normalise_columns = [&] {
        for (uint32_t b = 0; b < h; ++b) {
            float s = 0.0f;
            for (uint32_t a = 0; a < h; ++a) s += c[a * h + b];
            const float d = s + eps;
            for (uint32_t a = 0; a < h; ++a) c[a * h + b] /= d;
        }
    };
    for (uint32_t a = 0; a < h; ++a) {
        float m = c[a * h];
        for (uint32_t b = 1; b < h; ++b) m = fmaxf(m, c[a * h + b]);
        for (uint32_t b = 0; b < h; ++b) c[a * h + b] = expf(c[a * h + b] - m);
        float s = 0.0f;
        for (uint32_t b = 0; b < h; ++b) s += c[a * h + b];
        for (uint32_t b = 0; b < h; ++b) c[a * h + b] = c[a * h + b] / s + eps;
    }
    normalise_columns();
    for (uint32_t it = 1; it < iters; ++it) {
        for (uint32_t a = 0; a < h; ++a) {
            float s = 0.0f;
            for (uint32_t b = 0; b < h; ++b) s += c[a * h + b];
            const float d = s + eps;
            for (uint32_t b = 0; b < h; ++b) c[a * h + b] /= d;
        }
        normalise_columns();
    }
}

// cpu::sinkhorn on one warp, lane a·h + b holding c[a][b] (h·h ≤ 32; every lane calls it):
// each element sees the same sums in the same order as the one-thread version, so the
// result is bitwise the same, with ~h times shorter dependency chains.
__device__ float sinkhorn_warp(float v, uint32_t h, uint32_t iters, float eps) {
    const uint32_t lane = threadIdx.x % 32, a = lane / h, b = lane % h;
    const auto at = [&](float x, uint32_t r, uint32_t c) { return __shfl_sync(0xffffffffu, x, (r * h + c) % 32); };
    const auto row_sum = [&](float x) {
        float s = 0.0f;
        for (uint32_t k = 0; k < h; ++k) s += at(x, a, k);
        return s;
    };
    const auto col_sum = [&](float x) {
        float s = 0.0f;
        for (uint32_t k = 0; k < h; ++k) s += at(x, k, b);
        return s;
    };
    float m = at(v, a, 0);
    for (uint32_t k = 1; k < h; ++k) m = fmaxf(m, at(v, a, k));
    v = expf(v - m);
    v = v / row_sum(v) + eps;
    v /= col_sum(v) + eps;
    for (uint32_t it = 1; it < iters; ++it) {
        v /= row_sum(v) + eps;
        v /= col_sum(v) + eps;
    }
    return v;
}

// One block of kHcThreads per token, any shape: the reference hc_pre_regs_kernel is tested
// against, and the kernel of the shapes that one has no instance for. At batch 1 its loops
// over the H·dim stream values are load-latency bound (17.5 us at 4 × 4096 on an H200).
constexpr int kHcThreads = 1024;

__global__ void __launch_bounds__(kHcThreads)
    hc_pre_kernel(HcShape sh, const float* x, const float* mix, const float* scale, const float* base,
                  float* pre, float* post, float* comb, float* u, const float* norm_w, float* nrm, float eps) {
    dev::pdl_wait_and_release();
    __shared__ double dshared[32];
    __shared__ float spre[kMaxH];
    const uint32_t H = sh.H, mixw = (2 + H) * H;
    const uint64_t hc = uint64_t{H} * sh.dim, t = blockIdx.x;
    const float* xt = x + t * hc;
    const float r = dev::block_rms_inv(xt, hc, sh.norm_eps, dshared);
    const float* m = mix + t * mixw;
    float* cb = comb + t * H * H;
    if (threadIdx.x == 0) {
        float* pr = pre + t * H;
        float* po = post + t * H;
        for (uint32_t h = 0; h < H; ++h) {
            const float mp = __fmul_rn(m[h], r), mq = __fmul_rn(m[H + h], r);
            pr[h] = dev::sigmoid(__fadd_rn(__fmul_rn(mp, scale[0]), base[h])) + sh.hc_eps;
            po[h] = 2.0f * dev::sigmoid(__fadd_rn(__fmul_rn(mq, scale[1]), base[H + h]));
            spre[h] = pr[h];
        }
    }
    const auto comb_in = [&](uint32_t k) {
        return __fadd_rn(__fmul_rn(__fmul_rn(m[2 * H + k], r), scale[2]), base[2 * H + k]);
    };
    if (H * H <= 32) {
        if (threadIdx.x < 32) {  // the whole warp: sinkhorn_warp shuffles
            const uint32_t k = threadIdx.x;
            const float v = sinkhorn_warp(k < H * H ? comb_in(k) : 1.0f, H, sh.iters, sh.hc_eps);
            if (k < H * H) cb[k] = v;
        }
    } else if (threadIdx.x == 0) {
        for (uint32_t k = 0; k < H * H; ++k) cb[k] = comb_in(k);
        sinkhorn(cb, H, sh.iters, sh.hc_eps);
    }
    __syncthreads();
    float* ut = u + t * sh.dim;
    for (uint32_t d = threadIdx.x; d < sh.dim; d += blockDim.x) {
        float s = __fmul_rn(spre[0], xt[d]);
        for (uint32_t h = 1; h < H; ++h) s = __fadd_rn(s, __fmul_rn(spre[h], xt[uint64_t{h} * sh.dim + d]));
        ut[d] = s;
    }
    if (nrm == nullptr) return;
    // hc_pre_norm: rms_norm_kernel's row over u with rms_norm's per-thread sums (its block
    // of T threads: 1024 from 2048 values on, else 256; the other threads add 0.0, which is
    // what rms_norm's last warp adds for its missing warps), so the same bits
    __syncthreads();
    const uint32_t T = sh.dim >= 2048 ? 1024 : 256;
    double sum = 0;
    if (threadIdx.x < T)
        for (uint32_t i = threadIdx.x; i < sh.dim; i += T) {
            const float sq = ut[i] * ut[i];
            sum += sq;
        }
    sum = dev::block_sum(sum, dshared);
    const auto mean = static_cast<float>(sum / static_cast<double>(sh.dim));
    const float rn = 1.0f / sqrtf(mean + eps);
    float* o = nrm + t * sh.dim;
    for (uint32_t i = threadIdx.x; i < sh.dim; i += blockDim.x) {
        const float v = ut[i] * rn;
        o[i] = norm_w != nullptr ? norm_w[i] * v : v;
    }
}

// hc_pre_kernel's arithmetic for H streams of PS·kHcThreads values (the model: 4 × 4096),
// the bits unchanged, without its serial latency (17.5 -> 6.0 us per launch at batch-1
// decode on an H200). Thread i loads x[i + kHcThreads·k] for every k at once: these are the values
// block_rms_inv's thread i sums, in its order; as dim is a multiple of kHcThreads they are
// also all x[h][d] that u[d] needs for the PS d ≡ i (mod kHcThreads), and those u[d] are
// rms_norm's thread i's values (1024 threads from 2048 values on). One pass over x, no
// reloads. grid (n, roles): with 2 roles a second block per token recomputes r (the same
// bits) and runs the Sinkhorn chain, overlapping pre/post/u/nrm of block 0; with 1 role
// one block does both (many tokens already fill the GPU).
template <uint32_t H, uint32_t PS>
__global__ void __launch_bounds__(kHcThreads)
    hc_pre_regs_kernel(HcShape sh, const float* x, const float* mix, const float* scale, const float* base,
                       float* pre, float* post, float* comb, float* u, const float* norm_w, float* nrm, float eps) {
    static_assert(H * H <= 32 && PS * kHcThreads >= 2048, "sinkhorn_warp; rms_norm's 1024 threads");
    constexpr uint32_t K = H * PS, dim = PS * kHcThreads, mixw = (2 + H) * H;
    dev::pdl_wait_and_release();
    __shared__ double dshared[32];
    __shared__ float spre[H];
    const uint32_t tid = threadIdx.x;
    const uint64_t t = blockIdx.x;
    const bool sinkhorn_role = gridDim.y == 1 || blockIdx.y == 1, u_role = gridDim.y == 1 || blockIdx.y == 0;
    const float* xt = x + t * K * kHcThreads;
    const float* m = mix + t * mixw;
    float v[K];
#pragma unroll
    for (uint32_t k = 0; k < K; ++k) v[k] = xt[tid + k * kHcThreads];
    // this thread's mix, base, scale and norm weights, loaded before the reduction waits
    float mp = 0, mq = 0, bp = 0, bq = 0, mc = 0, bc = 0, w[PS];
    if (u_role && tid < H) {
        mp = m[tid];
        mq = m[H + tid];
        bp = base[tid];
        bq = base[H + tid];
    }
    if (sinkhorn_role && tid < H * H) {
        mc = m[2 * H + tid];
        bc = base[2 * H + tid];
    }
    const float s0 = scale[0], s1 = scale[1], s2 = scale[2];
#pragma unroll
    for (uint32_t j = 0; j < PS; ++j) w[j] = u_role && norm_w != nullptr ? norm_w[tid + j * kHcThreads] : 1.0f;
    double sum = 0;  // block_rms_inv
#pragma unroll
    for (uint32_t k = 0; k < K; ++k) {
        const float sq = v[k] * v[k];
        sum += sq;
    }
    sum = dev::block_sum(sum, dshared);
    const float r = 1.0f / sqrtf(static_cast<float>(sum / static_cast<double>(K * kHcThreads)) + sh.norm_eps);
    if (sinkhorn_role && tid < 32) {
        const float c = __fadd_rn(__fmul_rn(__fmul_rn(mc, r), s2), bc);
        const float cv = sinkhorn_warp(tid < H * H ? c : 1.0f, H, sh.iters, sh.hc_eps);
        if (tid < H * H) comb[t * H * H + tid] = cv;
    }
    if (!u_role) return;
    if (tid < H) {
        const float pr = dev::sigmoid(__fadd_rn(__fmul_rn(__fmul_rn(mp, r), s0), bp)) + sh.hc_eps;
        pre[t * H + tid] = pr;
        post[t * H + tid] = 2.0f * dev::sigmoid(__fadd_rn(__fmul_rn(__fmul_rn(mq, r), s1), bq));
        spre[tid] = pr;
    }
    __syncthreads();
    float* ut = u + t * dim;
    float uv[PS];
    double usum = 0;  // rms_norm's thread tid
#pragma unroll
    for (uint32_t j = 0; j < PS; ++j) {
        float s = __fmul_rn(spre[0], v[j]);
#pragma unroll
        for (uint32_t h = 1; h < H; ++h) s = __fadd_rn(s, __fmul_rn(spre[h], v[h * PS + j]));
        uv[j] = s;
        ut[tid + j * kHcThreads] = s;
        const float sq = s * s;
        usum += sq;
    }
    if (nrm == nullptr) return;
    usum = dev::block_sum(usum, dshared);
    const float rn = 1.0f / sqrtf(static_cast<float>(usum / static_cast<double>(dim)) + eps);
    float* o = nrm + t * dim;
#pragma unroll
    for (uint32_t j = 0; j < PS; ++j) {
        const float nv = uv[j] * rn;
        o[tid + j * kHcThreads] = norm_w != nullptr ? w[j] * nv : nv;
    }
}

// grid (ceil(dim / 256), n): one thread per (token, d), all streams. fb non-null: the
// sublayer output is fa + fb (the MoE's routed + shared sum, added here).
// fa: moe_sum_kernel's sum when ms.ex is set (the same loop, the same bits).
__global__ void hc_post_kernel(HcShape sh, float* x, const float* fa, const float* fb, const float* post,
                               const float* comb, MoeSumRows ms) {
    dev::pdl_wait_and_release();
    const uint32_t d = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y, H = sh.H;
    if (d >= sh.dim) return;
    float* xt = x + uint64_t{t} * H * sh.dim;
    const float* po = post + uint64_t{t} * H;
    const float* cb = comb + uint64_t{t} * H * H;
    float xin[kMaxH];
    for (uint32_t a = 0; a < H; ++a) xin[a] = xt[uint64_t{a} * sh.dim + d];
    const uint64_t fi = uint64_t{t} * sh.dim + d;
    float av = 0.0f;
    if (ms.ex != nullptr) {
        const uint32_t* r = ms.rows + uint64_t{t} * ms.K;
        for (uint32_t j = 0; j < ms.tok_count[t]; ++j) av += ms.ex[uint64_t{r[j]} * sh.dim + d];
    } else {
        av = fa[fi];
    }
    const float fv = fb != nullptr ? __fadd_rn(av, fb[fi]) : av;
    for (uint32_t b = 0; b < H; ++b) {
        float s = __fmul_rn(cb[b], xin[0]);
        for (uint32_t a = 1; a < H; ++a) s = __fadd_rn(s, __fmul_rn(cb[a * H + b], xin[a]));
        xt[uint64_t{b} * sh.dim + d] = __fadd_rn(__fmul_rn(po[b], fv), s);
    }
}

__global__ void __launch_bounds__(kHcThreads)
    hc_collapse_kernel(HcShape sh, const float* x, const uint32_t* row_index, const float* mix,
                       const float* scale, const float* base, float* out) {
    dev::pdl_wait_and_release();
    __shared__ double dshared[32];
    __shared__ float wts[kMaxH];
    const uint32_t H = sh.H;
    const uint64_t hc = uint64_t{H} * sh.dim;
    const float* xt = x + uint64_t{row_index[blockIdx.x]} * hc;
    const float r = dev::block_rms_inv(xt, hc, sh.norm_eps, dshared);
    if (threadIdx.x < H) {
        const float m = mix[uint64_t{blockIdx.x} * H + threadIdx.x];
        wts[threadIdx.x] =
            dev::sigmoid(__fadd_rn(__fmul_rn(__fmul_rn(m, r), scale[0]), base[threadIdx.x])) + sh.hc_eps;
    }
    __syncthreads();
    float* o = out + uint64_t{blockIdx.x} * sh.dim;
    for (uint32_t d = threadIdx.x; d < sh.dim; d += blockDim.x) {
        float s = __fmul_rn(wts[0], xt[d]);
        for (uint32_t h = 1; h < H; ++h) s = __fadd_rn(s, __fmul_rn(wts[h], xt[uint64_t{h} * sh.dim + d]));
        o[d] = s;
    }
}

__global__ void rope_tokens_kernel(float* x, uint32_t n_tok, uint64_t tok_stride, uint32_t n_vec,
                                   uint64_t vec_stride, uint64_t offset, const float* omega, uint32_t half,
                                   const uint64_t* positions, bool inverse) {
    dev::pdl_wait_and_release();
    const uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (i >= uint64_t{n_tok} * n_vec * half) return;
    const uint32_t j = static_cast<uint32_t>(i % half);
    const uint64_t v = i / half % n_vec, t = i / half / n_vec;
    float c, sn;
    dev::rope_cs(static_cast<float>(positions[t]), omega[j], c, sn);
    if (inverse) sn = -sn;
    float* p = x + t * tok_stride + v * vec_stride + offset + 2 * j;
    dev::rotate_pair(p, c, sn);
}

// grid (len / 64, n_rows), 64 threads: one FP8 block.
__global__ void fp8_rows_kernel(float* x, uint64_t stride) {
    dev::pdl_wait_and_release();
    __shared__ float sm[2];
    float* p = x + uint64_t{blockIdx.y} * stride + uint64_t{blockIdx.x} * 64;
    const float v = p[threadIdx.x];
    const float wm = dev::warp_max(fabsf(v));
    if (threadIdx.x % 32 == 0) sm[threadIdx.x / 32] = wm;
    __syncthreads();
    const float amax = fmaxf(fmaxf(sm[0], sm[1]), static_cast<float>(1e-4));
    const float s = dev::pow2_ceil(amax * static_cast<float>(1.0 / 448.0));
    p[threadIdx.x] = dev::e4m3_round(fminf(fmaxf(v / s, -448.0f), 448.0f)) * s;
}

__global__ void scale_kernel(float* x, uint64_t n, float k) {
    dev::pdl_wait_and_release();
    const uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= k;
}

__global__ void add_kernel(const float* a, const float* b, float* y, uint64_t n) {
    dev::pdl_wait_and_release();
    const uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a[i] + b[i];
}

constexpr uint32_t kNoExpert = 0xffffffffu;
// (value, id) ordered by value descending, then id ascending; kNoExpert loses to any
__device__ __forceinline__ bool route_better(float v, uint32_t i, float bv, uint32_t bi) {
    return i != kNoExpert && (bi == kNoExpert || v > bv || (v == bv && i < bi));
}
__device__ __forceinline__ void route_warp_best(float& bv, uint32_t& bi) {
    for (uint32_t o = 16; o > 0; o /= 2) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const uint32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (route_better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
}

// The top K of biased[0..E) into chosen[0..K), in order (value descending, ids ascending
// on ties: what ranking each expert against all the others gives): K rounds of a block
// argmax. Thread x owns the experts x + j·blockDim.x (bit j of `taken` once chosen);
// a NaN never wins (all left NaN: the lowest id not chosen). (The ranking cost each
// thread E dependent-free compares, ~2.6 µs at E = 256 in one block; a round is two
// shuffle trees.) E ≤ 32·blockDim.x.
__device__ void route_top_k(const float* biased, uint32_t E, uint32_t K, uint32_t* chosen) {
    __shared__ float wv[32];
    __shared__ uint32_t wi[32];
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    uint32_t taken = 0;
    for (uint32_t k = 0; k < K; ++k) {
        float bv = 0.0f;
        uint32_t bi = kNoExpert;
        for (uint32_t j = 0, e = threadIdx.x; e < E; ++j, e += blockDim.x) {
            const float v = biased[e];
            if ((taken >> j & 1u) == 0 && !isnan(v) && route_better(v, e, bv, bi)) bv = v, bi = e;
        }
        route_warp_best(bv, bi);
        if (lane == 0) wv[warp] = bv, wi[warp] = bi;
        __syncthreads();
        if (warp == 0) {
            bv = lane < n_warps ? wv[lane] : 0.0f;
            bi = lane < n_warps ? wi[lane] : kNoExpert;
            route_warp_best(bv, bi);
            if (lane == 0) {
                for (uint32_t e = 0; bi == kNoExpert && e < E; ++e) {  // every candidate NaN
                    bool used = false;
                    for (uint32_t c = 0; c < k; ++c) used = used || chosen[c] == e;
                    if (!used) bi = e;
                }
                chosen[k] = bi;
            }
        }
        __syncthreads();
        const uint32_t w = chosen[k];
        if (w % blockDim.x == threadIdx.x) taken |= 1u << (w / blockDim.x);
    }
}

// Token t's routing by the whole block (biased: E floats of shared memory; K ≤ blockDim.x).
__device__ void route_token(uint32_t t, float* probs, const float* bias, const int32_t* tid2eid,
                            const int32_t* tokens, uint32_t E, uint32_t K, float route_scale, bool hash,
                            uint32_t* sel, float* sel_w, float* biased) {
    __shared__ uint32_t chosen[kThreads];  // K ≤ blockDim.x = kThreads (the launchers check)
    __shared__ float chosen_p[kThreads];
    float* p = probs + uint64_t{t} * E;
    for (uint32_t e = threadIdx.x; e < E; e += blockDim.x) {
        const float v = p[e];
        const float sp = v > 20.0f ? v : log1pf(expf(v));
        p[e] = sqrtf(sp);
        if (!hash) biased[e] = p[e] + bias[e];
    }
    __syncthreads();
    if (hash) {
        if (threadIdx.x < K) chosen[threadIdx.x] = static_cast<uint32_t>(tid2eid[uint64_t(tokens[t]) * K + threadIdx.x]);
        __syncthreads();
    } else {
        route_top_k(biased, E, K, chosen);  // ends with a barrier
    }
    // the K probabilities read side by side (thread 0 walking them was K dependent loads)
    if (threadIdx.x < K) {
        sel[uint64_t{t} * K + threadIdx.x] = chosen[threadIdx.x];
        chosen_p[threadIdx.x] = p[chosen[threadIdx.x]];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float sum = 0.0f;
        for (uint32_t k = 0; k < K; ++k) sum += chosen_p[k];
        for (uint32_t k = 0; k < K; ++k) sel_w[uint64_t{t} * K + k] = chosen_p[k] / sum * route_scale;
    }
}

// One block per token.
__global__ void route_kernel(float* probs, const float* bias, const int32_t* tid2eid, const int32_t* tokens,
                             uint32_t E, uint32_t K, float route_scale, bool hash, uint32_t* sel, float* sel_w) {
    dev::pdl_wait_and_release();
    extern __shared__ float biased[];
    route_token(blockIdx.x, probs, bias, tid2eid, tokens, E, K, route_scale, hash, sel, sel_w, biased);
}

__global__ void gather_kernel(const float* x, const uint32_t* src, float* out, uint32_t dim, const uint32_t* m_dev) {
    dev::pdl_wait_and_release();
    const uint32_t d = blockIdx.x * blockDim.x + threadIdx.x;
    if (m_dev != nullptr && blockIdx.y >= *m_dev) return;
    if (d < dim) out[uint64_t{blockIdx.y} * dim + d] = x[uint64_t{src[blockIdx.y]} * dim + d];
}

__global__ void weighted_swiglu_kernel(float* g, const float* u, const float* w, const uint32_t* widx,
                                       uint32_t ff, float limit, const uint32_t* m_dev) {
    dev::pdl_wait_and_release();
    const uint32_t j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= ff || (m_dev != nullptr && blockIdx.y >= *m_dev)) return;
    const uint64_t i = uint64_t{blockIdx.y} * ff + j;
    g[i] = dev::weighted_swiglu_value(g[i], u[i], w[widx[blockIdx.y]], limit);
}

__global__ void scatter_sum_kernel(const float* rows, const uint32_t* pair_begin, const uint32_t* pair_rows,
                                   float* moe, uint32_t dim) {
    const uint32_t d = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (d >= dim) return;
    float s = 0.0f;
    for (uint32_t i = pair_begin[t]; i < pair_begin[t + 1]; ++i) s += rows[uint64_t{pair_rows[i]} * dim + d];
    moe[uint64_t{t} * dim + d] = s;
}

// One block: routed_experts' former host grouping, on the device. Pairs (t, k) grouped by
// expert in ascending id, tokens ascending within an expert; an expert listed twice for
// one token counts once (its first k). Warp w takes the w-th of kGroupWarps token
// ranges: it counts its pairs per expert, the counts are scanned over (expert, range) in
// that order, and each warp then places its pairs in order, the ranks of equal experts
// within a 32-pair step by __match_any_sync (one thread per expert walking all n·K
// pairs took ~0.8 ms per layer in a 2048-token pass). Shared memory: cnt[kGroupWarps][E]
// (the counts, then each range's first position per expert), count[E], offset[E].
constexpr uint32_t kGroupWarps = 32;
__device__ bool first_of_token(const uint32_t* sel, uint64_t i, uint32_t K, uint32_t E) {
    const uint32_t e = sel[i], k = static_cast<uint32_t>(i % K);
    bool first = e < E;
    for (uint32_t j = 0; j < k && first; ++j) first = sel[i - k + j] != e;
    return first;
}

__global__ void __launch_bounds__(kGroupWarps * 32)
    moe_group_kernel(const uint32_t* sel, uint32_t n, uint32_t K, uint32_t E, MoeGroups g) {
    dev::pdl_wait_and_release();
    extern __shared__ uint32_t sh[];
    uint32_t* cnt = sh;  // [kGroupWarps][E]
    uint32_t* count = sh + kGroupWarps * E;
    uint32_t* offset = count + E;
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint32_t per_warp = (n + kGroupWarps - 1) / kGroupWarps;
    const uint64_t i0 = uint64_t{min(n, warp * per_warp)} * K, i1 = uint64_t{min(n, (warp + 1) * per_warp)} * K;
    uint32_t* my = cnt + warp * E;
    for (uint32_t e = threadIdx.x; e < kGroupWarps * E; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    for (uint64_t i = i0 + lane; i < i1; i += 32)
        if (first_of_token(sel, i, K, E)) atomicAdd(&my[sel[i]], 1u);
    __syncthreads();
    for (uint32_t e = threadIdx.x; e < E; e += blockDim.x) {
        uint32_t c = 0;
        for (uint32_t w = 0; w < kGroupWarps; ++w) c += cnt[w * E + e];
        count[e] = c;
    }
    __syncthreads();
    // exclusive scans of count[e] and (count[e] != 0) in expert order: thread i takes the
    // experts [i·per, (i + 1)·per), then a block scan of the per-thread totals (one
    // serial thread over E cost ~5 us per layer)
    const uint32_t per = (E + blockDim.x - 1) / blockDim.x, e0 = min(E, threadIdx.x * per);
    const uint32_t e1 = min(E, e0 + per);
    uint32_t tc = 0, ta = 0;
    for (uint32_t e = e0; e < e1; ++e) {
        tc += count[e];
        ta += count[e] != 0 ? 1u : 0u;
    }
    uint32_t ic = tc, ia = ta;  // inclusive within the warp
    for (uint32_t off = 1; off < 32; off *= 2) {
        const uint32_t c = __shfl_up_sync(0xffffffffu, ic, off), a = __shfl_up_sync(0xffffffffu, ia, off);
        if (lane >= off) {
            ic += c;
            ia += a;
        }
    }
    __shared__ uint32_t warp_c[32], warp_a[32];
    if (lane == 31) {
        warp_c[warp] = ic;
        warp_a[warp] = ia;
    }
    __syncthreads();
    uint32_t at = ic - tc, slot = ia - ta;
    for (uint32_t w = 0; w < warp; ++w) {
        at += warp_c[w];
        slot += warp_a[w];
    }
    for (uint32_t e = e0; e < e1; ++e) {
        offset[e] = at;
        if (count[e] != 0) {
            g.expert[slot] = e;
            g.begin[slot] = at;
            g.count[slot] = count[e];
            ++slot;
        }
        at += count[e];
    }
    if (threadIdx.x == blockDim.x - 1) {
        g.n_pairs[0] = at;
        g.n_active[0] = slot;
    }
    __syncthreads();
    for (uint32_t e = threadIdx.x; e < E; e += blockDim.x) {  // each range's first position
        uint32_t at = offset[e];
        for (uint32_t w = 0; w < kGroupWarps; ++w) {
            const uint32_t c = cnt[w * E + e];
            cnt[w * E + e] = at;
            at += c;
        }
    }
    __syncthreads();
    for (uint64_t i = i0; i < i1; i += 32) {  // the warp's pairs in order, 32 at a time
        const uint64_t at = i + lane;
        const bool valid = at < i1 && first_of_token(sel, at, K, E);
        const uint32_t e = valid ? sel[at] : 0x80000000u | lane;  // invalid lanes match no one
        const uint32_t same = __match_any_sync(0xffffffffu, e);
        if (valid) {
            const uint32_t pos = my[e] + __popc(same & ((1u << lane) - 1));
            const auto t = static_cast<uint32_t>(at / K);
            g.src[pos] = t;
            g.widx[pos] = static_cast<uint32_t>(at);
            g.pos_of[at] = pos;
        }
        __syncwarp();
        if (valid && lane == static_cast<uint32_t>(__ffs(same) - 1)) my[e] += __popc(same);
        __syncwarp();
    }
    __syncthreads();  // pos_of, written above by other threads of this block
    for (uint32_t t = threadIdx.x; t < n; t += blockDim.x) {
        // this token's pair rows, ascending (= ascending expert id): insertion sort, K small
        uint32_t* rows = g.rows + uint64_t{t} * K;
        uint32_t c = 0;
        for (uint32_t k = 0; k < K; ++k) {
            const uint32_t e = sel[uint64_t{t} * K + k];
            bool first = e < E;
            for (uint32_t j = 0; j < k && first; ++j) first = sel[uint64_t{t} * K + j] != e;
            if (!first) continue;
            const uint32_t p = g.pos_of[uint64_t{t} * K + k];
            uint32_t at = c++;
            while (at > 0 && rows[at - 1] > p) {
                rows[at] = rows[at - 1];
                --at;
            }
            rows[at] = p;
        }
        g.tok_count[t] = c;
    }
}

// moe_group_kernel's output for passes of at most 32 pairs (decode: n·K = 6), by one
// warp: lane i holds pair i, and every position is a count over the other lanes (the
// 1024-thread kernel took 7.5 µs at one token, H200). Same arrays, same values.
constexpr uint32_t kSmallGroupPairs = 32;
// The one-warp grouping takes this pass ($DS4_CUDA_SMALL_GROUP=0: never).
bool small_group(uint32_t n, uint32_t K) {
    static const bool on = env_switch_on("DS4_CUDA_SMALL_GROUP");
    return on && uint64_t{n} * K <= kSmallGroupPairs;
}
__device__ void group_small(const uint32_t* sel, uint32_t n, uint32_t K, uint32_t E, const MoeGroups& g) {
    const uint32_t i = threadIdx.x, nk = n * K, t = i / K;
    const bool valid = i < nk && first_of_token(sel, i, K, E);
    const uint32_t e = valid ? sel[i] : 0xffffffffu;
    const uint32_t valid_mask = __ballot_sync(0xffffffffu, valid);
    bool leader = valid;  // the first pair of its expert
    for (uint32_t j = 0; j < 32; ++j) {
        const uint32_t ej = __shfl_sync(0xffffffffu, e, j);
        leader = leader && !((valid_mask >> j & 1u) != 0 && ej == e && j < i);
    }
    const uint32_t leader_mask = __ballot_sync(0xffffffffu, leader);
    uint32_t pos = 0, same = 0, slot = 0, in_tok = 0, of_token_i = 0;
    for (uint32_t j = 0; j < 32; ++j) {
        const uint32_t ej = __shfl_sync(0xffffffffu, e, j);
        if ((valid_mask >> j & 1u) == 0) continue;
        pos += ej < e || (ej == e && j < i) ? 1u : 0u;
        same += ej == e ? 1u : 0u;
        slot += (leader_mask >> j & 1u) != 0 && ej < e ? 1u : 0u;
        in_tok += j / K == t && ej < e ? 1u : 0u;  // a token lists an expert once
        of_token_i += j / K == i ? 1u : 0u;        // lane i < n: token i's pair count
    }
    if (valid) {
        g.src[pos] = t;
        g.widx[pos] = i;
        g.pos_of[i] = pos;
        g.rows[uint64_t{t} * K + in_tok] = pos;  // ascending expert = ascending position
    }
    if (leader) {
        g.expert[slot] = e;
        g.begin[slot] = pos;
        g.count[slot] = same;
    }
    if (i < n) g.tok_count[i] = of_token_i;
    if (i == 0) {
        g.n_pairs[0] = static_cast<uint32_t>(__popc(valid_mask));
        g.n_active[0] = static_cast<uint32_t>(__popc(leader_mask));
    }
}

__global__ void __launch_bounds__(32)
    moe_group_small_kernel(const uint32_t* sel, uint32_t n, uint32_t K, uint32_t E, MoeGroups g) {
    dev::pdl_wait_and_release();
    group_small(sel, n, K, E, g);
}

// route then group_small for passes of at most kSmallGroupPairs pairs, one block: the
// same selections and arrays in one launch instead of two.
__global__ void route_group_small_kernel(float* probs, const float* bias, const int32_t* tid2eid,
                                         const int32_t* tokens, uint32_t n, uint32_t E, uint32_t K, float route_scale,
                                         bool hash, uint32_t* sel, float* sel_w, MoeGroups g) {
    dev::pdl_wait_and_release();
    extern __shared__ float biased[];
    for (uint32_t t = 0; t < n; ++t) {
        route_token(t, probs, bias, tid2eid, tokens, E, K, route_scale, hash, sel, sel_w, biased);
        __syncthreads();  // biased is reused by the next token
    }
    if (threadIdx.x < 32) group_small(sel, n, K, E, g);
}

// moe[t] = Σ_{j < tok_count[t]} ex[rows[t·K + j]], in that order (scatter_sum's order).
__global__ void moe_sum_kernel(const float* ex, const uint32_t* rows, const uint32_t* tok_count, uint32_t K,
                               float* moe, uint32_t dim) {
    dev::pdl_wait_and_release();
    const uint32_t d = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (d >= dim) return;
    const uint32_t* r = rows + uint64_t{t} * K;
    float s = 0.0f;
    for (uint32_t j = 0; j < tok_count[t]; ++j) s += ex[uint64_t{r[j]} * dim + d];
    moe[uint64_t{t} * dim + d] = s;
}

void check_h(const HcShape& sh) {
    if (sh.H == 0 || sh.H > kMaxH) fail("cuda hc: ", sh.H, " streams, at most ", kMaxH);
}

// Up to this many tokens hc_pre_regs_kernel runs 2 blocks per token (Sinkhorn in the
// second); beyond, one block per token, as 2n blocks of 1024 threads would outgrow the GPU.
constexpr uint32_t kHcSplitMaxTokens = 64;

// hc_pre_regs_kernel for the shapes it is instantiated for (4 streams of 2048, 3072 or 4096
// values); false for the others, which take hc_pre_kernel.
bool launch_hc_pre_regs(const HcShape& sh, const float* x, const float* mix, const float* scale, const float* base,
                        float* pre, float* post, float* comb, float* u, const float* norm_w, float* nrm, float eps,
                        uint32_t n, cudaStream_t s) {
    if (sh.H != 4 || sh.dim % kHcThreads != 0) return false;
    const dim3 grid(n, n <= kHcSplitMaxTokens ? 2 : 1);
    const auto go = [&](auto kernel) {
        launch_pdl("launch of hc_pre_regs_kernel", kernel, grid, dim3(kHcThreads), 0, s, sh, x, mix, scale, base, pre,
                   post, comb, u, norm_w, nrm, eps);
        return true;
    };
    switch (sh.dim / kHcThreads) {
        case 2: return go(hc_pre_regs_kernel<4, 2>);
        case 3: return go(hc_pre_regs_kernel<4, 3>);
        case 4: return go(hc_pre_regs_kernel<4, 4>);
        default: return false;
    }
}

}  // namespace

void hc_pre(const HcShape& sh, const float* x, const float* mix, const float* scale, const float* base,
            float* pre, float* post, float* comb, float* u, uint32_t n, cudaStream_t s, HcPrePath path) {
    check_h(sh);
    if (n == 0) return;
    if (path == HcPrePath::automatic && launch_hc_pre_regs(sh, x, mix, scale, base, pre, post, comb, u, nullptr,
                                                           nullptr, 0.0f, n, s))
        return;
    launch_pdl("launch of hc_pre_kernel", hc_pre_kernel, dim3(n), dim3(kHcThreads), 0, s, sh, x, mix, scale, base,
               pre, post, comb, u, nullptr, nullptr, 0.0f);
}

void hc_pre_norm(const HcShape& sh, const float* x, const float* mix, const float* scale, const float* base,
                 float* pre, float* post, float* comb, float* u, const float* norm_w, float* nrm, float eps, uint32_t n,
                 cudaStream_t s, HcPrePath path) {
    check_h(sh);
    static_assert(kHcThreads == 1024, "hc_pre_norm emulates rms_norm's blocks of up to 1024 threads");
    if (n == 0) return;
    if (path == HcPrePath::automatic &&
        launch_hc_pre_regs(sh, x, mix, scale, base, pre, post, comb, u, norm_w, nrm, eps, n, s))
        return;
    launch_pdl("launch of hc_pre_kernel", hc_pre_kernel, dim3(n), dim3(kHcThreads), 0, s, sh, x, mix, scale, base,
               pre, post, comb, u, norm_w, nrm, eps);
}

void hc_post(const HcShape& sh, float* x, const float* f, const float* post, const float* comb, uint32_t n,
             cudaStream_t s) {
    check_h(sh);
    if (n == 0) return;
    launch_pdl("launch of hc_post_kernel", hc_post_kernel, dim3(blocks_for(sh.dim), n), dim3(kThreads), 0, s, sh, x,
               f, nullptr, post, comb, MoeSumRows{});
}

void hc_post_add(const HcShape& sh, float* x, const float* fa, const float* fb, const float* post, const float* comb,
                 uint32_t n, cudaStream_t s) {
    check_h(sh);
    if (n == 0) return;
    launch_pdl("launch of hc_post_kernel", hc_post_kernel, dim3(blocks_for(sh.dim), n), dim3(kThreads), 0, s, sh, x,
               fa, fb, post, comb, MoeSumRows{});
}

void hc_post_moe_add(const HcShape& sh, float* x, const MoeSumRows& fa, const float* fb, const float* post,
                     const float* comb, uint32_t n, cudaStream_t s) {
    check_h(sh);
    if (n == 0) return;
    if (fa.ex == nullptr) fail("cuda hc_post_moe_add: no expert rows");
    launch_pdl("launch of hc_post_kernel", hc_post_kernel, dim3(blocks_for(sh.dim), n), dim3(kThreads), 0, s, sh, x,
               nullptr, fb, post, comb, fa);
}

void hc_collapse(const HcShape& sh, const float* x, const uint32_t* row_index, const float* mix,
                 const float* scale, const float* base, float* out, uint32_t n, cudaStream_t s) {
    check_h(sh);
    if (n == 0) return;
    launch_pdl("launch of hc_collapse_kernel", hc_collapse_kernel, dim3(n), dim3(kHcThreads), 0, s,
               sh, x, row_index, mix, scale, base, out);
}

void rope_tokens(float* x, uint32_t n_tok, uint64_t tok_stride, uint32_t n_vec, uint64_t vec_stride,
                 uint64_t offset, const float* omega, uint32_t half, const uint64_t* positions, bool inverse,
                 cudaStream_t s) {
    const uint64_t n = uint64_t{n_tok} * n_vec * half;
    if (n == 0) return;
    launch_pdl("launch of rope_tokens_kernel", rope_tokens_kernel, dim3(blocks_for(n)),
               dim3(kThreads), 0, s, x, n_tok, tok_stride, n_vec, vec_stride, offset, omega, half,
               positions, inverse);
}

void fp8_rows(float* x, uint32_t n_rows, uint64_t stride, uint32_t len, cudaStream_t s) {
    if (len % 64 != 0) fail("cuda fp8_rows: ", len, " values is not a multiple of 64");
    if (n_rows == 0 || len == 0) return;
    launch_pdl("launch of fp8_rows_kernel", fp8_rows_kernel, dim3(len / 64, n_rows), dim3(64), 0, s, x, stride);
}

void scale_values(float* x, uint64_t n, float k, cudaStream_t s) {
    if (n == 0) return;
    launch_pdl("launch of scale_kernel", scale_kernel, dim3(blocks_for(n)), dim3(kThreads), 0, s, x, n, k);
}

void add_values(const float* a, const float* b, float* y, uint64_t n, cudaStream_t s) {
    if (n == 0) return;
    launch_pdl("launch of add_kernel", add_kernel, dim3(blocks_for(n)), dim3(kThreads), 0, s, a, b, y, n);
}

void route(float* probs, const float* bias, const int32_t* tid2eid, const int32_t* tokens, uint32_t n,
           uint32_t E, uint32_t K, float route_scale, bool hash, uint32_t* sel, float* sel_w, cudaStream_t s) {
    if (n == 0) return;
    if (K > kThreads) fail("cuda route: ", K, " experts per token, at most ", kThreads);
    if (E > 32 * uint64_t{kThreads}) fail("cuda route: ", E, " experts, at most ", 32 * kThreads);
    launch_pdl("launch of route_kernel", route_kernel, dim3(n), dim3(kThreads), E * sizeof(float),
               s, probs, bias, tid2eid, tokens, E, K, route_scale, hash, sel, sel_w);
}

void route_group(float* probs, const float* bias, const int32_t* tid2eid, const int32_t* tokens, uint32_t n,
                 uint32_t E, uint32_t K, float route_scale, bool hash, uint32_t* sel, float* sel_w, const MoeGroups& g,
                 cudaStream_t s) {
    if (n == 0) return;
    if (!small_group(n, K) || K > kThreads || E > 32 * uint64_t{kThreads}) {
        route(probs, bias, tid2eid, tokens, n, E, K, route_scale, hash, sel, sel_w, s);
        return moe_group(sel, n, K, E, g, s);
    }
    launch_pdl("launch of route_group_small_kernel", route_group_small_kernel, dim3(1), dim3(kThreads),
               E * sizeof(float), s, probs, bias, tid2eid, tokens, n, E, K, route_scale, hash, sel, sel_w, g);
}

void gather_rows(const float* x, const uint32_t* src, float* out, uint32_t m, uint32_t dim, cudaStream_t s,
                 const uint32_t* m_dev) {
    if (m == 0) return;
    launch_pdl("launch of gather_kernel", gather_kernel, dim3(blocks_for(dim), m), dim3(kThreads),
               0, s, x, src, out, dim, m_dev);
}

void weighted_swiglu(float* g, const float* u, const float* w, const uint32_t* widx, uint32_t m, uint32_t ff,
                     float limit, cudaStream_t s, const uint32_t* m_dev) {
    if (m == 0) return;
    launch_pdl("launch of weighted_swiglu_kernel", weighted_swiglu_kernel, dim3(blocks_for(ff), m),
               dim3(kThreads), 0, s, g, u, w, widx, ff, limit, m_dev);
}

void scatter_sum(const float* rows, const uint32_t* pair_begin, const uint32_t* pair_rows, float* moe, uint32_t n,
                 uint32_t dim, cudaStream_t s) {
    if (n == 0) return;
    scatter_sum_kernel<<<dim3(blocks_for(dim), n), kThreads, 0, s>>>(rows, pair_begin, pair_rows, moe, dim);
    DS4_CUDA_CHECK_LAUNCH("scatter_sum_kernel");
}

void moe_group(const uint32_t* sel, uint32_t n, uint32_t K, uint32_t E, const MoeGroups& g, cudaStream_t s) {
    if (n == 0) return;
    if (small_group(n, K))
        return launch_pdl("launch of moe_group_small_kernel", moe_group_small_kernel, dim3(1), dim3(32), 0, s, sel,
                          n, K, E, g);
    const uint64_t smem = uint64_t{kGroupWarps + 2} * E * sizeof(uint32_t);
    if (smem > 48 * 1024) fail("cuda moe_group: ", E, " experts, at most ", 48 * 1024 / 4 / (kGroupWarps + 2));
    launch_pdl("launch of moe_group_kernel", moe_group_kernel, dim3(1), dim3(kGroupWarps * 32), smem, s, sel, n, K, E,
               g);
}

void moe_sum(const float* ex, const MoeGroups& g, uint32_t n, uint32_t K, float* moe, uint32_t dim,
             cudaStream_t s) {
    if (n == 0) return;
    launch_pdl("launch of moe_sum_kernel", moe_sum_kernel, dim3(blocks_for(dim), n), dim3(kThreads),
               0, s, ex, g.rows, g.tok_count, K, moe, dim);
}

}  // namespace ds4::cuda
