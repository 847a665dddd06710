// python_json_dumps / python_float_repr against values whose Python 3 output is known
// (each expected string is what `json.dumps(x, ensure_ascii=False)` / `repr(x)` prints).
#include "ds4/error.h"
#include "text/chat_pyjson.h"

#include <gtest/gtest.h>

#include <limits>

namespace {

using ds4::text::python_float_repr;
using ds4::text::python_json_dumps;
using ojson = nlohmann::ordered_json;

TEST(PythonJson, FloatReprSwitchesNotationLikePython) {
    EXPECT_EQ(python_float_repr(0.0), "0.0");
    EXPECT_EQ(python_float_repr(-0.0), "-0.0");
    EXPECT_EQ(python_float_repr(2.5), "2.5");
    EXPECT_EQ(python_float_repr(100.0), "100.0");
    EXPECT_EQ(python_float_repr(0.1), "0.1");
    EXPECT_EQ(python_float_repr(-1.25), "-1.25");
    EXPECT_EQ(python_float_repr(0.0001), "0.0001");
    EXPECT_EQ(python_float_repr(0.00001), "1e-05");
    EXPECT_EQ(python_float_repr(1.5e-7), "1.5e-07");
    EXPECT_EQ(python_float_repr(1e15), "1000000000000000.0");
    EXPECT_EQ(python_float_repr(1e16), "1e+16");
    EXPECT_EQ(python_float_repr(123456789012345678.0), "1.2345678901234568e+17");
    EXPECT_EQ(python_float_repr(1.5e300), "1.5e+300");
    EXPECT_EQ(python_float_repr(5e-324), "5e-324");
    EXPECT_EQ(python_float_repr(1.7976931348623157e308), "1.7976931348623157e+308");
    EXPECT_EQ(python_float_repr(12345.678), "12345.678");
}

TEST(PythonJson, DumpsWithPythonSeparatorsAndKeyOrder) {
    const auto v =
        ojson::parse(R"({"z": [1, -2, 3.0, true, null], "a": {}, "m": [], "b": {"y": "x"}})");
    EXPECT_EQ(python_json_dumps(v),
              R"({"z": [1, -2, 3.0, true, null], "a": {}, "m": [], "b": {"y": "x"}})");
}

TEST(PythonJson, NumbersKeepTheirKind) {
    EXPECT_EQ(python_json_dumps(ojson::parse("1e2")), "100.0");
    EXPECT_EQ(python_json_dumps(ojson::parse("-0")), "0");
    EXPECT_EQ(python_json_dumps(ojson::parse("18446744073709551615")), "18446744073709551615");
    EXPECT_EQ(python_json_dumps(ojson::parse("-9223372036854775808")), "-9223372036854775808");
}

TEST(PythonJson, StringsEscapeOnlyQuotesBackslashesAndControls) {
    const auto v = ojson::parse(R"("q\" b\\ \n\r\t\b\f \u0001\u001f \u007f / café 日本 🚀")");
    EXPECT_EQ(python_json_dumps(v),
              "\"q\\\" b\\\\ \\n\\r\\t\\b\\f \\u0001\\u001f \x7f / café 日本 🚀\"");
}

TEST(PythonJson, DuplicateKeysKeepFirstPositionAndLastValue) {
    EXPECT_EQ(python_json_dumps(ojson::parse(R"({"a": 1, "b": 2, "a": 3})")),
              R"({"a": 3, "b": 2})");
}

TEST(PythonJson, ParseErrorsNameWhatWasParsed) {
    try {
        (void)ds4::text::parse_ordered_json("{", "tool schema");
        FAIL() << "no error";
    } catch (const ds4::Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind("tool schema: invalid JSON", 0), 0u) << e.what();
    }
}

}  // namespace
