// Helpers for the tokenizer tests: a small synthetic byte-level vocabulary, and the real
// DeepSeek V4 tokenizer GGUF generated at build time (tools/ds4-make-tokenizer).
#pragma once

#include <string>
#include <vector>

#include "ds4/tokenizer.h"

namespace ds4::testing_vocab {

struct SmallVocab {
    std::vector<std::string> tokens;  // index = id
    std::vector<std::string> merges;

    Tokenizer build() const;
    // The id of a stored token string (throws when absent).
    TokenId id(const std::string& text) const;
};

// Byte tokens at ids 0..255 in byte order, then the seven required specials, then the
// results of `merges` (each "left right" adds left+right as a token).
SmallVocab small_vocab(const std::vector<std::string>& merges = {});

// GPT-2 printable form of a byte string ("a b" -> "aĠb").
std::string printable(const std::string& bytes);

// Path of build/ds4-v4-tokenizer.gguf; fails the calling test (ADD_FAILURE + throws) with
// instructions when it is missing.
std::string real_vocab_path();
const Tokenizer& real_tokenizer();

}  // namespace ds4::testing_vocab
