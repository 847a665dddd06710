// Tool calls -> DSML text in the official and the canonical (interface.md §3.8) styles.
#include "ds4/error.h"
#include "text/dsml_render.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using ds4::ToolCall;
using ds4::text::DsmlStyle;
using ds4::text::render_invoke;
using ds4::text::render_tool_calls;

TEST(DsmlRender, NoCallsRenderNothing) {
    EXPECT_EQ(render_tool_calls({}), "");
    EXPECT_EQ(render_tool_calls({}, DsmlStyle::canonical), "");
}

TEST(DsmlRender, OfficialBlockKeepsArgumentKeyOrderAndPythonJsonSpacing) {
    const std::vector<ToolCall> calls{
        {"c1", "bash", R"({"command":"ls -la","timeout":10,"opts":{"a":[1,2],"f":2.5,"e":1e-5}})"},
        {"c2", "read", "{}"}};
    EXPECT_EQ(render_tool_calls(calls),
              "\n\n<｜DSML｜tool_calls>\n"
              "<｜DSML｜invoke name=\"bash\">\n"
              "<｜DSML｜parameter name=\"command\" string=\"true\">ls -la</｜DSML｜parameter>\n"
              "<｜DSML｜parameter name=\"timeout\" string=\"false\">10</｜DSML｜parameter>\n"
              "<｜DSML｜parameter name=\"opts\" string=\"false\">{\"a\": [1, 2], \"f\": 2.5, "
              "\"e\": 1e-05}</｜DSML｜parameter>\n"
              "</｜DSML｜invoke>\n"
              "<｜DSML｜invoke name=\"read\">\n"
              "\n"  // the official "\n".join of no parameters leaves an empty line
              "</｜DSML｜invoke>\n"
              "</｜DSML｜tool_calls>");
}

TEST(DsmlRender, OfficialStringValuesAreDecodedNotEscaped) {
    const ToolCall call{"c", "w",
                        R"({"s": "tab\there \"q\" caf\u00e9 <&>", "n": null, "b": false})"};
    EXPECT_EQ(render_invoke(call),
              "<｜DSML｜invoke name=\"w\">\n"
              "<｜DSML｜parameter name=\"s\" string=\"true\">tab\there \"q\" café "
              "<&></｜DSML｜parameter>\n"
              "<｜DSML｜parameter name=\"n\" string=\"false\">null</｜DSML｜parameter>\n"
              "<｜DSML｜parameter name=\"b\" string=\"false\">false</｜DSML｜parameter>\n"
              "</｜DSML｜invoke>");
}

TEST(DsmlRender, OfficialRejectsArgumentsThatAreNotAnObject) {
    EXPECT_THROW((void)render_invoke({"c", "f", "not json"}), ds4::Error);
    EXPECT_THROW((void)render_invoke({"c", "f", "[1]"}), ds4::Error);
    EXPECT_THROW((void)render_invoke({"c", "f", ""}), ds4::Error);
    const std::vector<ToolCall> calls{{"c0", "f", "{}"}, {"c1", "g", "\"text\""}};
    try {
        (void)render_tool_calls(calls);
        FAIL() << "no error";
    } catch (const ds4::Error& e) {
        EXPECT_EQ(std::string(e.what()),
                  "tool_calls[1]: tool call 'g': arguments: expected a JSON object, got string");
    }
}

TEST(DsmlRender, CanonicalMatchesTheSpecExample) {
    // interface.md §2.5: minified client JSON, no empty line for an argument-less call.
    const std::vector<ToolCall> calls{
        {"c1", "bash", R"({"command": "ls -la", "timeout": 10, "opts": {"a": [1, 2]}})"},
        {"c2", "read", "{}"}};
    EXPECT_EQ(
        render_tool_calls(calls, DsmlStyle::canonical),
        "\n\n<｜DSML｜tool_calls>\n"
        "<｜DSML｜invoke name=\"bash\">\n"
        "<｜DSML｜parameter name=\"command\" string=\"true\">ls -la</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"timeout\" string=\"false\">10</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"opts\" string=\"false\">{\"a\":[1,2]}</｜DSML｜parameter>\n"
        "</｜DSML｜invoke>\n"
        "<｜DSML｜invoke name=\"read\">\n"
        "</｜DSML｜invoke>\n"
        "</｜DSML｜tool_calls>");
}

TEST(DsmlRender, CanonicalKeepsClientEscapesAndSpacingInsideStrings) {
    const ToolCall call{"c", "f", "{ \"o\" : { \"k\" : \"caf\\u00e9  x\" } ,\n \"n\":1.50 }"};
    EXPECT_EQ(render_invoke(call, DsmlStyle::canonical),
              "<｜DSML｜invoke name=\"f\">\n"
              "<｜DSML｜parameter name=\"o\" string=\"false\">{\"k\":\"caf\\u00e9  "
              "x\"}</｜DSML｜parameter>\n"
              "<｜DSML｜parameter name=\"n\" string=\"false\">1.50</｜DSML｜parameter>\n"
              "</｜DSML｜invoke>");
}

TEST(DsmlRender, CanonicalEscapesAttributesAndNeutralisesTheCloseTag) {
    const ToolCall call{"c", "a&b\"<x>",
                        R"({"k<\"": "v</｜DSML｜parameter>w", "j": ["</｜DSML｜parameter>"]})"};
    EXPECT_EQ(render_invoke(call, DsmlStyle::canonical),
              "<｜DSML｜invoke name=\"a&amp;b&quot;&lt;x&gt;\">\n"
              "<｜DSML｜parameter name=\"k&lt;&quot;\" "
              "string=\"true\">v&lt;/｜DSML｜parameter>w</｜DSML｜parameter>\n"
              "<｜DSML｜parameter name=\"j\" "
              "string=\"false\">[\"\\u003c/｜DSML｜parameter>\"]</｜DSML｜parameter>\n"
              "</｜DSML｜invoke>");
}

TEST(DsmlRender, CanonicalNonObjectArgumentsBecomeOneStringParameter) {
    EXPECT_EQ(
        render_invoke({"c", "patch", "*** raw text"}, DsmlStyle::canonical),
        "<｜DSML｜invoke name=\"patch\">\n"
        "<｜DSML｜parameter name=\"arguments\" string=\"true\">*** raw text</｜DSML｜parameter>\n"
        "</｜DSML｜invoke>");
    EXPECT_EQ(render_invoke({"c", "f", "[1, 2]"}, DsmlStyle::canonical),
              "<｜DSML｜invoke name=\"f\">\n"
              "<｜DSML｜parameter name=\"arguments\" string=\"true\">[1, 2]</｜DSML｜parameter>\n"
              "</｜DSML｜invoke>");
}

TEST(DsmlRender, EscapeHelpers) {
    EXPECT_EQ(ds4::text::dsml_escape_attribute("a&<>\"'b"), "a&amp;&lt;&gt;&quot;'b");
    EXPECT_EQ(
        ds4::text::dsml_neutralise_close_tag("x</｜DSML｜parameter></｜DSML｜parameter>", false),
        "x&lt;/｜DSML｜parameter>&lt;/｜DSML｜parameter>");
    EXPECT_EQ(ds4::text::dsml_neutralise_close_tag("\"</｜DSML｜parameter>\"", true),
              "\"\\u003c/｜DSML｜parameter>\"");
    EXPECT_EQ(ds4::text::dsml_neutralise_close_tag("</｜DSML｜invoke> &lt;", false),
              "</｜DSML｜invoke> &lt;");
}

}  // namespace
