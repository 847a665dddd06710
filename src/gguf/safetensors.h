// safetensors reader: u64 header length, JSON header, raw little-endian data
// (dtypes F32/F16/BF16/F8_E4M3/F8_E8M0/I8/U8/I32/I64, plus F64/I16/U16/BOOL).
// Validates the header completely up front (JSON shape, dtype names, shape × dtype
// size == data_offsets span, offsets inside the data region, no overlaps, no duplicate
// names) and never reads outside the mapping. Every error is a ds4::Error that starts
// with the file name and names the tensor and field at fault.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/mapped_file.h"

namespace ds4::st {

enum class DType { F64, F32, F16, BF16, F8_E4M3, F8_E8M0, I64, I32, I16, I8, U8, U16, BOOL };

std::string_view dtype_name(DType d);
size_t dtype_size(DType d);
// The dtype spelled `name` in a header ("F8_E4M3", ...), or nullopt if unsupported.
std::optional<DType> dtype_from_name(std::string_view name);

// A header longer than this is rejected before it is parsed: real checkpoint shards
// have headers of well under 1 MB, so anything near this is a corrupt length field.
inline constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct Tensor {
    std::string name;
    DType dtype;
    std::vector<uint64_t> shape;  // row-major, outermost first (as in the JSON)
    uint64_t n_elements;
    uint64_t data_begin;            // data_offsets[0], relative to the data region
    std::span<const uint8_t> data;  // points into the mapping (possibly unaligned)
};

// "[4, 8]": a shape as it appears in error messages.
std::string shape_string(std::span<const uint64_t> shape);

class File {
public:
    // Maps `path` read-only and parses it; the mapping lives as long as the File.
    static File open(const std::string& path);
    // Parses bytes owned by the caller, who keeps them alive while the File is used;
    // `name` stands in for the file name in error messages.
    static File parse(std::span<const uint8_t> bytes, std::string name);

    const std::string& path() const { return name_; }
    // Ordered by data offset (the order of the bytes in the file).
    const std::vector<Tensor>& tensors() const { return tensors_; }
    const Tensor* find(std::string_view name) const;
    const Tensor& require(std::string_view name) const;  // "FILE: tensor 'NAME' is missing"
    // "__metadata__" string map (empty if absent).
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    // Decodes an integer tensor (I8/U8/I16/U16/I32/I64/BOOL) to int64. Float decoding
    // (F16/BF16/FP8/E8M0 need the scalar formats of quant/) is quant::decode_f32 in
    // quant/checkpoint.h, which keeps this container library free of number formats.
    std::vector<int64_t> to_i64(const Tensor& t) const;

private:
    File() = default;
    void parse_all();

    std::shared_ptr<MappedFile> map_;
    std::span<const uint8_t> bytes_;
    std::string name_;
    std::vector<Tensor> tensors_;
    std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
    std::map<std::string, std::string> metadata_;
};

}  // namespace ds4::st
