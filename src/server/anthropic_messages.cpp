// POST /v1/messages and /v1/messages/count_tokens (Anthropic, interface.md §6.9), with the
// §8 item 16 fixes: msg_ ids, real input_tokens (prompt minus cache read), ping events,
// errors in Anthropic's shape, stop_sequence reported, count_tokens implemented.
#include "server/http.h"

namespace ds4::server {

namespace {

Json text_of_blocks(const Json& content) {
    if (content.is_string() || content.is_null()) return content.is_null() ? Json("") : content;
    std::string out;
    if (content.is_array()) {
        for (const auto& b : content) {
            if (b.is_string()) out += b.get<std::string>();
            else if (b.is_object() && b.contains("text") && b["text"].is_string()) {
                if (!out.empty()) out += "\n\n";
                out += b["text"].get<std::string>();
            }
        }
        return out;
    }
    throw ApiError(400, "invalid JSON request: tool_result content must be a string or an array", "messages");
}

}  // namespace

// Anthropic messages → OpenAI-shaped messages for the chat encoder.
Json anthropic_to_openai_messages(const Json& body) {
    Json out = Json::array();
    if (auto it = body.find("system"); it != body.end() && !it->is_null()) {
        std::string system;
        if (it->is_string()) {
            system = it->get<std::string>();
        } else if (it->is_array()) {
            for (const auto& b : *it) {
                const std::string t = b.is_string() ? b.get<std::string>()
                                      : (b.is_object() && b.contains("text") && b["text"].is_string())
                                          ? b["text"].get<std::string>()
                                          : throw ApiError(400, "invalid JSON request: 'system' blocks must be text", "system");
                if (t.rfind("x-anthropic-", 0) == 0) continue;  // Claude Code billing header
                if (!system.empty() && system.back() != '\n') system += "\n";
                system += t;
            }
        } else {
            throw ApiError(400, "invalid JSON request: 'system' must be a string or an array", "system");
        }
        out.push_back({{"role", "system"}, {"content", system}});
    }
    const Json& messages = body["messages"];
    if (!messages.is_array()) throw ApiError(400, "invalid JSON request: 'messages' must be an array", "messages");
    if (messages.empty()) throw ApiError(400, "'messages' must not be empty", "messages");
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const Json& m = messages[i];
        if (!m.is_object()) throw ApiError(400, cat("invalid JSON request: messages[", i, "] must be an object"), "messages");
        const std::string role = opt_string(m, "role").value_or("");
        if (role != "user" && role != "assistant" && role != "system")
            throw ApiError(400, cat("messages[", i, "].role must be user, assistant or system"), "messages");
        const Json content = m.value("content", Json(""));
        // Claude Code (2.1.x) sends its environment text as a system message after the
        // first user turn; hoist_system_messages moves it into the leading system message.
        if (role == "system") {
            out.push_back({{"role", "system"}, {"content", text_of_blocks(content)}});
            continue;
        }
        if (content.is_string()) {
            out.push_back({{"role", role}, {"content", content}});
            continue;
        }
        if (!content.is_array())
            throw ApiError(400, cat("invalid JSON request: messages[", i, "].content must be a string or an array"), "messages");
        std::string text, thinking;
        Json calls = Json::array();
        for (const auto& b : content) {
            if (!b.is_object()) throw ApiError(400, cat("messages[", i, "].content blocks must be objects"), "messages");
            const std::string type = opt_string(b, "type").value_or("");
            if (type == "text") {
                text += opt_string(b, "text").value_or("");
            } else if (type == "thinking") {
                thinking += opt_string(b, "thinking").value_or("");
            } else if (type == "tool_use") {
                calls.push_back({{"id", opt_string(b, "id").value_or("")},
                                 {"type", "function"},
                                 {"function", {{"name", opt_string(b, "name").value_or("")},
                                               {"arguments", b.value("input", Json::object())}}}});
            } else if (type == "tool_result") {
                out.push_back({{"role", "tool"},
                               {"tool_call_id", opt_string(b, "tool_use_id").value_or("")},
                               {"content", text_of_blocks(b.value("content", Json("")))}});
            }
            // image, document, redacted_thinking…: not representable, dropped.
        }
        if (role == "assistant") {
            Json a = {{"role", "assistant"}, {"content", text}};
            if (!thinking.empty()) a["reasoning_content"] = thinking;
            if (!calls.empty()) a["tool_calls"] = calls;
            out.push_back(a);
        } else if (!text.empty() || out.empty() || out.back().value("role", "") != "tool") {
            out.push_back({{"role", "user"}, {"content", text}});
        }
    }
    return out;
}

Json anthropic_to_openai_tools(const Json& tools) {
    if (tools.is_null()) return nullptr;
    if (!tools.is_array()) throw ApiError(400, "invalid JSON request: 'tools' must be an array", "tools");
    Json out = Json::array();
    for (const auto& t : tools) {
        if (!t.is_object() || !t.contains("name")) throw ApiError(400, "invalid JSON request: each tool needs a name", "tools");
        Json f = {{"name", t["name"]}};
        if (t.contains("description")) f["description"] = t["description"];
        f["parameters"] = t.value("input_schema", Json{{"type", "object"}, {"properties", Json::object()}});
        out.push_back({{"type", "function"}, {"function", f}});
    }
    return out;
}

