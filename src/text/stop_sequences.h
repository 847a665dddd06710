// Stop sequences over the decoded text stream (interface.md §4.5).
//
// Tokens do not respect stop-string boundaries: "END" may arrive as "E" + "ND". The
// matcher therefore holds back the longest tail of the text that could still begin a
// stop string (never more), releases it as soon as it cannot, and cuts the output at the
// start of the first complete match. Which text it watches is the caller's choice; the
// server should feed visible answer text only, not reasoning (§8 item 7).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::text {

class StopMatcher {
public:
    // Empty strings are dropped (they would match everywhere).
    explicit StopMatcher(std::vector<std::string> stops = {});

    // Consumes decoded bytes and appends to `emit` the text that is now safe to show.
    // Returns true once a stop string matched: `emit` then ends right before the match,
    // and every later call emits nothing.
    bool feed(std::string_view bytes, std::string& emit);
    // End of generation without a match: releases the held-back tail.
    void finish(std::string& emit);

    bool stopped() const { return matched_ >= 0; }
    // The stop string that matched (Anthropic reports it as stop_sequence).
    std::string_view matched() const;
    std::size_t held_bytes() const { return held_.size(); }
    // Bytes released so far: the length of the visible text.
    std::size_t emitted_bytes() const { return emitted_; }
    bool empty() const { return stops_.empty(); }

private:
    std::size_t holdback(std::string_view text) const;

    std::vector<std::string> stops_;
    std::string held_;
    std::size_t emitted_ = 0;
    long matched_ = -1;
};

}  // namespace ds4::text
