// Final DSML parser (interface.md §3.3, §3.6): every spelling, value kinds, recovery.
#include "dsml_test_util.h"

#include "ds4/dsml.h"
#include "text/dsml_parse.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace ds4 {
namespace {

using test::Dsml;
using test::kFull;
using test::kPlain;
using test::kShort;

std::string weather_block(const Dsml& d) {
    return "\n\n" + d.open() + "\n" + d.invoke("get_weather") + "\n" +
           d.param("city", "Paris", "true") + "\n" + d.param("days", "3", "false") + "\n" +
           d.invoke_close() + "\n" + d.close();
}

class DsmlVariant : public ::testing::TestWithParam<Dsml> {};

TEST_P(DsmlVariant, BlockGivesCallContentAndExactRawBytes) {
    const std::string block = weather_block(GetParam());
    const std::string text = "Let me check.  " + block;
    const DsmlMessage m = parse_dsml(text);
    EXPECT_EQ(m.content, "Let me check.");
    ASSERT_EQ(m.tool_calls.size(), 1u);
    EXPECT_EQ(m.tool_calls[0].name, "get_weather");
    EXPECT_EQ(m.tool_calls[0].arguments, R"({"city":"Paris","days":3})");
    EXPECT_TRUE(m.tool_calls[0].warnings.empty());
    EXPECT_EQ(m.raw_block, "  " + block);
    EXPECT_EQ(m.content + m.raw_block, text);
    EXPECT_TRUE(m.block_closed);
    EXPECT_FALSE(m.recovered);
    EXPECT_FALSE(m.has_reasoning);
}

TEST_P(DsmlVariant, TwoInvokesKeepOrderAndParameterOrder) {
    const Dsml& d = GetParam();
    const std::string text = d.open() + d.invoke("b") + d.param("z", "1", "false") +
                             d.param("a", "x", "true") + d.invoke_close() + "\n" +
                             d.invoke("a") + "\n" + d.invoke_close() + d.close();
    const DsmlMessage m = parse_dsml(text);
    ASSERT_EQ(m.tool_calls.size(), 2u);
    EXPECT_EQ(m.tool_calls[0].name, "b");
    EXPECT_EQ(m.tool_calls[0].arguments, R"({"z":1,"a":"x"})");
    EXPECT_EQ(m.tool_calls[1].name, "a");
    EXPECT_EQ(m.tool_calls[1].arguments, "{}");
    EXPECT_EQ(m.content, "");
}

TEST_P(DsmlVariant, UnterminatedBlockIsReturnedAsText) {
    const std::string block = weather_block(GetParam());
    const std::string text = "Sure." + block.substr(0, block.size() - 5);
    const DsmlMessage m = parse_dsml(text);
    EXPECT_TRUE(m.unterminated);
    EXPECT_TRUE(m.recovered);
    EXPECT_TRUE(m.tool_calls.empty());
    EXPECT_EQ(m.content, text);
    EXPECT_FALSE(m.error.empty());
}

std::string spelling_name(const ::testing::TestParamInfo<Dsml>& param) {
    return param.index == 0 ? "FullDsml" : param.index == 1 ? "ShortDsml" : "PlainXml";
}

INSTANTIATE_TEST_SUITE_P(AllSpellings, DsmlVariant, ::testing::Values(kFull, kShort, kPlain),
                         spelling_name);

TEST(DsmlParse, PlainTextWithAngleBracketsStaysText) {
    const std::string text = "if a < b and <table> then x<tool_call y\n\n";
    const DsmlMessage m = parse_dsml(text);
    EXPECT_EQ(m.content, text);
    EXPECT_TRUE(m.tool_calls.empty());
    EXPECT_FALSE(m.recovered);
}

TEST(DsmlParse, ThinkingSplitsReasoningAndParsesToolsAfterThinkClose) {
    const std::string text = "I should call it.</think>Checking." + weather_block(kFull);
    const DsmlMessage m = parse_dsml(text, {.thinking = true});
    EXPECT_TRUE(m.has_reasoning);
    EXPECT_EQ(m.reasoning, "I should call it.");
    EXPECT_EQ(m.content, "Checking.");
    ASSERT_EQ(m.tool_calls.size(), 1u);
}

TEST(DsmlParse, BlockInsideReasoningIsNeverExecutable) {
    const std::string inner = weather_block(kFull);
    const std::string text = "<think>maybe" + inner + "</think>No tools needed.";
    const DsmlMessage m = parse_dsml(text, {.thinking = true});
    EXPECT_EQ(m.reasoning, "maybe" + inner);
    EXPECT_EQ(m.content, "No tools needed.");
    EXPECT_TRUE(m.tool_calls.empty());
}

TEST(DsmlParse, ThinkingCutOffIsAllReasoning) {
    // §8 item 5: a length cutoff inside thinking is reasoning, not content.
    const std::string text = "still thinking" + weather_block(kFull);
    const DsmlMessage m = parse_dsml(text, {.thinking = true});
    EXPECT_EQ(m.reasoning, text);
    EXPECT_EQ(m.content, "");
    EXPECT_TRUE(m.tool_calls.empty());
}

TEST(DsmlParse, LeadingThinkInChatModeIsReasoning) {
    const DsmlMessage m = parse_dsml("<think>hmm</think>Hi");
    EXPECT_TRUE(m.has_reasoning);
    EXPECT_EQ(m.reasoning, "hmm");
    EXPECT_EQ(m.content, "Hi");
    const DsmlMessage late = parse_dsml("Hi <think>x</think>");
    EXPECT_FALSE(late.has_reasoning);
    EXPECT_EQ(late.content, "Hi <think>x</think>");
}

TEST(DsmlParse, JsonValuesAreMinifiedKeepingTheModelsSpelling) {
    const std::string text =
        kFull.open() + kFull.invoke("f") +
        kFull.param("a", "\n { \"k\" : [1, 2.50, \"x y\"], \"u\": \"\\u00e9\" } \n", "false") +
        kFull.param("b", " true ", "false") + kFull.param("c", "", "false") +
        kFull.invoke_close() + kFull.close();
    const DsmlMessage m = parse_dsml(text);
    ASSERT_EQ(m.tool_calls.size(), 1u);
    EXPECT_EQ(m.tool_calls[0].arguments,
              R"({"a":{"k":[1,2.50,"x y"],"u":"\u00e9"},"b":true,"c":null})");
}

TEST(DsmlParse, InvalidJsonIsKeptAsStringWithWarning) {
    // ds4 turned the whole object into {} (§3.3 step 7); §8 item 8 asks not to lose it.
    const std::string text = kFull.open() + kFull.invoke("sleep") +
                             kFull.param("t", "10 seconds", "false") +
                             kFull.param("n", "hello", "false") + kFull.invoke_close() +
                             kFull.close();
    const DsmlMessage m = parse_dsml(text);
    ASSERT_EQ(m.tool_calls.size(), 1u);
    EXPECT_EQ(m.tool_calls[0].arguments, R"({"t":"10 seconds","n":"hello"})");
    ASSERT_EQ(m.tool_calls[0].warnings.size(), 2u);
    EXPECT_NE(m.tool_calls[0].warnings[0].find("'t'"), std::string::npos);
}

TEST(DsmlParse, StringValuesAreEscapedAsJson) {
    const std::string value = "line1\n\t\"quoted\" back\\slash \x01 <b>&&</b> é";
    const std::string text = kFull.open() + kFull.invoke("write") +
                             kFull.param("body", value, "true") + kFull.invoke_close() +
                             kFull.close();
    const DsmlMessage m = parse_dsml(text);
    ASSERT_EQ(m.tool_calls.size(), 1u);
    const auto args = nlohmann::json::parse(m.tool_calls[0].arguments);
    EXPECT_EQ(args.at("body").get<std::string>(), value);
}

TEST(DsmlParse, MissingStringAttributeMeansString) {
    const std::string text = kFull.open() + kFull.invoke("f") + kFull.param("x", " 42 ", "") +
                             kFull.invoke_close() + kFull.close();
    EXPECT_EQ(parse_dsml(text).tool_calls.at(0).arguments, R"({"x":" 42 "})");
}

TEST(DsmlParse, LooseNestedParametersBecomeAnObject) {
    const std::string text =
        kFull.open() + kFull.invoke("edit") + "<｜DSML｜parameter name=\"opts\">\n  " +
        kFull.param("a", "1", "false") + "\n" + kFull.param("b", "two", "") +
        "\n</｜DSML｜parameter>\n" + kFull.param("path", "x.txt", "true") +
        kFull.invoke_close() + kFull.close();
    const DsmlMessage m = parse_dsml(text);
    ASSERT_EQ(m.tool_calls.size(), 1u) << m.error;
    EXPECT_EQ(m.tool_calls[0].arguments, R"({"opts":{"a":1,"b":"two"},"path":"x.txt"})");
    // Without the stray close the run ends at the invoke close.
    const std::string no_stray = kFull.open() + kFull.invoke("edit") +
                                 "<｜DSML｜parameter name=\"opts\">" +
                                 kFull.param("a", "1", "false") + kFull.invoke_close() +
                                 kFull.close();
    EXPECT_EQ(parse_dsml(no_stray).tool_calls.at(0).arguments, R"({"opts":{"a":1}})");
}

TEST(DsmlParse, OnlyTheNeutralisedCloseTagIsDecodedByDefault) {
    const std::string value = "a &amp; b &lt;/｜DSML｜parameter> c &lt;x&gt;";
    const std::string text = kFull.open() + kFull.invoke("f") + kFull.param("s", value, "true") +
                             kFull.invoke_close() + kFull.close();
    const auto def = nlohmann::json::parse(parse_dsml(text).tool_calls.at(0).arguments);
    EXPECT_EQ(def.at("s"), "a &amp; b </｜DSML｜parameter> c &lt;x&gt;");
    const auto xml = nlohmann::json::parse(
        parse_dsml(text, {.entities = DsmlEntities::xml}).tool_calls.at(0).arguments);
    EXPECT_EQ(xml.at("s"), "a & b </｜DSML｜parameter> c <x>");
}

TEST(DsmlParse, AttributeEntitiesAndSingleQuotesAreDecoded) {
    const std::string text = kFull.open() + "<｜DSML｜invoke name='a&amp;b'>" +
                             "<｜DSML｜parameter string=\"true\" name=\"k&quot;\">v" +
                             "</｜DSML｜parameter>" + kFull.invoke_close() + kFull.close();
    const DsmlMessage m = parse_dsml(text);
    ASSERT_EQ(m.tool_calls.size(), 1u) << m.error;
    EXPECT_EQ(m.tool_calls[0].name, "a&b");
    EXPECT_EQ(m.tool_calls[0].arguments, R"({"k\"":"v"})");
}

