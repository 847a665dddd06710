#include "kvstore/kvc_format.h"

#include <gtest/gtest.h>

#include <cstring>

#include "ds4/error.h"

namespace ds4::kvstore {
namespace {

// formats.md §6.2 worked example: 2-bit model, cold, T 2048, ctx 100000, times 1700000000,
// payload 52,184,460 bytes.
TEST(KvcFormat, HeaderMatchesTheSpecExampleByteForByte) {
    KvcHeader h;
    h.quant_bits = 2;
    h.reason = SaveReason::Cold;
    h.tokens = 2048;
    h.ctx = 100000;
    h.created = h.last_used = 1700000000;
    h.payload_bytes = 52184460;
    h.text_bytes = 7;
    const uint8_t expected[48] = {0x4b, 0x56, 0x43, 0x01, 0x02, 0x01, 0x00, 0x00, 0x00, 0x08,
                                  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x86, 0x01, 0x00,
                                  0x00, 0x00, 0x00, 0x00, 0x00, 0xf1, 0x53, 0x65, 0x00, 0x00,
                                  0x00, 0x00, 0x00, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00,
                                  0x8c, 0x45, 0x1c, 0x03, 0x00, 0x00, 0x00, 0x00};
    const auto b = encode_prefix(h);
    EXPECT_EQ(std::memcmp(b.data(), expected, 48), 0);
    EXPECT_EQ(b[48], 7);
    EXPECT_EQ(b[49] | b[50] | b[51], 0);
    KvcHeader back;
    std::string why;
    ASSERT_TRUE(decode_prefix(b, &back, &why)) << why;
    EXPECT_EQ(back.tokens, 2048u);
    EXPECT_EQ(back.ctx, 100000u);
    EXPECT_EQ(back.payload_bytes, 52184460u);
    EXPECT_EQ(back.created, 1700000000);
    EXPECT_EQ(back.reason, SaveReason::Cold);
    EXPECT_EQ(back.body_end(), 52u + 7u + 52184460u);
}

TEST(KvcFormat, DecodeRejectsWhatMustNotBeListed) {
    KvcHeader h;
    h.tokens = 5;
    std::string why;
    KvcHeader out;
    auto b = encode_prefix(h);
    b[0] = 'X';
    EXPECT_FALSE(decode_prefix(b, &out, &why));
    EXPECT_EQ(why, "bad magic (expected \"KVC\")");
    b = encode_prefix(h);
    b[3] = 2;
    EXPECT_FALSE(decode_prefix(b, &out, &why));
    EXPECT_EQ(why, "unsupported KVC version (expected 1)");
    h.quant_bits = 3;
    b = encode_prefix(h);
    EXPECT_FALSE(decode_prefix(b, &out, &why));
    EXPECT_EQ(why, "quant bits not 2 or 4");
    h.quant_bits = 4;
    h.tokens = 0;
    b = encode_prefix(h);
    EXPECT_FALSE(decode_prefix(b, &out, &why));
    EXPECT_EQ(why, "token count is 0");
}

TEST(KvcFormat, UnknownSaveReasonsReadAsUnknown) {
    KvcHeader h;
    h.tokens = 1;
    auto b = encode_prefix(h);
    b[5] = 9;
    KvcHeader out;
    ASSERT_TRUE(decode_prefix(b, &out, nullptr));
    EXPECT_EQ(out.reason, SaveReason::Unknown);
    EXPECT_STREQ(save_reason_name(SaveReason::Continued), "continued");
}

TEST(KvcFormat, ToolMapRoundTripsWithExactBytes) {
    const std::vector<ToolIdEntry> entries = {{"call_0123", "<x>"}, {"toolu_ab", "<y>\n"}};
    const std::string s = encode_tool_map(entries);
    const std::string expected = std::string("KTM\x01\x02\0\0\0", 8) +
                                 std::string("\x09\0\0\0\x03\0\0\0", 8) + "call_0123<x>" +
                                 std::string("\x08\0\0\0\x04\0\0\0", 8) + "toolu_ab<y>\n";
    EXPECT_EQ(s, expected);
    const auto* p = reinterpret_cast<const uint8_t*>(s.data());
    bool stopped = true;
    EXPECT_EQ(decode_tool_map({p, s.size()}, 100, &stopped), entries);
    EXPECT_FALSE(stopped);
}

TEST(KvcFormat, ToolMapReaderKeepsEntriesBeforeABadOne) {
    const std::vector<ToolIdEntry> entries = {{"a", "1"}, {"b", "2"}, {"c", "3"}};
    std::string s = encode_tool_map(entries);
    s.resize(s.size() - 2);  // the last entry is cut short
    const auto* p = reinterpret_cast<const uint8_t*>(s.data());
    bool stopped = false;
    const auto got = decode_tool_map({p, s.size()}, 100, &stopped);
    EXPECT_TRUE(stopped);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[1].id, "b");
    std::string wrong = encode_tool_map(entries);
    wrong[0] = 'X';
    EXPECT_TRUE(decode_tool_map({reinterpret_cast<const uint8_t*>(wrong.data()), wrong.size()}, 100)
                    .empty());
    EXPECT_TRUE(decode_tool_map({p, s.size()}, 2, &stopped).empty());  // N above the reader limit
    EXPECT_TRUE(stopped);
}

TEST(KvcFormat, ToolMapWriterRejectsEmptyOrOversizedIds) {
    const std::vector<ToolIdEntry> bad = {{"", "x"}};
    EXPECT_THROW(encode_tool_map(bad), ds4::Error);
    const std::vector<ToolIdEntry> big = {{std::string(257, 'a'), "x"}};
    EXPECT_THROW(encode_tool_map(big), ds4::Error);
}

TEST(KvcFormat, FindsDsmlBlocksEarliestStartFirst) {
    const std::string a = "\n\n<｜DSML｜tool_calls>A</｜DSML｜tool_calls>";
    const std::string b = "<tool_calls>B</tool_calls>";
    const std::string c = "<DSML｜tool_calls>C</DSML｜tool_calls>";
    const std::string text =
        "hello" + a + " mid " + b + "x" + c + " <｜DSML｜tool_calls> unterminated";
    const auto blocks = find_dsml_tool_blocks(text);
    ASSERT_EQ(blocks.size(), 3u);
    EXPECT_EQ(blocks[0], a);
    EXPECT_EQ(blocks[1], b);
    EXPECT_EQ(blocks[2], c);
}

TEST(KvcFormat, Sha1AndEntryNames) {
    EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    EXPECT_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    std::string sha;
    EXPECT_TRUE(parse_entry_name("A9993E364706816ABA3E25717850C26C9CD0D89D.kv", &sha));
    EXPECT_EQ(sha, "a9993e364706816aba3e25717850c26c9cd0d89d");
    EXPECT_FALSE(parse_entry_name("a9993e364706816aba3e25717850c26c9cd0d89d.kv.tmp.12", &sha));
    EXPECT_FALSE(parse_entry_name("g9993e364706816aba3e25717850c26c9cd0d89d.kv", &sha));
    EXPECT_FALSE(parse_entry_name("a9993e364706816aba3e25717850c26c9cd0d89.kv", &sha));
    EXPECT_FALSE(parse_entry_name("sysprompt.kv", &sha));
}

}  // namespace
}  // namespace ds4::kvstore
