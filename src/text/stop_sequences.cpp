#include "text/stop_sequences.h"

#include <algorithm>

namespace ds4::text {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
    for (std::string& stop : stops)
        if (!stop.empty()) stops_.push_back(std::move(stop));
}

std::string_view StopMatcher::matched() const {
    return matched_ < 0 ? std::string_view{} : stops_[static_cast<std::size_t>(matched_)];
}

// Length of the longest proper suffix of `text` that is a prefix of some stop string.
std::size_t StopMatcher::holdback(std::string_view text) const {
    std::size_t longest = 0;
    for (const std::string& stop : stops_) {
        const std::size_t limit = std::min(text.size(), stop.size() - 1);
        for (std::size_t len = limit; len > longest; --len) {
            if (text.substr(text.size() - len) == std::string_view(stop).substr(0, len)) {
                longest = len;
                break;
            }
        }
    }
    return longest;
}

bool StopMatcher::feed(std::string_view bytes, std::string& emit) {
    if (stopped()) return true;
    held_ += bytes;
    // Earliest match start wins; on a tie the stop listed first. A match lying wholly
    // inside the held tail would have been found by an earlier call.
    std::size_t first = std::string::npos;
    for (std::size_t i = 0; i < stops_.size(); ++i) {
        const std::size_t at = held_.find(stops_[i]);
        if (at < first) {
            first = at;
            matched_ = static_cast<long>(i);
        }
    }
    if (first != std::string::npos) {
        emit.append(held_, 0, first);
        emitted_ += first;
        held_.clear();
        return true;
    }
    const std::size_t keep = holdback(held_);
    const std::size_t release = held_.size() - keep;
    emit.append(held_, 0, release);
    emitted_ += release;
    held_.erase(0, release);
    return false;
}

void StopMatcher::finish(std::string& emit) {
    if (stopped()) return;
    emit += held_;
    emitted_ += held_.size();
    held_.clear();
}

}  // namespace ds4::text
