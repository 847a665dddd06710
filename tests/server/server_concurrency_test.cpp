// 32 streaming clients at once, every third one hanging up after its first chunk: all the
// others complete their streams, the cancelled generations free their slots, and the
// server still answers (and shuts down cleanly) afterwards.
#include <gtest/gtest.h>

#include <atomic>
#include <regex>
#include <thread>

#include "server_harness.h"

namespace ds4::testing {
namespace {

double metric(const std::string& text, const std::string& name) {
    std::smatch m;
    const std::regex re("\n" + name + " ([0-9.e+-]+)");
    if (!std::regex_search(text, m, re)) return -1;
    return std::stod(m[1]);
}

TEST(ServerConcurrency, ThirtyTwoStreamsWithDisconnects) {
    ServerProcess s({"--queue", "64"});  // --parallel 4 from the harness
    ASSERT_TRUE(s.running());
    std::atomic<int> completed{0}, dropped{0}, failed{0};
    std::vector<std::thread> clients;
    for (int i = 0; i < 32; ++i) {
        clients.emplace_back([&, i] {
            const bool hang_up = i % 3 == 0;
            const Json body = {{"model", "deepseek-chat"}, {"stream", true}, {"max_tokens", hang_up ? 200 : 12},
                               {"messages", Json::array({{{"role", "user"}, {"content", "client " + std::to_string(i)}}})}};
            auto c = s.client();
            std::string received;
            httplib::Request req;
            req.method = "POST";
            req.path = "/v1/chat/completions";
            req.body = body.dump();
            req.set_header("Content-Type", "application/json");
            req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
                received.append(data, n);
                return !(hang_up && received.find("\n\n") != std::string::npos);
            };
            auto r = c.send(req);
            if (hang_up) {
                ++dropped;
            } else if (r && r->status == 200 && received.find("data: [DONE]") != std::string::npos) {
                ++completed;
            } else {
                ++failed;
                ADD_FAILURE() << "client " << i << ": " << (r ? std::to_string(r->status) : httplib::to_string(r.error()))
                              << " received: " << received.substr(0, 300);
            }
        });
    }
    for (auto& t : clients) t.join();
    EXPECT_EQ(completed.load(), 21);
    EXPECT_EQ(dropped.load(), 11);
    EXPECT_EQ(failed.load(), 0);

    // The dropped generations end (cancelled, not run to 200 tokens): wait for the worker
    // to go idle, then check that no sequence leaked beyond the slots.
    auto c = s.client();
    std::string metrics;
    for (int i = 0; i < 600; ++i) {
        auto m = c.Get("/metrics");
        ASSERT_TRUE(m);
        metrics = m->body;
        if (metric(metrics, "ds4_active_requests") == 0 && metric(metrics, "ds4_queue_depth") == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(metric(metrics, "ds4_active_requests"), 0);
    EXPECT_LE(metric(metrics, "ds4_live_sequences"), 4);
    EXPECT_GE(metric(metrics, "ds4_generations_cancelled_total"), 1);
    // Completed streams generated 12 tokens each; cancelled ones far fewer than 200.
    EXPECT_LT(metric(metrics, "ds4_completion_tokens_total"), 21 * 12 + 11 * 200);

    auto h = c.Get("/health");
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 200);
    const HttpReply after = post(s, "/v1/chat/completions",
                                 Json{{"model", "deepseek-chat"}, {"max_tokens", 2},
                                      {"messages", Json::array({{{"role", "user"}, {"content", "still there?"}}})}});
    EXPECT_EQ(after.status, 200);
    EXPECT_EQ(s.stop(), 0);
}

// Twelve seeded, sampled requests at once (the steps then draw 8+ rows on helper
// threads, Scheduler::presample) reply exactly as each does alone: every sequence's sampler
// draws from its own row in its own order, and the engine's logits do not depend on the
// batch.
TEST(ServerConcurrency, SampledRepliesAreTheSameTogetherAsAlone) {
    ServerProcess s({"--parallel", "12", "--queue", "64"});
    ASSERT_TRUE(s.running());
    constexpr int kRequests = 12;
    const auto body = [](int i) {
        return Json{{"model", "deepseek-chat"},
                    {"max_tokens", 16},
                    {"temperature", 1.0},
                    {"seed", 1000 + i},
                    {"messages", Json::array({{{"role", "user"}, {"content", "sample " + std::to_string(i)}}})}};
    };
    const auto content = [](const HttpReply& r) {
        return r.json.is_object() ? r.json["choices"][0]["message"]["content"].get<std::string>() : std::string();
    };
    std::vector<std::string> together(kRequests);
    std::vector<std::thread> clients;
    for (int i = 0; i < kRequests; ++i)
        clients.emplace_back([&, i] {
            const HttpReply r = post(s, "/v1/chat/completions", body(i));
            EXPECT_EQ(r.status, 200) << r.body.substr(0, 300);
            together[i] = content(r);
        });
    for (auto& t : clients) t.join();
    for (int i = 0; i < kRequests; ++i) {
        const HttpReply alone = post(s, "/v1/chat/completions", body(i));
        ASSERT_EQ(alone.status, 200) << alone.body.substr(0, 300);
        EXPECT_FALSE(together[i].empty()) << "request " << i;
        EXPECT_EQ(content(alone), together[i]) << "request " << i;
    }
    EXPECT_EQ(s.stop(), 0);
}

TEST(ServerConcurrency, FullQueueAnswers503) {
    ServerProcess s({"--queue", "1", "--parallel", "1"});
    ASSERT_TRUE(s.running());
    std::atomic<int> ok{0}, busy{0}, other{0};
    std::vector<std::thread> clients;
    const auto start_client = [&](int i) {
        clients.emplace_back([&, i] {
            const HttpReply r = post(s, "/v1/chat/completions",
                                     Json{{"model", "deepseek-chat"}, {"max_tokens", 400},
                                          {"messages", Json::array({{{"role", "user"}, {"content", "q" + std::to_string(i)}}})}});
            if (r.status == 200) ++ok;
            else if (r.status == 503 && r.json["error"]["message"].get<std::string>().find("queue is full") != std::string::npos) ++busy;
            else ++other;
        });
    };
    // The first request running before the others arrive: else all six may reach the
    // one-slot queue before the worker takes the first out of it (a loaded machine).
    start_client(0);
    auto c = s.client();
    for (int i = 0; i < 1000; ++i) {
        auto m = c.Get("/metrics");
        ASSERT_TRUE(m);
        if (metric(m->body, "ds4_active_requests") == 1) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (int i = 1; i < 6; ++i) start_client(i);
    for (auto& t : clients) t.join();
    EXPECT_GE(ok.load(), 2);  // the running one and the queued one
    EXPECT_GE(busy.load(), 1);
    EXPECT_EQ(other.load(), 0);
    EXPECT_EQ(s.stop(), 0);
}

}  // namespace
}  // namespace ds4::testing
