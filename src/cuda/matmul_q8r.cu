// Dense Q8_0 matrix-vector products on a GPU-friendly row layout (issue 8, decode speed).
// GGUF's 34-byte blocks (f16 scale + 32 codes) defeat 16-byte loads, so matmul() stages
// rows through shared memory and each warp alternates between loading and computing
// (0.8-1.7 TB/s on an H200 for the per-layer matrices). q8r_repack rewrites each row in
// place, same byte count, as its int8 codes followed by its f16 scales, interleaved so
// that one 16-byte load per lane per 512 columns brings codes whose activations the warp
// reads as contiguous float4s. A warp keeps 2 spans x R rows of loads in flight before
// using them. The arithmetic is the exact path's: each code dequantized to f32 (d · q,
// as quant/reference does), f32 activations, f32 fused multiply-adds.
#include <cuda_fp16.h>

#include <algorithm>
#include <span>
#include <type_traits>
#include <vector>

#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/device_math.cuh"
#include "cuda/env_switch.h"
#include "cuda/kernels.h"
#include "cuda/matmul_q8r_tc.h"
#include "cuda/pdl.cuh"
#include "cuda/token_chunks.h"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

constexpr uint32_t kBlockWarps = 8;
constexpr uint64_t kMaxCols = 32768;  // the repack holds one row in shared memory

// Span of one warp-wide load: 512 columns (16 bytes per lane) when cols allows, else 256
// (8 bytes); K = span / 128 four-code words per lane.
uint32_t span_of(uint64_t cols) { return cols % 512 == 0 ? 512 : 256; }

// The weights are read once: keep them out of L1 so the activations stay there.
__device__ __forceinline__ void load_codes(const uint8_t* p, uint32_t (&q)[4]) {
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(q[0]), "=r"(q[1]), "=r"(q[2]), "=r"(q[3])
        : "l"(p));
}
__device__ __forceinline__ void load_codes(const uint8_t* p, uint32_t (&q)[2]) {
    asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(q[0]), "=r"(q[1]) : "l"(p));
}
// K f16 scales (K = 4: 8 bytes, K = 2: 4 bytes).
__device__ __forceinline__ void load_scales(const uint8_t* p, uint32_t (&d)[2]) {
    asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(d[0]), "=r"(d[1]) : "l"(p));
}
__device__ __forceinline__ void load_scales(const uint8_t* p, uint32_t (&d)[1]) {
    asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(d[0]) : "l"(p));
}

// Code j of a word whose bytes were xor-ed with 0x80 (q + 128 as unsigned): placed in
// the mantissa of 2^23, the float is 2^23 + 128 + q exactly; two full-rate instructions
// instead of the quarter-rate int-to-float conversion.
__device__ __forceinline__ float code(uint32_t biased, int j) {
    return __int_as_float(static_cast<int>(__byte_perm(biased, 0x4B000000u, 0x7440u | j))) - 8388736.0f;
}

// The 4 values of code word k, dequantized as the exact path does (d · q), and their
// fused multiply-adds into a in column order: the one arithmetic of every q8r kernel.
template <int K>
__device__ __forceinline__ float4 span_values(const uint32_t (&q)[K], const uint32_t (&d)[K / 2], int k) {
    const uint32_t dw = d[k / 2];
    const float dk = __half2float(__ushort_as_half(static_cast<unsigned short>(k % 2 ? dw >> 16 : dw)));
    const uint32_t b = q[k] ^ 0x80808080u;
    return make_float4(dk * code(b, 0), dk * code(b, 1), dk * code(b, 2), dk * code(b, 3));
}
__device__ __forceinline__ float fma4(const float4& v, const float4& x, float a) {
    a = fmaf(v.x, x.x, a);
    a = fmaf(v.y, x.y, a);
    a = fmaf(v.z, x.z, a);
    return fmaf(v.w, x.w, a);
}

struct Strides {
    uint64_t w = 0, x = 0, y = 0;
};

