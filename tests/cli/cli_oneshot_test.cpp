// bin/ds4 one-shot runs on the demo model (real DeepSeek V4 vocabulary, random weights):
// exit codes, every flag, the dumps' exact content, errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli/generate.h"
#include "cli/version.h"
#include "cli_test_util.h"
#include "ds4/engine.h"
#include "ds4/sampler.h"
#include "ds4/tokenizer.h"

namespace ds4::testing {
namespace {

using cli::Generator;
using cli::Transcript;
using cli::TurnStats;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

size_t count_lines(const std::string& s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }

// The CLI transcript of a one-shot prompt, built with the library.
Transcript one_shot(const Tokenizer& tok, const std::string& system, const std::string& prompt,
                    ThinkingMode mode) {
    Transcript t(tok, system, mode == ThinkingMode::max);
    t.add_user_turn(prompt, mode);
    return t;
}

TEST(CliOneShot, HelpListsEverySectionAndFlag) {
    const CliResult r = run_ds4("--help");
    EXPECT_EQ(r.status, 0);
    for (const char* s : {"Usage:", "Invocation modes:", "Model and runtime:", "Prompt and generation:",
                          "Interactive commands:", "Diagnostics:", "Normal CLI commands:", "Notes:",
                          "--prompt-file", "-sys", "--temp", "--top-k", "--top-p", "--min-p", "--seed",
                          "--think-max", "--nothink", "--dump-tokens", "--dump-logprobs",
                          "--logprobs-top-k", "--trace", "--cuda", "--cpu", "--threads", "/read FILE",
                          "/ctx N", "scripts/download_model.sh q2-imatrix"})
        EXPECT_TRUE(contains(r.out, s)) << s;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(run_ds4("-h").out, r.out);
}

TEST(CliOneShot, Version) {
    const CliResult r = run_ds4("--version");
    EXPECT_EQ(r.status, 0);
    EXPECT_TRUE(r.out.starts_with("ds4 ")) << r.out;
}

TEST(CliOneShot, UsageErrorsAreOneLineAndExitTwo) {
    struct Case {
        std::string args, message;
    };
    for (const Case& c : {Case{"--bogus", "ds4: unknown option: --bogus"},
                          Case{"-p", "ds4: missing value for -p"},
                          Case{"-n 0 -p x", "ds4: invalid value for -n: 0"},
                          Case{"--ctx abc -p x", "ds4: invalid value for --ctx: abc"},
                          Case{"--temp -1 -p x", "ds4: invalid value for --temp: -1"},
                          Case{"--temp nan -p x", "ds4: invalid value for --temp: nan"},
                          Case{"--top-p 1.5 -p x", "ds4: invalid value for --top-p: 1.5"},
                          Case{"--min-p 2 -p x", "ds4: invalid value for --min-p: 2"},
                          Case{"--top-k 2000 -p x", "ds4: invalid value for --top-k: 2000"},
                          Case{"--seed 0 -p x", "ds4: invalid value for --seed: 0"},
                          Case{"--logprobs-top-k 129 -p x", "ds4: invalid value for --logprobs-top-k: 129"},
                          Case{"-p a --prompt-file b", "ds4: specify only one prompt source"},
                          Case{"--dump-tokens", "ds4: --dump-tokens needs -p TEXT or --prompt-file FILE"},
                          Case{"--server", "ds4: use ds4-server for the HTTP server"}}) {
        const CliResult r = run_ds4(c.args);
        EXPECT_EQ(r.status, 2) << c.args;
        EXPECT_TRUE(r.err.starts_with(c.message + "\n")) << c.args << ": " << r.err;
        EXPECT_EQ(r.out, "") << c.args;
    }
}

TEST(CliOneShot, MissingDefaultModelNamesTheDownloadAndTheDemo) {
    TempDir dir;  // no ds4flash.gguf here
    const CliResult r = run_ds4("-p hello", dir.path());
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(count_lines(r.err), 1u) << r.err;
    EXPECT_TRUE(contains(r.err, "ds4flash.gguf not found")) << r.err;
    EXPECT_TRUE(contains(r.err, "scripts/download_model.sh q2-imatrix")) << r.err;
    EXPECT_TRUE(contains(r.err, "ds4-demo.gguf")) << r.err;
}

TEST(CliOneShot, RuntimeErrorsAreOneLineAndExitOne) {
    TempDir dir;
    struct Case {
        std::string args, message;
    };
    for (const Case& c : {Case{"-m '" + dir.file("none.gguf") + "' -p x", "no such file"},
                          Case{demo_args("--prompt-file '" + dir.file("none.txt") + "'"), "cannot open"},
                          Case{demo_args("--cuda -p x"), "built without CUDA"},
                          Case{"-m '" + kDemoModel + "' --ctx 8 -p 'hello there'",
                               "does not fit the context (ctx=8)"},
                          Case{demo_args("--trace '" + dir.file("no/dir/t.txt") + "' -p x"),
                               "cannot open the trace file"}}) {
        const CliResult r = run_ds4(c.args);
        EXPECT_EQ(r.status, 1) << c.args;
        EXPECT_TRUE(contains(r.err, c.message)) << c.args << ": " << r.err;
        EXPECT_EQ(r.out, "") << c.args;
    }
}

// A CPU-only build refuses --cuda before mapping the model, in one line that says how to
// get the CUDA backend. (A -DDS4_CUDA=ON build runs on the GPU instead: skipped there.)
TEST(CliOneShot, CudaOnACpuOnlyBuildIsAClearError) {
    if (contains(cli::version_text(), "cuda")) GTEST_SKIP() << "built with CUDA";
    const CliResult r = run_ds4(demo_args("--cuda -p x"));
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(count_lines(r.err), 1u) << r.err;
    EXPECT_TRUE(contains(r.err, "--cuda: this ds4 was built without CUDA")) << r.err;
    EXPECT_TRUE(contains(r.err, "-DDS4_CUDA=ON")) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(run_ds4(demo_args("--cuda --cpu --nothink --temp 0 -n 2 -p x")).status, 0)
        << "--cpu after --cuda selects the CPU";
}

TEST(CliOneShot, GreedyOutputIsTheEnginesGreedyDecoding) {
    const CliResult r = run_ds4(demo_args("--nothink --temp 0 -n 12 -p 'Hello, ds4'"));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.err, "small synthetic random-weight model")) << r.err;
    EXPECT_FALSE(contains(r.err, "t/s")) << "speed line without a TTY or --verbose: " << r.err;

