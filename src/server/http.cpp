#include "server/http.h"

#include <chrono>
#include <ctime>

namespace ds4::server {

namespace {
constexpr auto kPoll = std::chrono::milliseconds(500);
constexpr auto kKeepAlive = std::chrono::seconds(5);
}  // namespace

// Generated text may hold invalid UTF-8 (a random or confused model can emit byte tokens
// that never complete a character): replace it rather than failing the response.
std::string json_text(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

void send_json(httplib::Response& res, int status, const Json& body) {
    res.status = status;
    res.set_content(json_text(body) + "\n", "application/json");
}

std::shared_ptr<Job> submit(const ServerContext& sc, GenRequest request) {
    if (sc.stopping) throw ApiError(503, "server shutting down");
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

bool Sse::data(const Json& j) { return raw("data: " + json_text(j) + "\n\n"); }

bool Sse::event(const std::string& name, const Json& j) {
    return raw("event: " + name + "\ndata: " + json_text(j) + "\n\n");
}

void stream_job(httplib::Response& res, std::shared_ptr<Job> job, StreamHandlers h) {
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [job, h = std::move(h)](size_t, httplib::DataSink& sink) {
            Sse sse(sink);
            if (h.start) h.start(sse);
            std::vector<GenEvent> events;
            auto last_write = std::chrono::steady_clock::now();
            for (;;) {
                const bool done = job->wait(events, kPoll);
                for (const auto& ev : events) h.event(ev, sse);
                const auto now = std::chrono::steady_clock::now();
                if (!events.empty()) last_write = now;
                else if (!done && now - last_write >= kKeepAlive) {
                    sse.raw(": keep-alive\n\n");
                    last_write = now;
                }
                if (!sse.ok()) {
                    job->cancel();
                    return false;
                }
                if (done) break;
            }
            h.finish(job->result(), sse);
            if (!sse.ok()) return false;
            sink.done();
            return true;
        },
        [job](bool) { job->cancel(); });  // no-op once finished; cancels an abandoned job
}

void reply_when_done(httplib::Response& res, std::shared_ptr<Job> job,
                     std::function<Json(const std::vector<GenEvent>&, const GenResult&)> build) {
    res.status = 200;
    res.set_chunked_content_provider(
        "application/json",
        [job, build = std::move(build)](size_t, httplib::DataSink& sink) {
            std::vector<GenEvent> scratch;
            auto last_write = std::chrono::steady_clock::now();
            while (!job->wait(scratch, kPoll)) {
                const auto now = std::chrono::steady_clock::now();
                if (now - last_write >= kKeepAlive) {
                    if (!sink.write(" ", 1)) {
                        job->cancel();
                        return false;
                    }
                    last_write = now;
                }
            }
            const std::string body = json_text(build(job->all_events(), job->result())) + "\n";
            if (!sink.write(body.data(), body.size())) return false;
            sink.done();
            return true;
        },
        [job](bool) { job->cancel(); });
}

Assembled assemble(const std::vector<GenEvent>& events, const char* call_prefix) {
    Assembled m;
    std::map<std::size_t, std::size_t> pos;
    for (const auto& ev : events) {
        switch (ev.kind) {
            case GenKind::reasoning: m.reasoning += ev.text; break;
            case GenKind::content: m.content += ev.text; break;
            case GenKind::call_begin:
                pos[ev.call] = m.calls.size();
                m.calls.push_back({random_id(call_prefix, 24), ev.text, ""});
                break;
            case GenKind::arguments:
                if (auto it = pos.find(ev.call); it != pos.end()) m.calls[it->second].arguments += ev.text;
                break;
            case GenKind::call_end: break;
            case GenKind::calls_aborted:
                if (auto it = pos.find(ev.call); it != pos.end()) m.calls.resize(it->second);
                break;
        }
    }
    return m;
}

}  // namespace ds4::server
