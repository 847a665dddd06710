// The real timeline of a few decode steps (issue 8): every kernel's start and end as the
// GPU ran them, graphs, programmatic dependent launches and the second stream included,
// through CUPTI's activity records (libcupti from the CUDA toolkit, loaded at run time:
// $DS4_CUPTI, else libcupti.so.13 / libcupti.so). ncu serializes launches, so it cannot
// show what a kernel costs the step once its neighbours overlap it; here each kernel's
// share of the step is how far it moves the GPU's last end ("extends"), and the time the
// GPU sat idle (the host between steps) is its own figure. Used by ds4-bench and
// ds4-bench-cuda-forward (DS4_TRACE_DECODE).
#pragma once

#include <cstdio>
#include <memory>
#include <string>

namespace ds4::cuda {

class KernelTrace {
  public:
    // Loads CUPTI; throws ds4::Error naming what is missing.
    KernelTrace();
    ~KernelTrace();
    KernelTrace(const KernelTrace&) = delete;
    KernelTrace& operator=(const KernelTrace&) = delete;

    void start();  // records kernels from here
    void stop();   // until here (after the work is synchronized)
    // Per kernel in start order (stream, start, end, extends, duration, name), the step's
    // wall time split into kernels and idle, then per kernel name: launches, sum of
    // extends, sum of durations; times in µs from the first start. `steps`: how many
    // decode steps were traced (per-step averages).
    void print(std::FILE* out, unsigned steps) const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace ds4::cuda
