// libFuzzer target: the DSML parsers on arbitrary bytes. Findings are a crash, a sanitizer
// report, an escaping exception, or any broken invariant (checked with abort()):
//   * the stream fed in input-driven chunks folds to exactly the final parse;
//   * every tool call's arguments are valid JSON;
//   * no byte is lost: reasoning-free text == content + raw_block + ignored tail.
// Input: byte 0 = options (bit 0 thinking, bit 1 XML entities, bit 2 no tools), byte 1 =
// chunking seed, the rest is the generated text.
#include "ds4/dsml.h"
#include "text/dsml_stream.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

namespace {

using ds4::text::DsmlEvent;
using ds4::text::DsmlEventKind;

struct Folded {
    std::string reasoning, content;
    std::map<std::size_t, std::pair<std::string, std::string>> calls;  // name, arguments
};

void fold(Folded& f, const std::vector<DsmlEvent>& events) {
    for (const auto& e : events) {
        switch (e.kind) {
            case DsmlEventKind::reasoning: f.reasoning += e.text; break;
            case DsmlEventKind::content: f.content += e.text; break;
            case DsmlEventKind::call_begin: f.calls[e.call].first = e.text; break;
            case DsmlEventKind::arguments: f.calls[e.call].second += e.text; break;
            case DsmlEventKind::calls_aborted:
                f.calls.erase(f.calls.lower_bound(e.call), f.calls.end());
                break;
            default: break;
        }
    }
}

void check(bool ok) {
    if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    ds4::DsmlOptions options;
    options.thinking = (data[0] & 1) != 0;
    options.entities = (data[0] & 2) ? ds4::DsmlEntities::xml : ds4::DsmlEntities::close_tag_only;
    options.parse_tools = (data[0] & 4) == 0;
    std::uint32_t chunking = data[1] * 2654435761u + 1;
    const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);

    const ds4::DsmlMessage final_message = ds4::parse_dsml(text, options);

    ds4::text::DsmlStream stream(options);
    Folded f;
    std::vector<DsmlEvent> events;
    for (std::size_t pos = 0; pos < text.size();) {
        chunking = chunking * 1103515245u + 12345u;
        const std::size_t n = 1 + (chunking >> 16) % 16;
        events.clear();
        stream.feed(text.substr(pos, n), events);
        fold(f, events);
        (void)stream.syntax_state();
        pos += n;
    }
    events.clear();
    stream.finish(events);
    fold(f, events);

    check(f.reasoning == final_message.reasoning);
    check(f.content == final_message.content);
    check(f.calls.size() == final_message.tool_calls.size());
    std::size_t i = 0;
    for (const auto& [index, call] : f.calls) {
        const ds4::DsmlToolCall& want = final_message.tool_calls[i++];
        check(call.first == want.name && call.second == want.arguments);
        check(nlohmann::json::accept(want.arguments));
    }
    if (!final_message.has_reasoning) {
        const std::string rebuilt = final_message.content + final_message.raw_block;
        check(rebuilt.size() + final_message.ignored_after_block == text.size());
        check(text.substr(0, rebuilt.size()) == rebuilt);
    }
    return 0;
}
