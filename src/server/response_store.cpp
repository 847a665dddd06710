#include "server/response_store.h"

namespace ds4::server {

ResponseStore::ResponseStore(ResponseStoreLimits limits) : limits_(limits) {}

void ResponseStore::put(const std::string& id, Json items) {
    const uint64_t bytes = items.dump(-1, ' ', false, Json::error_handler_t::replace).size() + id.size();
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(id); it != entries_.end()) {
        bytes_ -= it->second.bytes;
        lru_.erase(it->second.lru);
        entries_.erase(it);
    }
    lru_.push_front(id);
    entries_.emplace(id, Entry{std::move(items), bytes, lru_.begin()});
    bytes_ += bytes;
    // Oldest first; the response just stored always stays.
    while (entries_.size() > 1 && (entries_.size() > limits_.max_responses || bytes_ > limits_.max_bytes)) {
        auto victim = entries_.find(lru_.back());
        bytes_ -= victim->second.bytes;
        entries_.erase(victim);
        lru_.pop_back();
    }
}

std::optional<ResponseStore::Json> ResponseStore::get(const std::string& id) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return std::nullopt;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second.items;
}

std::size_t ResponseStore::size() const {
    std::lock_guard lock(mu_);
    return entries_.size();
}

}  // namespace ds4::server
