// Read-only memory mapping of a whole file (RAII).
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace ds4 {

class MappedFile {
public:
    // Throws ds4::Error "PATH: cannot open: <strerror>" etc.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::string& path() const { return path_; }
    std::span<const uint8_t> bytes() const { return {data_, size_}; }
    const uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }

private:
    std::string path_;
    const uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
};

}  // namespace ds4
