// Fast matvec path (matmul_q8.h): int8 activations and dp4a. Layout of the work, per
// warp: R weight rows are staged chunk by chunk in shared memory with coalesced 16-byte
// asynchronous copies, double-buffered across a persistent grid (the next chunk is in
// flight while this one is computed); then lane l owns one 32-value block of a 256-value group
// (group l/8 of four per pass, block l%8), so every lane decodes a whole activation block
// with one scale: 8 weight words of 4 codes each, dotted with __dp4a and scaled once.
// The activation block (32 int8 + 8 bytes of scale and sums) is read once per pass and
// token and serves all R rows; the decoded weight words serve all tokens of the batch.
// Why: the exact kernels spend ~8 instructions per weight value on dequantization and
// f32 FMAs and run at 21-44 % of the copy bandwidth for the 2-4 bit types; here a value
// costs ~1-2 integer instructions (H100 figures: bench/RESULTS.md, CUDA section).
#include "cuda/matmul_q8.h"

#include <algorithm>
#include <type_traits>

#include "cuda/act_rows.cuh"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/pdl.cuh"
#include "cuda/device_math.cuh"
#include "cuda/kernels.h"
#include "cuda/matmul_q8_formats.cuh"
#include "quant/iq2_tables.h"

namespace ds4::cuda {
namespace {

constexpr int kWarps = 4;  // warps per block
constexpr int kMaxTok = 8;
using q8::IQ2XXSFast, q8::Iq2Tables, q8::kBlockMetaBytes, q8::kChunkBytes, q8::load_xblock, q8::Q2KFast, q8::Q4KFast,
    q8::Q8_0Fast, q8::stage_async, q8::WBlock, q8::XBlock;

// ---- activation quantization ----

// One warp per 256 values of one token; lane l quantizes values 8l .. 8l+7, so the four
// lanes 4k .. 4k+3 form block k and reduce its amax / sums with two shuffles.
__global__ void quantize_q8_kernel(const float* __restrict__ x, uint64_t x_stride, uint32_t cols, uint32_t n_tok,
                                   uint8_t* __restrict__ xq, uint64_t tok_bytes, ActRows rs) {
    dev::pdl_wait_and_release();
    const uint32_t lane = threadIdx.x % 32;
    const uint64_t warp_id = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
    const uint32_t groups = cols / 256;
    if (warp_id >= uint64_t{groups} * n_tok) return;  // whole warps only
    const auto t = static_cast<uint32_t>(warp_id / groups), g = static_cast<uint32_t>(warp_id % groups);
    if (!dev::act_row_live(rs, t)) return;
    float v[8];
    dev::load_act8(x, x_stride, rs, t, uint64_t{g} * 256 + 8 * lane, v);
    float amax = 0.f;
#pragma unroll
    for (float f : v) amax = fmaxf(amax, fabsf(f));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
    const float d = amax / 127.f;
    const float id = d > 0.f ? 1.f / d : 0.f;
    uint32_t packed[2] = {0, 0};
    int sum = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int q = max(-127, min(127, __float2int_rn(v[i] * id)));
        sum += q;
        packed[i / 4] |= (static_cast<uint32_t>(q) & 0xff) << (8 * (i % 4));
    }
    uint8_t* tok = xq + t * tok_bytes;
    *reinterpret_cast<uint2*>(tok + uint64_t{g} * 256 + 8 * lane) = make_uint2(packed[0], packed[1]);
    const int sum16 = sum + __shfl_xor_sync(0xffffffffu, sum, 1);      // lanes 4k, 4k+1: first half
    const int sum_hi = __shfl_down_sync(0xffffffffu, sum16, 2);        // lane 4k: second half
    if (lane % 4 == 0) {
        const auto packed_sums = (static_cast<uint32_t>(sum16) & 0xffff) | (static_cast<uint32_t>(sum_hi) << 16);
        const auto meta = make_int2(__float_as_int(d), static_cast<int>(packed_sums));
        *reinterpret_cast<int2*>(tok + cols + (uint64_t{g} * 8 + lane / 4) * kBlockMetaBytes) = meta;
    }
}

struct Shape {  // one launch's geometry
    const uint8_t* w;
    uint64_t row_bytes;
    uint32_t rows, n_groups, n_chunks, n_rowgroups;  // a row group is the R rows of one warp item
    bool wide;
    const uint32_t* iq2;  // q8_iq2_selectors() (IQ2_XXS only)
    const uint8_t* xq;
    uint64_t tok_bytes;
    uint32_t cols;
    float* y;
    uint64_t y_stride;
};

// Persistent warps: warp k of the grid takes row groups k, k + n_warps, ..., each in
// chunks of kChunkGroups groups, and keeps the next chunk's copy in flight (second
// shared buffer) while it computes the current one. (The first version staged and then
// computed, so a warp had loads in flight only half the time: 47 % of the copy
// bandwidth for IQ2_XXS, 68 % for Q2_K, whose chunks are the smallest.)
template <class F, int NT, int R>
__global__ void __launch_bounds__(kWarps * 32) q8_matmul_kernel(const Shape sh) {
    dev::pdl_wait_and_release();
    static_assert(F::kChunkGroups % 4 == 0 && F::kChunkGroups % F::kUnit == 0 && F::kUnit * F::kGroupBytes % 16 == 0);
    // +16: Q8_0's unaligned blocks read one word past their end
    __shared__ __align__(16) uint8_t smem[kWarps][2][R][kChunkBytes<F> + 16];
    constexpr bool kIq2 = std::is_same_v<F, IQ2XXSFast>;
    __shared__ uint32_t s_grid[kIq2 ? 256 : 1];
    __shared__ uint32_t s_sign[kIq2 ? 128 : 1];
    if constexpr (kIq2) {  // before any warp returns: every thread reaches the barrier
        q8::load_iq2_selectors(sh.iq2, s_grid, s_sign);
        __syncthreads();
    }
    const Iq2Tables tab{s_grid, s_sign};
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint32_t n_warps = gridDim.x * kWarps;
    uint32_t rg = blockIdx.x * kWarps + warp;
    if (rg >= sh.n_rowgroups) return;
    const int blk = static_cast<int>(lane % 8);

    const auto issue = [&](uint32_t group_row, uint32_t chunk, int buf) {
        const uint32_t row0 = group_row * R, g0 = chunk * F::kChunkGroups;
        const uint32_t bytes = min(static_cast<uint32_t>(F::kChunkGroups), sh.n_groups - g0) * F::kGroupBytes;
#pragma unroll
        for (int r = 0; r < R; ++r)
            if (row0 + r < sh.rows)
                stage_async(smem[warp][buf][r], sh.w + (row0 + r) * sh.row_bytes + uint64_t{g0} * F::kGroupBytes,
                            bytes, sh.wide, lane);
        __pipeline_commit();
    };

    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;
    uint32_t chunk = 0;
    int buf = 0;
    issue(rg, 0, 0);
    for (;;) {
        uint32_t next_rg = rg, next_chunk = chunk + 1;
        if (next_chunk == sh.n_chunks) next_chunk = 0, next_rg += n_warps;
        const bool has_next = next_rg < sh.n_rowgroups;
        if (has_next) {
            issue(next_rg, next_chunk, buf ^ 1);  // that buffer was released by the last __syncwarp
            __pipeline_wait_prior(1);
        } else {
            __pipeline_wait_prior(0);
        }
        __syncwarp();
        const uint32_t row0 = rg * R, g0 = chunk * F::kChunkGroups;
        const uint32_t n_rows = min(static_cast<uint32_t>(R), sh.rows - row0);
        const uint32_t ng = min(static_cast<uint32_t>(F::kChunkGroups), sh.n_groups - g0);
#pragma unroll
        for (uint32_t p = 0; p < F::kChunkGroups; p += 4) {
            const uint32_t gi = p + lane / 8;
            if (gi >= ng) continue;
            // each row's block decoded once, then dotted with every token's block
            WBlock wb[R];
#pragma unroll
            for (int r = 0; r < R; ++r)
                if (static_cast<uint32_t>(r) < n_rows) F::decode(smem[warp][buf][r] + gi * F::kGroupBytes, blk, wb[r], tab);
            const uint64_t block = uint64_t{g0 + gi} * 8 + blk;
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                const XBlock xb = load_xblock(sh.xq + t * sh.tok_bytes, sh.cols, block);
#pragma unroll
                for (int r = 0; r < R; ++r)
                    if (static_cast<uint32_t>(r) < n_rows) acc[r][t] += F::dot(wb[r], xb);
            }
        }
        __syncwarp();  // every lane is done with this buffer before it is refilled
        if (chunk + 1 == sh.n_chunks) {  // row group complete: reduce across the warp
#pragma unroll
            for (int r = 0; r < R; ++r) {
#pragma unroll
                for (int t = 0; t < NT; ++t) {
                    const float a = dev::warp_sum(acc[r][t]);
                    if (lane == 0 && static_cast<uint32_t>(r) < n_rows) sh.y[t * sh.y_stride + row0 + r] = a;
                    acc[r][t] = 0.f;
                }
            }
        }
        if (!has_next) break;
        rg = next_rg, chunk = next_chunk, buf ^= 1;
    }
}

