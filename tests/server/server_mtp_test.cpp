// ds4-server --mtp FILE --mtp-draft N: speculative decoding of greedy requests inside the
// continuous-batching scheduler (interface.md §4.8). The replies must be exactly those of
// the same server without speculation; the metrics show that drafts were verified. Two
// demo-shape models with the real vocabulary: the forced-acceptance one of ds4-make-model
// --mtp-copy-head (every draft accepted) and one with a random MTP block (nearly every
// draft rejected: a rollback and replay at every step).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ds4/error.h"
#include "maker.h"
#include "server_harness.h"
#include "vocab.h"

namespace ds4::testing {
namespace {

namespace fs = std::filesystem;

// A demo-shape model that carries the MTP block, with the demo model's vocabulary.
struct MtpModel {
    fs::path dir;
    std::string path;

    MtpModel(const std::string& tag, bool copy_head, uint64_t seed) {
        dir = fs::temp_directory_path() / cat("ds4-server-mtp-", ::getpid(), "-", tag);
        fs::create_directories(dir);
        path = (dir / "model.gguf").string();
        synth::MakeOptions o;
        o.shape = synth::shape_preset("demo");
        o.vocab_gguf = demo_model();
        o.shape.n_vocab = static_cast<uint32_t>(synth::read_vocab_gguf(demo_model()).tokens.size());
        o.plan.mix = model::QuantMix::Q2;
        o.plan.mtp = true;
        o.mtp_copy_head = copy_head;
        o.seed = seed;
        o.threads = 2;
        o.fast_blocks = true;
        o.progress = false;
        synth::make_model(path, o);
    }
    ~MtpModel() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
};

// The value of an unlabelled Prometheus sample.
double metric(const ServerProcess& s, const std::string& name) {
    auto c = s.client();
    auto r = c.Get("/metrics");
    if (!r) return -1;
    const std::string& t = r->body;
    const std::string key = "\n" + name + " ";
    const auto at = t.find(key);
    if (at == std::string::npos) return -1;
    return std::stod(t.substr(at + key.size()));
}

Json completion(const std::string& prompt, double temperature, int max_tokens) {
    return {{"model", "deepseek-v4-flash"},
            {"prompt", prompt},
            {"max_tokens", max_tokens},
            {"temperature", temperature}};
}

std::string text_of(const HttpReply& r) {
    if (r.status != 200 || !r.json.is_object())
        return "HTTP " + std::to_string(r.status) + ": " + r.body;
    return r.json["choices"][0]["text"].get<std::string>();
}

// Several greedy completions at once (they share decode steps), their texts in order.
std::vector<std::string> greedy_texts(const ServerProcess& s,
                                      const std::vector<std::string>& prompts, int n) {
    std::vector<std::future<HttpReply>> replies;
    for (const std::string& p : prompts)
        replies.push_back(std::async(std::launch::async, [&s, p, n] {
            return post(s, "/v1/completions", completion(p, 0.0, n));
        }));
    std::vector<std::string> out;
    for (auto& f : replies) out.push_back(text_of(f.get()));
    return out;
}

const std::vector<std::string> kPrompts = {"Once upon a time", "The quick brown fox",
                                           "def fibonacci(n):"};

void expect_same_replies_as_plain(const MtpModel& m, bool all_accepted) {
    std::vector<std::string> plain, spec;
    {
        ServerProcess s({"-m", m.path});
        ASSERT_TRUE(s.running());
        plain = greedy_texts(s, kPrompts, 40);
        EXPECT_EQ(metric(s, "ds4_mtp_drafted_total"), 0);
    }
    ServerProcess s({"-m", m.path, "--mtp", m.path, "--mtp-draft", "4"});
    ASSERT_TRUE(s.running());
    spec = greedy_texts(s, kPrompts, 40);
    EXPECT_EQ(spec, plain);
    for (const std::string& t : plain) EXPECT_FALSE(t.empty());
    // One request alone too (a step with a single speculative entry).
    EXPECT_EQ(greedy_texts(s, {kPrompts[0]}, 40), std::vector<std::string>{plain[0]});
    const double drafted = metric(s, "ds4_mtp_drafted_total"),
                 accepted = metric(s, "ds4_mtp_accepted_total");
    const double replays = metric(s, "ds4_mtp_replays_total");
    EXPECT_GT(drafted, 40);
    if (all_accepted) {
        EXPECT_EQ(accepted, drafted);
        EXPECT_EQ(replays, 0);
    } else {
        EXPECT_LT(accepted, drafted);
        EXPECT_GT(replays, 0);
    }
    // Sampling at temperature > 0 never speculates.
    const HttpReply r = post(s, "/v1/completions", completion("Hello", 0.8, 16));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(metric(s, "ds4_mtp_drafted_total"), drafted);
}

TEST(ServerMtp, CopyHeadDraftsAreAllAcceptedAndRepliesMatchPlainGreedy) {
    const MtpModel m("copy", true, 5);
    expect_same_replies_as_plain(m, true);
}

TEST(ServerMtp, RejectedDraftsRollBackToTheExactPlainReplies) {
    const MtpModel m("random", false, 4);
    expect_same_replies_as_plain(m, false);
}

TEST(ServerMtp, FlagsAreCheckedAndMarginIsAccepted) {
    // A draft depth past the engine's cap is a usage error (exit 2) naming the flag.
    const std::string cmd = server_exe() + " -m " + demo_model() + " --mtp-draft 17 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[4096];
    while (size_t got = fread(buf, 1, sizeof buf, p)) out.append(buf, got);
    const int st = pclose(p);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2) << out;
    EXPECT_NE(out.find("--mtp-draft"), std::string::npos) << out;
    // ds4's gate flag is accepted (and has no effect).
    ServerProcess ok({"--mtp-margin", "5"});
    EXPECT_TRUE(ok.running());
}

}  // namespace
}  // namespace ds4::testing
