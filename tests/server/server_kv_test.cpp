// KV reuse through bin/ds4-server on the demo model: the disk cache (--kv-disk-dir) is
// written after the first long request and read by a restarted server, live sessions are
// reused across turns, concurrent requests never share mutable KV, corrupt cache files are
// reported and skipped, SIGTERM writes shutdown checkpoints and exits 0, and --trace
// records prompts, cache decisions and generations. The demo weights are random: the
// tests compare outputs between runs, never against fixed words.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "ds4/engine.h"
#include "kvstore/kvc_format.h"
#include "server/pool_sequence_source.h"
#include "server/request.h"
#include "server/tool_memory.h"
#include "server_harness.h"

namespace ds4::testing {
namespace {

namespace fs = std::filesystem;

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "ds4-server-kv-XXXXXX").string();
        path = mkdtemp(tmpl.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

// A long user message: the prompt passes --kv-cache-min-tokens 64.
std::string long_text() {
    std::string s = "Please read these notes carefully before answering.";
    for (int i = 0; i < 30; ++i) s += " Note " + std::to_string(i) + ": the river flows north past the mill.";
    return s;
}

Json chat(Json messages, int max_tokens, bool stream = false) {
    return {{"model", "deepseek-chat"}, {"messages", std::move(messages)}, {"max_tokens", max_tokens},
            {"temperature", 0}, {"stream", stream}};
}

Json user(const std::string& text) { return {{"role", "user"}, {"content", text}}; }

struct KvFile {
    fs::path path;
    kvstore::KvcHeader header;
    std::string text;
};

// Every *.kv file of dir, with its header and text section (ASSERTs on a bad one).
std::vector<KvFile> kv_files(const fs::path& dir) {
    std::vector<KvFile> out;
    for (const auto& de : fs::directory_iterator(dir)) {
        if (de.path().extension() != ".kv") continue;
        std::ifstream in(de.path(), std::ios::binary);
        std::ostringstream buffer;
        buffer << in.rdbuf();
        const std::string bytes = buffer.str();
        KvFile f{de.path(), {}, {}};
        std::string why;
        if (bytes.size() < kvstore::kPrefixBytes) {
            ADD_FAILURE() << de.path() << " is shorter than a KVC header";
            continue;
        }
        std::span<const uint8_t, kvstore::kPrefixBytes> prefix(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                               kvstore::kPrefixBytes);
        EXPECT_TRUE(kvstore::decode_prefix(prefix, &f.header, &why)) << de.path() << ": " << why;
        EXPECT_GE(bytes.size(), f.header.body_end()) << de.path();
        f.text = bytes.substr(kvstore::kPrefixBytes, f.header.text_bytes);
        out.push_back(std::move(f));
    }
    return out;
}

std::vector<Json> trace_lines(const fs::path& file) {
    std::vector<Json> out;
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        Json j = Json::parse(line, nullptr, false);
        EXPECT_FALSE(j.is_discarded()) << "not JSON: " << line;
        if (!j.is_discarded()) out.push_back(std::move(j));
    }
    return out;
}

std::vector<Json> events(const std::vector<Json>& lines, const std::string& name) {
    std::vector<Json> out;
    for (const Json& j : lines)
        if (j.value("event", "") == name) out.push_back(j);
    return out;
}

double metric(const std::string& text, const std::string& name) {
    const size_t at = text.find("\n" + name + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + name.size() + 2));
}

std::string metrics(const ServerProcess& s) {
    auto c = s.client();
    auto r = c.Get("/metrics");
    return r ? r->body : std::string();
}

std::string content_of(const HttpReply& r) { return r.json["choices"][0]["message"]["content"].get<std::string>(); }

