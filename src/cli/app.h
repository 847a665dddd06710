// The ds4 CLI's modes on top of the options: one-shot generation and dumps (app.cpp) and
// the interactive chat (repl.cpp).
#pragma once

#include <atomic>
#include <string>

#include "cli/options.h"
#include "ds4/engine.h"
#include "ds4/tokenizer.h"

namespace ds4::cli {

// Set by SIGINT in interactive mode; checked between prefill chunks and between tokens.
extern std::atomic<bool> g_interrupted;

// Whether stderr progress and speed lines are shown: on a TTY or with --verbose.
bool show_diagnostics(const Options& o);

// Checks the model path (the missing default model gets the download hint) and the
// backend, then maps the model. Prints the memory report when diagnostics are shown and
// the synthetic-model banner. Throws ds4::Error.
Engine open_engine(const Options& o, uint64_t ctx);
// The same without anything on stderr.
Engine map_model(const Options& o, uint64_t ctx);
Tokenizer load_tokenizer(const Options& o);

// The effective thinking mode at `ctx`, with the §2.1 warning on stderr when Think Max
// degrades.
ThinkingMode gate_thinking(ThinkingMode requested, std::string_view flag, uint64_t ctx);

// The whole file, or ds4::Error naming it.
std::string read_file(const std::string& path);

int run_one_shot(const Options& o);
int run_interactive(const Options& o);

}  // namespace ds4::cli
