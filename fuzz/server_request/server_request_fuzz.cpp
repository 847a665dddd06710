// Request parsing of ds4-server under libFuzzer (see CMakeLists.txt).
#include <cstddef>
#include <cstdint>
#include <string>

#include "ds4/error.h"
#include "server/http.h"
#include "text/chat_json.h"

using namespace ds4::server;

namespace {

void render(const Json& messages, const Json& tools) {
    std::vector<ds4::Message> msgs = ds4::text::messages_from_json(messages);
    if (tools.is_array()) ds4::attach_request_tools(msgs, ds4::text::tools_from_json(tools, "request"));
    ds4::ChatOptions options;
    (void)ds4::encode_chat(msgs, options);
}

void exercise(const std::string& body) {
    const Json j = parse_body(body);
    const std::string model = check_model(j);
    ThinkingInputs in;
    read_thinking_fields(j, in);
    in.effort = opt_string(j, "reasoning_effort");
    (void)select_thinking(in, model, 32768);
    (void)read_sampling(j, false, true);
    (void)read_stops(j, "stop");
    (void)read_max_tokens(j, {"max_tokens", "max_completion_tokens"}, 16);
    (void)tools_enabled(j.value("tool_choice", Json(nullptr)));
    if (j.contains("messages")) {
        render(anthropic_to_openai_messages(j), anthropic_to_openai_tools(j.value("tools", Json(nullptr))));
        if (j["messages"].is_array()) render(j["messages"], j.value("tools", Json(nullptr)));
    }
    if (j.contains("input"))
        render(responses_to_openai_messages(j), responses_to_openai_tools(j.value("tools", Json(nullptr))));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        exercise(std::string(reinterpret_cast<const char*>(data), size));
    } catch (const ApiError&) {
    } catch (const ds4::Error&) {
    } catch (const nlohmann::json::exception&) {
    }
    return 0;
}
