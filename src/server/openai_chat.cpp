// POST /v1/chat/completions (interface.md §6.6).
#include "server/http.h"

namespace ds4::server {

namespace {

Json usage_json(const GenResult& r) {
    return {{"prompt_tokens", r.prompt_tokens},
            {"completion_tokens", r.completion_tokens},
            {"total_tokens", r.prompt_tokens + r.completion_tokens},
            {"prompt_tokens_details",
             {{"cached_tokens", r.cached_tokens}, {"cache_write_tokens", r.prompt_tokens - r.cached_tokens}}}};
}

struct ChatStream {
    std::string id, model;
    int64_t created = 0;
    bool include_usage = false;
    CallIndex calls;
    std::shared_ptr<Job> job;

    Json chunk(Json delta, Json finish = nullptr) const {
        return {{"id", id},
                {"object", "chat.completion.chunk"},
                {"created", created},
                {"model", model},
                {"choices", Json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", finish}}})}};
    }

    void on_event(const GenEvent& ev, Sse& sse) {
        switch (ev.kind) {
            case GenKind::reasoning: sse.data(chunk({{"reasoning_content", ev.text}})); break;
            case GenKind::content: sse.data(chunk({{"content", ev.text}})); break;
            case GenKind::call_begin: {
                const std::size_t i = calls.begin(ev.call);
                Json call = {{"index", i},
                             {"id", job->call_id(ev.call)},
                             {"type", "function"},
                             {"function", {{"name", ev.text}, {"arguments", ""}}}};
                sse.data(chunk({{"tool_calls", Json::array({call})}}));
                break;
            }
            case GenKind::arguments: {
                Json call = {{"index", calls.at(ev.call)}, {"function", {{"arguments", ev.text}}}};
                sse.data(chunk({{"tool_calls", Json::array({call})}}));
                break;
            }
            case GenKind::call_end:
            case GenKind::calls_aborted: break;
        }
    }

    void finish(const GenResult& r, Sse& sse) const {
        sse.data(chunk(Json::object(), r.finish));
        if (include_usage) {
            sse.data({{"id", id},
                      {"object", "chat.completion.chunk"},
                      {"created", created},
                      {"model", model},
                      {"choices", Json::array()},
                      {"usage", usage_json(r)}});
        }
        sse.raw("data: [DONE]\n\n");
    }
};

Json completion_body(const std::string& id, const std::string& model, int64_t created,
                     const std::vector<GenEvent>& events, const GenResult& r, Job& job) {
    const Assembled m = assemble(events, job);
    Json message = {{"role", "assistant"}, {"content", m.content}};
    if (!m.reasoning.empty()) message["reasoning_content"] = m.reasoning;
    if (!m.calls.empty()) {
        Json calls = Json::array();
        for (const auto& c : m.calls)
            calls.push_back({{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
        message["tool_calls"] = calls;
    }
    return {{"id", id},
            {"object", "chat.completion"},
            {"created", created},
            {"model", model},
            {"choices", Json::array({{{"index", 0}, {"message", message}, {"finish_reason", r.finish}}})},
            {"usage", usage_json(r)}};
}

// Fields whose meaning this server cannot honour: refused rather than silently ignored
// (§8 item 17). n = 1, logprobs = false and response_format text are the defaults.
void refuse_unsupported(const Json& body) {
    if (auto n = opt_integer(body, "n"); n && *n != 1) throw ApiError(400, "'n' must be 1 (one choice per request)", "n");
    if (opt_bool(body, "logprobs").value_or(false)) throw ApiError(400, "logprobs are not supported", "logprobs");
    if (auto it = body.find("response_format"); it != body.end() && !it->is_null()) {
        if (!it->is_object()) throw ApiError(400, "invalid JSON request: 'response_format' must be an object", "response_format");
        const std::string type = opt_string(*it, "type").value_or("text");
        if (type != "text")
            throw ApiError(400, cat("response_format '", type, "' is not supported (no constrained decoding)"), "response_format");
    }
}

}  // namespace

void handle_chat_completions(const ServerContext& sc, const httplib::Request& req, httplib::Response& res) {
    const Json body = parse_body(req.body);
    const std::string model = check_model(body);
    if (!body.contains("messages") || body["messages"].is_null()) throw ApiError(400, "missing messages", "messages");
    ThinkingInputs thinking;
    read_thinking_fields(body, thinking);
    thinking.effort = opt_string(body, "reasoning_effort");
    const Json tools = body.value("tools", Json(nullptr));
    if (!tools.is_null() && !tools.is_array()) throw ApiError(400, "invalid JSON request: 'tools' must be an array", "tools");
    const ToolChoice choice = read_tool_choice(body.value("tool_choice", Json(nullptr)), tools);
    // A forced call is written right after </think>: no reasoning in that turn.
    const ThinkingMode selected = select_thinking(thinking, model, sc.ctx);
    const ThinkingMode mode = choice.forced() ? ThinkingMode::none : selected;
    Json messages = body["messages"];
    const bool prefill = mark_prefill(messages, opt_bool(body, "continue_final_message").value_or(false));
    if (prefill && choice.forced()) throw ApiError(400, "tool_choice cannot force a call after an assistant prefix", "tool_choice");
    refuse_unsupported(body);
    ToolReplayStats replay;
    std::vector<TokenId> prompt =
        sc.encoder.encode_messages(std::move(messages), &tools, mode, choice.tools_active(), &replay);
    const bool single_call = read_single_call(body);
    auto forced = force_call(sc, choice, prompt, single_call);
    GenRequest gen = make_gen_request(std::move(prompt), read_sampling(body, mode != ThinkingMode::none, true),
                                      read_max_tokens(body, {"max_completion_tokens", "max_tokens"}, sc.default_max_tokens),
                                      mode, choice.tools_active(), read_stops(body, "stop"), sc.ctx, "messages");
    gen.single_call = single_call;
    gen.replay = replay;
    if (forced) forced->configure(gen);
    if (prefill) gen.dsml.thinking = false;  // the open turn is past its </think>
    const bool stream = opt_bool(body, "stream").value_or(false);
    bool include_usage = false;
    if (auto it = body.find("stream_options"); it != body.end() && it->is_object())
        include_usage = opt_bool(*it, "include_usage").value_or(false);

    auto job = submit(sc, std::move(gen));
    const std::string id = random_id("chatcmpl-", 24);
    const int64_t created = unix_now();
    if (!stream) {
        reply_when_done(res, job, [id, model, created, job](const auto& events, const GenResult& r) {
            return completion_body(id, model, created, events, r, *job);
        }, forced);
        return;
    }
    auto state = std::make_shared<ChatStream>();
    state->id = id;
    state->model = model;
    state->created = created;
    state->include_usage = include_usage;
    state->job = job;
    stream_job(res, job,
               {[state](Sse& sse) { sse.data(state->chunk({{"role", "assistant"}, {"content", ""}})); },
                [state](const GenEvent& ev, Sse& sse) { state->on_event(ev, sse); },
                [state](const GenResult& r, Sse& sse) { state->finish(r, sse); },
                nullptr},  // keep-alive: an SSE comment
               forced);
}

}  // namespace ds4::server
