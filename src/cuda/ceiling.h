// The GPU memory ceiling for ds4-bench --cuda: a large device-to-device copy on the
// engine's device, measured in the same run as the model. Plain C++ (no CUDA headers), so
// host-only tools include it.
#pragma once

#include <cstdint>
#include <string>

namespace ds4::cuda {

struct CopyCeiling {
    double copy_gbs = 0;  // (read + write) bytes / s of a D2D cudaMemcpy, GB/s (1e9 bytes)
    uint64_t bytes = 0;   // bytes copied per pass (each of source and destination)
    int reps = 0;         // timed passes; the median is reported
    std::string device;   // the card's name (cudaGetDeviceProperties)
};

// Copies `bytes` from one fresh device buffer to another `reps` times (after one untimed
// warm-up), timed with CUDA events; the median pass counts 2 × bytes (read and write), the
// convention of bench/cuda's ceiling. The two buffers are freed before returning, so the
// model's own allocations are not squeezed. Throws ds4::Error when no device is usable or
// the buffers do not fit.
CopyCeiling measure_copy_ceiling(uint64_t bytes, int reps = 9);

// The card's name and memory now (cudaMemGetInfo), for reports made by host-only code
// (the engine's memory estimate).
struct DeviceMemory {
    std::string name;
    uint64_t free_bytes = 0, total_bytes = 0;
};
DeviceMemory device_memory();

struct GemmCeiling {
    double gflops = 0;    // 2·n³ / s of the median pass; 0 when not measured
    uint32_t n = 0;       // square size
    int reps = 0;         // timed passes
    std::string library;  // the cuBLAS file that ran it
    std::string why_not;  // when gflops is 0: what was missing
};

// The dense GEMM peak: a bf16 n×n×n product with f32 accumulation through cuBLAS
// (cublasGemmEx, tensor cores), median of `reps` timed passes after a warm-up, on random
// data (zeros run faster than real data on these cards). cuBLAS ships with the CUDA
// toolkit but is loaded at run time (dlopen of libcublas.so.13, or the file named by
// DS4_CUBLAS), so the statically linked bench binaries need no extra library to start:
// when it cannot be loaded, gflops is 0 and why_not says so. Throws ds4::Error on a CUDA
// or cuBLAS failure once loaded.
GemmCeiling measure_gemm_ceiling(uint32_t n = 8192, int reps = 5);

}  // namespace ds4::cuda
