// Raw HTTP tests of every endpoint and error path against bin/ds4-server on the demo
// model. The demo model's weights are random, so the tests check shapes, counts and
// protocol order, never the generated words.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <future>

#include "server_harness.h"

namespace ds4::testing {
namespace {

class ServerHttp : public ::testing::Test {
protected:
    static void SetUpTestSuite() { server_ = new ServerProcess({"--max-body-mb", "1", "--cors"}); }
    static void TearDownTestSuite() {
        EXPECT_EQ(server_->stop(), 0);  // graceful SIGTERM shutdown
        delete server_;
        server_ = nullptr;
    }
    static ServerProcess* server_;
    const ServerProcess& s() const { return *server_; }
};
ServerProcess* ServerHttp::server_ = nullptr;

Json chat_body(int max_tokens, bool stream = false) {
    return {{"model", "deepseek-chat"},
            {"messages", Json::array({{{"role", "user"}, {"content", "Say hello"}}})},
            {"max_tokens", max_tokens},
            {"stream", stream}};
}

TEST_F(ServerHttp, HealthModelsAndCors) {
    auto c = s().client();
    auto h = c.Get("/health");
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 200);
    EXPECT_EQ(Json::parse(h->body)["status"], "ok");
    EXPECT_EQ(h->get_header_value("Access-Control-Allow-Origin"), "*");
    auto m = c.Get("/v1/models");
    ASSERT_TRUE(m);
    const Json list = Json::parse(m->body);
    EXPECT_EQ(list["object"], "list");
    ASSERT_EQ(list["data"].size(), 1u);
    EXPECT_EQ(list["data"][0]["id"], "deepseek-v4-flash");
    EXPECT_EQ(list["data"][0]["context_length"], 2048);
    auto one = c.Get("/v1/models/deepseek-v4-flash");
    ASSERT_TRUE(one);
    EXPECT_EQ(one->status, 200);
    EXPECT_EQ(Json::parse(one->body)["id"], "deepseek-v4-flash");
    auto missing = c.Get("/v1/models/gpt-4");
    ASSERT_TRUE(missing);
    EXPECT_EQ(missing->status, 404);
    EXPECT_EQ(Json::parse(missing->body)["error"]["code"], "model_not_found");
    auto opt = c.Options("/v1/chat/completions");
    ASSERT_TRUE(opt);
    EXPECT_EQ(opt->status, 204);
}

TEST_F(ServerHttp, ChatCompletionNonStreaming) {
    const HttpReply r = post(s(), "/v1/chat/completions", chat_body(5));
    ASSERT_EQ(r.status, 200) << r.body;
    const Json& j = r.json;
    EXPECT_EQ(j["object"], "chat.completion");
    EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
    EXPECT_EQ(j["model"], "deepseek-chat");
    const Json& choice = j["choices"][0];
    EXPECT_EQ(choice["message"]["role"], "assistant");
    EXPECT_TRUE(choice["message"]["content"].is_string());
    const std::string finish = choice["finish_reason"];
    EXPECT_TRUE(finish == "length" || finish == "stop" || finish == "tool_calls") << finish;
    const Json& u = j["usage"];
    EXPECT_GT(u["prompt_tokens"].get<int>(), 3);
    EXPECT_GE(u["completion_tokens"].get<int>(), 1);
    EXPECT_LE(u["completion_tokens"].get<int>(), 5);
    EXPECT_EQ(u["total_tokens"], u["prompt_tokens"].get<int>() + u["completion_tokens"].get<int>());
    if (finish == "length") {
        EXPECT_EQ(u["completion_tokens"], 5);
    }
}

TEST_F(ServerHttp, IdenticalPromptReusesTheLiveSequence) {
    const HttpReply a = post(s(), "/v1/chat/completions", chat_body(3));
    const HttpReply b = post(s(), "/v1/chat/completions", chat_body(3));
    ASSERT_EQ(a.status, 200);
    ASSERT_EQ(b.status, 200);
    const int prompt = b.json["usage"]["prompt_tokens"];
    EXPECT_EQ(b.json["usage"]["prompt_tokens_details"]["cached_tokens"], prompt - 1);
    EXPECT_EQ(b.json["usage"]["prompt_tokens_details"]["cache_write_tokens"], 1);
}

TEST_F(ServerHttp, ChatCompletionStreaming) {
    Json body = chat_body(6, true);
    body["stream_options"] = {{"include_usage", true}};
    body["model"] = "deepseek-v4-flash";  // thinking: reasoning_content deltas
    const HttpReply r = post(s(), "/v1/chat/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
    const auto events = parse_sse(r.body);
    ASSERT_GE(events.size(), 4u);
    EXPECT_EQ(events.front().json["choices"][0]["delta"]["role"], "assistant");
    EXPECT_EQ(events.back().data, "[DONE]");
    const Json& usage_chunk = events[events.size() - 2].json;
    EXPECT_TRUE(usage_chunk["choices"].empty());
    EXPECT_EQ(usage_chunk["usage"]["completion_tokens"], 6);
    const Json& finish_chunk = events[events.size() - 3].json;
    EXPECT_EQ(finish_chunk["choices"][0]["finish_reason"], "length");
    const std::string id = events.front().json["id"];
    for (size_t i = 0; i + 1 < events.size(); ++i) {
        EXPECT_EQ(events[i].json["id"], id);
        EXPECT_EQ(events[i].json["object"], "chat.completion.chunk");
    }
    // Thinking mode that never closed </think>: everything is reasoning, no content.
    for (size_t i = 1; i + 3 < events.size(); ++i) {
        const Json& d = events[i].json["choices"][0]["delta"];
        EXPECT_TRUE(d.contains("reasoning_content")) << d.dump();
    }
}

TEST_F(ServerHttp, CompletionsBothWays) {
    const Json body = {{"prompt", "Once upon a time"}, {"max_tokens", 4}};
    const HttpReply r = post(s(), "/v1/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json["object"], "text_completion");
    EXPECT_TRUE(r.json["choices"][0]["text"].is_string());
    EXPECT_LE(r.json["usage"]["completion_tokens"].get<int>(), 4);
    Json sbody = body;
    sbody["stream"] = true;
    const HttpReply st = post(s(), "/v1/completions", sbody);
    ASSERT_EQ(st.status, 200);
    const auto events = parse_sse(st.body);
    ASSERT_GE(events.size(), 2u);
    EXPECT_EQ(events.back().data, "[DONE]");
    EXPECT_FALSE(events[events.size() - 2].json["choices"][0]["finish_reason"].is_null());
    const HttpReply missing = post(s(), "/v1/completions", Json{{"max_tokens", 3}});
    EXPECT_EQ(missing.status, 400);
    EXPECT_EQ(missing.json["error"]["message"], "missing prompt");
}

TEST_F(ServerHttp, ResponsesBothWays) {
    const Json body = {{"model", "deepseek-chat"}, {"input", "hello"}, {"instructions", "be brief"},
                       {"max_output_tokens", 4}};
    const HttpReply r = post(s(), "/v1/responses", body);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json["object"], "response");
    EXPECT_EQ(r.json["id"].get<std::string>().rfind("resp_", 0), 0u);
    const std::string status = r.json["status"];
    EXPECT_TRUE(status == "completed" || status == "incomplete");
    EXPECT_GT(r.json["usage"]["input_tokens"].get<int>(), 0);
    Json sbody = body;
    sbody["stream"] = true;
    const HttpReply st = post(s(), "/v1/responses", sbody);
    ASSERT_EQ(st.status, 200);
    const auto events = parse_sse(st.body);
    ASSERT_GE(events.size(), 3u);
    EXPECT_EQ(events.front().event, "response.created");
    const std::string last = events.back().event;
    EXPECT_TRUE(last == "response.completed" || last == "response.incomplete") << last;
    for (size_t i = 0; i < events.size(); ++i) {
        EXPECT_EQ(events[i].json["type"], events[i].event);  // event: line matches the JSON type
        EXPECT_EQ(events[i].json["sequence_number"], static_cast<int>(i));
    }
    EXPECT_EQ(events.back().json["response"]["usage"]["output_tokens"].get<int>(),
              events.back().json["response"]["usage"]["total_tokens"].get<int>() -
                  events.back().json["response"]["usage"]["input_tokens"].get<int>());
    const HttpReply prev = post(s(), "/v1/responses", Json{{"input", "x"}, {"previous_response_id", "resp_1"}});
    EXPECT_EQ(prev.status, 404);
    EXPECT_EQ(prev.json["error"]["message"], "Previous response with id 'resp_1' not found.");
    EXPECT_EQ(prev.json["error"]["param"], "previous_response_id");
    EXPECT_EQ(prev.json["error"]["code"], "previous_response_not_found");
    const HttpReply image = post(s(), "/v1/responses",
                                 Json{{"input", Json::array({{{"role", "user"}, {"content", Json::array({{{"type", "input_image"}}})}}})}});
    EXPECT_EQ(image.status, 400);
}

// previous_response_id (§8 item 15): the stored conversation plus the new input renders
// exactly like the client replaying it all; store: false leaves nothing to continue.
TEST_F(ServerHttp, PreviousResponseIdContinuesTheConversation) {
    const Json first = {{"model", "deepseek-chat"}, {"input", "hello"}, {"max_output_tokens", 3}, {"temperature", 0}};
    const HttpReply r1 = post(s(), "/v1/responses", first);
    ASSERT_EQ(r1.status, 200) << r1.body;
    EXPECT_EQ(r1.json["store"], true);
    EXPECT_TRUE(r1.json["previous_response_id"].is_null());
    const std::string id = r1.json["id"];
    Json next = {{"model", "deepseek-chat"}, {"input", "and then?"}, {"previous_response_id", id},
                 {"max_output_tokens", 3}, {"temperature", 0}};
    const HttpReply r2 = post(s(), "/v1/responses", next);
    ASSERT_EQ(r2.status, 200) << r2.body;
    EXPECT_EQ(r2.json["previous_response_id"], id);
    Json replay_input = Json::array({{{"role", "user"}, {"content", "hello"}}});
    for (const auto& item : r1.json["output"]) replay_input.push_back(item);
    replay_input.push_back({{"role", "user"}, {"content", "and then?"}});
    const HttpReply r3 = post(s(), "/v1/responses", Json{{"model", "deepseek-chat"}, {"input", replay_input},
                                                          {"max_output_tokens", 3}, {"temperature", 0}, {"store", false}});
    ASSERT_EQ(r3.status, 200) << r3.body;
    EXPECT_EQ(r3.json["store"], false);
    EXPECT_EQ(r2.json["usage"]["input_tokens"], r3.json["usage"]["input_tokens"]);
    EXPECT_GT(r2.json["usage"]["input_tokens"].get<int>(), r1.json["usage"]["input_tokens"].get<int>());
    // A chain of three: the second response is stored with everything before it.
    next["previous_response_id"] = r2.json["id"];
    next["input"] = "last one";
    const HttpReply r4 = post(s(), "/v1/responses", next);
    ASSERT_EQ(r4.status, 200) << r4.body;
    EXPECT_GT(r4.json["usage"]["input_tokens"].get<int>(), r2.json["usage"]["input_tokens"].get<int>());
    // store: false is not kept.
    const HttpReply gone = post(s(), "/v1/responses", Json{{"input", "x"}, {"previous_response_id", r3.json["id"]}});
    EXPECT_EQ(gone.status, 404);
    EXPECT_EQ(gone.json["error"]["message"],
              "Previous response with id '" + r3.json["id"].get<std::string>() + "' not found.");
    const HttpReply bad = post(s(), "/v1/responses", Json{{"input", "x"}, {"store", "yes"}});
    EXPECT_EQ(bad.status, 400);
    EXPECT_EQ(bad.json["error"]["param"], "store");
}

// parallel_tool_calls / disable_parallel_tool_use: accepted, and a non-boolean is a 400
// naming the field on every API that has them (one generation only: a prompt with tools
// is long for the sanitizer run).
TEST_F(ServerHttp, SingleToolCallFlagsAreAcceptedAndTyped) {
    const Json fn = {{"type", "function"}, {"function", {{"name", "f"}, {"parameters", {{"type", "object"}}}}}};
    Json chat = {{"model", "deepseek-chat"}, {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})},
                 {"max_tokens", 1}, {"tools", Json::array({fn})}, {"parallel_tool_calls", false}};
    EXPECT_EQ(post(s(), "/v1/chat/completions", chat).status, 200);
    chat["parallel_tool_calls"] = "no";
    const HttpReply bad = post(s(), "/v1/chat/completions", chat);
    EXPECT_EQ(bad.status, 400);
    EXPECT_EQ(bad.json["error"]["param"], "parallel_tool_calls");
    const Json resp = {{"model", "deepseek-chat"}, {"input", "hi"}, {"max_output_tokens", 1},
                       {"tools", Json::array({{{"type", "function"}, {"name", "f"}}})}, {"parallel_tool_calls", 0}};
    const HttpReply bad_resp = post(s(), "/v1/responses", resp);
    EXPECT_EQ(bad_resp.status, 400);
    EXPECT_EQ(bad_resp.json["error"]["param"], "parallel_tool_calls");
    const Json msg = {{"model", "deepseek-chat"}, {"max_tokens", 1}, {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})},
                      {"tools", Json::array({{{"name", "f"}, {"input_schema", {{"type", "object"}}}}})},
                      {"tool_choice", {{"type", "auto"}, {"disable_parallel_tool_use", 1}}}};
    const HttpReply bad_msg = post(s(), "/v1/messages", msg);
    EXPECT_EQ(bad_msg.status, 400);
    EXPECT_NE(bad_msg.body.find("disable_parallel_tool_use"), std::string::npos) << bad_msg.body;
}

