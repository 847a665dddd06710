// pdl.cuh's switch: DS4_CUDA_PDL=0 or a GPU below sm_90 turns programmatic launches off.
#include <cuda_runtime.h>

#include "cuda/device.h"
#include "cuda/pdl.h"

namespace ds4::cuda {
namespace {

DeviceSwitch g_pdl("DS4_CUDA_PDL", 9);

}  // namespace

bool pdl_enabled() { return g_pdl.on(); }
void set_pdl_enabled(bool on) { g_pdl.set(on); }

}  // namespace ds4::cuda
