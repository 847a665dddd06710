// Exact replay memory (interface.md §3.9) and parallel_tool_calls: false, in process:
// the id -> sampled-block map, prompts rendered with the remembered bytes, and a forced
// single call that stops at its invoke and closes the block.
#include <gtest/gtest.h>

#include "server/http.h"
#include "server/request.h"
#include "server/response_store.h"
#include "server/tool_memory.h"
#include "server_harness.h"

namespace ds4::server {
namespace {

const Tokenizer& demo_tokenizer() {
    static const Tokenizer tok = Tokenizer::load(testing::demo_model());
    return tok;
}

// What the model "sampled": compact JSON for the object parameter, where the official
// renderer writes Python's json.dumps spacing ({"depth": 2}).
const std::string kSampled =
    "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"list_files\">\n"
    "<｜DSML｜parameter name=\"path\" string=\"true\">src</｜DSML｜parameter>\n"
    "<｜DSML｜parameter name=\"opts\" string=\"false\">{\"depth\":2}</｜DSML｜parameter>\n"
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

const Json kTools = Json::parse(R"([{"type":"function","function":{"name":"list_files","description":"List files",
    "parameters":{"type":"object","properties":{"path":{"type":"string"},"opts":{"type":"object"}}}}}])");

Json call(const std::string& id, const std::string& args) {
    return {{"id", id}, {"type", "function"}, {"function", {{"name", "list_files"}, {"arguments", args}}}};
}

Json conversation(Json calls) {
    Json m = Json::array({{{"role", "user"}, {"content", "What is in src? Use the tool."}}});
    m.push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", calls}});
    for (const auto& c : calls) m.push_back({{"role", "tool"}, {"tool_call_id", c["id"]}, {"content", "a.txt b.txt"}});
    return m;
}

std::string render(const Json& messages, ToolMemory* memory, ToolReplayStats* stats = nullptr) {
    PromptEncoder enc(demo_tokenizer());
    enc.set_tool_memory(memory);
    return demo_tokenizer().decode(enc.encode_messages(messages, &kTools, ThinkingMode::none, true, stats));
}

// The canonical text with the assistant's block (the last one) replaced by `block`.
std::string with_block(std::string canonical, const std::string& block) {
    const std::string open = "\n\n<｜DSML｜tool_calls>", close = "</｜DSML｜tool_calls>";
    const std::size_t end = canonical.rfind(close);
    const std::size_t start = canonical.rfind(open, end);
    EXPECT_NE(start, std::string::npos);
    canonical.replace(start, end + close.size() - start, block);
    return canonical;
}

TEST(ToolMemory, OneTurnsIdsShareTheBlockAndUnknownIdsGiveNothing) {
    ToolMemory m;
    const std::vector<std::string> ids = {"call_a", "call_b"};
    m.remember(ids, "BLOCK1");
    m.remember(std::vector<std::string>{"call_c"}, "BLOCK2");
    EXPECT_EQ(m.size(), 3u);
    EXPECT_EQ(m.block_for(ids), "BLOCK1");
    EXPECT_EQ(m.block_for(std::vector<std::string>{"call_b"}), "BLOCK1");
    EXPECT_FALSE(m.block_for(std::vector<std::string>{"call_a", "call_x"}));
    EXPECT_FALSE(m.block_for(std::vector<std::string>{"call_a", "call_c"}));  // two blocks
    EXPECT_EQ(m.bytes(), 6u * 3 + 6u * 3);  // each id with its block
}

