// safetensors reader: u64 header length, JSON header, raw little-endian data
// (dtypes F32/F16/BF16/F8_E4M3/F8_E8M0/I8/U8/I32/I64, plus F64/I16/U16/BOOL).
// Validates the header completely up front (JSON shape, dtype names, shape × dtype
// size == data_offsets span, offsets inside the data region, no overlaps) and never
// reads outside the mapping.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/mapped_file.h"

namespace ds4::st {

enum class DType { F64, F32, F16, BF16, F8_E4M3, F8_E8M0, I64, I32, I16, I8, U8, U16, BOOL };

std::string_view dtype_name(DType d);
size_t dtype_size(DType d);

struct Tensor {
    std::string name;
    DType dtype;
    std::vector<uint64_t> shape;  // row-major, outermost first (as in the JSON)
    uint64_t n_elements;
    std::span<const uint8_t> data;  // points into the mapping
};

class File {
public:
    static File open(const std::string& path);
    static File parse(std::span<const uint8_t> bytes, std::string name);

    const std::string& path() const { return name_; }
    const std::vector<Tensor>& tensors() const { return tensors_; }
    const Tensor* find(std::string_view name) const;
    const Tensor& require(std::string_view name) const;  // "FILE: tensor NAME is missing"
    // "__metadata__" string map (empty if absent).
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    // Decodes a tensor to f32 (F32/F16/BF16/F8_E4M3/F8_E8M0/F64 and the integer types).
    std::vector<float> to_f32(const Tensor& t) const;
    // Decodes an integer tensor (I8/U8/I16/U16/I32/I64/BOOL) to int64.
    std::vector<int64_t> to_i64(const Tensor& t) const;

private:
    File() = default;
    void parse_all();

    std::shared_ptr<MappedFile> map_;
    std::span<const uint8_t> bytes_;
    std::string name_;
    std::vector<Tensor> tensors_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace ds4::st
