// POST /v1/completions (interface.md §6.7). The prompt is wrapped as one user turn of the
// chat template (the model has no raw-completion training). Unlike ds4 the default is
// non-thinking and `text` is the answer only (§8 item 6); with thinking requested, the
// reasoning is returned separately in `reasoning_content`.
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

std::string prompt_text(const Json& body) {
    if (!body.contains("prompt") || body["prompt"].is_null()) throw ApiError(400, "missing prompt", "prompt");
    const Json& p = body["prompt"];
    if (p.is_string()) return p.get<std::string>();
    if (p.is_array() && p.size() == 1 && p.front().is_string()) return p.front().get<std::string>();
    throw ApiError(400, "invalid JSON request: 'prompt' must be a string (or an array of one string)", "prompt");
}

}  // namespace

void handle_completions(const ServerContext& sc, const httplib::Request& req, httplib::Response& res) {
    const Json body = parse_body(req.body);
    const std::string model = check_model(body);
    const std::string prompt_str = prompt_text(body);
    ThinkingInputs thinking;
    read_thinking_fields(body, thinking);
    thinking.effort = opt_string(body, "reasoning_effort");
    // Non-thinking unless asked for.
    if (!thinking.explicit_enabled && !thinking.effort) thinking.explicit_enabled = false;
    const ThinkingMode mode = select_thinking(thinking, model, sc.ctx);
    Json messages = Json::array({{{"role", "user"}, {"content", prompt_str}}});
    std::vector<TokenId> prompt = sc.encoder.encode_messages(std::move(messages), nullptr, mode, false);
    GenRequest gen = make_gen_request(std::move(prompt), read_sampling(body, mode != ThinkingMode::none, true),
                                      read_max_tokens(body, {"max_tokens"}, sc.default_max_tokens), mode, false,
                                      read_stops(body, "stop"), sc.ctx, "prompt");
    const bool stream = opt_bool(body, "stream").value_or(false);
    bool include_usage = false;
    if (auto it = body.find("stream_options"); it != body.end() && it->is_object())
        include_usage = opt_bool(*it, "include_usage").value_or(false);

    auto job = submit(sc, std::move(gen));
    const std::string id = random_id("cmpl-", 24);
    const int64_t created = unix_now();
    auto envelope = [id, model, created](Json choices) {
        return Json{{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model},
                    {"choices", std::move(choices)}};
    };
    if (!stream) {
        reply_when_done(res, job, [envelope, job](const auto& events, const GenResult& r) {
            const Assembled m = assemble(events, *job);
            Json choice = {{"text", m.content}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", r.finish}};
            if (!m.reasoning.empty()) choice["reasoning_content"] = m.reasoning;
            Json out = envelope(Json::array({choice}));
            out["usage"] = usage_json(r);
            return out;
        });
        return;
    }
    stream_job(res, job,
               {nullptr,
                [envelope](const GenEvent& ev, Sse& sse) {
                    if (ev.kind == GenKind::content)
                        sse.data(envelope(Json::array({{{"text", ev.text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
                    else if (ev.kind == GenKind::reasoning)
                        sse.data(envelope(Json::array({{{"text", ""}, {"reasoning_content", ev.text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
                },
                [envelope, include_usage](const GenResult& r, Sse& sse) {
                    sse.data(envelope(Json::array({{{"text", ""}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", r.finish}}})));
                    if (include_usage) {
                        Json u = envelope(Json::array());
                        u["usage"] = usage_json(r);
                        sse.data(u);
                    }
                    sse.raw("data: [DONE]\n\n");
                },
                nullptr});  // keep-alive: an SSE comment
}

}  // namespace ds4::server