TEST(ToolMemory, LeastRecentlyUsedIdsGoFirst) {
    ToolMemory m(ToolMemoryLimits{2, 1 << 20});
    m.remember(std::vector<std::string>{"a"}, "A");
    m.remember(std::vector<std::string>{"b"}, "B");
    EXPECT_TRUE(m.block_for(std::vector<std::string>{"a"}));  // touches a
    m.remember(std::vector<std::string>{"c"}, "C");
    EXPECT_TRUE(m.knows("a"));
    EXPECT_FALSE(m.knows("b"));
    EXPECT_TRUE(m.knows("c"));
    ToolMemory small(ToolMemoryLimits{100, 10});
    small.remember(std::vector<std::string>{"id1"}, "12345");  // 8 bytes
    small.remember(std::vector<std::string>{"id2"}, "67890");  // 16 > 10: id1 goes
    EXPECT_EQ(small.size(), 1u);
    EXPECT_TRUE(small.knows("id2"));
}

TEST(ToolMemory, KtmEntriesAreTheIdsOfTheBlocksInTheText) {
    ToolMemory m;
    m.remember(std::vector<std::string>{"call_1", "call_2"}, kSampled);
    m.remember(std::vector<std::string>{"call_9"}, "\n\n<｜DSML｜tool_calls>\nother\n</｜DSML｜tool_calls>");
    const std::string text = "<｜User｜>hi<｜Assistant｜></think>" + kSampled + "<｜end▁of▁sentence｜>";
    const auto entries = m.entries_for_text(text);
    ASSERT_EQ(entries.size(), 2u);
    EXPECT_EQ(entries[0], (kvstore::ToolIdEntry{"call_2", kSampled}));
    EXPECT_EQ(entries[1], (kvstore::ToolIdEntry{"call_1", kSampled}));
    EXPECT_TRUE(m.entries_for_text("no blocks here").empty());
}

TEST(ToolMemory, SampledBlockIsTheLastOneAfterTheReasoning) {
    EXPECT_EQ(sampled_tool_block("think <｜DSML｜tool_calls>x</｜DSML｜tool_calls></think>Sure." + kSampled), kSampled);
    EXPECT_EQ(sampled_tool_block("no call"), "");
    EXPECT_EQ(sampled_tool_block("open only\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke"), "");
}

TEST(ToolReplayRender, KnownIdsRenderTheSampledBytes) {
    const Json messages = conversation(Json::array({call("call_1", R"({"path": "src", "opts": {"depth": 2}})")}));
    const std::string canonical = render(messages, nullptr);
    ASSERT_EQ(canonical.find(kSampled), std::string::npos);
    ToolMemory m;
    m.remember(std::vector<std::string>{"call_1"}, kSampled);
    ToolReplayStats stats;
    const std::string replayed = render(messages, &m, &stats);
    EXPECT_EQ(replayed, with_block(canonical, kSampled));
    EXPECT_NE(replayed.find(kSampled + "<｜end▁of▁sentence｜>"), std::string::npos);
    EXPECT_EQ(stats.memory, 1);
    EXPECT_EQ(stats.canonical, 0);
}

TEST(ToolReplayRender, OneUnknownIdKeepsTheCanonicalRendering) {
    const Json messages = conversation(Json::array({call("call_1", R"({"path": "src"})"), call("call_2", R"({"path": "b"})")}));
    const std::string canonical = render(messages, nullptr);
    ToolMemory m;
    m.remember(std::vector<std::string>{"call_1"}, kSampled);
    ToolReplayStats stats;
    EXPECT_EQ(render(messages, &m, &stats), canonical);
    EXPECT_EQ(stats.canonical, 1);
    EXPECT_EQ(stats.missing_ids, 1);
}

TEST(ToolReplayRender, IdsFromTheDiskLookupAreImportedOnce) {
    const Json messages = conversation(Json::array({call("call_1", R"({"path": "src", "opts": {"depth": 2}})")}));
    const std::string canonical = render(messages, nullptr);
    ToolMemory m;
    int lookups = 0;
    m.set_disk_lookup([&](const std::function<bool(std::string_view)>& wanted) {
        ++lookups;
        std::vector<kvstore::ToolIdEntry> out;
        if (wanted("call_1")) out.push_back({"call_1", kSampled});
        EXPECT_FALSE(wanted("call_other"));
        return out;
    });
    ToolReplayStats stats;
    EXPECT_EQ(render(messages, &m, &stats), with_block(canonical, kSampled));
    EXPECT_EQ(stats.disk, 1);
    EXPECT_EQ(render(messages, &m), with_block(canonical, kSampled));
    EXPECT_EQ(lookups, 1);  // known afterwards: no second lookup
}