namespace {

struct Prepared {
    std::string model;
    ThinkingMode mode = ThinkingMode::high;
    bool tools_active = false;
    std::vector<TokenId> prompt;
    std::shared_ptr<ForcedCall> forced;
    bool prefill = false;
    bool single_call = false;  // tool_choice.disable_parallel_tool_use
    ToolReplayStats replay;
};

Prepared prepare(const ServerContext& sc, const Json& body) {
    Prepared p;
    p.model = check_model(body);
    if (!body.contains("messages") || body["messages"].is_null()) throw ApiError(400, "missing messages", "messages");
    ThinkingInputs thinking;
    read_thinking_fields(body, thinking);
    thinking.effort = opt_string(body, "reasoning_effort");
    if (auto oc = body.find("output_config"); oc != body.end() && oc->is_object())
        if (auto e = opt_string(*oc, "effort")) thinking.effort = e;
    p.mode = select_thinking(thinking, p.model, sc.ctx);
    const Json tools = anthropic_to_openai_tools(body.value("tools", Json(nullptr)));
    const ToolChoice choice = read_tool_choice(body.value("tool_choice", Json(nullptr)), tools);
    p.tools_active = choice.tools_active() && !tools.is_null();
    // A forced call is written right after </think> (Anthropic's own API refuses
    // thinking with a forced tool; here the turn simply has no reasoning).
    if (choice.forced()) p.mode = ThinkingMode::none;
    Json messages = anthropic_to_openai_messages(body);
    // A trailing assistant message is a prefill in Anthropic's API: the reply continues it.
    p.prefill = mark_prefill(messages, true);
    if (p.prefill && choice.forced()) throw ApiError(400, "tool_choice cannot force a call after an assistant prefill", "tool_choice");
    p.prompt = sc.encoder.encode_messages(std::move(messages), &tools, p.mode, p.tools_active, &p.replay);
    if (auto tc = body.find("tool_choice"); tc != body.end() && tc->is_object())
        p.single_call = opt_bool(*tc, "disable_parallel_tool_use").value_or(false);
    p.forced = force_call(sc, choice, p.prompt, p.single_call);
    return p;
}

Json usage_json(const GenResult& r) {
    return {{"input_tokens", r.prompt_tokens - r.cached_tokens},
            {"cache_creation_input_tokens", 0},
            {"cache_read_input_tokens", r.cached_tokens},
            {"output_tokens", r.completion_tokens}};
}

std::string stop_reason(const GenResult& r) {
    if (!r.stop_sequence.empty()) return "stop_sequence";
    if (r.finish == "tool_calls") return "tool_use";
    if (r.finish == "length") return "max_tokens";
    return "end_turn";
}

// tool_use.input must be an object. The DSML parser always produces one; only a forced
// call the model did not finish carries raw text, which is kept rather than dropped
// (§8 item 8) under a key no schema uses.
Json parse_arguments(const std::string& args) {
    Json j = Json::parse(args, nullptr, false);
    if (j.is_object()) return j;
    return {{"raw_arguments", args}};
}

// The SSE state: one content block open at a time.
struct MessageStream {
    std::string id, model;
    uint64_t prompt_tokens = 0;
    int index = -1;
    std::string open;  // "", "thinking", "text", "tool_use"
    bool any_visible = false;
    std::shared_ptr<ForcedCall> forced;
    std::shared_ptr<Job> job;

    void close(Sse& sse) {
        if (open.empty()) return;
        if (open == "thinking")
            sse.event("content_block_delta", {{"type", "content_block_delta"}, {"index", index},
                                              {"delta", {{"type", "signature_delta"}, {"signature", ""}}}});
        sse.event("content_block_stop", {{"type", "content_block_stop"}, {"index", index}});
        open.clear();
    }
    void start(Sse& sse, const std::string& type, Json block) {
        close(sse);
        ++index;
        open = type;
        sse.event("content_block_start", {{"type", "content_block_start"}, {"index", index}, {"content_block", block}});
    }
    void on_event(const GenEvent& ev, Sse& sse) {
        switch (ev.kind) {
            case GenKind::reasoning:
                if (open != "thinking") start(sse, "thinking", {{"type", "thinking"}, {"thinking", ""}, {"signature", ""}});
                sse.event("content_block_delta", {{"type", "content_block_delta"}, {"index", index},
                                                  {"delta", {{"type", "thinking_delta"}, {"thinking", ev.text}}}});
                break;
            case GenKind::content:
                if (open != "text") start(sse, "text", {{"type", "text"}, {"text", ""}});
                any_visible = true;
                sse.event("content_block_delta", {{"type", "content_block_delta"}, {"index", index},
                                                  {"delta", {{"type", "text_delta"}, {"text", ev.text}}}});
                break;
            case GenKind::call_begin:
                any_visible = true;
                start(sse, "tool_use", {{"type", "tool_use"}, {"id", job->call_id(ev.call)}, {"name", ev.text}, {"input", Json::object()}});
                break;
            case GenKind::arguments: {
                if (open != "tool_use") break;
                const bool raw = forced && forced->raw(ev.call);
                sse.event("content_block_delta", {{"type", "content_block_delta"}, {"index", index},
                                                  {"delta", {{"type", "input_json_delta"},
                                                             {"partial_json", raw ? json_text(parse_arguments(ev.text)) : ev.text}}}});
                break;
            }
            case GenKind::call_end: close(sse); break;
            case GenKind::calls_aborted: close(sse); break;
        }
    }
};

}  // namespace

