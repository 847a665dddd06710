// POST /v1/responses (OpenAI Responses, interface.md §6.8) with the §8 item 15 fixes:
// `event:` lines on every SSE event and function-call arguments streamed as they are
// generated. No server-side response store: previous_response_id is refused.
#include <set>

#include "server/http.h"

namespace ds4::server {

namespace {

std::string content_text(const Json& content, std::size_t i) {
    if (content.is_null()) return "";
    if (content.is_string()) return content.get<std::string>();
    if (!content.is_array()) throw ApiError(400, cat("input[", i, "].content must be a string or an array"), "input");
    std::string out;
    for (const auto& part : content) {
        if (part.is_string()) {
            out += part.get<std::string>();
            continue;
        }
        const std::string type = part.is_object() ? part.value("type", "") : "";
        if (type != "input_text" && type != "output_text" && type != "text" && type != "summary_text" &&
            type != "reasoning_text")
            throw ApiError(400, cat("input[", i, "].content: part type '", type, "' is not supported (text only)"), "input");
        if (part.contains("text") && part["text"].is_string()) out += part["text"].get<std::string>();
    }
    return out;
}

std::string output_text(const Json& output) {
    if (output.is_string()) return output.get<std::string>();
    if (output.is_array()) return content_text(output, 0);
    return output.dump();
}

// Items of hosted tools this server does not run; they are skipped in the input.
bool is_hosted_call(const std::string& type) {
    for (const char* t : {"web_search_call", "file_search_call", "computer_call", "computer_call_output",
                          "code_interpreter_call", "image_generation_call", "mcp_call", "mcp_list_tools",
                          "mcp_approval_request", "mcp_approval_response", "tool_search_call", "tool_search_output"})
        if (type == t) return true;
    return false;
}

}  // namespace

// Responses input items → OpenAI-shaped messages.
Json responses_to_openai_messages(const Json& body) {
    Json out = Json::array();
    if (auto ins = opt_string(body, "instructions")) out.push_back({{"role", "system"}, {"content", *ins}});
    const Json& input = body["input"];
    if (input.is_string()) {
        out.push_back({{"role", "user"}, {"content", input}});
        return out;
    }
    if (!input.is_array()) throw ApiError(400, "invalid JSON request: 'input' must be a string or an array", "input");
    std::string pending_reasoning;
    auto last_assistant = [&]() -> Json& {
        if (out.empty() || out.back()["role"] != "assistant") {
            out.push_back({{"role", "assistant"}, {"content", ""}});
        }
        Json& a = out.back();
        if (!pending_reasoning.empty()) {
            a["reasoning_content"] = a.value("reasoning_content", "") + pending_reasoning;
            pending_reasoning.clear();
        }
        return a;
    };
    for (std::size_t i = 0; i < input.size(); ++i) {
        const Json& item = input[i];
        if (!item.is_object()) throw ApiError(400, cat("input[", i, "] must be an object"), "input");
        const std::string type = item.value("type", "message");
        if (type == "message") {
            std::string role = item.value("role", "user");
            const std::string text = content_text(item.value("content", Json(nullptr)), i);
            if (role == "assistant") {
                Json& a = last_assistant();
                a["content"] = a["content"].get<std::string>() + text;
            } else {
                if (role != "system" && role != "developer") role = "user";
                if (!pending_reasoning.empty()) last_assistant();
                out.push_back({{"role", role == "developer" ? "system" : role}, {"content", text}});
            }
        } else if (type == "reasoning") {
            for (const char* key : {"summary", "content"})
                if (item.contains(key) && item[key].is_array()) {
                    const std::string t = content_text(item[key], i);
                    if (!t.empty()) pending_reasoning += (pending_reasoning.empty() ? "" : "\n") + t;
                }
        } else if (type == "function_call" || type == "custom_tool_call") {
            Json& a = last_assistant();
            const std::string call_id = item.value("call_id", item.value("id", ""));
            Json args = type == "function_call" ? item.value("arguments", Json("{}"))
                                                : Json(Json{{"input", item.value("input", "")}}.dump());
            if (!a.contains("tool_calls")) a["tool_calls"] = Json::array();
            a["tool_calls"].push_back({{"id", call_id}, {"type", "function"},
                                       {"function", {{"name", item.value("name", "")}, {"arguments", args}}}});
        } else if (type == "local_shell_call") {
            // Codex's hosted shell: replayed as a call of a "local_shell" function whose
            // arguments are the action object, so the model sees what it ran.
            Json& a = last_assistant();
            if (!a.contains("tool_calls")) a["tool_calls"] = Json::array();
            a["tool_calls"].push_back({{"id", item.value("call_id", item.value("id", ""))}, {"type", "function"},
                                       {"function", {{"name", "local_shell"},
                                                     {"arguments", item.value("action", Json::object()).dump()}}}});
        } else if (type == "function_call_output" || type == "custom_tool_call_output" ||
                   type == "local_shell_call_output") {
            if (!pending_reasoning.empty()) last_assistant();
            out.push_back({{"role", "tool"}, {"tool_call_id", item.value("call_id", "")},
                           {"content", output_text(item.value("output", Json("")))}});
        } else if (type == "compaction" || type == "context_compaction" || is_hosted_call(type)) {
            // Hosted tool activity (web search, …) ran elsewhere and has no DSML form; the
            // model sees the text around it.
            continue;
        } else {
            throw ApiError(400, cat("input[", i, "]: item type '", type, "' is not supported"), "input");
        }
    }
    // Reasoning with nothing after it has no turn to belong to; rendering it as an empty
    // trailing assistant turn would close that turn before the reply (§8 item 4).
    return out;
}

Json responses_to_openai_tools(const Json& tools) {
    if (tools.is_null()) return nullptr;
    if (!tools.is_array()) throw ApiError(400, "invalid JSON request: 'tools' must be an array", "tools");
    Json out = Json::array();
    for (const auto& t : tools) {
        if (!t.is_object()) throw ApiError(400, "invalid JSON request: tools must be objects", "tools");
        if (t.contains("function")) {
            out.push_back(t);
            continue;
        }
        const std::string type = t.value("type", "");
        if (type != "function" && type != "custom") continue;  // hosted tools have no schema to render
        Json f = {{"name", t.value("name", "")}};
        if (type == "custom") {
            // A freeform tool (Codex's apply_patch): one string parameter, `input`; the
            // call comes back as a custom_tool_call with that string.
            std::string description = t.value("description", "");
            if (auto fmt = t.find("format"); fmt != t.end() && fmt->is_object() && fmt->value("type", "") == "grammar")
                description += cat("\n\nThe input must follow this ", fmt->value("syntax", "grammar"), " grammar:\n",
                                   fmt->value("definition", ""));
            f["description"] = description;
            f["parameters"] = {{"type", "object"},
                               {"properties", {{"input", {{"type", "string"}, {"description", "the raw tool input"}}}}},
                               {"required", {"input"}}};
        } else {
            if (t.contains("description")) f["description"] = t["description"];
            f["parameters"] = t.value("parameters", Json{{"type", "object"}, {"properties", Json::object()}});
        }
        out.push_back({{"type", "function"}, {"function", f}});
    }
    return out.empty() ? Json(nullptr) : out;
}

namespace {

// Names of the request's custom (freeform) tools.
std::set<std::string> custom_tool_names(const Json& tools) {
    std::set<std::string> names;
    if (tools.is_array())
        for (const auto& t : tools)
            if (t.is_object() && t.value("type", "") == "custom") names.insert(t.value("name", ""));
    return names;
}

// The `input` string of a custom tool call's arguments (the raw text if they are not
// {"input": string}).
std::string custom_input(const std::string& arguments) {
    const Json j = Json::parse(arguments, nullptr, false);
    if (j.is_object() && j.contains("input") && j["input"].is_string()) return j["input"].get<std::string>();
    return arguments;
}

}  // namespace

namespace {

// reasoning_tokens: the reasoning text re-tokenized (the sampled ids are not kept per
// kind; re-encoding decoded model output gives the same count but for rare merges).
Json usage_json(const GenResult& r, uint64_t reasoning_tokens) {
    return {{"input_tokens", r.prompt_tokens},
            {"input_tokens_details", {{"cached_tokens", r.cached_tokens}}},
            {"output_tokens", r.completion_tokens},
            {"output_tokens_details", {{"reasoning_tokens", std::min<uint64_t>(reasoning_tokens, r.completion_tokens)}}},
            {"total_tokens", r.prompt_tokens + r.completion_tokens}};
}

std::string status_of(const GenResult& r) {
    return r.finish == "length" ? "incomplete" : r.finish == "error" ? "failed" : "completed";
}

// The SSE state and the final response object (built from the same items).
struct ResponseStream {
    std::string id, model;
    int64_t created = 0;
    bool summary = false;
    int seq = 0;
    Json output = Json::array();  // final items, in output_index order
    int reasoning_index = -1, message_index = -1;
    std::map<std::size_t, int> call_index;  // DSML call -> output index
    std::set<std::string> custom_tools;     // names of the request's freeform tools
    std::map<std::size_t, std::string> custom_args;
    std::string reasoning, text;
    std::string reasoning_seen;        // all reasoning, for usage.reasoning_tokens
    const Tokenizer* tokenizer = nullptr;
    std::shared_ptr<Job> job;
    Json previous;                  // previous_response_id, echoed
    ResponseStore* store = nullptr;  // store: true
    Json input_items;               // the whole conversation this response answered