// Blocks that fit on the device at once: the persistent grid never exceeds it.
template <class F, int NT, int R>
unsigned resident_blocks() {
    static const unsigned n = device_resident_blocks(q8_matmul_kernel<F, NT, R>, kWarps * 32);
    return n;
}

template <class F, int NT>
void launch_nt(const uint8_t* w, uint64_t rows, uint64_t cols, const uint8_t* xq, float* y, uint64_t y_stride,
               cudaStream_t s) {
    constexpr int R = 4;  // rows per warp item: one activation load serves 4 rows
    const uint64_t n_groups = cols / 256;
    Shape sh{};
    sh.w = w;
    sh.row_bytes = n_groups * F::kGroupBytes;
    sh.rows = static_cast<uint32_t>(rows);
    sh.n_groups = static_cast<uint32_t>(n_groups);
    sh.n_chunks = static_cast<uint32_t>((n_groups + F::kChunkGroups - 1) / F::kChunkGroups);
    sh.n_rowgroups = static_cast<uint32_t>((rows + R - 1) / R);
    sh.wide = sh.row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
    sh.iq2 = std::is_same_v<F, IQ2XXSFast> ? q8_iq2_selectors() : nullptr;
    sh.xq = xq;
    sh.tok_bytes = q8_token_bytes(cols);
    sh.cols = static_cast<uint32_t>(cols);
    sh.y = y;
    sh.y_stride = y_stride;
    const uint64_t wanted = (sh.n_rowgroups + kWarps - 1) / kWarps;
    const auto grid = static_cast<unsigned>(std::min<uint64_t>(wanted, resident_blocks<F, NT, R>()));
    launch_pdl("launch of q8_matmul_kernel", q8_matmul_kernel<F, NT, R>, dim3(grid), dim3(kWarps * 32), 0, s, sh);
}