TEST_F(ServerHttp, AnthropicMessagesBothWays) {
    const Json body = {{"model", "deepseek-v4-flash"}, {"max_tokens", 5}, {"system", "be brief"},
                       {"messages", Json::array({{{"role", "user"}, {"content", Json::array({{{"type", "text"}, {"text", "hi"}}})}}})}};
    const HttpReply r = post(s(), "/v1/messages", body);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json["type"], "message");
    EXPECT_EQ(r.json["id"].get<std::string>().rfind("msg_", 0), 0u);
    EXPECT_EQ(r.json["stop_reason"], "max_tokens");
    const Json& u = r.json["usage"];
    EXPECT_GT(u["input_tokens"].get<int>() + u["cache_read_input_tokens"].get<int>(), 3);
    EXPECT_EQ(u["output_tokens"], 5);
    ASSERT_FALSE(r.json["content"].empty());
    Json sbody = body;
    sbody["stream"] = true;
    const HttpReply st = post(s(), "/v1/messages", sbody);
    ASSERT_EQ(st.status, 200);
    const auto events = parse_sse(st.body);
    ASSERT_GE(events.size(), 6u);
    EXPECT_EQ(events[0].event, "message_start");
    EXPECT_EQ(events[1].event, "ping");
    EXPECT_EQ(events[events.size() - 2].event, "message_delta");
    EXPECT_EQ(events.back().event, "message_stop");
    EXPECT_EQ(events[events.size() - 2].json["usage"]["output_tokens"], 5);
    EXPECT_EQ(events[events.size() - 2].json["delta"]["stop_reason"], "max_tokens");
    // Blocks open and close in order with increasing indexes.
    int open = -1, next = 0;
    for (const auto& ev : events) {
        EXPECT_EQ(ev.json["type"], ev.event);
        if (ev.event == "content_block_start") {
            EXPECT_EQ(open, -1);
            EXPECT_EQ(ev.json["index"], next);
            open = next++;
        } else if (ev.event == "content_block_delta") {
            EXPECT_EQ(ev.json["index"], open);
        } else if (ev.event == "content_block_stop") {
            EXPECT_EQ(ev.json["index"], open);
            open = -1;
        }
    }
    EXPECT_EQ(open, -1);
    EXPECT_GE(next, 1);
    const HttpReply count = post(s(), "/v1/messages/count_tokens", body);
    ASSERT_EQ(count.status, 200);
    EXPECT_GT(count.json["input_tokens"].get<int>(), 3);
}