    const Tokenizer tok = Tokenizer::load(kDemoModel);
    EngineOptions eo;
    eo.ctx = 512;
    eo.threads = 1;
    Engine e = Engine::open(kDemoModel, eo);
    const Transcript t = one_shot(tok, "You are a helpful assistant", "Hello, ds4", ThinkingMode::none);
    Generator gen(e, tok.specials().eos);
    TurnStats stats;
    const std::atomic<bool> stop{false};
    ASSERT_TRUE(gen.prefill(t.tokens(), nullptr, stop, stats));
    SamplingParams sp;
    sp.temperature = 0;
    Sampler greedy(sp);
    const std::vector<TokenId> ids = gen.generate(greedy, 12, nullptr, stop, stats);
    std::string expected = tok.decode(ids);
    if (expected.empty() || expected.back() != '\n') expected += '\n';
    EXPECT_EQ(r.out, expected);
}

TEST(CliOneShot, SeedReproducesASampledAnswerAndPromptFileEqualsPrompt) {
    TempDir dir;
    write_file(dir.file("p.txt"), "Tell me a story");
    const CliResult a = run_ds4(demo_args("--nothink --seed 7 -n 10 -p 'Tell me a story'"));
    const CliResult b = run_ds4(demo_args("--nothink --seed 7 -n 10 --prompt-file '" + dir.file("p.txt") + "'"));
    ASSERT_EQ(a.status, 0) << a.err;
    ASSERT_EQ(b.status, 0) << b.err;
    EXPECT_EQ(a.out, b.out);
    EXPECT_FALSE(a.out.empty());
}

