// The comparison rule of tests/data/golden/README.md: per position t,
// d_t = max_v |ours[t, v] − ref[t, v]| over the stored values; bounds on the median, 99th
// percentile and maximum of d_t; argmax identical wherever the reference's top-1/top-2
// margin exceeds 1e-2.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "golden_model.h"

namespace ds4::cpu::test {

struct LogitStats {
    uint32_t positions = 0;
    double median = 0, p99 = 0, max = 0;
    uint32_t worst_position = 0;
    uint32_t argmax_checked = 0;    // positions with a reference margin > 1e-2
    uint32_t argmax_mismatch = 0;   // ... whose argmax differs
    uint32_t argmax_agree_all = 0;  // agreement over every position, for the report
};

// ours: rows t0..t1-1 of T × V logits.
LogitStats compare_logits(const GoldenLogits& ref, const std::vector<float>& ours, uint32_t t0, uint32_t t1);

// Linear-interpolated percentile (numpy's default) of unsorted values.
double percentile(std::vector<double> v, double pct);

std::string describe(const std::string& what, const LogitStats& s);

}  // namespace ds4::cpu::test
