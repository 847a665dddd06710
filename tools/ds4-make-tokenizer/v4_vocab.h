// The DeepSeek V4 vocabulary, assembled from DeepSeek V3's tokenizer.json: V4 keeps V3's
// byte-level BPE (ids 0..127999 and its 127,741 merges) and V3's added tokens, and
// assigns new control tokens in the added range (spec interface.md §1.3).
//
// Ids of V4 tokens that the spec does not name (128815-128820, 128823/4, 128826/7, ...,
// up to 129279) get V3's placeholder naming "<｜place▁holder▁no▁N｜>", N = id - 128000.
// Those are never produced by BPE or recognised in chat text, so their names change no
// encoding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ds4::tools {

struct V4Vocab {
    std::vector<std::string> tokens;  // index = id
    std::vector<int32_t> types;       // llama.cpp token types: 1 normal, 3 control, 4 user-defined
    std::vector<std::string> merges;  // "left right", rank = index
};

constexpr uint32_t kV4VocabSize = 129280;

// Throws ds4::Error naming `source` when the JSON is not a byte-level BPE tokenizer.json.
V4Vocab make_v4_vocab(const nlohmann::json& tokenizer_json, const std::string& source);

}  // namespace ds4::tools
