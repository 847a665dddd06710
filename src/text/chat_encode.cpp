// The official DeepSeek V4 encoder (encode_messages of encoding_dsv4.py, original V4
// release) over ds4::Message. The steps follow the reference in order:
//   1. validate       (ds4 addition: malformed input is an error, not a garbled prompt)
//   2. merge          user and tool messages in a row become ONE user turn of blocks
//   3. sort           tool results follow the call order of the last assistant tool calls
//   4. drop thinking  older reasoning and developer turns go, unless tools are present
//   5. render         turn by turn, each followed by its transition to the next
#include "text/chat_encode.h"

#include "ds4/error.h"
#include "text/chat_pyjson.h"
#include "text/dsml_render.h"

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

namespace ds4 {

std::string_view thinking_mode_name(ThinkingMode mode) {
    switch (mode) {
        case ThinkingMode::none:
            return "none";
        case ThinkingMode::high:
            return "high";
        case ThinkingMode::max:
            return "max";
    }
    return "unknown";
}

std::string_view role_name(Role role) {
    switch (role) {
        case Role::system:
            return "system";
        case Role::developer:
            return "developer";
        case Role::user:
            return "user";
        case Role::assistant:
            return "assistant";
        case Role::tool:
            return "tool";
        case Role::latest_reminder:
            return "latest_reminder";
    }
    return "unknown";
}

ThinkingMode effective_thinking_mode(ThinkingMode requested, std::uint64_t context_tokens) {
    if (requested == ThinkingMode::max && context_tokens < kThinkMaxMinContext)
        return ThinkingMode::high;
    return requested;
}

}  // namespace ds4

