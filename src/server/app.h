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
    DirectionalSteering steering;  // --dir-steering-file/-ffn/-attn (interface.md §7.5)
    bool cors = false;
    std::string api_key;
    uint64_t max_body_mb = 64;
    std::size_t parallel = 4;
    std::size_t queue = 64;
    std::string kv_disk_dir;       // accepted; the disk cache arrives with SessionPool
    uint64_t kv_disk_space_mb = 4096;
    std::string trace;
};

// Parses argv; prints usage / errors and returns the exit code to use when not running
// (0 for --help, 2 for bad flags), or -1 to run.
int parse_options(int argc, char** argv, ServerOptions& out);

// Loads the model, serves until SIGINT/SIGTERM (or stop()), shuts down gracefully.
// Returns the process exit status.
int run_server(const ServerOptions& options);

}  // namespace ds4::server
