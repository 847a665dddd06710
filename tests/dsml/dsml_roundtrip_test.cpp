// render -> parse round trips: the renderer (text/dsml_render.h, both styles) and
// hand-written DSML in every spelling give back the calls they were made from.
#include "dsml_test_util.h"

#include "ds4/dsml.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#if __has_include("text/dsml_render.h")
#include "text/dsml_render.h"
#define DS4_HAVE_DSML_RENDER 1
#endif

namespace ds4 {
namespace {

using ordered = nlohmann::ordered_json;

struct Call {
    std::string name;
    std::string arguments;
};

// Arguments exercising every value kind and the escaping rules of §2.4.
const std::vector<Call>& sample_calls() {
    static const std::vector<Call> calls = {
        {"write_file",
         R"({"path":"src/a.cpp","content":"int main() {\n  return a && b ? 1 : 0; // <ok> &amp;\n}\n","mode":420})"},
        {"edit",
         R"({"old":"x </｜DSML｜parameter> y","new":"</｜DSML｜parameter","flags":{"dry":true,"tags":["</｜DSML｜parameter>",null,-1.5e3]}})"},
        {"no_args", "{}"},
        {"unicode", R"({"text":"héllo \"wörld\" 😀\t","n":[]})"},
    };
    return calls;
}

void expect_round_trip(const std::vector<Call>& calls, const DsmlMessage& m,
                       const std::string& what) {
    EXPECT_FALSE(m.recovered) << what << m.error;
    ASSERT_EQ(m.tool_calls.size(), calls.size()) << what;
    for (std::size_t i = 0; i < calls.size(); ++i) {
        EXPECT_EQ(m.tool_calls[i].name, calls[i].name) << what;
        EXPECT_TRUE(m.tool_calls[i].warnings.empty()) << what;
        // Same members, same order, same values (spelling of numbers may differ).
        EXPECT_EQ(ordered::parse(m.tool_calls[i].arguments), ordered::parse(calls[i].arguments))
            << what << "\n" << m.tool_calls[i].arguments;
    }
}

// Hand-written DSML following the grammar of §3.1 in a given spelling.
std::string hand_render(const test::Dsml& d, const std::vector<Call>& calls) {
    const std::string close = "</" + d.p + "parameter>";
    auto neutralise = [&](std::string s, std::string_view with) {
        for (std::size_t at; (at = s.find(close)) != std::string::npos;)
            s.replace(at, 1, with);
        return s;
    };
    std::string out = "\n\n" + d.open() + "\n";
    for (const Call& call : calls) {
        out += d.invoke(call.name) + "\n";
        const ordered arguments = ordered::parse(call.arguments);
        for (const auto& [key, value] : arguments.items()) {
            if (value.is_string())
                out += d.param(key, neutralise(value.get<std::string>(), "&lt;"), "true");
            else
                out += d.param(key, neutralise(value.dump(2), "\\u003c"), "false");
            out += "\n";
        }
        out += d.invoke_close() + "\n";
    }
    return out + d.close();
}

TEST(DsmlRoundTrip, HandWrittenBlocksInEverySpelling) {
    for (const test::Dsml* d : {&test::kFull, &test::kShort, &test::kPlain}) {
        const std::string text = "Doing it." + hand_render(*d, sample_calls());
        const DsmlMessage m = parse_dsml(text);
        expect_round_trip(sample_calls(), m, text);
        EXPECT_EQ(m.content, "Doing it.");
        EXPECT_EQ(m.content + m.raw_block, text);
    }
}

#ifdef DS4_HAVE_DSML_RENDER
std::vector<ToolCall> as_tool_calls(const std::vector<Call>& calls) {
    std::vector<ToolCall> out;
    for (const Call& c : calls) out.push_back(ToolCall{"call_" + c.name, c.name, c.arguments});
    return out;
}

TEST(DsmlRoundTrip, RendererCanonicalStyle) {
    const std::string block =
        text::render_tool_calls(as_tool_calls(sample_calls()), text::DsmlStyle::canonical);
    const DsmlMessage m = parse_dsml("Answer." + block);
    expect_round_trip(sample_calls(), m, block);
    EXPECT_EQ(m.raw_block, block);
    // Canonical non-string values are the client's minified text, which the parser keeps.
    EXPECT_EQ(m.tool_calls[0].arguments.substr(m.tool_calls[0].arguments.rfind(',')),
              ",\"mode\":420}");
}

TEST(DsmlRoundTrip, RendererOfficialStyle) {
    // The official encoder writes values raw, so a value holding the literal close tag
    // cannot survive it (the "edit" call); every other call must.
    std::vector<Call> calls;
    for (const Call& c : sample_calls())
        if (c.name != "edit") calls.push_back(c);
    const std::string block =
        text::render_tool_calls(as_tool_calls(calls), text::DsmlStyle::official);
    const DsmlMessage m = parse_dsml("</think>" + block, {.thinking = true});
    expect_round_trip(calls, m, block);
    EXPECT_EQ(m.raw_block, block);
}

TEST(DsmlRoundTrip, RenderedAttributeEscapesComeBack) {
    const std::vector<Call> calls = {{"ns.a&b<c>", R"({"k\"ey":"v","x&y":1})"}};
    const std::string block =
        text::render_tool_calls(as_tool_calls(calls), text::DsmlStyle::canonical);
    expect_round_trip(calls, parse_dsml(block), block);
}
#endif

}  // namespace
}  // namespace ds4