namespace ds4::text {

std::string_view reasoning_effort_prefix(ThinkingMode mode) {
    return mode == ThinkingMode::max ? kThinkMaxPrefix : std::string_view{};
}

std::string render_tools_section(std::span<const std::string> schema_lines) {
    std::string schemas;
    for (std::size_t i = 0; i < schema_lines.size(); ++i) {
        if (i > 0) schemas += '\n';
        schemas += schema_lines[i];
    }
    return cat(
        "## Tools\n\n"
        "You have access to a set of tools to help answer the user's question. You can invoke "
        "tools by writing a \"<｜DSML｜tool_calls>\" block like the following:\n\n"
        "<｜DSML｜tool_calls>\n"
        "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
        "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE"
        "</｜DSML｜parameter>\n"
        "...\n"
        "</｜DSML｜invoke>\n"
        "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
        "...\n"
        "</｜DSML｜invoke>\n"
        "</｜DSML｜tool_calls>\n\n"
        "String parameters should be specified as is and set `string=\"true\"`. For all other "
        "types (numbers, booleans, arrays, objects), pass the value in JSON format and set "
        "`string=\"false\"`.\n\n"
        "If thinking_mode is enabled (triggered by <think>), you MUST output your complete "
        "reasoning inside <think>...</think> BEFORE any tool calls or final response.\n\n"
        "Otherwise, output directly after </think> with tool calls or final response.\n\n"
        "### Available Tool Schemas\n\n",
        schemas,
        "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to "
        "invoke tool calls.\n");
}

namespace {

std::string where(std::size_t index, Role role) {
    return cat("chat message ", index, " (", role_name(role), ")");
}

// --- 1. validate, and pre-render what may fail so errors name the message ----------------

// The parts of a message that are serialised JSON, rendered once during validation.
struct Prepared {
    std::vector<std::string> schema_lines;  // one per tool
    std::string response_format;            // python_json_dumps text, empty = none
    std::string tool_calls_dsml;            // "\n\n<｜DSML｜tool_calls>…", empty = none
};

std::vector<std::string> tool_schema_lines(const Message& m, std::size_t index) {
    std::vector<std::string> lines;
    for (std::size_t j = 0; j < m.tools.size(); ++j) {
        const std::string field = cat(where(index, m.role), ": tools[", j, "]");
        const auto schema = parse_ordered_json(m.tools[j].function_json, field);
        if (!schema.is_object()) fail(field, ": expected a JSON object, got ", schema.type_name());
        lines.push_back(python_json_dumps(schema));
    }
    return lines;
}

// Python's bool(value) for a JSON value: null, false, 0, "", [] and {} are false.
bool python_truthy(const nlohmann::ordered_json& v) {
    if (v.is_null()) return false;
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_number()) return v.get<double>() != 0.0;
    if (v.is_string()) return !v.get_ref<const std::string&>().empty();
    return !v.empty();
}

// The reference renders response_format only when it is truthy.
std::string response_format_text(const Message& m, std::size_t index) {
    if (m.response_format.empty()) return {};
    const auto rf =
        parse_ordered_json(m.response_format, cat(where(index, m.role), ": response_format"));
    return python_truthy(rf) ? python_json_dumps(rf) : std::string{};
}

std::string tool_calls_text(const Message& m, std::size_t index) {
    try {
        return render_tool_calls(m.tool_calls);
    } catch (const Error& e) {
        fail(where(index, m.role), ": ", e.what());
    }
}

void check_fields_allowed(const Message& m, std::size_t index) {
    const bool carries_tools = m.role == Role::system || m.role == Role::developer;
    if (!m.tools.empty() && !carries_tools)
        fail(where(index, m.role), ": tools: only system and developer messages carry tools");
    if (!m.response_format.empty() && !carries_tools)
        fail(where(index, m.role),
             ": response_format: only system and developer messages carry a response format");
    if (m.role != Role::assistant) {
        if (!m.tool_calls.empty())
            fail(where(index, m.role), ": tool_calls: only assistant messages carry tool calls");
        if (!m.reasoning_content.empty())
            fail(where(index, m.role),
                 ": reasoning_content: only assistant messages carry reasoning");
        if (m.prefill) fail(where(index, m.role), ": prefill: only an assistant turn can be open");
    }
    if (m.role != Role::tool && !m.tool_call_id.empty())
        fail(where(index, m.role), ": tool_call_id: only tool messages answer a call");
    // The reference asserts this: a developer turn is a user turn with instructions.
    if (m.role == Role::developer && m.content.empty())
        fail(where(index, m.role), ": content: a developer message needs content");
}

// A tool result must answer a call of the most recent assistant turn that made calls.
// An empty tool_call_id is accepted (the reference then sorts it first, key 0).
void check_tool_result(const Message& m, std::size_t index, const Message* last_caller) {
    if (last_caller == nullptr)
        fail(where(index, m.role), ": tool_call_id '", m.tool_call_id,
             "': no preceding assistant message made a tool call");
    if (m.tool_call_id.empty()) return;
    const auto& calls = last_caller->tool_calls;
    const bool known = std::any_of(calls.begin(), calls.end(),
                                   [&](const ToolCall& c) { return c.id == m.tool_call_id; });
    if (!known)
        fail(where(index, m.role), ": tool_call_id '", m.tool_call_id,
             "' names no call of the preceding assistant tool calls");
}

std::vector<Prepared> validate_and_prepare(std::span<const Message> messages) {
    std::vector<Prepared> prepared(messages.size());
    const Message* last_caller = nullptr;
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const Message& m = messages[i];
        check_fields_allowed(m, i);
        if (m.role == Role::tool) check_tool_result(m, i, last_caller);
        if (m.role == Role::assistant && !m.tool_calls.empty()) last_caller = &m;
        prepared[i].schema_lines = tool_schema_lines(m, i);
        prepared[i].response_format = response_format_text(m, i);
        prepared[i].tool_calls_dsml = tool_calls_text(m, i);
    }
    return prepared;
}

// --- 2. merge ---------------------------------------------------------------------------

struct Block {
    bool tool_result = false;
    std::string_view text;
    std::string_view tool_call_id;
};

// One rendered turn: a source message, or (role user) a merged run of user/tool messages.
struct Turn {
    Role role = Role::user;
    const Message* message = nullptr;    // source for non-user turns
    const Prepared* prepared = nullptr;  // its serialised JSON parts
    std::vector<Block> blocks;           // user turns
    bool reasoning_dropped = false;
};

