// Broken tokenizer metadata fails at load with a message naming what was wrong.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "test_vocab.h"

namespace ds4 {
namespace {

using testing_vocab::small_vocab;

std::string load_error(const testing_vocab::SmallVocab& v) {
    try {
        v.build();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(TokenizerErrors, MissingRequiredSpecial) {
    auto v = small_vocab();
    std::erase(v.tokens, "</think>");
    EXPECT_EQ(load_error(v), "small-vocab: required tokenizer token is missing: </think>");
}

TEST(TokenizerErrors, MissingByteToken) {
    auto v = small_vocab();
    v.tokens[0x41] = "not-A";
    EXPECT_EQ(load_error(v),
              "small-vocab: tokenizer.ggml.tokens has no token for byte 0x41 (\"A\"); a "
              "byte-level BPE vocabulary needs all 256");
}

TEST(TokenizerErrors, DuplicateToken) {
    auto v = small_vocab();
    v.tokens.push_back("Ġ");
    EXPECT_EQ(load_error(v),
              "small-vocab: tokenizer.ggml.tokens holds \"Ġ\" twice (ids 32 and 263); token "
              "strings must be unique");
}

TEST(TokenizerErrors, MalformedMerge) {
    auto v = small_vocab({"a b"});
    v.merges.push_back("abc");
    EXPECT_EQ(load_error(v),
              "small-vocab: tokenizer.ggml.merges[1] \"abc\" is not \"<left> <right>\" (two "
              "non-empty parts, one space)");
    v.merges.back() = "a b c";
    EXPECT_NE(load_error(v).find("merges[1] \"a b c\" is not"), std::string::npos);
}

TEST(TokenizerErrors, MergeOfUnknownTokens) {
    auto v = small_vocab();
    v.merges = {"zz z"};
    EXPECT_EQ(load_error(v),
              "small-vocab: tokenizer.ggml.merges[0] \"zz z\": left part \"zz\" is not a token");
    v.merges = {"z zz"};
    EXPECT_EQ(load_error(v),
              "small-vocab: tokenizer.ggml.merges[0] \"z zz\": right part \"zz\" is not a token");
    v.merges = {"q r"};
    EXPECT_EQ(load_error(v),
              "small-vocab: tokenizer.ggml.merges[0] \"q r\": merged \"qr\" is not a token");
}

TEST(TokenizerErrors, EmptyTokenTable) {
    const std::vector<std::string_view> none;
    try {
        Tokenizer::from_vocab(none, none, "x.gguf");
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "x.gguf: GGUF tokenizer token table is missing or invalid: "
                               "tokenizer.ggml.tokens is empty");
    }
}

class TokenizerGgufErrors : public ::testing::Test {
protected:
    void TearDown() override { std::filesystem::remove(path_); }
    std::string load_error(gguf::Writer& w) {
        w.begin(path_);
        w.finish();
        try {
            Tokenizer::load(path_);
        } catch (const Error& e) {
            return e.what();
        }
        return "(no error)";
    }
    // One file per test and process: ctest runs the cases in parallel.
    std::string path_ = cat(::testing::TempDir(), "ds4-tokenizer-",
                            ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                            "-", ::getpid(), ".gguf");
};

TEST_F(TokenizerGgufErrors, MissingTokens) {
    gguf::Writer w;
    w.add_string("general.name", "x");
    EXPECT_EQ(load_error(w), path_ + ": GGUF tokenizer token table is missing or invalid "
                                     "(tokenizer.ggml.tokens is missing)");
}

TEST_F(TokenizerGgufErrors, TokensNotStrings) {
    gguf::Writer w;
    const std::vector<uint32_t> ids{1, 2};
    w.add_array_u32("tokenizer.ggml.tokens", ids);
    EXPECT_EQ(load_error(w), path_ + ": GGUF tokenizer token table is missing or invalid "
                                     "(tokenizer.ggml.tokens is not an array of strings)");
}

TEST_F(TokenizerGgufErrors, MissingMerges) {
    gguf::Writer w;
    const auto v = small_vocab();
    w.add_array_string("tokenizer.ggml.tokens", v.tokens);
    EXPECT_EQ(load_error(w),
              path_ + ": required metadata key tokenizer.ggml.merges is missing");
}

TEST_F(TokenizerGgufErrors, LoadsAValidFile) {
    gguf::Writer w;
    const auto v = small_vocab({"a b"});
    w.add_array_string("tokenizer.ggml.tokens", v.tokens);
    w.add_array_string("tokenizer.ggml.merges", v.merges);
    EXPECT_EQ(load_error(w), "(no error)");
    const Tokenizer tok = Tokenizer::load(path_);
    EXPECT_EQ(tok.vocab_size(), v.tokens.size());
    EXPECT_EQ(tok.merge_count(), 1u);
    EXPECT_EQ(tok.encode_text("ab"), (std::vector<TokenId>{v.id("ab")}));
}

}  // namespace
}  // namespace ds4
