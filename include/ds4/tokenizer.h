// The DeepSeek V4 tokenizer (spec interface.md §1): GPT-2 style byte-level BPE with the
// DeepSeek pre-tokenizer, loaded from GGUF metadata (tokenizer.ggml.tokens and
// tokenizer.ggml.merges; special tokens are found by their strings).
//
// Two entry points (§1.6):
//   encode_text  plain text: special-token strings are ordinary text.
//   encode_chat  rendered chat text: the special tokens of §1.3 are recognised.
// The pre-tokenizer implements the official regexes with real Unicode classes (§1.4,
// §8 item 3); it is verified token for token against the reference JavaScript tokenizer
// (tests/tokenizer). Any byte string encodes, and decode(encode(x)) == x for every x,
// valid UTF-8 or not.
//
// A Tokenizer is immutable after load and cheap to copy (shared state); encode and
// decode may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ds4 {

using TokenId = int32_t;

// The seven control tokens ds4 needs (§1.3), resolved by string at load.
struct SpecialTokens {
    TokenId bos = -1;        // <｜begin▁of▁sentence｜>
    TokenId eos = -1;        // <｜end▁of▁sentence｜>
    TokenId user = -1;       // <｜User｜>
    TokenId assistant = -1;  // <｜Assistant｜>
    TokenId think = -1;      // <think>
    TokenId think_end = -1;  // </think>
    TokenId dsml = -1;       // ｜DSML｜
};

class Tokenizer {
public:
    // Reads the tokenizer metadata of a GGUF file. Throws ds4::Error naming the file and
    // what is missing or inconsistent.
    static Tokenizer load(const std::string& gguf_path);
    // Builds from the metadata arrays themselves (token strings in byte-level printable
    // form, index = id; merges "<left> <right>", rank = index). `source` names the
    // origin in error messages.
    static Tokenizer from_vocab(std::span<const std::string_view> tokens,
                                std::span<const std::string_view> merges,
                                std::string_view source);

    // Plain text: the whole string is BPE text (§1.6). Appends to `out`.
    void encode_text(std::string_view text, std::vector<TokenId>& out) const;
    std::vector<TokenId> encode_text(std::string_view text) const;
    // Rendered chat: special-token strings become their ids; the text between them is
    // encoded as plain text, span by span. Appends to `out`.
    void encode_chat(std::string_view rendered, std::vector<TokenId>& out) const;
    std::vector<TokenId> encode_chat(std::string_view rendered) const;

    // Token ids to bytes (§1.7). Out-of-range ids decode to nothing.
    std::string decode(std::span<const TokenId> ids) const;
    void decode_append(TokenId id, std::string& out) const;
    // The bytes one token stands for (empty for out-of-range ids).
    std::string_view token_bytes(TokenId id) const;
    // The stored vocabulary string (byte-level form, e.g. "Ġthe"), for --dump-tokens.
    std::string_view token_text(TokenId id) const;
    // The id whose stored string is exactly `text`.
    std::optional<TokenId> find(std::string_view text) const;

    size_t vocab_size() const;
    size_t merge_count() const;
    const SpecialTokens& specials() const;
    // Every special token encode_chat recognises: the seven above plus the other V4
    // control tokens of §1.3 that the vocabulary holds (<｜System｜>,
    // <｜latest_reminder｜>, ...), in the order they are tried.
    std::span<const TokenId> chat_special_ids() const;

    struct Impl;

private:
    explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<const Impl> impl_;
};

// Streaming detokenizer: turns a token stream into bytes that never end inside a UTF-8
// character. A trailing incomplete sequence is held back until the next token completes
// it or finish() releases it (§1.7: clients that replace broken bytes with U+FFFD would
// otherwise echo altered text back).
class StreamDecoder {
public:
    explicit StreamDecoder(Tokenizer tokenizer) : tok_(std::move(tokenizer)) {}

    // The bytes that are complete after adding `id`; valid until the next call.
    std::string_view push(TokenId id);
    // Everything still held back (possibly an incomplete sequence); the decoder is then
    // empty again.
    std::string_view finish();
    size_t pending_bytes() const { return held_.size(); }
    void reset() { held_.clear(); }

private:
    Tokenizer tok_;
    std::string held_;  // bytes not yet released
    std::string out_;   // storage for the returned view
};

}  // namespace ds4
