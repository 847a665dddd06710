// Kernel of the MTP block's input combine (cuda/mtp.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ds4::cuda {

// x[s][k][d] = eproj[s][d] + hproj[s][k][d] for s < n, k < H, d < dim (the e_proj term
// broadcast over the H streams, added first as in cpu::MtpForward).
void mtp_combine(const float* eproj, const float* hproj, float* x, uint32_t n, uint32_t H,
                 uint32_t dim, cudaStream_t s);

}  // namespace ds4::cuda
