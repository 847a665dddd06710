// Malformed conversations are rejected with a ds4::Error naming the message and the field.
#include "ds4/chat.h"
#include "ds4/error.h"
#include "text/chat_json.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

using ojson = nlohmann::ordered_json;

// The message of the ds4::Error that encoding `messages` throws ("" if none is thrown).
std::string error_of(const char* messages_json) {
    try {
        (void)ds4::text::encode_chat_json(ojson::parse(messages_json), ds4::ChatOptions{});
    } catch (const ds4::Error& e) {
        return e.what();
    }
    return "";
}

#define EXPECT_ERROR_MENTIONS(json, ...)                       \
    do {                                                       \
        const std::string what = error_of(json);               \
        ASSERT_FALSE(what.empty()) << "no error for " << json; \
        for (const char* part : {__VA_ARGS__})                 \
            EXPECT_NE(what.find(part), std::string::npos)      \
                << "«" << part << "» not in «" << what << "»"; \
    } while (0)

TEST(ChatErrors, UnknownRoleNamesIndexAndRole) {
    EXPECT_ERROR_MENTIONS(
        R"([{"role": "user", "content": "q"}, {"role": "robot", "content": "x"}])",
        "chat message 1", "role", "robot");
}

TEST(ChatErrors, MissingRole) {
    EXPECT_ERROR_MENTIONS(R"([{"content": "x"}])", "chat message 0", "role");
}

TEST(ChatErrors, ToolMessageWithoutPrecedingCall) {
    EXPECT_ERROR_MENTIONS(
        R"([{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "c1", "content": "r"}])",
        "chat message 1 (tool)", "tool_call_id", "c1", "no preceding assistant");
}

TEST(ChatErrors, ToolMessageNamingAnUnknownCall) {
    EXPECT_ERROR_MENTIONS(
        R"([{"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
              "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c9", "content": "r"}])",
        "chat message 2 (tool)", "tool_call_id", "c9");
}

TEST(ChatErrors, ArgumentsThatAreNotJson) {
    EXPECT_ERROR_MENTIONS(
        R"([{"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [
              {"id": "c0", "type": "function", "function": {"name": "f", "arguments": "{}"}},
              {"id": "c1", "type": "function", "function": {"name": "g", "arguments": "{\"a\": "}}]}])",
        "chat message 1 (assistant): tool_calls[1]: tool call 'g': arguments: invalid JSON");
}

TEST(ChatErrors, ArgumentsThatAreNotAnObject) {
    EXPECT_ERROR_MENTIONS(
        R"([{"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [
              {"id": "c0", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]}])",
        "chat message 1 (assistant): tool_calls[0]: tool call 'f': arguments: expected a JSON "
        "object");
}

TEST(ChatErrors, ArgumentsMissing) {
    EXPECT_ERROR_MENTIONS(
        R"([{"role": "assistant", "content": "", "tool_calls": [{"id": "c0", "function": {"name": "f"}}]}])",
        "chat message 0 (assistant)", "tool_calls[0].function", "arguments");
}

TEST(ChatErrors, DeveloperWithoutContent) {
    EXPECT_ERROR_MENTIONS(
        R"([{"role": "developer", "content": ""}, {"role": "user", "content": "q"}])",
        "chat message 0 (developer)", "content");
}

TEST(ChatErrors, ToolsOnAUserMessage) {
    EXPECT_ERROR_MENTIONS(
        R"([{"role": "user", "content": "q", "tools": [{"type": "function", "function": {"name": "f"}}]}])",
        "chat message 0 (user)", "tools");
}

TEST(ChatErrors, ToolSchemaThatIsNotAnObject) {
    EXPECT_ERROR_MENTIONS(
        R"([{"role": "system", "content": "s", "tools": [{"type": "function", "function": {"name": "f"}},
                                                        {"type": "function", "function": 3}]}])",
        "chat message 0 (system)", "tools[1]", "object");
}

TEST(ChatErrors, NonTextContentPart) {
    EXPECT_ERROR_MENTIONS(
        R"([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]}])",
        "chat message 0 (user)", "content[1]");
}

TEST(ChatErrors, ContentOfTheWrongType) {
    EXPECT_ERROR_MENTIONS(R"([{"role": "user", "content": 7}])", "chat message 0 (user)",
                          "content");
}

TEST(ChatErrors, MessagesMustBeAnArray) {
    EXPECT_ERROR_MENTIONS(R"({"role": "user"})", "chat messages", "array");
}

TEST(ChatErrors, StructApiNamesTheFieldToo) {
    ds4::Message m;
    m.role = ds4::Role::user;
    m.reasoning_content = "r";
    try {
        (void)ds4::encode_chat(std::span<const ds4::Message>(&m, 1), ds4::ChatOptions{});
        FAIL() << "no error";
    } catch (const ds4::Error& e) {
        EXPECT_NE(std::string(e.what()).find("chat message 0 (user): reasoning_content"),
                  std::string::npos)
            << e.what();
    }
}