TEST_F(ServerHttp, ToolsAreAcceptedOnEverySurface) {
    const Json fn = {{"name", "get_weather"}, {"description", "Weather"},
                     {"parameters", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}}}};
    Json chat = chat_body(3);
    chat["tools"] = Json::array({{{"type", "function"}, {"function", fn}}});
    chat["tool_choice"] = "auto";
    EXPECT_EQ(post(s(), "/v1/chat/completions", chat).status, 200);
    chat["tool_choice"] = "required";  // forced by prefill (server_tools_test.cpp)
    const HttpReply forced = post(s(), "/v1/chat/completions", chat);
    ASSERT_EQ(forced.status, 200) << forced.body;
    EXPECT_EQ(forced.json["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    Json msg = {{"model", "deepseek-chat"}, {"max_tokens", 3},
                {"tools", Json::array({{{"name", "get_weather"}, {"input_schema", fn["parameters"]}}})},
                {"messages", Json::array({{{"role", "user"}, {"content", "weather?"}},
                                          {{"role", "assistant"}, {"content", Json::array({{{"type", "tool_use"}, {"id", "t1"}, {"name", "get_weather"}, {"input", {{"city", "Paris"}}}}})}},
                                          {{"role", "user"}, {"content", Json::array({{{"type", "tool_result"}, {"tool_use_id", "t1"}, {"content", "sunny"}}})}}})}};
    const HttpReply m = post(s(), "/v1/messages", msg);
    EXPECT_EQ(m.status, 200) << m.body;
    Json resp = {{"model", "deepseek-chat"}, {"max_output_tokens", 3},
                 {"tools", Json::array({{{"type", "function"}, {"name", "get_weather"}, {"parameters", fn["parameters"]}}})},
                 {"input", Json::array({{{"role", "user"}, {"content", "weather?"}},
                                        {{"type", "function_call"}, {"call_id", "c1"}, {"name", "get_weather"}, {"arguments", R"({"city":"Paris"})"}},
                                        {{"type", "function_call_output"}, {"call_id", "c1"}, {"output", "sunny"}}})}};
    const HttpReply rr = post(s(), "/v1/responses", resp);
    EXPECT_EQ(rr.status, 200) << rr.body;
}

