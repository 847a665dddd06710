// ds4 error type: one exception class carrying a message that names what was wrong
// and where (file, key, tensor, byte offset). Thrown at module boundaries.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ds4 {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Concatenates its arguments with operator<< (g++ 12 has no <format>).
template <typename... Args>
std::string cat(Args&&... args) {
    std::ostringstream os;
    (os << ... << std::forward<Args>(args));
    return os.str();
}

template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
    throw Error(cat(std::forward<Args>(args)...));
}

}  // namespace ds4