// Block: kBlockWarps warps, W per row group of R rows (warp p of a group takes spans p,
// p + W, ...), so a block covers R · kBlockWarps / W rows. Per (row, token) the sums run
// over the same spans in the same order whatever NT and R are, the lanes reduce by a
// fixed butterfly and the W partial sums add in warp order: a token's bits depend on
// the matrix shape only, not on the batch. q8r_kernel's blockIdx.y selects one of several
// same-shape products (Strides).
// bx: the block's index within its product. One body for the single, grouped and
// multi-product kernels, so each product's bits are those of its own launch. It makes
// the pdl wait (after its first weight loads).
template <int K, int NT, int R, int W>
__device__ __forceinline__ void q8r_rows(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t rows,
                                         uint32_t n_spans, const float* __restrict__ x, uint64_t x_stride,
                                         float* __restrict__ y, uint64_t y_stride, uint32_t bx) {
    constexpr uint32_t kSpan = 128 * K, kGroups = kBlockWarps / W;
    __shared__ float part[W > 1 ? kBlockWarps : 1][R][NT];
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint32_t piece = warp % W;
    const uint32_t row0 = (bx * kGroups + warp / W) * R;
    const uint32_t n_rows = row0 < rows ? min(static_cast<uint32_t>(R), rows - row0) : 0;
    const uint64_t cols = uint64_t{n_spans} * kSpan;
    const uint8_t* wr = w + uint64_t{row0} * row_bytes;
    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;

    uint32_t q[2][R][K];
    uint32_t d[2][R][K / 2];
    const auto load = [&](uint32_t s) {
        const bool two = s + W < n_spans;
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const uint64_t sp = s + u * W;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                if (static_cast<uint32_t>(r) < n_rows && (u == 0 || two)) {
                    const uint8_t* row = wr + r * row_bytes;
                    load_codes(row + sp * kSpan + 4 * K * lane, q[u][r]);
                    load_scales(row + cols + 8 * K * sp + 2 * K * (lane / 8), d[u][r]);
                } else {
#pragma unroll
                    for (int k = 0; k < K; ++k) q[u][r][k] = 0x80808080u;
#pragma unroll
                    for (int k = 0; k < K / 2; ++k) d[u][r][k] = 0;
                }
            }
        }
    };
    // The weights are constants (written at upload, before any forward launch): the first
    // spans are loaded before waiting for the previous kernel (pdl.cuh), so a block placed
    // early loads them while that kernel finishes; x and y only after the wait.
    if (piece < n_spans) load(piece);
    dev::pdl_wait_and_release();
    for (uint32_t s = piece; s < n_spans; s += 2 * W) {
        const bool two = s + W < n_spans;
        if (s != piece) load(s);
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            if (u == 1 && !two) break;
            const float* xs = x + (uint64_t{s} + u * W) * kSpan + 4 * lane;
#pragma unroll
            for (int k = 0; k < K; ++k) {
                float4 xv[NT];
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    xv[t] = __ldg(reinterpret_cast<const float4*>(xs + t * x_stride + 128 * k));
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    if (static_cast<uint32_t>(r) >= n_rows) break;
                    const float4 v = span_values<K>(q[u][r], d[u][r], k);
#pragma unroll
                    for (int t = 0; t < NT; ++t) acc[r][t] = fma4(v, xv[t], acc[r][t]);
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float a = dev::warp_sum(acc[r][t]);
            if (lane == 0) {
                if constexpr (W == 1) {
                    if (static_cast<uint32_t>(r) < n_rows) y[t * y_stride + row0 + r] = a;
                } else {
                    part[warp][r][t] = a;
                }
            }
        }
    }
    if constexpr (W > 1) {
        __syncthreads();
        for (uint32_t i = threadIdx.x; i < kGroups * R * NT; i += blockDim.x) {
            const uint32_t g = i / (R * NT), r = i / NT % R, t = i % NT;
            const uint32_t row = (bx * kGroups + g) * R + r;
            if (row >= rows) continue;
            float sum = part[g * W][r][t];
#pragma unroll
            for (int p = 1; p < W; ++p) sum += part[g * W + p][r][t];
            y[t * y_stride + row] = sum;
        }
    }
}

