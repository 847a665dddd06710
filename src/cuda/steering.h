// Directional steering on the GPU (cpu/steering.h has the formula and the file format):
// after a layer's attention output y (after the output projection) and after its FFN
// output (routed + shared experts), before the HC post step,
//
//     y ← y − scale · d · (d·y)
//
// with the layer's direction d. cuda::Forward holds one DeviceSteering and calls apply()
// at those two sites (cuda/forward.cpp), exactly where cpu::CpuForward calls
// cpu::Steering::apply.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "cpu/steering.h"
#include "cuda/device.h"

namespace ds4::cuda {

// y[r] ← y[r] − scale·d·(d·y[r]) for `rows` rows of n values (device pointers). The dot
// product is an f32 sum (tree order, so it agrees with cpu::steer_rows to rounding); the
// update is an unfused f32 multiply then subtract, as on the CPU.
void steer_rows(float* y, uint64_t rows, const float* d, uint32_t n, float scale, cudaStream_t s);

class DeviceSteering {
  public:
    // Uploads the direction table; scales as resolved by cpu::resolve_steering_scales.
    DeviceSteering(const cpu::SteeringDirections& dirs, float attn_scale, float ffn_scale);

    bool enabled(cpu::SteeringSite site) const { return scale(site) != 0.0f; }
    float scale(cpu::SteeringSite site) const {
        return site == cpu::SteeringSite::attn ? attn_ : ffn_;
    }

    // Steers the chunk's sublayer output y (rows × n_embd, device) of layer il; a no-op
    // when the site's scale is 0 (bit-identical to no steering). Throws when the table
    // does not match (layer il of width n_embd).
    void apply(uint32_t il, cpu::SteeringSite site, float* y, uint32_t rows, uint32_t n_embd,
               cudaStream_t s) const;

  private:
    DeviceBuffer<float> dirs_;
    uint32_t n_layer_ = 0, n_embd_ = 0;
    float attn_ = 0.0f, ffn_ = 0.0f;
};

}  // namespace ds4::cuda
