// Pre-tokenizer piece boundaries (interface.md §1.4), one rule at a time. Expected pieces
// follow the official regexes as the JavaScript reference applies them.
#include <gtest/gtest.h>

#include "text/tokenizer_impl.h"

namespace ds4::text {
namespace {

std::vector<std::string> pieces(std::string_view text) {
    PreTokenizer pre;
    std::vector<uint32_t> ends;
    pre.split(text, ends);
    std::vector<std::string> out;
    uint32_t begin = 0;
    for (uint32_t e : ends) {
        out.emplace_back(text.substr(begin, e - begin));
        begin = e;
    }
    return out;
}

using P = std::vector<std::string>;

TEST(PreTokenizer, DigitsInGroupsOfThree) {
    EXPECT_EQ(pieces("1234567"), (P{"123", "456", "7"}));
    EXPECT_EQ(pieces("x12y"), (P{"x", "12", "y"}));
    // Non-ASCII digits are \p{N} too (ds4's ASCII approximation glues them to letters).
    EXPECT_EQ(pieces("١٢٣٤"), (P{"١٢٣", "٤"}));
    EXPECT_EQ(pieces("１２"), (P{"１２"}));
}

TEST(PreTokenizer, CjkAndKanaRuns) {
    EXPECT_EQ(pieces("你好abc"), (P{"你好", "abc"}));
    EXPECT_EQ(pieces("東京タワー"), (P{"東京タワー"}));
    // U+FF0C (fullwidth comma) is punctuation, not part of the CJK run.
    EXPECT_EQ(pieces("你好，世界"), (P{"你好", "，", "世界"}));
}

TEST(PreTokenizer, LettersWithOneLeadingCharacter) {
    EXPECT_EQ(pieces("Hello world"), (P{"Hello", " world"}));
    EXPECT_EQ(pieces("naïve café"), (P{"naïve", " café"}));
    EXPECT_EQ(pieces("\tfoo"), (P{"\tfoo"}));
    // Combining marks continue a letter run; a lone mark starts one.
    EXPECT_EQ(pieces("e\u0301x"), (P{"e\u0301x"}));
}

TEST(PreTokenizer, AsciiPunctuationBeforeAsciiLetters) {
    EXPECT_EQ(pieces("#include"), (P{"#include"}));
    EXPECT_EQ(pieces("don't"), (P{"don", "'t"}));
    EXPECT_EQ(pieces(".foo()"), (P{".foo", "()"}));
}

TEST(PreTokenizer, PunctuationRunsKeepTrailingNewlines) {
    EXPECT_EQ(pieces("x;\n\ny"), (P{"x", ";\n\n", "y"}));
    EXPECT_EQ(pieces("a != b"), (P{"a", " !=", " b"}));
    EXPECT_EQ(pieces("—…"), (P{"—…"}));
}

TEST(PreTokenizer, WhitespaceRules) {
    EXPECT_EQ(pieces("    int"), (P{"   ", " int"}));
    EXPECT_EQ(pieces("a \n b"), (P{"a", " \n", " b"}));
    EXPECT_EQ(pieces("a\r\n\r\n  "), (P{"a", "\r\n\r\n", "  "}));
    // The end of a step-1 piece is the end of the text for the (?!\S) lookahead.
    EXPECT_EQ(pieces("a  1"), (P{"a", "  ", "1"}));
    // Non-ASCII whitespace is \s.
    EXPECT_EQ(pieces("a\u3000\u3000b"), (P{"a", "\u3000", "\u3000b"}));
}

TEST(PreTokenizer, UnmatchedCharactersFormGaps) {
    // Controls and ZWJ match no alternative; consecutive ones form one piece.
    EXPECT_EQ(pieces("\x01\x02"), (P{"\x01\x02"}));
    EXPECT_EQ(pieces("\xE2\x80\x8D\xE2\x80\x8D!"), (P{"\xE2\x80\x8D\xE2\x80\x8D", "!"}));
    // Invalid UTF-8 bytes are single unmatched characters.
    EXPECT_EQ(pieces("\xFF\xFEok"), (P{"\xFF", "\xFEok"}));
}

}  // namespace
}  // namespace ds4::text
