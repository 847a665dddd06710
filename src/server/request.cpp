#include "server/request.h"

#include <algorithm>
#include <random>

#include "ds4/error.h"
#include "text/chat_json.h"
#include "text/dsml_render.h"
#include "text/unicode.h"

namespace ds4::server {

Json error_body(ApiStyle style, int status, const std::string& message, const std::string& param,
                const std::string& code, const Json& extra) {
    const char* type = status >= 500 ? (style == ApiStyle::anthropic ? "api_error" : "server_error")
                       : status == 401 ? "authentication_error"
                       : status == 404 ? "not_found_error"
                                       : "invalid_request_error";
    if (style == ApiStyle::anthropic) {
        if (status == 400) type = "invalid_request_error";
        Json e = {{"type", type}, {"message", message}};
        for (const auto& [k, v] : extra.items()) e[k] = v;
        return {{"type", "error"}, {"error", e}};
    }
    if (status == 404 && code != "model_not_found") type = "invalid_request_error";
    Json e = {{"message", message}, {"type", type}};
    e["param"] = param.empty() ? Json(nullptr) : Json(param);
    e["code"] = code.empty() ? Json(nullptr) : Json(code);
    for (const auto& [k, v] : extra.items()) e[k] = v;
    return {{"error", e}};
}

Json parse_body(const std::string& body) {
    Json j;
    try {
        j = Json::parse(body);
    } catch (const nlohmann::json::parse_error& e) {
        throw ApiError(400, cat("invalid JSON request: ", e.what()));
    }
    if (!j.is_object()) throw ApiError(400, "invalid JSON request: the body must be a JSON object");
    return j;
}

namespace {

[[noreturn]] void wrong_type(const char* key, const char* expected) {
    throw ApiError(400, cat("invalid JSON request: '", key, "' must be ", expected), key);
}

const Json* field(const Json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return nullptr;
    return &*it;
}

}  // namespace

std::optional<std::string> opt_string(const Json& j, const char* key) {
    const Json* v = field(j, key);
    if (!v) return std::nullopt;
    if (!v->is_string()) wrong_type(key, "a string");
    return v->get<std::string>();
}

std::optional<double> opt_number(const Json& j, const char* key) {
    const Json* v = field(j, key);
    if (!v) return std::nullopt;
    if (!v->is_number()) wrong_type(key, "a number");
    return v->get<double>();
}

std::optional<int64_t> opt_integer(const Json& j, const char* key) {
    const Json* v = field(j, key);
    if (!v) return std::nullopt;
    if (v->is_number_integer() || v->is_number_unsigned()) return v->get<int64_t>();
    if (v->is_number_float()) {
        const double d = v->get<double>();
        if (d == static_cast<double>(static_cast<int64_t>(d))) return static_cast<int64_t>(d);
    }
    wrong_type(key, "an integer");
}

std::optional<bool> opt_bool(const Json& j, const char* key) {
    const Json* v = field(j, key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) wrong_type(key, "a boolean");
    return v->get<bool>();
}

std::string check_model(const Json& body) {
    const std::string model = opt_string(body, "model").value_or(kModelId);
    if (model.empty() || model == kModelId || model == "deepseek-chat" || model == "deepseek-reasoner" ||
        model == "deepseek-v4" || model == "ds4")
        return model.empty() ? std::string(kModelId) : model;
    throw ApiError(404, cat("The model '", model, "' does not exist; this server serves '", kModelId,
                            "' (aliases: deepseek-chat without thinking, deepseek-reasoner)"),
                   "model", "model_not_found");
}

void read_thinking_fields(const Json& body, ThinkingInputs& in) {
    if (const Json* t = field(body, "thinking")) {
        if (t->is_boolean()) {
            in.explicit_enabled = t->get<bool>();
        } else if (t->is_object()) {
            const std::string type = opt_string(*t, "type").value_or("");
            if (type == "enabled" || type == "adaptive") in.explicit_enabled = true;
            else if (type == "disabled") in.explicit_enabled = false;
            else throw ApiError(400, cat("invalid JSON request: thinking.type '", type,
                                         "' (expected enabled or disabled)"), "thinking");
        } else {
            wrong_type("thinking", "a boolean or an object");
        }
    }
    if (auto think = opt_bool(body, "think")) in.explicit_enabled = *think;
}

ThinkingMode select_thinking(const ThinkingInputs& in, const std::string& model, uint64_t ctx) {
    bool enabled = true;
    ThinkingMode effort = ThinkingMode::high;
    if (in.effort) {
        const std::string& e = *in.effort;
        if (e == "max") effort = ThinkingMode::max;
        else if (e == "xhigh" || e == "high" || e == "medium" || e == "low" || e == "minimal") effort = ThinkingMode::high;
        else if (e == "none") enabled = false;
        else throw ApiError(400, cat("invalid JSON request: unknown reasoning effort '", e,
                                     "' (expected none, minimal, low, medium, high, xhigh or max)"),
                            "reasoning_effort");
    }
    const bool is_explicit = in.explicit_enabled.has_value() || in.effort_is_explicit;
    if (in.explicit_enabled) enabled = enabled && *in.explicit_enabled;
    if (!is_explicit && model == "deepseek-chat") enabled = false;
    if (!enabled) return ThinkingMode::none;
    return effective_thinking_mode(effort, ctx);
}

SamplingParams read_sampling(const Json& body, bool thinking, bool with_top_k_min_p) {
    SamplingParams p;
    if (auto v = opt_number(body, "temperature")) p.temperature = static_cast<float>(*v);
    if (auto v = opt_number(body, "top_p")) p.top_p = static_cast<float>(*v);
    if (with_top_k_min_p) {
        if (auto v = opt_integer(body, "top_k")) p.top_k = static_cast<int>(std::clamp<int64_t>(*v, -1, 1 << 20));
        if (auto v = opt_number(body, "min_p")) p.min_p = static_cast<float>(*v);
    }
    if (auto v = opt_integer(body, "seed")) p.seed = static_cast<uint64_t>(*v);
    return thinking ? thinking_mode_sampling(p) : p;
}

std::vector<std::string> read_stops(const Json& body, const char* key) {
    const Json* v = field(body, key);
    if (!v) return {};
    if (v->is_string()) return {v->get<std::string>()};
    if (!v->is_array()) wrong_type(key, "a string or an array of strings");
    std::vector<std::string> out;
    for (const auto& s : *v) {
        if (!s.is_string()) wrong_type(key, "a string or an array of strings");
        out.push_back(s.get<std::string>());
    }
    if (out.size() > 16) throw ApiError(400, cat("'", key, "' has more than 16 entries"), key);
    return out;
}

uint64_t read_max_tokens(const Json& body, std::initializer_list<const char*> keys, uint64_t fallback) {
    for (const char* k : keys) {
        if (auto v = opt_integer(body, k)) {
            if (*v < 1) throw ApiError(400, cat("'", k, "' must be at least 1"), k);
            return static_cast<uint64_t>(*v);
        }
    }
    return fallback;
}

namespace {

bool has_tool(const Json& tools, const std::string& name) {
    if (!tools.is_array()) return false;
    return std::any_of(tools.begin(), tools.end(), [&](const Json& t) {
        const Json* f = t.is_object() && t.contains("function") ? &t["function"] : &t;
        return f->is_object() && f->value("name", Json("")) == name;
    });
}

ToolChoice checked(ToolChoice c, const Json& tools) {
    if (!c.forced()) return c;
    if (!tools.is_array() || tools.empty())
        throw ApiError(400, "tool_choice forces a tool call but the request has no tools", "tool_choice");
    if (c.kind == ToolChoice::Kind::named && !has_tool(tools, c.name))
        throw ApiError(400, cat("tool_choice names '", c.name, "', which is not in 'tools'"), "tool_choice");
    if (c.kind == ToolChoice::Kind::required && tools.size() == 1) {
        const Json& t = tools[0];
        c = {ToolChoice::Kind::named, (t.contains("function") ? t["function"] : t).value("name", "")};
    }
    return c;
}

ToolChoice choice_of_type(const std::string& type) {
    if (type == "auto") return {};
    if (type == "none") return {ToolChoice::Kind::none, {}};
    if (type == "required" || type == "any") return {ToolChoice::Kind::required, {}};
    throw ApiError(400, cat("tool_choice '", type, "' is not supported (auto, none, required/any, or a named function)"),
                   "tool_choice");
}

}  // namespace

ToolChoice read_tool_choice(const Json& tool_choice, const Json& tools) {
    if (tool_choice.is_null()) return {};
    if (tool_choice.is_string()) return checked(choice_of_type(tool_choice.get<std::string>()), tools);
    if (!tool_choice.is_object())
        throw ApiError(400, "invalid JSON request: 'tool_choice' must be a string or an object", "tool_choice");
    const std::string type = opt_string(tool_choice, "type").value_or("");
    if (type == "function" || type == "tool") {
        std::optional<std::string> name = opt_string(tool_choice, "name");
        if (auto f = tool_choice.find("function"); !name && f != tool_choice.end() && f->is_object())
            name = opt_string(*f, "name");
        if (!name || name->empty()) throw ApiError(400, "tool_choice: a forced tool needs a name", "tool_choice");
        return checked({ToolChoice::Kind::named, *name}, tools);
    }
    return checked(choice_of_type(type), tools);
}

std::string forced_call_prefix(const std::string& name) {
    std::string s = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"";
    if (!name.empty()) s += text::dsml_escape_attribute(name) + "\">\n";
    return s;
}

bool mark_prefill(Json& messages, bool always) {
    if (!messages.is_array() || messages.empty() || !messages.back().is_object()) return false;
    Json& last = messages.back();
    if (last.value("role", Json("")) != "assistant") return false;
    const bool prefix = last.value("prefix", Json(false)) == Json(true);
    last.erase("prefix");
    if (!always && !prefix) return false;
    last["wo_eos"] = true;
    return true;
}

// ---- PromptEncoder ----

namespace {

// U+F0000 + i, plane 15 private use: never produced by the template.
std::string marker(std::size_t i) {
    std::string s;
    text::unicode::append_utf8(s, 0xF0000u + static_cast<uint32_t>(i));
    return s;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
    for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
        s.replace(pos, from.size(), to);
}

// A system message's text as the renderer would read it; nullopt for content it refuses
// (left in place, so messages_from_json reports it as before).
std::optional<std::string> system_text(const Json& content) {
    try {
        return text::content_text(content, Role::system, "system message");
    } catch (const ds4::Error&) {
        return std::nullopt;
    }
}

}  // namespace

// The template opens the assistant's turn only after a user or tool turn, so a system
// message after the last of those (Claude Code 2.1.x sends its environment that way)
// would leave the prompt without <｜Assistant｜>: the model would continue the system
// text. Like ds4's renderer (interface.md §2.3), system messages after the conversation
// has begun are hoisted into the leading system message, joined with a blank line.
void hoist_system_messages(Json& messages) {
    std::size_t lead = 0;
    while (lead < messages.size() && messages[lead].is_object() && messages[lead].value("role", "") == "system") ++lead;
    std::vector<std::string> moved;
    Json kept = Json::array();
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const Json& m = messages[i];
        if (i >= lead && m.is_object() && m.value("role", "") == "system") {
            if (auto text = system_text(m.value("content", Json())); text && !m.contains("tools")) {
                moved.push_back(std::move(*text));
                continue;
            }
        }
        kept.push_back(m);
    }
    if (moved.empty()) return;
    std::optional<std::string> head;
    if (lead > 0) head = system_text(kept[lead - 1].value("content", Json()));
    std::string joined = head ? *head : std::string();
    for (const std::string& t : moved) joined += (joined.empty() ? "" : "\n\n") + t;
    if (head) {
        kept[lead - 1]["content"] = joined;
    } else {
        kept.insert(kept.begin() + static_cast<std::ptrdiff_t>(lead), Json{{"role", "system"}, {"content", joined}});
    }
    messages = std::move(kept);
}

