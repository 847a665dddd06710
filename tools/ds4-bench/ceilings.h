// Machine ceilings for ds4-bench, measured in the same run as the model: the read
// bandwidth every decoded token is bounded by, and a dense GEMM rate for prefill.
#pragma once

#include <cstdint>

namespace ds4::bench {

struct Ceilings {
    double read_gbs = 0;      // STREAM-style multi-threaded read, GB/s (1e9 bytes)
    double gemm_gflops = 0;   // f32 dense GEMM, GFLOP/s
    uint64_t read_bytes = 0;  // buffer the bandwidth was measured over
    unsigned threads = 0;
};

// Every thread sums its share of a `bytes` buffer with 64-bit adds (vectorizable,
// load-bound); best of `reps` passes, wall time.
double read_bandwidth_gbs(unsigned threads, uint64_t bytes, int reps = 5);

// An f32 GEMM (n × n × n) split by rows over `threads`; best of 3. On x86-64 with AVX2 +
// FMA a register-tiled FMA kernel (n rounded down to a multiple of 64), near the core's
// f32 peak; elsewhere a portable cache-blocked loop (a lower bound on the hardware peak).
double gemm_gflops(unsigned threads, uint32_t n = 512);

// Which kernel gemm_gflops uses on this machine (for the report).
const char* gemm_kernel_name();

Ceilings measure_ceilings(unsigned threads, uint64_t read_bytes);

}  // namespace ds4::bench
