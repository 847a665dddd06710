// Stop sequences across token boundaries (interface.md §4.5) and the token budget (§4.6,
// §4.7).
#include "text/stop_budget.h"
#include "text/stop_sequences.h"

#include <gtest/gtest.h>

namespace ds4::text {
namespace {

// Feeds `tokens` one by one; returns the visible text.
std::string run(StopMatcher& m, const std::vector<std::string>& tokens) {
    std::string out;
    for (const std::string& t : tokens)
        if (m.feed(t, out)) return out;
    m.finish(out);
    return out;
}

TEST(StopSequences, MatchSplitAcrossTokensCutsBeforeTheMatch) {
    StopMatcher m({"END"});
    std::string out;
    EXPECT_FALSE(m.feed("The E", out));
    EXPECT_EQ(out, "The ");  // "E" may begin END: held
    EXPECT_EQ(m.held_bytes(), 1u);
    EXPECT_FALSE(m.feed("N", out));
    EXPECT_EQ(out, "The ");
    EXPECT_TRUE(m.feed("Dless", out));
    EXPECT_EQ(out, "The ");
    EXPECT_TRUE(m.stopped());
    EXPECT_EQ(m.matched(), "END");
    EXPECT_TRUE(m.feed("more", out));
    EXPECT_EQ(out, "The ");
}

TEST(StopSequences, AFalseStartIsReleased) {
    StopMatcher m({"END"});
    std::string out;
    m.feed("EN", out);
    EXPECT_EQ(out, "");
    m.feed("d", out);
    EXPECT_EQ(out, "ENd");
    EXPECT_EQ(m.held_bytes(), 0u);
    EXPECT_EQ(run(m, {" EEN", "D"}), " E");  // the hold restarts inside "EEN"
}

TEST(StopSequences, HoldsOnlyWhatCanStillMatch) {
    StopMatcher m({"</stop>", "xyz"});
    std::string out;
    m.feed("abc</st", out);
    EXPECT_EQ(out, "abc");
    EXPECT_EQ(m.held_bytes(), 4u);
    m.feed("ay> x", out);
    EXPECT_EQ(out, "abc</stay> ");
    EXPECT_EQ(m.held_bytes(), 1u);
    m.finish(out);
    EXPECT_EQ(out, "abc</stay> x");
    EXPECT_FALSE(m.stopped());
    EXPECT_EQ(m.emitted_bytes(), out.size());
}

TEST(StopSequences, EarliestMatchWins) {
    StopMatcher m({"world", "lo w"});
    EXPECT_EQ(run(m, {"hel", "lo wor", "ld"}), "hel");
    EXPECT_EQ(m.matched(), "lo w");
    StopMatcher same_start({"ab", "abc"});
    EXPECT_EQ(run(same_start, {"xabc"}), "x");
    EXPECT_EQ(same_start.matched(), "ab");  // tie: the one listed first
}

TEST(StopSequences, MatchInsideOneTokenAndMultibyteStops) {
    StopMatcher m({"。\n"});
    EXPECT_EQ(run(m, {"你好", "\xE3\x80", "\x82", "\n再见"}), "你好");
    StopMatcher none;
    EXPECT_TRUE(none.empty());
    EXPECT_EQ(run(none, {"a", "b"}), "ab");
    StopMatcher empty_dropped({"", "q"});
    EXPECT_EQ(run(empty_dropped, {"abq"}), "ab");
}

TEST(TokenBudget, EosEndsWithoutCountingAndLengthCountsTheLastToken) {
    TokenBudget budget(3, 1);
    EXPECT_FALSE(budget.exhausted());
    EXPECT_EQ(budget.on_token(5), TokenBudget::Verdict::keep);
    EXPECT_EQ(budget.on_token(1), TokenBudget::Verdict::eos);
    EXPECT_EQ(budget.generated(), 1u);
    EXPECT_EQ(budget.on_token(6), TokenBudget::Verdict::keep);
    EXPECT_EQ(budget.on_token(7), TokenBudget::Verdict::length);
    EXPECT_TRUE(budget.exhausted());
    EXPECT_TRUE(TokenBudget(0, 1).exhausted());  // max_tokens 0: empty, finish length
}

TEST(TokenBudget, MaxNewTokensClampsToTheContext) {
    EXPECT_EQ(max_new_tokens(-1, 393216, 1000, 100), 900u);       // server default
    EXPECT_EQ(max_new_tokens(50, 393216, 1000, 100), 50u);
    EXPECT_EQ(max_new_tokens(-1, 50000, 1000, 100, 1), 899u);     // CLI keeps one slot
    EXPECT_EQ(max_new_tokens(10, 393216, 100, 100), 0u);
    EXPECT_EQ(max_new_tokens(10, 393216, 100, 200), 0u);
}

}  // namespace
}  // namespace ds4::text
