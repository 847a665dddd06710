// Golden check of the whole conversion path: the official checkpoint inside a golden
// file → ds4 GGUF (ds4_convert) → gguf::File + read_hparams + zero-copy weight views →
// CPU forward pass, compared with the reference logits stored in the same file
// (tests/data/golden/README.md, "How to compare").
//
// Modes: (a) teacher-forced decode vs golden.logits_decode, (b) one prefill of P tokens
// then decode vs golden.logits_prefill_then_decode, (c) one prefill of all T tokens vs
// golden.logits_full_prefill_last. Per position t, d_t = max_v |ours − ref| over the
// stored values (full rows, or the top-k values plus the stored full rows of the compact
// layout). Reported per mode: median / p99 / max of d_t, mean |Δ| over the compared
// values, top-1 agreement over all positions and argmax mismatches where the reference's
// top-1/top-2 margin exceeds 1e-2.
//
// (d) when the golden file carries the MTP block and golden.mtp_logits_decode: the MTP
// block converted into its own GGUF (--mtp-out), run teacher-forced at MTP position i on
// the mode-(a) final HC state of position i and token i + 1, vs golden.mtp_logits_decode
// (T − 1 rows), judged like mode (a).
//
// Bounds: f32 uses the README table verbatim (argmax identical where margin > 1e-2).
// The lossy types use looser bounds measured on the shipped goldens with margin (see
// bounds_for); argmax there is judged by overall top-1 agreement.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "convert.h"

namespace ds4::golden {

struct ModeStats {
    std::string mode;  // "decode", "prefill_then_decode", "full_prefill_last", "mtp_decode"
    uint32_t positions = 0;
    double median = 0, p99 = 0, max = 0;
    uint32_t worst_position = 0;
    double mean_abs = 0;           // mean |Δ| over every compared value
    uint32_t top1_agree = 0;       // positions whose argmax equals the reference's
    uint32_t argmax_checked = 0;   // positions with reference margin > 1e-2
    uint32_t argmax_mismatch = 0;  // ... whose argmax differs
};

struct Bounds {
    double median, p99, max;
    double min_top1;    // minimum fraction of positions with the same argmax
    bool argmax_exact;  // no mismatch allowed where margin > 1e-2
};

// The bounds for a conversion type and mode.
Bounds bounds_for(convert::TypePolicy type, std::string_view mode);

struct CheckOptions {
    convert::TypePolicy type = convert::TypePolicy::F32;
    unsigned threads = 1;
    std::string work_dir;  // where the temporary GGUF goes; empty = the system temp dir
    bool keep_gguf = false;
    // false: cpu::Numerics::Exact (quantized weights decoded to f32, the bounds below were
    // measured this way); true: the engine's default Numerics::Fast (quantized activations),
    // the same bounds hold for it on the shipped goldens (see bounds_for).
    bool fast_numerics = false;
    // Check the MTP block (mode d) when the golden file has one.
    bool mtp = true;
};

struct CheckResult {
    std::string golden;  // file path
    convert::TypePolicy type;
    convert::ConvertResult conversion;
    std::vector<ModeStats> modes;
    std::vector<std::string> failures;  // one line per violated bound
    bool passed() const { return failures.empty(); }
};

// Converts, runs the three modes and judges them. Throws ds4::Error for unreadable
// inputs; bound violations are reported in `failures`, not thrown.
CheckResult run_golden_check(const std::string& golden_path, const CheckOptions& options);

// One line per mode: "decode: 264 positions  median 1.2e-05  p99 ...".
std::string format_stats(const ModeStats& s, const Bounds& b);

}  // namespace ds4::golden
