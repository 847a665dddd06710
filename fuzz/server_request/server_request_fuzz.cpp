// Request parsing of ds4-server under libFuzzer (see CMakeLists.txt), and under the
// corpus-replay driver (replay_main.cpp) where libFuzzer is not available.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ds4/error.h"
#include "server/http.h"
#include "text/chat_json.h"

using namespace ds4::server;

namespace {

void render(Json messages, const Json& tools) {
    mark_prefill(messages, true);
    std::vector<ds4::Message> msgs = ds4::text::messages_from_json(messages);
    if (tools.is_array()) ds4::attach_request_tools(msgs, ds4::text::tools_from_json(tools, "request"));
    ds4::ChatOptions options;
    (void)ds4::encode_chat(msgs, options);
}

void choose(const Json& j, const Json& tools) {
    const ToolChoice c = read_tool_choice(j.value("tool_choice", Json(nullptr)), tools);
    (void)forced_call_prefix(c.name);
}

// The body's bytes as a model's continuation of a forced call, in two chunks.
void forced_output(const std::string& body) {
    ForcedCall f(body.size() % 2 ? "f" : "");
    GenRequest req;
    f.configure(req);
    std::vector<GenEvent> out;
    f.begin(out);
    f.on_event({GenKind::content, 0, body.substr(0, body.size() / 2)}, out);
    f.on_event({GenKind::content, 0, body.substr(body.size() / 2)}, out);
    GenResult r;
    r.finish = body.size() % 3 ? "stop" : "length";
    f.on_finish(r, out);
    (void)assemble(out, "call_");
}

void exercise(const std::string& body) {
    forced_output(body);
    const Json j = parse_body(body);
    const std::string model = check_model(j);
    ThinkingInputs in;
    read_thinking_fields(j, in);
    in.effort = opt_string(j, "reasoning_effort");
    (void)select_thinking(in, model, 32768);
    (void)read_sampling(j, false, true);
    (void)read_stops(j, "stop");
    (void)read_max_tokens(j, {"max_tokens", "max_completion_tokens"}, 16);
    if (j.contains("messages")) {
        const Json atools = anthropic_to_openai_tools(j.value("tools", Json(nullptr)));
        choose(j, atools);
        render(anthropic_to_openai_messages(j), atools);
        if (j["messages"].is_array()) {
            choose(j, j.value("tools", Json(nullptr)));
            render(j["messages"], j.value("tools", Json(nullptr)));
        }
    }
    if (j.contains("input")) {
        const Json rtools = responses_to_openai_tools(j.value("tools", Json(nullptr)));
        choose(j, rtools);
        render(responses_to_openai_messages(j), rtools);
    }
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