// One token (NT = R = 1) over a persistent grid: the block takes row blocks bx0,
// bx0 + stride, ... < n_bx, and each warp keeps its next span pair's loads in flight
// while it computes the current one, across row boundaries (a warp of q8r_rows waits
// for its loads at every row and span pair: a full DRAM round trip each, and a block's
// warps retire before the next block is placed). The same spans, lanes, order and
// reductions per row as q8r_rows<K, 1, 1, W>: the same bits.
template <int K, int W>
__device__ __forceinline__ void q8r_rows_pipe(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t rows,
                                              uint32_t n_spans, const float* __restrict__ x,
                                              float* __restrict__ y, uint32_t bx0, uint32_t stride, uint32_t n_bx) {
    constexpr uint32_t kSpan = 128 * K, kGroups = kBlockWarps / W;
    __shared__ float part[W > 1 ? kBlockWarps : 1];
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint32_t piece = warp % W;
    const uint64_t cols = uint64_t{n_spans} * kSpan;
    struct Pair {
        uint32_t q[2][K];
        uint32_t d[2][K / 2];
    };
    const auto row_of = [&](uint32_t bx) { return bx * kGroups + warp / W; };
    const auto load = [&](Pair& b, uint32_t row, uint32_t s) {
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const uint64_t sp = s + u * W;
            if (row < rows && sp < n_spans) {
                const uint8_t* r = w + uint64_t{row} * row_bytes;
                load_codes(r + sp * kSpan + 4 * K * lane, b.q[u]);
                load_scales(r + cols + 8 * K * sp + 2 * K * (lane / 8), b.d[u]);
            } else {
#pragma unroll
                for (int k = 0; k < K; ++k) b.q[u][k] = 0x80808080u;
#pragma unroll
                for (int k = 0; k < K / 2; ++k) b.d[u][k] = 0;
            }
        }
    };
    uint32_t bx = bx0, s = piece;
    bool have = bx < n_bx;
    Pair cur, nxt;
    if (have) load(cur, row_of(bx), s);
    dev::pdl_wait_and_release();  // (the weights only before it: pdl.cuh)
    float acc = 0.f;
    while (have) {
        uint32_t nbx = bx, ns = s + 2 * W;
        if (ns >= n_spans) nbx = bx + stride, ns = piece;
        const bool more = nbx < n_bx;
        if (more) load(nxt, row_of(nbx), ns);
        const bool two = s + W < n_spans;
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            if (u == 1 && !two) break;
            const float* xs = x + (uint64_t{s} + u * W) * kSpan + 4 * lane;
#pragma unroll
            for (int k = 0; k < K; ++k) {
                const float4 xv = __ldg(reinterpret_cast<const float4*>(xs + 128 * k));
                acc = fma4(span_values<K>(cur.q[u], cur.d[u], k), xv, acc);
            }
        }
        if (ns == piece || !more) {  // the row is complete (the next pair is another row's)
            const uint32_t row = row_of(bx);
            const float sum = dev::warp_sum(acc);
            acc = 0.f;
            if constexpr (W == 1) {
                if (lane == 0 && row < rows) y[row] = sum;
            } else {
                if (lane == 0) part[warp] = sum;
                __syncthreads();  // every warp of the block completes its rows in the same order
                if (threadIdx.x < kGroups) {
                    const uint32_t r = bx * kGroups + threadIdx.x;
                    float t = part[threadIdx.x * W];
#pragma unroll
                    for (int p = 1; p < W; ++p) t += part[threadIdx.x * W + p];
                    if (r < rows) y[r] = t;
                }
                __syncthreads();  // part is read before the next row writes it
            }
        }
        if (more) cur = nxt;
        bx = nbx, s = ns, have = more;
    }
}