TEST_F(ServerHttp, ErrorsAreClear4xxJson) {
    const HttpReply bad_json = post(s(), "/v1/chat/completions", std::string("{\"messages\": ["));
    EXPECT_EQ(bad_json.status, 400);
    EXPECT_NE(bad_json.json["error"]["message"].get<std::string>().find("invalid JSON"), std::string::npos);
    Json wrong = chat_body(3);
    wrong["max_tokens"] = "three";
    const HttpReply wrong_type = post(s(), "/v1/chat/completions", wrong);
    EXPECT_EQ(wrong_type.status, 400);
    EXPECT_EQ(wrong_type.json["error"]["param"], "max_tokens");
    Json unknown = chat_body(3);
    unknown["model"] = "gpt-4o";
    const HttpReply unknown_model = post(s(), "/v1/chat/completions", unknown);
    EXPECT_EQ(unknown_model.status, 404);
    EXPECT_EQ(unknown_model.json["error"]["code"], "model_not_found");
    Json empty = chat_body(3);
    empty["messages"] = Json::array();
    EXPECT_EQ(post(s(), "/v1/chat/completions", empty).status, 400);
    const HttpReply missing = post(s(), "/v1/chat/completions", Json{{"max_tokens", 3}});
    EXPECT_EQ(missing.status, 400);
    EXPECT_EQ(missing.json["error"]["message"], "missing messages");
    // Over --max-body-mb 1.
    Json big = chat_body(3);
    big["messages"][0]["content"] = std::string(1100000, 'a');
    const HttpReply too_big = post(s(), "/v1/chat/completions", big);
    EXPECT_EQ(too_big.status, 413);
    EXPECT_EQ(too_big.json["error"]["message"], "request body too large");
    // Prompt longer than --ctx 2048.
    Json overflow = chat_body(3);
    std::string words;
    for (int i = 0; i < 1500; ++i) words += " w" + std::to_string(i);
    overflow["messages"][0]["content"] = words;
    const HttpReply over = post(s(), "/v1/chat/completions", overflow);
    EXPECT_EQ(over.status, 400);
    EXPECT_EQ(over.json["error"]["code"], "context_length_exceeded");
    EXPECT_EQ(over.json["error"]["n_ctx"], 2048);
    // Anthropic surface: Anthropic's error shape, also for context overflow.
    Json am = {{"max_tokens", 3}, {"messages", Json::array({{{"role", "user"}, {"content", words}}})}};
    const HttpReply aover = post(s(), "/v1/messages", am);
    EXPECT_EQ(aover.status, 400);
    EXPECT_EQ(aover.json["type"], "error");
    EXPECT_EQ(aover.json["error"]["type"], "invalid_request_error");
    EXPECT_EQ(aover.json["error"]["n_ctx"], 2048);
    const HttpReply abad = post(s(), "/v1/messages", std::string("not json"));
    EXPECT_EQ(abad.status, 400);
    EXPECT_EQ(abad.json["type"], "error");
    // Unknown endpoint.
    const HttpReply nowhere = post(s(), "/v1/nowhere", Json::object());
    EXPECT_EQ(nowhere.status, 404);
    EXPECT_NE(nowhere.json["error"]["message"].get<std::string>().find("unknown endpoint"), std::string::npos);
}

