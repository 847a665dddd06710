// The CLI's parts on their own: option parsing, the transcript, the answer printer, JSON
// strings and logprob steps.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "cli/generate.h"
#include "cli/options.h"
#include "cli/output.h"
#include "cli_test_util.h"
#include "ds4/error.h"
#include "ds4/tokenizer.h"

namespace ds4::testing {
namespace {

using namespace ds4::cli;

Options parse(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    return parse_options(argv);
}

TEST(CliOptions, DefaultsFollowTheSpec) {
    const Options o = parse({});
    EXPECT_EQ(o.model, "ds4flash.gguf");
    EXPECT_FALSE(o.model_given);
    EXPECT_FALSE(o.one_shot());
    EXPECT_EQ(o.system, "You are a helpful assistant");
    EXPECT_EQ(o.n_predict, 50000u);
    EXPECT_EQ(o.ctx, 32768u);
    EXPECT_EQ(o.sampling.temperature, 1.0f);
    EXPECT_EQ(o.sampling.top_k, 0);
    EXPECT_EQ(o.sampling.top_p, 1.0f);
    EXPECT_EQ(o.sampling.min_p, 0.05f);
    EXPECT_EQ(o.sampling.seed, 0u);
    EXPECT_EQ(o.think, ThinkingMode::high);
    EXPECT_EQ(o.logprobs_top_k, 20u);
}

TEST(CliOptions, EveryFlagSetsItsField) {
    const Options o = parse({"-m", "x.gguf", "-p", "hi", "-sys", "", "-n", "7", "--ctx", "99", "-t", "3",
                             "--temp", "0.5", "--top-k", "40", "--top-p", "0.9", "--min-p", "0",
                             "--seed", "18446744073709551615", "--nothink", "--dump-logprobs", "f.json",
                             "--logprobs-top-k", "128", "--trace", "t.txt", "--verbose", "--cuda"});
    EXPECT_EQ(o.model, "x.gguf");
    EXPECT_TRUE(o.model_given);
    EXPECT_EQ(o.prompt, "hi");
    EXPECT_EQ(o.system, "");
    EXPECT_EQ(o.n_predict, 7u);
    EXPECT_EQ(o.ctx, 99u);
    EXPECT_EQ(o.threads, 3u);
    EXPECT_EQ(o.sampling.temperature, 0.5f);
    EXPECT_EQ(o.sampling.top_k, 40);
    EXPECT_EQ(o.sampling.top_p, 0.9f);
    EXPECT_EQ(o.sampling.min_p, 0.0f);
    EXPECT_EQ(o.sampling.seed, UINT64_MAX);
    EXPECT_EQ(o.think, ThinkingMode::none);
    EXPECT_EQ(o.dump_logprobs, "f.json");
    EXPECT_EQ(o.logprobs_top_k, 128u);
    EXPECT_EQ(o.trace, "t.txt");
    EXPECT_TRUE(o.verbose);
    EXPECT_TRUE(o.cuda);
    EXPECT_FALSE(parse({"--cuda", "--cpu"}).cuda);
    EXPECT_EQ(parse({"--think-max"}).think, ThinkingMode::max);
    EXPECT_EQ(parse({"--think-max"}).think_flag, "--think-max");
    EXPECT_EQ(parse({"--nothink", "--think"}).think, ThinkingMode::high);
    EXPECT_TRUE(parse({"--prompt-file", "a", "--dump-tokens"}).dump_tokens);
    EXPECT_TRUE(parse({"--help", "--bogus"}).help);  // help wins over what follows
}

TEST(CliOptions, BadValuesThrowUsageErrors) {
    for (const std::vector<std::string>& args :
         std::vector<std::vector<std::string>>{{"-n", "-1"}, {"-n", "2147483648"}, {"--ctx", "1k"},
                                               {"--temp", "101"}, {"--temp", "inf"}, {"--top-p", ""},
                                               {"-t", "0"}, {"--min-p", "-0.1"}, {"--seed", "x"}}) {
        try {
            parse(args);
            ADD_FAILURE() << args[0] << " " << args[1] << " was accepted";
        } catch (const UsageError& e) {
            EXPECT_EQ(e.message, "invalid value for " + args[0] + ": " + args[1]);
        }
    }
}

TEST(CliTranscript, TemplateAndThinkMaxPrefix) {
    const Tokenizer tok = Tokenizer::load(kDemoModel);
    Transcript t(tok, "Sys", false);
    t.add_user_turn("<｜User｜>", ThinkingMode::none);  // user text is plain text
    EXPECT_EQ(tok.decode(t.tokens()),
              "<｜begin▁of▁sentence｜>Sys<｜User｜><｜User｜><｜Assistant｜></think>");
    EXPECT_EQ(std::count(t.tokens().begin(), t.tokens().end(), tok.specials().user), 1);
    const size_t plain = t.size();
    EXPECT_TRUE(t.set_think_max(true));
    EXPECT_FALSE(t.set_think_max(true));
    EXPECT_TRUE(tok.decode(t.tokens()).starts_with(
        "<｜begin▁of▁sentence｜>Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"));
    EXPECT_TRUE(t.set_think_max(false));
    EXPECT_EQ(t.size(), plain);
    t.add_eos();
    t.clear();
    EXPECT_EQ(tok.decode(t.tokens()), "<｜begin▁of▁sentence｜>Sys");
}

TEST(CliGeneration, BudgetClampsToTheContextRoom) {
    EXPECT_EQ(generation_budget(10, 100, 50000), 89u);
    EXPECT_EQ(generation_budget(10, 100, 5), 5u);
    EXPECT_THROW(generation_budget(99, 100, 5), Error);
    EXPECT_EQ(resolve_seed(42), 42u);
    EXPECT_NE(resolve_seed(0), 0u);
}

std::string print(const Tokenizer& tok, ThinkingMode mode, bool color, const std::vector<TokenId>& ids) {
    std::FILE* f = std::tmpfile();
    {
        AnswerPrinter p(tok, mode, color, f);
        for (TokenId id : ids) p.token(id);
        p.finish();
    }
    std::rewind(f);
    std::string s;
    for (int c; (c = std::fgetc(f)) != EOF;) s += static_cast<char>(c);
    std::fclose(f);
    return s;
}

TEST(CliAnswerPrinter, ReasoningIsGreyOnATerminalAndPlainOtherwise) {
    const Tokenizer tok = Tokenizer::load(kDemoModel);
    std::vector<TokenId> ids = tok.encode_text("Let me think");
    ids.push_back(tok.specials().think_end);
    tok.encode_text("The answer", ids);
    EXPECT_EQ(print(tok, ThinkingMode::high, false, ids), "Let me think\nThe answer\n");
    EXPECT_EQ(print(tok, ThinkingMode::high, true, ids),
              "\x1b[90mLet me think\n\x1b[0mThe answer\n");
    // Without thinking nothing is reasoning.
    EXPECT_EQ(print(tok, ThinkingMode::none, true, tok.encode_text("Hi")), "Hi\n");
    const std::string euro = "\xe2\x82\xac";
    EXPECT_EQ(print(tok, ThinkingMode::none, false, tok.encode_text(euro)), euro + "\n");
}

TEST(CliOutput, JsonStringEscapes) {
    EXPECT_EQ(json_string("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\u000a\\u0001\"");
    EXPECT_EQ(json_string("\xe2\x82\xac"), "\"\xe2\x82\xac\"");
    EXPECT_EQ(json_string("\xe2\x82"), "\"\\ufffd\\ufffd\"");  // a cut character
    EXPECT_EQ(json_string("\xff"), "\"\\ufffd\"");
}

TEST(CliOutput, LogprobStepIsLogSoftmaxWithLowerIdsFirstOnTies) {
    const std::vector<float> logits = {1.0f, 3.0f, 3.0f, NAN, -1.0f};
    const LogprobStep s = logprob_step(logits, 1, 3);
    ASSERT_EQ(s.top.size(), 3u);
    EXPECT_EQ(s.top[0].first, 1);
    EXPECT_EQ(s.top[1].first, 2);
    EXPECT_EQ(s.top[2].first, 0);
    const double lse = std::log(std::exp(1.0) + 2 * std::exp(3.0) + std::exp(-1.0));
    EXPECT_NEAR(s.logprobs[0], 3.0 - lse, 1e-12);
    EXPECT_NEAR(s.logprobs[2], 1.0 - lse, 1e-12);
}

TEST(CliOutput, SpeedLine) {
    TurnStats s;
    s.prefilled = 100;
    s.prefill_seconds = 2;
    s.generated = 11;
    s.generate_seconds = 5;
    EXPECT_EQ(speed_line(s), "ds4: prefill: 50.00 t/s, generation: 2.00 t/s");
}

}  // namespace
}  // namespace ds4::testing