template <int K, int W>
__global__ void __launch_bounds__(kBlockWarps * 32)
    q8r_pipe_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t rows, uint32_t n_spans,
                    const float* __restrict__ x, float* __restrict__ y, Strides gs, uint32_t n_bx) {
    q8r_rows_pipe<K, W>(w + blockIdx.y * gs.w, row_bytes, rows, n_spans, x + blockIdx.y * gs.x, y + blockIdx.y * gs.y,
                        blockIdx.x, gridDim.x, n_bx);
}

template <int K, int NT, int R, int W>
__global__ void __launch_bounds__(kBlockWarps * 32)
    q8r_kernel(const uint8_t* __restrict__ w, uint64_t row_bytes, uint32_t rows, uint32_t n_spans,
               const float* __restrict__ x, uint64_t x_stride, float* __restrict__ y, uint64_t y_stride,
               Strides gs) {
    const uint64_t t0 = uint64_t{blockIdx.z} * NT;  // the run's chunk (for_token_runs)
    q8r_rows<K, NT, R, W>(w + blockIdx.y * gs.w, row_bytes, rows, n_spans, x + blockIdx.y * gs.x + t0 * x_stride,
                          x_stride, y + blockIdx.y * gs.y + t0 * y_stride, y_stride, blockIdx.x);
}

// Several products of one input and one column count in one grid (matmul_q8r_multi):
// block b belongs to the last part whose first block is <= b. Constant indices only,
// so the table stays in parameter space.
constexpr uint32_t kMaxParts = 8;
struct Part {
    const uint8_t* w = nullptr;
    float* y = nullptr;
    uint64_t y_stride = 0;
    uint32_t rows = 0, block0 = 0;
};
struct PartTable {
    Part part[kMaxParts];
    uint32_t n = 0;
};

template <int K, int NT, int R, int W>
__global__ void __launch_bounds__(kBlockWarps * 32)
    q8r_multi_kernel(PartTable tab, uint64_t row_bytes, uint32_t n_spans, const float* __restrict__ x,
                     uint64_t x_stride) {
    Part p = tab.part[0];
#pragma unroll
    for (uint32_t j = 1; j < kMaxParts; ++j)
        if (j < tab.n && blockIdx.x >= tab.part[j].block0) p = tab.part[j];
    const uint64_t t0 = uint64_t{blockIdx.z} * NT;  // the run's chunk (for_token_runs)
    q8r_rows<K, NT, R, W>(p.w, row_bytes, p.rows, n_spans, x + t0 * x_stride, x_stride, p.y + t0 * p.y_stride,
                          p.y_stride, blockIdx.x - p.block0);
}

// One block per row: the GGUF row into shared memory, then written back in place.
// Codes: word o of the row (4 bytes) is lane l = (o % 32K) / K's word k = o % K of span
// o / 32K, i.e. columns span·128K + 128k + 4l .. + 3. Scales: half h is group
// g = (h % 4K) / K's entry k = h % K of span h / 4K, i.e. block span·4K + 4k + g.
__global__ void q8r_repack_kernel(uint8_t* w, uint64_t row_bytes, uint32_t cols, uint32_t k_words) {
    extern __shared__ __align__(16) uint8_t raw[];
    uint8_t* row = w + blockIdx.x * row_bytes;
    for (uint32_t i = threadIdx.x; i < row_bytes / 4; i += blockDim.x)
        reinterpret_cast<uint32_t*>(raw)[i] = reinterpret_cast<const uint32_t*>(row)[i];
    __syncthreads();
    const uint32_t K = k_words;
    for (uint32_t o = threadIdx.x; o < cols / 4; o += blockDim.x) {
        const uint32_t s = o / (32 * K), l = o % (32 * K) / K, k = o % K;
        const uint32_t c = 128 * K * s + 128 * k + 4 * l;
        const uint8_t* src = raw + 34 * (c / 32) + 2 + c % 32;
        reinterpret_cast<uint32_t*>(row)[o] =
            src[0] | (uint32_t{src[1]} << 8) | (uint32_t{src[2]} << 16) | (uint32_t{src[3]} << 24);
    }
    for (uint32_t h = threadIdx.x; h < cols / 32; h += blockDim.x) {
        const uint32_t s = h / (4 * K), g = h % (4 * K) / K, k = h % K;
        const uint8_t* src = raw + 34 * (4 * K * s + 4 * k + g);
        reinterpret_cast<uint16_t*>(row + cols)[h] = static_cast<uint16_t>(src[0] | (src[1] << 8));
    }
}

