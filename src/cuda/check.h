// CUDA error checking: every runtime call goes through DS4_CUDA_CHECK, which turns a
// failure into a ds4::Error naming the call, the source line and CUDA's own message,
// so a failed allocation or launch surfaces as a normal engine error, not an abort.
#pragma once

#include <cuda_runtime.h>

#include "ds4/error.h"

namespace ds4::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

inline void check(cudaError_t err, const char* call, const char* file, int line) {
    if (err != cudaSuccess) throw_cuda_error(err, call, file, line);
}

}  // namespace ds4::cuda

#define DS4_CUDA_CHECK(call) ::ds4::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: configuration errors show up only through cudaGetLastError.
#define DS4_CUDA_CHECK_LAUNCH(name) \
    ::ds4::cuda::check(cudaGetLastError(), "launch of " name, __FILE__, __LINE__)
