#include "server/tool_memory.h"

#include <algorithm>
#include <set>

#include "ds4/error.h"
#include "text/unicode.h"

namespace ds4::server {

ToolMemory::ToolMemory(ToolMemoryLimits limits) : limits_(limits) {}

std::shared_ptr<const std::string> ToolMemory::intern_locked(std::string_view block) {
    auto it = blocks_.find(std::string(block));
    if (it != blocks_.end())
        if (auto shared = it->second.lock()) return shared;
    auto shared = std::make_shared<const std::string>(block);
    blocks_[*shared] = shared;
    return shared;
}

void ToolMemory::erase_locked(std::unordered_map<std::string, Entry>::iterator it) {
    bytes_ -= it->first.size() + it->second.block->size();
    const std::string content = it->second.block.use_count() == 1 ? *it->second.block : std::string();
    lru_.erase(it->second.lru);
    ids_.erase(it);
    if (!content.empty()) blocks_.erase(content);  // its last id is gone
}

void ToolMemory::put_locked(const std::string& id, std::shared_ptr<const std::string> block) {
    if (id.empty() || id.size() > kvstore::kMaxToolIdBytes || block->empty()) return;
    if (auto it = ids_.find(id); it != ids_.end()) erase_locked(it);
    lru_.push_front(id);
    bytes_ += id.size() + block->size();
    ids_.emplace(id, Entry{std::move(block), lru_.begin()});
    // Least recently used first; the entry just added always stays.
    while (ids_.size() > 1 && (ids_.size() > limits_.max_ids || bytes_ > limits_.max_bytes))
        erase_locked(ids_.find(lru_.back()));
}

void ToolMemory::remember(std::span<const std::string> ids, std::string_view block) {
    if (block.empty() || ids.empty()) return;
    std::lock_guard lock(mu_);
    const auto shared = intern_locked(block);
    for (const std::string& id : ids) put_locked(id, shared);
}

void ToolMemory::import(std::span<const kvstore::ToolIdEntry> entries) {
    std::lock_guard lock(mu_);
    for (const kvstore::ToolIdEntry& e : entries)
        if (!e.dsml.empty()) put_locked(e.id, intern_locked(e.dsml));
}

std::optional<std::string> ToolMemory::block_for(std::span<const std::string> ids) {
    if (ids.empty()) return std::nullopt;
    std::lock_guard lock(mu_);
    const auto first = ids_.find(ids[0]);
    if (first == ids_.end()) return std::nullopt;
    const std::string& block = *first->second.block;
    for (const std::string& id : ids) {
        auto it = ids_.find(id);
        if (it == ids_.end() || *it->second.block != block) return std::nullopt;
    }
    for (const std::string& id : ids) lru_.splice(lru_.begin(), lru_, ids_.at(id).lru);
    return block;
}

bool ToolMemory::knows(std::string_view id) const {
    std::lock_guard lock(mu_);
    return ids_.count(std::string(id)) != 0;
}

std::size_t ToolMemory::size() const {
    std::lock_guard lock(mu_);
    return ids_.size();
}

uint64_t ToolMemory::bytes() const {
    std::lock_guard lock(mu_);
    return bytes_;
}

std::vector<kvstore::ToolIdEntry> ToolMemory::entries_for_text(std::string_view text) const {
    std::vector<kvstore::ToolIdEntry> out;
    const std::vector<std::string_view> found = kvstore::find_dsml_tool_blocks(text);
    if (found.empty()) return out;
    std::lock_guard lock(mu_);
    std::set<std::string_view> seen;
    for (std::string_view b : found) {
        if (!seen.insert(b).second || !blocks_.count(std::string(b))) continue;
        // Most recent first, so a truncated reader keeps the fresh ones.
        for (const std::string& id : lru_) {
            const Entry& e = ids_.at(id);
            if (*e.block == b) out.push_back({id, *e.block});
        }
    }
    return out;
}

void ToolMemory::set_disk_lookup(DiskLookup lookup) {
    std::lock_guard lock(mu_);
    disk_lookup_ = std::move(lookup);
}

std::vector<std::string> ToolMemory::import_missing(std::span<const std::string> ids) {
    std::set<std::string, std::less<>> missing;
    DiskLookup lookup;
    {
        std::lock_guard lock(mu_);
        if (!disk_lookup_) return {};
        lookup = disk_lookup_;
        for (const std::string& id : ids)
            if (!id.empty() && !ids_.count(id)) missing.insert(id);
    }
    if (missing.empty()) return {};
    std::vector<kvstore::ToolIdEntry> found = lookup([&](std::string_view id) { return missing.count(id) != 0; });
    import(found);
    std::vector<std::string> out;
    for (const auto& e : found) out.push_back(e.id);
    return out;
}

// ---- rendering ----

namespace {

constexpr std::string_view kOpen = "\n\n<｜DSML｜tool_calls>";
constexpr std::string_view kClose = "</｜DSML｜tool_calls>";

// U+100000 + i (plane 16 private use).
std::string splice_marker(std::size_t i) {
    std::string s;
    text::unicode::append_utf8(s, 0x100000u + static_cast<uint32_t>(i));
    return s;
}

}  // namespace

std::vector<ReplaySplice> mark_replayed_calls(std::vector<Message>& messages, ToolMemory& memory,
                                              ToolReplayStats* stats) {
    std::vector<std::string> all;
    for (const Message& m : messages)
        if (m.role == Role::assistant)
            for (const ToolCall& c : m.tool_calls) all.push_back(c.id);
    std::vector<ReplaySplice> out;
    if (all.empty()) return out;
    const std::vector<std::string> from_disk = memory.import_missing(all);
    for (Message& m : messages) {
        if (m.role != Role::assistant || m.tool_calls.empty()) continue;
        std::vector<std::string> ids;
        bool any_from_disk = false;
        for (const ToolCall& c : m.tool_calls) {
            ids.push_back(c.id);
            if (!memory.knows(c.id) && stats) ++stats->missing_ids;
            any_from_disk = any_from_disk || std::find(from_disk.begin(), from_disk.end(), c.id) != from_disk.end();
        }
        std::optional<std::string> block = memory.block_for(ids);
        if (!block || block->find(kClose) == std::string::npos) {
            if (stats) ++stats->canonical;
            continue;
        }
        if (stats) ++(any_from_disk ? stats->disk : stats->memory);
        ReplaySplice s{splice_marker(out.size()), std::move(*block)};
        m.tool_calls[0].name = s.marker + m.tool_calls[0].name;
        out.push_back(std::move(s));
    }
    return out;
}

void splice_replayed_blocks(std::string& rendered, std::span<const ReplaySplice> splices) {
    for (const ReplaySplice& s : splices) {
        const std::size_t at = rendered.find(s.marker);
        const std::size_t open = at == std::string::npos ? at : rendered.rfind(kOpen, at);
        const std::size_t close = at == std::string::npos ? at : rendered.find(kClose, at);
        if (open == std::string::npos || close == std::string::npos)
            fail("exact tool replay: the rendered prompt has no tool block around a remembered call");
        rendered.replace(open, close + kClose.size() - open, s.block);
    }
}

std::string sampled_tool_block(std::string_view raw) {
    const std::size_t think = raw.rfind("</think>");
    if (think != std::string_view::npos) raw.remove_prefix(think + 8);
    const std::vector<std::string_view> blocks = kvstore::find_dsml_tool_blocks(raw);
    return blocks.empty() ? std::string() : std::string(blocks.back());
}

}  // namespace ds4::server
