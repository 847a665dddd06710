#include "server/http.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>

namespace ds4::server {

namespace {
constexpr auto kPoll = std::chrono::milliseconds(500);
// The keep-alive interval: 5 s, or DS4_SSE_KEEPALIVE_MS (tests shorten it).
std::chrono::milliseconds keep_alive_interval() {
    static const std::chrono::milliseconds ms = [] {
        const char* env = std::getenv("DS4_SSE_KEEPALIVE_MS");
        const long v = env != nullptr ? std::strtol(env, nullptr, 10) : 0;
        return std::chrono::milliseconds(v > 0 ? v : 5000);
    }();
    return ms;
}
}  // namespace

// Generated text may hold invalid UTF-8 (a random or confused model can emit byte tokens
// that never complete a character): replace it rather than failing the response.
std::string json_text(const Json& j) {
    return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

int64_t unix_now() {
    return static_cast<int64_t>(std::time(nullptr));
}

void send_json(httplib::Response& res, int status, const Json& body) {
    res.status = status;
    res.set_content(json_text(body) + "\n", "application/json");
}

std::string Job::call_id(std::size_t call) {
    std::lock_guard lock(mutex_);
    for (const auto& [c, id] : call_ids_)
        if (c == call) return id;
    // call_/toolu_ + 32 lowercase hex digits (interface.md §6.x id table)
    call_ids_.emplace_back(call, random_id(request_.call_id_prefix.c_str(), 32));
    return call_ids_.back().second;
}

std::vector<std::string> Job::call_ids() const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& [c, id] : call_ids_) out.push_back(id);
    return out;
}

std::shared_ptr<Job> submit(const ServerContext& sc, GenRequest request) {
    if (sc.stopping) throw ApiError(503, "server shutting down");
    request.tool_memory = sc.encoder.tool_memory();
    auto job = std::make_shared<Job>(std::move(request));
    if (!sc.scheduler.submit(job)) {
        ++sc.counters.rejected_full;
        throw ApiError(503, "server busy: the request queue is full, retry later");
    }
    return job;
}

bool Sse::raw(const std::string& text) {
    if (ok_) ok_ = sink_.write(text.data(), text.size());
    return ok_;
}

bool Sse::data(const Json& j) {
    return raw("data: " + json_text(j) + "\n\n");
}

bool Sse::event(const std::string& name, const Json& j) {
    return raw("event: " + name + "\ndata: " + json_text(j) + "\n\n");
}

namespace {

// Exact replay: this turn's call ids -> the block the model sampled (§3.9). Runs once the
// reply is built, when every reported call has its id.
void remember_tool_calls(Job& job, const GenResult& result) {
    ToolMemory* memory = job.request().tool_memory;
    if (!memory || result.tool_block.empty()) return;
    const std::vector<std::string> ids = job.call_ids();
    memory->remember(ids, result.tool_block);
}

// Events through the forced-call filter (or unchanged without one).
void filter_events(ForcedCall* forced, const std::vector<GenEvent>& in,
                   std::vector<GenEvent>& out) {
    out.clear();
    if (!forced) {
        out = in;
        return;
    }
    for (const auto& ev : in) forced->on_event(ev, out);
}

}  // namespace

void stream_job(httplib::Response& res, std::shared_ptr<Job> job, StreamHandlers h,
                std::shared_ptr<ForcedCall> forced) {
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [job, h = std::move(h), forced](size_t, httplib::DataSink& sink) {
            Sse sse(sink);
            if (h.start) h.start(sse);
            std::vector<GenEvent> events, filtered;
            if (forced) {
                forced->begin(filtered);
                for (const auto& ev : filtered) h.event(ev, sse);
            }
            auto last_write = std::chrono::steady_clock::now();
            for (;;) {
                const bool done = job->wait(events, kPoll);
                filter_events(forced.get(), events, filtered);
                for (const auto& ev : filtered) h.event(ev, sse);
                const auto now = std::chrono::steady_clock::now();
                if (!events.empty())
                    last_write = now;
                else if (!done && now - last_write >= keep_alive_interval()) {
                    if (h.keep_alive)
                        h.keep_alive(sse);
                    else
                        sse.raw(": keep-alive\n\n");
                    last_write = now;
                }
                if (!sse.ok()) {
                    job->cancel();
                    return false;
                }
                if (done) break;
            }
            GenResult result = job->result();
            if (forced) {
                filtered.clear();
                forced->on_finish(result, filtered);
                for (const auto& ev : filtered) h.event(ev, sse);
            }
            h.finish(result, sse);
            remember_tool_calls(*job, result);
            if (!sse.ok()) return false;
            sink.done();
            return true;
        },
        [job](bool) { job->cancel(); });  // no-op once finished; cancels an abandoned job
}

