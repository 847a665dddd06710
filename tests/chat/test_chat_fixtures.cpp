// Every line of tests/data/encoding/chat_fixtures.jsonl (outputs of the official DeepSeek V4
// encode_messages) must be reproduced byte for byte.
#include "text/chat_json.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace {

using ojson = nlohmann::ordered_json;

struct Fixture {
    std::string id;
    std::string line;
};

std::vector<Fixture> load_fixtures() {
    std::ifstream in(std::string(DS4_TEST_DATA_DIR) + "/encoding/chat_fixtures.jsonl");
    std::vector<Fixture> out;
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) out.push_back({ojson::parse(line).at("id").get<std::string>(), line});
    return out;
}

// "offset N: expected «…» got «…»" around the first differing byte.
std::string first_difference(const std::string& expected, const std::string& actual) {
    const auto [e, a] =
        std::mismatch(expected.begin(), expected.end(), actual.begin(), actual.end());
    const auto offset = static_cast<std::size_t>(e - expected.begin());
    const std::size_t from = offset > 60 ? offset - 60 : 0;
    return "first difference at byte " + std::to_string(offset) + " (expected size " +
           std::to_string(expected.size()) + ", actual " + std::to_string(actual.size()) +
           ")\n  expected: «" + expected.substr(from, offset - from + 80) + "»\n  actual:   «" +
           actual.substr(from, offset - from + 80) + "»";
}

// gtest prints the case by its fixture id rather than as raw bytes.
void PrintTo(const Fixture& f, std::ostream* os) {
    *os << f.id;
}

class ChatFixture : public testing::TestWithParam<Fixture> {};

TEST_P(ChatFixture, RendersOfficialPromptByteForByte) {
    const ojson f = ojson::parse(GetParam().line);
    std::optional<std::string> effort;
    if (!f.at("reasoning_effort").is_null()) effort = f["reasoning_effort"].get<std::string>();
    ds4::ChatOptions options;
    options.thinking =
        ds4::text::thinking_mode_from_official(f.at("thinking_mode").get<std::string>(), effort);
    options.drop_thinking = f.at("drop_thinking").get<bool>();

    const std::string expected = f.at("expected").get<std::string>();
    const std::string actual = ds4::text::encode_chat_json(f.at("messages"), options);
    if (actual != expected) FAIL() << first_difference(expected, actual);
}

// The KV-prefix property the server relies on: answering a user turn only appends text.
TEST_P(ChatFixture, AssistantTurnAppendsToThePromptThatAskedForIt) {
    const ojson f = ojson::parse(GetParam().line);
    std::optional<std::string> effort;
    if (!f.at("reasoning_effort").is_null()) effort = f["reasoning_effort"].get<std::string>();
    ds4::ChatOptions options;
    options.thinking =
        ds4::text::thinking_mode_from_official(f.at("thinking_mode").get<std::string>(), effort);
    options.drop_thinking = f.at("drop_thinking").get<bool>();
    // Every recorded answer to a user-like turn, plus a synthetic answer to the last turn.
    std::vector<ds4::Message> messages = ds4::text::messages_from_json(f.at("messages"));
    ds4::Message answer;
    answer.role = ds4::Role::assistant;
    answer.content = "done";
    answer.reasoning_content = "thought";
    answer.tool_calls.push_back({"x1", "f", R"({"k": [1, "v"]})"});
    messages.push_back(answer);

    const auto answers_user = [](ds4::Role r) {
        return r == ds4::Role::user || r == ds4::Role::developer || r == ds4::Role::tool;
    };
    int checked = 0;
    for (std::size_t i = 1; i < messages.size(); ++i) {
        if (messages[i].role != ds4::Role::assistant || !answers_user(messages[i - 1].role))
            continue;
        const std::span<const ds4::Message> history(messages.data(), i);
        const std::span<const ds4::Message> answered(messages.data(), i + 1);
        const std::string extended = ds4::encode_chat(answered, options);
        const std::string appended = ds4::encode_chat(history, options) +
                                     ds4::encode_assistant_turn(messages[i], options.thinking);
        if (extended != appended)
            FAIL() << "message " << i << ": " << first_difference(extended, appended);
        ++checked;
    }
    EXPECT_GT(checked, 0);
}

std::string fixture_name(const testing::TestParamInfo<Fixture>& info) {
    std::string name = info.param.id;
    std::replace_if(
        name.begin(), name.end(),
        [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
    return name;
}

INSTANTIATE_TEST_SUITE_P(Official, ChatFixture, testing::ValuesIn(load_fixtures()), fixture_name);

TEST(ChatFixtureFile, HasAllSixtyCases) {
    EXPECT_EQ(load_fixtures().size(), 60u);
}

}  // namespace
