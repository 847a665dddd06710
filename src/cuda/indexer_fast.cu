// The indexer's per-token top k at long context (issue 8; indexer_fast.h): the kernels
// around indexer_select.cuh's device code, and the switch.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>

#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/pdl.cuh"
#include "cuda/env_switch.h"
#include "cuda/indexer_fast.h"
#include "cuda/indexer_select.cuh"

namespace ds4::cuda {
namespace {

using namespace ixf;

template <uint32_t G>
__global__ void __launch_bounds__(kScoreWarps * 32)
    scores_kernel(const float* q, const float* w, const float* rows, const uint32_t* n_rows,
                  uint32_t k_top, uint32_t d, uint32_t n_heads, float* scores) {
    dev::pdl_wait_and_release();
    extern __shared__ float qs[];
    const uint32_t n = *n_rows;
    if (n <= k_top || blockIdx.x * kScoreWarps >= n) return;  // uniform over the block
    score_rows<G>(qs, q, w, rows, n, d, n_heads, scores, blockIdx.x, gridDim.x);
}

__global__ void __launch_bounds__(kSelectThreads)
    select_kernel(const float* scores, const uint32_t* n_rows, uint32_t k, uint32_t* sel) {
    dev::pdl_wait_and_release();
    __shared__ SelectShared sh;
    const uint32_t n = *n_rows;
    if (n > k) select_topk(sh, scores, n, k, sel);
}

bool g_fast = env_switch_on("DS4_CUDA_INDEXER_FAST");

}  // namespace

unsigned indexer_score_blocks(uint32_t max_rows, uint32_t tokens) {
    // blocks of all tokens: enough for every SM a few times over; more would reload q for
    // few rows each
    const uint64_t want = (uint64_t{max_rows} + kScoreWarps - 1) / kScoreWarps;
    const uint64_t fill =
        (uint64_t{4} * device_sm_count() + tokens - 1) / std::max(tokens, 1u);
    return static_cast<unsigned>(std::max<uint64_t>(std::min(want, fill), 1));
}
size_t indexer_score_bytes(uint32_t d, uint32_t n_heads) {
    return uint64_t{n_heads} * d * sizeof(float);
}

void set_indexer_fast(bool on) {
    g_fast = on;
}
bool indexer_fast() {
    return g_fast;
}

bool indexer_fast_applies(uint32_t max_rows, uint32_t d, uint32_t n_heads, uint32_t k) {
    return g_fast && n_heads > 0 && uint64_t{n_heads} * d * sizeof(float) <= 48 * 1024 && k >= 1 &&
           k <= kIndexerFastMaxK && max_rows <= (1u << 31);
}

void indexer_topk_fast(const float* q, const float* w, const float* rows, const uint32_t* n_rows,
                       uint32_t max_rows, uint32_t d, uint32_t n_heads, uint32_t k, float* scores,
                       uint32_t* sel, cudaStream_t s) {
    with_head_group(n_heads, [&](auto g) {
        launch_pdl("launch of scores_kernel", scores_kernel<g()>, dim3(indexer_score_blocks(max_rows)),
                   dim3(kScoreWarps * 32), indexer_score_bytes(d, n_heads), s, q, w, rows, n_rows, k, d, n_heads,
                   scores);
    });
    launch_pdl("launch of select_kernel", select_kernel, dim3(1), dim3(kSelectThreads), 0, s, scores, n_rows, k, sel);
}

}  // namespace ds4::cuda