void reply_when_done(httplib::Response& res, std::shared_ptr<Job> job,
                     std::function<Json(const std::vector<GenEvent>&, const GenResult&)> build,
                     std::shared_ptr<ForcedCall> forced) {
    res.status = 200;
    res.set_chunked_content_provider(
        "application/json",
        [job, build = std::move(build), forced](size_t, httplib::DataSink& sink) {
            std::vector<GenEvent> scratch;
            auto last_write = std::chrono::steady_clock::now();
            while (!job->wait(scratch, kPoll)) {
                const auto now = std::chrono::steady_clock::now();
                if (now - last_write >= keep_alive_interval()) {
                    if (!sink.write(" ", 1)) {
                        job->cancel();
                        return false;
                    }
                    last_write = now;
                }
            }
            std::vector<GenEvent> events;
            GenResult result = job->result();
            if (forced) {
                forced->begin(events);
                for (const auto& ev : job->all_events()) forced->on_event(ev, events);
                forced->on_finish(result, events);
            } else {
                events = job->all_events();
            }
            const std::string body = json_text(build(events, result)) + "\n";
            remember_tool_calls(*job, result);
            if (!sink.write(body.data(), body.size())) return false;
            sink.done();
            return true;
        },
        [job](bool) { job->cancel(); });
}

// ---- ForcedCall ----

namespace {

// The closing tags of the three DSML spellings (§3.2): the stop strings of a forced job.
const std::vector<std::string>& block_close_tags() {
    static const std::vector<std::string> tags = {"</｜DSML｜tool_calls>", "</DSML｜tool_calls>",
                                                  "</tool_calls>"};
    return tags;
}

const std::vector<std::string>& invoke_close_tags() {
    static const std::vector<std::string> tags = {"</｜DSML｜invoke>", "</DSML｜invoke>",
                                                  "</invoke>"};
    return tags;
}

// The block close matching an invoke close tag's spelling.
std::string block_close_after(const std::string& invoke_close) {
    if (invoke_close == "</｜DSML｜invoke>") return "\n</｜DSML｜tool_calls>";
    if (invoke_close == "</DSML｜invoke>") return "\n</DSML｜tool_calls>";
    return "\n</tool_calls>";
}

}  // namespace

bool read_single_call(const Json& body) {
    return !opt_bool(body, "parallel_tool_calls").value_or(true);
}

ForcedCall::ForcedCall(std::string name, bool single)
    : name_(std::move(name)), dsml_(DsmlOptions{}), single_(single) {
    dsml_.feed(forced_call_prefix(name_), pending_);
}

std::shared_ptr<ForcedCall> force_call(const ServerContext& sc, const ToolChoice& choice,
                                       std::vector<TokenId>& prompt, bool single_call) {
    if (!choice.forced()) return nullptr;
    sc.encoder.append_forced_call(prompt, choice.name);
    return std::make_shared<ForcedCall>(choice.name, single_call);
}

void ForcedCall::configure(GenRequest& request) const {
    request.dsml.thinking = false;
    request.dsml.parse_tools = false;
    request.stops = single_ ? invoke_close_tags() : block_close_tags();
    // The scheduler feeds the block's close after the stop; DSML always is the first
    // spelling here (forced_call_prefix writes it).
    if (single_) request.stop_tail = block_close_after(invoke_close_tags()[0]);
}

