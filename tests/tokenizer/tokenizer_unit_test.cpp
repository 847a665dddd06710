// Tokenizer behaviour on a small synthetic vocabulary: BPE merge order, the two entry
// points, decoding and the streaming decoder.
#include <gtest/gtest.h>

#include <random>

#include "test_vocab.h"

namespace ds4 {
namespace {

using testing_vocab::small_vocab;

TEST(TokenizerBpe, MergesLowestRankFirst) {
    // "ab" (rank 1) must be built before "bc" (rank 2) would take the 'b'.
    const auto v = small_vocab({"x y", "a b", "b c", "ab c"});
    const Tokenizer tok = v.build();
    EXPECT_EQ(tok.encode_text("abc"), (std::vector<TokenId>{v.id("abc")}));
    EXPECT_EQ(tok.encode_text("bc"), (std::vector<TokenId>{v.id("bc")}));
    EXPECT_EQ(tok.encode_text("ba"), (std::vector<TokenId>{v.id("b"), v.id("a")}));
}

TEST(TokenizerBpe, EqualRanksMergeLeftmostFirst) {
    const auto v = small_vocab({"a a"});
    const Tokenizer tok = v.build();
    EXPECT_EQ(tok.encode_text("aaa"), (std::vector<TokenId>{v.id("aa"), v.id("a")}));
    EXPECT_EQ(tok.encode_text("aaaa"), (std::vector<TokenId>{v.id("aa"), v.id("aa")}));
}

// Pieces longer than the short-piece limit (48 bytes) take the heap-based path; words of
// 1..200 letters exercise both paths against the same reference.
TEST(TokenizerBpe, LongPiecesMatchShortPieceResults) {
    const auto v = small_vocab({"a b", "b a", "ab ab", "ba ba", "abab ab", "a a", "aa aa"});
    const Tokenizer tok = v.build();
    std::mt19937 rng(7);
    for (int trial = 0; trial < 200; ++trial) {
        std::string word;
        const int n = 1 + static_cast<int>(rng() % 200);
        for (int i = 0; i < n; ++i) word += (rng() & 1) ? 'a' : 'b';
        // Reference: the textbook algorithm, rescanning all pairs and merges each step.
        std::vector<std::string> syms;
        for (char c : word) syms.emplace_back(1, c);
        for (;;) {
            size_t best = SIZE_MAX, best_rank = SIZE_MAX;
            for (size_t i = 0; i + 1 < syms.size(); ++i) {
                const std::string m = syms[i] + " " + syms[i + 1];
                for (size_t r = 0; r < v.merges.size(); ++r)
                    if (v.merges[r] == m && r < best_rank) best_rank = r, best = i;
            }
            if (best == SIZE_MAX) break;
            syms[best] += syms[best + 1];
            syms.erase(syms.begin() + static_cast<long>(best) + 1);
        }
        std::vector<TokenId> expect;
        for (const auto& s : syms) expect.push_back(v.id(s));
        ASSERT_EQ(tok.encode_text(word), expect) << word;
    }
}

TEST(TokenizerEntryPoints, PlainTextNeverProducesSpecialIds) {
    const auto v = small_vocab();
    const Tokenizer tok = v.build();
    const std::string text = "<｜User｜>hi</think>｜DSML｜";
    const std::vector<TokenId> ids = tok.encode_text(text);
    for (TokenId id : tok.chat_special_ids())
        EXPECT_EQ(std::count(ids.begin(), ids.end(), id), 0) << id;
    EXPECT_EQ(tok.decode(ids), text);
}

TEST(TokenizerEntryPoints, ChatTextRecognisesSpecials) {
    const auto v = small_vocab();
    const Tokenizer tok = v.build();
    const SpecialTokens& sp = tok.specials();
    const std::vector<TokenId> ids =
        tok.encode_chat("<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜></think>");
    EXPECT_EQ(ids, (std::vector<TokenId>{sp.bos, sp.user, v.id("h"), v.id("i"), sp.assistant,
                                         sp.think_end}));
    // DSML markers inside tags split around the special (interface.md §1.6).
    const std::vector<TokenId> dsml = tok.encode_chat("</｜DSML｜p>");
    EXPECT_EQ(dsml, (std::vector<TokenId>{v.id("<"), v.id("/"), sp.dsml, v.id("p"), v.id(">")}));
    // A special split across a piece boundary, or truncated, is plain text.
    EXPECT_EQ(tok.encode_chat("<thin"), tok.encode_text("<thin"));
    EXPECT_EQ(tok.encode_chat("<｜User"), tok.encode_text("<｜User"));
}

TEST(TokenizerEntryPoints, ChatSpansArePreTokenizedIndependently) {
    const auto v = small_vocab({"Ġ Ġ"});
    const Tokenizer tok = v.build();
    std::vector<TokenId> expect = tok.encode_text("a  ");
    expect.push_back(tok.specials().think);
    for (TokenId id : tok.encode_text("  b")) expect.push_back(id);
    EXPECT_EQ(tok.encode_chat("a  <think>  b"), expect);
}

TEST(TokenizerDecode, RoundTripsArbitraryBytes) {
    const auto v = small_vocab({"Ġ t", "h e"});
    const Tokenizer tok = v.build();
    std::mt19937 rng(11);
    for (int trial = 0; trial < 500; ++trial) {
        std::string s(rng() % 64, '\0');
        for (char& c : s) c = static_cast<char>(rng());
        EXPECT_EQ(tok.decode(tok.encode_text(s)), s);
        EXPECT_EQ(tok.decode(tok.encode_chat(s)), s);
    }
}

TEST(TokenizerDecode, SpecialsDecodeLiterallyAndBadIdsToNothing) {
    const auto v = small_vocab();
    const Tokenizer tok = v.build();
    EXPECT_EQ(tok.token_bytes(tok.specials().user), "<｜User｜>");
    EXPECT_EQ(tok.token_bytes(tok.specials().think), "<think>");
    EXPECT_EQ(tok.token_bytes(v.id("Ġ")), " ");
    EXPECT_EQ(tok.token_text(v.id("Ġ")), "Ġ");
    const std::vector<TokenId> ids{-1, 7'000'000, v.id("a")};
    EXPECT_EQ(tok.decode(ids), "a");
    EXPECT_EQ(tok.find("<think>"), tok.specials().think);
    EXPECT_EQ(tok.find("nope"), std::nullopt);
}

TEST(StreamDecoder, HoldsBackIncompleteUtf8) {
    const auto v = small_vocab();
    StreamDecoder dec(v.build());
    const auto byte_id = [&](uint8_t b) {
        return v.id(testing_vocab::printable(std::string(1, static_cast<char>(b))));
    };
    // "你" = E4 BD A0, one byte token at a time.
    EXPECT_EQ(dec.push(byte_id('x')), "x");
    EXPECT_EQ(dec.push(byte_id(0xE4)), "");
    EXPECT_EQ(dec.pending_bytes(), 1u);
    EXPECT_EQ(dec.push(byte_id(0xBD)), "");
    EXPECT_EQ(dec.push(byte_id(0xA0)), "你");
    EXPECT_EQ(dec.pending_bytes(), 0u);
    // A 4-byte emoji cut after 2 bytes, then released by finish().
    EXPECT_EQ(dec.push(byte_id(0xF0)), "");
    EXPECT_EQ(dec.push(byte_id(0x9F)), "");
    EXPECT_EQ(dec.finish(), "\xF0\x9F");
    EXPECT_EQ(dec.pending_bytes(), 0u);
    // A stray continuation byte can never complete: released at once.
    EXPECT_EQ(dec.push(byte_id(0x80)), "\x80");
}

TEST(StreamDecoder, ConcatenationEqualsDecode) {
    const auto v = small_vocab({"Ġ t", "h e"});
    const Tokenizer tok = v.build();
    const std::string text = "the 你好 🙂 done\xE4";
    const std::vector<TokenId> ids = tok.encode_text(text);
    StreamDecoder dec(tok);
    std::string streamed;
    for (TokenId id : ids) streamed += dec.push(id);
    streamed += dec.finish();
    EXPECT_EQ(streamed, text);
}

}  // namespace
}  // namespace ds4
