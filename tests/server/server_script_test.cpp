// Tool calls the model really samples, through every API: the server runs with
// --test-script, so a prompt holding the cue word is answered by a fixed DSML block of
// two calls, one decode step per token (the random demo weights never write DSML). This
// covers what forced tool_choice cannot: the unforced parse of several invokes, streamed
// argument deltas against the final object, and parallel_tool_calls: false /
// disable_parallel_tool_use ending generation after the first call.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "server_harness.h"

namespace ds4::testing {
namespace {

const char* kScript = R"([{"match": "two-calls-please", "reply":
  "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"get_time\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Tokyo</｜DSML｜parameter>\n<｜DSML｜parameter name=\"utc\" string=\"false\">true</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"}])";

const Json kWeather = {{"city", "Paris"}};
const Json kTime = {{"city", "Tokyo"}, {"utc", true}};

class ServerScripted : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        script_ = std::filesystem::temp_directory_path() / ("ds4-script-" + std::to_string(getpid()) + ".json");
        std::ofstream(script_) << kScript;
        server_ = new ServerProcess({"--test-script", script_.string()});
    }
    static void TearDownTestSuite() {
        EXPECT_EQ(server_->stop(), 0);
        delete server_;
        server_ = nullptr;
        std::filesystem::remove(script_);
    }
    static ServerProcess* server_;
    static std::filesystem::path script_;
    const ServerProcess& s() const { return *server_; }
};
ServerProcess* ServerScripted::server_ = nullptr;
std::filesystem::path ServerScripted::script_;

Json function_tool(const char* name) {
    return {{"name", name},
            {"description", name},
            {"parameters", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}}}};
}

Json chat_request(bool stream, std::optional<bool> parallel = std::nullopt) {
    Json body = {{"model", "deepseek-chat"},
                 {"messages", {{{"role", "user"}, {"content", "two-calls-please"}}}},
                 {"tools", {{{"type", "function"}, {"function", function_tool("get_weather")}},
                            {{"type", "function"}, {"function", function_tool("get_time")}}}},
                 {"stream", stream}};
    if (parallel) body["parallel_tool_calls"] = *parallel;
    return body;
}

TEST_F(ServerScripted, ChatReportsEveryCallAndTheStreamAgrees) {
    const HttpReply r = post(s(), "/v1/chat/completions", chat_request(false));
    ASSERT_EQ(r.status, 200) << r.body;
    const Json& c = r.json["choices"][0];
    EXPECT_EQ(c["finish_reason"], "tool_calls");
    const Json& calls = c["message"]["tool_calls"];
    ASSERT_EQ(calls.size(), 2u) << r.body;
    EXPECT_EQ(calls[0]["function"]["name"], "get_weather");
    EXPECT_EQ(Json::parse(calls[0]["function"]["arguments"].get<std::string>()), kWeather);
    EXPECT_EQ(calls[1]["function"]["name"], "get_time");
    EXPECT_EQ(Json::parse(calls[1]["function"]["arguments"].get<std::string>()), kTime);
    EXPECT_NE(calls[0]["id"], calls[1]["id"]);
    for (const auto& call : calls)
        EXPECT_TRUE(std::regex_match(call["id"].get<std::string>(), std::regex("call_[0-9a-f]{32}")));

    // The stream: a header per call (id + name) as soon as its invoke opens, then argument
    // deltas that add up to the same JSON.
    const HttpReply st = post(s(), "/v1/chat/completions", chat_request(true));
    ASSERT_EQ(st.status, 200);
    std::vector<std::string> names(2), args(2);
    std::string finish;
    int headers = 0;
    for (const auto& ev : parse_sse(st.body)) {
        if (ev.json.is_null()) continue;
        const Json& ch = ev.json["choices"][0];
        if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
        if (!ch["delta"].contains("tool_calls")) continue;
        for (const auto& d : ch["delta"]["tool_calls"]) {
            const std::size_t i = d["index"];
            ASSERT_LT(i, 2u);
            if (d.contains("id")) {
                ++headers;
                names[i] = d["function"]["name"];
            }
            const Json& f = d["function"];
            if (f.contains("arguments")) args[i] += f["arguments"].get<std::string>();
        }
    }
    EXPECT_EQ(headers, 2);
    EXPECT_EQ(finish, "tool_calls");
    EXPECT_EQ(names, (std::vector<std::string>{"get_weather", "get_time"}));
    EXPECT_EQ(Json::parse(args[0]), kWeather);
    EXPECT_EQ(Json::parse(args[1]), kTime);
}

