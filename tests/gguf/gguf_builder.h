// Test helpers: a raw little-endian byte builder and a GGUF assembler that can emit
// malformed files (wrong counts, bad offsets, nested arrays) the Writer refuses to make.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.h"

namespace ds4::gguf::testing {

// Appends little-endian values (the host is little-endian, as the format assumes).
class Bytes {
public:
    template <typename T>
    Bytes& put(T v) {
        return append(&v, sizeof(T));
    }
    Bytes& u32(uint32_t v) { return put(v); }
    Bytes& u64(uint64_t v) { return put(v); }
    Bytes& str(std::string_view s);
    Bytes& raw(const std::vector<uint8_t>& b) { return append(b.data(), b.size()); }
    Bytes& zeros(size_t n);
    // Out of line on purpose: g++ 12 -O2 reports a false -Wstringop-overflow when a
    // vector insert into a fresh vector is inlined into a test body.
    Bytes& append(const void* p, size_t n);
    const std::vector<uint8_t>& data() const { return data_; }
    size_t size() const { return data_.size(); }

private:
    std::vector<uint8_t> data_;
};

struct RawTensor {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    uint64_t offset;
};

// Assembles header + kv records + tensor infos + padding + data region, with every
// field under the test's control.
struct RawGguf {
    uint32_t magic = kMagic;
    uint32_t version = kVersion;
    std::optional<uint64_t> tensor_count;  // overrides the real count when set
    std::optional<uint64_t> kv_count;
    uint32_t alignment = kDefaultAlignment;  // used for the padding only
    std::vector<std::vector<uint8_t>> kvs;   // encoded records (key + type + value)
    std::vector<RawTensor> tensors;
    std::vector<uint8_t> data;  // data region contents

    // Encoded records.
    RawGguf& kv(std::string_view key, ValueType type, const Bytes& value);
    template <typename T>
    RawGguf& kv_scalar(std::string_view key, ValueType type, T v) {
        return kv(key, type, Bytes().put(v));
    }
    RawGguf& tensor(std::string name, std::vector<uint64_t> dims, GgmlType type, uint64_t offset) {
        tensors.push_back({std::move(name), std::move(dims), static_cast<uint32_t>(type), offset});
        return *this;
    }

    size_t infos_end() const;  // byte offset just after the last tensor info
    std::vector<uint8_t> build() const;
};

// A deterministic valid file with several kvs of many types and several tensors, and
// the bytes each tensor holds.
struct SampleFile {
    std::vector<uint8_t> bytes;
    size_t infos_end;
    std::vector<std::vector<uint8_t>> tensor_bytes;
};
SampleFile make_sample_file();

// Bytes of a value-array of the given nesting depth (1 = a plain array of u32).
Bytes nested_array(int depth);

// Calls the accessors on a parsed file (the typed getter of every key, the mixed-type
// helpers, every tensor's data touching each byte); ds4::Error from a mismatch is swallowed.
// Returns a checksum so the work cannot be optimised away.
uint64_t exercise_all(const File& f);

std::string temp_path(std::string_view stem);  // unique file name under the build dir
std::vector<uint8_t> read_file_bytes(const std::string& path);
void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace ds4::gguf::testing