// ---- parallel_tool_calls: false ----

TEST(SingleToolCall, ParallelToolCallsFieldIsABoolean) {
    EXPECT_FALSE(read_single_call(Json::object()));
    EXPECT_FALSE(read_single_call(Json{{"parallel_tool_calls", true}}));
    EXPECT_TRUE(read_single_call(Json{{"parallel_tool_calls", false}}));
    try {
        read_single_call(Json{{"parallel_tool_calls", "no"}});
        FAIL() << "expected a 400";
    } catch (const ApiError& e) {
        EXPECT_EQ(e.status, 400);
        EXPECT_EQ(e.param, "parallel_tool_calls");
    }
}

TEST(SingleToolCall, ForcedSingleCallStopsAtTheInvokeAndClosesTheBlock) {
    ForcedCall f("list_files", true);
    GenRequest req;
    f.configure(req);
    EXPECT_EQ(req.stops, (std::vector<std::string>{"</｜DSML｜invoke>", "</DSML｜invoke>", "</invoke>"}));
    EXPECT_EQ(req.stop_tail, "\n</｜DSML｜tool_calls>");
    std::vector<GenEvent> out;
    f.begin(out);
    f.on_event({GenKind::content, 0, "<｜DSML｜parameter name=\"path\" string=\"true\">src</｜DSML｜parameter>\n"}, out);
    GenResult r;
    r.finish = "stop";
    r.stop_sequence = "</｜DSML｜invoke>";
    f.on_finish(r, out);
    const Assembled m = assemble(out, "call_");
    ASSERT_EQ(m.calls.size(), 1u);
    EXPECT_EQ(Json::parse(m.calls[0].arguments), (Json{{"path", "src"}}));
    EXPECT_EQ(r.finish, "tool_calls");
    EXPECT_EQ(r.stop_sequence, "");
    EXPECT_EQ(r.tool_block,
              "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"list_files\">\n"
              "<｜DSML｜parameter name=\"path\" string=\"true\">src</｜DSML｜parameter>\n"
              "</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
}

TEST(SingleToolCall, JobCallIdsAreStableAndCarryThePrefix) {
    GenRequest r;
    r.call_id_prefix = "toolu_";
    Job job(std::move(r));
    const std::string a = job.call_id(0), b = job.call_id(3);
    EXPECT_EQ(job.call_id(0), a);
    EXPECT_EQ(a.rfind("toolu_", 0), 0u);
    EXPECT_EQ(a.size(), 6u + 32u);  // call_ + 32 hex
    EXPECT_EQ(job.call_ids(), (std::vector<std::string>{a, b}));
}

TEST(ResponseStore, KeepsTheMostRecentResponsesWithinItsBounds) {
    ResponseStore store(ResponseStoreLimits{2, 1 << 20});
    store.put("resp_a", Json::array({{{"role", "user"}, {"content", "a"}}}));
    store.put("resp_b", Json::array());
    EXPECT_TRUE(store.get("resp_a"));  // touches a
    store.put("resp_c", Json::array());
    EXPECT_EQ(store.size(), 2u);
    EXPECT_FALSE(store.get("resp_b"));
    EXPECT_EQ(*store.get("resp_a"), Json::array({{{"role", "user"}, {"content", "a"}}}));
    ResponseStore tiny(ResponseStoreLimits{100, 20});
    tiny.put("r1", Json::array({"0123456789"}));  // 14 + 2 bytes
    tiny.put("r2", Json::array({"0123456789"}));
    EXPECT_FALSE(tiny.get("r1"));
    EXPECT_TRUE(tiny.get("r2"));
}

}  // namespace
}  // namespace ds4::server