TEST(DsmlParse, InvalidUtf8BecomesReplacementCharacter) {
    const std::string value = "ok \xC3 \xE2\x82 \xFF end \xF0\x9F\x98\x80";
    const std::string text = kFull.open() + kFull.invoke("f") + kFull.param("s", value, "true") +
                             kFull.invoke_close() + kFull.close();
    const auto args = nlohmann::json::parse(parse_dsml(text).tool_calls.at(0).arguments);
    EXPECT_EQ(args.at("s"), "ok \xEF\xBF\xBD \xEF\xBF\xBD \xEF\xBF\xBD end \xF0\x9F\x98\x80");
}

TEST(DsmlParse, DuplicateKeysAreKeptWithWarning) {
    const std::string text = kFull.open() + kFull.invoke("f") + kFull.param("k", "1", "false") +
                             kFull.param("k", "2", "false") + kFull.invoke_close() +
                             kFull.close();
    const DsmlMessage m = parse_dsml(text);
    EXPECT_EQ(m.tool_calls.at(0).arguments, R"({"k":1,"k":2})");
    EXPECT_EQ(m.tool_calls.at(0).warnings.size(), 1u);
}

TEST(DsmlParse, TextAfterTheBlockIsIgnoredAndCounted) {
    const std::string text = weather_block(kFull) + "\ntrailing";
    const DsmlMessage m = parse_dsml(text);
    EXPECT_EQ(m.tool_calls.size(), 1u);
    EXPECT_EQ(m.ignored_after_block, 9u);
    EXPECT_EQ(m.content, "");
}