std::vector<Turn> merge_turns(std::span<const Message> messages, std::span<const Prepared> prep) {
    std::vector<Turn> turns;
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const Message& m = messages[i];
        if (m.role == Role::user || m.role == Role::tool) {
            const Block block{m.role == Role::tool, m.content, m.tool_call_id};
            if (turns.empty() || turns.back().role != Role::user)
                turns.push_back(Turn{Role::user, nullptr, nullptr, {}, false});
            turns.back().blocks.push_back(block);
        } else {
            turns.push_back(Turn{m.role, &m, &prep[i], {}, false});
        }
    }
    return turns;
}

// --- 3. sort tool results -----------------------------------------------------------------

// Results are stably reordered by the position of their call in the last assistant turn
// that made calls; text blocks keep their slots. Unknown ids sort as position 0, like the
// reference's dict.get(id, 0).
void sort_tool_results(std::vector<Turn>& turns) {
    std::map<std::string_view, std::size_t> call_order;
    for (Turn& turn : turns) {
        if (turn.role == Role::assistant && !turn.message->tool_calls.empty()) {
            call_order.clear();
            const auto& calls = turn.message->tool_calls;
            for (std::size_t k = 0; k < calls.size(); ++k)
                if (!calls[k].id.empty()) call_order[calls[k].id] = k;
            continue;
        }
        if (turn.role != Role::user || call_order.empty()) continue;
        std::vector<Block> results;
        for (const Block& b : turn.blocks)
            if (b.tool_result) results.push_back(b);
        if (results.size() < 2) continue;
        const auto position = [&](const Block& b) {
            const auto it = call_order.find(b.tool_call_id);
            return it == call_order.end() ? std::size_t{0} : it->second;
        };
        std::stable_sort(results.begin(), results.end(),
                         [&](const Block& a, const Block& b) { return position(a) < position(b); });
        std::size_t next = 0;
        for (Block& b : turn.blocks)
            if (b.tool_result) b = results[next++];
    }
}

// --- 4. drop thinking -------------------------------------------------------------------

std::optional<std::size_t> last_user_index(const std::vector<Turn>& turns) {
    for (std::size_t i = turns.size(); i-- > 0;)
        if (turns[i].role == Role::user || turns[i].role == Role::developer) return i;
    return std::nullopt;
}

// Before the last user turn: assistant turns lose their reasoning, developer turns vanish.
void drop_thinking(std::vector<Turn>& turns) {
    const auto last_user = last_user_index(turns);
    if (!last_user) return;
    std::vector<Turn> kept;
    for (std::size_t i = 0; i < turns.size(); ++i) {
        Turn& t = turns[i];
        if (i < *last_user && t.role == Role::developer) continue;
        if (i < *last_user && t.role == Role::assistant) t.reasoning_dropped = true;
        kept.push_back(std::move(t));
    }
    turns = std::move(kept);
}

// --- 5. render --------------------------------------------------------------------------

struct RenderState {
    bool thinking = false;
    bool drop = false;  // effective drop_thinking
    std::optional<std::size_t> last_user;
};

void append_instructions(std::string& out, const Turn& t) {
    if (!t.prepared->schema_lines.empty())
        out += "\n\n" + render_tools_section(t.prepared->schema_lines);
    if (!t.prepared->response_format.empty())
        out +=
            cat("\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema "
                "to reply:\n",
                t.prepared->response_format);
}

void append_user(std::string& out, const Turn& t) {
    out += kUserToken;
    for (std::size_t k = 0; k < t.blocks.size(); ++k) {
        if (k > 0) out += "\n\n";
        if (t.blocks[k].tool_result) out += "<tool_result>";
        out += t.blocks[k].text;
        if (t.blocks[k].tool_result) out += "</tool_result>";
    }
}

void append_assistant(std::string& out, const Turn& t, std::size_t index, const RenderState& s) {
    const Message& m = *t.message;
    // The <think> opener was written by the preceding transition; only the reasoning and
    // its close belong to the turn. Dropped turns were opened with </think> instead.
    const bool after_last_user = !s.last_user || index > *s.last_user;
    if (s.thinking && (!s.drop || after_last_user)) {
        if (!t.reasoning_dropped) out += m.reasoning_content;
        out += kThinkClose;
    }
    out += m.content;
    out += t.prepared->tool_calls_dsml;
    if (!m.prefill) out += kEos;
}

