// Element-wise ops of the forward pass, each following the order of operations of its
// CPU twin in src/cpu/numerics.cpp (and moe.cpp / attention.cpp) so that the results
// agree to a few ulps: the remaining differences are CUDA's expf/rsqrt vs glibc.
#include <cfloat>

#include "cuda/check.h"
#include "cuda/device_math.cuh"
#include "cuda/forward_kernels.h"
#include "cuda/kernels.h"
#include "cuda/pdl.cuh"

namespace ds4::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(uint64_t n, int threads = kThreads) {
    return static_cast<unsigned>((n + threads - 1) / threads);
}

__global__ void __launch_bounds__(1024) rms_norm_kernel(const float* x, const float* w, float* out, uint32_t n,
                                                        float eps) {
    dev::pdl_wait_and_release();
    __shared__ double partial[32];
    const float* xr = x + uint64_t{blockIdx.x} * n;
    float* orow = out + uint64_t{blockIdx.x} * n;
    const float r = dev::block_rms_inv(xr, n, eps, partial);
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i] * r;
        orow[i] = w != nullptr ? w[i] * v : v;
    }
}

// rope_tokens' rotation of a row's last 2·half values at `pos`, pairs j ≡ first (mod step)
__device__ void rope_row_tail(float* row, uint32_t n, uint32_t half, const float* omega, float pos, uint32_t first,
                              uint32_t step) {
    for (uint32_t j = first; j < half; j += step) {
        float c, sn;
        dev::rope_cs(pos, omega[j], c, sn);
        float* p = row + (n - 2 * half) + 2 * j;
        dev::rotate_pair(p, c, sn);
    }
}

// rms_norm_kernel's row (the same sums in the same order: same block size), then RoPE of
// the row's last 2·half values (rope_tokens' arithmetic, position of token row / vec_per_tok)
// and FP8 of its first fp8_len values in 64-blocks (fp8_rows' arithmetic): the three
// launches of a head row in one, the same bits. The two regions do not overlap. Blocks
// [0, a.n_rows) take rows of a, the rest rows of b (two independent buffers, one launch).
__global__ void __launch_bounds__(1024) norm_rope_kernel(NormRope a, NormRope b, float eps, const uint64_t* positions) {
    dev::pdl_wait_and_release();
    __shared__ double partial[32];
    __shared__ float amax_w[32];
    const bool in_a = blockIdx.x < a.n_rows;
    const NormRope& g = in_a ? a : b;
    const uint32_t r_id = in_a ? blockIdx.x : blockIdx.x - a.n_rows, n = g.n;
    float* row = g.x + uint64_t{r_id} * n;
    const float* w = g.w;
    const float r = dev::block_rms_inv(row, n, eps, partial);
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = row[i] * r;
        row[i] = w != nullptr ? w[i] * v : v;
    }
    if (g.half == 0 && g.fp8_len == 0 && g.ring == nullptr) return;  // rms_norm alone
    __syncthreads();  // the normalized row, written by other threads, is read below
    rope_row_tail(row, n, g.half, g.omega, static_cast<float>(positions[r_id / g.vec_per_tok]), threadIdx.x,
                  blockDim.x);
    // FP8: warps 2k and 2k + 1 hold one 64-block (fp8_len and the step are multiples of 64)
    const uint32_t warp = threadIdx.x / 32;
    for (uint32_t b0 = 0; b0 < g.fp8_len; b0 += blockDim.x) {
        const uint32_t i = b0 + threadIdx.x;
        const float v = i < g.fp8_len ? row[i] : 0.0f;
        const float wm = dev::warp_max(fabsf(v));
        if (threadIdx.x % 32 == 0) amax_w[warp] = wm;
        __syncthreads();
        const float amax = fmaxf(fmaxf(amax_w[warp & ~1u], amax_w[warp | 1u]), static_cast<float>(1e-4));
        const float sc = dev::pow2_ceil(amax * static_cast<float>(1.0 / 448.0));
        if (i < g.fp8_len) row[i] = dev::e4m3_round(fminf(fmaxf(v / sc, -448.0f), 448.0f)) * sc;
        __syncthreads();
    }
    if (g.ring != nullptr) {
        __syncthreads();  // the RoPE pairs and FP8 blocks were written by other threads
        float* dst = g.ring + (positions[0] % g.window) * n;
        for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = row[i];
    }
}