// First long request: a cold save named by the SHA-1 of the rendered prefix; SIGTERM adds
// a shutdown checkpoint and exits 0; a server restarted on the directory loads the cold
// checkpoint instead of evaluating the prompt and answers exactly like the cold run.
TEST(ServerKv, DiskCacheSurvivesARestartAndGivesTheSameGreedyOutput) {
    TempDir dir;
    const fs::path kv = dir.path / "kv";
    const Json body = chat(Json::array({user(long_text())}), 8);
    std::string cold_answer;
    int prompt_tokens = 0;
    {
        ServerProcess s({"--kv-disk-dir", kv.string(), "--kv-cache-min-tokens", "64", "--trace",
                         (dir.path / "trace1.jsonl").string(), "--parallel", "1"});
        const HttpReply r = post(s, "/v1/chat/completions", body);
        ASSERT_EQ(r.status, 200) << r.body;
        cold_answer = content_of(r);
        prompt_tokens = r.json["usage"]["prompt_tokens"];
        ASSERT_GT(prompt_tokens, 64);
        EXPECT_EQ(r.json["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

        const std::vector<KvFile> files = kv_files(kv);
        ASSERT_EQ(files.size(), 1u);
        const KvFile& f = files[0];
        EXPECT_EQ(f.path.filename().string(), kvstore::sha1_hex(f.text) + ".kv");
        EXPECT_EQ(f.header.reason, kvstore::SaveReason::Cold);
        EXPECT_EQ(f.header.ctx, 2048u);
        EXPECT_EQ(f.header.tokens, static_cast<uint32_t>(prompt_tokens - 1));
        EXPECT_EQ(f.text.rfind("<｜begin▁of▁sentence｜>", 0), 0u) << f.text.substr(0, 80);
        EXPECT_NE(f.text.find("<｜User｜>Please read these notes"), std::string::npos);
        EXPECT_NE(f.text.find("Note 29"), std::string::npos);

        const std::string m = metrics(s);
        EXPECT_EQ(metric(m, "ds4_kv_cache_disk_saves_total"), 1);
        EXPECT_EQ(metric(m, "ds4_kv_cache_misses_total"), 1);
        EXPECT_EQ(metric(m, "ds4_kv_disk_files"), 1);
        EXPECT_EQ(metric(m, "ds4_kv_disk_bytes"), static_cast<double>(fs::file_size(f.path)));
        EXPECT_EQ(metric(m, "ds4_kv_live_sessions"), 1);
        EXPECT_EQ(s.stop(), 0);
    }
    // The shutdown checkpoint holds the prompt and the generated tokens.
    const std::vector<KvFile> after = kv_files(kv);
    ASSERT_EQ(after.size(), 2u);
    const auto shutdown = std::find_if(after.begin(), after.end(), [](const KvFile& f) {
        return f.header.reason == kvstore::SaveReason::Shutdown;
    });
    ASSERT_NE(shutdown, after.end());
    EXPECT_GT(shutdown->header.tokens, static_cast<uint32_t>(prompt_tokens));
    const std::vector<Json> trace1 = trace_lines(dir.path / "trace1.jsonl");
    const auto saves = events(trace1, "disk_save");
    ASSERT_EQ(saves.size(), 2u);
    EXPECT_EQ(saves[0]["reason"], "cold");
    EXPECT_EQ(saves[1]["reason"], "shutdown");
    EXPECT_EQ(saves[1]["file"], shutdown->path.filename().string());

    ServerProcess s2({"--kv-disk-dir", kv.string(), "--kv-cache-min-tokens", "64", "--trace",
                      (dir.path / "trace2.jsonl").string(), "--parallel", "1"});
    const HttpReply r2 = post(s2, "/v1/chat/completions", body);
    ASSERT_EQ(r2.status, 200) << r2.body;
    EXPECT_EQ(content_of(r2), cold_answer);
    EXPECT_EQ(r2.json["usage"]["prompt_tokens"], prompt_tokens);
    EXPECT_EQ(r2.json["usage"]["prompt_tokens_details"]["cached_tokens"], prompt_tokens - 1);
    const std::string m2 = metrics(s2);
    EXPECT_NE(m2.find("ds4_kv_cache_hits_total{source=\"disk\"} 1\n"), std::string::npos) << m2;
    EXPECT_EQ(metric(m2, "ds4_prefill_tokens_total"), 1);
    const std::vector<Json> trace2 = trace_lines(dir.path / "trace2.jsonl");
    const auto hits = events(trace2, "disk_hit");
    ASSERT_EQ(hits.size(), 1u);
    EXPECT_EQ(hits[0]["tokens"], prompt_tokens - 1);
    const auto cache = events(trace2, "cache");
    ASSERT_EQ(cache.size(), 1u);
    EXPECT_EQ(cache[0]["source"], "disk-text");
    EXPECT_EQ(cache[0]["evaluated"], 1);
}

TEST(ServerKv, CorruptCacheFilesAreReportedAndSkipped) {
    TempDir dir;
    const fs::path kv = dir.path / "kv";
    fs::create_directories(kv);
    const std::string junk_name = std::string(40, 'a') + ".kv";
    std::ofstream(kv / junk_name) << "this is not a KVC file, just some bytes that are long enough to read a header";
    const std::string short_name = std::string(40, 'b') + ".kv";
    std::ofstream(kv / short_name) << "KVC";
    ServerProcess s({"--kv-disk-dir", kv.string(), "--kv-cache-min-tokens", "64", "--trace",
                     (dir.path / "trace.jsonl").string()});
    ASSERT_TRUE(s.running());
    EXPECT_FALSE(fs::exists(kv / junk_name));
    EXPECT_FALSE(fs::exists(kv / short_name));
    const HttpReply r = post(s, "/v1/chat/completions", chat(Json::array({user(long_text())}), 2));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(s.stop(), 0);
    const auto logs = events(trace_lines(dir.path / "trace.jsonl"), "kv_cache_log");
    int corrupt = 0;
    for (const Json& l : logs) corrupt += l["message"].get<std::string>().find("corrupt") != std::string::npos;
    EXPECT_EQ(corrupt, 2);
}

// Turn 2 of a conversation continues the live session of turn 1: the first turn's prompt
// is not evaluated again, and the trace says why.
TEST(ServerKv, SecondTurnEvaluatesOnlyTheNewSuffix) {
    TempDir dir;
    ServerProcess s({"--trace", (dir.path / "trace.jsonl").string()});
    Json messages = Json::array({user("Tell me about rivers and mills in a few words.")});
    const HttpReply r1 = post(s, "/v1/chat/completions", chat(messages, 6));
    ASSERT_EQ(r1.status, 200) << r1.body;
    const int p1 = r1.json["usage"]["prompt_tokens"];
    messages.push_back({{"role", "assistant"}, {"content", content_of(r1)}});
    messages.push_back(user("And about bridges?"));
    const HttpReply r2 = post(s, "/v1/chat/completions", chat(messages, 6));
    ASSERT_EQ(r2.status, 200) << r2.body;
    const int p2 = r2.json["usage"]["prompt_tokens"];
    const int cached = r2.json["usage"]["prompt_tokens_details"]["cached_tokens"];
    // At least turn 1's prompt but its last token, which the session replays from the
    // checkpoint it keeps one token before the end of each prompt when the new prompt
    // diverges inside the generated tokens.
    EXPECT_GE(cached, p1 - 1);
    EXPECT_LT(cached, p2);
    EXPECT_EQ(s.stop(), 0);

    const std::vector<Json> trace = trace_lines(dir.path / "trace.jsonl");
    const auto cache = events(trace, "cache");
    ASSERT_EQ(cache.size(), 2u);
    EXPECT_EQ(cache[0]["source"], "cold");
    EXPECT_EQ(cache[0]["evaluated"], p1);
    EXPECT_EQ(cache[1]["source"], "memory-token");
    EXPECT_EQ(cache[1]["common_prefix"], cached);
    EXPECT_EQ(cache[1]["evaluated"], p2 - cached);
    EXPECT_LE(cache[1]["evaluated"].get<int>(), p2 - p1 + 1);
    const auto requests = events(trace, "request");
    ASSERT_EQ(requests.size(), 2u);
    EXPECT_NE(requests[1]["prompt"].get<std::string>().find("And about bridges?<｜Assistant｜></think>"), std::string::npos);
    const auto generated = events(trace, "generated");
    ASSERT_EQ(generated.size(), 2u);
    EXPECT_EQ(generated[0]["finish"], r1.json["choices"][0]["finish_reason"]);
    EXPECT_EQ(generated[0]["completion_tokens"], r1.json["usage"]["completion_tokens"]);
    EXPECT_TRUE(generated[0]["tool_calls"].is_array());
    // The raw generated text holds at least the visible content.
    EXPECT_NE(generated[0]["text"].get<std::string>().find(content_of(r1)), std::string::npos);
}

// Concurrent requests with the same prompt run in separate sessions: both give the
// answer a lone request gives.
TEST(ServerKv, ConcurrentRequestsSharingAPrefixDoNotShareKv) {
    ServerProcess s({"--parallel", "2"});
    const Json body = chat(Json::array({user(long_text())}), 12);
    const HttpReply alone = post(s, "/v1/chat/completions", body);
    ASSERT_EQ(alone.status, 200);
    HttpReply a, b;
    std::thread ta([&] { a = post(s, "/v1/chat/completions", body); });
    std::thread tb([&] { b = post(s, "/v1/chat/completions", body); });
    ta.join();
    tb.join();
    ASSERT_EQ(a.status, 200);
    ASSERT_EQ(b.status, 200);
    EXPECT_EQ(content_of(a), content_of(alone));
    EXPECT_EQ(content_of(b), content_of(alone));
    const std::string m = metrics(s);
    EXPECT_LE(metric(m, "ds4_kv_live_sessions"), 4);
    EXPECT_EQ(s.stop(), 0);
}

// SIGTERM while a stream is generating: the stream ends, the server writes the shutdown
// checkpoint of that session and exits 0.
TEST(ServerKv, SigtermDuringGenerationWritesAShutdownCheckpoint) {
    TempDir dir;
    const fs::path kv = dir.path / "kv";
    ServerProcess s({"--kv-disk-dir", kv.string(), "--kv-cache-min-tokens", "64", "--kv-cache-cold-max-tokens", "0"});
    std::atomic<bool> got_data{false};
    std::string received;
    std::thread client([&] {
        auto c = s.client();
        httplib::Request req;
        req.method = "POST";
        req.path = "/v1/chat/completions";
        req.body = chat(Json::array({user(long_text())}), 1500, true).dump();
        req.set_header("Content-Type", "application/json");
        req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
            received.append(data, n);
            // A non-empty content delta: the request is generating.
            const size_t at = received.find("{\"content\":\"");
            if (at != std::string::npos && at + 12 < received.size() && received[at + 12] != '"') got_data = true;
            return true;
        };
        c.send(req);
        got_data = true;
    });
    while (!got_data) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(s.stop(), 0);
    client.join();
    const std::vector<KvFile> files = kv_files(kv);
    ASSERT_EQ(files.size(), 1u);  // cold saves are off: only the shutdown checkpoint
    EXPECT_EQ(files[0].header.reason, kvstore::SaveReason::Shutdown);
    EXPECT_GT(files[0].header.tokens, 64u);
}

// ---- exact DSML replay against the live session (in process, on the demo model) ----

class ToolReplay : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        EngineOptions eo;
        eo.ctx = 2048;
        eo.threads = 2;
        engine_ = new Engine(Engine::open(demo_model(), eo));
        tok_ = new Tokenizer(Tokenizer::load(demo_model()));
    }
    static void TearDownTestSuite() {
        delete engine_;
        delete tok_;
    }
    static Engine* engine_;
    static Tokenizer* tok_;

    const Json tools_ = Json::parse(R"([{"type":"function","function":{"name":"list_files","description":"List files",
        "parameters":{"type":"object","properties":{"path":{"type":"string"},"opts":{"type":"object"}}}}}])");
    const Json turn1_ = Json::array({{{"role", "user"}, {"content", "What is in src? Use the tool."}}});
    // What the model "sampled": compact JSON for the object parameter, where the official
    // renderer writes Python's json.dumps spacing ({"depth": 2}).
    const std::string sampled_ =
        "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"list_files\">\n"
        "<｜DSML｜parameter name=\"path\" string=\"true\">src</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"opts\" string=\"false\">{\"depth\":2}</｜DSML｜parameter>\n"
        "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

    std::vector<TokenId> encode(const Json& messages) const {
        server::PromptEncoder enc(*tok_);
        return enc.encode_messages(messages, &tools_, ThinkingMode::none, true);
    }
    Json turn2() const {
        Json m = turn1_;
        m.push_back({{"role", "assistant"},
                     {"content", ""},
                     {"tool_calls", Json::array({{{"id", "call_1"},
                                                  {"type", "function"},
                                                  {"function", {{"name", "list_files"},
                                                                {"arguments", R"({"path": "src", "opts": {"depth": 2}})"}}}}})}});
        m.push_back({{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "a.txt b.txt"}});
        return m;
    }
    // Turn 1 through the source as the scheduler runs it: acquire, "decode" the sampled
    // block (all tokens fed but the last, which closes the block), release.
    uint64_t run_turn1(server::PoolSequenceSource& src, const std::vector<TokenId>& p1) const {
        const server::SequenceLease lease = src.acquire(p1, 1);
        EXPECT_EQ(lease.prompt, p1);
        const std::vector<TokenId> g = tok_->encode_chat(sampled_);
        std::vector<TokenId> fed = lease.prompt;
        fed.insert(fed.end(), g.begin(), g.end() - 1);
        Batch b;
        b.add(lease.seq, std::span(g).first(g.size() - 1), LogitsWanted::None);
        engine_->step(b);
        src.release(lease.seq, fed, {}, g.back());
        return p1.size() + g.size();
    }
};
Engine* ToolReplay::engine_ = nullptr;
Tokenizer* ToolReplay::tok_ = nullptr;