TEST(CliOneShot, VerboseShowsProgressMemoryAndTheSpeedLine) {
    const CliResult r = run_ds4(demo_args("--verbose --nothink -n 4 --seed 3 -p hi"));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.err, "ds4: context buffers")) << r.err;
    EXPECT_TRUE(contains(r.err, "processing ")) << r.err;
    EXPECT_TRUE(contains(r.err, "(100%)")) << r.err;
    const size_t at = r.err.rfind("ds4: prefill: ");
    ASSERT_NE(at, std::string::npos) << r.err;
    EXPECT_TRUE(contains(r.err.substr(at), " t/s, generation: ")) << r.err;
    EXPECT_TRUE(r.err.ends_with(" t/s\n")) << r.err;  // the speed line is the last one
}

TEST(CliOneShot, ThinkMaxBelowItsContextWarnsAndThinks) {
    const CliResult r = run_ds4(demo_args("--think-max -n 2 --seed 1 -p hi"));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(contains(r.err, "ds4: warning: --think-max needs --ctx >= 393216; ctx=512 uses normal thinking instead"))
        << r.err;
}

TEST(CliOneShot, DumpTokensIsTheChatTokenizationWithoutTemplate) {
    const std::string text = "<｜User｜>Hello world";
    const CliResult r = run_ds4("-m '" + kDemoModel + "' --dump-tokens -p '" + text + "'");
    ASSERT_EQ(r.status, 0) << r.err;
    const Tokenizer tok = Tokenizer::load(kDemoModel);
    const std::vector<TokenId> ids = tok.encode_chat(text);
    ASSERT_EQ(ids.size(), 3u);  // <｜User｜>, "Hello", " world"
    EXPECT_EQ(ids[0], tok.specials().user);
    char line[64];
    std::string expected = "[" + std::to_string(ids[0]) + ", " + std::to_string(ids[1]) + ", " +
                           std::to_string(ids[2]) + "]\n";
    for (TokenId id : ids) {
        std::snprintf(line, sizeof line, "%6d  ", id);
        expected += line + std::string(tok.token_text(id)) + "\n";
    }
    EXPECT_EQ(r.out, expected);
    EXPECT_TRUE(contains(r.out, "  Ġworld\n")) << r.out;
    EXPECT_EQ(r.err, "");  // no weights are loaded: no banner
}