PromptEncoder::PromptEncoder(Tokenizer tok) : tok_(std::move(tok)) {
    for (TokenId id : tok_.chat_special_ids()) {
        std::string s(tok_.token_bytes(id));
        if (s.empty()) continue;
        markers_.push_back(marker(specials_.size()));
        specials_.push_back(std::move(s));
    }
}

void PromptEncoder::neutralise(Json& j) const {
    if (j.is_string()) {
        std::string& s = j.get_ref<std::string&>();
        for (std::size_t i = 0; i < specials_.size(); ++i)
            if (s.find(specials_[i]) != std::string::npos) replace_all(s, specials_[i], markers_[i]);
    } else if (j.is_structured()) {
        for (auto& v : j) neutralise(v);
    }
}

std::vector<TokenId> PromptEncoder::tokenize(const std::string& rendered) const {
    std::vector<TokenId> out;
    std::size_t from = 0;
    while (from < rendered.size()) {
        // The next marker of any kind.
        std::size_t best = std::string::npos, which = 0;
        for (std::size_t i = 0; i < markers_.size(); ++i) {
            const std::size_t p = rendered.find(markers_[i], from);
            if (p < best) best = p, which = i;
        }
        const std::size_t end = best == std::string::npos ? rendered.size() : best;
        tok_.encode_chat(std::string_view(rendered).substr(from, end - from), out);
        if (best == std::string::npos) break;
        tok_.encode_text(specials_[which], out);
        from = best + markers_[which].size();
    }
    return out;
}