TEST(DsmlParse, WithoutToolsDsmlStaysText) {
    const std::string text = "why</think>Here:" + weather_block(kFull);
    const DsmlMessage m = parse_dsml(text, {.thinking = true, .parse_tools = false});
    EXPECT_EQ(m.reasoning, "why");
    EXPECT_EQ(m.content, "Here:" + weather_block(kFull));
    EXPECT_TRUE(m.tool_calls.empty());
    EXPECT_FALSE(m.recovered);
}

TEST(DsmlParse, MalformedBlocksAreReturnedByteForByte) {
    const std::vector<std::string> bad = {
        kFull.open() + "<｜DSML｜invoke>" + kFull.invoke_close() + kFull.close(),  // no name
        kFull.open() + kFull.invoke("f") + "<｜DSML｜parameter string=\"true\">v" +
            "</｜DSML｜parameter>" + kFull.invoke_close() + kFull.close(),  // param no name
        kFull.open() + kPlain.invoke("f") + kPlain.invoke_close() + kFull.close(),  // mixed
        kFull.open() + kFull.invoke("f") + "junk" + kFull.invoke_close() + kFull.close(),
        kFull.open() + "<｜DSML｜invokes name=\"f\">" + kFull.invoke_close() + kFull.close(),
        kFull.open() + kFull.invoke("f") + kFull.param("a", "1", "false") + kFull.close(),
    };
    for (const std::string& block : bad) {
        const std::string text = "Answer: " + block;
        const DsmlMessage m = parse_dsml(text);
        EXPECT_TRUE(m.recovered) << block;
        EXPECT_TRUE(m.tool_calls.empty()) << block;
        EXPECT_EQ(m.content, text) << block;
        EXPECT_FALSE(m.error.empty()) << block;
    }
}

