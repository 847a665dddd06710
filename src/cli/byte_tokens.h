// A temporary byte-level text mapping for the preliminary CLI: every UTF-8 byte is the
// vocabulary token whose string is that byte's GPT-2 byte-to-unicode character (spec
// interface.md §1.2), and back. It ignores merges and special tokens; the real BPE
// tokenizer replaces it in a later issue.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ds4::cli {

// The UTF-8 string GPT-2's byte-to-unicode table assigns to byte b.
std::string gpt2_byte_char(uint8_t b);

class ByteTokens {
public:
    // Indexes the single-byte tokens of `vocab` (token strings, index = id).
    explicit ByteTokens(const std::vector<std::string>& vocab);

    // One token per byte; throws ds4::Error when the vocabulary lacks a byte's token.
    std::vector<int32_t> encode(std::string_view text) const;
    // The byte a token stands for, or nullopt for any other token.
    std::optional<uint8_t> byte_of(int32_t token) const;
    // The byte, or "<id>" for tokens that are not single bytes.
    std::string decode(int32_t token) const;

private:
    std::array<int32_t, 256> token_of_byte_;  // -1: no such token
    std::unordered_map<int32_t, uint8_t> byte_of_token_;
};

}  // namespace ds4::cli
