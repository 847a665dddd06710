// The interactive chat driven through a pseudo-terminal: every slash command, a chat
// turn, history, Ctrl+C during generation and at the prompt. Nothing is timed: each step
// waits for the text that proves the previous one happened.
#include <gtest/gtest.h>

#include "cli_test_util.h"

namespace ds4::testing {
namespace {

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

TEST(CliInteractive, EverySlashCommand) {
    TempDir home;
    write_file(home.file("msg.txt"), "Hello from a file");
    PtySession s({"-m", kDemoModel, "--ctx", "512", "-t", "2", "-n", "4", "--seed", "9"},
                 home.path());
    EXPECT_TRUE(contains(s.expect("ds4> "), "/think-max"));  // the command list comes first

    s.send("/help\n");
    EXPECT_TRUE(contains(s.expect("ds4> "), "/read FILE"));
    s.send("/nothink\n");
    EXPECT_TRUE(contains(s.expect("ds4> "), "Thinking mode: none."));
    s.send("/think\n");
    EXPECT_TRUE(contains(s.expect("ds4> "), "Thinking mode: high."));
    s.send("/think-max\n");
    EXPECT_TRUE(contains(s.expect("ds4> "), "Thinking mode: high (ctx below 393216)."));
    s.send("/stats\n");
    std::string out = s.expect("ds4> ");
    EXPECT_TRUE(contains(out, "transcript: ")) << out;
    EXPECT_TRUE(contains(out, "live KV: 0 tokens, context: 512")) << out;
    EXPECT_TRUE(contains(out, "no turn yet")) << out;

    s.send("hi\n");  // a chat turn: 4 tokens at most
    s.expect("ds4> ");
    s.send("/stats\n");
    out = s.expect("ds4> ");
    EXPECT_TRUE(contains(out, "last turn: ")) << out;
    EXPECT_TRUE(contains(out, "ds4: prefill: ")) << out;

    s.send("/read " + home.file("msg.txt") + "\n");
    s.expect("ds4> ");
    s.send("/read " + home.file("missing.txt") + "\n");
    EXPECT_TRUE(contains(s.expect("ds4> "), "cannot open"));

    s.send("/ctx 1024\n");
    EXPECT_TRUE(contains(s.expect("ds4> "), "Context: 1024 tokens"));
    s.send("/ctx zero\n");
    EXPECT_TRUE(contains(s.expect("ds4> "), "usage: /ctx N"));
    s.send("/stats\n");
    EXPECT_TRUE(
        contains(s.expect("ds4> "), "live KV: 0 tokens, context: 1024"));  // re-prefill next turn

    s.send("/clear\n");
    EXPECT_TRUE(contains(s.expect("ds4> "), "Conversation cleared."));
    s.send("/bogus\n");
    out = s.expect("ds4> ");
    EXPECT_TRUE(contains(out, "unknown command: /bogus")) << out;
    EXPECT_TRUE(contains(out, "type /help for commands")) << out;

    s.send("/quit\n");
    EXPECT_EQ(s.wait_exit(), 0) << s.all();
    const std::string history = slurp(home.file(".ds4_history"));
    EXPECT_TRUE(contains(history, "/stats")) << history;
}

TEST(CliInteractive, CtrlCStopsGenerationThenASecondOneExits) {
    TempDir home;
    // A long answer: the context room is the only limit.
    PtySession s(
        {"-m", kDemoModel, "--ctx", "16384", "-t", "2", "--nothink", "--verbose", "--seed", "1"},
        home.path());
    s.expect("ds4> ");
    s.send("write a long story\n");
    s.expect("(100%)");
    s.expect("\r\x1b[K");  // the progress line is cleared when the prefill is done
    s.expect_bytes(20);    // some answer text has been printed
    s.send("\x03");        // Ctrl+C
    s.expect("(interrupted)");
    s.expect("ds4> ");
    s.send("/stats\n");  // the partial answer was kept
    const std::string out = s.expect("ds4> ");
    EXPECT_TRUE(contains(out, "generated, interrupted")) << out;
    EXPECT_FALSE(contains(out, "live KV: 0 tokens")) << out;
    // A command came in between: one Ctrl+C only warns, the second exits.
    EXPECT_EQ(s.interrupt_until_exit(), 0) << s.all();
    EXPECT_TRUE(contains(s.unmatched(), "Ctrl+C again to exit")) << s.all();
}

TEST(CliInteractive, CtrlCRightAfterAnInterruptedAnswerExits) {
    TempDir home;
    PtySession s(
        {"-m", kDemoModel, "--ctx", "16384", "-t", "2", "--nothink", "--verbose", "--seed", "2"},
        home.path());
    s.expect("ds4> ");
    s.send("write a long story\n");
    s.expect("(100%)");
    s.expect("\r\x1b[K");
    s.expect_bytes(20);
    s.send("\x03");
    s.expect("(interrupted)");
    s.expect("ds4> ");
    // the second Ctrl+C, at the empty prompt, exits without the warning
    EXPECT_EQ(s.interrupt_until_exit(), 0) << s.all();
    EXPECT_FALSE(contains(s.unmatched(), "Ctrl+C again to exit")) << s.all();
}

TEST(CliInteractive, DoubleCtrlCAtThePromptExitsAndEofExits) {
    TempDir home;
    {
        PtySession s({"-m", kDemoModel, "--ctx", "256", "-t", "1"}, home.path());
        s.expect("ds4> ");
        EXPECT_EQ(s.interrupt_until_exit(), 0) << s.all();
        EXPECT_TRUE(contains(s.unmatched(), "Ctrl+C again to exit")) << s.all();
    }
    {
        PtySession s({"-m", kDemoModel, "--ctx", "256", "-t", "1"}, home.path());
        s.expect("ds4> ");
        EXPECT_EQ(s.eof_until_exit(), 0) << s.all();  // Ctrl+D at the empty prompt
        EXPECT_FALSE(contains(s.all(), "Ctrl+C again to exit")) << s.all();
    }
}

// The program side of the two tests above, one key press each: the line editor polls
// the SIGINT flag (a Ctrl+C that lands before libedit blocks is not lost) and puts the
// terminal in raw mode before drawing the prompt (a Ctrl+D typed right after the prompt
// is not eaten by the cooked line discipline).
TEST(CliInteractive, OneCtrlCWarnsAndOneMoreExits) {
    TempDir home;
    PtySession s({"-m", kDemoModel, "--ctx", "256", "-t", "1"}, home.path());
    s.expect("ds4> ");
    s.send("\x03");
    s.expect("(Ctrl+C again to exit, or /quit)");
    s.expect("ds4> ");
    s.send("\x03");
    EXPECT_EQ(s.wait_exit(), 0) << s.all();
}

TEST(CliInteractive, OneCtrlDAtThePromptExits) {
    TempDir home;
    PtySession s({"-m", kDemoModel, "--ctx", "256", "-t", "1"}, home.path());
    s.expect("ds4> ");
    s.send("\x04");
    EXPECT_EQ(s.wait_exit(), 0) << s.all();
    EXPECT_FALSE(contains(s.all(), "Ctrl+C again")) << s.all();
}

TEST(CliInteractive, ThinkingIsGreyOnATerminal) {
    TempDir home;
    PtySession s({"-m", kDemoModel, "--ctx", "512", "-t", "2", "-n", "3", "--seed", "4"},
                 home.path());
    s.expect("ds4> ");
    s.send("hi\n");
    const std::string out = s.expect("ds4> ");
    EXPECT_TRUE(contains(out, "\x1b[90m")) << out;  // the turn starts inside the reasoning
    EXPECT_TRUE(contains(out, "\x1b[0m")) << out;
    s.send("/quit\n");
    EXPECT_EQ(s.wait_exit(), 0);
}

}  // namespace
}  // namespace ds4::testing