    Json response(const std::string& status) const {
        return {{"id", id}, {"object", "response"}, {"created_at", created}, {"status", status},
                {"model", model}, {"previous_response_id", previous}, {"store", store != nullptr}, {"output", output}};
    }
    void send(Sse& sse, const std::string& type, Json payload) {
        Json e = {{"type", type}, {"sequence_number", seq++}};
        for (auto& [k, v] : payload.items()) e[k] = v;
        sse.event(type, e);
    }
    int add_item(Sse* sse, Json item) {
        output.push_back(item);
        const int index = static_cast<int>(output.size()) - 1;
        if (sse) send(*sse, "response.output_item.added", {{"output_index", index}, {"item", item}});
        return index;
    }
    void on_event(const GenEvent& ev, Sse* sse) {
        switch (ev.kind) {
            case GenKind::reasoning:
                reasoning_seen += ev.text;
                if (!summary) break;
                if (reasoning_index < 0) {
                    reasoning_index = add_item(sse, {{"id", random_id("rs_")}, {"type", "reasoning"}, {"status", "in_progress"}, {"summary", Json::array()}});
                    if (sse) send(*sse, "response.reasoning_summary_part.added",
                                  {{"item_id", output[reasoning_index]["id"]}, {"output_index", reasoning_index},
                                   {"summary_index", 0}, {"part", {{"type", "summary_text"}, {"text", ""}}}});
                }
                reasoning += ev.text;
                if (sse) send(*sse, "response.reasoning_summary_text.delta",
                              {{"item_id", output[reasoning_index]["id"]}, {"output_index", reasoning_index},
                               {"summary_index", 0}, {"delta", ev.text}});
                break;
            case GenKind::content:
                if (message_index < 0) {
                    message_index = add_item(sse, {{"id", random_id("msg_")}, {"type", "message"}, {"status", "in_progress"},
                                                   {"role", "assistant"}, {"content", Json::array()}});
                    if (sse) send(*sse, "response.content_part.added",
                                  {{"item_id", output[message_index]["id"]}, {"output_index", message_index},
                                   {"content_index", 0}, {"part", {{"type", "output_text"}, {"text", ""}, {"annotations", Json::array()}}}});
                }
                text += ev.text;
                if (sse) send(*sse, "response.output_text.delta",
                              {{"item_id", output[message_index]["id"]}, {"output_index", message_index},
                               {"content_index", 0}, {"delta", ev.text}});
                break;
            case GenKind::call_begin:
                if (custom_tools.count(ev.text)) {
                    custom_args[ev.call].clear();
                    call_index[ev.call] = add_item(sse, {{"id", random_id("ctc_")}, {"type", "custom_tool_call"}, {"status", "in_progress"},
                                                         {"name", ev.text}, {"call_id", job->call_id(ev.call)}, {"input", ""}});
                    break;
                }
                call_index[ev.call] = add_item(sse, {{"id", random_id("fc_")}, {"type", "function_call"}, {"status", "in_progress"},
                                                     {"name", ev.text}, {"call_id", job->call_id(ev.call)}, {"arguments", ""}});
                break;
            case GenKind::arguments: {
                auto it = call_index.find(ev.call);
                if (it == call_index.end()) break;
                if (auto c = custom_args.find(ev.call); c != custom_args.end()) {
                    c->second += ev.text;  // {"input": "..."}: sent whole, unwrapped, at call_end
                    break;
                }
                Json& item = output[it->second];
                item["arguments"] = item["arguments"].get<std::string>() + ev.text;
                if (sse) send(*sse, "response.function_call_arguments.delta",
                              {{"item_id", item["id"]}, {"output_index", it->second}, {"delta", ev.text}});
                break;
            }
            case GenKind::call_end: {
                auto it = call_index.find(ev.call);
                if (it == call_index.end()) break;
                Json& item = output[it->second];
                item["status"] = "completed";
                if (auto c = custom_args.find(ev.call); c != custom_args.end()) {
                    item["input"] = custom_input(c->second);
                    if (sse) {
                        send(*sse, "response.custom_tool_call_input.delta",
                             {{"item_id", item["id"]}, {"output_index", it->second}, {"delta", item["input"]}});
                        send(*sse, "response.custom_tool_call_input.done",
                             {{"item_id", item["id"]}, {"output_index", it->second}, {"input", item["input"]}});
                        send(*sse, "response.output_item.done", {{"output_index", it->second}, {"item", item}});
                    }
                    break;
                }
                if (sse) {
                    send(*sse, "response.function_call_arguments.done",
                         {{"item_id", item["id"]}, {"output_index", it->second}, {"name", item["name"]}, {"arguments", item["arguments"]}});
                    send(*sse, "response.output_item.done", {{"output_index", it->second}, {"item", item}});
                }
                break;
            }
            case GenKind::calls_aborted:
                // Withdrawn calls stay in the stream's history but not in the final output.
                for (auto it = call_index.begin(); it != call_index.end();) {
                    if (it->first >= ev.call) {
                        output[it->second]["status"] = "incomplete";
                        it = call_index.erase(it);
                    } else {
                        ++it;
                    }
                }
                break;
        }
    }
    void finish(const GenResult& r, Sse* sse) {
        const std::string item_status = r.finish == "length" || r.finish == "error" ? "incomplete" : "completed";
        if (reasoning_index >= 0) {
            Json& item = output[reasoning_index];
            item["status"] = item_status;
            item["summary"] = Json::array({{{"type", "summary_text"}, {"text", reasoning}}});
            if (sse) {
                send(*sse, "response.reasoning_summary_text.done", {{"item_id", item["id"]}, {"output_index", reasoning_index}, {"summary_index", 0}, {"text", reasoning}});
                send(*sse, "response.reasoning_summary_part.done", {{"item_id", item["id"]}, {"output_index", reasoning_index}, {"summary_index", 0}, {"part", item["summary"][0]}});
                send(*sse, "response.output_item.done", {{"output_index", reasoning_index}, {"item", item}});
            }
        }
        if (message_index >= 0) {
            Json& item = output[message_index];
            item["status"] = item_status;
            Json part = {{"type", "output_text"}, {"text", text}, {"annotations", Json::array()}};
            item["content"] = Json::array({part});
            if (sse) {
                send(*sse, "response.output_text.done", {{"item_id", item["id"]}, {"output_index", message_index}, {"content_index", 0}, {"text", text}});
                send(*sse, "response.content_part.done", {{"item_id", item["id"]}, {"output_index", message_index}, {"content_index", 0}, {"part", part}});
                send(*sse, "response.output_item.done", {{"output_index", message_index}, {"item", item}});
            }
        }
        // Drop withdrawn or unfinished calls from the final output.
        Json kept = Json::array();
        for (auto& item : output)
            if ((item["type"] != "function_call" && item["type"] != "custom_tool_call") || item["status"] == "completed")
                kept.push_back(item);
        output = kept;
        Json resp = response(status_of(r));
        if (r.finish == "length") resp["incomplete_details"] = {{"reason", "max_output_tokens"}};
        if (r.finish == "error") resp["error"] = {{"code", "server_error"}, {"message", r.error}};
        std::vector<TokenId> ids;
        if (tokenizer && !reasoning_seen.empty()) tokenizer->encode_text(reasoning_seen, ids);
        resp["usage"] = usage_json(r, ids.size());
        final_response = resp;
        if (store && r.finish != "error") store->put(id, conversation_items(input_items));
        if (sse) send(*sse, "response." + status_of(r), {{"response", resp}});
    }
    Json final_response;

