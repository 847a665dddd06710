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

// A cache-blocked f32 GEMM (n × n × n, compiler-vectorized inner loop) split by rows over
// `threads`; best of 3. A portable kernel, so this is a lower bound on the hardware peak,
// but the same code on every machine.
double gemm_gflops(unsigned threads, uint32_t n = 512);

Ceilings measure_ceilings(unsigned threads, uint64_t read_bytes);

}  // namespace ds4::bench
