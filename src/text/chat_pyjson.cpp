#include "text/chat_pyjson.h"

#include "ds4/error.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <system_error>

namespace ds4::text {
namespace {

// Python's encoder (ensure_ascii=False) escapes exactly these; every other byte, including
// DEL and all non-ASCII UTF-8, is written raw.
void append_python_string(std::string& out, std::string_view s) {
    out += '"';
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            case '\b':
                out += "\\b";
                break;
            case '\f':
                out += "\\f";
                break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += ch;
                }
        }
    }
    out += '"';
}

void append_python_json(std::string& out, const nlohmann::ordered_json& v) {
    using value_t = nlohmann::ordered_json::value_t;
    switch (v.type()) {
        case value_t::null:
            out += "null";
            return;
        case value_t::boolean:
            out += v.get<bool>() ? "true" : "false";
            return;
        case value_t::number_integer:
            out += std::to_string(v.get<std::int64_t>());
            return;
        case value_t::number_unsigned:
            out += std::to_string(v.get<std::uint64_t>());
            return;
        case value_t::number_float:
            out += python_float_repr(v.get<double>());
            return;
        case value_t::string:
            append_python_string(out, v.get_ref<const std::string&>());
            return;
        case value_t::array: {
            out += '[';
            bool first = true;
            for (const auto& item : v) {
                if (!first) out += ", ";
                first = false;
                append_python_json(out, item);
            }
            out += ']';
            return;
        }
        case value_t::object: {
            out += '{';
            bool first = true;
            for (const auto& [key, item] : v.items()) {
                if (!first) out += ", ";
                first = false;
                append_python_string(out, key);
                out += ": ";
                append_python_json(out, item);
            }
            out += '}';
            return;
        }
        case value_t::binary:
        case value_t::discarded:
            break;
    }
    fail("python_json_dumps: value has no JSON representation");
}

}  // namespace

std::string python_float_repr(double value) {
    if (std::isnan(value)) return "NaN";  // Python's allow_nan spelling; JSON input never has it
    if (std::isinf(value)) return value < 0 ? "-Infinity" : "Infinity";
    // Shortest round-trip digits in scientific form, e.g. "-2.5e+00", "1e-05".
    char buf[64];
    const auto [end, ec] =
        std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
    if (ec != std::errc()) fail("python_float_repr: to_chars failed");
    const std::string_view sci(buf, static_cast<std::size_t>(end - buf));
    const std::size_t e_pos = sci.find('e');
    std::string_view mantissa = sci.substr(0, e_pos);
    std::string out;
    if (!mantissa.empty() && mantissa.front() == '-') {
        out += '-';
        mantissa.remove_prefix(1);
    }
    std::string digits;
    for (const char c : mantissa)
        if (c != '.') digits += c;
    const int exp10 = std::atoi(std::string(sci.substr(e_pos + 1)).c_str());
    const auto n = static_cast<int>(digits.size());

    // repr() switches to scientific notation outside 1e-4 <= |x| < 1e16.
    if (exp10 < -4 || exp10 >= 16) {
        out += digits[0];
        if (n > 1) out += '.' + digits.substr(1);
        out += exp10 < 0 ? "e-" : "e+";
        const int mag = std::abs(exp10);
        if (mag < 10) out += '0';
        out += std::to_string(mag);
        return out;
    }
    if (exp10 < 0) {
        out += "0." + std::string(static_cast<std::size_t>(-exp10 - 1), '0') + digits;
    } else if (n <= exp10 + 1) {
        out += digits + std::string(static_cast<std::size_t>(exp10 + 1 - n), '0') + ".0";
    } else {
        const auto point = static_cast<std::size_t>(exp10 + 1);
        out += digits.substr(0, point) + '.' + digits.substr(point);
    }
    return out;
}

std::string python_json_dumps(const nlohmann::ordered_json& value) {
    std::string out;
    append_python_json(out, value);
    return out;
}

nlohmann::ordered_json parse_ordered_json(std::string_view text, std::string_view what) {
    try {
        return nlohmann::ordered_json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        fail(what, ": invalid JSON: ", e.what());
    }
}

}  // namespace ds4::text
