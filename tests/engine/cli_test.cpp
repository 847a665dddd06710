// The preliminary ds4 CLI: the byte mapping, and the binary itself (greedy output equal
// to the engine's, the speed line, the demo banner, usage errors, the missing-model hint).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "cli/byte_tokens.h"
#include "ds4/engine.h"
#include "ds4/error.h"
#include "engine_test_util.h"

namespace ds4::testing {
namespace {

using cli::ByteTokens;
using cli::gpt2_byte_char;

struct CliResult {
    int status = -1;
    std::string out, err;
};

std::string slurp(const std::string& path) {
    std::string s;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return s;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, n);
    std::fclose(f);
    return s;
}

// Runs bin/ds4 with `args` (shell syntax) in `cwd`, capturing stdout and stderr apart.
CliResult run_ds4(const std::string& args, const std::string& cwd = ".") {
    const char* bin = std::getenv("DS4_BIN");
    const std::string exe = std::string(bin ? bin : DS4_BINARY_DIR "/bin") + "/ds4";
    TempDir tmp;
    const std::string out = tmp.file("out"), err = tmp.file("err");
    const std::string cmd = "cd '" + cwd + "' && '" + exe + "' " + args + " >'" + out + "' 2>'" + err + "'";
    const int st = std::system(cmd.c_str());
    CliResult r;
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

TEST(EngineByteTokens, Gpt2ByteCharacters) {
    EXPECT_EQ(gpt2_byte_char('A'), "A");
    EXPECT_EQ(gpt2_byte_char('~'), "~");
    EXPECT_EQ(gpt2_byte_char(0), "\xc4\x80");      // U+0100 Ā
    EXPECT_EQ(gpt2_byte_char(' '), "\xc4\xa0");    // U+0120 Ġ
    EXPECT_EQ(gpt2_byte_char('\n'), "\xc4\x8a");   // U+010A Ċ
    EXPECT_EQ(gpt2_byte_char(0xad), "\xc5\x83");   // U+0143 (soft hyphen is remapped)
    EXPECT_EQ(gpt2_byte_char(0xff), "\xc3\xbf");   // ÿ keeps its code point
}

TEST(EngineByteTokens, EncodeDecodeEveryByteWithTheDemoVocab) {
    const Engine e = Engine::open(kDemoModel, options(16, 1));
    const ByteTokens bt(e.vocab());
    std::string all;
    for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
    const std::vector<int32_t> ids = bt.encode(all);
    ASSERT_EQ(ids.size(), 256u);
    std::string back;
    for (size_t i = 0; i < ids.size(); ++i) {
        EXPECT_EQ(e.vocab()[static_cast<size_t>(ids[i])], gpt2_byte_char(static_cast<uint8_t>(i)));
        back += bt.decode(ids[i]);
    }
    EXPECT_EQ(back, all);
    EXPECT_EQ(bt.encode("Hi")[0], 3 + 'H');  // the maker's layout: bytes at 3..258
    EXPECT_EQ(bt.decode(0), "<0>");          // BOS is not a byte
    EXPECT_FALSE(bt.byte_of(1).has_value());
}

TEST(EngineByteTokens, MissingByteTokenIsAnError) {
    const std::vector<std::string> vocab = {"a", "b"};
    const ByteTokens bt(vocab);
    EXPECT_EQ(bt.encode("ab"), (std::vector<int32_t>{0, 1}));
    EXPECT_THROW(bt.encode("c"), Error);
}

// The text the CLI must print for a greedy run, computed through the engine API.
std::string greedy_text(const std::string& prompt, int n) {
    Engine e = Engine::open(kDemoModel, options(64, 1));
    const ByteTokens bt(e.vocab());
    const SequenceId s = e.create_sequence();
    Batch b;
    b.add(s, bt.encode(prompt));
    Logits l = e.step(b);
    std::string text, last;
    for (int i = 0; i < n; ++i) {
        const int32_t t = l.argmax(0);
        last = bt.decode(t);
        text += last;
        b.clear();
        b.add_token(s, t);
        e.step(b, l);
    }
    return last == "\n" ? text : text + "\n";
}

TEST(EngineCli, GreedyOutputMatchesTheEngine) {
    const CliResult r = run_ds4("-m '" + kDemoModel + "' -p 'Hello, ds4' -n 12 --threads 2 --ctx 64");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, greedy_text("Hello, ds4", 12));
    EXPECT_NE(r.err.find("small synthetic random-weight model; output is not meaningful text"),
              std::string::npos) << r.err;
    EXPECT_NE(r.err.find("context buffers"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("ctx=64"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("ds4: prefill: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(" t/s, generation: "), std::string::npos) << r.err;
}

TEST(EngineCli, GenerationStopsAtTheContext) {
    // 5 prompt bytes, ctx 8: at most 4 tokens (the last one is never fed back).
    const CliResult r = run_ds4("-m '" + kDemoModel + "' -p 'abcde' -n 50 -c 8 -t 1");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, greedy_text("abcde", 4));
}

TEST(EngineCli, MissingDefaultModelExplainsHowToGetOne) {
    TempDir empty;
    const CliResult r = run_ds4("-p hi", empty.path().string());
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("scripts/download_model.sh q2-imatrix"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("make run"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(EngineCli, MissingExplicitModelIsAnError) {
    const CliResult r = run_ds4("-m /nonexistent/x.gguf -p hi");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("/nonexistent/x.gguf"), std::string::npos) << r.err;
}

TEST(EngineCli, UsageErrorsExitTwo) {
    struct Case {
        std::string args, message;
    };
    for (const Case& c : {Case{"--bogus", "unknown option: --bogus"}, Case{"-p", "missing value for -p"},
                          Case{"-p hi -n 0", "invalid value for -n: 0"},
                          Case{"-p hi --ctx x", "invalid value for --ctx: x"},
                          Case{"-m '" + kDemoModel + "'", "no prompt"}}) {
        const CliResult r = run_ds4(c.args);
        EXPECT_EQ(r.status, 2) << c.args;
        EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << ": " << r.err;
    }
}

TEST(EngineCli, HelpMentionsTheTemporaryTokenizer) {
    const CliResult r = run_ds4("--help");
    EXPECT_EQ(r.status, 0);
    EXPECT_NE(r.out.find("Usage: ds4"), std::string::npos);
    EXPECT_NE(r.out.find("real BPE tokenizer"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace ds4::testing