void append_turn(std::string& out, const Turn& t, std::size_t index, const RenderState& s) {
    switch (t.role) {
        case Role::system:
            out += t.message->content;
            append_instructions(out, t);
            return;
        case Role::developer:
            out += kUserToken;
            out += t.message->content;
            append_instructions(out, t);
            return;
        case Role::user:
            append_user(out, t);
            return;
        case Role::latest_reminder:
            out += kLatestReminderToken;
            out += t.message->content;
            return;
        case Role::assistant:
            append_assistant(out, t, index, s);
            return;
        case Role::tool:
            break;  // merged into user turns
    }
}

// After a user/developer turn that ends the conversation or is answered by an assistant
// (or followed by a latest_reminder), the assistant's turn opens: <think> in thinking mode
// for the current question, </think> otherwise (older turns whose reasoning is dropped).
void append_transition(std::string& out, const std::vector<Turn>& turns, std::size_t index,
                       const RenderState& s) {
    if (index + 1 < turns.size()) {
        const Role next = turns[index + 1].role;
        if (next != Role::assistant && next != Role::latest_reminder) return;
    }
    const Role role = turns[index].role;
    if (role != Role::user && role != Role::developer) return;
    out += kAssistantToken;
    const bool current = s.last_user && index >= *s.last_user;
    out += s.thinking && (!s.drop || current) ? kThinkOpen : kThinkClose;
}

}  // namespace
}  // namespace ds4::text

namespace ds4 {

std::string encode_chat(std::span<const Message> messages, const ChatOptions& options) {
    using namespace text;
    const std::vector<Prepared> prepared = validate_and_prepare(messages);
    std::vector<Turn> turns = merge_turns(messages, prepared);
    sort_tool_results(turns);

    RenderState state;
    state.thinking = options.thinking != ThinkingMode::none;
    // A tool loop needs its reasoning, so tools anywhere keep every turn's thinking.
    const bool any_tools = std::any_of(messages.begin(), messages.end(),
                                       [](const Message& m) { return !m.tools.empty(); });
    state.drop = options.drop_thinking && !any_tools;
    if (state.thinking && state.drop) drop_thinking(turns);
    state.last_user = last_user_index(turns);

    std::string out(kBos);
    // The reference writes the prefix as part of message 0, so an empty chat has none.
    if (state.thinking && !turns.empty()) out += reasoning_effort_prefix(options.thinking);
    for (std::size_t i = 0; i < turns.size(); ++i) {
        append_turn(out, turns[i], i, state);
        append_transition(out, turns, i, state);
    }
    return out;
}

std::string encode_assistant_turn(const Message& turn, ThinkingMode mode) {
    using namespace text;
    if (turn.role != Role::assistant)
        fail("encode_assistant_turn: expected an assistant message, got ", role_name(turn.role));
    const std::vector<Prepared> prepared = validate_and_prepare(std::span(&turn, 1));
    const Turn t{Role::assistant, &turn, &prepared[0], {}, false};
    RenderState state;
    state.thinking = mode != ThinkingMode::none;
    std::string out;
    append_assistant(out, t, 0, state);  // no user turn at all: counts as after the last one
    return out;
}

void attach_request_tools(std::vector<Message>& messages, std::vector<Tool> tools) {
    if (tools.empty()) return;
    const bool first_carries = !messages.empty() && (messages.front().role == Role::system ||
                                                     messages.front().role == Role::developer);
    if (first_carries) {
        auto& dest = messages.front().tools;
        for (Tool& t : tools) dest.push_back(std::move(t));
        return;
    }
    std::vector<Message> with_system;
    with_system.reserve(messages.size() + 1);
    Message& system = with_system.emplace_back();
    system.role = Role::system;
    system.tools = std::move(tools);
    for (Message& m : messages) with_system.push_back(std::move(m));
    messages = std::move(with_system);
}

}  // namespace ds4