template <class F>
void launch(const void* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok, float* y, uint64_t y_stride,
            cudaStream_t s) {
    const uint64_t tok_bytes = q8_token_bytes(cols);
    const auto* wb = static_cast<const uint8_t*>(w);
    for (uint32_t t0 = 0; t0 < n_tok;) {  // 8, then 4, then the 1-3 left
        const uint32_t left = n_tok - t0;
        const uint32_t nt = left >= 8 ? 8 : left >= 4 ? 4 : left;
        const uint8_t* xt = static_cast<const uint8_t*>(xq) + t0 * tok_bytes;
        float* yt = y + t0 * y_stride;
        switch (nt) {
            case 1: launch_nt<F, 1>(wb, rows, cols, xt, yt, y_stride, s); break;
            case 2: launch_nt<F, 2>(wb, rows, cols, xt, yt, y_stride, s); break;
            case 3: launch_nt<F, 3>(wb, rows, cols, xt, yt, y_stride, s); break;
            case 4: launch_nt<F, 4>(wb, rows, cols, xt, yt, y_stride, s); break;
            default: launch_nt<F, kMaxTok>(wb, rows, cols, xt, yt, y_stride, s); break;
        }
        t0 += nt;
    }
}

void check_cols(uint64_t cols) {
    if (cols == 0 || cols % 256 != 0) fail("cuda matmul_q8: ", cols, " columns is not a positive multiple of 256");
    if (cols > (uint64_t{1} << 30)) fail("cuda matmul_q8: ", cols, " columns is too many");
}

void check_rows(uint64_t rows) {
    if (rows >= (uint64_t{1} << 32) - 8) fail("cuda matmul_q8: ", rows, " rows is too many");
}

}  // namespace