// norm_rope_kernel's rows of fewer than 2048 values (its blocks of 256 threads), one warp
// per row, the same bits: lane l keeps the double sums of the block's threads l + 32w
// (w < 8), reduces each with warp_sum as block_sum's warp w did, then the 8 totals as its
// first warp did; RoPE and FP8 are per value / per 64-block maximum. A block per row made
// the prefill's 64 q heads per token ~0.8 ms per layer at 2048 tokens (block barriers and
// reductions for 512 values).
// From 1024 rows (prefill, 16+ sequences' q heads); fewer rows are a few warps whose
// serial sums are slower than a block's (batch-1 decode: 12 vs 5-6 us per launch).
constexpr uint32_t kNormWarpRows = 8, kNormVirtual = 256, kNormWarpMinRows = 1024;
__global__ void __launch_bounds__(32 * kNormWarpRows)
    norm_rope_warp_kernel(NormRope a, NormRope b, float eps, const uint64_t* positions) {
    dev::pdl_wait_and_release();
    const uint32_t lane = threadIdx.x % 32, id = blockIdx.x * kNormWarpRows + threadIdx.x / 32;
    if (id >= a.n_rows + b.n_rows) return;  // whole warps
    const bool in_a = id < a.n_rows;
    const NormRope& g = in_a ? a : b;
    const uint32_t r_id = in_a ? id : id - a.n_rows, n = g.n;
    float* row = g.x + uint64_t{r_id} * n;
    constexpr uint32_t W = kNormVirtual / 32;
    double part[W];
#pragma unroll
    for (uint32_t w = 0; w < W; ++w) {
        part[w] = 0;
        for (uint32_t i = 32 * w + lane; i < n; i += kNormVirtual) {
            const float sq = row[i] * row[i];
            part[w] += sq;
        }
    }
    double tot = 0;
#pragma unroll
    for (uint32_t w = 0; w < W; ++w) {
        const double t = dev::warp_sum(part[w]);
        tot = lane == w ? t : tot;  // lanes >= W add 0.0, as block_sum's first warp
    }
    const double sum = dev::warp_sum(tot);
    const auto mean = static_cast<float>(sum / static_cast<double>(n));
    const float r = 1.0f / sqrtf(mean + eps);
    for (uint32_t i = lane; i < n; i += 32) {
        const float v = row[i] * r;
        row[i] = g.w != nullptr ? g.w[i] * v : v;
    }
    if (g.half == 0 && g.fp8_len == 0) return;
    __syncwarp();  // the normalized row, written by other lanes, is read below
    rope_row_tail(row, n, g.half, g.omega, static_cast<float>(positions[r_id / g.vec_per_tok]), lane, 32);
    __syncwarp();
    for (uint32_t b0 = 0; b0 < g.fp8_len; b0 += 64) {  // a 64-block: lanes hold values l and l + 32
        const float v0 = row[b0 + lane], v1 = row[b0 + 32 + lane];
        const float amax = fmaxf(dev::warp_max(fmaxf(fabsf(v0), fabsf(v1))), static_cast<float>(1e-4));
        const float sc = dev::pow2_ceil(amax * static_cast<float>(1.0 / 448.0));
        row[b0 + lane] = dev::e4m3_round(fminf(fmaxf(v0 / sc, -448.0f), 448.0f)) * sc;
        row[b0 + 32 + lane] = dev::e4m3_round(fminf(fmaxf(v1 / sc, -448.0f), 448.0f)) * sc;
    }
}

__global__ void rope_kernel(float* x, uint32_t n_vec, uint64_t stride, const float* omega, uint32_t half,
                            float pos, bool inverse) {
    const uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (i >= uint64_t{n_vec} * half) return;
    const uint64_t v = i / half;
    const uint32_t j = static_cast<uint32_t>(i % half);
    const float theta = pos * omega[j];
    // cos/sin in double then rounded, as RopeAngles::compute does
    const auto c = static_cast<float>(cos(static_cast<double>(theta)));
    float sn = static_cast<float>(sin(static_cast<double>(theta)));
    if (inverse) sn = -sn;
    float* p = x + v * stride + 2 * j;
    const float re = p[0], im = p[1];
    p[0] = re * c - im * sn;
    p[1] = re * sn + im * c;
}

__device__ float pow2_ceil(float t) {
    const uint32_t bits = __float_as_uint(t);
    const int exp = static_cast<int>((bits >> 23) & 0xff);
    const int e = exp - 127 + ((bits & 0x7fffff) != 0 ? 1 : 0);
    return __uint_as_float(static_cast<uint32_t>(e + 127) << 23);
}

