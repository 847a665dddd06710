#include "text/unicode.h"

#include <array>
#include <map>
#include <vector>

namespace ds4::text::unicode {

namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr uint32_t kBlockBits = 8;  // 256 code points per second-stage block
constexpr uint32_t kBlockSize = 1u << kBlockBits;
constexpr uint32_t kNumBlocks = (kMaxCodePoint + 1) >> kBlockBits;

uint16_t class_flag(CharClass c) {
    switch (c) {
        case CharClass::Letter: return kLetter;
        case CharClass::Mark: return kMark;
        case CharClass::Number: return kNumber;
        case CharClass::Punct: return kPunct;
        case CharClass::Symbol: return kSymbol;
        case CharClass::Space: return kWhite;
        case CharClass::Other: break;
    }
    return 0;
}

// Flags that depend on the code point itself rather than its general category.
uint16_t extra_flags(uint32_t cp) {
    uint16_t f = 0;
    if (cp == '\r' || cp == '\n') f |= kCrLf;
    if (cp == ' ') f |= kSpace;
    if ((cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z')) f |= kAsciiAlpha;
    if ((cp >= '!' && cp <= '/') || (cp >= ':' && cp <= '@') || (cp >= '[' && cp <= '`') ||
        (cp >= '{' && cp <= '~'))
        f |= kAsciiPunct;
    if ((cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF)) f |= kCjk;
    return f;
}

// Two-stage table: stage1[cp >> 8] names a 256-entry block of stage2. Most blocks
// (unassigned planes, the CJK ideographs) are identical, so they are stored once.
struct FlagTable {
    std::array<uint16_t, kNumBlocks> stage1{};
    std::vector<uint16_t> stage2;

    FlagTable() {
        std::vector<uint16_t> flat(kMaxCodePoint + 1, 0);
        for (const ClassRange& r : class_ranges())
            for (uint32_t cp = r.first; cp <= r.last; ++cp) flat[cp] = class_flag(r.cls);
        for (uint32_t cp = 0; cp < 0x10000; ++cp) flat[cp] |= extra_flags(cp);
        std::map<std::u16string, uint16_t> seen;  // block contents -> block index
        for (uint32_t b = 0; b < kNumBlocks; ++b) {
            const uint16_t* block = &flat[b * kBlockSize];
            std::u16string key(block, block + kBlockSize);
            const auto [it, fresh] =
                seen.emplace(std::move(key), static_cast<uint16_t>(stage2.size() / kBlockSize));
            if (fresh) stage2.insert(stage2.end(), block, block + kBlockSize);
            stage1[b] = it->second;
        }
    }
};

const FlagTable& flag_table() {
    static const FlagTable table;
    return table;
}

constexpr std::array<uint32_t, 256> make_byte_to_cp() {
    std::array<uint32_t, 256> map{};
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
        const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        map[b] = printable ? b : next++;
    }
    return map;
}
constexpr std::array<uint32_t, 256> kByteToCp = make_byte_to_cp();

bool is_cont(uint8_t b) { return (b & 0xC0) == 0x80; }

}  // namespace

uint16_t flags_of(uint32_t cp) {
    if (cp > kMaxCodePoint) return 0;
    const FlagTable& t = flag_table();
    return t.stage2[size_t{t.stage1[cp >> kBlockBits]} * kBlockSize + (cp & (kBlockSize - 1))];
}

Utf8Char decode_utf8(std::string_view s, size_t pos) {
    const auto at = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
    const uint8_t b0 = at(pos);
    if (b0 < 0x80) return {b0, 1};
    const size_t left = s.size() - pos;
    // Lead byte ranges and the allowed range of the second byte (RFC 3629 table), which
    // excludes overlong forms, surrogates and code points above U+10FFFF.
    uint32_t len = 0, cp = 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2, cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3, cp = b0 & 0x0F;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4, cp = b0 & 0x07;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return {kInvalid, 1};
    }
    if (left < len) return {kInvalid, 1};
    const uint8_t b1 = at(pos + 1);
    if (b1 < lo || b1 > hi) return {kInvalid, 1};
    cp = (cp << 6) | (b1 & 0x3F);
    for (uint32_t i = 2; i < len; ++i) {
        const uint8_t b = at(pos + i);
        if (!is_cont(b)) return {kInvalid, 1};
        cp = (cp << 6) | (b & 0x3F);
    }
    return {cp, len};
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

size_t complete_utf8_prefix(std::string_view s) {
    // Find the last lead byte among the final (up to) three bytes; if the sequence it
    // starts is still short of continuation bytes, hold it back (interface.md §1.7).
    const size_t n = s.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        const uint8_t b = static_cast<uint8_t>(s[n - back]);
        if (is_cont(b)) continue;
        const size_t need = (b >= 0xC2 && b <= 0xDF) ? 2 : (b >= 0xE0 && b <= 0xEF) ? 3
                            : (b >= 0xF0 && b <= 0xF4)  ? 4 : 1;
        return back < need ? n - back : n;
    }
    return n;
}

uint32_t byte_to_code_point(uint8_t b) { return kByteToCp[b]; }

uint32_t code_point_to_byte(uint32_t cp) {
    if (cp < 256 && kByteToCp[cp] == cp) return cp;
    if (cp >= 256 && cp < 256 + 68) {
        for (uint32_t b = 0; b < 256; ++b)
            if (kByteToCp[b] == cp) return b;
    }
    return kInvalid;
}

}  // namespace ds4::text::unicode
