// ds4::Tokenizer: loading and validation of the vocabulary, the two encoding entry
// points, decoding and the streaming decoder (interface.md §1).
#include "ds4/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "text/tokenizer_impl.h"
#include "text/unicode.h"

namespace ds4 {

namespace {

namespace unicode = text::unicode;

constexpr std::string_view kTokensKey = "tokenizer.ggml.tokens";
constexpr std::string_view kMergesKey = "tokenizer.ggml.merges";

// The fullwidth vertical bar U+FF5C: a token containing it decodes literally (§1.7).
constexpr std::string_view kFullwidthBar = "\xEF\xBD\x9C";

// encode_chat's special tokens: the seven ds4 needs (required), then the other V4
// control tokens of §1.3 (recognised when the vocabulary has them). Order = try order;
// no string is a prefix of another, so the order never changes a result.
struct ChatSpecial {
    std::string_view text;
    TokenId SpecialTokens::*field;  // nullptr: optional
};
constexpr ChatSpecial kChatSpecials[] = {
    {"<｜begin▁of▁sentence｜>", &SpecialTokens::bos},
    {"<｜end▁of▁sentence｜>", &SpecialTokens::eos},
    {"<｜User｜>", &SpecialTokens::user},
    {"<｜Assistant｜>", &SpecialTokens::assistant},
    {"<think>", &SpecialTokens::think},
    {"</think>", &SpecialTokens::think_end},
    {"｜DSML｜", &SpecialTokens::dsml},
    {"<｜▁pad▁｜>", nullptr},
    {"<｜System｜>", nullptr},
    {"<｜fim▁hole｜>", nullptr},
    {"<｜fim▁begin｜>", nullptr},
    {"<｜fim▁end｜>", nullptr},
    {"<|EOT|>", nullptr},
    {"<｜tool▁calls▁begin｜>", nullptr},
    {"<｜tool▁calls▁end｜>", nullptr},
    {"<｜tool▁call▁begin｜>", nullptr},
    {"<｜tool▁call▁end｜>", nullptr},
    {"<｜tool▁outputs▁begin｜>", nullptr},
    {"<｜tool▁outputs▁end｜>", nullptr},
    {"<｜tool▁output▁begin｜>", nullptr},
    {"<｜tool▁output▁end｜>", nullptr},
    {"<｜tool▁sep｜>", nullptr},
    {"<｜latest_reminder｜>", nullptr},
    {"<｜action｜>", nullptr},
    {"<｜query｜>", nullptr},
    {"<｜authority｜>", nullptr},
    {"<｜domain｜>", nullptr},
    {"<｜title｜>", nullptr},
    {"<｜read_url｜>", nullptr},
};

// The bytes a stored token string stands for (§1.7): literal when it contains U+FF5C,
// else each code point mapped back through the GPT-2 byte map; unmapped code points are
// dropped (cannot happen for a byte-level vocabulary's ordinary tokens).
void append_token_bytes(std::string_view text, std::string& out) {
    if (text.find(kFullwidthBar) != std::string_view::npos) {
        out += text;
        return;
    }
    for (size_t pos = 0; pos < text.size();) {
        const unicode::Utf8Char ch = unicode::decode_utf8(text, pos);
        pos += ch.len;
        const uint32_t b = ch.cp == unicode::kInvalid ? unicode::kInvalid
                                                      : unicode::code_point_to_byte(ch.cp);
        if (b != unicode::kInvalid) out += static_cast<char>(b);
    }
}

void load_tokens(Tokenizer::Impl& t, std::span<const std::string_view> tokens) {
    if (tokens.empty())
        fail(t.source, ": GGUF tokenizer token table is missing or invalid: ", kTokensKey,
             " is empty");
    if (tokens.size() > size_t{INT32_MAX})
        fail(t.source, ": GGUF tokenizer token table is missing or invalid: ", kTokensKey,
             " has ", tokens.size(), " entries (at most ", INT32_MAX, ")");
    size_t total = 0;
    for (std::string_view s : tokens) total += s.size();
    t.text_pool.reserve(total);
    t.text_offsets.reserve(tokens.size() + 1);
    t.byte_offsets.reserve(tokens.size() + 1);
    for (std::string_view s : tokens) {
        t.text_offsets.push_back(static_cast<uint32_t>(t.text_pool.size()));
        t.text_pool += s;
        t.byte_offsets.push_back(static_cast<uint32_t>(t.byte_pool.size()));
        append_token_bytes(s, t.byte_pool);
    }
    t.text_offsets.push_back(static_cast<uint32_t>(t.text_pool.size()));
    t.byte_offsets.push_back(static_cast<uint32_t>(t.byte_pool.size()));
    t.by_text.reserve(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
        const auto id = static_cast<TokenId>(i);
        const auto [it, fresh] = t.by_text.emplace(t.text_of(id), id);
        if (!fresh)
            fail(t.source, ": ", kTokensKey, " holds \"", t.text_of(id), "\" twice (ids ",
                 it->second, " and ", id, "); token strings must be unique");
    }
}

void load_byte_tokens(Tokenizer::Impl& t) {
    for (uint32_t b = 0; b < 256; ++b) {
        std::string text;
        unicode::append_utf8(text, unicode::byte_to_code_point(static_cast<uint8_t>(b)));
        const auto it = t.by_text.find(text);
        if (it == t.by_text.end())
            fail(t.source, ": ", kTokensKey, " has no token for byte 0x", std::hex, b,
                 std::dec, " (\"", text, "\"); a byte-level BPE vocabulary needs all 256");
        t.byte_token[b] = it->second;
    }
}

void load_merges(Tokenizer::Impl& t, std::span<const std::string_view> merges) {
    t.merges.reserve(merges.size());
    t.n_merges = merges.size();
    std::string joined;
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const std::string_view m = merges[rank];
        const size_t sp = m.find(' ');
        const auto where = [&] { return cat(t.source, ": ", kMergesKey, "[", rank, "] \"", m, "\""); };
        if (sp == std::string_view::npos || sp == 0 || sp + 1 == m.size() ||
            m.find(' ', sp + 1) != std::string_view::npos)
            fail(where(), " is not \"<left> <right>\" (two non-empty parts, one space)");
        const std::string_view left = m.substr(0, sp), right = m.substr(sp + 1);
        joined.assign(left).append(right);
        const auto l = t.by_text.find(left), r = t.by_text.find(right), j = t.by_text.find(joined);
        if (l == t.by_text.end()) fail(where(), ": left part \"", left, "\" is not a token");
        if (r == t.by_text.end()) fail(where(), ": right part \"", right, "\" is not a token");
        if (j == t.by_text.end()) fail(where(), ": merged \"", joined, "\" is not a token");
        // A repeated pair keeps its first (lowest) rank, as a rank map built in order would.
        t.merges.insert(l->second, r->second, static_cast<uint32_t>(rank), j->second);
    }
}

// The first two bytes at text[pos] as one index (0 past the end: no special is that short).
size_t prefix2(std::string_view text, size_t pos) {
    if (pos + 1 >= text.size()) return 0;
    return size_t{static_cast<uint8_t>(text[pos])} << 8 | static_cast<uint8_t>(text[pos + 1]);
}

void load_specials(Tokenizer::Impl& t) {
    for (const ChatSpecial& s : kChatSpecials) {
        const auto it = t.by_text.find(s.text);
        if (it == t.by_text.end()) {
            if (s.field) fail(t.source, ": required tokenizer token is missing: ", s.text);
            continue;
        }
        if (s.field) t.specials.*s.field = it->second;
        t.chat_specials.push_back(it->second);
        t.special_prefix2[prefix2(s.text, 0)] = true;
    }
}

// Per-thread scratch: encoding allocates nothing once these have grown.
struct Scratch {
    text::PreTokenizer pre;
    std::vector<uint32_t> ends;
    text::BpeScratch bpe;
    text::WordCache cache;
};
Scratch& scratch() {
    thread_local Scratch s;
    return s;
}

void encode_plain(const Tokenizer::Impl& t, std::string_view text, std::vector<TokenId>& out) {
    if (text.empty()) return;
    Scratch& s = scratch();
    s.pre.split(text, s.ends);
    s.cache.bind(t.serial);
    uint32_t begin = 0;
    for (uint32_t end : s.ends) {
        const std::string_view piece = text.substr(begin, end - begin);
        begin = end;
        if (piece.size() == 1 || piece.size() > text::WordCache::kMaxPieceBytes) {
            t.bpe(piece, s.bpe, out);
            continue;
        }
        if (s.cache.lookup(piece, out)) continue;
        const size_t first = out.size();
        t.bpe(piece, s.bpe, out);
        s.cache.insert(piece, std::span(out).subspan(first));
    }
}

// The special token starting at text[pos], if any (in kChatSpecials order).
std::optional<std::pair<TokenId, size_t>> special_at(const Tokenizer::Impl& t,
                                                     std::string_view text, size_t pos) {
    const std::string_view rest = text.substr(pos);
    for (TokenId id : t.chat_specials) {
        const std::string_view s = t.text_of(id);
        if (rest.starts_with(s)) return std::pair{id, s.size()};
    }
    return std::nullopt;
}

}  // namespace