void handle_messages(const ServerContext& sc, const httplib::Request& req, httplib::Response& res) {
    const Json body = parse_body(req.body);
    Prepared p = prepare(sc, body);
    const auto max_tokens = read_max_tokens(body, {"max_tokens"}, sc.default_max_tokens);
    GenRequest gen = make_gen_request(std::move(p.prompt), read_sampling(body, p.mode != ThinkingMode::none, true),
                                      max_tokens, p.mode, p.tools_active, read_stops(body, "stop_sequences"),
                                      sc.ctx, "messages");
    gen.call_id_prefix = "toolu_";
    gen.single_call = p.single_call;
    gen.replay = p.replay;
    if (p.forced) p.forced->configure(gen);
    if (p.prefill) gen.dsml.thinking = false;  // the open turn is past its </think>
    const uint64_t prompt_tokens = gen.prompt.size();
    const bool stream = opt_bool(body, "stream").value_or(false);
    auto job = submit(sc, std::move(gen));
    const std::string id = random_id("msg_", 24);
    const std::string model = p.model;
    if (!stream) {
        reply_when_done(res, job, [id, model, job](const auto& events, const GenResult& r) {
            const Assembled m = assemble(events, *job);
            Json content = Json::array();
            if (!m.reasoning.empty()) content.push_back({{"type", "thinking"}, {"thinking", m.reasoning}, {"signature", ""}});
            if (!m.content.empty() || m.calls.empty()) content.push_back({{"type", "text"}, {"text", m.content}});
            for (const auto& c : m.calls)
                content.push_back({{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", parse_arguments(c.arguments)}});
            return Json{{"id", id}, {"type", "message"}, {"role", "assistant"}, {"model", model}, {"content", content},
                        {"stop_reason", stop_reason(r)},
                        {"stop_sequence", r.stop_sequence.empty() ? Json(nullptr) : Json(r.stop_sequence)},
                        {"usage", usage_json(r)}};
        }, p.forced);
        return;
    }
    auto state = std::make_shared<MessageStream>();
    state->id = id;
    state->model = model;
    state->prompt_tokens = prompt_tokens;
    state->forced = p.forced;
    state->job = job;
    stream_job(res, job,
               {[state](Sse& sse) {
                    // Cache reuse is decided when the job starts; message_start reports
                    // the whole prompt as input, message_delta the final split.
                    sse.event("message_start",
                              {{"type", "message_start"},
                               {"message", {{"id", state->id}, {"type", "message"}, {"role", "assistant"},
                                            {"model", state->model}, {"content", Json::array()},
                                            {"stop_reason", nullptr}, {"stop_sequence", nullptr},
                                            {"usage", {{"input_tokens", state->prompt_tokens},
                                                       {"cache_creation_input_tokens", 0},
                                                       {"cache_read_input_tokens", 0},
                                                       {"output_tokens", 0}}}}}});
                    sse.event("ping", {{"type", "ping"}});
                },
                [state](const GenEvent& ev, Sse& sse) { state->on_event(ev, sse); },
                [state](const GenResult& r, Sse& sse) {
                    if (!state->any_visible) {
                        state->start(sse, "text", {{"type", "text"}, {"text", ""}});
                    }
                    state->close(sse);
                    if (r.finish == "error" && r.error != "cancelled") {
                        sse.event("error", {{"type", "error"}, {"error", {{"type", "api_error"}, {"message", r.error}}}});
                        return;
                    }
                    sse.event("message_delta",
                              {{"type", "message_delta"},
                               {"delta", {{"stop_reason", stop_reason(r)},
                                          {"stop_sequence", r.stop_sequence.empty() ? Json(nullptr) : Json(r.stop_sequence)}}},
                               {"usage", usage_json(r)}});
                    sse.event("message_stop", {{"type", "message_stop"}});
                },
                [](Sse& sse) { sse.event("ping", {{"type", "ping"}}); }},
               p.forced);
}

void handle_count_tokens(const ServerContext& sc, const httplib::Request& req, httplib::Response& res) {
    const Json body = parse_body(req.body);
    const Prepared p = prepare(sc, body);
    send_json(res, 200, {{"input_tokens", p.prompt.size()}});
}

}  // namespace ds4::server
