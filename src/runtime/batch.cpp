// Batch and Logits: plain containers of the engine API.
#include <algorithm>

#include "ds4/engine.h"
#include "ds4/error.h"
#include "ds4/sampler.h"

namespace ds4 {

void Batch::add(SequenceId seq, std::span<const int32_t> tokens, std::span<const uint32_t> logits_at) {
    entries_.push_back(Slot{seq, tokens_.size(), tokens.size(), logits_at_.size(), logits_at.size()});
    tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
    logits_at_.insert(logits_at_.end(), logits_at.begin(), logits_at.end());
}

void Batch::add(SequenceId seq, std::span<const int32_t> tokens, LogitsWanted want) {
    const uint32_t last = tokens.empty() ? 0 : static_cast<uint32_t>(tokens.size() - 1);
    add(seq, tokens, want == LogitsWanted::Last ? std::span<const uint32_t>(&last, 1) : std::span<const uint32_t>());
}

void Batch::add_token(SequenceId seq, int32_t token) { add(seq, std::span<const int32_t>(&token, 1), LogitsWanted::Last); }

void Batch::clear() {
    entries_.clear();
    tokens_.clear();
    logits_at_.clear();
}

Batch::Entry Batch::operator[](size_t i) const {
    const Slot& s = entries_.at(i);
    return Entry{s.seq, std::span<const int32_t>(tokens_).subspan(s.token_begin, s.token_count),
                 std::span<const uint32_t>(logits_at_).subspan(s.logit_begin, s.logit_count)};
}

std::span<const float> Logits::row(size_t i) const {
    if (i >= info_.size()) fail("logits: row ", i, " out of range (", info_.size(), " rows)");
    return std::span<const float>(values_).subspan(i * vocab_, vocab_);
}

int32_t Logits::argmax(size_t i) const { return std::max(ds4::argmax(row(i)), 0); }

}  // namespace ds4
