// JSON text exactly as Python's `json.dumps(value, ensure_ascii=False)` writes it, because
// the official V4 encoder serialises tool schemas, response formats and non-string tool
// arguments that way and the model was trained on those bytes.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace ds4::text {

// Separators ", " and ": ", object keys in their stored order (use nlohmann::ordered_json
// so the client's order survives parsing), strings UTF-8 with only `"`, `\` and control
// characters escaped (lowercase \u00xx), integers in decimal, floats as Python's repr()
// (shortest round-trip digits, "1.0", "1e-05", "1e+16").
std::string python_json_dumps(const nlohmann::ordered_json& value);

// Python's repr() of a finite double: fixed notation for decimal exponents in [-4, 16),
// scientific ("1.5e-07", "1e+16") otherwise; integral values keep ".0".
std::string python_float_repr(double value);

// Parses JSON text keeping object key order. Throws ds4::Error "<what>: invalid JSON: …".
nlohmann::ordered_json parse_ordered_json(std::string_view text, std::string_view what);

}  // namespace ds4::text
