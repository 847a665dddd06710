// OpenAI-shaped chat messages (JSON) -> ds4::Message, for the server and the fixture tests.
// Parse request bodies with nlohmann::ordered_json: the encoder reproduces the client's key
// order in tool schemas, and nlohmann::json would sort it.
#pragma once

#include "ds4/chat.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::text {

// Accepted per message (other keys, e.g. "name", are ignored):
//   role               "system" | "developer" | "user" | "assistant" | "tool" | "latest_reminder"
//   content            string, null (= ""), or an array of {"type":"text","text":…} parts;
//                      parts are joined with "\n\n" for user and tool messages (the official
//                      encoder's block separator) and with "" otherwise
//   reasoning_content  string or null (assistant)
//   tool_calls         [{"id", "type", "function": {"name", "arguments"}}] (assistant);
//                      arguments is JSON text, or an object (then serialised in its order)
//   tool_call_id       string (tool)
//   tools              [{"type": "function", "function": {…}}] (system/developer)
//   response_format    any JSON (system/developer)
//   wo_eos             bool (assistant): the official encoder's open final turn = prefill
// Throws ds4::Error "chat message N (role): FIELD: …" for anything else malformed.
std::vector<Message> messages_from_json(const nlohmann::ordered_json& messages);

// One message's `content` as messages_from_json reads it for `role` (the rules above);
// `ctx` prefixes the ds4::Error it throws for anything else.
std::string content_text(const nlohmann::ordered_json& content, Role role, const std::string& ctx);

// An OpenAI "tools" array ([{"type": "function", "function": {…}}]) -> Tools; `context`
// prefixes error messages (e.g. "request").
std::vector<Tool> tools_from_json(const nlohmann::ordered_json& tools, std::string_view context);

// messages_from_json + encode_chat.
std::string encode_chat_json(const nlohmann::ordered_json& messages, const ChatOptions& options);

// The official encoder's knobs -> ThinkingMode: thinking_mode "chat" -> none (effort is
// ignored, as the encoder does); "thinking" with effort null/"high" -> high, "max" -> max.
ThinkingMode thinking_mode_from_official(std::string_view thinking_mode,
                                         std::optional<std::string_view> reasoning_effort);

}  // namespace ds4::text