    // What a later request with previous_response_id continues from: the input items,
    // then the output items (the reasoning as a reasoning item even when no summary was
    // asked for, so the next turn renders it).
    Json conversation_items(const Json& inputs) const {
        Json items = inputs;
        bool has_reasoning = false;
        for (const auto& item : output) has_reasoning = has_reasoning || item["type"] == "reasoning";
        if (!has_reasoning && !reasoning_seen.empty())
            items.push_back({{"type", "reasoning"}, {"summary", Json::array()},
                             {"content", Json::array({{{"type", "reasoning_text"}, {"text", reasoning_seen}}})}});
        for (const auto& item : output) items.push_back(item);
        return items;
    }
};

// The request's input as items: a string is one user message.
Json input_items(const Json& input) {
    if (input.is_string()) return Json::array({{{"type", "message"}, {"role", "user"}, {"content", input}}});
    if (!input.is_array()) throw ApiError(400, "invalid JSON request: 'input' must be a string or an array", "input");
    return input;
}

// previous_response_id: the stored conversation followed by this request's input.
// Unknown ids are a 404 naming the id (OpenAI's code previous_response_not_found).
Json continued_input(const ServerContext& sc, const Json& body) {
    Json items = input_items(body["input"]);
    const std::optional<std::string> prev = opt_string(body, "previous_response_id");
    if (!prev) return items;
    std::optional<Json> stored = sc.responses ? sc.responses->get(*prev) : std::nullopt;
    if (!stored)
        throw ApiError(404, cat("Previous response with id '", *prev, "' not found."), "previous_response_id",
                       "previous_response_not_found");
    for (auto& item : items) stored->push_back(std::move(item));
    return *stored;
}

}  // namespace

void handle_responses(const ServerContext& sc, const httplib::Request& req, httplib::Response& res) {
    const Json body = parse_body(req.body);
    const std::string model = check_model(body);
    if (!body.contains("input") || body["input"].is_null()) throw ApiError(400, "missing input", "input");
    if (body.contains("conversation") && !body["conversation"].is_null())
        throw ApiError(400, "conversation is not supported; use previous_response_id or replay the full input",
                       "conversation");
    Json full = body;
    full["input"] = continued_input(sc, body);
    const bool store = opt_bool(body, "store").value_or(true);
    ThinkingInputs thinking;
    bool summary = false;
    if (auto r = body.find("reasoning"); r != body.end() && !r->is_null()) {
        if (!r->is_object()) throw ApiError(400, "invalid JSON request: 'reasoning' must be an object", "reasoning");
        thinking.effort = opt_string(*r, "effort");
        thinking.effort_is_explicit = thinking.effort.has_value();
        const std::string s = opt_string(*r, "summary").value_or("");
        summary = s == "auto" || s == "concise" || s == "detailed";
    }
    const ThinkingMode selected = select_thinking(thinking, model, sc.ctx);
    const Json tools = responses_to_openai_tools(body.value("tools", Json(nullptr)));
    const ToolChoice choice = read_tool_choice(body.value("tool_choice", Json(nullptr)), tools);
    const bool tools_active = choice.tools_active() && !tools.is_null();
    const ThinkingMode mode = choice.forced() ? ThinkingMode::none : selected;  // see openai_chat.cpp
    ToolReplayStats replay;
    std::vector<TokenId> prompt =
        sc.encoder.encode_messages(responses_to_openai_messages(full), &tools, mode, tools_active, &replay);
    const bool single_call = read_single_call(body);
    auto forced = force_call(sc, choice, prompt, single_call);
    GenRequest gen = make_gen_request(std::move(prompt), read_sampling(body, mode != ThinkingMode::none, false),
                                      read_max_tokens(body, {"max_output_tokens", "max_tokens"}, sc.default_max_tokens),
                                      mode, tools_active, {}, sc.ctx, "input");
    gen.single_call = single_call;
    gen.replay = replay;
    if (forced) forced->configure(gen);
    const bool stream = opt_bool(body, "stream").value_or(false);
    auto job = submit(sc, std::move(gen));
    auto state = std::make_shared<ResponseStream>();
    state->id = random_id("resp_");
    state->model = model;
    state->created = unix_now();
    state->summary = summary;
    state->tokenizer = &sc.encoder.tokenizer();
    state->job = job;
    state->custom_tools = custom_tool_names(body.value("tools", Json(nullptr)));
    state->previous = body.value("previous_response_id", Json(nullptr));
    if (store && sc.responses) {
        state->store = sc.responses;
        state->input_items = full["input"];
    }
    if (!stream) {
        reply_when_done(res, job, [state](const auto& events, const GenResult& r) {
            for (const auto& ev : events) state->on_event(ev, nullptr);
            state->finish(r, nullptr);
            return state->final_response;
        }, forced);
        return;
    }
    stream_job(res, job,
               {[state](Sse& sse) {
                    state->send(sse, "response.created", {{"response", state->response("in_progress")}});
                    state->send(sse, "response.in_progress", {{"response", state->response("in_progress")}});
                },
                [state](const GenEvent& ev, Sse& sse) { state->on_event(ev, &sse); },
                [state](const GenResult& r, Sse& sse) { state->finish(r, &sse); },
                [state](Sse& sse) {
                    state->send(sse, "response.in_progress", {{"response", state->response("in_progress")}});
                }},
               forced);
}

}  // namespace ds4::server
