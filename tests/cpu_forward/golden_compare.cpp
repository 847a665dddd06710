#include "golden_compare.h"

#include <algorithm>
#include <cstdio>

#include "ds4/error.h"

namespace ds4::cpu::test {

double percentile(std::vector<double> v, double pct) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const double rank = pct / 100.0 * static_cast<double>(v.size() - 1);
    const auto lo = static_cast<size_t>(rank);
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

LogitStats compare_logits(const GoldenLogits& ref, const std::vector<float>& ours, uint32_t t0, uint32_t t1) {
    LogitStats s;
    std::vector<double> d;
    for (uint32_t t = t0; t < t1; ++t) {
        const float* row = ours.data() + uint64_t{t} * ref.V;
        const double dt = ref.max_abs_diff(t, row);
        d.push_back(dt);
        if (dt > s.max) {
            s.max = dt;
            s.worst_position = t;
        }
        const auto mine = static_cast<int32_t>(std::max_element(row, row + ref.V) - row);
        const bool same = mine == ref.argmax(t);
        s.argmax_agree_all += same ? 1 : 0;
        if (ref.margin(t) > 1e-2f) {
            ++s.argmax_checked;
            s.argmax_mismatch += same ? 0 : 1;
        }
    }
    s.positions = t1 - t0;
    s.median = percentile(d, 50);
    s.p99 = percentile(d, 99);
    return s;
}

std::string describe(const std::string& what, const LogitStats& s) {
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "%s: %u positions, d_t median %.3g  p99 %.3g  max %.3g (t=%u); argmax agrees at "
                  "%u/%u, mismatches where margin > 1e-2: %u of %u",
                  what.c_str(), s.positions, s.median, s.p99, s.max, s.worst_position, s.argmax_agree_all,
                  s.positions, s.argmax_mismatch, s.argmax_checked);
    return buf;
}

}  // namespace ds4::cpu::test
