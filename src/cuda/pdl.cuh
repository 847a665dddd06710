// Programmatic dependent launch (Hopper, issue 8): a kernel launched with launch_pdl may
// be scheduled while the kernel before it on the stream is still finishing, so its launch
// and block placement overlap that kernel's tail instead of following it (~1 µs per
// dependent graph node at batch-1 decode). Correctness rests on one rule: a kernel
// launched through launch_pdl calls pdl_wait_and_release() before it touches global
// memory, with one exception: the model's weights, constant from the end of the upload
// (Forward's constructor waits for its stream), may be read before, so a matvec placed
// early loads its first rows while the kernel before it finishes. griddepcontrol.wait
// returns only once the previous grid has completed and its writes are visible, so that
// grid, and transitively everything before it, is done: the kernel sees exactly what a
// plain launch would (the same bits). The release right after lets the next launch_pdl
// kernel be scheduled early too. Stream capture takes these launches into the decode
// graphs (graph == eager bitwise: tests/cuda). DS4_CUDA_PDL=0, or a GPU below sm_90,
// launches plainly (the wait / release then do nothing).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "cuda/check.h"
#include "cuda/pdl.h"

namespace ds4::cuda {

template <class... Params, class... Args>
void launch_pdl(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                Args&&... args) {
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = &attr;
    cfg.numAttrs = pdl_enabled() ? 1 : 0;
    check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), name, __FILE__, __LINE__);
}

namespace dev {

// First thing in every kernel launched through launch_pdl (see above).
__device__ __forceinline__ void pdl_wait_and_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

}  // namespace dev
}  // namespace ds4::cuda
