// libFuzzer target: encode arbitrary bytes with both entry points. Findings: a crash or
// sanitizer report, decode(encode(x)) != x, an out-of-range id, a special id from the
// plain entry point, or entry points that disagree on input without special strings.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "ds4/tokenizer.h"
#include "text/unicode.h"

namespace {

std::string byte_token(int b) {
    std::string s;
    ds4::text::unicode::append_utf8(s, ds4::text::unicode::byte_to_code_point(static_cast<uint8_t>(b)));
    return s;
}

// Bytes, the V4 specials, and merges that build multi-byte tokens from spaces, letters,
// newlines and a CJK character (你 = E4 BD A0), so BPE does real work on fuzz input.
ds4::Tokenizer make_tokenizer() {
    std::vector<std::string> tokens, merges;
    for (int b = 0; b < 256; ++b) tokens.push_back(byte_token(b));
    for (const char* s : {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>",
                          "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜", "<｜System｜>"})
        tokens.emplace_back(s);
    const auto merge = [&](const std::string& l, const std::string& r) {
        merges.push_back(l + " " + r);
        tokens.push_back(l + r);
    };
    const std::string sp = byte_token(' '), nl = byte_token('\n');
    merge(sp, sp);
    merge(sp + sp, sp + sp);
    merge(nl, nl);
    merge("t", "h");
    merge(sp, "th");
    merge("th", "e");
    merge(byte_token(0xE4), byte_token(0xBD));
    merge(byte_token(0xE4) + byte_token(0xBD), byte_token(0xA0));
    merge("a", "a");
    merge("aa", "a");
    std::vector<std::string_view> t(tokens.begin(), tokens.end());
    std::vector<std::string_view> m(merges.begin(), merges.end());
    return ds4::Tokenizer::from_vocab(t, m, "fuzz-vocab");
}

void check(bool ok) {
    if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const ds4::Tokenizer tok = make_tokenizer();
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const std::vector<ds4::TokenId> plain = tok.encode_text(text);
    const std::vector<ds4::TokenId> chat = tok.encode_chat(text);
    check(tok.decode(plain) == text);
    check(tok.decode(chat) == text);
    bool has_special_string = false;
    for (ds4::TokenId id : tok.chat_special_ids())
        has_special_string |= text.find(tok.token_text(id)) != std::string_view::npos;
    for (ds4::TokenId id : plain) {
        check(id >= 0 && static_cast<size_t>(id) < tok.vocab_size());
        for (ds4::TokenId s : tok.chat_special_ids()) check(id != s);
    }
    if (!has_special_string) check(plain == chat);
    return 0;
}