void ForcedCall::begin(std::vector<GenEvent>& out) {
    route(pending_, out);
}

void ForcedCall::route(std::vector<text::DsmlEvent>& events, std::vector<GenEvent>& out) {
    for (auto& ev : events) {
        if (failed_) break;
        switch (ev.kind) {
            case text::DsmlEventKind::call_begin:
                // The first call's header goes out at once; later calls when complete.
                if (ev.call == 0) {
                    first_begun_ = true;
                    out.push_back({GenKind::call_begin, 0, ev.text});
                    ++emitted_calls_;
                } else {
                    args_[ev.call].clear();
                    names_[ev.call] = ev.text;
                }
                break;
            case text::DsmlEventKind::arguments:
                args_[ev.call] += ev.text;
                break;
            case text::DsmlEventKind::call_end:
                if (ev.call != 0) {
                    out.push_back({GenKind::call_begin, ev.call, names_[ev.call]});
                    ++emitted_calls_;
                } else {
                    first_done_ = true;
                }
                out.push_back({GenKind::arguments, ev.call, args_[ev.call]});
                out.push_back({GenKind::call_end, ev.call, {}});
                break;
            case text::DsmlEventKind::calls_aborted:
                // The rest of the block is not DSML: calls already closed stand.
                failed_ = true;
                break;
            case text::DsmlEventKind::reasoning:
            case text::DsmlEventKind::content:
            case text::DsmlEventKind::block_closed:
                break;
        }
    }
    events.clear();
}

void ForcedCall::on_event(const GenEvent& ev, std::vector<GenEvent>& out) {
    if (ev.kind != GenKind::content) {
        out.push_back(ev);  // reasoning (a leading <think> the model wrote anyway)
        return;
    }
    generated_ += ev.text;
    dsml_.feed(ev.text, pending_);
    route(pending_, out);
}

void ForcedCall::on_finish(GenResult& result, std::vector<GenEvent>& out) {
    const auto& tags = single_ ? invoke_close_tags() : block_close_tags();
    std::string closing;
    if (std::find(tags.begin(), tags.end(), result.stop_sequence) != tags.end()) {
        closing = result.stop_sequence +
                  (single_ ? block_close_after(result.stop_sequence) : std::string());
        dsml_.feed(closing, pending_);
        result.stop_sequence.clear();
    }
    dsml_.finish(pending_);
    route(pending_, out);
    if (first_begun_ && !first_done_) {
        raw_first_ = true;
        out.push_back({GenKind::arguments, 0, generated_});
        out.push_back({GenKind::call_end, 0, {}});
    } else if (!first_begun_ && !generated_.empty()) {
        out.push_back({GenKind::content, 0, generated_});
    }
    if (emitted_calls_ > 0 && result.finish == "stop") result.finish = "tool_calls";
    if (!closing.empty() && !raw_first_)
        result.tool_block = sampled_tool_block(forced_call_prefix(name_) + generated_ + closing);
}

Assembled assemble(const std::vector<GenEvent>& events, const char* call_prefix) {
    GenRequest r;
    r.call_id_prefix = call_prefix;
    Job job(std::move(r));
    return assemble(events, job);
}

Assembled assemble(const std::vector<GenEvent>& events, Job& job) {
    Assembled m;
    std::map<std::size_t, std::size_t> pos;
    for (const auto& ev : events) {
        switch (ev.kind) {
            case GenKind::reasoning:
                m.reasoning += ev.text;
                break;
            case GenKind::content:
                m.content += ev.text;
                break;
            case GenKind::call_begin:
                pos[ev.call] = m.calls.size();
                m.calls.push_back({job.call_id(ev.call), ev.text, ""});
                break;
            case GenKind::arguments:
                if (auto it = pos.find(ev.call); it != pos.end())
                    m.calls[it->second].arguments += ev.text;
                break;
            case GenKind::call_end:
                break;
            case GenKind::calls_aborted:
                if (auto it = pos.find(ev.call); it != pos.end()) m.calls.resize(it->second);
                break;
        }
    }
    return m;
}

}  // namespace ds4::server
