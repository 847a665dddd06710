#include "text/dsml_parse.h"

#include "text/dsml_stream.h"

#include <nlohmann/json.hpp>

namespace ds4 {

DsmlMessage parse_dsml(std::string_view text, const DsmlOptions& options) {
    // One parser for streaming and final results: the final parse is the stream run to
    // its end, so a client that streamed the response saw exactly the same calls.
    text::DsmlStream stream(options);
    std::vector<text::DsmlEvent> ignored;
    stream.feed(text, ignored);
    stream.finish(ignored);
    return stream.take_message();
}

}  // namespace ds4

namespace ds4::text {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

void put_escaped_ascii(unsigned char byte, std::string& out) {
    switch (byte) {
        case '"': out += "\\\""; return;
        case '\\': out += "\\\\"; return;
        case '\n': out += "\\n"; return;
        case '\r': out += "\\r"; return;
        case '\t': out += "\\t"; return;
        case '\b': out += "\\b"; return;
        case '\f': out += "\\f"; return;
        default: break;
    }
    if (byte < 0x20) {
        static constexpr char kHex[] = "0123456789abcdef";
        out += "\\u00";
        out += kHex[byte >> 4];
        out += kHex[byte & 15];
        return;
    }
    out += static_cast<char>(byte);
}

// Allowed range of the second byte of a multi-byte sequence (RFC 3629 table): excludes
// overlong forms (E0, F0), UTF-16 surrogates (ED) and code points above U+10FFFF (F4).
std::pair<unsigned char, unsigned char> second_byte_range(unsigned char lead) {
    switch (lead) {
        case 0xE0: return {0xA0, 0xBF};
        case 0xED: return {0x80, 0x9F};
        case 0xF0: return {0x90, 0xBF};
        case 0xF4: return {0x80, 0x8F};
        default: return {0x80, 0xBF};
    }
}

int sequence_length(unsigned char lead) {
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;  // 0x80..0xC1 and 0xF5..0xFF never start a character
}

}  // namespace

void JsonStringWriter::start(unsigned char byte, std::string& out) {
    if (byte < 0x80) {
        put_escaped_ascii(byte, out);
        return;
    }
    need_ = sequence_length(byte);
    if (need_ == 0) {
        out += kReplacement;
        return;
    }
    pending_[0] = byte;
    have_ = 1;
}

void JsonStringWriter::put(unsigned char byte, std::string& out) {
    if (have_ == 0) {
        start(byte, out);
        return;
    }
    auto [lo, hi] = have_ == 1 ? second_byte_range(pending_[0])
                               : std::pair<unsigned char, unsigned char>{0x80, 0xBF};
    if (byte < lo || byte > hi) {
        // The sequence so far is a maximal invalid subpart: one U+FFFD, then the byte
        // starts afresh (it may be ASCII or a new lead byte).
        out += kReplacement;
        have_ = need_ = 0;
        start(byte, out);
        return;
    }
    pending_[have_++] = byte;
    if (have_ == need_) {
        out.append(reinterpret_cast<const char*>(pending_), static_cast<std::size_t>(need_));
        have_ = need_ = 0;
    }
}

void JsonStringWriter::flush(std::string& out) {
    if (have_ > 0) out += kReplacement;
    have_ = need_ = 0;
}

std::string json_quote(std::string_view text) {
    std::string out = "\"";
    JsonStringWriter writer;
    writer.put(text, out);
    writer.flush(out);
    out += '"';
    return out;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim_space(std::string_view text) {
    while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
    while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
    return text;
}

std::string minify_json(std::string_view json) {
    std::string out;
    out.reserve(json.size());
    bool in_string = false;
    bool escaped = false;
    for (char c : json) {
        if (in_string) {
            out += c;
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
        } else if (!is_space(c)) {
            out += c;
            in_string = c == '"';
        }
    }
    return out;
}

bool is_json_value(std::string_view text) {
    // accept() never throws on bad input and parses iteratively, so deep nesting in
    // model output cannot blow the stack.
    return nlohmann::json::accept(text.begin(), text.end());
}

std::string decode_xml_entities(std::string_view text) {
    static constexpr std::pair<std::string_view, char> kEntities[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        bool decoded = false;
        if (text[i] == '&') {
            for (const auto& [entity, ch] : kEntities) {
                if (text.substr(i, entity.size()) == entity) {
                    out += ch;
                    i += entity.size();
                    decoded = true;
                    break;
                }
            }
        }
        if (!decoded) out += text[i++];
    }
    return out;
}

std::vector<std::pair<std::string, std::string>> parse_tag_attributes(std::string_view text) {
    std::vector<std::pair<std::string, std::string>> attributes;
    std::size_t i = 0;
    auto skip_space = [&] {
        while (i < text.size() && is_space(text[i])) ++i;
    };
    while (i < text.size()) {
        skip_space();
        const std::size_t key_begin = i;
        while (i < text.size() && !is_space(text[i]) && text[i] != '=') ++i;
        const std::string_view key = text.substr(key_begin, i - key_begin);
        skip_space();
        if (i >= text.size() || text[i] != '=') {
            if (i == key_begin) ++i;  // a lone byte that is no attribute: skip it
            continue;
        }
        ++i;
        skip_space();
        if (i >= text.size()) break;
        std::string_view value;
        if (text[i] == '"' || text[i] == '\'') {
            const char quote = text[i++];
            const std::size_t end = text.find(quote, i);
            if (end == std::string_view::npos) break;  // unterminated value: stop here
            value = text.substr(i, end - i);
            i = end + 1;
        } else {
            const std::size_t begin = i;
            while (i < text.size() && !is_space(text[i])) ++i;
            value = text.substr(begin, i - begin);
        }
        attributes.emplace_back(std::string(key), decode_xml_entities(value));
    }
    return attributes;
}

std::optional<std::string> find_attribute(
    const std::vector<std::pair<std::string, std::string>>& attributes, std::string_view key) {
    for (const auto& [k, v] : attributes)
        if (k == key) return v;
    return std::nullopt;
}

}  // namespace ds4::text
