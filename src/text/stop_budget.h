// Max tokens and EOS (interface.md §4.6, §4.7): when generation ends, before stop strings
// and tool blocks are considered.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace ds4::text {

// The token budget of one generation. `requested` < 0 means "not given" and takes
// `default_max`. The prompt must leave room: the budget is clamped to
// ctx - prompt_len - reserve (server: reserve 0; CLI: reserve 1, as ds4's CLI does).
inline std::size_t max_new_tokens(std::int64_t requested, std::size_t default_max,
                                  std::size_t ctx, std::size_t prompt_len,
                                  std::size_t reserve = 0) {
    const std::size_t wanted = requested < 0 ? default_max : static_cast<std::size_t>(requested);
    const std::size_t room = ctx > prompt_len + reserve ? ctx - prompt_len - reserve : 0;
    return std::min(wanted, room);
}

// Counts sampled tokens and says when generation ends.
class TokenBudget {
public:
    enum class Verdict {
        keep,    // emit the token and continue
        eos,     // EOS: finish "stop"; the token is neither emitted nor evaluated
        length,  // emit this token, then finish "length"
    };

    TokenBudget(std::size_t max_tokens, std::int32_t eos_id) : max_(max_tokens), eos_(eos_id) {}

    // max_tokens = 0: nothing may be sampled; finish "length" with empty output.
    bool exhausted() const { return generated_ >= max_; }
    Verdict on_token(std::int32_t id) {
        if (id == eos_) return Verdict::eos;
        ++generated_;
        return generated_ >= max_ ? Verdict::length : Verdict::keep;
    }
    std::size_t generated() const { return generated_; }
    std::size_t max_tokens() const { return max_; }

private:
    std::size_t max_;
    std::int32_t eos_;
    std::size_t generated_ = 0;
};

}  // namespace ds4::text