TEST_F(ServerScripted, ParallelToolCallsFalseStopsAfterTheFirstCall) {
    const HttpReply all = post(s(), "/v1/chat/completions", chat_request(false, true));
    const HttpReply one = post(s(), "/v1/chat/completions", chat_request(false, false));
    ASSERT_EQ(one.status, 200) << one.body;
    const Json& c = one.json["choices"][0];
    EXPECT_EQ(c["finish_reason"], "tool_calls");
    ASSERT_EQ(c["message"]["tool_calls"].size(), 1u) << one.body;
    EXPECT_EQ(c["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    EXPECT_EQ(Json::parse(c["message"]["tool_calls"][0]["function"]["arguments"].get<std::string>()), kWeather);
    // Generation ended at the first invoke's close, not after the whole block.
    EXPECT_LT(one.json["usage"]["completion_tokens"], all.json["usage"]["completion_tokens"]);
}

TEST_F(ServerScripted, AnthropicToolUseBlocksAndDisableParallelToolUse) {
    Json body = {{"model", "deepseek-chat"},
                 {"max_tokens", 256},
                 {"messages", {{{"role", "user"}, {"content", "two-calls-please"}}}},
                 {"tools", {{{"name", "get_weather"}, {"input_schema", function_tool("x")["parameters"]}},
                            {{"name", "get_time"}, {"input_schema", function_tool("x")["parameters"]}}}}};
    const HttpReply r = post(s(), "/v1/messages", body);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json["stop_reason"], "tool_use");
    std::vector<Json> uses;
    for (const auto& b : r.json["content"])
        if (b["type"] == "tool_use") uses.push_back(b);
    ASSERT_EQ(uses.size(), 2u) << r.body;
    EXPECT_EQ(uses[0]["name"], "get_weather");
    EXPECT_EQ(uses[0]["input"], kWeather);
    EXPECT_EQ(uses[1]["input"], kTime);
    EXPECT_TRUE(std::regex_match(uses[0]["id"].get<std::string>(), std::regex("toolu_[0-9a-f]{32}")));

    body["tool_choice"] = {{"type", "auto"}, {"disable_parallel_tool_use", true}};
    const HttpReply one = post(s(), "/v1/messages", body);
    ASSERT_EQ(one.status, 200) << one.body;
    EXPECT_EQ(one.json["stop_reason"], "tool_use");
    int n = 0;
    for (const auto& b : one.json["content"]) n += b["type"] == "tool_use";
    EXPECT_EQ(n, 1) << one.body;
}

TEST_F(ServerScripted, ResponsesFunctionCallItems) {
    Json tools = Json::array();
    for (const char* name : {"get_weather", "get_time"}) {
        Json t = function_tool(name);
        t["type"] = "function";
        tools.push_back(t);
    }
    const Json body = {{"model", "deepseek-chat"}, {"input", "two-calls-please"}, {"tools", tools},
                       {"parallel_tool_calls", false}};
    const HttpReply r = post(s(), "/v1/responses", body);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json["status"], "completed");
    std::vector<Json> calls;
    for (const auto& item : r.json["output"])
        if (item["type"] == "function_call") calls.push_back(item);
    ASSERT_EQ(calls.size(), 1u) << r.body;
    EXPECT_EQ(calls[0]["name"], "get_weather");
    EXPECT_EQ(Json::parse(calls[0]["arguments"].get<std::string>()), kWeather);
}

}  // namespace
}  // namespace ds4::testing
