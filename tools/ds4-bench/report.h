// ds4-bench output: the frontier schedule, the CSV (formats.md §8.5 plus ds4-bench's own
// columns) and a dependency-free SVG chart of prefill and generation t/s vs context.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ds4::bench {

// Frontiers: ctx_start, then +step_incr (step_mul == 1) or ceil(prev × step_mul), capped
// at ctx_max (the last frontier is ctx_max itself). Throws ds4::Error on a schedule that
// cannot advance (step_incr 0 with step_mul 1, step_mul < 1, ctx_start 0 or > ctx_max).
std::vector<uint64_t> frontiers(uint64_t ctx_start, uint64_t ctx_max, uint64_t step_incr,
                                double step_mul);

struct Row {
    uint64_t ctx_tokens = 0;
    uint64_t prefill_tokens = 0;
    double prefill_tps = 0;
    uint64_t gen_tokens = 0;     // per sequence
    double gen_tps = 0;          // aggregate over the batch
    uint64_t kvcache_bytes = 0;  // session payload of one sequence at the frontier
    uint32_t batch = 1;
    double seq_gen_tps = 0;              // per sequence (gen_tps / batch: they decode in lockstep)
    uint64_t weight_bytes_per_step = 0;  // weights one decode step reads (see main.cpp)
    double gen_gbs = 0;                  // weight_bytes_per_step × steps/s, GB/s
    double bw_ratio = 0;                 // gen_gbs ÷ measured read bandwidth
    uint64_t flops_per_token = 0;        // weight FLOPs of one prefill token (see main.cpp)
    double prefill_gflops = 0;           // flops_per_token × prefill_tps, GFLOP/s
    double gemm_ratio = 0;               // prefill_gflops ÷ measured GEMM rate
};

// The exact CSV header line (no newline): ds4's six columns first, then ds4-bench's.
std::string csv_header();
std::string csv_row(const Row& r);

// `metadata` lines are written as SVG <desc>-free subtitle text; rows in frontier order.
std::string svg_chart(std::span<const Row> rows, const std::string& title,
                      const std::string& subtitle);

}  // namespace ds4::bench
