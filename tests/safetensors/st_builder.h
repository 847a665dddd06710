// Builds safetensors byte images in memory for the reader tests.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ds4::test {

// u64 little-endian header length, the header text verbatim, then `data`.
inline std::vector<uint8_t> safetensors_bytes(std::string_view header,
                                              const std::vector<uint8_t>& data = {}) {
    std::vector<uint8_t> out(8 + header.size() + data.size());
    const uint64_t n = header.size();
    std::memcpy(out.data(), &n, 8);  // the tests run on little-endian hosts only
    std::memcpy(out.data() + 8, header.data(), header.size());
    if (!data.empty()) std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
    return out;
}

// Little-endian bytes of a value (data sections of test files).
template <typename T>
void append(std::vector<uint8_t>& out, T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out.insert(out.end(), b, b + sizeof(T));
}

struct TestTensor {
    std::string name;
    std::string dtype;  // as spelled in the header
    std::vector<uint64_t> shape;
    std::vector<uint8_t> bytes;
};

// A well-formed file holding `tensors` back to back in the given order.
inline std::vector<uint8_t> build_safetensors(const std::vector<TestTensor>& tensors) {
    nlohmann::json header = nlohmann::json::object();
    std::vector<uint8_t> data;
    for (const TestTensor& t : tensors) {
        header[t.name] = {{"dtype", t.dtype},
                          {"shape", t.shape},
                          {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
        data.insert(data.end(), t.bytes.begin(), t.bytes.end());
    }
    return safetensors_bytes(header.dump(), data);
}

inline std::string golden_path(std::string_view file) {
    return std::string(DS4_TEST_DATA_DIR) + "/golden/" + std::string(file);
}

}  // namespace ds4::test
