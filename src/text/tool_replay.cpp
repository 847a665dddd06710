#include "text/tool_replay.h"

namespace ds4::text {

ToolReplayMemory::ToolReplayMemory(std::size_t max_ids, std::size_t max_bytes)
    : max_ids_(max_ids), max_bytes_(max_bytes) {}

std::shared_ptr<const std::string> ToolReplayMemory::intern(std::string_view block) {
    if (auto it = blocks_.find(block); it != blocks_.end()) {
        ++it->second.refs;
        return it->second.text;
    }
    auto text = std::make_shared<const std::string>(block);
    blocks_.emplace(std::string_view(*text), Block{text, 1});
    bytes_ += text->size();
    return text;
}

void ToolReplayMemory::release_block(const std::shared_ptr<const std::string>& block) {
    auto it = blocks_.find(std::string_view(*block));
    if (it == blocks_.end() || --it->second.refs > 0) return;
    bytes_ -= block->size();
    blocks_.erase(it);
}

void ToolReplayMemory::erase(Lru::iterator it) {
    entries_.erase(std::string_view(it->id));
    bytes_ -= it->id.size() + kBytesPerId;
    release_block(it->block);
    lru_.erase(it);
}

void ToolReplayMemory::evict_to_bounds() {
    while (!lru_.empty() && (lru_.size() > max_ids_ || bytes_ > max_bytes_))
        erase(std::prev(lru_.end()));
}

void ToolReplayMemory::remember(std::span<const std::string> ids, std::string_view block) {
    if (block.empty() || max_ids_ == 0) return;
    std::size_t cost = block.size();
    for (const std::string& id : ids) cost += id.size() + kBytesPerId;
    // Storing it would evict everything, itself included.
    if (cost > max_bytes_) return;
    for (const std::string& id : ids) {
        if (id.empty()) continue;
        if (auto it = entries_.find(id); it != entries_.end()) erase(it->second);
        auto shared = intern(block);
        lru_.push_front(Entry{id, std::move(shared)});
        entries_.emplace(std::string_view(lru_.front().id), lru_.begin());
        bytes_ += id.size() + kBytesPerId;
    }
    evict_to_bounds();
}

std::shared_ptr<const std::string> ToolReplayMemory::lookup(std::span<const std::string> ids) {
    if (ids.empty()) return nullptr;
    std::shared_ptr<const std::string> block;
    for (const std::string& id : ids) {
        auto it = entries_.find(id);
        if (it == entries_.end()) return nullptr;
        if (block && it->second->block != block) return nullptr;
        block = it->second->block;
    }
    for (const std::string& id : ids) {
        auto it = entries_.find(id)->second;
        lru_.splice(lru_.begin(), lru_, it);
    }
    return block;
}

std::shared_ptr<const std::string> ToolReplayMemory::peek(std::string_view id) const {
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : it->second->block;
}

}  // namespace ds4::text
