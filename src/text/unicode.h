// Unicode facts the tokenizer needs: the character classes its pre-tokenizer regexes test
// (interface.md §1.4), a lenient UTF-8 decoder and the GPT-2 byte <-> code point map (§1.2).
//
// Classes come from generated range tables (unicode_tables.cpp, made by
// scripts/gen-unicode-tables.mjs from the JavaScript regex engine that the reference
// tokenizer runs on), folded at first use into a two-stage lookup table so that the
// per-character cost is two loads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ds4::text::unicode {

// Disjoint classes: \p{L}, \p{M}, \p{N}, \p{P}, \p{S}, JavaScript's \s, everything else.
enum class CharClass : uint8_t { Other, Letter, Mark, Number, Punct, Symbol, Space };

struct ClassRange {
    uint32_t first;
    uint32_t last;
    CharClass cls;
};

// Generated tables (unicode_tables.cpp).
std::span<const ClassRange> class_ranges();
std::string_view tables_unicode_version();

// Per-character flag bits the pre-tokenizer tests. One character can carry several
// (e.g. '\n' is kWhite | kCrLf, 'a' is kLetter | kAsciiAlpha).
enum Flag : uint16_t {
    kLetter = 1 << 0,      // \p{L}
    kMark = 1 << 1,        // \p{M}
    kNumber = 1 << 2,      // \p{N}
    kPunct = 1 << 3,       // \p{P}
    kSymbol = 1 << 4,      // \p{S}
    kWhite = 1 << 5,       // \s (JavaScript: Zs, TAB, LF, VT, FF, CR, U+2028/9, U+FEFF)
    kCrLf = 1 << 6,        // '\r' or '\n'
    kSpace = 1 << 7,       // ' ' (U+0020)
    kAsciiAlpha = 1 << 8,  // [A-Za-z]
    kAsciiPunct = 1 << 9,  // [!-/:-@[-`{-~]
    kCjk = 1 << 10,        // U+4E00-U+9FA5, U+3040-U+309F, U+30A0-U+30FF
};

// Flags of a code point (0 for code points above U+10FFFF and for surrogates).
uint16_t flags_of(uint32_t cp);

// One decoded character. Invalid UTF-8 (bad lead or continuation byte, overlong form,
// surrogate, above U+10FFFF, truncated sequence) decodes as a single byte with cp
// kInvalid, so every byte string splits into characters that cover it exactly.
constexpr uint32_t kInvalid = 0xFFFFFFFF;
struct Utf8Char {
    uint32_t cp;
    uint32_t len;  // bytes consumed, 1..4
};
Utf8Char decode_utf8(std::string_view s, size_t pos);

void append_utf8(std::string& out, uint32_t cp);

// Length of the longest prefix of `s` that does not end inside an incomplete UTF-8
// sequence: a trailing lead byte whose continuation bytes have not arrived yet is
// held back; bytes that can never become valid are not (they are released as they are).
size_t complete_utf8_prefix(std::string_view s);

// GPT-2 byte map (§1.2): byte -> code point and back (kInvalid for unmapped code points).
uint32_t byte_to_code_point(uint8_t b);
uint32_t code_point_to_byte(uint32_t cp);

}  // namespace ds4::text::unicode