// Selector tables for IQ2XXSFast, derived from the format's own tables. Never freed:
// kernels of any later launch may read them.
const uint32_t* q8_iq2_selectors() {
    static const uint32_t* table = [] {
        uint32_t sel[q8::kIq2SelWords];
        uint32_t* grid_sel = sel;
        uint32_t* sign_sel = sel + 256;
        for (int e = 0; e < 256; ++e) {
            grid_sel[e] = 0;
            for (int i = 0; i < 8; ++i) {
                const auto mag = static_cast<uint32_t>((quant::kIq2Grid[e] >> (8 * i)) & 0xff);
                const uint32_t level = mag == 8 ? 0 : mag == 25 ? 1 : 2;
                if (mag != 8 && mag != 25 && mag != 43) fail("cuda matmul_q8: unexpected IQ2_XXS grid magnitude ", mag);
                grid_sel[e] |= level << (4 * i);
            }
        }
        for (int s = 0; s < 128; ++s) {
            sign_sel[s] = 0;
            for (int i = 0; i < 8; ++i)
                if ((quant::kIq2Signs[s] >> i) & 1) sign_sel[s] |= 4u << (4 * i);
        }
        uint32_t* dev = nullptr;
        DS4_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dev), sizeof(sel)));
        DS4_CUDA_CHECK(cudaMemcpy(dev, sel, sizeof(sel), cudaMemcpyHostToDevice));
        return dev;
    }();
    return table;
}

uint64_t q8_token_bytes(uint64_t cols) { return cols + cols / 32 * kBlockMetaBytes; }

void quantize_q8_activations(const float* x, uint64_t x_stride, uint64_t cols, uint32_t n_tok, void* xq,
                             cudaStream_t s, const ActRows& rows) {
    check_cols(cols);
    if (n_tok == 0) return;
    if (reinterpret_cast<uintptr_t>(x) % 16 != 0 || x_stride % 4 != 0)
        fail("cuda quantize_q8_activations: activations must be 16-byte aligned with a stride multiple of 4");
    if (reinterpret_cast<uintptr_t>(xq) % 16 != 0) fail("cuda quantize_q8_activations: xq is not 16-byte aligned");
    const uint64_t warps = cols / 256 * n_tok;
    const auto grid = static_cast<unsigned>((warps + kWarps - 1) / kWarps);
    launch_pdl("launch of quantize_q8_kernel", quantize_q8_kernel, dim3(grid), dim3(kWarps * 32), 0, s, x, x_stride,
               static_cast<uint32_t>(cols), n_tok, static_cast<uint8_t*>(xq), q8_token_bytes(cols), rows);
}

bool matmul_q8_supported(GgmlType t) {
    switch (t) {
        case GgmlType::Q8_0:
        case GgmlType::Q2_K:
        case GgmlType::Q4_K:
        case GgmlType::IQ2_XXS: return true;
        default: return false;
    }
}

void matmul_q8(GgmlType type, const void* w, uint64_t rows, uint64_t cols, const void* xq, uint32_t n_tok, float* y,
               uint64_t y_stride, cudaStream_t s) {
    if (!matmul_q8_supported(type)) fail("cuda matmul_q8: weight type ", ggml_type_name(type), " is not supported");
    check_cols(cols);
    if (reinterpret_cast<uintptr_t>(w) % 4 != 0) fail("cuda matmul_q8: weight pointer is not 4-byte aligned");
    if (reinterpret_cast<uintptr_t>(xq) % 16 != 0) fail("cuda matmul_q8: xq is not 16-byte aligned");
    if (rows == 0 || n_tok == 0) return;
    check_rows(rows);
    switch (type) {
        case GgmlType::Q8_0: launch<Q8_0Fast>(w, rows, cols, xq, n_tok, y, y_stride, s); break;
        case GgmlType::Q2_K: launch<Q2KFast>(w, rows, cols, xq, n_tok, y, y_stride, s); break;
        case GgmlType::Q4_K: launch<Q4KFast>(w, rows, cols, xq, n_tok, y, y_stride, s); break;
        default:
            launch<IQ2XXSFast>(w, rows, cols, xq, n_tok, y, y_stride, s);
            break;
    }
}

void matmul(GgmlType type, const void* w, uint64_t rows, uint64_t cols, const float* x, uint64_t x_stride, float* y,
            uint64_t y_stride, uint32_t n_tok, cudaStream_t s, MatmulPath path, void* xq_scratch) {
    if (path == MatmulPath::Exact || !matmul_q8_supported(type)) {
        matmul(type, w, rows, cols, x, x_stride, y, y_stride, n_tok, s);
        return;
    }
    if (xq_scratch == nullptr) fail("cuda matmul: the fast path needs an activation scratch buffer");
    quantize_q8_activations(x, x_stride, cols, n_tok, xq_scratch, s);
    matmul_q8(type, w, rows, cols, xq_scratch, n_tok, y, y_stride, s);
}

}  // namespace ds4::cuda
