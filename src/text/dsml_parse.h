// Small text helpers shared by the DSML parser (dsml_stream.cpp) and its tests: JSON string
// writing with UTF-8 repair, JSON minification, XML entity decoding, tag attributes.
// The public entry point is ds4::parse_dsml (include/ds4/dsml.h).
#pragma once

#include "ds4/dsml.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ds4::text {

// Writes the body of a JSON string (no quotes) one byte at a time, so it can run on a
// stream cut anywhere, even inside a multi-byte character. Invalid UTF-8 (a stray
// continuation byte, an overlong form, a surrogate, a truncated sequence) becomes U+FFFD:
// the arguments the server forwards must be valid JSON, and a JSON library would reject
// (or throw on) invalid UTF-8.
class JsonStringWriter {
public:
    void put(unsigned char byte, std::string& out);
    void put(std::string_view bytes, std::string& out) {
        for (char c : bytes) put(static_cast<unsigned char>(c), out);
    }
    // Ends the string: a truncated multi-byte sequence becomes U+FFFD.
    void flush(std::string& out);

private:
    void start(unsigned char byte, std::string& out);
    unsigned char pending_[4] = {};
    int have_ = 0;  // bytes of the current multi-byte sequence seen so far
    int need_ = 0;  // total bytes of the current multi-byte sequence
};

// `"…"`: a whole JSON string for `text`, through JsonStringWriter.
std::string json_quote(std::string_view text);

// Removes whitespace outside strings from JSON text that is already known to be valid
// (the model's own escapes and number spellings are kept, unlike a parse + dump).
std::string minify_json(std::string_view json);

// True when `text` is one complete JSON value (RFC 8259, any type at the top level).
bool is_json_value(std::string_view text);

// &amp; &lt; &gt; &quot; &apos; -> & < > " '; any other '&' is kept as written.
std::string decode_xml_entities(std::string_view text);

bool is_space(char c);
std::string_view trim_space(std::string_view text);

// The key="value" (or 'value') pairs of a tag's attribute text, values entity-decoded.
// Lenient: bytes that do not form an attribute are skipped.
std::vector<std::pair<std::string, std::string>> parse_tag_attributes(std::string_view text);

// The value of attribute `key`, if present.
std::optional<std::string> find_attribute(
    const std::vector<std::pair<std::string, std::string>>& attributes, std::string_view key);

}  // namespace ds4::text
