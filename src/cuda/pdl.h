// The switch of programmatic dependent launch (pdl.cuh): host side only.
#pragma once

namespace ds4::cuda {

// On unless DS4_CUDA_PDL=0, and only on sm_90 or newer (decided at first use).
bool pdl_enabled();
// Tests: on (still subject to the switch and the GPU) or off for the launches that follow.
void set_pdl_enabled(bool on);

}  // namespace ds4::cuda
