// The DeepSeek V3/V4 pre-tokenizer (interface.md §1.4). tokenizer.json chains three
// "Split (Isolated)" steps; each one cuts every piece of the previous step into its
// regex matches and the gaps between them:
//   1. \p{N}{1,3}
//   2. [一-龥぀-ゟ゠-ヿ]+
//   3. [!-/:-@[-`{-~][A-Za-z]+ | [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ |
//      ?[\p{P}\p{S}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
// Step 3 sees each piece of steps 1-2 as a whole string: its lookahead (?!\S) treats the
// end of a piece as the end of the text (so "a  1" splits as "a", "  ", "1", not "a",
// " ", " 1"). The alternatives are tried in order at each position, as a backtracking
// regex engine does, and matching resumes after the match.
#include "text/tokenizer_impl.h"
#include "text/unicode.h"

namespace ds4::text {

using namespace unicode;

void PreTokenizer::split(std::string_view text, std::vector<uint32_t>& ends) {
    ends.clear();
    flags_.clear();
    offsets_.clear();
    for (size_t pos = 0; pos < text.size();) {
        const auto c = static_cast<uint8_t>(text[pos]);
        Utf8Char ch = c < 0x80 ? Utf8Char{c, 1} : decode_utf8(text, pos);
        flags_.push_back(ch.cp == kInvalid ? 0 : flags_of(ch.cp));
        offsets_.push_back(static_cast<uint32_t>(pos));
        pos += ch.len;
    }
    offsets_.push_back(static_cast<uint32_t>(text.size()));
    ends_ = &ends;
    split_numbers(0, static_cast<uint32_t>(flags_.size()));
    ends_ = nullptr;
}

// Step 1: digit groups of at most three, and the runs between them.
void PreTokenizer::split_numbers(uint32_t b, uint32_t e) {
    for (uint32_t i = b; i < e;) {
        uint32_t j = i;
        if (flags_[i] & kNumber) {
            while (j < e && j - i < 3 && (flags_[j] & kNumber)) ++j;
        } else {
            while (j < e && !(flags_[j] & kNumber)) ++j;
        }
        split_cjk(i, j);
        i = j;
    }
}

// Step 2: runs of CJK ideographs and kana, and the runs between them.
void PreTokenizer::split_cjk(uint32_t b, uint32_t e) {
    for (uint32_t i = b; i < e;) {
        const uint16_t want = flags_[i] & kCjk;
        uint32_t j = i + 1;
        while (j < e && (flags_[j] & kCjk) == want) ++j;
        split_main(i, j);
        i = j;
    }
}

// Step 3: the main pattern. Characters where no alternative matches (controls, format
// characters, unassigned code points, invalid bytes, digits) collect into gap pieces.
void PreTokenizer::split_main(uint32_t b, uint32_t e) {
    uint32_t gap = b;
    for (uint32_t i = b; i < e;) {
        const uint32_t j = match_main(i, e);
        if (j == i) {
            ++i;
            continue;
        }
        if (gap < i) emit(i);
        emit(j);
        i = gap = j;
    }
    if (gap < e) emit(e);
}

// End of the match of the main pattern starting at character i, or i when none.
uint32_t PreTokenizer::match_main(uint32_t i, uint32_t e) const {
    constexpr uint16_t kLM = kLetter | kMark;
    constexpr uint16_t kPS = kPunct | kSymbol;
    const uint16_t f = flags_[i];
    const uint16_t f1 = i + 1 < e ? flags_[i + 1] : 0;
    // [!-/:-@[-`{-~][A-Za-z]+
    if ((f & kAsciiPunct) && (f1 & kAsciiAlpha)) return run_end(i + 1, e, kAsciiAlpha);
    // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ : with or without the optional character the
    // match is one character plus a letter/mark run (greedy, so the optional one is
    // taken whenever the rest can still match).
    if (!(f & (kCrLf | kLetter | kPunct | kSymbol)) && (f1 & kLM)) return run_end(i + 1, e, kLM);
    if (f & kLM) return run_end(i, e, kLM);
    // ' '?[\p{P}\p{S}]+[\r\n]*
    if ((f & kSpace) && (f1 & kPS)) return run_end(run_end(i + 1, e, kPS), e, kCrLf);
    if (f & kPS) return run_end(run_end(i, e, kPS), e, kCrLf);
    if (!(f & kWhite)) return i;
    const uint32_t ws_end = run_end(i, e, kWhite);
    // \s*[\r\n]+ : \s* backtracks to the last CR/LF of the whitespace run.
    for (uint32_t k = ws_end; k > i; --k)
        if (flags_[k - 1] & kCrLf) return k;
    // \s+(?!\S) : the run, minus its last character when a non-space follows (and the
    // run is longer than one); \s+ takes a single whitespace character otherwise.
    if (ws_end == e || ws_end - i == 1) return ws_end;
    return ws_end - 1;
}

}  // namespace ds4::text