// Warps per row group, from the shape only: split a row while that keeps >= 2 spans per
// warp and the whole product has under 4096 warps of 4 rows (a full H200 holds ~8400).
// Counted in groups of 4 rows whatever R is, so the split never depends on the batch.
int warps_per_row(uint64_t rows, uint64_t n_spans) {
    const uint64_t groups = (rows + 3) / 4;
    int w = 1;
    while (w < 8 && n_spans >= 4 * static_cast<uint64_t>(w) && groups * w < 4096) w *= 2;
    return w;
}

// Calls f(std::integral_constant<int, W>{}) for W = wpr (1, 2, 4 or 8).
template <class F>
void with_wpr(int wpr, F&& f) {
    switch (wpr) {
        case 1: f(std::integral_constant<int, 1>{}); break;
        case 2: f(std::integral_constant<int, 2>{}); break;
        case 4: f(std::integral_constant<int, 4>{}); break;
        default: f(std::integral_constant<int, 8>{}); break;
    }
}

// Rows per warp: 1 at one token (more warps in flight; H200, ncu: out_b 21.0 -> 16.1 µs at 2
// rows, all dense Q8_0 of a decode step 510 -> 468 µs, less again at 1), 4 at 2-4 tokens,
// 2 at 5-8 (registers).
template <int NT>
constexpr int kRowsPerWarp = NT == 1 ? 1 : NT <= 4 ? 4 : 2;

template <int K, int NT>
void launch_nt(const uint8_t* w, uint64_t rows, uint64_t cols, uint32_t n_mat, const float* x, uint64_t x_stride,
               float* y, uint64_t y_stride, const Strides& gs, uint32_t n_chunks, cudaStream_t s) {
    constexpr int R = kRowsPerWarp<NT>;
    const uint64_t n_spans = cols / (128 * K), row_bytes = cols / 32 * 34;
    const int wpr = warps_per_row(rows, n_spans);
    const uint64_t rows_per_block = R * kBlockWarps / wpr;
    const dim3 grid(static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block), n_mat, n_chunks);
    const auto r32 = static_cast<uint32_t>(rows), s32 = static_cast<uint32_t>(n_spans);
    static const bool pipe = env_switch_on("DS4_CUDA_Q8R_PIPE");
    // One token split over 2+ warps a row: the persistent, pipelined kernel (the same
    // bits). H200, ncu, 4 layers: out_a + out_b 142.2 -> 127.6 us, shared down 28.7 ->
    // 24.8; one warp a row (q_b, the output head) 226.3 -> 239.8, so those stay here.
    if constexpr (NT == 1) {
        if (pipe && n_chunks == 1 && wpr > 1) {
            with_wpr(wpr, [&](auto wc) {
                const auto kernel = q8r_pipe_kernel<K, decltype(wc)::value>;
                static const unsigned resident = device_resident_blocks(kernel, kBlockWarps * 32);
                const unsigned per_mat = std::max(1u, resident / n_mat);
                launch_pdl("launch of q8r_pipe_kernel", kernel, dim3(std::min(grid.x, per_mat), n_mat),
                           dim3(kBlockWarps * 32), 0, s, w, row_bytes, r32, s32, x, y, gs, grid.x);
            });
            return;
        }
    }
    with_wpr(wpr, [&](auto wc) {
        launch_pdl("launch of q8r_kernel", q8r_kernel<K, NT, R, decltype(wc)::value>, grid, dim3(kBlockWarps * 32),
                   0, s, w, row_bytes, r32, s32, x, x_stride, y, y_stride, gs);
    });
}