TEST_F(ToolReplay, CanonicalRenderingDiffersFromTheSampledBytes) {
    const std::string text = tok_->decode(encode(turn2()));
    EXPECT_NE(text.find(R"({"depth": 2})"), std::string::npos);
    EXPECT_EQ(text.find(sampled_), std::string::npos);
}

TEST_F(ToolReplay, SecondTurnContinuesPastTheSampledToolBlock) {
    const std::vector<TokenId> p1 = encode(turn1_), p2 = encode(turn2());
    server::PoolSequenceSource src(*engine_, *tok_, {}, nullptr, nullptr);
    const uint64_t live = run_turn1(src, p1);
    const server::SequenceLease lease = src.acquire(p2, 2);
    // Everything the session held is reused; only the tool result turn is evaluated.
    EXPECT_GE(lease.reused, live);
    EXPECT_LT(lease.evaluated, p2.size() - p1.size());
    const std::string seen = tok_->decode(lease.prompt);
    EXPECT_NE(seen.find(sampled_ + "<｜end▁of▁sentence｜>"), std::string::npos);
    EXPECT_NE(seen.find("a.txt b.txt"), std::string::npos);
    src.release(lease.seq, lease.prompt, {}, -1);
}

TEST_F(ToolReplay, DisabledReplayEvaluatesFromTheBlock) {
    const std::vector<TokenId> p1 = encode(turn1_), p2 = encode(turn2());
    server::PoolSequenceSource src(*engine_, *tok_, {}, nullptr, nullptr, false);
    const uint64_t live = run_turn1(src, p1);
    const server::SequenceLease lease = src.acquire(p2, 2);
    EXPECT_LT(lease.reused, live);
    EXPECT_GE(lease.reused + 1, p1.size());
    EXPECT_EQ(lease.prompt, p2);
    src.release(lease.seq, lease.prompt, {}, -1);
}