TEST_F(ServerHttp, StopSequencesApplyToVisibleTextOnly) {
    // Thinking mode on the demo model never closes </think> within 8 tokens: everything is
    // reasoning, which stop sequences must not cut (interface.md §8 item 7).
    const std::vector<std::string> stops = {" ", "e", "a", "o", "i"};
    Json thinking = chat_body(8);
    thinking["model"] = "deepseek-v4-flash";
    thinking["stop"] = stops;
    const HttpReply t = post(s(), "/v1/chat/completions", thinking);
    ASSERT_EQ(t.status, 200) << t.body;
    EXPECT_EQ(t.json["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(t.json["usage"]["completion_tokens"], 8);
    // Non-thinking: the visible text never contains a stop string; a match reports stop.
    Json chat = chat_body(16);
    chat["stop"] = stops;
    const HttpReply c = post(s(), "/v1/chat/completions", chat);
    ASSERT_EQ(c.status, 200) << c.body;
    const std::string content = c.json["choices"][0]["message"]["content"];
    for (const auto& stop : stops) EXPECT_EQ(content.find(stop), std::string::npos) << content;
    // Anthropic reports the matched sequence.
    Json am = {{"model", "deepseek-chat"}, {"max_tokens", 16}, {"stop_sequences", stops},
               {"messages", Json::array({{{"role", "user"}, {"content", "Say hello"}}})}};
    const HttpReply a = post(s(), "/v1/messages", am);
    ASSERT_EQ(a.status, 200) << a.body;
    if (a.json["stop_reason"] == "stop_sequence") {
        EXPECT_NE(std::find(stops.begin(), stops.end(), a.json["stop_sequence"].get<std::string>()), stops.end());
    } else {
        EXPECT_TRUE(a.json["stop_sequence"].is_null());
    }
}

TEST_F(ServerHttp, MetricsArePrometheusText) {
    auto c = s().client();
    auto m = c.Get("/metrics");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status, 200);
    EXPECT_NE(m->body.find("# TYPE ds4_completion_tokens_total counter"), std::string::npos);
    EXPECT_NE(m->body.find("ds4_queue_depth "), std::string::npos);
    EXPECT_NE(m->body.find("ds4_live_sequences "), std::string::npos);
}

TEST(ServerAuth, ApiKeyIsRequiredWhenSet) {
    ServerProcess s({"--api-key", "sekrit"});
    const Json body = chat_body(2);
    EXPECT_EQ(post(s, "/v1/chat/completions", body.dump()).status, 401);
    const HttpReply anthropic = post(s, "/v1/messages", std::string("{}"));
    EXPECT_EQ(anthropic.status, 401);
    EXPECT_EQ(anthropic.json["type"], "error");
    EXPECT_EQ(post(s, "/v1/chat/completions", body.dump(), {{"Authorization", "Bearer sekrit"}}).status, 200);
    Json am = {{"max_tokens", 2}, {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})}};
    EXPECT_EQ(post(s, "/v1/messages", am.dump(), {{"x-api-key", "sekrit"}}).status, 200);
    auto c = s.client();
    auto h = c.Get("/health");  // open without a key
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 200);
    EXPECT_EQ(s.stop(), 0);
}

