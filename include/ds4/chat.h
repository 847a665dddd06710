// ds4 chat encoding: a conversation in plain C++ types -> the prompt text DeepSeek V4 was
// trained on. The rendering is the official V4 encoder's (`encode_messages` of
// encoding/encoding_dsv4.py in the original V4 release), byte for byte: BOS, system turns
// with their tool schemas, <｜User｜>/<｜Assistant｜> turns, <think> handling, tool results
// merged into user turns, DSML tool calls. ds4's own server layout (tools before system,
// hoisted system messages, minified arguments) is deliberately NOT used; see
// interface.md §2.3 and §8 item 2 for the differences.
//
// The result is text; special tokens appear as their literal strings. Turning it into token
// ids (and deciding whether client text may contain specials) is the tokenizer's job.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ds4 {

// How the model is asked to answer.
//   none: chat mode, the generation prompt is <｜Assistant｜></think>.
//   high: thinking mode, the generation prompt is <｜Assistant｜><think>.
//   max:  thinking mode plus the Think Max prefix right after BOS (interface.md §2.1).
enum class ThinkingMode { none, high, max };

// "none", "high" or "max" (the names traces print as think_mode).
std::string_view thinking_mode_name(ThinkingMode mode);

// The model card asks for at least 384 Ki tokens of context for Think Max: its reasoning
// is long enough that a smaller window would truncate it.
inline constexpr std::uint64_t kThinkMaxMinContext = 393216;

// Think Max policy: `max` is honoured only when the session context holds at least
// kThinkMaxMinContext tokens; below that it silently degrades to `high` (normal thinking).
// `none` and `high` pass through unchanged. Callers that want to tell the user (the CLI
// warns) compare the result with what they asked for.
ThinkingMode effective_thinking_mode(ThinkingMode requested, std::uint64_t context_tokens);

// One tool call of an assistant turn, in OpenAI shape.
struct ToolCall {
    std::string id;         // matches Message::tool_call_id of the result; may be empty
    std::string name;       // function name
    std::string arguments;  // JSON text of an object, as the client sent it (key order kept)
};

// One tool offered to the model. Rendered as one JSON line in the system prompt.
struct Tool {
    // The OpenAI tool's "function" object as JSON text ({"name":…,"description":…,
    // "parameters":…}); its key order is kept, its spacing is not (the encoder
    // re-serialises it the way Python's json.dumps does).
    std::string function_json;
};

enum class Role { system, developer, user, assistant, tool, latest_reminder };

// "system", "developer", "user", "assistant", "tool" or "latest_reminder".
std::string_view role_name(Role role);

struct Message {
    Role role = Role::user;
    std::string content;
    std::string reasoning_content;     // assistant: its thinking (without <think> tags)
    std::vector<ToolCall> tool_calls;  // assistant
    std::string tool_call_id;          // tool: the call this result answers
    std::vector<Tool> tools;           // system/developer: tools rendered into this turn
    std::string response_format;       // system/developer: JSON text; empty = none
    bool prefill = false;              // assistant: no EOS, the model continues this turn
};

struct ChatOptions {
    ThinkingMode thinking = ThinkingMode::high;
    // Official drop_thinking: in thinking mode, assistant turns before the last user turn
    // lose their reasoning (and developer turns before it are dropped). Forced off when
    // any turn carries tools, because a tool loop needs its reasoning.
    bool drop_thinking = true;
};

// The rendered prompt, starting with <｜begin▁of▁sentence｜>. This is the official cold
// render: with drop_thinking, earlier reasoning is absent. A server that reuses a live KV
// state still holding that reasoning shows the model something else (interface.md §2.7);
// that choice belongs to the server, not to this function. When the conversation ends
// with a user/developer turn the text ends with the generation prompt
// <｜Assistant｜> + <think> (thinking) or </think> (chat).
// Throws ds4::Error naming the message index and field for malformed input: a developer
// turn without content, tools on a role that cannot carry them, tool-call arguments that
// are not a JSON object, a tool result with no preceding assistant tool call (or naming
// an id that call list does not have), an invalid tool schema or response_format.
std::string encode_chat(std::span<const Message> messages, const ChatOptions& options);

// The text an assistant turn adds after the generation prompt when it answers the last
// user turn: [reasoning + "</think>" in thinking modes] + content + DSML tool calls + EOS
// (no EOS with prefill). For a history ending with a user or developer turn,
//   encode_chat(history + {turn}) == encode_chat(history) + encode_assistant_turn(turn, mode),
// so a server can check that what it generated (its live KV) is what the next request will
// render (interface.md §3.10). Throws ds4::Error like encode_chat; `turn` must be an
// assistant message.
std::string encode_assistant_turn(const Message& turn, ThinkingMode mode);

// Request-level tools (OpenAI's "tools" beside "messages") placed where the official encoder
// reads them: appended to the tools of messages[0] when it is a system or developer
// message, otherwise on a new system message with empty content put in front (which the
// official template renders as BOS + "\n\n## Tools…"). No tools: no change.
void attach_request_tools(std::vector<Message>& messages, std::vector<Tool> tools);

}  // namespace ds4