Tokenizer Tokenizer::from_vocab(std::span<const std::string_view> tokens,
                                std::span<const std::string_view> merges,
                                std::string_view source) {
    static std::atomic<uint64_t> next_serial{1};
    auto t = std::make_shared<Impl>();
    t->source = source;
    t->serial = next_serial++;
    load_tokens(*t, tokens);
    load_byte_tokens(*t);
    load_merges(*t, merges);
    load_specials(*t);
    return Tokenizer(std::move(t));
}

Tokenizer Tokenizer::load(const std::string& gguf_path) {
    const gguf::File f = gguf::File::open(gguf_path);
    const gguf::KeyValue* kv = f.find(kTokensKey);
    if (!kv || kv->type != gguf::ValueType::ARRAY || kv->array_type != gguf::ValueType::STRING)
        fail(gguf_path, ": GGUF tokenizer token table is missing or invalid (", kTokensKey,
             kv ? " is not an array of strings)" : " is missing)");
    const std::vector<std::string_view> tokens = f.get_string_array(kTokensKey);
    if (!f.has(kMergesKey)) fail(gguf_path, ": required metadata key ", kMergesKey, " is missing");
    const std::vector<std::string_view> merges = f.get_string_array(kMergesKey);
    return from_vocab(tokens, merges, gguf_path);
}

