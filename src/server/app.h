// The ds4-server application: flags (interface.md §6.1), routes, auth, CORS, metrics and
// the lifetime of the engine, scheduler and HTTP server.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "ds4/engine.h"

namespace ds4::server {

struct ServerOptions {
    std::string model = "ds4flash.gguf";
    std::string host = "127.0.0.1";
    int port = 8000;
    uint64_t ctx = 32768;
    uint64_t tokens = 393216;  // default max_tokens (clipped to the context left)
    unsigned threads = 0;
    bool cuda = false;  // --cuda: the CUDA backend (needs a -DDS4_CUDA=ON build); --cpu: the default
    DirectionalSteering steering;  // --dir-steering-file/-ffn/-attn (interface.md §7.5)
    std::string mtp;               // --mtp FILE: the MTP block (speculative decoding, §4.8)
    uint32_t mtp_draft = 1;        // --mtp-draft N: drafts per step (1: no speculation)
    float mtp_margin = 3.0f;       // --mtp-margin F: accepted for ds4 compatibility (see --help)
    bool cors = false;
    std::string api_key;
    uint64_t max_body_mb = 64;
    std::size_t parallel = 4;
    std::size_t queue = 64;
    std::string kv_disk_dir;          // disk KV checkpoints (off when empty)
    uint64_t kv_disk_space_mb = 4096;
    uint32_t kv_cache_min_tokens = 512;
    uint32_t kv_cache_cold_max_tokens = 30000;
    uint32_t kv_cache_continued_interval_tokens = 10000;
    uint32_t kv_cache_boundary_trim_tokens = 32;
    uint32_t kv_cache_boundary_align_tokens = 2048;
    bool kv_cache_reject_different_quant = false;
    std::size_t kv_live_sessions = 0;  // live sessions kept (at least --parallel)
    uint64_t kv_memory_mb = 0;         // KV memory of the live sessions (0: no limit)
    bool disable_exact_dsml_tool_replay = false;
    std::size_t tool_memory_max_ids = 100000;  // exact-replay ids kept in RAM
    bool kv_slots = false;             // the simple per-slot reuse instead of the session pool
    std::string trace;
    std::string test_script;  // --test-script FILE (scripted_replies.h)
};

// Parses argv; prints usage / errors and returns the exit code to use when not running
// (0 for --help, 2 for bad flags), or -1 to run.
int parse_options(int argc, char** argv, ServerOptions& out);

// Loads the model, serves until SIGINT/SIGTERM (or stop()), shuts down gracefully.
// Returns the process exit status.
int run_server(const ServerOptions& options);

}  // namespace ds4::server
