// HTTP plumbing shared by the API surfaces: the server context every handler gets, JSON
// replies, and the two ways a job's output reaches the client (a streamed SSE body with
// keep-alive comments, or one JSON body written when the job is done). Both run inside
// httplib's chunked content provider so a failed write — the client left — cancels the
// job at once.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <httplib.h>

#include "ds4/error.h"
#include "server/request.h"
#include "server/scheduler.h"

namespace ds4::server {

struct Counters {
    std::mutex mutex;
    std::map<std::string, uint64_t> requests;  // "endpoint status" -> count
    std::atomic<uint64_t> rejected_full{0};
    void count(const std::string& endpoint, int status) {
        std::lock_guard lock(mutex);
        ++requests[endpoint + " " + std::to_string(status)];
    }
};

struct ServerContext {
    Scheduler& scheduler;
    PromptEncoder& encoder;
    Counters& counters;
    uint64_t ctx = 0;
    uint64_t default_max_tokens = 0;
    std::atomic<bool>& stopping;
};

void send_json(httplib::Response& res, int status, const Json& body);
// Compact JSON text; invalid UTF-8 in strings becomes U+FFFD instead of throwing.
std::string json_text(const Json& j);

// Queues the job; 503 (queue full) or 503 (shutting down) as ApiError.
std::shared_ptr<Job> submit(const ServerContext& sc, GenRequest request);

// SSE output of one response.
class Sse {
public:
    explicit Sse(httplib::DataSink& sink) : sink_(sink) {}
    bool data(const Json& j);                             // data: {…}\n\n
    bool event(const std::string& name, const Json& j);   // event: name\ndata: {…}\n\n
    bool raw(const std::string& text);
    bool ok() const { return ok_; }

private:
    httplib::DataSink& sink_;
    bool ok_ = true;
};

struct StreamHandlers {
    std::function<void(Sse&)> start;
    std::function<void(const GenEvent&, Sse&)> event;
    std::function<void(const GenResult&, Sse&)> finish;
};

// Streams the job: start, then events as they come (": keep-alive" comments while none
// arrive, e.g. during a long prefill), then finish. A failed write cancels the job.
void stream_job(httplib::Response& res, std::shared_ptr<Job> job, StreamHandlers handlers);

// Waits for the job and writes build(events, result) as one JSON body. While waiting,
// single spaces (valid leading JSON whitespace) are written every few seconds: they keep
// proxies from timing out and reveal a departed client, which cancels the job.
void reply_when_done(httplib::Response& res, std::shared_ptr<Job> job,
                     std::function<Json(const std::vector<GenEvent>&, const GenResult&)> build);

// The events folded into a message.
struct AssembledCall {
    std::string id, name, arguments;
};
struct Assembled {
    std::string reasoning, content;
    std::vector<AssembledCall> calls;
};
// Call ids are made with `call_prefix` (e.g. "call_", "toolu_").
Assembled assemble(const std::vector<GenEvent>& events, const char* call_prefix);

// Tracks call indexes of a stream: global DSML index -> position among live calls.
struct CallIndex {
    std::map<std::size_t, std::size_t> position;
    std::size_t next = 0;
    std::size_t begin(std::size_t call) { return position[call] = next++; }
    std::size_t at(std::size_t call) const {
        auto it = position.find(call);
        return it == position.end() ? 0 : it->second;
    }
};

int64_t unix_now();

// Request conversions to the OpenAI messages/tools shape the chat encoder reads (exposed
// for the fuzzer). Throw ApiError for what they refuse.
Json anthropic_to_openai_messages(const Json& body);
Json anthropic_to_openai_tools(const Json& tools);
Json responses_to_openai_messages(const Json& body);
Json responses_to_openai_tools(const Json& tools);

// The endpoint handlers (one file each).
void handle_chat_completions(const ServerContext& sc, const httplib::Request& req, httplib::Response& res);
void handle_completions(const ServerContext& sc, const httplib::Request& req, httplib::Response& res);
void handle_responses(const ServerContext& sc, const httplib::Request& req, httplib::Response& res);
void handle_messages(const ServerContext& sc, const httplib::Request& req, httplib::Response& res);
void handle_count_tokens(const ServerContext& sc, const httplib::Request& req, httplib::Response& res);

}  // namespace ds4::server