template <int K>
void launch(const uint8_t* w, uint64_t rows, uint64_t cols, uint32_t n_mat, const float* x, uint64_t x_stride,
            float* y, uint64_t y_stride, uint32_t n_tok, const Strides& gs, cudaStream_t s) {
    for_token_runs(n_tok, [&](uint32_t t0, uint32_t n_chunks, auto nt) {
        launch_nt<K, decltype(nt)::value>(w, rows, cols, n_mat, x + t0 * x_stride, x_stride, y + t0 * y_stride,
                                          y_stride, gs, n_chunks, s);
    });
}

// One launch per token chunk over the parts of `tab` (all of one W), token chunk t0..t0+NT.
template <int K, int NT>
void launch_multi_nt(PartTable tab, int wpr, uint64_t cols, const float* x, uint64_t x_stride, uint32_t n_chunks,
                     cudaStream_t s) {
    constexpr int R = kRowsPerWarp<NT>;
    const uint64_t n_spans = cols / (128 * K), row_bytes = cols / 32 * 34;
    const uint32_t rows_per_block = R * kBlockWarps / static_cast<uint32_t>(wpr);
    uint32_t blocks = 0;
    for (uint32_t i = 0; i < tab.n; ++i) {
        tab.part[i].block0 = blocks;
        blocks += (tab.part[i].rows + rows_per_block - 1) / rows_per_block;
    }
    const auto s32 = static_cast<uint32_t>(n_spans);
    with_wpr(wpr, [&](auto wc) {
        launch_pdl("launch of q8r_multi_kernel", q8r_multi_kernel<K, NT, R, decltype(wc)::value>,
                   dim3(blocks, 1, n_chunks), dim3(kBlockWarps * 32), 0, s, tab, row_bytes, s32, x, x_stride);
    });
}

void check_args(const void* w, uint64_t cols, const float* x, uint64_t x_stride) {
    if (cols % 256 != 0 || cols == 0 || cols > kMaxCols)
        fail("cuda matmul_q8r: ", cols, " columns, expected a multiple of 256 up to ", kMaxCols);
    if (reinterpret_cast<uintptr_t>(w) % 16 != 0) fail("cuda matmul_q8r: weight pointer is not 16-byte aligned");
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || x_stride % 4 != 0)
        fail("cuda matmul_q8r: activations must be 16-byte aligned with a stride multiple of 4");
}

}  // namespace

bool q8r_applies(GgmlType t, uint64_t cols) {
    static const bool on = env_switch_on("DS4_CUDA_Q8R");
    return on && t == GgmlType::Q8_0 && cols % 256 == 0 && cols > 0 && cols <= kMaxCols;
}

void q8r_repack(void* w, uint64_t rows, uint64_t cols, cudaStream_t s) {
    if (cols % 256 != 0 || cols == 0 || cols > kMaxCols)
        fail("cuda q8r_repack: ", cols, " columns, expected a multiple of 256 up to ", kMaxCols);
    if (reinterpret_cast<uintptr_t>(w) % 16 != 0) fail("cuda q8r_repack: weight pointer is not 16-byte aligned");
    if (rows == 0) return;
    if (rows > 0x7fffffffu) fail("cuda q8r_repack: ", rows, " rows, at most 2^31 - 1");
    const uint64_t row_bytes = cols / 32 * 34;
    q8r_repack_kernel<<<static_cast<unsigned>(rows), 256, row_bytes, s>>>(
        static_cast<uint8_t*>(w), row_bytes, static_cast<uint32_t>(cols), span_of(cols) / 128);
    DS4_CUDA_CHECK_LAUNCH("q8r_repack_kernel");
}

void matmul_q8r(const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
                uint64_t y_stride, uint32_t n_tok, cudaStream_t s) {
    matmul_q8r_groups(w, rows, cols, 1, x, x_stride, 0, y, y_stride, 0, n_tok, s);
}