TEST_F(ToolReplay, DifferentArgumentsAreNotReplayed) {
    const std::vector<TokenId> p1 = encode(turn1_);
    Json m = turn2();
    m[1]["tool_calls"][0]["function"]["arguments"] = R"({"path": "src", "opts": {"depth": 3}})";
    const std::vector<TokenId> p2 = encode(m);
    std::vector<TokenId> live = p1;
    const std::vector<TokenId> g = tok_->encode_chat(sampled_);
    live.insert(live.end(), g.begin(), g.end());
    int replaced = -1;
    EXPECT_EQ(server::replay_live_tool_blocks(*tok_, live, p2, &replaced), p2);
    EXPECT_EQ(replaced, 0);
    const std::vector<TokenId> same = server::replay_live_tool_blocks(*tok_, live, encode(turn2()), &replaced);
    EXPECT_EQ(replaced, 1);
    EXPECT_TRUE(std::equal(live.begin(), live.end(), same.begin()));
}


// The tool-id map on disk (KTM, formats.md §6.5): the shutdown checkpoint of a session that
// sampled a tool block carries call id -> sampled bytes; after a "restart" (new memory,
// new cache object) a request naming that id renders those bytes and continues from the
// disk checkpoint past the block.
TEST_F(ToolReplay, ToolIdMapSurvivesARestartThroughTheDiskCache) {
    TempDir dir;
    auto open_disk = [&](server::ToolMemory& memory) {
        kvstore::DiskCacheOptions d;
        d.dir = dir.path;
        d.min_tokens = 16;
        d.log = [](const std::string&) {};
        d.tool_ids_for_text = [&memory](std::string_view text) { return memory.entries_for_text(text); };
        d.on_tool_ids_loaded = [&memory](const std::vector<kvstore::ToolIdEntry>& e) { memory.import(e); };
        auto disk = std::make_unique<kvstore::DiskCache>(std::move(d));
        kvstore::DiskCache* cache = disk.get();
        memory.set_disk_lookup([cache](const std::function<bool(std::string_view)>& wanted) {
            return cache->load_tool_ids(wanted);
        });
        return disk;
    };
    runtime::SessionPoolOptions po;
    po.policy.min_tokens = 16;
    po.policy.cold_max_tokens = 0;  // only the shutdown checkpoint
    const std::vector<TokenId> p1 = encode(turn1_);
    uint64_t live = 0;
    {
        server::ToolMemory memory;
        server::PoolSequenceSource src(*engine_, *tok_, po, open_disk(memory), nullptr);
        memory.remember(std::vector<std::string>{"call_1"}, sampled_);
        live = run_turn1(src, p1);
        src.shutdown();
    }
    const std::vector<KvFile> files = kv_files(dir.path);
    ASSERT_EQ(files.size(), 1u);
    EXPECT_EQ(files[0].header.ext_flags & kvstore::kExtToolMap, kvstore::kExtToolMap);
    EXPECT_EQ(files[0].header.tokens, live);
    std::ifstream in(files[0].path, std::ios::binary);
    std::ostringstream buffer;
    buffer << in.rdbuf();
    const std::string bytes = buffer.str();
    const std::string ktm = bytes.substr(files[0].header.body_end());
    const std::vector<kvstore::ToolIdEntry> want = {{"call_1", sampled_}};
    EXPECT_EQ(ktm, kvstore::encode_tool_map(want));

    server::ToolMemory memory;
    auto disk = open_disk(memory);
    server::PromptEncoder enc(*tok_);
    enc.set_tool_memory(&memory);
    server::ToolReplayStats stats;
    const std::vector<TokenId> p2 = enc.encode_messages(turn2(), &tools_, ThinkingMode::none, true, &stats);
    EXPECT_EQ(stats.disk, 1);
    EXPECT_NE(tok_->decode(p2).find(sampled_ + "<｜end▁of▁sentence｜>"), std::string::npos);
    server::PoolSequenceSource src(*engine_, *tok_, po, std::move(disk), nullptr);
    const server::SequenceLease lease = src.acquire(p2, 2);
    EXPECT_EQ(lease.source, "disk-text");
    EXPECT_GE(lease.reused + lease.evaluated, p2.size() - 1);
    EXPECT_LT(lease.evaluated, p2.size() - live + 2);  // only what follows the block
    src.release(lease.seq, lease.prompt, {}, -1);
}


