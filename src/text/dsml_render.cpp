#include "text/dsml_render.h"

#include "ds4/error.h"
#include "text/chat_pyjson.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <vector>

namespace ds4::text {
namespace {

struct Parameter {
    std::string key;
    std::string value;
    bool is_string = false;
};

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
    std::string out;
    std::size_t pos = 0;
    for (std::size_t hit; (hit = text.find(from, pos)) != std::string_view::npos;
         pos = hit + from.size()) {
        out.append(text.substr(pos, hit - pos));
        out.append(to);
    }
    out.append(text.substr(pos));
    return out;
}

// --- official: json.loads(arguments), then one parameter per key in insertion order -------

std::vector<Parameter> official_parameters(const ToolCall& call) {
    const auto args =
        parse_ordered_json(call.arguments, cat("tool call '", call.name, "': arguments"));
    if (!args.is_object())
        fail("tool call '", call.name, "': arguments: expected a JSON object, got ",
             args.type_name());
    std::vector<Parameter> params;
    for (const auto& [key, value] : args.items()) {
        if (value.is_string())
            params.push_back({key, value.get<std::string>(), true});
        else
            params.push_back({key, python_json_dumps(value), false});
    }
    return params;
}

// --- canonical: the client's own JSON text per top-level member --------------------------

bool is_json_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

std::size_t skip_space(std::string_view s, std::size_t pos) {
    while (pos < s.size() && is_json_space(s[pos])) ++pos;
    return pos;
}

// `pos` is at an opening quote of text already known to be valid JSON; returns the index
// one past the closing quote.
std::size_t end_of_string(std::string_view s, std::size_t pos) {
    for (++pos; pos < s.size(); ++pos) {
        if (s[pos] == '\\')
            ++pos;
        else if (s[pos] == '"')
            return pos + 1;
    }
    return s.size();
}

std::size_t end_of_value(std::string_view s, std::size_t pos) {
    if (s[pos] == '"') return end_of_string(s, pos);
    if (s[pos] == '{' || s[pos] == '[') {
        int depth = 0;
        while (pos < s.size()) {
            const char c = s[pos];
            if (c == '"') {
                pos = end_of_string(s, pos);
                continue;
            }
            if (c == '{' || c == '[') ++depth;
            if (c == '}' || c == ']') --depth;
            ++pos;
            if (depth == 0) return pos;
        }
        return pos;
    }
    while (pos < s.size() && !is_json_space(s[pos]) && s[pos] != ',' && s[pos] != '}' &&
           s[pos] != ']')
        ++pos;
    return pos;
}

// Whitespace outside strings removed; string contents (escapes included) untouched.
std::string minify_json_text(std::string_view s) {
    std::string out;
    for (std::size_t pos = 0; pos < s.size();) {
        if (s[pos] == '"') {
            const std::size_t end = end_of_string(s, pos);
            out.append(s.substr(pos, end - pos));
            pos = end;
        } else {
            if (!is_json_space(s[pos])) out += s[pos];
            ++pos;
        }
    }
    return out;
}

std::optional<std::vector<Parameter>> canonical_object_parameters(std::string_view text) {
    if (!nlohmann::ordered_json::accept(text)) return std::nullopt;
    std::size_t pos = skip_space(text, 0);
    if (text[pos] != '{') return std::nullopt;
    std::vector<Parameter> params;
    pos = skip_space(text, pos + 1);
    while (text[pos] != '}') {
        const std::size_t key_end = end_of_string(text, pos);
        auto key = nlohmann::json::parse(text.substr(pos, key_end - pos)).get<std::string>();
        pos = skip_space(text, skip_space(text, key_end) + 1);  // past ':'
        const std::size_t value_end = end_of_value(text, pos);
        const std::string_view raw = text.substr(pos, value_end - pos);
        if (raw.front() == '"')
            params.push_back({std::move(key), nlohmann::json::parse(raw).get<std::string>(), true});
        else
            params.push_back({std::move(key), minify_json_text(raw), false});
        pos = skip_space(text, value_end);
        if (text[pos] == ',') pos = skip_space(text, pos + 1);
    }
    return params;
}

std::vector<Parameter> canonical_parameters(const ToolCall& call) {
    if (auto params = canonical_object_parameters(call.arguments)) return std::move(*params);
    return {{"arguments", call.arguments, true}};
}

void append_parameter(std::string& out, const Parameter& p, DsmlStyle style) {
    const bool canonical = style == DsmlStyle::canonical;
    out += "<｜DSML｜parameter name=\"";
    out += canonical ? dsml_escape_attribute(p.key) : p.key;
    out += p.is_string ? "\" string=\"true\">" : "\" string=\"false\">";
    out += canonical ? dsml_neutralise_close_tag(p.value, !p.is_string) : p.value;
    out += kDsmlParameterClose;
}

}  // namespace

std::string dsml_escape_attribute(std::string_view text) {
    std::string out;
    for (const char c : text) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                out += c;
        }
    }
    return out;
}

std::string dsml_neutralise_close_tag(std::string_view body, bool json_body) {
    return replace_all(body, kDsmlParameterClose,
                       json_body ? "\\u003c/｜DSML｜parameter>" : "&lt;/｜DSML｜parameter>");
}

std::string render_invoke(const ToolCall& call, DsmlStyle style) {
    const bool canonical = style == DsmlStyle::canonical;
    const std::vector<Parameter> params =
        canonical ? canonical_parameters(call) : official_parameters(call);
    std::string out = "<｜DSML｜invoke name=\"";
    out += canonical ? dsml_escape_attribute(call.name) : call.name;
    out += "\">\n";
    // Official: "\n".join(params) between two newlines, so no parameters leaves an empty
    // line; canonical: every parameter line ends with its own newline.
    for (std::size_t i = 0; i < params.size(); ++i) {
        if (i > 0) out += '\n';
        append_parameter(out, params[i], style);
    }
    if (!canonical || !params.empty()) out += '\n';
    out += kDsmlInvokeClose;
    return out;
}

std::string render_tool_calls(std::span<const ToolCall> calls, DsmlStyle style) {
    if (calls.empty()) return {};
    std::string out = "\n\n";
    out += kDsmlToolCallsOpen;
    out += '\n';
    for (std::size_t i = 0; i < calls.size(); ++i) {
        if (i > 0) out += '\n';
        try {
            out += render_invoke(calls[i], style);
        } catch (const Error& e) {
            fail("tool_calls[", i, "]: ", e.what());
        }
    }
    out += '\n';
    out += kDsmlToolCallsClose;
    return out;
}

}  // namespace ds4::text
