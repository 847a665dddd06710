// DSML tool calls: what the model wrote -> reasoning, answer text and structured tool calls
// (interface.md §3). DeepSeek V4 writes its tool calls as
//
//   \n\n<｜DSML｜tool_calls>
//   <｜DSML｜invoke name="NAME">
//   <｜DSML｜parameter name="KEY" string="true|false">VALUE</｜DSML｜parameter>
//   </｜DSML｜invoke>
//   </｜DSML｜tool_calls>
//
// and sometimes drifts into the short (`<DSML｜…`) or plain XML (`<tool_calls>`) spellings,
// which are accepted too (§3.2). The final parse is the streaming parser
// (text/dsml_stream.h) run over the whole text, so a streamed response and the final one
// can never disagree (§8 item 9).
//
// Malformed output never throws: a tool block that does not parse is returned, byte for
// byte, as answer text (§3.6), and scanning goes on after it.
//
// Where this differs from ds4's final parser, on purpose (each choice is what a stream
// can decide without seeing the rest of the text, or a fix from §8):
//   * the block is the first opener of any spelling by position, not ds4's priority order;
//   * reasoning ends at the first </think>, and tools are parsed after it (ds4: after the
//     last one); a thinking text without </think> is all reasoning (§8 item 5);
//   * a malformed block costs only itself: reasoning and earlier text keep their place,
//     and a later well-formed block is still parsed (ds4: everything becomes content);
//   * string values keep "&amp;" etc. unless DsmlEntities::xml (§8 item 8);
//   * invalid JSON in a string="false" value is kept as a string (ds4: arguments {}).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ds4 {

// How string parameter bodies are entity-decoded.
//   close_tag_only: only the neutralised close tag "&lt;/｜DSML｜parameter>" becomes
//     "</｜DSML｜parameter>" again. This is exactly what the tools prompt tells the model
//     to write and what the renderer writes, so parse(render(x)) == x and a literal
//     "&amp;" in a file the model writes survives (the default; §8 item 8).
//   xml: ds4's behaviour: &amp; &lt; &gt; &quot; &apos; are decoded everywhere.
enum class DsmlEntities { close_tag_only, xml };

struct DsmlOptions {
    // The prompt ended in <think>: the text starts as reasoning and tool calls are only
    // recognised after </think> (DSML inside unfinished reasoning is never executable).
    bool thinking = false;
    DsmlEntities entities = DsmlEntities::close_tag_only;
    // false: only split reasoning from content; DSML stays text. For requests without
    // tools, so a streamed and a final response agree (§8 item 9: ds4 streamed such
    // DSML as text, then reported it as a tool call in the final response).
    bool parse_tools = true;
};

struct DsmlToolCall {
    std::string name;
    // A JSON object in the order the model wrote the parameters (duplicates kept, see
    // warnings). string="true" (or absent) values are JSON strings; string="false" values
    // are the model's JSON with whitespace outside strings removed; a string="false" value
    // that is not valid JSON is kept as a JSON string of its raw text instead of being
    // dropped (§8 item 8), with a warning. Always valid JSON text.
    std::string arguments;
    // Lossy or irregular spots, e.g. "parameter 'n': invalid JSON kept as a string".
    std::vector<std::string> warnings;
};

struct DsmlMessage {
    std::string reasoning;       // text inside <think>…</think> (without the tags)
    bool has_reasoning = false;  // thinking mode, or a leading <think> was seen
    // Answer text. When a tool block follows, the whitespace before it is not content
    // (it is the block's separator and part of raw_block).
    std::string content;
    std::vector<DsmlToolCall> tool_calls;
    // The exact sampled bytes of the tool block, starting with the whitespace that
    // separated it from the content, up to the end of the closing tag. The generated
    // text is [<think>reasoning</think>] + content + raw_block + ignored bytes, so the
    // replayed turn matches the sampled bytes exactly (exact replay, §3.9).
    std::string raw_block;
    bool block_closed = false;       // a tool block was parsed to its closing tag
    bool unterminated = false;       // the text ended inside a tool block
    bool recovered = false;          // some tool block was malformed and kept as text
    std::string error;               // why the first malformed block failed
    std::size_t ignored_after_block = 0;  // bytes after the closing tag (discarded)
};

// The authoritative parse of a complete generated text (§3.3). Never throws.
DsmlMessage parse_dsml(std::string_view text, const DsmlOptions& options = {});

}  // namespace ds4
