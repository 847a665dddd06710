// Internal constants of the official V4 chat template (interface.md §2.1, §2.2), shared by
// the encoder and its tests. The public entry point is ds4::encode_chat (ds4/chat.h).
#pragma once

#include "ds4/chat.h"

#include <string_view>

namespace ds4::text {

inline constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kUserToken = "<｜User｜>";
inline constexpr std::string_view kAssistantToken = "<｜Assistant｜>";
inline constexpr std::string_view kLatestReminderToken = "<｜latest_reminder｜>";
inline constexpr std::string_view kThinkOpen = "<think>";
inline constexpr std::string_view kThinkClose = "</think>";

// REASONING_EFFORT_MAX of the original V4 encoder: three lines and a blank line. A later
// official revision moved this text to "high" and wrote a new "max" text (§2.9); ds4
// follows the original release, so only `max` has a prefix.
inline constexpr std::string_view kThinkMaxPrefix =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n";

// The text a thinking mode puts right after BOS: kThinkMaxPrefix for max, nothing otherwise.
std::string_view reasoning_effort_prefix(ThinkingMode mode);

// The official tools section (TOOLS_TEMPLATE) for the given schema lines, each one a
// python_json_dumps of a tool's function object. Ends with a newline.
std::string render_tools_section(std::span<const std::string> schema_lines);

}  // namespace ds4::text