__device__ float e4m3_round(float v) {
    const float a = fabsf(v);
    if (a == 0.0f) return v;
    const int e = a < 0x1p-6f ? -6 : ilogbf(a);
    const float step = ldexpf(1.0f, e - 3);
    const float q = rintf(a / step) * step;
    return copysignf(q, v);
}

__device__ float e2m1_round(float v) {
    constexpr float kGrid[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    constexpr float kMids[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    const float a = fabsf(v);
    int idx = 0;
#pragma unroll
    for (int k = 0; k < 7; ++k) idx += kMids[k] < a ? 1 : 0;
    if (a == 0.75f || a == 1.75f || a == 3.5f) ++idx;
    if (v == 0.0f) return 0.0f;
    float g = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) g = idx == k ? kGrid[k] : g;  // no local-memory indexing
    return v < 0 ? -g : g;
}

// One warp per 64-block, 2 values per lane.
__global__ void fp8_kernel(float* x, uint64_t n_blocks) {
    const uint64_t b = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
    if (b >= n_blocks) return;
    const int lane = threadIdx.x % 32;
    float* p = x + 64 * b;
    const float v0 = p[lane], v1 = p[lane + 32];
    const float amax = fmaxf(dev::warp_max(fmaxf(fabsf(v0), fabsf(v1))), static_cast<float>(1e-4));
    const float s = pow2_ceil(amax * static_cast<float>(1.0 / 448.0));
    p[lane] = e4m3_round(fminf(fmaxf(v0 / s, -448.0f), 448.0f)) * s;
    p[lane + 32] = e4m3_round(fminf(fmaxf(v1 / s, -448.0f), 448.0f)) * s;
}

// One warp per 32-block.
__global__ void fp4_kernel(float* x, uint64_t n_blocks) {
    dev::pdl_wait_and_release();
    const uint64_t b = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
    if (b >= n_blocks) return;
    const int lane = threadIdx.x % 32;
    float* p = x + 32 * b;
    const float v = p[lane];
    const float amax = fmaxf(dev::warp_max(fabsf(v)), 6.0f * 0x1p-126f);
    const float s = pow2_ceil(amax * static_cast<float>(1.0 / 6.0));
    p[lane] = e2m1_round(fminf(fmaxf(v / s, -6.0f), 6.0f)) * s;
}

// One block per vector; butterflies in double in shared memory (exact x·H), as on the CPU.
__global__ void hadamard_kernel(float* x, uint32_t n) {
    dev::pdl_wait_and_release();
    __shared__ double buf[1024];
    float* p = x + uint64_t{blockIdx.x} * n;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) buf[i] = p[i];
    __syncthreads();
    dev::block_hadamard(buf, n);
    const float scale = dev::hadamard_scale(n);
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) p[i] = static_cast<float>(buf[i]) * scale;
}

// rope_tokens (last 2·half values), hadamard_kernel and fp4_kernel on one vector of n per
// block, in one launch: each step is the same code on the same values (the same bits).
// 256 threads as hadamard_kernel; n a multiple of 32, so each warp holds whole FP4 blocks.
__global__ void rope_hadamard_fp4_kernel(float* x, uint32_t n, uint32_t n_vec, const float* omega, uint32_t half,
                                         const uint64_t* positions) {
    dev::pdl_wait_and_release();
    __shared__ double buf[1024];
    float* p = x + uint64_t{blockIdx.x} * n;
    rope_row_tail(p, n, half, omega, static_cast<float>(positions[blockIdx.x / n_vec]), threadIdx.x, blockDim.x);
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) buf[i] = p[i];
    __syncthreads();
    dev::block_hadamard(buf, n);
    const float scale = dev::hadamard_scale(n);
    for (uint32_t i0 = 0; i0 < n; i0 += blockDim.x) {
        const uint32_t i = i0 + threadIdx.x;
        if (i >= n) break;  // whole warps (n is a multiple of 32)
        // hadamard_kernel's store, then fp4_kernel on the stored value
        const float v = static_cast<float>(buf[i]) * scale;
        const float amax = fmaxf(dev::warp_max(fabsf(v)), 6.0f * 0x1p-126f);
        const float s = pow2_ceil(amax * static_cast<float>(1.0 / 6.0));
        p[i] = e2m1_round(fminf(fmaxf(v / s, -6.0f), 6.0f)) * s;
    }
}

