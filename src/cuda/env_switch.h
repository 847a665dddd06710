// The CUDA backend's environment switches (README, "Switches of the CUDA backend"), read
// where the code each one selects lives, with one meaning for all of them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace ds4::cuda {

// A switch that is on by default: off only when $name is exactly "0".
inline bool env_switch_on(const char* name) {
    const char* v = std::getenv(name);
    return v == nullptr || std::string_view(v) != "0";
}

// A switch with a value: true only when $name is exactly `value`.
inline bool env_is(const char* name, std::string_view value) {
    const char* v = std::getenv(name);
    return v != nullptr && std::string_view(v) == value;
}

// A token threshold that may only be raised: $name in decimal when that is at least
// `floor` (capped at 2^30, past any pass), else `floor`.
inline uint32_t env_min_tokens(const char* name, uint32_t floor) {
    const char* v = std::getenv(name);
    const unsigned long m = v != nullptr ? std::strtoul(v, nullptr, 10) : 0;
    return m >= floor ? static_cast<uint32_t>(std::min(m, 1ul << 30)) : floor;
}

// A tuning value: $name in decimal, 0 when unset or not a number (the caller's default).
inline uint32_t env_u32(const char* name) {
    const char* v = std::getenv(name);
    const unsigned long m = v != nullptr ? std::strtoul(v, nullptr, 10) : 0;
    return static_cast<uint32_t>(std::min(m, 0xfffffffful));
}

// The same, `fallback` when unset, 0 or not a number.
inline uint32_t env_u32_or(const char* name, uint32_t fallback) {
    const uint32_t v = env_u32(name);
    return v != 0 ? v : fallback;
}

}  // namespace ds4::cuda
