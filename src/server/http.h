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
#include "server/response_store.h"
#include "server/scheduler.h"
#include "text/dsml_stream.h"

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
    ResponseStore* responses;  // previous_response_id (null: every id is unknown)
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
    bool data(const Json& j);                            // data: {…}\n\n
    bool event(const std::string& name, const Json& j);  // event: name\ndata: {…}\n\n
    bool raw(const std::string& text);
    bool ok() const { return ok_; }

  private:
    httplib::DataSink& sink_;
    bool ok_ = true;
};

// A forced tool call (tool_choice required / any / a named tool, §8 item 17). The prompt
// ends inside the tool block, after forced_call_prefix(name), so the model's first tokens
// are the call's parameters. The scheduler runs such a job with DSML parsing off and the
// block's closing tags as stop strings; this filter re-parses the generated text after
// the prefix with the same DSML stream parser and rewrites the job's events:
//   * the forced call's header is emitted at once (its name is known);
//   * each call's arguments are emitted whole when the call closes (a parse failure
//     later in the text cannot contradict arguments already sent);
//   * if the forced call never closes (malformed DSML, or cut by max_tokens), it is still
//     reported, with `arguments` = the raw generated text (not JSON) and finish `length`
//     when cut; a well-formed call finishes as `tool_calls`;
//   * text after the calls is dropped, as after any tool block (§3.3).
// With `required` and several tools the model picks the name; if it never writes a
// complete header the generated text is returned as content.
class ForcedCall {
  public:
    // `single` (parallel_tool_calls: false): the job stops when the first invoke closes,
    // later calls are never reported, and the block's closing tag is fed after it.
    explicit ForcedCall(std::string name, bool single = false);
    // Scheduler settings of a forced job: DSML as text, stop at the block's close tag.
    void configure(GenRequest& request) const;
    void begin(std::vector<GenEvent>& out);
    void on_event(const GenEvent& ev, std::vector<GenEvent>& out);
    void on_finish(GenResult& result, std::vector<GenEvent>& out);
    // Whether call `call` was reported with its raw text as arguments.
    bool raw(std::size_t call) const { return call == 0 && raw_first_; }

  private:
    void route(std::vector<text::DsmlEvent>& events, std::vector<GenEvent>& out);
    std::string name_;
    text::DsmlStream dsml_;
    std::string generated_;
    std::map<std::size_t, std::string> args_, names_;
    std::size_t emitted_calls_ = 0;
    bool first_begun_ = false, first_done_ = false, failed_ = false, raw_first_ = false;
    bool single_ = false;
    std::vector<text::DsmlEvent> pending_;
};

// A forced choice: appends the call opening to `prompt` (rendered without thinking) and
// returns the filter; null for auto/none.
std::shared_ptr<ForcedCall> force_call(const ServerContext& sc, const ToolChoice& choice,
                                       std::vector<TokenId>& prompt, bool single_call = false);

// `parallel_tool_calls` of Chat Completions and Responses (default true): false → at most
// one call (GenRequest::single_call; ForcedCall's `single`). Not a boolean → 400.
bool read_single_call(const Json& body);

struct StreamHandlers {
    std::function<void(Sse&)> start;
    std::function<void(const GenEvent&, Sse&)> event;
    std::function<void(const GenResult&, Sse&)> finish;
    // Written when nothing else was for a while (queueing, a long prefill). Empty: an SSE
    // comment. Clients with a stream idle timeout (Codex counts events, not comments)
    // need a real event: Responses repeats response.in_progress, Anthropic sends ping.
    std::function<void(Sse&)> keep_alive;
};

// Streams the job: start, then events as they come (keep_alive every DS4_SSE_KEEPALIVE_MS,
// default 5000, while none arrive), then finish. A failed write cancels the job.
// `forced` (may be null) rewrites the events of a forced tool call first.
void stream_job(httplib::Response& res, std::shared_ptr<Job> job, StreamHandlers handlers,
                std::shared_ptr<ForcedCall> forced = nullptr);

// Waits for the job and writes build(events, result) as one JSON body. While waiting,
// single spaces (valid leading JSON whitespace) are written every few seconds: they keep
// proxies from timing out and reveal a departed client, which cancels the job.
void reply_when_done(httplib::Response& res, std::shared_ptr<Job> job,
                     std::function<Json(const std::vector<GenEvent>&, const GenResult&)> build,
                     std::shared_ptr<ForcedCall> forced = nullptr);

// The events folded into a message.
struct AssembledCall {
    std::string id, name, arguments;
};
struct Assembled {
    std::string reasoning, content;
    std::vector<AssembledCall> calls;
};
// Call ids come from the job (Job::call_id), so they are the ones the memory remembers.
Assembled assemble(const std::vector<GenEvent>& events, Job& job);
// With fresh ids made with `call_prefix` (tests, the fuzzer).
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
void handle_chat_completions(const ServerContext& sc, const httplib::Request& req,
                             httplib::Response& res);
void handle_completions(const ServerContext& sc, const httplib::Request& req,
                        httplib::Response& res);
void handle_responses(const ServerContext& sc, const httplib::Request& req, httplib::Response& res);
void handle_messages(const ServerContext& sc, const httplib::Request& req, httplib::Response& res);
void handle_count_tokens(const ServerContext& sc, const httplib::Request& req,
                         httplib::Response& res);

}  // namespace ds4::server