// While a request waits (queued behind another here; a long prefill alike), the streams get
// keep-alives that clients with an idle timeout see as activity: Responses repeats
// response.in_progress (Codex counts events, not comments), Anthropic sends ping, Chat a
// comment. DS4_SSE_KEEPALIVE_MS shortens the interval for the test.
TEST(ServerKeepAlive, WaitingStreamsGetEventsEachApiAccepts) {
    ::setenv("DS4_SSE_KEEPALIVE_MS", "100", 1);
    ServerProcess s({"--parallel", "1"});
    ::unsetenv("DS4_SSE_KEEPALIVE_MS");
    ASSERT_TRUE(s.running());
    const Json hog = {{"model", "deepseek-chat"}, {"prompt", "Count slowly"}, {"max_tokens", 600}, {"temperature", 0}};
    auto first = std::async(std::launch::async, [&] { return post(s, "/v1/completions", hog); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let it take the only slot
    const Json resp = {{"model", "deepseek-chat"}, {"input", "hello"}, {"max_output_tokens", 2}, {"stream", true}};
    const Json anth = {{"model", "deepseek-chat"}, {"max_tokens", 2}, {"stream", true},
                       {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})}};
    auto r = std::async(std::launch::async, [&] { return post(s, "/v1/responses", resp); });
    auto a = std::async(std::launch::async, [&] { return post(s, "/v1/messages", anth); });
    auto c = std::async(std::launch::async, [&] { return post(s, "/v1/chat/completions", chat_body(2, true)); });
    ASSERT_EQ(first.get().status, 200);
    const HttpReply rr = r.get(), ar = a.get(), cr = c.get();
    ASSERT_EQ(rr.status, 200) << rr.body;
    ASSERT_EQ(ar.status, 200) << ar.body;
    ASSERT_EQ(cr.status, 200) << cr.body;
    const auto re = parse_sse(rr.body);
    const auto in_progress = std::count_if(re.begin(), re.end(), [](const SseEvent& e) { return e.event == "response.in_progress"; });
    EXPECT_GE(in_progress, 2) << rr.body;  // the one after response.created, then keep-alives
    for (size_t i = 0; i < re.size(); ++i) EXPECT_EQ(re[i].json["sequence_number"], static_cast<int>(i));
    const std::string last = re.back().event;
    EXPECT_TRUE(last == "response.completed" || last == "response.incomplete") << last;
    const auto ae = parse_sse(ar.body);
    const auto pings = std::count_if(ae.begin(), ae.end(), [](const SseEvent& e) { return e.event == "ping"; });
    EXPECT_GE(pings, 2) << ar.body;  // the one after message_start, then keep-alives
    EXPECT_EQ(ae.back().event, "message_stop");
    EXPECT_NE(cr.body.find(": keep-alive\n\n"), std::string::npos) << cr.body;
}

}  // namespace
}  // namespace ds4::testing
