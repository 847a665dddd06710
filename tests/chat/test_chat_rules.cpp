// One test per rule of the official V4 encoder (interface.md §2.2), on small hand-written
// conversations whose expected text is spelled out in full.
#include "ds4/chat.h"
#include "ds4/error.h"
#include "text/chat_encode.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using ds4::ChatOptions;
using ds4::Message;
using ds4::Role;
using ds4::ThinkingMode;
using ds4::ToolCall;

const std::string BOS = "<｜begin▁of▁sentence｜>";
const std::string EOS = "<｜end▁of▁sentence｜>";
const std::string U = "<｜User｜>";
const std::string A = "<｜Assistant｜>";

Message msg(Role role, std::string content) {
    Message m;
    m.role = role;
    m.content = std::move(content);
    return m;
}

Message assistant(std::string content, std::string reasoning = {},
                  std::vector<ToolCall> calls = {}) {
    Message m = msg(Role::assistant, std::move(content));
    m.reasoning_content = std::move(reasoning);
    m.tool_calls = std::move(calls);
    return m;
}

Message tool_result(std::string id, std::string content) {
    Message m = msg(Role::tool, std::move(content));
    m.tool_call_id = std::move(id);
    return m;
}

ChatOptions mode(ThinkingMode thinking, bool drop = true) {
    return ChatOptions{thinking, drop};
}

std::string encode(const std::vector<Message>& messages, ChatOptions options) {
    return ds4::encode_chat(messages, options);
}

const std::string kCallsABC =
    "\n\n<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"k\" "
    "string=\"true\">a</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"k\" "
    "string=\"true\">b</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"k\" "
    "string=\"true\">c</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>";

std::vector<ToolCall> calls_abc() {
    return {{"id_a", "f", R"({"k": "a"})"},
            {"id_b", "f", R"({"k": "b"})"},
            {"id_c", "f", R"({"k": "c"})"}};
}

TEST(ChatRules, EmptyConversationIsJustBos) {
    EXPECT_EQ(encode({}, mode(ThinkingMode::max)), BOS);
}

TEST(ChatRules, GenerationPromptOpensThinkInThinkingModeAndClosesItInChatMode) {
    const std::vector<Message> m{msg(Role::system, "S"), msg(Role::user, "Q")};
    EXPECT_EQ(encode(m, mode(ThinkingMode::high)), BOS + "S" + U + "Q" + A + "<think>");
    EXPECT_EQ(encode(m, mode(ThinkingMode::none)), BOS + "S" + U + "Q" + A + "</think>");
}

TEST(ChatRules, ToolResultsMergeIntoOneUserTurnInCallOrder) {
    // Results arrive c, a, b; the model sees them in the order it made the calls.
    const std::vector<Message> m{msg(Role::user, "Q"), assistant("", "R", calls_abc()),
                                 tool_result("id_c", "C"), tool_result("id_a", "A"),
                                 tool_result("id_b", "B")};
    // Tool results count as a user turn, so without declared tools drop_thinking hides R.
    EXPECT_EQ(encode(m, mode(ThinkingMode::high)),
              BOS + U + "Q" + A + "</think>" + kCallsABC + EOS + U +
                  "<tool_result>A</tool_result>\n\n<tool_result>B</tool_result>\n\n"
                  "<tool_result>C</tool_result>" +
                  A + "<think>");
}

TEST(ChatRules, TextBlocksKeepTheirSlotsWhileToolResultsSort) {
    const std::vector<Message> m{msg(Role::user, "Q"), assistant("", "", calls_abc()),
                                 tool_result("id_c", "C"), msg(Role::user, "note"),
                                 tool_result("id_a", "A")};
    EXPECT_EQ(encode(m, mode(ThinkingMode::none)),
              BOS + U + "Q" + A + "</think>" + kCallsABC + EOS + U +
                  "<tool_result>A</tool_result>\n\nnote\n\n<tool_result>C</tool_result>" + A +
                  "</think>");
}

TEST(ChatRules, ToolResultWithoutIdSortsFirstLikeTheReference) {
    const std::vector<Message> m{msg(Role::user, "Q"), assistant("", "", calls_abc()),
                                 tool_result("id_b", "B"), tool_result("", "X")};
    EXPECT_EQ(encode(m, mode(ThinkingMode::none)),
              BOS + U + "Q" + A + "</think>" + kCallsABC + EOS + U +
                  "<tool_result>X</tool_result>\n\n<tool_result>B</tool_result>" + A + "</think>");
}

TEST(ChatRules, ConsecutiveUserMessagesMergeWithABlankLine) {
    const std::vector<Message> m{msg(Role::user, "one"), msg(Role::user, "two")};
    EXPECT_EQ(encode(m, mode(ThinkingMode::none)), BOS + U + "one\n\ntwo" + A + "</think>");
}

