// pdl.cuh's switch: DS4_CUDA_PDL=0 or a GPU below sm_90 turns programmatic launches off.
#include <atomic>

#include <cuda_runtime.h>

#include "cuda/device.h"
#include "cuda/pdl.h"
#include "cuda/env_switch.h"

namespace ds4::cuda {
namespace {

std::atomic<int> g_pdl{-1};  // -1: not decided yet

bool pdl_from_env_and_device() { return env_switch_on("DS4_CUDA_PDL") && device_cc_major_or_zero() >= 9; }

}  // namespace

bool pdl_enabled() {
    int v = g_pdl.load(std::memory_order_relaxed);
    if (v < 0) {
        v = pdl_from_env_and_device() ? 1 : 0;
        g_pdl.store(v, std::memory_order_relaxed);
    }
    return v != 0;
}

void set_pdl_enabled(bool on) { g_pdl.store(on && pdl_from_env_and_device() ? 1 : 0, std::memory_order_relaxed); }

}  // namespace ds4::cuda
