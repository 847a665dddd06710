// A byte-level BPE vocabulary for synthetic models (spec interface.md §1): every byte as a
// GPT-2 "printable" token (§1.2), the DeepSeek V4 special tokens (§1.3), a short list of
// common English merges, and placeholder tokens up to n_vocab. It tokenizes any text
// (every byte has a token), so a synthetic model runs end to end through the real
// tokenizer code; it is not the V4 vocabulary.
//
// Layout: when n_vocab is large enough (the published 129280) every special token sits
// at its V4 id (BOS 0, EOS 1, <｜User｜> 128803, ...), bytes at 3..258, merges after
// them, placeholders elsewhere. Smaller vocabularies are packed: BOS 0, EOS 1, pad 2,
// bytes 3..258, the other specials, merges, placeholders.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace ds4::synth {

struct Vocab {
    std::vector<std::string> tokens;  // index = token id
    std::vector<int32_t> types;       // llama.cpp token types: 1 normal, 3 control
    std::vector<std::string> merges;  // "left right", rank = index
    uint32_t bos = 0;
    uint32_t eos = 1;
    uint32_t pad = 2;
};

// The seven strings ds4 looks up (interface.md §1.3).
const std::vector<std::string>& required_special_tokens();

// The smallest n_vocab that holds the bytes and all special tokens.
uint32_t min_vocab_size();

// The GPT-2 byte → printable code point map (interface.md §1.2), UTF-8 encoded.
std::string byte_token(uint8_t byte);

// Throws ds4::Error when n_vocab < min_vocab_size().
Vocab make_byte_vocab(uint32_t n_vocab);

// The tokenizer of another GGUF (tokenizer.ggml.tokens, token_type, merges and the
// bos/eos/padding ids), e.g. build/ds4-v4-tokenizer.gguf, so a synthetic model can carry
// the real DeepSeek V4 vocabulary (129280 tokens). Throws ds4::Error naming the file and
// the missing or malformed key.
Vocab read_vocab_gguf(const std::string& path);

// tokenizer.ggml.{model "gpt2", pre "joyai-llm", tokens, token_type, merges,
// bos_token_id, eos_token_id, padding_token_id}.
void write_tokenizer(gguf::Writer& w, const Vocab& v);

}  // namespace ds4::synth