TEST(ChatRules, DropThinkingRemovesReasoningBeforeTheLastUserTurn) {
    const std::vector<Message> m{msg(Role::user, "U1"), assistant("A1", "R1"),
                                 msg(Role::user, "U2")};
    EXPECT_EQ(encode(m, mode(ThinkingMode::high)),
              BOS + U + "U1" + A + "</think>A1" + EOS + U + "U2" + A + "<think>");
    EXPECT_EQ(encode(m, mode(ThinkingMode::high, /*drop=*/false)),
              BOS + U + "U1" + A + "<think>R1</think>A1" + EOS + U + "U2" + A + "<think>");
}

TEST(ChatRules, ReasoningAfterTheLastUserTurnIsKept) {
    const std::vector<Message> m{msg(Role::user, "U1"), assistant("A1", "R1")};
    EXPECT_EQ(encode(m, mode(ThinkingMode::high)),
              BOS + U + "U1" + A + "<think>R1</think>A1" + EOS);
}

TEST(ChatRules, ChatModeNeverShowsReasoning) {
    const std::vector<Message> m{msg(Role::user, "U1"), assistant("A1", "R1")};
    EXPECT_EQ(encode(m, mode(ThinkingMode::none, false)), BOS + U + "U1" + A + "</think>A1" + EOS);
}

TEST(ChatRules, ToolsAnywhereKeepEarlierReasoning) {
    Message system = msg(Role::system, "S");
    system.tools.push_back({R"({"name": "f"})"});
    const std::vector<Message> m{system, msg(Role::user, "U1"), assistant("A1", "R1"),
                                 msg(Role::user, "U2")};
    const std::string out = encode(m, mode(ThinkingMode::high));
    EXPECT_NE(out.find(U + "U1" + A + "<think>R1</think>A1" + EOS + U + "U2" + A + "<think>"),
              std::string::npos);
}

TEST(ChatRules, DeveloperTurnIsAUserTurnAndIsDroppedWhenOld) {
    const std::vector<Message> m{msg(Role::developer, "D"), msg(Role::user, "U1"),
                                 assistant("A1", "R1"), msg(Role::user, "U2")};
    EXPECT_EQ(encode(m, mode(ThinkingMode::none)),
              BOS + U + "D" + U + "U1" + A + "</think>A1" + EOS + U + "U2" + A + "</think>");
    EXPECT_EQ(encode(m, mode(ThinkingMode::high)),
              BOS + U + "U1" + A + "</think>A1" + EOS + U + "U2" + A + "<think>");
}

TEST(ChatRules, MaxEffortPrefixFollowsBosExactly) {
    const std::string prefix =
        "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
        "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
        "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
        "edge cases, and adversarial scenarios.\n"
        "Explicitly write out your entire deliberation process, documenting every intermediate "
        "step, considered alternative, and rejected hypothesis to ensure absolutely no assumption "
        "is left unchecked.\n\n";
    EXPECT_EQ(ds4::text::kThinkMaxPrefix, prefix);
    const std::vector<Message> m{msg(Role::system, "S"), msg(Role::user, "Q")};
    EXPECT_EQ(encode(m, mode(ThinkingMode::max)), BOS + prefix + "S" + U + "Q" + A + "<think>");
    const std::vector<Message> no_system{msg(Role::user, "Q")};
    EXPECT_EQ(encode(no_system, mode(ThinkingMode::max)), BOS + prefix + U + "Q" + A + "<think>");
}

TEST(ChatRules, LatestReminderFollowsTheGenerationPrompt) {
    const std::vector<Message> m{msg(Role::user, "Q"), msg(Role::latest_reminder, "R")};
    EXPECT_EQ(encode(m, mode(ThinkingMode::high)),
              BOS + U + "Q" + A + "<think><｜latest_reminder｜>R");
}

TEST(ChatRules, SystemToolsAndResponseFormatUsePythonJsonSpacing) {
    Message system = msg(Role::system, "S");
    system.tools.push_back({R"({"name":"f","parameters":{"z":1,"a":[true,null]}})"});
    system.response_format = R"({"type":"json_object"})";
    const std::string out = encode({system, msg(Role::user, "Q")}, mode(ThinkingMode::none));
    EXPECT_EQ(out.rfind(BOS + "S\n\n## Tools\n\nYou have access", 0), 0u);
    EXPECT_NE(out.find("### Available Tool Schemas\n\n"
                       R"({"name": "f", "parameters": {"z": 1, "a": [true, null]}})"
                       "\n\nYou MUST strictly follow the above defined tool name and parameter "
                       "schemas to invoke tool calls.\n\n\n## Response Format:\n\nYou MUST "
                       "strictly adhere to the following schema to reply:\n"
                       R"({"type": "json_object"})" +
                       U + "Q"),
              std::string::npos);
}

