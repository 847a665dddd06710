// Incremental DSML parser: events fed byte by byte or in any chunking fold to the final
// parse; events come as early as they are certain; the greedy-forcing state (§3.5).
#include "dsml_test_util.h"

#include "text/dsml_stream.h"

#include <gtest/gtest.h>

#include <random>

namespace ds4 {
namespace {

using test::fold;
using test::Folded;
using test::kFull;
using test::kPlain;
using test::kShort;
using text::DsmlEvent;
using text::DsmlEventKind;
using text::DsmlStream;
using text::DsmlSyntaxState;

std::string weather(const test::Dsml& d) {
    return "\n\n" + d.open() + "\n" + d.invoke("get_weather") + "\n" +
           d.param("city", "Paris & <b>Lyon</b> \"é\"", "true") + "\n" +
           d.param("days", " [1, 2] ", "false") + "\n" + d.invoke_close() + "\n" + d.close();
}

// Texts covering every path of the parser, valid and not.
std::vector<std::pair<std::string, DsmlOptions>> corpus() {
    std::vector<std::pair<std::string, DsmlOptions>> texts;
    const DsmlOptions chat{};
    const DsmlOptions think{.thinking = true};
    const DsmlOptions xml{.entities = DsmlEntities::xml};
    for (const test::Dsml* d : {&kFull, &kShort, &kPlain}) {
        texts.push_back({"Checking" + weather(*d), chat});
        texts.push_back({"why</think>ok" + weather(*d) + "tail", think});
        texts.push_back({"<think>x</think>" + weather(*d).substr(0, 60), chat});
        texts.push_back({d->open() + d->invoke("f") + d->param("a", "1", "false") + d->close(),
                         chat});
    }
    texts.push_back({"a < b <tool_calls>oops</tool_calls>" + weather(kFull), chat});
    texts.push_back({"<think>" + weather(kFull) + "</think>no", think});
    texts.push_back({kFull.open() + kFull.invoke("e") + "<｜DSML｜parameter name=\"o\">" +
                         kFull.param("a", "&lt;/｜DSML｜parameter>&amp;", "") +
                         "</｜DSML｜parameter>" + kFull.invoke_close() + kFull.close(),
                     xml});
    texts.push_back({kFull.open() + kFull.invoke("e") + kFull.param("s", "&lt;/｜DSML｜param", "true") +
                         kFull.param("j", "{\"x\": \"</｜DSML｜\"}", "false") +
                         kFull.param("bad", "nope", "false") + kFull.invoke_close() +
                         kFull.close(),
                     chat});
    texts.push_back({"a" + weather(kFull) + " b", DsmlOptions{.parse_tools = false}});
    texts.push_back({"<thi", chat});
    texts.push_back({"<thi", think});
    texts.push_back({"  \n", chat});
    texts.push_back({"x\n\n<｜DSML｜tool", chat});
    texts.push_back({"\xF0\x9F" + kFull.open() + kFull.invoke("\xC3") +
                         kFull.param("k", "\xE2\x82", "true") + kFull.invoke_close() +
                         kFull.close(),
                     chat});
    return texts;
}

Folded fold_chunks(std::string_view text, const DsmlOptions& options,
                   const std::vector<std::size_t>& cuts, DsmlMessage* message = nullptr) {
    DsmlStream stream(options);
    Folded f;
    std::size_t pos = 0;
    for (std::size_t cut : cuts) {
        std::vector<DsmlEvent> events;
        stream.feed(text.substr(pos, cut - pos), events);
        fold(f, events);
        pos = cut;
    }
    std::vector<DsmlEvent> events;
    stream.feed(text.substr(pos), events);
    stream.finish(events);
    fold(f, events);
    if (message) *message = stream.take_message();
    return f;
}

void expect_same(const Folded& f, const DsmlMessage& m, const std::string& what) {
    EXPECT_EQ(f.reasoning, m.reasoning) << what;
    EXPECT_EQ(f.content, m.content) << what;
    EXPECT_EQ(f.block_closed, m.block_closed) << what;
    ASSERT_EQ(f.calls.size(), m.tool_calls.size()) << what;
    std::size_t i = 0;
    for (const auto& [index, call] : f.calls) {
        EXPECT_TRUE(call.ended) << what;
        EXPECT_EQ(call.name, m.tool_calls[i].name) << what;
        EXPECT_EQ(call.arguments, m.tool_calls[i].arguments) << what;
        ++i;
    }
}

TEST(DsmlStream, ByteByByteEventsFoldToTheFinalParse) {
    for (const auto& [text, options] : corpus()) {
        std::vector<std::size_t> cuts;
        for (std::size_t i = 1; i < text.size(); ++i) cuts.push_back(i);
        expect_same(fold_chunks(text, options, cuts), parse_dsml(text, options), text);
    }
}

TEST(DsmlStream, RandomChunkingsFoldToTheFinalParse) {
    std::mt19937 rng(1234);
    for (const auto& [text, options] : corpus()) {
        const DsmlMessage final_message = parse_dsml(text, options);
        for (int trial = 0; trial < 50; ++trial) {
            std::vector<std::size_t> cuts;
            std::size_t pos = 0;
            while (true) {
                pos += 1 + rng() % 9;
                if (pos >= text.size()) break;
                cuts.push_back(pos);
            }
            DsmlMessage streamed;
            expect_same(fold_chunks(text, options, cuts, &streamed), final_message, text);
            EXPECT_EQ(streamed.raw_block, final_message.raw_block);
        }
    }
}

TEST(DsmlStream, CallBeginArrivesRightAfterTheInvokeHeader) {
    const std::string head = "Hi\n\n" + kFull.open() + "\n" + kFull.invoke("read_file");
    DsmlStream stream;
    std::vector<DsmlEvent> events;
    stream.feed(head.substr(0, head.size() - 1), events);
    for (const auto& e : events) EXPECT_NE(e.kind, DsmlEventKind::call_begin);
    events.clear();
    stream.feed(">", events);
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].kind, DsmlEventKind::call_begin);
    EXPECT_EQ(events[0].text, "read_file");
    EXPECT_EQ(events[1].kind, DsmlEventKind::arguments);
    EXPECT_EQ(events[1].text, "{");
}