// One thread per (small) matrix, in exactly cpu::sinkhorn's order.
__global__ void sinkhorn_kernel(float* c_all, uint32_t h, uint32_t iters, float eps, uint32_t n_mat) {
    const uint32_t m_id = blockIdx.x * blockDim.x + threadIdx.x;
    if (m_id >= n_mat) return;
    float* c = c_all + uint64_t{m_id} * h * h;
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

__global__ void swiglu_kernel(const float* g, const float* u, float* out, uint64_t n, float limit) {
    dev::pdl_wait_and_release();
    const uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gv = g[i], uv = u[i];
    if (limit > 0) {
        uv = fminf(fmaxf(uv, -limit), limit);
        gv = fminf(gv, limit);
    }
    out[i] = gv / (1.0f + expf(-gv)) * uv;
}

// (not dev::block_max: the missing warps are -FLT_MAX here, -INFINITY there, which
// differ for a row of -inf scores)
__device__ float block_max(float v, float* shared) {
    v = dev::warp_max(v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < blockDim.x / 32 ? shared[lane] : -FLT_MAX;
        v = dev::warp_max(v);
        if (lane == 0) shared[0] = v;
    }
    __syncthreads();
    const float r = shared[0];
    __syncthreads();
    return r;
}

__global__ void softmax_sinks_kernel(float* scores, const float* sinks, uint32_t n) {
    __shared__ float fshared[32];
    __shared__ double dshared[32];
    float* s = scores + uint64_t{blockIdx.x} * n;
    float m = -INFINITY;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, s[i]);
    m = block_max(m, fshared);
    double den = 0;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float e = expf(s[i] - m);
        s[i] = e;
        den += e;
    }
    den = dev::block_sum(den, dshared);
    const float total = static_cast<float>(den) + expf(sinks[blockIdx.x] - m);
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) s[i] /= total;
}

}  // namespace

void rms_norm(const float* x, const float* w, float* out, uint32_t n, uint32_t n_rows, float eps,
              cudaStream_t s) {
    if (n_rows == 0) return;
    // one block per row: at batch 1 a D-wide row is the whole launch, bound by load latency
    // (16 loads per thread at 256 threads), so long rows get 1024 threads
    const unsigned threads = n >= 2048 ? 1024 : kThreads;
    launch_pdl("launch of rms_norm_kernel", rms_norm_kernel, dim3(n_rows), dim3(threads), 0, s, x, w, out, n, eps);
}

namespace {

// rms_norm's block size for rows of n values (its sums' order)
unsigned norm_threads(uint32_t n) { return n >= 2048 ? 1024 : kThreads; }

void check_norm_rope(const NormRope& g) {
    if (2 * g.half > g.n || g.fp8_len + 2 * g.half > g.n || g.fp8_len % 64 != 0 || g.vec_per_tok == 0 ||
        (g.half != 0 && g.omega == nullptr))
        fail("cuda norm_rope_rows: rope of ", 2 * g.half, " and fp8 of ", g.fp8_len, " values in rows of ", g.n);
    if (g.ring != nullptr && (g.n_rows != 1 || g.window == 0))
        fail("cuda norm_rope_rows: a raw-ring copy takes one row and a window (", g.n_rows, " rows, window ",
             g.window, ")");
}

bool g_norm_warp = true;

// rows [0, a.n_rows) of a, then b's: a warp per row below 2048 values, else a block
void launch_norm_rope(const NormRope& a, const NormRope& b, float eps, const uint64_t* positions, cudaStream_t s) {
    const uint32_t rows = a.n_rows + b.n_rows;
    if (norm_threads(a.n) == kNormVirtual && g_norm_warp && rows >= kNormWarpMinRows && a.ring == nullptr &&
        b.ring == nullptr)
        launch_pdl("launch of norm_rope_warp_kernel", norm_rope_warp_kernel,
                   dim3((rows + kNormWarpRows - 1) / kNormWarpRows), dim3(32 * kNormWarpRows), 0, s, a, b, eps,
                   positions);
    else
        launch_pdl("launch of norm_rope_kernel", norm_rope_kernel, dim3(rows), dim3(norm_threads(a.n)), 0, s, a, b, eps,
                   positions);
}

}  // namespace

void set_norm_rope_warp(bool on) { g_norm_warp = on; }