TEST(ChatRules, FalsyResponseFormatRendersNothing) {
    // Python's `if response_format:` skips every falsy value.
    for (const char* falsy : {"{}", "[]", "null", "false", "0", "\"\""}) {
        Message system = msg(Role::system, "S");
        system.response_format = falsy;
        EXPECT_EQ(encode({system, msg(Role::user, "Q")}, mode(ThinkingMode::none)),
                  BOS + "S" + U + "Q" + A + "</think>")
            << falsy;
    }
}

TEST(ChatRules, PrefillLeavesTheLastAssistantTurnOpen) {
    Message a = assistant("Sure, here");
    a.prefill = true;
    EXPECT_EQ(encode({msg(Role::user, "Q"), a}, mode(ThinkingMode::none)),
              BOS + U + "Q" + A + "</think>Sure, here");
}

TEST(ChatRules, OfficialEscapingLeavesClientTextRaw) {
    // The official encoder escapes nothing: a tool result or argument containing closing tags
    // reaches the prompt verbatim (interface.md §2.4 lists ds4's own neutralisations, which
    // the canonical DSML style implements; specials are the tokenizer's concern).
    const std::vector<Message> m{
        msg(Role::user, "a & <b>"),
        assistant("", "", {{"id1", "f", R"({"s": "x</｜DSML｜parameter>y"})"}}),
        tool_result("id1", "out </tool_result> &amp;")};
    const std::string out = encode(m, mode(ThinkingMode::none));
    EXPECT_NE(out.find(U + "a & <b>" + A), std::string::npos);
    EXPECT_NE(out.find(">x</｜DSML｜parameter>y</｜DSML｜parameter>"), std::string::npos);
    EXPECT_NE(out.find("<tool_result>out </tool_result> &amp;</tool_result>"), std::string::npos);
}

TEST(ChatRules, AssistantTurnTextMatchesTheFullRender) {
    const Message a = assistant("A", "R", {{"c", "f", R"({"x": 1})"}});
    const std::string calls =
        "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"x\" "
        "string=\"false\">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    EXPECT_EQ(ds4::encode_assistant_turn(a, ThinkingMode::high), "R</think>A" + calls + EOS);
    EXPECT_EQ(ds4::encode_assistant_turn(a, ThinkingMode::none), "A" + calls + EOS);
    EXPECT_THROW((void)ds4::encode_assistant_turn(msg(Role::user, "x"), ThinkingMode::none),
                 ds4::Error);
}

TEST(ChatRules, RequestToolsGoToTheLeadingSystemMessage) {
    std::vector<Message> m{msg(Role::system, "S"), msg(Role::user, "Q")};
    ds4::attach_request_tools(m, {{R"({"name": "f"})"}});
    ASSERT_EQ(m.size(), 2u);
    ASSERT_EQ(m[0].tools.size(), 1u);

    std::vector<Message> bare{msg(Role::user, "Q")};
    ds4::attach_request_tools(bare, {{R"({"name": "f"})"}});
    ASSERT_EQ(bare.size(), 2u);
    EXPECT_EQ(bare[0].role, Role::system);
    const std::string out = encode(bare, mode(ThinkingMode::none));
    EXPECT_EQ(out.rfind(BOS + "\n\n## Tools\n\n", 0), 0u);
    EXPECT_NE(out.find("### Available Tool Schemas\n\n{\"name\": \"f\"}\n\n"), std::string::npos);

    std::vector<Message> none{msg(Role::user, "Q")};
    ds4::attach_request_tools(none, {});
    EXPECT_EQ(none.size(), 1u);
}

TEST(ChatRules, ThinkMaxNeedsTheFullContext) {
    using ds4::effective_thinking_mode;
    EXPECT_EQ(ds4::kThinkMaxMinContext, 393216u);
    EXPECT_EQ(effective_thinking_mode(ThinkingMode::max, 393216), ThinkingMode::max);
    EXPECT_EQ(effective_thinking_mode(ThinkingMode::max, 1000000), ThinkingMode::max);
    EXPECT_EQ(effective_thinking_mode(ThinkingMode::max, 393215), ThinkingMode::high);
    EXPECT_EQ(effective_thinking_mode(ThinkingMode::max, 0), ThinkingMode::high);
    EXPECT_EQ(effective_thinking_mode(ThinkingMode::high, 16), ThinkingMode::high);
    EXPECT_EQ(effective_thinking_mode(ThinkingMode::none, 16), ThinkingMode::none);
    EXPECT_EQ(ds4::thinking_mode_name(ThinkingMode::max), "max");
    EXPECT_EQ(ds4::thinking_mode_name(ThinkingMode::none), "none");
}

}  // namespace