std::vector<TokenId> PromptEncoder::encode_messages(Json messages, const Json* tools, ThinkingMode mode,
                                                    bool tools_active, ToolReplayStats* stats) const {
    if (!messages.is_array()) throw ApiError(400, "invalid JSON request: 'messages' must be an array", "messages");
    if (messages.empty()) throw ApiError(400, "'messages' must not be empty", "messages");
    hoist_system_messages(messages);
    neutralise(messages);
    try {
        std::vector<Message> msgs = text::messages_from_json(messages);
        if (!tools_active) {
            for (auto& m : msgs) m.tools.clear();
        } else if (tools && !tools->is_null()) {
            if (!tools->is_array()) throw ApiError(400, "invalid JSON request: 'tools' must be an array", "tools");
            Json t = *tools;
            neutralise(t);
            attach_request_tools(msgs, text::tools_from_json(t, "request"));
        }
        ChatOptions options;
        options.thinking = mode;
        std::vector<ReplaySplice> splices;
        if (memory_) splices = mark_replayed_calls(msgs, *memory_, stats);
        std::string rendered = encode_chat(msgs, options);
        splice_replayed_blocks(rendered, splices);
        return tokenize(rendered);
    } catch (const ds4::Error& e) {
        throw ApiError(400, cat("invalid request: ", e.what()), "messages");
    }
}

