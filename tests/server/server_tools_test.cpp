// Forced tool_choice on every API surface and the Responses input items Codex sends,
// against bin/ds4-server on the demo model. The demo model's weights are random, so a
// forced call's arguments are usually not DSML: the rule under test is the one
// ForcedCall documents (http.h) — the call to the forced tool is always reported; its
// arguments are a JSON object when the model wrote well-formed DSML, else the raw
// generated text; finish is tool_calls, or length when max_tokens cut the call.
#include <gtest/gtest.h>

#include <regex>

#include "server_harness.h"

namespace ds4::testing {
namespace {

class ServerTools : public ::testing::Test {
  protected:
    static void SetUpTestSuite() { server_ = new ServerProcess(); }
    static void TearDownTestSuite() {
        EXPECT_EQ(server_->stop(), 0);
        delete server_;
        server_ = nullptr;
    }
    static ServerProcess* server_;
    const ServerProcess& s() const { return *server_; }
};
ServerProcess* ServerTools::server_ = nullptr;

const Json kParams = {
    {"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}, {"required", {"city"}}};

Json chat_tools() {
    return Json::array(
        {{{"type", "function"},
          {"function",
           {{"name", "get_weather"}, {"description", "Weather"}, {"parameters", kParams}}}},
         {{"type", "function"},
          {"function", {{"name", "get_time"}, {"description", "Time"}, {"parameters", kParams}}}}});
}

Json chat_request(Json tool_choice, bool stream) {
    return {{"model", "deepseek-v4-flash"},
            {"messages", Json::array({{{"role", "user"}, {"content", "Weather in Paris?"}}})},
            {"tools", chat_tools()},
            {"tool_choice", std::move(tool_choice)},
            {"max_tokens", 12},
            {"temperature", 0},
            {"stream", stream}};
}

// The rule for a forced call's arguments text.
void expect_forced_arguments(const std::string& args, const std::string& finish) {
    const Json parsed = Json::parse(args, nullptr, false);
    if (!parsed.is_discarded() && parsed.is_object() && finish == "tool_calls")
        return;  // well-formed DSML
    // Raw text: the generated tokens after the invoke header (non-empty: at least one).
    EXPECT_FALSE(args.empty());
}

TEST_F(ServerTools, ChatForcedNamedFunctionReturnsThatCall) {
    const Json choice = {{"type", "function"}, {"function", {{"name", "get_time"}}}};
    const HttpReply r = post(s(), "/v1/chat/completions", chat_request(choice, false));
    ASSERT_EQ(r.status, 200) << r.body;
    const Json& c = r.json["choices"][0];
    const std::string finish = c["finish_reason"];
    EXPECT_TRUE(finish == "tool_calls" || finish == "length") << finish;
    ASSERT_EQ(c["message"]["tool_calls"].size(), 1u) << r.body;
    const Json& call = c["message"]["tool_calls"][0];
    EXPECT_EQ(call["type"], "function");
    EXPECT_TRUE(std::regex_match(call["id"].get<std::string>(), std::regex("call_[0-9a-f]{32}")))
        << call["id"];
    EXPECT_EQ(call["function"]["name"], "get_time");
    ASSERT_TRUE(call["function"]["arguments"].is_string());
    expect_forced_arguments(call["function"]["arguments"], finish);
    EXPECT_EQ(c["message"]["content"], "");
    EXPECT_FALSE(c["message"].contains("reasoning_content"));  // forced: no thinking
    // Streaming at temperature 0 generates the same tokens: the same call, streamed as a
    // header first, then the arguments.
    const HttpReply st = post(s(), "/v1/chat/completions", chat_request(choice, true));
    ASSERT_EQ(st.status, 200);
    const auto events = parse_sse(st.body);
    std::string name, args, stream_finish;
    int headers = 0;
    for (const auto& ev : events) {
        if (ev.json.is_null()) continue;
        const Json& ch = ev.json["choices"][0];
        if (!ch["finish_reason"].is_null()) stream_finish = ch["finish_reason"];
        if (!ch["delta"].contains("tool_calls")) continue;
        const Json& d = ch["delta"]["tool_calls"][0];
        EXPECT_EQ(d["index"], 0);
        if (d.contains("id")) {
            ++headers;
            name = d["function"]["name"];
        }
        args += d["function"]["arguments"].get<std::string>();
    }
    EXPECT_EQ(headers, 1);
    EXPECT_EQ(name, "get_time");
    EXPECT_EQ(args, call["function"]["arguments"].get<std::string>());
    EXPECT_EQ(stream_finish, finish);
}

TEST_F(ServerTools, ChatRequiredCallsATool) {
    Json body = chat_request("required", false);
    body["tools"] = Json::array({chat_tools()[0]});  // one tool: required names it
    const HttpReply r = post(s(), "/v1/chat/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
    const Json& c = r.json["choices"][0];
    ASSERT_EQ(c["message"]["tool_calls"].size(), 1u) << r.body;
    EXPECT_EQ(c["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    // Several tools: the model picks the name; the random demo model may not finish a
    // header, in which case its text comes back as content. Either way: 200.
    const HttpReply many = post(s(), "/v1/chat/completions", chat_request("required", false));
    ASSERT_EQ(many.status, 200) << many.body;
}

TEST_F(ServerTools, ChatToolChoiceNoneTakesToolsOutOfThePrompt) {
    const HttpReply with = post(s(), "/v1/chat/completions", chat_request("auto", false));
    const HttpReply none = post(s(), "/v1/chat/completions", chat_request("none", false));
    ASSERT_EQ(with.status, 200);
    ASSERT_EQ(none.status, 200);
    EXPECT_LT(none.json["usage"]["prompt_tokens"].get<int>(),
              with.json["usage"]["prompt_tokens"].get<int>());
    EXPECT_FALSE(none.json["choices"][0]["message"].contains("tool_calls"));
}

TEST_F(ServerTools, ForcedChoiceErrorsName400) {
    const HttpReply unknown =
        post(s(), "/v1/chat/completions",
             chat_request({{"type", "function"}, {"function", {{"name", "nope"}}}}, false));
    EXPECT_EQ(unknown.status, 400);
    EXPECT_EQ(unknown.json["error"]["param"], "tool_choice");
    Json no_tools = chat_request("required", false);
    no_tools.erase("tools");
    EXPECT_EQ(post(s(), "/v1/chat/completions", no_tools).status, 400);
    const Json msg = {
        {"max_tokens", 4},
        {"tool_choice", {{"type", "tool"}, {"name", "nope"}}},
        {"tools", Json::array({{{"name", "get_weather"}, {"input_schema", kParams}}})},
        {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})}};
    const HttpReply a = post(s(), "/v1/messages", msg);
    EXPECT_EQ(a.status, 400);
    EXPECT_EQ(a.json["type"], "error");
}

Json responses_request(bool stream) {
    return {{"model", "deepseek-v4-flash"},
            {"input", "Weather in Paris?"},
            {"tools",
             Json::array({{{"type", "function"}, {"name", "get_weather"}, {"parameters", kParams}},
                          {{"type", "web_search"}}})},
            {"tool_choice", {{"type", "function"}, {"name", "get_weather"}}},
            {"max_output_tokens", 12},
            {"temperature", 0},
            {"stream", stream}};
}

TEST_F(ServerTools, ResponsesForcedFunctionBothWays) {
    const HttpReply r = post(s(), "/v1/responses", responses_request(false));
    ASSERT_EQ(r.status, 200) << r.body;
    const std::string status = r.json["status"];
    EXPECT_TRUE(status == "completed" || status == "incomplete") << status;
    const Json* call = nullptr;
    for (const auto& item : r.json["output"])
        if (item["type"] == "function_call") call = &item;
    ASSERT_NE(call, nullptr) << r.body;
    EXPECT_EQ((*call)["name"], "get_weather");
    EXPECT_EQ((*call)["call_id"].get<std::string>().rfind("call_", 0), 0u);
    expect_forced_arguments((*call)["arguments"], status == "completed" ? "tool_calls" : "length");

    const HttpReply st = post(s(), "/v1/responses", responses_request(true));
    ASSERT_EQ(st.status, 200);
    const auto events = parse_sse(st.body);
    std::vector<std::string> order;
    std::string delta_args, done_args;
    for (const auto& ev : events) {
        if (ev.event.find("function_call") != std::string::npos ||
            ev.event.rfind("response.output_item", 0) == 0)
            order.push_back(ev.event);
        if (ev.event == "response.function_call_arguments.delta")
            delta_args += ev.json["delta"].get<std::string>();
        if (ev.event == "response.function_call_arguments.done") done_args = ev.json["arguments"];
    }
    const std::vector<std::string> expected = {
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done"};
    EXPECT_EQ(order, expected);
    EXPECT_EQ(delta_args, done_args);
    EXPECT_EQ(done_args, (*call)["arguments"].get<std::string>());
    EXPECT_EQ(events.front().event, "response.created");
    EXPECT_EQ(events.back().event, "response." + status);
}

Json anthropic_request(Json tool_choice, bool stream) {
    return {{"model", "deepseek-v4-flash"},
            {"max_tokens", 12},
            {"temperature", 0},
            {"stream", stream},
            {"thinking", {{"type", "enabled"}, {"budget_tokens", 1024}}},
            {"tool_choice", std::move(tool_choice)},
            {"tools", Json::array({{{"name", "get_weather"}, {"input_schema", kParams}},
                                   {{"name", "get_time"}, {"input_schema", kParams}}})},
            {"messages", Json::array({{{"role", "user"}, {"content", "Weather in Paris?"}}})}};
}

TEST_F(ServerTools, AnthropicForcedToolBothWays) {
    const HttpReply r = post(s(), "/v1/messages",
                             anthropic_request({{"type", "tool"}, {"name", "get_weather"}}, false));
    ASSERT_EQ(r.status, 200) << r.body;
    const std::string stop = r.json["stop_reason"];
    EXPECT_TRUE(stop == "tool_use" || stop == "max_tokens") << stop;
    ASSERT_EQ(r.json["content"].size(), 1u) << r.body;  // no thinking, no text: the call
    const Json& block = r.json["content"][0];
    EXPECT_EQ(block["type"], "tool_use");
    EXPECT_EQ(block["name"], "get_weather");
    EXPECT_TRUE(std::regex_match(block["id"].get<std::string>(), std::regex("toolu_[0-9a-f]{32}")))
        << block["id"];
    ASSERT_TRUE(block["input"].is_object());
    // Raw (unparsable) arguments are kept under raw_arguments, never dropped.
    if (block["input"].contains("raw_arguments")) {
        EXPECT_TRUE(block["input"]["raw_arguments"].is_string());
    }

    const HttpReply st = post(s(), "/v1/messages",
                              anthropic_request({{"type", "tool"}, {"name", "get_weather"}}, true));
    ASSERT_EQ(st.status, 200);
    std::string partial;
    int tool_blocks = 0;
    for (const auto& ev : parse_sse(st.body)) {
        if (ev.event == "content_block_start") {
            EXPECT_EQ(ev.json["content_block"]["type"], "tool_use");
            EXPECT_EQ(ev.json["content_block"]["name"], "get_weather");
            ++tool_blocks;
        }
        if (ev.event == "content_block_delta")
            partial += ev.json["delta"]["partial_json"].get<std::string>();
        if (ev.event == "message_delta") {
            EXPECT_EQ(ev.json["delta"]["stop_reason"], stop);
        }
    }
    EXPECT_EQ(tool_blocks, 1);
    // What streams as input_json_delta is always one JSON object: the same input.
    EXPECT_EQ(Json::parse(partial), block["input"]);

    // {"type":"any"} with several tools: 200 (the model picks).
    EXPECT_EQ(post(s(), "/v1/messages", anthropic_request({{"type", "any"}}, false)).status, 200);
    // {"type":"none"}: no tool_use blocks.
    const HttpReply none = post(s(), "/v1/messages", anthropic_request({{"type", "none"}}, false));
    ASSERT_EQ(none.status, 200);
    for (const auto& b : none.json["content"]) EXPECT_NE(b["type"], "tool_use");
}

// The input items Codex replays in a Responses conversation: developer message with
// input_text parts, reasoning with summary + encrypted_content, function_call and its
// output, custom_tool_call (apply_patch), local_shell_call, web_search_call; hosted tools
// in `tools` (web_search, local_shell, custom) next to function tools.
TEST_F(ServerTools, ResponsesAcceptsCodexInputItems) {
    const Json input = Json::array({
        {{"type", "message"},
         {"role", "developer"},
         {"content", Json::array({{{"type", "input_text"}, {"text", "You are Codex."}}})}},
        {{"type", "message"},
         {"role", "user"},
         {"content", Json::array({{{"type", "input_text"}, {"text", "list files"}}})}},
        {{"type", "reasoning"},
         {"id", "rs_1"},
         {"summary", Json::array({{{"type", "summary_text"}, {"text", "use shell"}}})},
         {"content", nullptr},
         {"encrypted_content", "gAAAA"}},
        {{"type", "function_call"},
         {"id", "fc_1"},
         {"call_id", "call_1"},
         {"name", "shell"},
         {"arguments", R"({"command":["ls"]})"}},
        {{"type", "function_call_output"}, {"call_id", "call_1"}, {"output", "a.txt\nb.txt"}},
        {{"type", "local_shell_call"},
         {"id", "lsh_1"},
         {"call_id", "call_2"},
         {"status", "completed"},
         {"action", {{"type", "exec"}, {"command", {"cat", "a.txt"}}, {"env", Json::object()}}}},
        {{"type", "local_shell_call_output"}, {"call_id", "call_2"}, {"output", "hello"}},
        {{"type", "custom_tool_call"},
         {"call_id", "call_3"},
         {"name", "apply_patch"},
         {"input", "*** Begin Patch\n*** End Patch"}},
        {{"type", "custom_tool_call_output"}, {"call_id", "call_3"}, {"output", "Done"}},
        {{"type", "web_search_call"},
         {"id", "ws_1"},
         {"status", "completed"},
         {"action", {{"type", "search"}, {"query", "x"}}}},
        {{"type", "message"},
         {"role", "assistant"},
         {"content", Json::array({{{"type", "output_text"}, {"text", "done"}}})}},
        {{"type", "message"},
         {"role", "user"},
         {"content", Json::array({{{"type", "input_text"}, {"text", "thanks"}}})}},
    });
    const Json tools = Json::array({
        {{"type", "function"},
         {"name", "shell"},
         {"parameters", {{"type", "object"}, {"properties", {{"command", {{"type", "array"}}}}}}}},
        {{"type", "custom"},
         {"name", "apply_patch"},
         {"description", "patch"},
         {"format", {{"type", "grammar"}, {"syntax", "lark"}, {"definition", "start: x"}}}},
        {{"type", "local_shell"}},
        {{"type", "web_search"}},
        {{"type", "web_search_preview"}},
    });
    const Json body = {{"model", "deepseek-v4-flash"},
                       {"input", input},
                       {"tools", tools},
                       {"tool_choice", "auto"},
                       {"parallel_tool_calls", false},
                       {"store", false},
                       {"include", {"reasoning.encrypted_content"}},
                       {"reasoning", {{"effort", "medium"}, {"summary", "auto"}}},
                       {"prompt_cache_key", "abc"},
                       {"text", {{"verbosity", "low"}}},
                       {"max_output_tokens", 4},
                       {"stream", true}};
    const HttpReply r = post(s(), "/v1/responses", body);
    ASSERT_EQ(r.status, 200) << r.body;
    const auto events = parse_sse(r.body);
    ASSERT_GE(events.size(), 3u);
    EXPECT_EQ(events[0].event, "response.created");
    EXPECT_EQ(events[1].event, "response.in_progress");
    EXPECT_EQ(events.back().event, "response.incomplete");  // 4 tokens of thinking
    EXPECT_EQ(events.back().json["response"]["incomplete_details"]["reason"], "max_output_tokens");
    // The hosted tools were ignored, not rendered: the same prompt as without them.
    Json plain = body;
    plain["tools"] = Json::array({tools[0], tools[1]});
    plain["stream"] = false;
    Json hosted = body;
    hosted["stream"] = false;
    const HttpReply a = post(s(), "/v1/responses", plain);
    const HttpReply b = post(s(), "/v1/responses", hosted);
    ASSERT_EQ(a.status, 200) << a.body;
    ASSERT_EQ(b.status, 200) << b.body;
    EXPECT_EQ(a.json["usage"]["input_tokens"], b.json["usage"]["input_tokens"]);
    // reasoning_tokens counts the reasoning (§8 item 15): 4 tokens, all thinking.
    const Json& usage = b.json["usage"];
    EXPECT_EQ(b.json["status"], "incomplete");
    EXPECT_GE(usage["output_tokens_details"]["reasoning_tokens"].get<int>(), 1);
    EXPECT_LE(usage["output_tokens_details"]["reasoning_tokens"].get<int>(),
              usage["output_tokens"].get<int>());
}

// §8 item 4: a trailing assistant message with "prefix": true (Chat) or any trailing
// assistant message (Anthropic) is continued, not closed: the reply follows its
// </think>, so a thinking model's continuation is content, never reasoning.
TEST_F(ServerTools, AssistantPrefillIsContinued) {
    const Json chat = {
        {"model", "deepseek-v4-flash"},
        {"max_tokens", 4},
        {"messages",
         Json::array({{{"role", "user"}, {"content", "Count to three"}},
                      {{"role", "assistant"}, {"content", "One, two,"}, {"prefix", true}}})}};
    const HttpReply r = post(s(), "/v1/chat/completions", chat);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_FALSE(r.json["choices"][0]["message"].contains("reasoning_content")) << r.body;
    const Json msg = {
        {"model", "deepseek-v4-flash"},
        {"max_tokens", 4},
        {"messages", Json::array({{{"role", "user"}, {"content", "Count to three"}},
                                  {{"role", "assistant"}, {"content", "One, two,"}}})}};
    const HttpReply a = post(s(), "/v1/messages", msg);
    ASSERT_EQ(a.status, 200) << a.body;
    for (const auto& b : a.json["content"]) EXPECT_NE(b["type"], "thinking") << a.body;
}

// §8 item 17: fields this server cannot honour are refused, not ignored.
TEST_F(ServerTools, UnsupportedChatFieldsAre400) {
    const Json base = {{"model", "deepseek-chat"},
                       {"max_tokens", 2},
                       {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})}};
    for (const auto& [key, value] : std::vector<std::pair<std::string, Json>>{
             {"n", 2}, {"logprobs", true}, {"response_format", {{"type", "json_schema"}}}}) {
        Json b = base;
        b[key] = value;
        const HttpReply r = post(s(), "/v1/chat/completions", b);
        EXPECT_EQ(r.status, 400) << key;
        EXPECT_EQ(r.json["error"]["param"], key);
    }
    Json ok = base;
    ok["n"] = 1;
    ok["logprobs"] = false;
    ok["response_format"] = {{"type", "text"}};
    EXPECT_EQ(post(s(), "/v1/chat/completions", ok).status, 200);
}

// §8 item 5: thinking cut by max_tokens is reasoning, with empty content, non-streaming too.
TEST_F(ServerTools, ThinkingCutByLengthIsReasoningNotContent) {
    const Json body = {{"model", "deepseek-v4-flash"},
                       {"max_tokens", 4},
                       {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})}};
    const HttpReply r = post(s(), "/v1/chat/completions", body);
    ASSERT_EQ(r.status, 200);
    const Json& m = r.json["choices"][0]["message"];
    if (r.json["choices"][0]["finish_reason"] == "length" && m.contains("reasoning_content")) {
        EXPECT_EQ(m["content"], "");
        EXPECT_FALSE(m["reasoning_content"].get<std::string>().empty());
    }
}

}  // namespace
}  // namespace ds4::testing
