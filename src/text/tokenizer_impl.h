// Internals of ds4::Tokenizer: the loaded vocabulary, the merge table and the encoders
// (pre-tokenizer, BPE). Shared by tokenizer.cpp, tokenizer_bpe.cpp and
// tokenizer_pretok.cpp; not part of the public API.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ds4/tokenizer.h"

namespace ds4::text {

// Merge ranks keyed by the pair of token ids, in an open-addressing table: BPE looks up
// every adjacent pair of every piece, and std::unordered_map's node chasing dominated.
class MergeTable {
public:
    struct Entry {
        uint64_t key = kEmpty;  // (left << 32) | right
        uint32_t rank = 0;
        TokenId merged = -1;
    };

    void reserve(size_t n_merges);
    // Returns false when the pair is already present (the earlier rank is kept).
    bool insert(TokenId left, TokenId right, uint32_t rank, TokenId merged);
    const Entry* find(TokenId left, TokenId right) const {
        const uint64_t key = pack(left, right);
        for (uint64_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
            const Entry& e = slots_[i];
            if (e.key == key) return &e;
            if (e.key == kEmpty) return nullptr;
        }
    }

private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};
    static uint64_t pack(TokenId l, TokenId r) {
        return (uint64_t{static_cast<uint32_t>(l)} << 32) | static_cast<uint32_t>(r);
    }
    static uint64_t hash(uint64_t k) {
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdull;
        k ^= k >> 33;
        return k;
    }
    std::vector<Entry> slots_;
    uint64_t mask_ = 0;
};

// Splits text into the pieces BPE works on (interface.md §1.4): the three regex splits
// of the official pre-tokenizer, applied in order, with real Unicode classes. Reusable
// scratch; not thread-safe (each thread owns one).
class PreTokenizer {
public:
    // Fills `ends` with the end offset (bytes) of each piece, in order; the pieces
    // concatenate to `text`.
    void split(std::string_view text, std::vector<uint32_t>& ends);

private:
    void split_numbers(uint32_t b, uint32_t e);
    void split_cjk(uint32_t b, uint32_t e);
    void split_main(uint32_t b, uint32_t e);
    uint32_t match_main(uint32_t i, uint32_t e) const;
    uint32_t run_end(uint32_t i, uint32_t e, uint16_t mask) const {
        while (i < e && (flags_[i] & mask)) ++i;
        return i;
    }
    void emit(uint32_t end_char) { ends_->push_back(offsets_[end_char]); }

    std::vector<uint16_t> flags_;    // per character
    std::vector<uint32_t> offsets_;  // byte offset of each character, plus the end
    std::vector<uint32_t>* ends_ = nullptr;
};

// Scratch for BPE on one piece (reused across pieces and calls).
struct BpeScratch {
    std::vector<TokenId> syms;
    std::vector<uint32_t> ranks;
    std::vector<uint32_t> next, prev;
    struct Candidate {
        uint32_t rank, pos;
        TokenId left, right;
        bool operator>(const Candidate& o) const {
            return rank != o.rank ? rank > o.rank : pos > o.pos;
        }
    };
    std::vector<Candidate> heap;
};

// Per-thread cache of BPE results by piece: most pieces of real text (words, indents,
// punctuation) repeat, and a hash lookup is cheaper than redoing their merges.
class WordCache {
public:
    static constexpr size_t kMaxPieceBytes = 64;  // longer pieces are rare and unique
    static constexpr size_t kMaxEntries = size_t{1} << 16;

    // Binds the cache to one tokenizer (by serial), dropping entries of another.
    void bind(uint64_t serial) {
        if (serial_ != serial) clear(), serial_ = serial;
    }
    // Appends the cached ids of `piece` to out; false when absent.
    bool lookup(std::string_view piece, std::vector<TokenId>& out) const {
        const auto it = map_.find(piece);
        if (it == map_.end()) return false;
        out.insert(out.end(), ids_.begin() + it->second.first,
                   ids_.begin() + it->second.first + it->second.second);
        return true;
    }
    void insert(std::string_view piece, std::span<const TokenId> ids) {
        if (map_.size() >= kMaxEntries) clear();
        map_.emplace(std::string(piece), std::pair{static_cast<uint32_t>(ids_.size()),
                                                   static_cast<uint32_t>(ids.size())});
        ids_.insert(ids_.end(), ids.begin(), ids.end());
    }

private:
    void clear() {
        map_.clear();
        ids_.clear();
    }
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    uint64_t serial_ = 0;
    std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, Hash, std::equal_to<>> map_;
    std::vector<TokenId> ids_;  // (offset, count) in map_ index this
};

}  // namespace ds4::text

namespace ds4 {

struct Tokenizer::Impl {
    std::string source;  // file or origin, for messages
    // Stored token strings, concatenated; token i is pool[offsets[i], offsets[i+1]).
    std::string text_pool;
    std::vector<uint32_t> text_offsets;
    std::unordered_map<std::string_view, TokenId> by_text;  // views into text_pool
    // Decoded bytes of each token (§1.7), concatenated the same way.
    std::string byte_pool;
    std::vector<uint32_t> byte_offsets;
    std::array<TokenId, 256> byte_token{};  // the single-byte token of each byte
    text::MergeTable merges;
    size_t n_merges = 0;
    SpecialTokens specials;
    std::vector<TokenId> chat_specials;  // tried in this order by encode_chat
    // Bit (b0 << 8 | b1) is set when some chat special starts with bytes b0 b1: a cheap
    // filter in front of the string comparisons ('<' is common in code).
    std::vector<bool> special_prefix2 = std::vector<bool>(1 << 16);
    uint64_t serial = 0;  // unique per loaded tokenizer: keys the per-thread word caches

    std::string_view text_of(TokenId id) const {
        return std::string_view(text_pool).substr(text_offsets[id],
                                                  text_offsets[id + 1] - text_offsets[id]);
    }
    std::string_view bytes_of(TokenId id) const {
        return std::string_view(byte_pool).substr(byte_offsets[id],
                                                  byte_offsets[id + 1] - byte_offsets[id]);
    }
    size_t size() const { return text_offsets.size() - 1; }

    // BPE of one pre-tokenized piece, appended to out (interface.md §1.5).
    void bpe(std::string_view piece, text::BpeScratch& s, std::vector<TokenId>& out) const;
};

}  // namespace ds4