TEST(DsmlStream, StringArgumentsStreamAndOnlyACloseTagPrefixIsHeld) {
    DsmlStream stream;
    std::vector<DsmlEvent> events;
    stream.feed(kFull.open() + kFull.invoke("w") +
                    "<｜DSML｜parameter name=\"body\" string=\"true\">abc</｜DS",
                events);
    Folded f;
    fold(f, events);
    ASSERT_EQ(f.calls.size(), 1u);
    EXPECT_EQ(f.calls[0].arguments, R"({"body":"abc)");
    EXPECT_EQ(stream.syntax_state(), DsmlSyntaxState::structural);
    events.clear();
    stream.feed("x", events);  // not the close tag after all
    fold(f, events);
    EXPECT_EQ(f.calls[0].arguments, R"({"body":"abc</｜DSx)");
    EXPECT_EQ(stream.syntax_state(), DsmlSyntaxState::string_body);
}

TEST(DsmlStream, ContentIsReleasedAsSoonAsItCannotBeSyntax) {
    DsmlStream stream;
    std::vector<DsmlEvent> events;
    stream.feed("Hello <", events);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].text, "Hello");  // the space may separate a block; '<' may open one
    events.clear();
    stream.feed("b", events);
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].text, " <b");
}

TEST(DsmlStream, MalformedBlockAbortsItsCallsThenReplaysTheBytes) {
    const std::string text = "A" + kFull.open() + kFull.invoke("f") + kFull.invoke_close() +
                             kFull.invoke("g") + "?";
    DsmlStream stream;
    std::vector<DsmlEvent> events;
    stream.feed(text, events);
    std::vector<DsmlEventKind> kinds;
    for (const auto& e : events) kinds.push_back(e.kind);
    using K = DsmlEventKind;
    const std::vector<K> expected = {K::content,  K::call_begin, K::arguments,
                                     K::call_end, K::call_begin, K::arguments,
                                     K::calls_aborted, K::content};
    EXPECT_EQ(kinds, expected);
    EXPECT_EQ(events[6].call, 0u);  // every call of the block, from the first
    EXPECT_EQ(events[4].call, 1u);
    Folded f;
    fold(f, events);
    EXPECT_TRUE(f.calls.empty());
    EXPECT_EQ(f.content, text);
}

TEST(DsmlStream, SyntaxStatesAlongAToolCall) {
    DsmlStream stream;
    std::vector<DsmlEvent> events;
    auto state_after = [&](std::string_view bytes) {
        stream.feed(bytes, events);
        return stream.syntax_state();
    };
    EXPECT_EQ(state_after("Let me look"), DsmlSyntaxState::outside);
    EXPECT_EQ(state_after("\n\n<｜DSML｜"), DsmlSyntaxState::structural);
    EXPECT_EQ(state_after("tool_calls>\n<｜DSML｜invoke name=\"f"), DsmlSyntaxState::structural);
    EXPECT_EQ(state_after("\">\n<｜DSML｜parameter name=\"p\" string=\"true\">"),
              DsmlSyntaxState::string_body);
    EXPECT_EQ(state_after("payload <"), DsmlSyntaxState::string_body);
    EXPECT_EQ(state_after("/"), DsmlSyntaxState::structural);
    EXPECT_EQ(state_after("｜DSML｜parameter>"), DsmlSyntaxState::structural);
    EXPECT_EQ(state_after("<｜DSML｜parameter name=\"j\" string=\"false\">"),
              DsmlSyntaxState::json_structural);
    EXPECT_EQ(state_after("{\"k\": \"a\\\""), DsmlSyntaxState::json_string);
    EXPECT_EQ(state_after("b\""), DsmlSyntaxState::json_structural);
    EXPECT_TRUE(stream.force_greedy());
    EXPECT_EQ(state_after("}</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"),
              DsmlSyntaxState::outside);
    EXPECT_TRUE(stream.block_closed());
    EXPECT_FALSE(stream.force_greedy());
}

TEST(DsmlStream, MarkersInsideReasoningNeverForceGreedy) {
    // §8 item 11: ds4's tracker locked onto a marker inside reasoning.
    DsmlStream stream({.thinking = true});
    std::vector<DsmlEvent> events;
    stream.feed("plan: <｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">", events);
    EXPECT_EQ(stream.syntax_state(), DsmlSyntaxState::reasoning);
    EXPECT_FALSE(stream.in_tool_block());
    stream.feed("</think>\n\n<｜DSML｜tool_calls>", events);
    EXPECT_TRUE(stream.in_tool_block());
    EXPECT_TRUE(stream.force_greedy());
}

TEST(DsmlStream, BlockClosedEventEndsGenerationAndLaterBytesAreIgnored) {
    DsmlStream stream;
    std::vector<DsmlEvent> events;
    stream.feed(weather(kFull), events);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().kind, DsmlEventKind::block_closed);
    events.clear();
    stream.feed("more", events);
    stream.finish(events);
    EXPECT_TRUE(events.empty());
    EXPECT_EQ(stream.message().ignored_after_block, 4u);
}

}  // namespace
}  // namespace ds4
