#include "cli/byte_tokens.h"

#include "ds4/error.h"

namespace ds4::cli {

namespace {

// Bytes GPT-2 keeps as their own code point: '!'..'~', '¡'..'¬', '®'..'ÿ'.
bool is_printable_byte(unsigned b) {
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

std::string utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
        s += static_cast<char>(cp);
    } else if (cp < 0x800) {
        s += static_cast<char>(0xc0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        s += static_cast<char>(0xe0 | (cp >> 12));
        s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        s += static_cast<char>(0x80 | (cp & 0x3f));
    }
    return s;
}

}  // namespace

std::string gpt2_byte_char(uint8_t b) {
    if (is_printable_byte(b)) return utf8(b);
    // The others get 256, 257, ... in byte order.
    uint32_t n = 0;
    for (unsigned c = 0; c < b; ++c)
        if (!is_printable_byte(c)) ++n;
    return utf8(256 + n);
}

ByteTokens::ByteTokens(const std::vector<std::string>& vocab) {
    token_of_byte_.fill(-1);
    std::unordered_map<std::string, uint8_t> byte_of_char;
    for (unsigned b = 0; b < 256; ++b) byte_of_char.emplace(gpt2_byte_char(static_cast<uint8_t>(b)), b);
    for (size_t id = 0; id < vocab.size(); ++id) {
        const auto it = byte_of_char.find(vocab[id]);
        if (it == byte_of_char.end()) continue;
        if (token_of_byte_[it->second] < 0) token_of_byte_[it->second] = static_cast<int32_t>(id);
        byte_of_token_.emplace(static_cast<int32_t>(id), it->second);
    }
}

std::vector<int32_t> ByteTokens::encode(std::string_view text) const {
    std::vector<int32_t> out;
    out.reserve(text.size());
    for (char c : text) {
        const auto b = static_cast<uint8_t>(c);
        if (token_of_byte_[b] < 0) fail("the model vocabulary has no token for byte ", unsigned{b});
        out.push_back(token_of_byte_[b]);
    }
    return out;
}

std::optional<uint8_t> ByteTokens::byte_of(int32_t token) const {
    const auto it = byte_of_token_.find(token);
    if (it == byte_of_token_.end()) return std::nullopt;
    return it->second;
}

std::string ByteTokens::decode(int32_t token) const {
    if (const auto b = byte_of(token)) return std::string(1, static_cast<char>(*b));
    return cat("<", token, ">");
}

}  // namespace ds4::cli
