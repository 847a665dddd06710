// Shared fixtures for the DSML tests: DSML text builders for the three spellings and a
// fold of stream events back into a message.
#pragma once

#include "ds4/dsml.h"
#include "text/dsml_stream.h"

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::test {

// Tag spelling of one DSML variant (interface.md §3.2): "｜DSML｜", "DSML｜" or "".
struct Dsml {
    std::string p;
    std::string open() const { return "<" + p + "tool_calls>"; }
    std::string close() const { return "</" + p + "tool_calls>"; }
    std::string invoke(std::string_view name) const {
        return "<" + p + "invoke name=\"" + std::string(name) + "\">";
    }
    std::string invoke_close() const { return "</" + p + "invoke>"; }
    std::string param(std::string_view name, std::string_view value,
                      std::string_view string_attr) const {
        std::string out = "<" + p + "parameter name=\"" + std::string(name) + "\"";
        if (!string_attr.empty()) out += " string=\"" + std::string(string_attr) + "\"";
        return out + ">" + std::string(value) + "</" + p + "parameter>";
    }
};

inline const Dsml kFull{"｜DSML｜"};
inline const Dsml kShort{"DSML｜"};
inline const Dsml kPlain{""};

// The messages a client would reconstruct from the events alone.
struct Folded {
    std::string reasoning;
    std::string content;
    struct Call {
        std::string name;
        std::string arguments;
        bool ended = false;
    };
    std::map<std::size_t, Call> calls;  // by call index; aborted calls removed
    bool block_closed = false;
};

inline void fold(Folded& f, const std::vector<text::DsmlEvent>& events) {
    using K = text::DsmlEventKind;
    for (const auto& e : events) {
        switch (e.kind) {
            case K::reasoning: f.reasoning += e.text; break;
            case K::content: f.content += e.text; break;
            case K::call_begin: f.calls[e.call].name = e.text; break;
            case K::arguments: f.calls[e.call].arguments += e.text; break;
            case K::call_end: f.calls[e.call].ended = true; break;
            case K::calls_aborted: f.calls.erase(f.calls.lower_bound(e.call), f.calls.end()); break;
            case K::block_closed: f.block_closed = true; break;
        }
    }
}

}  // namespace ds4::test
