#include "server/app.h"

#include <pthread.h>
#include <sys/socket.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "ds4/engine.h"
#include "ds4/error.h"
#include "server/http.h"
#include "server/pool_sequence_source.h"
#include "server/scripted_replies.h"
#include "server/trace.h"

namespace ds4::server {

int parse_options(int argc, char** argv, ServerOptions& o) {
    CLI::App app{"ds4-server: OpenAI- and Anthropic-compatible HTTP server for DeepSeek V4 Flash.\n"
                 "Chat requests default to thinking with high effort; reasoning_effort=none, thinking=false,\n"
                 "think=false or model=deepseek-chat select non-thinking. Only reasoning_effort=max (or\n"
                 "output_config.effort=max) requests Think Max, and only with --ctx >= 393216. In thinking\n"
                 "mode the client's sampling knobs are replaced by the thinking defaults (seed kept).\n"
                 "Example: ds4-server -m ds4flash.gguf --ctx 65536 --port 8000",
                 "ds4-server"};
    auto positive = CLI::PositiveNumber;
    app.add_option("-m,--model", o.model, "model GGUF")->capture_default_str();
    app.add_option("-c,--ctx", o.ctx, "context per sequence (tokens)")->check(positive)->capture_default_str();
    app.add_option("-n,--tokens", o.tokens, "default max_tokens")->check(positive)->capture_default_str();
    app.add_option("-t,--threads", o.threads, "host threads (0: all)");
    auto* cuda_flag = app.add_flag("--cuda", o.cuda, "CUDA backend (needs a build with -DDS4_CUDA=ON)");
    app.add_flag_callback("--cpu", [&o] { o.cuda = false; }, "CPU backend (the default)")->excludes(cuda_flag);
    // Steering scales stay unset unless given: the engine applies the spec's defaults.
    float steer_ffn = 0, steer_attn = 0;
    app.add_option("--dir-steering-file", o.steering.file,
                   "directional steering: one f32 direction per layer (layers x hidden, raw)");
    CLI::Option* steer_ffn_opt =
        app.add_option("--dir-steering-ffn", steer_ffn,
                       "FFN outputs y -= F*d*(d.y), F in [-100,100] (default 1 with a file and neither scale given)")
            ->check(CLI::Range(-100.0f, 100.0f));
    CLI::Option* steer_attn_opt =
        app.add_option("--dir-steering-attn", steer_attn, "the same on attention outputs (default 0)")
            ->check(CLI::Range(-100.0f, 100.0f));
    app.add_option("--mtp", o.mtp,
                   "MTP GGUF (ds4-convert --mtp-out, or a model that carries the block): speculative "
                   "decoding of greedy (temperature 0) requests when --mtp-draft >= 2");
    app.add_option("--mtp-draft", o.mtp_draft, "MTP drafts verified per step (1: no speculation; max 16)")
        ->check(CLI::Range(1u, 16u))
        ->capture_default_str();
    app.add_option("--mtp-margin", o.mtp_margin,
                   "ds4's draft confidence gate, accepted for its command lines; no effect here: every "
                   "draft is verified and a rejected one costs a replay, not a wrong token")
        ->check(CLI::Range(0.0f, 1000.0f))
        ->capture_default_str();
    app.add_option("--host", o.host, "IPv4 address to listen on")->capture_default_str();
    app.add_option("--port", o.port, "TCP port")->check(CLI::Range(0, 65535))->capture_default_str();
    app.add_flag("--cors", o.cors, "add CORS headers");
    app.add_option("--api-key", o.api_key, "require this key (Authorization: Bearer or x-api-key)");
    app.add_option("--max-body-mb", o.max_body_mb, "request body limit (MiB)")->check(positive)->capture_default_str();
    app.add_option("--parallel", o.parallel, "requests generating at once (continuous batching)")->check(positive)->capture_default_str();
    app.add_option("--queue", o.queue, "requests waiting beyond --parallel before 503")->check(positive)->capture_default_str();
    app.add_option("--kv-disk-dir", o.kv_disk_dir, "disk KV checkpoints directory (created; off when absent)");
    app.add_option("--kv-disk-space-mb", o.kv_disk_space_mb, "disk KV budget (MiB)")->check(positive)->capture_default_str();
    app.add_option("--kv-cache-min-tokens", o.kv_cache_min_tokens, "never save/load checkpoints shorter than N")->check(positive)->capture_default_str();
    app.add_option("--kv-cache-cold-max-tokens", o.kv_cache_cold_max_tokens, "cold saves only for first prompts in [min, N]; 0: none")->capture_default_str();
    app.add_option("--kv-cache-continued-interval-tokens", o.kv_cache_continued_interval_tokens, "save at aligned frontiers every N tokens; 0: off")->capture_default_str();
    app.add_option("--kv-cache-boundary-trim-tokens", o.kv_cache_boundary_trim_tokens, "cold saves drop this many tail tokens")->capture_default_str();
    app.add_option("--kv-cache-boundary-align-tokens", o.kv_cache_boundary_align_tokens, "align cold-save boundaries and the continued interval to N; 0: off")->capture_default_str();
    app.add_flag("--kv-cache-reject-different-quant", o.kv_cache_reject_different_quant, "refuse checkpoints of another routed-expert quantization");
    app.add_option("--kv-live-sessions", o.kv_live_sessions, "live KV sessions kept in memory (at least --parallel, the default)");
    app.add_option("--kv-memory-mb", o.kv_memory_mb, "memory for the live KV sessions, checkpoints included (MiB; 0: no limit)");
    app.add_flag("--disable-exact-dsml-tool-replay", o.disable_exact_dsml_tool_replay,
                 "keep canonically rendered tool calls instead of the live session's sampled bytes");
    app.add_option("--tool-memory-max-ids", o.tool_memory_max_ids,
                   "tool-call ids whose sampled DSML is remembered for exact replay")
        ->check(positive)->capture_default_str();
    app.add_flag("--kv-slots", o.kv_slots, "per-slot prefix reuse only (no session pool, no disk cache)");
    app.add_option("--trace", o.trace, "session trace: JSON lines (truncated at startup; holds full prompts)");
    app.add_option("--test-script", o.test_script,
                   "client integration tests: JSON [{\"match\",\"reply\"}]; a prompt containing `match` gets "
                   "`reply` as the model's output (tokens forced in place of sampled ones)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        std::cout << app.help();
        return 0;
    } catch (const CLI::ParseError& e) {
        std::cerr << "ds4-server: " << e.what() << "\n" << app.help();
        return 2;
    }
    if (steer_ffn_opt->count() != 0) o.steering.ffn = steer_ffn;
    if (steer_attn_opt->count() != 0) o.steering.attn = steer_attn;
    if (o.steering.file.empty() && (steer_ffn != 0 || steer_attn != 0)) {
        std::cerr << "ds4-server: --dir-steering-ffn/--dir-steering-attn need --dir-steering-file\n";
        return 2;
    }
    if (o.host == "localhost") o.host = "127.0.0.1";
    if (o.kv_cache_cold_max_tokens != 0 && o.kv_cache_cold_max_tokens < o.kv_cache_min_tokens) {
        std::cerr << "ds4-server: --kv-cache-cold-max-tokens must be 0 or >= --kv-cache-min-tokens ("
                  << o.kv_cache_min_tokens << "), got " << o.kv_cache_cold_max_tokens << "\n";
        return 2;
    }
    return -1;
}

namespace {

void log_line(const std::string& msg) {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%m%d %H:%M:%S ", &tm);
    std::fprintf(stderr, "%s%s\n", stamp, msg.c_str());
}

ApiStyle style_for(const std::string& path) {
    return path.rfind("/v1/messages", 0) == 0 ? ApiStyle::anthropic : ApiStyle::openai;
}

bool authorised(const httplib::Request& req, const std::string& key) {
    if (key.empty()) return true;
    if (req.get_header_value("x-api-key") == key) return true;
    return req.get_header_value("Authorization") == "Bearer " + key;
}

Json model_json(const ServerOptions& o) {
    return {{"id", kModelId}, {"object", "model"}, {"created", 1767225600}, {"owned_by", "ds4"},
            {"name", "DeepSeek V4 Flash"}, {"context_length", o.ctx},
            {"top_provider", {{"context_length", o.ctx}, {"max_completion_tokens", std::min(o.tokens, o.ctx)}, {"is_moderated", false}}},
            {"supported_parameters", {"tools", "tool_choice", "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed", "stream", "reasoning_effort"}}};
}

std::string metrics_text(const ServerContext& sc) {
    const SchedulerStats& s = sc.scheduler.stats();
    std::ostringstream m;
    auto gauge = [&](const char* name, const char* type, const char* help, double v) {
        m << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n' << name << ' ' << v << '\n';
    };
    m << "# HELP ds4_requests_total HTTP requests by endpoint and status\n# TYPE ds4_requests_total counter\n";
    {
        std::lock_guard lock(sc.counters.mutex);
        for (const auto& [key, n] : sc.counters.requests) {
            const auto sp = key.rfind(' ');
            m << "ds4_requests_total{endpoint=\"" << key.substr(0, sp) << "\",status=\"" << key.substr(sp + 1) << "\"} " << n << '\n';
        }
    }
    gauge("ds4_requests_rejected_total", "counter", "requests refused because the queue was full", static_cast<double>(sc.counters.rejected_full));
    gauge("ds4_generations_total", "counter", "generations finished", static_cast<double>(s.requests_done));
    gauge("ds4_generations_cancelled_total", "counter", "generations cancelled by a departed client", static_cast<double>(s.requests_cancelled));
    gauge("ds4_mtp_drafted_total", "counter", "MTP draft tokens verified (speculative decoding)", static_cast<double>(s.mtp_drafted));
    gauge("ds4_mtp_accepted_total", "counter", "MTP draft tokens the main model agreed with", static_cast<double>(s.mtp_accepted));
    gauge("ds4_mtp_replays_total", "counter", "speculative steps rolled back to the accepted prefix", static_cast<double>(s.mtp_replays));
    m << "# HELP ds4_tool_replay_messages_total assistant messages with tool calls in prompts, by rendering\n"
         "# TYPE ds4_tool_replay_messages_total counter\n";
    for (const auto& [how, v] : {std::pair{"memory", s.replay_memory.load()}, std::pair{"disk", s.replay_disk.load()},
                                 std::pair{"canonical", s.replay_canonical.load()}})
        m << "ds4_tool_replay_messages_total{rendered=\"" << how << "\"} " << v << '\n';
    gauge("ds4_tool_replay_missing_ids_total", "counter", "tool-call ids in prompts with no remembered DSML block",
          static_cast<double>(s.replay_missing_ids));
    gauge("ds4_prompt_tokens_total", "counter", "prompt tokens of admitted requests", static_cast<double>(s.prompt_tokens));
    gauge("ds4_prompt_tokens_cached_total", "counter", "prompt tokens reused from live sequences (KV cache hits)", static_cast<double>(s.cached_tokens));
    gauge("ds4_prefill_tokens_total", "counter", "prompt tokens evaluated", static_cast<double>(s.prefill_tokens));
    gauge("ds4_completion_tokens_total", "counter", "generated tokens", static_cast<double>(s.completion_tokens));
    gauge("ds4_engine_steps_total", "counter", "engine steps", static_cast<double>(s.steps));
    gauge("ds4_prefill_seconds_total", "counter", "time in steps carrying prefill", static_cast<double>(s.prefill_ns) * 1e-9);
    gauge("ds4_decode_seconds_total", "counter", "time in decode-only steps", static_cast<double>(s.decode_ns) * 1e-9);
    gauge("ds4_queue_depth", "gauge", "requests waiting for a slot", static_cast<double>(s.queue_depth));
    gauge("ds4_active_requests", "gauge", "requests generating", static_cast<double>(s.active));
    gauge("ds4_live_sequences", "gauge", "engine sequences (active and idle with reusable KV)", static_cast<double>(sc.scheduler.live_sequences()));
    const KvCacheStats k = sc.scheduler.kv_stats();
    // Integers as integers: byte counts would lose digits in the default float format.
    auto count = [&](const char* name, const char* type, const char* help, uint64_t v) {
        m << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n' << name << ' ' << v << '\n';
    };
    m << "# HELP ds4_kv_cache_hits_total requests that reused KV, by where it came from\n# TYPE ds4_kv_cache_hits_total counter\n"
      << "ds4_kv_cache_hits_total{source=\"live\"} " << k.live_hits << '\n'
      << "ds4_kv_cache_hits_total{source=\"disk\"} " << k.disk_hits << '\n';
    count("ds4_kv_cache_misses_total", "counter", "requests that started from an empty KV", k.misses);
    count("ds4_kv_cache_forks_total", "counter", "live sessions copied for a diverging request", k.forks);
    count("ds4_kv_cache_evictions_total", "counter", "live sessions evicted (saved to disk when enabled)", k.evictions);
    count("ds4_kv_cache_disk_saves_total", "counter", "KV checkpoints written to the disk cache", k.disk_saves);
    count("ds4_kv_cache_disk_load_failures_total", "counter", "disk checkpoints that could not be loaded", k.disk_load_failures);
    count("ds4_kv_live_sessions", "gauge", "live KV sessions", k.live_sessions);
    count("ds4_kv_live_bytes", "gauge", "memory accounted to the live KV sessions", k.live_bytes);
    count("ds4_kv_disk_files", "gauge", "checkpoint files in the disk cache", k.disk_files);
    count("ds4_kv_disk_bytes", "gauge", "bytes of the disk cache", k.disk_bytes);
    count("ds4_kv_disk_scans_total", "counter", "full scans of the disk cache directory (startup, outside changes)", k.disk_scans);
    if (ToolMemory* tm = sc.encoder.tool_memory())
        count("ds4_tool_memory_ids", "gauge", "tool-call ids remembered for exact DSML replay", tm->size());
    return m.str();
}

// The session pool (with the disk cache when --kv-disk-dir is set), or per-slot reuse.
std::unique_ptr<SequenceSource> make_sequence_source(const ServerOptions& o, Engine& engine, const Tokenizer& tok,
                                                     Trace* trace, std::size_t chunk, ToolMemory* memory) {
    if (o.kv_slots) return std::make_unique<SlotSequenceSource>(engine, o.parallel);
    runtime::SessionPoolOptions po;
    // Every generating request holds a session, so there are never fewer than --parallel.
    po.max_sessions = std::max<std::size_t>(o.kv_live_sessions, o.parallel);
    po.memory_budget = o.kv_memory_mb << 20;
    po.policy.min_tokens = o.kv_cache_min_tokens;
    po.policy.cold_max_tokens = o.kv_cache_cold_max_tokens;
    po.policy.continued_interval = o.kv_cache_continued_interval_tokens;
    po.policy.boundary_trim = o.kv_cache_boundary_trim_tokens;
    po.policy.boundary_align = o.kv_cache_boundary_align_tokens;
    po.quant_bits = kv_quant_bits(engine.model());
    std::unique_ptr<kvstore::DiskCache> disk;
    if (!o.kv_disk_dir.empty()) {
        kvstore::DiskCacheOptions d;
        d.dir = o.kv_disk_dir;
        d.budget_bytes = o.kv_disk_space_mb << 20;
        d.reject_different_quant = o.kv_cache_reject_different_quant;
        d.min_tokens = o.kv_cache_min_tokens;
        d.cold_max_tokens = o.kv_cache_cold_max_tokens;
        // Corrupt or unreadable entries are reported (and skipped), never fatal.
        d.log = [trace](const std::string& msg) {
            log_line("kv cache: " + msg);
            if (trace) trace->write("kv_cache_log", {{"message", msg}});
        };
        d.max_tool_ids = static_cast<uint32_t>(std::min<std::size_t>(o.tool_memory_max_ids, UINT32_MAX / 4));
        if (memory) {
            // Checkpoints carry the ids of the blocks in their text; hits bring them back.
            d.tool_ids_for_text = [memory](std::string_view text) { return memory->entries_for_text(text); };
            d.on_tool_ids_loaded = [memory](const std::vector<kvstore::ToolIdEntry>& e) { memory->import(e); };
        }
        disk = std::make_unique<kvstore::DiskCache>(std::move(d));
        if (memory) {
            kvstore::DiskCache* cache = disk.get();
            memory->set_disk_lookup([cache](const std::function<bool(std::string_view)>& wanted) {
                return cache->load_tool_ids(wanted);
            });
        }
        log_line(cat("kv cache: ", o.kv_disk_dir, ", budget ", o.kv_disk_space_mb, " MiB, min ", o.kv_cache_min_tokens, " tokens"));
    }
    return std::make_unique<PoolSequenceSource>(engine, tok, std::move(po), std::move(disk), trace,
                                                !o.disable_exact_dsml_tool_replay, chunk);
}

using Handler = void (*)(const ServerContext&, const httplib::Request&, httplib::Response&);

void route(httplib::Server& http, const ServerContext& sc, const std::string& path, Handler handler) {
    http.Post(path, [&sc, path, handler](const httplib::Request& req, httplib::Response& res) {
        const ApiStyle style = style_for(path);
        try {
            handler(sc, req, res);
        } catch (const ApiError& e) {
            send_json(res, e.status, error_body(style, e.status, e.what(), e.param, e.code, e.extra));
        } catch (const nlohmann::json::exception& e) {
            // A field of an unexpected type deep inside the request (e.g. a message role
            // that is a number): the client's mistake, not ours.
            send_json(res, 400, error_body(style, 400, cat("invalid JSON request: ", e.what())));
        } catch (const std::exception& e) {
            send_json(res, 500, error_body(style, 500, e.what()));
        }
        sc.counters.count(path, res.status);
    });
}

// SIGINT/SIGTERM are blocked in every thread and taken here, so the handler can do real work.
// Running generations end first (finish "error", streams close properly), then the
// listener stops and httplib joins its connection threads.
void wait_for_signal(httplib::Server& http, Scheduler& scheduler, std::atomic<bool>& stopping) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    sigwait(&set, &sig);
    log_line(cat("signal ", sig, ": shutting down"));
    if (sig != SIGINT && sig != SIGTERM) return;
    stopping = true;
    scheduler.shutdown();
    http.stop();
}

}  // namespace

