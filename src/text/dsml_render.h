// Tool calls -> DSML text, the markup DeepSeek V4 writes its tool calls in (interface.md §3.1):
//
//   \n\n<｜DSML｜tool_calls>\n
//   <｜DSML｜invoke name="NAME">\n
//   <｜DSML｜parameter name="KEY" string="true|false">VALUE</｜DSML｜parameter>\n   (per key)
//   </｜DSML｜invoke>\n                                                           (per call)
//   </｜DSML｜tool_calls>
//
// Used to replay earlier assistant tool calls into a prompt. The DSML parser
// (dsml_parse.h) is the inverse: parsing render_tool_calls(calls) gives back the calls.
#pragma once

#include "ds4/chat.h"

#include <span>
#include <string>
#include <string_view>

namespace ds4::text {

inline constexpr std::string_view kDsmlToken = "｜DSML｜";
inline constexpr std::string_view kDsmlToolCallsOpen = "<｜DSML｜tool_calls>";
inline constexpr std::string_view kDsmlToolCallsClose = "</｜DSML｜tool_calls>";
inline constexpr std::string_view kDsmlInvokeClose = "</｜DSML｜invoke>";
inline constexpr std::string_view kDsmlParameterClose = "</｜DSML｜parameter>";

enum class DsmlStyle {
    // The official V4 encoder (encode_arguments_to_dsml), which the chat encoder uses:
    // names, keys and string values raw; non-string values as Python json.dumps
    // (", "/": " separators, re-serialised); a call without arguments renders an empty
    // line between the invoke tags. Arguments must be a JSON object.
    official,
    // ds4's canonical history rendering (interface.md §3.8): names and keys
    // attribute-escaped, a literal </｜DSML｜parameter> inside a value neutralised
    // (&lt;/… in strings, \u003c/… in JSON), non-string values as the client's JSON text
    // with whitespace outside strings removed (escapes kept as written), no empty line
    // for a call without arguments. Arguments that are not a JSON object become one
    // string parameter named "arguments" holding the raw text.
    canonical,
};

// The whole block for one assistant turn's calls, INCLUDING the leading "\n\n" that
// separates it from the turn's content (the official template puts it there). Empty
// string for no calls. Throws ds4::Error "tool_calls[I]: tool call 'NAME': arguments: …"
// for arguments that are not a JSON object (official style only).
std::string render_tool_calls(std::span<const ToolCall> calls,
                              DsmlStyle style = DsmlStyle::official);

// One "<｜DSML｜invoke name=…>\n…</｜DSML｜invoke>" element, no newline around it.
std::string render_invoke(const ToolCall& call, DsmlStyle style = DsmlStyle::official);

// Attribute escaping of the canonical style: & < > " -> &amp; &lt; &gt; &quot;.
std::string dsml_escape_attribute(std::string_view text);

// Replaces every literal </｜DSML｜parameter> in a parameter body so the body cannot end the
// parameter early: "&lt;/｜DSML｜parameter>" for string bodies, "\u003c/｜DSML｜parameter>"
// for JSON bodies (still valid JSON, same value).
std::string dsml_neutralise_close_tag(std::string_view body, bool json_body);

}  // namespace ds4::text
