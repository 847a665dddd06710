// The indexer's scores of a batched pass on the tensor cores (attention_batch.h, issue 8):
// score(t, c) = Σ_h w_h·relu(q_h·k_c) with the head dots as bf16 mma m16n8k16 (f32 sums)
// instead of f32 fmaf chains (indexer_select.cuh's score_rows: 2.7-6.3 ms of a 2048-token
// pass of a ratio-4 layer at 2-8k context on an H200). q and the rows are FP4 values
// times a power of two (rope_hadamard_fp4, the indexer compressor), exact in bf16, so the
// products are exact; only the order of the f32 sums differs (within a 32-value block
// they are exact too), and the heads are added as a tree instead of in order: scores
// within a few ulps, so near ties of the top k may pick other rows.
#include <cuda_bf16.h>

#include "cuda/attention_batch.h"
#include "cuda/attention_rows.cuh"
#include "cuda/env_switch.h"
#include "cuda/matmul_f16_mma.h"
#include "cuda/mma_s8.cuh"
#include "cuda/pdl.cuh"

namespace ds4::cuda {
namespace {

constexpr uint32_t kWarps = 4;        // warp w: heads 16w .. 16w+15 (64 at most)
constexpr uint32_t kBlockRows = 128;  // rows of one block: 16 n-tiles of 8

uint32_t g_min_tokens = env_switch_on("DS4_CUDA_INDEXER_MMA") ? kF16MmaMinTokens : kIndexerMmaOff;

__device__ __forceinline__ uint32_t bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
}

// grid (row blocks, tokens), kWarps warps. A 16-wide k step hands lane (g, c) the k values
// 2c, 2c+1, 2c+8, 2c+9, mapped to the step's values 4c .. 4c+3 (one 16-byte load; the dot
// is the same sum over any order of k). A warp's S = Q·Kᵀ tile is 16 heads × 8 rows; its
// lanes add w_h·relu over their two heads, then over g (the 16 heads), then the warps'
// sums are added in warp order.
template <uint32_t KS>
__global__ void __launch_bounds__(kWarps * 32)
    batch_index_scores_mma_kernel(BatchPass p, BatchIndexer ix, uint32_t t0) {
    dev::pdl_wait_and_release();
    __shared__ float part[kWarps][kBlockRows];
    const uint32_t t = t0 + blockIdx.y, r0 = blockIdx.x * kBlockRows;
    const TokSeg ts = p.tok[t];
    const uint32_t n = attn::index_rows(p, ix.ratio, ts, t);
    if (n <= ix.k || r0 >= n) return;  // uniform over the block
    const float* rows = p.seg[ts.seg].index.rows;
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
    const uint32_t d = KS * 16, ha = warp * 16 + g, hb = ha + 8;
    const float* q = ix.q + uint64_t{t} * ix.n_heads * d;
    const float* w = ix.w + uint64_t{t} * ix.n_heads;
    uint32_t a[KS][4];
#pragma unroll
    for (uint32_t ks = 0; ks < KS; ++ks) {
        const float4 x = ha < ix.n_heads
                             ? __ldg(reinterpret_cast<const float4*>(q + ha * d + ks * 16 + 4 * c))
                             : make_float4(0, 0, 0, 0);
        const float4 y = hb < ix.n_heads
                             ? __ldg(reinterpret_cast<const float4*>(q + hb * d + ks * 16 + 4 * c))
                             : make_float4(0, 0, 0, 0);
        a[ks][0] = bf16x2(x.x, x.y), a[ks][1] = bf16x2(y.x, y.y);
        a[ks][2] = bf16x2(x.z, x.w), a[ks][3] = bf16x2(y.z, y.w);
    }
    const float wa = ha < ix.n_heads ? w[ha] : 0.0f, wb = hb < ix.n_heads ? w[hb] : 0.0f;
    const bool active = warp * 16 < ix.n_heads;
    const uint32_t rows_here = min(kBlockRows, n - r0);
    for (uint32_t nt = 0; nt * 8 < rows_here; ++nt) {
        float s[2] = {0.0f, 0.0f};
        if (active) {
            const uint32_t row = r0 + nt * 8 + g;
            const float* k = rows + uint64_t{row < n ? row : r0} * d + 4 * c;
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (uint32_t ks = 0; ks < KS; ++ks) {
                const float4 x = __ldg(reinterpret_cast<const float4*>(k + ks * 16));
                mma::mma_bf16_acc(a[ks][0], a[ks][1], a[ks][2], a[ks][3], bf16x2(x.x, x.y),
                                  bf16x2(x.z, x.w), acc);
            }
            // acc: heads g (0, 1) and g+8 (2, 3) of rows 2c, 2c+1
            s[0] =
                __fadd_rn(__fmul_rn(fmaxf(acc[0], 0.0f), wa), __fmul_rn(fmaxf(acc[2], 0.0f), wb));
            s[1] =
                __fadd_rn(__fmul_rn(fmaxf(acc[1], 0.0f), wa), __fmul_rn(fmaxf(acc[3], 0.0f), wb));
#pragma unroll
            for (uint32_t o = 4; o < 32; o *= 2) {
                s[0] += __shfl_xor_sync(0xffffffffu, s[0], o);
                s[1] += __shfl_xor_sync(0xffffffffu, s[1], o);
            }
        }
        if (g == 0) {
            part[warp][nt * 8 + 2 * c] = s[0];
            part[warp][nt * 8 + 2 * c + 1] = s[1];
        }
    }
    __syncthreads();
    float* out = ix.scores + uint64_t{blockIdx.y} * ix.score_stride + r0;
    for (uint32_t i = threadIdx.x; i < rows_here; i += kWarps * 32) {
        float v = part[0][i];
#pragma unroll
        for (uint32_t u = 1; u < kWarps; ++u) v += part[u][i];
        out[i] = v;
    }
}

template <uint32_t KS>
void launch(const BatchPass& p, const BatchIndexer& ix, uint32_t t0, uint32_t count,
            cudaStream_t s) {
    launch_pdl("launch of batch_index_scores_mma_kernel", batch_index_scores_mma_kernel<KS>,
               dim3((ix.max_rows + kBlockRows - 1) / kBlockRows, count), dim3(kWarps * 32), 0, s, p,
               ix, t0);
}

}  // namespace

void set_batch_indexer_mma(uint32_t min_tokens) {
    g_min_tokens = min_tokens;
}
uint32_t batch_indexer_mma() {
    return g_min_tokens;
}

bool batch_index_scores_mma(const BatchPass& p, const BatchIndexer& ix, uint32_t t0, uint32_t count,
                            cudaStream_t s) {
    if (p.n < g_min_tokens || ix.n_heads == 0 || ix.n_heads > kWarps * 16 || !mma::device_has_mma())
        return false;
    switch (ix.d) {
        case 32:
            launch<2>(p, ix, t0, count, s);
            return true;
        case 64:
            launch<4>(p, ix, t0, count, s);
            return true;
        case 128:
            launch<8>(p, ix, t0, count, s);
            return true;
        default:
            return false;
    }
}

}  // namespace ds4::cuda