void norm_rope_pair(const NormRope& a, const NormRope& b, float eps, const uint64_t* positions, cudaStream_t s) {
    check_norm_rope(a);
    check_norm_rope(b);
    if (a.n_rows == 0 || b.n_rows == 0 || norm_threads(a.n) != norm_threads(b.n)) {
        for (const NormRope* g : {&a, &b})
            if (g->n_rows != 0) launch_norm_rope(*g, NormRope{}, eps, positions, s);
        return;
    }
    launch_norm_rope(a, b, eps, positions, s);
}

void norm_rope_rows(float* x, const float* w, uint32_t n, uint32_t n_rows, float eps, uint32_t vec_per_tok,
                    const float* omega, uint32_t half, const uint64_t* positions, uint32_t fp8_len, cudaStream_t s) {
    const NormRope g{x, w, omega, n, n_rows, vec_per_tok, half, fp8_len};
    check_norm_rope(g);
    if (n_rows == 0) return;
    launch_norm_rope(g, NormRope{}, eps, positions, s);
}

void rope_hadamard_fp4(float* x, uint32_t n_tok, uint32_t n_vec, uint32_t d, const float* omega, uint32_t half,
                       const uint64_t* positions, cudaStream_t s) {
    if (d == 0 || d > 1024 || (d & (d - 1)) != 0 || d % 32 != 0 || 2 * half > d)
        fail("cuda rope_hadamard_fp4: vectors of ", d, " values (a power of two from 32 to 1024), rope of ", 2 * half);
    if (n_tok == 0 || n_vec == 0) return;
    launch_pdl("launch of rope_hadamard_fp4_kernel", rope_hadamard_fp4_kernel, dim3(n_tok * n_vec), dim3(256), 0, s, x,
               d, n_vec, omega, half, positions);
}

void rope(float* x, uint32_t n_vec, uint64_t stride, const float* omega, uint32_t half, uint64_t pos,
          bool inverse, cudaStream_t s) {
    const uint64_t n = uint64_t{n_vec} * half;
    if (n == 0) return;
    rope_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, n_vec, stride, omega, half, static_cast<float>(pos),
                                                   inverse);
    DS4_CUDA_CHECK_LAUNCH("rope_kernel");
}

void fp8_simulate(float* x, uint64_t n, cudaStream_t s) {
    if (n % 64 != 0) fail("cuda fp8_simulate: ", n, " values is not a multiple of 64");
    if (n == 0) return;
    fp8_kernel<<<blocks_for(n / 64 * 32), kThreads, 0, s>>>(x, n / 64);
    DS4_CUDA_CHECK_LAUNCH("fp8_kernel");
}

void fp4_simulate(float* x, uint64_t n, cudaStream_t s) {
    if (n % 32 != 0) fail("cuda fp4_simulate: ", n, " values is not a multiple of 32");
    if (n == 0) return;
    launch_pdl("launch of fp4_kernel", fp4_kernel, dim3(blocks_for(n)), dim3(kThreads), 0, s, x, n / 32);
}

void hadamard_scaled(float* x, uint32_t n, uint32_t n_vec, cudaStream_t s) {
    if (n == 0 || (n & (n - 1)) != 0 || n > 1024)
        fail("cuda hadamard: size ", n, " is not a power of two ≤ 1024");
    if (n_vec == 0) return;
    launch_pdl("launch of hadamard_kernel", hadamard_kernel, dim3(n_vec), dim3(256), 0, s, x, n);
}

void sinkhorn(float* c, uint32_t h, uint32_t iters, float eps, uint32_t n_mat, cudaStream_t s) {
    if (n_mat == 0) return;
    sinkhorn_kernel<<<blocks_for(n_mat, 64), 64, 0, s>>>(c, h, iters, eps, n_mat);
    DS4_CUDA_CHECK_LAUNCH("sinkhorn_kernel");
}

void swiglu_clamp(const float* g, const float* u, float* out, uint64_t n, float limit, cudaStream_t s) {
    if (n == 0) return;
    launch_pdl("launch of swiglu_kernel", swiglu_kernel, dim3(blocks_for(n)), dim3(kThreads), 0, s, g, u, out, n, limit);
}

void softmax_sinks(float* scores, const float* sinks, uint32_t n, uint32_t n_head, cudaStream_t s) {
    if (n_head == 0) return;
    softmax_sinks_kernel<<<n_head, kThreads, 0, s>>>(scores, sinks, n);
    DS4_CUDA_CHECK_LAUNCH("softmax_sinks_kernel");
}

}  // namespace ds4::cuda
