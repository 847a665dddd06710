// Request parsing of ds4-server under libFuzzer (see CMakeLists.txt), and under the
// corpus-replay driver (replay_main.cpp) where libFuzzer is not available.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ds4/error.h"
#include "kvstore/kvc_format.h"
#include "server/http.h"
#include "server/tool_memory.h"
#include "text/chat_json.h"

using namespace ds4::server;

namespace {

// Ids the seeds use, remembered with a sampled block, so assistant calls naming them go
// through the exact-replay splice.
ToolMemory& memory() {
    static ToolMemory m;
    static const bool filled = [] {
        m.remember(std::vector<std::string>{"call_1", "call_2", "toolu_1"},
                   "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
        return true;
    }();
    (void)filled;
    return m;
}

void render(Json messages, const Json& tools) {
    mark_prefill(messages, true);
    std::vector<ds4::Message> msgs = ds4::text::messages_from_json(messages);
    if (tools.is_array()) ds4::attach_request_tools(msgs, ds4::text::tools_from_json(tools, "request"));
    ds4::ChatOptions options;
    (void)ds4::encode_chat(msgs, options);
    const std::vector<ReplaySplice> splices = mark_replayed_calls(msgs, memory(), nullptr);
    std::string rendered = ds4::encode_chat(msgs, options);
    splice_replayed_blocks(rendered, splices);
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
    // The same bytes as a single call (parallel_tool_calls: false) stopped at its invoke.
    ForcedCall single("f", true);
    std::vector<GenEvent> one;
    single.begin(one);
    single.on_event({GenKind::content, 0, body}, one);
    GenResult rs;
    rs.stop_sequence = "</｜DSML｜invoke>";
    single.on_finish(rs, one);
    (void)assemble(one, "toolu_");
}

// The body as generated text and as a KTM section (tool-id map of a disk checkpoint).
void tool_map(const std::string& body) {
    (void)sampled_tool_block(body);
    (void)memory().entries_for_text(body);
    bool stopped = false;
    (void)ds4::kvstore::decode_tool_map(
        std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size()), 64, &stopped);
}

void exercise(const std::string& body) {
    forced_output(body);
    tool_map(body);
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