void matmul_q8r_groups(const void* w, uint64_t rows, uint64_t cols, uint32_t n_mat, const float* x,
                       uint64_t x_stride, uint64_t x_group, float* y, uint64_t y_stride, uint64_t y_group,
                       uint32_t n_tok, cudaStream_t s) {
    if (rows == 0 || n_tok == 0 || n_mat == 0) return;
    check_args(w, cols, x, x_stride);
    if (x_group % 4 != 0) fail("cuda matmul_q8r: the activation group stride must be a multiple of 4");
    if (n_mat > 65535) fail("cuda matmul_q8r: ", n_mat, " matrices, at most 65535");
    if (q8r_tc_takes(rows, cols, n_tok)) {  // the tensor cores, 8 groups a launch
        const uint64_t w_group = rows * (cols / 32 * 34);
        for (uint32_t g0 = 0; g0 < n_mat; g0 += 8) {
            std::vector<Q8rTcPart> parts;
            for (uint64_t g = g0; g < std::min(n_mat, g0 + 8); ++g)
                parts.push_back(Q8rTcPart{static_cast<const uint8_t*>(w) + g * w_group, rows, x + g * x_group,
                                          y + g * y_group, y_stride});
            matmul_q8r_tc(parts, cols, n_tok, x_stride, s);
        }
        return;
    }
    const Strides gs{rows * (cols / 32 * 34), x_group, y_group};
    const auto* wb = static_cast<const uint8_t*>(w);
    if (span_of(cols) == 512)
        launch<4>(wb, rows, cols, n_mat, x, x_stride, y, y_stride, n_tok, gs, s);
    else
        launch<2>(wb, rows, cols, n_mat, x, x_stride, y, y_stride, n_tok, gs, s);
}

// Parts grouped by their split W (a part's bits depend on its W, which comes from its own
// shape); each group of up to kMaxParts parts is one launch per token chunk.
void matmul_q8r_multi(std::span<const Q8rProduct> parts, uint64_t cols, const float* x, uint64_t x_stride,
                      uint32_t n_tok, cudaStream_t s) {
    if (n_tok == 0 || parts.empty()) return;
    for (const Q8rProduct& p : parts) {
        check_args(p.w, cols, x, x_stride);
        if (p.rows > 0x7fffffffu) fail("cuda matmul_q8r_multi: ", p.rows, " rows, at most 2^31 - 1");
    }
    const uint64_t span = span_of(cols), spans = cols / span;
    // the large parts on the tensor cores, 8 a launch; the others by split below
    std::vector<Q8rTcPart> tc;
    std::vector<const Q8rProduct*> exact;
    for (const Q8rProduct& p : parts) {
        if (q8r_tc_takes(p.rows, cols, n_tok))
            tc.push_back(Q8rTcPart{p.w, p.rows, x, p.y, p.y_stride});
        else if (p.rows != 0)
            exact.push_back(&p);
    }
    for (size_t i = 0; i < tc.size(); i += 8)
        matmul_q8r_tc(std::span(tc).subspan(i, std::min<size_t>(8, tc.size() - i)), cols, n_tok, x_stride, s);
    for (const int wpr : {1, 2, 4, 8}) {
        PartTable tab;
        const auto flush = [&] {
            if (tab.n == 0) return;
            for_token_runs(n_tok, [&](uint32_t t0, uint32_t n_chunks, auto nt) {
                PartTable at = tab;
                for (uint32_t i = 0; i < at.n; ++i) at.part[i].y += t0 * at.part[i].y_stride;
                if (span == 512)
                    launch_multi_nt<4, decltype(nt)::value>(at, wpr, cols, x + t0 * x_stride, x_stride, n_chunks, s);
                else
                    launch_multi_nt<2, decltype(nt)::value>(at, wpr, cols, x + t0 * x_stride, x_stride, n_chunks, s);
            });
            tab.n = 0;
        };
        for (const Q8rProduct* p : exact) {
            if (warps_per_row(p->rows, spans) != wpr) continue;
            tab.part[tab.n++] = Part{static_cast<const uint8_t*>(p->w), p->y, p->y_stride,
                                     static_cast<uint32_t>(p->rows), 0};
            if (tab.n == kMaxParts) flush();
        }
        flush();
    }
}

}  // namespace ds4::cuda
