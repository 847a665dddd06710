// Exact replay memory: tool-call id -> the DSML bytes the model actually sampled
// (interface.md §3.9).
//
// Clients send earlier tool calls back as JSON. Re-rendering that JSON rarely gives the
// bytes the model sampled (key order, spacing, escapes), and any difference breaks the KV
// prefix match, forcing a re-prefill of everything after it. So after a turn with tool
// calls the server remembers, for every call id, the raw block of that turn; when the
// history comes back it splices the remembered bytes in instead of rendering.
//
// Bounded LRU: at most max_ids ids and max_bytes accounted bytes. A block is stored once
// however many ids share it (all calls of one turn do) and freed with its last id.
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

namespace ds4::text {

class ToolReplayMemory {
public:
    // The bounds of ds4's server (--tool-memory-max-ids, 512 MiB).
    static constexpr std::size_t kDefaultMaxIds = 100000;
    static constexpr std::size_t kDefaultMaxBytes = std::size_t{512} << 20;
    // Bookkeeping charged per id on top of its bytes (list node, hash node, pointers), so
    // a flood of tiny ids is bounded by max_bytes too.
    static constexpr std::size_t kBytesPerId = 96;

    explicit ToolReplayMemory(std::size_t max_ids = kDefaultMaxIds,
                              std::size_t max_bytes = kDefaultMaxBytes);

    // Remembers `block` for every id (one assistant turn). Ids already known are
    // re-pointed. A block that alone exceeds the byte bound is not stored. Empty ids and
    // an empty block are ignored.
    void remember(std::span<const std::string> ids, std::string_view block);

    // The block shared by all `ids`, iff every id is known and they all map to the same
    // block (otherwise the caller renders canonically). Touches the ids (most recently
    // used). The pointer stays valid after eviction.
    std::shared_ptr<const std::string> lookup(std::span<const std::string> ids);

    // The block of one id, without touching it.
    std::shared_ptr<const std::string> peek(std::string_view id) const;

    std::size_t id_count() const { return entries_.size(); }
    std::size_t block_count() const { return blocks_.size(); }
    std::size_t accounted_bytes() const { return bytes_; }
    std::size_t max_ids() const { return max_ids_; }
    std::size_t max_bytes() const { return max_bytes_; }

private:
    struct Entry {
        std::string id;
        std::shared_ptr<const std::string> block;
    };
    using Lru = std::list<Entry>;  // front = most recently used

    void erase(Lru::iterator it);
    void release_block(const std::shared_ptr<const std::string>& block);
    std::shared_ptr<const std::string> intern(std::string_view block);
    void evict_to_bounds();

    std::size_t max_ids_;
    std::size_t max_bytes_;
    std::size_t bytes_ = 0;
    Lru lru_;
    std::unordered_map<std::string_view, Lru::iterator> entries_;  // keys view Entry::id
    // Deduplication by content: block text -> (shared block, number of ids using it).
    struct Block {
        std::shared_ptr<const std::string> text;
        std::size_t refs = 0;
    };
    std::unordered_map<std::string_view, Block> blocks_;  // keys view *Block::text
};

}  // namespace ds4::text