TEST(CliOneShot, DumpLogprobsJsonShapeAndValues) {
    TempDir dir;
    const std::string path = dir.file("lp.json");
    const CliResult r = run_ds4(demo_args("--nothink -n 5 --logprobs-top-k 4 --temp 1 -sys '' -p 'Hello' --dump-logprobs '" + path + "'"));
    ASSERT_EQ(r.status, 0) << r.err;
    const std::string text = slurp(path);
    const nlohmann::json j = nlohmann::json::parse(text);
    const Tokenizer tok = Tokenizer::load(kDemoModel);
    const Transcript t = one_shot(tok, "", "Hello", ThinkingMode::none);
    EXPECT_EQ(j["source"], "ds4");
    EXPECT_EQ(j["prompt_tokens"], t.size());
    EXPECT_EQ(j["ctx"], 512);
    EXPECT_EQ(j["top_k"], 4);
    ASSERT_TRUE(j["steps"].is_array());
    ASSERT_GE(j["steps"].size(), 1u);
    EXPECT_LE(j["steps"].size(), 5u);
    EXPECT_EQ(count_lines(text), 8 + j["steps"].size());  // 6 header lines, one per step, 2 closing
    for (size_t i = 0; i < j["steps"].size(); ++i) {
        const nlohmann::json& s = j["steps"][i];
        EXPECT_EQ(s["step"], i);
        const nlohmann::json& top = s["top_logprobs"];
        ASSERT_EQ(top.size(), 4u);
        // Greedy (--temp is ignored): the selected token is the most likely one.
        EXPECT_EQ(s["selected"]["id"], top[0]["token"]["id"]);
        for (size_t k = 0; k < top.size(); ++k) {
            const int id = top[k]["token"]["id"];
            std::string bytes;
            for (int b : top[k]["token"]["bytes"]) bytes += static_cast<char>(b);
            EXPECT_EQ(bytes, tok.token_bytes(id));
            EXPECT_LE(top[k]["logprob"].get<double>(), 0.0);
            if (k) {
                EXPECT_LE(top[k]["logit"].get<double>(), top[k - 1]["logit"].get<double>());
                EXPECT_NEAR(top[k - 1]["logprob"].get<double>() - top[k]["logprob"].get<double>(),
                            top[k - 1]["logit"].get<double>() - top[k]["logit"].get<double>(), 1e-5);
            }
        }
    }
    // The system text is part of the prompt: the default one makes it longer.
    const CliResult d = run_ds4(demo_args("--nothink -n 1 -p 'Hello' --dump-logprobs '" + path + "'"));
    ASSERT_EQ(d.status, 0) << d.err;
    EXPECT_EQ(nlohmann::json::parse(slurp(path))["prompt_tokens"],
              one_shot(tok, "You are a helpful assistant", "Hello", ThinkingMode::none).size());
}

TEST(CliOneShot, TokensFlagCapsTheDump) {
    TempDir dir;
    const std::string path = dir.file("lp.json");
    const CliResult r = run_ds4(demo_args("--nothink -n 3 -p 'Hello' --dump-logprobs '" + path + "'"));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_LE(nlohmann::json::parse(slurp(path))["steps"].size(), 3u);
}

TEST(CliOneShot, TraceFileRecordsTheTurn) {
    TempDir dir;
    const std::string path = dir.file("trace.txt");
    const CliResult r = run_ds4(demo_args("--nothink --seed 5 -n 3 --top-k 40 --top-p 0.9 --min-p 0.1 --trace '" + path + "' -p 'Hi there'"));
    ASSERT_EQ(r.status, 0) << r.err;
    const std::string t = slurp(path);
    for (const char* s : {"===== turn 1 ", "think_mode: none\n", "top_k: 40\n", "top_p: 0.899999976\n",
                          "min_p: 0.100000001\n", "seed: 5\n", "--- rendered prompt ---\n",
                          "<｜begin▁of▁sentence｜>You are a helpful assistant<｜User｜>Hi there<｜Assistant｜></think>",
                          "--- generated text ---\n", "generated_tokens: ", "===== end turn 1 ====="})
        EXPECT_TRUE(contains(t, s)) << s << "\n" << t;
    EXPECT_TRUE(contains(t, r.out.substr(0, r.out.size() - 1))) << "the answer is in the trace";
}

TEST(CliOneShot, ThinkingIsThePlainDefaultWhenPiped) {
    // Thinking mode (default): the reasoning is printed without colour codes on a pipe.
    const CliResult r = run_ds4(demo_args("-n 6 --seed 2 -p hi"));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_FALSE(contains(r.out, "\x1b[")) << r.out;
}

TEST(CliOneShot, RenderedPromptIsTakenAsIs) {
    TempDir dir;
    const std::string path = dir.file("lp.json");
    const std::string rendered = "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>";
    const CliResult r = run_ds4(demo_args("-n 1 -p '" + rendered + "' --dump-logprobs '" + path + "'"));
    ASSERT_EQ(r.status, 0) << r.err;
    const Tokenizer tok = Tokenizer::load(kDemoModel);
    EXPECT_EQ(nlohmann::json::parse(slurp(path))["prompt_tokens"], tok.encode_chat(rendered).size());
}

}  // namespace
}  // namespace ds4::testing
