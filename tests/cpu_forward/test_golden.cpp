// The CPU forward pass against the official DeepSeek V4 reference logits
// (tests/data/golden/README.md, "How to compare"). MTP outputs are not checked here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>

#include "golden_compare.h"
#include "golden_runs.h"

namespace ds4::cpu::test {
namespace {

RunOptions with_observer(CpuForward::BlockObserver observer) {
    RunOptions o;
    o.observer = std::move(observer);
    return o;
}

class GoldenForward : public ::testing::TestWithParam<std::string> {
protected:
    const LoadedGolden& lg() const { return loaded_golden(GetParam()); }
    const Golden& g() const { return *lg().golden; }

    void report(const std::string& mode, const LogitStats& s) const {
        const std::string line = describe(GetParam() + " " + mode, s);
        std::cout << "[golden] " << line << "\n";
        RecordProperty(mode, line);
    }
    static void expect_bounds(const LogitStats& s, double median, double p99, double max) {
        EXPECT_LE(s.median, median);
        EXPECT_LE(s.p99, p99);
        EXPECT_LE(s.max, max) << "worst position " << s.worst_position;
        EXPECT_EQ(s.argmax_mismatch, 0u) << "argmax differs where the reference margin > 1e-2";
    }
};

// Mode (a): one token per call from t = 0, against golden.logits_decode; also the
// per-layer HC state at the stored positions.
TEST_P(GoldenForward, TeacherForcedDecodeMatchesReference) {
    const Golden& gd = g();
    const uint64_t hc = gd.hp.hc_dim();
    std::vector<double> block_err(gd.hp.n_layer, 0.0), block_mag(gd.hp.n_layer, 0.0);
    auto observer = [&](uint32_t il, uint64_t pos, std::span<const float> x) {
        const auto it = std::find(gd.block_out_positions.begin(), gd.block_out_positions.end(),
                                  static_cast<int32_t>(pos));
        if (it == gd.block_out_positions.end()) return;
        const float* ref = gd.block_out[il].data() + (it - gd.block_out_positions.begin()) * hc;
        for (uint64_t i = 0; i < hc; ++i) {
            block_err[il] = std::max(block_err[il], static_cast<double>(std::fabs(x[i] - ref[i])));
            block_mag[il] = std::max(block_mag[il], static_cast<double>(std::fabs(ref[i])));
        }
    };
    const auto logits = run_in_chunks(lg(), {1}, with_observer(observer));
    const LogitStats s = compare_logits(gd.decode, logits, 0, gd.T);
    report("mode (a) teacher-forced decode", s);
    expect_bounds(s, 1e-4, 1e-3, 5e-2);
    for (uint32_t il = 0; il < gd.hp.n_layer; ++il) {
        std::cout << "[golden] " << GetParam() << " block_out L" << il << ": max |diff| " << block_err[il]
                  << " (max |ref| " << block_mag[il] << ")\n";
        EXPECT_LE(block_err[il], 1e-3 * std::max(1.0, block_mag[il])) << "layer " << il;
    }
}

// Mode (b): the first P tokens in ONE prefill call (logits at every row), then decode,
// against golden.logits_prefill_then_decode.
TEST_P(GoldenForward, PrefillThenDecodeMatchesReference) {
    const Golden& gd = g();
    const auto logits = run_in_chunks(lg(), {gd.P, 1});
    const LogitStats s = compare_logits(gd.prefill_then_decode, logits, 0, gd.T);
    report("mode (b) prefill-then-decode", s);
    expect_bounds(s, 5e-4, 5e-3, 5e-2);
    report("mode (b) prefill part", compare_logits(gd.prefill_then_decode, logits, 0, gd.P));
    report("mode (b) decode part", compare_logits(gd.prefill_then_decode, logits, gd.P, gd.T));
}

// The whole sequence as one prefill; only its last row is stored.
TEST_P(GoldenForward, FullPrefillLastMatchesReference) {
    const Golden& gd = g();
    const uint32_t V = gd.hp.n_vocab;
    const auto logits = run_in_chunks(lg(), {gd.T});
    GoldenLogits ref;
    ref.T = 1;
    ref.V = V;
    ref.full = gd.full_prefill_last;
    const std::vector<float> last(logits.end() - V, logits.end());
    const LogitStats s = compare_logits(ref, last, 0, 1);
    report("full prefill, last position", s);
    EXPECT_LE(s.max, 5e-3);
    EXPECT_EQ(s.argmax_mismatch, 0u);
}

INSTANTIATE_TEST_SUITE_P(Goldens, GoldenForward, ::testing::Values("tiny_s1", "tiny_s2", "small_s1"),
                         [](const auto& p) { return p.param; });

}  // namespace
}  // namespace ds4::cpu::test
