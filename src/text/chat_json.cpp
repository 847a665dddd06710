#include "text/chat_json.h"

#include "ds4/error.h"

namespace ds4::text {
namespace {

using ojson = nlohmann::ordered_json;

std::string where(std::size_t index, std::string_view role) {
    return cat("chat message ", index, " (", role, ")");
}

Role role_from_name(std::string_view name, std::size_t index) {
    for (const Role r : {Role::system, Role::developer, Role::user, Role::assistant, Role::tool,
                         Role::latest_reminder})
        if (role_name(r) == name) return r;
    fail("chat message ", index, ": role: unknown role '", name,
         "' (expected system, developer, user, assistant, tool or latest_reminder)");
}

const std::string& string_field(const ojson& j, std::string_view field, const std::string& ctx) {
    if (!j.is_string()) fail(ctx, ": ", field, ": expected a string, got ", j.type_name());
    return j.get_ref<const std::string&>();
}

ToolCall tool_call_from_json(const ojson& j, const std::string& ctx) {
    if (!j.is_object()) fail(ctx, ": expected an object, got ", j.type_name());
    ToolCall call;
    if (j.contains("id") && !j["id"].is_null()) call.id = string_field(j["id"], "id", ctx);
    if (!j.contains("function") || !j["function"].is_object())
        fail(ctx, ": function: expected an object with name and arguments");
    const ojson& fn = j["function"];
    if (!fn.contains("name")) fail(ctx, ".function: name: missing");
    call.name = string_field(fn["name"], "name", ctx + ".function");
    if (!fn.contains("arguments")) fail(ctx, ".function: arguments: missing");
    const ojson& args = fn["arguments"];
    // Clients that send the arguments as an object (not the OpenAI string) get it rendered
    // as if they had sent its compact text; the key order survives in ordered_json.
    call.arguments =
        args.is_object() ? args.dump() : string_field(args, "arguments", ctx + ".function");
    return call;
}

Message message_from_json(const ojson& j, std::size_t index) {
    if (!j.is_object()) fail("chat message ", index, ": expected an object, got ", j.type_name());
    if (!j.contains("role") || !j["role"].is_string())
        fail("chat message ", index, ": role: missing or not a string");
    Message m;
    m.role = role_from_name(j["role"].get_ref<const std::string&>(), index);
    const std::string ctx = where(index, role_name(m.role));
    if (j.contains("task")) fail(ctx, ": task: internal classification tasks are not supported");
    if (j.contains("content")) m.content = content_text(j["content"], m.role, ctx);
    if (j.contains("reasoning_content") && !j["reasoning_content"].is_null())
        m.reasoning_content = string_field(j["reasoning_content"], "reasoning_content", ctx);
    if (j.contains("tool_call_id") && !j["tool_call_id"].is_null())
        m.tool_call_id = string_field(j["tool_call_id"], "tool_call_id", ctx);
    if (j.contains("tool_calls") && !j["tool_calls"].is_null()) {
        const ojson& calls = j["tool_calls"];
        if (!calls.is_array()) fail(ctx, ": tool_calls: expected an array");
        for (std::size_t k = 0; k < calls.size(); ++k)
            m.tool_calls.push_back(
                tool_call_from_json(calls[k], cat(ctx, ": tool_calls[", k, "]")));
    }
    if (j.contains("tools") && !j["tools"].is_null()) m.tools = tools_from_json(j["tools"], ctx);
    if (j.contains("response_format") && !j["response_format"].is_null())
        m.response_format = j["response_format"].dump();
    if (j.contains("wo_eos")) {
        if (!j["wo_eos"].is_boolean()) fail(ctx, ": wo_eos: expected a boolean");
        m.prefill = j["wo_eos"].get<bool>();
    }
    return m;
}

}  // namespace

std::string content_text(const nlohmann::ordered_json& content, Role role, const std::string& ctx) {
    if (content.is_null()) return {};
    if (content.is_string()) return content.get<std::string>();
    if (!content.is_array())
        fail(ctx, ": content: expected a string, null or an array of text parts, got ",
             content.type_name());
    // User text parts become separate blocks of the merged user turn, joined by "\n\n";
    // tool result parts are joined the same way by the reference encoder.
    const bool blocks = role == Role::user || role == Role::tool;
    std::string text;
    for (std::size_t k = 0; k < content.size(); ++k) {
        const ojson& part = content[k];
        const std::string part_ctx = cat(ctx, ": content[", k, "]");
        const bool text_part = part.is_object() && part.contains("type") &&
                               part["type"] == "text" && part.contains("text");
        if (!text_part)
            fail(part_ctx, ": only {\"type\": \"text\", \"text\": …} parts are supported");
        if (k > 0 && blocks) text += "\n\n";
        text += string_field(part["text"], "text", part_ctx);
    }
    return text;
}

std::vector<Tool> tools_from_json(const ojson& tools, std::string_view context) {
    if (!tools.is_array()) fail(context, ": tools: expected an array, got ", tools.type_name());
    std::vector<Tool> out;
    for (std::size_t k = 0; k < tools.size(); ++k) {
        if (!tools[k].is_object() || !tools[k].contains("function"))
            fail(context, ": tools[", k, "]: expected {\"type\": \"function\", \"function\": {…}}");
        out.push_back(Tool{tools[k]["function"].dump()});
    }
    return out;
}

std::vector<Message> messages_from_json(const ojson& messages) {
    if (!messages.is_array()) fail("chat messages: expected an array, got ", messages.type_name());
    std::vector<Message> out;
    out.reserve(messages.size());
    for (std::size_t i = 0; i < messages.size(); ++i)
        out.push_back(message_from_json(messages[i], i));
    return out;
}

std::string encode_chat_json(const ojson& messages, const ChatOptions& options) {
    const std::vector<Message> parsed = messages_from_json(messages);
    return encode_chat(parsed, options);
}

ThinkingMode thinking_mode_from_official(std::string_view thinking_mode,
                                         std::optional<std::string_view> reasoning_effort) {
    if (thinking_mode == "chat") return ThinkingMode::none;
    if (thinking_mode != "thinking")
        fail("thinking_mode: expected \"chat\" or \"thinking\", got \"", thinking_mode, "\"");
    if (!reasoning_effort || *reasoning_effort == "high") return ThinkingMode::high;
    if (*reasoning_effort == "max") return ThinkingMode::max;
    fail("reasoning_effort: expected null, \"high\" or \"max\", got \"", *reasoning_effort, "\"");
}

}  // namespace ds4::text
