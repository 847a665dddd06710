// The ds4 command line (interface.md §5.1, §5.2): flags, their checks and the help text.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "ds4/chat.h"
#include "ds4/engine.h"
#include "ds4/sampler.h"

namespace ds4::cli {

// A command-line mistake: one line on stderr and exit status 2 (§5.7).
struct UsageError {
    std::string message;
};

inline constexpr std::string_view kDefaultModel = "ds4flash.gguf";
inline constexpr std::string_view kDefaultSystem = "You are a helpful assistant";
inline constexpr std::string_view kVersion = "0.1.0";

struct Options {
    std::string model = std::string(kDefaultModel);
    bool model_given = false;  // -m was passed (the missing-model hint is for the default)
    std::optional<std::string> prompt;
    std::optional<std::string> prompt_file;
    std::string system = std::string(kDefaultSystem);
    uint64_t n_predict = 50000;
    uint64_t ctx = 32768;
    unsigned threads = 0;  // 0: min(12, online CPUs), or $DS4_THREADS
    DirectionalSteering steering;  // --dir-steering-file/-ffn/-attn (interface.md §7.5)
    bool cuda = false;
    std::string mtp;         // --mtp FILE: MTP GGUF (speculative decoding)
    uint32_t mtp_draft = 1;  // --mtp-draft N: drafts per step; speculation needs N > 1 and greedy
    SamplingParams sampling;  // temperature 1, top_k 0, top_p 1, min_p 0.05, seed 0 (random)
    ThinkingMode think = ThinkingMode::high;
    std::string think_flag = "--think";  // the flag that set `think`, for the Think-Max note
    bool dump_tokens = false;
    std::string dump_logprobs;  // file; empty: off
    unsigned logprobs_top_k = 20;
    std::string trace;  // file; empty: off
    bool verbose = false;
    bool help = false;
    bool version = false;
    bool model_info = false;  // --model-info: describe the model and its memory at ctx

    bool one_shot() const { return prompt || prompt_file; }
};

// Parses argv[1..]. Throws UsageError for unknown options, missing or invalid values and
// conflicting prompt sources.
Options parse_options(std::span<char* const> args);

// The --help text (stdout, exit 0).
std::string_view help_text();

// The thread count to use: the option, else $DS4_THREADS, else min(12, online CPUs).
unsigned resolve_threads(unsigned option);

}  // namespace ds4::cli