int run_server(const ServerOptions& o) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    signal(SIGPIPE, SIG_IGN);

    // Before the model: a bad script is reported at once, not after a long load.
    std::optional<ScriptedReplies> script;
    if (!o.test_script.empty()) {
        script = ScriptedReplies::load(o.test_script);
        log_line("--test-script " + o.test_script + ": " + std::to_string(script->size()) +
                 " scripted replies (matching prompts get canned output, not the model's)");
    }
    EngineOptions eo;
    eo.ctx = o.ctx;
    eo.threads = o.threads;
    eo.backend = o.cuda ? Backend::Cuda : Backend::Cpu;  // a CPU-only build's engine refuses Cuda
    eo.steering = o.steering;
    eo.mtp_path = o.mtp;
    Engine engine = Engine::open(o.model, eo);
    Tokenizer tok = Tokenizer::load(o.model);
    log_line(engine.memory_estimate().report());

    std::unique_ptr<Trace> trace;
    if (!o.trace.empty()) trace = std::make_unique<Trace>(o.trace);
    SchedulerOptions so;
    so.slots = o.parallel;
    so.queue_limit = o.queue;
    so.trace = trace.get();
    so.mtp_draft = o.mtp.empty() ? 0 : o.mtp_draft;
    so.script = script ? &*script : nullptr;
    // Before the scheduler: the disk cache (owned by the sequence source) calls into it.
    std::unique_ptr<ToolMemory> tool_memory;
    if (!o.disable_exact_dsml_tool_replay)
        tool_memory = std::make_unique<ToolMemory>(ToolMemoryLimits{o.tool_memory_max_ids});
    Scheduler scheduler(engine, tok, so, make_sequence_source(o, engine, tok, trace.get(), so.chunk, tool_memory.get()));
    PromptEncoder encoder(tok);
    encoder.set_tool_memory(tool_memory.get());
    Counters counters;
    std::atomic<bool> stopping{false};
    ResponseStore responses;
    ServerContext sc{scheduler, encoder, counters, o.ctx, o.tokens, stopping, &responses};

    httplib::Server http;
    http.set_payload_max_length(o.max_body_mb << 20);
    http.set_read_timeout(30, 0);
    http.set_write_timeout(30, 0);
    http.new_task_queue = [n = o.parallel + o.queue + 8] { return new httplib::ThreadPool(n); };
    if (o.cors) {
        http.set_default_headers({{"Access-Control-Allow-Origin", "*"},
                                  {"Access-Control-Allow-Methods", "GET, POST, OPTIONS"},
                                  {"Access-Control-Allow-Headers", "*"}});
    }
    http.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
        if (req.method == "OPTIONS" || req.path == "/health" || authorised(req, o.api_key))
            return httplib::Server::HandlerResponse::Unhandled;
        send_json(res, 401, error_body(style_for(req.path), 401, "invalid or missing API key"));
        counters.count(req.path, 401);
        return httplib::Server::HandlerResponse::Handled;
    });
    http.Options(".*", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
    http.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
        send_json(res, stopping ? 503 : 200, {{"status", stopping ? "shutting down" : "ok"}});
    });
    http.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
        res.set_content(metrics_text(sc), "text/plain; version=0.0.4");
    });
    http.Get("/v1/models", [&](const httplib::Request&, httplib::Response& res) {
        send_json(res, 200, {{"object", "list"}, {"data", Json::array({model_json(o)})}});
    });
    http.Get(R"(/v1/models/(.+))", [&](const httplib::Request& req, httplib::Response& res) {
        if (req.matches[1] == kModelId) return send_json(res, 200, model_json(o));
        send_json(res, 404, error_body(ApiStyle::openai, 404, cat("The model '", req.matches[1].str(), "' does not exist"),
                                       "model", "model_not_found"));
    });
    route(http, sc, "/v1/chat/completions", handle_chat_completions);
    route(http, sc, "/v1/completions", handle_completions);
    route(http, sc, "/v1/responses", handle_responses);
    route(http, sc, "/v1/messages", handle_messages);
    route(http, sc, "/v1/messages/count_tokens", handle_count_tokens);
    // Errors httplib raises itself (no route, body too large) get a JSON body too.
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return;
        const std::string msg = res.status == 404 ? "unknown endpoint " + req.method + " " + req.path
                                : res.status == 413 ? "request body too large"
                                                    : "bad HTTP request";
        res.set_content(json_text(error_body(style_for(req.path), res.status, msg)) + "\n", "application/json");
    });

    // httplib listens with a backlog of 5: a burst of clients (agents fanning out) would
    // overflow the accept queue and see dropped connections. Keep the socket's fd from the
    // options callback and raise the backlog once bound (Linux lets listen() be repeated).
    int listen_fd = -1;
    http.set_socket_options([&listen_fd](socket_t fd) {
        int yes = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
        listen_fd = fd;
    });
    if (!http.bind_to_port(o.host, o.port)) {
        log_line(cat("cannot listen on ", o.host, ":", o.port));
        return 1;
    }
    if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
    std::thread signals(wait_for_signal, std::ref(http), std::ref(scheduler), std::ref(stopping));
    log_line(cat("listening on http://", o.host, ":", o.port));
    http.listen_after_bind();
    if (!stopping) {
        // listen failed on its own: wake the signal thread so it can be joined.
        stopping = true;
        pthread_kill(signals.native_handle(), SIGTERM);
    }
    signals.join();
    scheduler.shutdown();
    log_line("stopped");
    return 0;
}

}  // namespace ds4::server