void Tokenizer::encode_text(std::string_view text, std::vector<TokenId>& out) const {
    encode_plain(*impl_, text, out);
}

std::vector<TokenId> Tokenizer::encode_text(std::string_view text) const {
    std::vector<TokenId> out;
    encode_text(text, out);
    return out;
}

void Tokenizer::encode_chat(std::string_view rendered, std::vector<TokenId>& out) const {
    size_t span_begin = 0;
    for (size_t pos = 0; pos < rendered.size();) {
        // Every special starts with '<' or with U+FF5C (first byte 0xEF); skip to one.
        const size_t next = rendered.find_first_of("<\xEF", pos);
        if (next == std::string_view::npos) break;
        // '<' and 0xEF (which also leads fullwidth punctuation) are frequent; most
        // occurrences fail the two-byte filter before any string comparison.
        const auto hit = impl_->special_prefix2[prefix2(rendered, next)]
                             ? special_at(*impl_, rendered, next)
                             : std::nullopt;
        if (!hit) {
            pos = next + 1;
            continue;
        }
        encode_plain(*impl_, rendered.substr(span_begin, next - span_begin), out);
        out.push_back(hit->first);
        pos = span_begin = next + hit->second;
    }
    encode_plain(*impl_, rendered.substr(span_begin), out);
}

std::vector<TokenId> Tokenizer::encode_chat(std::string_view rendered) const {
    std::vector<TokenId> out;
    encode_chat(rendered, out);
    return out;
}

std::string_view Tokenizer::token_bytes(TokenId id) const {
    if (id < 0 || static_cast<size_t>(id) >= impl_->size()) return {};
    return impl_->bytes_of(id);
}

std::string_view Tokenizer::token_text(TokenId id) const {
    if (id < 0 || static_cast<size_t>(id) >= impl_->size()) return {};
    return impl_->text_of(id);
}

void Tokenizer::decode_append(TokenId id, std::string& out) const { out += token_bytes(id); }

std::string Tokenizer::decode(std::span<const TokenId> ids) const {
    std::string out;
    for (TokenId id : ids) decode_append(id, out);
    return out;
}

std::optional<TokenId> Tokenizer::find(std::string_view text) const {
    const auto it = impl_->by_text.find(text);
    if (it == impl_->by_text.end()) return std::nullopt;
    return it->second;
}

size_t Tokenizer::vocab_size() const { return impl_->size(); }
size_t Tokenizer::merge_count() const { return impl_->n_merges; }
const SpecialTokens& Tokenizer::specials() const { return impl_->specials; }
std::span<const TokenId> Tokenizer::chat_special_ids() const { return impl_->chat_specials; }

std::string_view StreamDecoder::push(TokenId id) {
    tok_.decode_append(id, held_);
    const size_t n = text::unicode::complete_utf8_prefix(held_);
    out_.assign(held_, 0, n);
    held_.erase(0, n);
    return out_;
}

std::string_view StreamDecoder::finish() {
    out_.swap(held_);
    held_.clear();
    return out_;
}

}  // namespace ds4
