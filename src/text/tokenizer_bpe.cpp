// Byte-level BPE on one pre-tokenized piece (interface.md §1.5): start from the piece's
// bytes as single-byte tokens, then repeatedly merge the adjacent pair with the lowest
// merge rank (ties: the leftmost pair) until no adjacent pair has a rank.
//
// Two equivalent implementations: short pieces (nearly all of them) keep an array of
// pair ranks and rescan it, which beats any heap for a handful of symbols; long pieces
// (a run of thousands of spaces or letters) use a priority queue over a linked list so
// they cost O(n log n) instead of O(n^2). The reference JS tokenizer uses the latter;
// both pick the same pair at every step, as the differential test checks.
#include <algorithm>
#include <functional>

#include "text/tokenizer_impl.h"

namespace ds4::text {

void MergeTable::reserve(size_t n_merges) {
    size_t cap = 16;
    while (cap < 2 * n_merges) cap *= 2;  // load factor <= 0.5 keeps probes short
    slots_.assign(cap, Entry{});
    mask_ = cap - 1;
}

bool MergeTable::insert(TokenId left, TokenId right, uint32_t rank, TokenId merged) {
    const uint64_t key = pack(left, right);
    for (uint64_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
        Entry& e = slots_[i];
        if (e.key == key) return false;
        if (e.key == kEmpty) {
            e = Entry{key, rank, merged};
            return true;
        }
    }
}

namespace {

constexpr uint32_t kNoRank = UINT32_MAX;
// Pieces up to this many bytes use the rescanning array version.
constexpr size_t kShortPiece = 48;

uint32_t rank_of(const MergeTable& m, TokenId l, TokenId r) {
    const MergeTable::Entry* e = m.find(l, r);
    return e ? e->rank : kNoRank;
}

// Only called for a pair whose rank was found, so the lookup succeeds.
TokenId merged_of(const MergeTable& m, TokenId l, TokenId r) {
    const MergeTable::Entry* e = m.find(l, r);
    return e ? e->merged : l;
}

void bpe_short(const MergeTable& merges, BpeScratch& s, std::vector<TokenId>& out) {
    std::vector<TokenId>& syms = s.syms;
    std::vector<uint32_t>& ranks = s.ranks;  // ranks[i]: pair (syms[i], syms[i+1])
    size_t n = syms.size();
    ranks.resize(n);
    for (size_t i = 0; i + 1 < n; ++i) ranks[i] = rank_of(merges, syms[i], syms[i + 1]);
    ranks[n - 1] = kNoRank;
    while (n > 1) {
        const auto best = std::min_element(ranks.begin(), ranks.begin() + (n - 1));
        if (*best == kNoRank) break;  // min_element returns the leftmost minimum
        const size_t k = static_cast<size_t>(best - ranks.begin());
        syms[k] = merged_of(merges, syms[k], syms[k + 1]);
        syms.erase(syms.begin() + k + 1);
        ranks.erase(ranks.begin() + k + 1);
        --n;
        if (k + 1 < n) ranks[k] = rank_of(merges, syms[k], syms[k + 1]);
        else ranks[k] = kNoRank;
        if (k > 0) ranks[k - 1] = rank_of(merges, syms[k - 1], syms[k]);
    }
    out.insert(out.end(), syms.begin(), syms.begin() + n);
}

void bpe_long(const MergeTable& merges, BpeScratch& s, std::vector<TokenId>& out) {
    constexpr uint32_t kNone = UINT32_MAX;
    std::vector<TokenId>& syms = s.syms;  // indexed by the position of a symbol's first byte
    const auto n = static_cast<uint32_t>(syms.size());
    s.next.resize(n);
    s.prev.resize(n);
    for (uint32_t i = 0; i < n; ++i) {
        s.next[i] = i + 1 < n ? i + 1 : kNone;
        s.prev[i] = i > 0 ? i - 1 : kNone;
    }
    auto& heap = s.heap;
    heap.clear();
    const auto cmp = std::greater<BpeScratch::Candidate>();
    const auto push = [&](uint32_t pos) {
        const uint32_t nx = s.next[pos];
        if (nx == kNone) return;
        const uint32_t r = rank_of(merges, syms[pos], syms[nx]);
        if (r == kNoRank) return;
        heap.push_back({r, pos, syms[pos], syms[nx]});
        std::push_heap(heap.begin(), heap.end(), cmp);
    };
    for (uint32_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), cmp);
        const BpeScratch::Candidate c = heap.back();
        heap.pop_back();
        // Stale entries (a side merged since) no longer describe the current pair.
        const uint32_t nx = s.next[c.pos];
        if (syms[c.pos] != c.left || nx == kNone || syms[nx] != c.right) continue;
        syms[c.pos] = merged_of(merges, c.left, c.right);
        syms[nx] = -1;  // dead
        s.next[c.pos] = s.next[nx];
        if (s.next[nx] != kNone) s.prev[s.next[nx]] = c.pos;
        if (s.prev[c.pos] != kNone) push(s.prev[c.pos]);
        push(c.pos);
    }
    for (uint32_t i = 0; i != kNone; i = s.next[i]) out.push_back(syms[i]);
}

}  // namespace
}  // namespace ds4::text

namespace ds4 {

void Tokenizer::Impl::bpe(std::string_view piece, text::BpeScratch& s,
                          std::vector<TokenId>& out) const {
    if (piece.size() == 1) {
        out.push_back(byte_token[static_cast<uint8_t>(piece[0])]);
        return;
    }
    s.syms.clear();
    for (char c : piece) s.syms.push_back(byte_token[static_cast<uint8_t>(c)]);
    if (piece.size() <= text::kShortPiece) text::bpe_short(merges, s, out);
    else text::bpe_long(merges, s, out);
}

}  // namespace ds4