// §8 item 23: requests do not rescan the disk cache directory; the index answers.
TEST(ServerKv, RequestsDoNotRescanTheDiskCacheDirectory) {
    TempDir kv;
    ServerProcess server({"--kv-disk-dir", kv.path.string(), "--kv-cache-min-tokens", "64"});
    ASSERT_TRUE(server.running());
    // A directory stamp younger than 2 s is not trusted (coarse file-system timestamps).
    std::this_thread::sleep_for(std::chrono::milliseconds(2200));
    const double before = metric(metrics(server), "ds4_kv_disk_scans_total");
    ASSERT_GE(before, 1);
    for (int i = 0; i < 3; ++i) {
        const HttpReply r = post(server, "/v1/chat/completions", chat(Json::array({user("hi " + std::to_string(i))}), 2));
        ASSERT_EQ(r.status, 200) << r.body;
    }
    EXPECT_EQ(metric(metrics(server), "ds4_kv_disk_scans_total"), before);
}

// The tail mechanism behind parallel_tool_calls: false: after the stop, the block's closing
// tag is fed (not sampled), so the released history holds it; its last token is the
// unfed one, like an EOS.
class RecordingSource final : public server::SequenceSource {
public:
    explicit RecordingSource(Engine& e) : inner_(e, 1) {}
    server::SequenceLease acquire(std::span<const TokenId> p, uint64_t r) override { return inner_.acquire(p, r); }
    void release(SequenceId seq, std::vector<TokenId> history, SequenceCheckpoint cp, TokenId unfed) override {
        released = history;
        last_unfed = unfed;
        inner_.release(seq, std::move(history), std::move(cp), unfed);
    }
    uint64_t live_sequences() const override { return inner_.live_sequences(); }
    std::vector<TokenId> released;
    TokenId last_unfed = -1;

private:
    server::SlotSequenceSource inner_;
};

