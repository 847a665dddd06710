// Helpers for disk-cache tests: a fresh temp directory, payloads and log capture.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "kvstore/disk_cache.h"

namespace ds4::kvstore::test {

class TempDir {
  public:
    explicit TempDir(const std::string& tag) {
        path_ = std::filesystem::temp_directory_path() /
                ("ds4-kvstore-" + tag + "-" + std::to_string(::getpid()));
        std::filesystem::remove_all(path_);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
};

inline std::vector<uint8_t> payload_of(size_t n, uint8_t seed) {
    std::vector<uint8_t> p(n);
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(seed + i * 31);
    return p;
}

inline StoreRequest request(std::string_view text, const std::vector<uint8_t>& payload,
                            uint32_t tokens) {
    StoreRequest r;
    r.text = text;
    r.payload = payload;
    r.tokens = tokens;
    r.ctx = 100000;
    r.quant_bits = 2;
    r.reason = SaveReason::Cold;
    return r;
}

}  // namespace ds4::kvstore::test