void PromptEncoder::append_forced_call(std::vector<TokenId>& prompt, const std::string& name) const {
    Json n = name;
    neutralise(n);
    const std::vector<TokenId> more = tokenize(forced_call_prefix(n.get<std::string>()));
    prompt.insert(prompt.end(), more.begin(), more.end());
}

GenRequest make_gen_request(std::vector<TokenId> prompt, SamplingParams sampling, uint64_t max_tokens,
                            ThinkingMode mode, bool parse_tools, std::vector<std::string> stops, uint64_t ctx,
                            const char* param) {
    if (prompt.size() + 1 >= ctx) {
        ApiError e(400, cat("Prompt has ", prompt.size(), " tokens, but the configured context size is ", ctx,
                            " tokens"), param, "context_length_exceeded");
        e.extra = {{"n_prompt_tokens", prompt.size()}, {"n_ctx", ctx}};
        throw e;
    }
    GenRequest r;
    r.max_tokens = std::min<uint64_t>(max_tokens, ctx - prompt.size() - 1);
    r.prompt = std::move(prompt);
    r.sampling = sampling;
    r.dsml.thinking = mode != ThinkingMode::none;
    r.dsml.parse_tools = parse_tools;
    r.stops = std::move(stops);
    return r;
}

std::string random_id(const char* prefix, int hex_digits) {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    static const char* hex = "0123456789abcdef";
    std::string s = prefix;
    for (int i = 0; i < hex_digits; ++i) s += hex[rng() & 15];
    return s;
}

}  // namespace ds4::server