TEST_F(ToolReplay, StopTailIsFedIntoTheKvBeforeTheJobEnds) {
    auto src = std::make_unique<RecordingSource>(*engine_);
    RecordingSource* rec = src.get();
    server::Scheduler sched(*engine_, *tok_, {}, std::move(src));
    auto run = [&](std::vector<std::string> stops, std::string tail) {
        server::GenRequest g = server::make_gen_request(encode(turn1_), SamplingParams{0.0f}, 8, ThinkingMode::none,
                                                        false, std::move(stops), engine_->options().ctx, "messages");
        g.stop_tail = std::move(tail);
        auto job = std::make_shared<server::Job>(std::move(g));
        EXPECT_TRUE(sched.submit(job));
        std::vector<server::GenEvent> ev;
        while (!job->wait(ev, std::chrono::milliseconds(200))) {
        }
        std::string text;
        for (const auto& e : job->all_events()) text += e.text;
        return std::make_pair(text, job->result());
    };
    const auto [free_text, free_result] = run({}, "");
    ASSERT_FALSE(free_text.empty());
    const auto lead = static_cast<unsigned char>(free_text[0]);
    const std::size_t n = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : 4;
    const std::string stop = free_text.substr(0, n);  // its first character
    const std::string tail = "\n</｜DSML｜tool_calls>";
    const auto [text, result] = run({stop}, tail);
    EXPECT_EQ(result.finish, "stop");
    EXPECT_EQ(result.stop_sequence, stop);
    const std::vector<TokenId> t = tok_->encode_chat(tail);
    ASSERT_FALSE(t.empty());
    const std::vector<TokenId> p = encode(turn1_);
    // prompt, the sampled tokens up to the stop, the tail but its last token (unfed).
    ASSERT_EQ(rec->released.size(), p.size() + result.completion_tokens + t.size() - 1);
    EXPECT_TRUE(std::equal(t.begin(), t.end() - 1, rec->released.end() - static_cast<std::ptrdiff_t>(t.size() - 1)));
    EXPECT_EQ(rec->last_unfed, t.back());
    sched.shutdown();
}

}  // namespace
}  // namespace ds4::testing