TEST(ChatJson, ContentPartsJoinLikeOfficialBlocks) {
    const auto messages = ds4::text::messages_from_json(ojson::parse(
        R"([{"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
            {"role": "assistant", "content": null, "reasoning_content": null, "tool_calls": [
              {"id": "x", "type": "function", "function": {"name": "f", "arguments": {"z": 1, "a": "s"}}}]}])"));
    ASSERT_EQ(messages.size(), 3u);
    EXPECT_EQ(messages[0].content, "ab");
    EXPECT_EQ(messages[1].content, "c\n\nd");
    EXPECT_EQ(messages[2].content, "");
    ASSERT_EQ(messages[2].tool_calls.size(), 1u);
    EXPECT_EQ(messages[2].tool_calls[0].arguments, R"({"z":1,"a":"s"})");
}

TEST(ChatJson, OfficialModeNames) {
    using ds4::ThinkingMode;
    using ds4::text::thinking_mode_from_official;
    EXPECT_EQ(thinking_mode_from_official("chat", "max"), ThinkingMode::none);
    EXPECT_EQ(thinking_mode_from_official("thinking", std::nullopt), ThinkingMode::high);
    EXPECT_EQ(thinking_mode_from_official("thinking", "high"), ThinkingMode::high);
    EXPECT_EQ(thinking_mode_from_official("thinking", "max"), ThinkingMode::max);
    EXPECT_THROW((void)thinking_mode_from_official("thinking", "low"), ds4::Error);
    EXPECT_THROW((void)thinking_mode_from_official("reason", std::nullopt), ds4::Error);
}

}  // namespace

namespace {

std::vector<ojson> fixture_conversations() {
    std::ifstream in(std::string(DS4_TEST_DATA_DIR) + "/encoding/chat_fixtures.jsonl");
    std::vector<ojson> out;
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) out.push_back(ojson::parse(line).at("messages"));
    return out;
}

// Encodes and reports how it ended: "ok", "ds4::Error", or the foreign exception's text.
std::string outcome(const ojson& messages) {
    try {
        (void)ds4::text::encode_chat_json(messages, ds4::ChatOptions{});
        return "ok";
    } catch (const ds4::Error&) {
        return "ds4::Error";
    } catch (const std::exception& e) {
        return std::string("foreign exception: ") + e.what();
    }
}

// Untrusted request JSON: every field of every message (and of its parts, tool calls and
// tools), replaced by a value of every JSON type, must give a prompt or a ds4::Error —
// never another exception type (nlohmann's would reach clients as an opaque 500).
TEST(ChatErrors, EveryFieldOfEveryTypeGivesAPromptOrADs4Error) {
    const std::vector<ojson> replacements{nullptr,
                                          7,
                                          -1.5,
                                          "s",
                                          true,
                                          ojson::array(),
                                          ojson::object(),
                                          ojson::array({1, "x"}),
                                          ojson{{"type", 3}, {"text", false}},
                                          ojson::array({ojson{{"type", 3}, {"text", "t"}}}),
                                          ojson::array({ojson{{"type", "text"}, {"text", 1}}})};
    std::size_t tried = 0;
    std::size_t rejected = 0;
    // Every fifth fixture (12, with tools, tool calls and every role among them) keeps the
    // test to a few seconds under ASan; each conversation yields hundreds of mutations.
    const std::vector<ojson> conversations = fixture_conversations();
    for (std::size_t c = 0; c < conversations.size(); c += 5) {
        const ojson& conversation = conversations[c];
        // Every object path inside the conversation is a place to put a bad value.
        const ojson flat = conversation.flatten();
        std::vector<std::string> pointers;
        for (const auto& [pointer, value] : flat.items()) {
            pointers.push_back(pointer);
            // Parents too (e.g. /3/tool_calls/0/function), so whole sub-objects get replaced.
            for (std::size_t cut = pointer.rfind('/'); cut != 0 && cut != std::string::npos;
                 cut = pointer.rfind('/', cut - 1))
                pointers.push_back(pointer.substr(0, cut));
        }
        std::sort(pointers.begin(), pointers.end());
        pointers.erase(std::unique(pointers.begin(), pointers.end()), pointers.end());
        for (const std::string& pointer : pointers) {
            for (const ojson& bad : replacements) {
                ojson mutated = conversation;
                mutated[ojson::json_pointer(pointer)] = bad;
                const std::string how = outcome(mutated);
                ASSERT_TRUE(how == "ok" || how == "ds4::Error")
                    << pointer << " = " << bad.dump() << ": " << how;
                ++tried;
                rejected += how == "ds4::Error";
            }
        }
    }
    std::cout << "[ mutations ] " << tried << " tried, " << rejected << " rejected\n";
    EXPECT_GT(tried, 2000u);
    EXPECT_GT(rejected, tried / 10);
}

}  // namespace
