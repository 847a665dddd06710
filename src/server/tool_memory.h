// Exact replay memory (interface.md §3.9): tool-call id -> the DSML block the model sampled.
//
// Clients send earlier tool calls back as JSON, and the canonical rendering of that JSON
// rarely equals the bytes the model sampled (key order, spacing, escapes). When every call
// id of an assistant message maps to one remembered block, the prompt carries that block
// instead of the canonical one, so the rendered text stays a byte prefix of what the live
// session and the disk checkpoints hold (disk lookup is by rendered text). The memory is
// also persisted: disk checkpoints carry the (id, block) pairs whose block occurs in their
// text (the KVC "KTM" section, formats.md §6.5), and entries come back on a disk hit or
// when a request names ids this process has never seen (after a restart).
//
// Thread-safe: remembered on the HTTP threads when a reply is built, read while rendering
// requests, and fed by the inference worker's disk loads.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ds4/chat.h"
#include "kvstore/kvc_format.h"

namespace ds4::server {

struct ToolMemoryLimits {
    std::size_t max_ids = 100000;         // --tool-memory-max-ids
    uint64_t max_bytes = uint64_t{512} << 20;  // accounted bytes (ids + blocks)
};

// Per-request replay statistics (trace line `tool_memory`).
struct ToolReplayStats {
    int memory = 0;     // assistant messages rendered from a block known in RAM
    int disk = 0;       // ... from a block imported from the disk cache for this request
    int canonical = 0;  // messages with calls rendered canonically
    int missing_ids = 0;  // call ids with no remembered block
};

class ToolMemory {
public:
    // Reads the KTM entries whose id `wanted` accepts from the disk cache.
    using DiskLookup =
        std::function<std::vector<kvstore::ToolIdEntry>(const std::function<bool(std::string_view)>& wanted)>;

    explicit ToolMemory(ToolMemoryLimits limits = {});

    // All `ids` (one turn's calls) share `block`; blocks are stored once per content.
    void remember(std::span<const std::string> ids, std::string_view block);
    void import(std::span<const kvstore::ToolIdEntry> entries);
    // The block all `ids` map to (touching them), or nullopt when one is unknown or they
    // map to different blocks.
    std::optional<std::string> block_for(std::span<const std::string> ids);
    bool knows(std::string_view id) const;
    std::size_t size() const;
    uint64_t bytes() const;

    // KTM entries for a checkpoint whose cache text is `text`: every id whose block occurs
    // in it (DSML blocks found by kvstore::find_dsml_tool_blocks, matched by exact bytes).
    std::vector<kvstore::ToolIdEntry> entries_for_text(std::string_view text) const;

    void set_disk_lookup(DiskLookup lookup);
    // Imports from disk the entries of those ids that are not in RAM (no-op without a
    // disk lookup). Returns the ids imported.
    std::vector<std::string> import_missing(std::span<const std::string> ids);

private:
    struct Entry {
        std::shared_ptr<const std::string> block;
        std::list<std::string>::iterator lru;
    };
    void put_locked(const std::string& id, std::shared_ptr<const std::string> block);
    std::shared_ptr<const std::string> intern_locked(std::string_view block);
    void erase_locked(std::unordered_map<std::string, Entry>::iterator it);

    ToolMemoryLimits limits_;
    mutable std::mutex mu_;
    std::list<std::string> lru_;  // most recent first
    std::unordered_map<std::string, Entry> ids_;
    std::unordered_map<std::string, std::weak_ptr<const std::string>> blocks_;  // dedup by content
    uint64_t bytes_ = 0;
    DiskLookup disk_lookup_;
};

// Rendering with remembered blocks. Before encode_chat: for each assistant message whose
// calls all map to one remembered block, prefix its first call's name with a private
// marker; after encode_chat: replace the canonical block around each marker
// ("\n\n<｜DSML｜tool_calls>" … "</｜DSML｜tool_calls>") with the remembered bytes. Markers
// are plane-16 private-use code points, never produced by the template or left in client
// strings (PromptEncoder's own markers are plane 15).
struct ReplaySplice {
    std::string marker, block;
};
std::vector<ReplaySplice> mark_replayed_calls(std::vector<Message>& messages, ToolMemory& memory,
                                              ToolReplayStats* stats);
// Throws ds4::Error if a marker is not inside a rendered tool block (a renderer change).
void splice_replayed_blocks(std::string& rendered, std::span<const ReplaySplice> splices);

// The DSML tool block an assistant turn sampled: the last block of `raw` (the generated
// text, reasoning included) after its last "</think>", or "" when there is none.
std::string sampled_tool_block(std::string_view raw);

}  // namespace ds4::server