TEST(DsmlParse, AValidBlockAfterAMalformedOneIsParsed) {
    const std::string bad = "<tool_calls>oops</tool_calls> then";
    const std::string text = bad + weather_block(kFull);
    const DsmlMessage m = parse_dsml(text);
    EXPECT_TRUE(m.recovered);
    EXPECT_EQ(m.content, bad);
    ASSERT_EQ(m.tool_calls.size(), 1u);
    EXPECT_EQ(m.tool_calls[0].name, "get_weather");
}

TEST(DsmlParse, OverlongTagFailsCleanly) {
    const std::string text =
        kFull.open() + "<｜DSML｜invoke name=\"" + std::string(5000, 'x') + "\">";
    const DsmlMessage m = parse_dsml(text);
    EXPECT_TRUE(m.recovered);
    EXPECT_EQ(m.content, text);
}

TEST(DsmlHelpers, MinifyAndAttributes) {
    EXPECT_EQ(text::minify_json(" [ \"a b\\\" c\" , { \"k\" : 1 } ] "), R"(["a b\" c",{"k":1}])");
    const auto attrs = text::parse_tag_attributes(R"( name="x y"  string=true junk k='v&lt;')");
    ASSERT_EQ(attrs.size(), 3u);
    EXPECT_EQ(attrs[0].second, "x y");
    EXPECT_EQ(attrs[1].second, "true");
    EXPECT_EQ(attrs[2].first, "k");
    EXPECT_EQ(attrs[2].second, "v<");
    EXPECT_EQ(text::json_quote("a\"\n\x7f"), "\"a\\\"\\n\x7f\"");
}

}  // namespace
}  // namespace ds4
