#include "gguf/safetensors.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "ds4/error.h"

namespace ds4::st {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and read with memcpy");

using json = nlohmann::json;

struct DTypeInfo {
    DType dtype;
    std::string_view name;
    size_t size;
};

constexpr std::array<DTypeInfo, 13> kDTypes{{
    {DType::F64, "F64", 8},
    {DType::F32, "F32", 4},
    {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},
    {DType::F8_E4M3, "F8_E4M3", 1},
    {DType::F8_E8M0, "F8_E8M0", 1},
    {DType::I64, "I64", 8},
    {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},
    {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},
    {DType::U16, "U16", 2},
    {DType::BOOL, "BOOL", 1},
}};

const DTypeInfo& info(DType d) {
    for (const DTypeInfo& i : kDTypes)
        if (i.dtype == d) return i;
    fail("safetensors: invalid DType value ", static_cast<int>(d));
}

// Valid headers are three levels deep (root → tensor → shape array); the bound keeps a
// hostile header from building a deep tree whose destruction recurses.
constexpr int kMaxJsonDepth = 8;

template <typename T>
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// The JSON header as a tree, rejecting duplicate keys (nlohmann keeps the last one
// silently, which would let two entries for one tensor name pass unnoticed).
json parse_header_json(std::string_view text, const std::string& file) {
    std::vector<std::set<std::string>> keys;  // one key set per open object
    auto check = [&](int depth, json::parse_event_t event, json& parsed) {
        switch (event) {
        case json::parse_event_t::object_start:
        case json::parse_event_t::array_start:
            if (depth >= kMaxJsonDepth)
                fail(file, ": header JSON is nested deeper than ", kMaxJsonDepth, " levels");
            if (event == json::parse_event_t::object_start) keys.emplace_back();
            break;
        case json::parse_event_t::object_end:
            keys.pop_back();
            break;
        case json::parse_event_t::key:
            if (!keys.back().insert(parsed.get<std::string>()).second) {
                if (depth == 1) fail(file, ": header lists '", parsed.get<std::string>(), "' twice");
                fail(file, ": header JSON repeats the key '", parsed.get<std::string>(),
                     "' inside one object");
            }
            break;
        default:
            break;
        }
        return true;
    };
    try {
        return json::parse(text.begin(), text.end(), check);
    } catch (const json::parse_error& e) {
        fail(file, ": header is not valid JSON (byte ", e.byte, " of the header): ", e.what());
    } catch (const json::exception& e) {
        // e.g. out_of_range for a number beyond double's range such as 1e400
        fail(file, ": header is not valid JSON: ", e.what());
    }
}

uint64_t read_header_length(std::span<const uint8_t> bytes, const std::string& file) {
    if (bytes.size() < 8)
        fail(file, ": file is ", bytes.size(), " bytes, too short for the 8-byte header length");
    const uint64_t n = load<uint64_t>(bytes.data());
    if (n > kMaxHeaderBytes)
        fail(file, ": header length ", n, " exceeds the ", kMaxHeaderBytes, "-byte limit");
    if (n > bytes.size() - 8)
        fail(file, ": header length ", n, " runs past the end of the file (", bytes.size() - 8,
             " bytes after the length field)");
    return n;
}

std::map<std::string, std::string> parse_metadata(const json& j, const std::string& file) {
    if (!j.is_object())
        fail(file, ": __metadata__ is a JSON ", j.type_name(), ", expected an object of strings");
    std::map<std::string, std::string> out;
    for (const auto& [key, value] : j.items()) {
        if (!value.is_string())
            fail(file, ": __metadata__ key '", key, "' is a JSON ", value.type_name(),
                 ", expected a string");
        out.emplace(key, value.get<std::string>());
    }
    return out;
}

// Error prefix for one tensor: "FILE: tensor 'NAME'".
std::string where(const std::string& file, const std::string& tensor) {
    return cat(file, ": tensor '", tensor, "'");
}

const json& require_field(const json& entry, const char* field, const std::string& at) {
    const auto it = entry.find(field);
    if (it == entry.end()) fail(at, ": field '", field, "' is missing");
    return *it;
}

uint64_t as_u64(const json& v, const std::string& at, const char* field) {
    if (!v.is_number_unsigned())
        fail(at, ": ", field, " holds ", v.dump(), ", expected a non-negative integer");
    return v.get<uint64_t>();
}

DType parse_dtype(const json& v, const std::string& at) {
    if (!v.is_string()) fail(at, ": dtype is a JSON ", v.type_name(), ", expected a string");
    const auto d = dtype_from_name(v.get<std::string>());
    if (!d) {
        std::string supported;
        for (const DTypeInfo& i : kDTypes) supported += cat(supported.empty() ? "" : " ", i.name);
        fail(at, ": unsupported dtype '", v.get<std::string>(), "' (supported: ", supported, ")");
    }
    return *d;
}

std::vector<uint64_t> parse_shape(const json& v, const std::string& at, uint64_t& n_elements) {
    if (!v.is_array()) fail(at, ": shape is a JSON ", v.type_name(), ", expected an array");
    std::vector<uint64_t> shape;
    n_elements = 1;
    for (const json& d : v) {
        const uint64_t dim = as_u64(d, at, "shape");
        if (dim != 0 && n_elements > std::numeric_limits<uint64_t>::max() / dim)
            fail(at, ": shape ", v.dump(), " has more than 2^64 elements");
        n_elements *= dim;
        shape.push_back(dim);
    }
    return shape;
}

// One header entry, checked against the data region of `data_size` bytes.
Tensor parse_tensor(const std::string& name, const json& entry, uint64_t data_size,
                    const std::string& file) {
    const std::string at = where(file, name);
    if (!entry.is_object()) fail(at, ": entry is a JSON ", entry.type_name(), ", expected an object");
    Tensor t;
    t.name = name;
    t.dtype = parse_dtype(require_field(entry, "dtype", at), at);
    t.shape = parse_shape(require_field(entry, "shape", at), at, t.n_elements);

    const json& offsets = require_field(entry, "data_offsets", at);
    if (!offsets.is_array() || offsets.size() != 2)
        fail(at, ": data_offsets holds ", offsets.dump(), ", expected [begin, end]");
    const uint64_t begin = as_u64(offsets[0], at, "data_offsets");
    const uint64_t end = as_u64(offsets[1], at, "data_offsets");
    if (begin > end) fail(at, ": data_offsets [", begin, ", ", end, ") has begin > end");
    if (end > data_size)
        fail(at, ": data_offsets [", begin, ", ", end, ") runs past the end of the data (",
             data_size, " bytes)");

    const size_t elem = dtype_size(t.dtype);
    if (t.n_elements > std::numeric_limits<uint64_t>::max() / elem)
        fail(at, ": shape ", shape_string(t.shape), " × ", dtype_name(t.dtype),
             " is more than 2^64 bytes");
    if (end - begin != t.n_elements * elem)
        fail(at, ": data_offsets [", begin, ", ", end, ") holds ", end - begin,
             " bytes, expected ", t.n_elements * elem, " (shape ", shape_string(t.shape), " × ",
             dtype_name(t.dtype), ")");
    t.data_begin = begin;
    return t;
}

// Tensors sorted by begin may only touch, never share bytes. Empty tensors own no bytes
// and are skipped; with the rest sorted, comparing neighbours finds any overlap.
void check_no_overlap(const std::vector<Tensor>& sorted, const std::string& file) {
    const Tensor* prev = nullptr;
    for (const Tensor& t : sorted) {
        if (t.data.empty()) continue;
        if (prev && t.data_begin < prev->data_begin + prev->data.size())
            fail(file, ": tensors '", prev->name, "' [", prev->data_begin, ", ",
                 prev->data_begin + prev->data.size(), ") and '", t.name, "' [", t.data_begin,
                 ", ", t.data_begin + t.data.size(), ") overlap");
        prev = &t;
    }
}

template <typename T>
void widen(std::span<const uint8_t> data, std::vector<int64_t>& out) {
    for (size_t i = 0; i < out.size(); ++i)
        out[i] = static_cast<int64_t>(load<T>(data.data() + i * sizeof(T)));
}

}  // namespace

std::string_view dtype_name(DType d) { return info(d).name; }
size_t dtype_size(DType d) { return info(d).size; }

std::optional<DType> dtype_from_name(std::string_view name) {
    for (const DTypeInfo& i : kDTypes)
        if (i.name == name) return i.dtype;
    return std::nullopt;
}

std::string shape_string(std::span<const uint64_t> shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += cat(i ? ", " : "", shape[i]);
    return s + "]";
}

File File::open(const std::string& path) {
    File f;
    f.map_ = std::make_shared<MappedFile>(path);
    f.bytes_ = f.map_->bytes();
    f.name_ = path;
    f.parse_all();
    return f;
}

File File::parse(std::span<const uint8_t> bytes, std::string name) {
    File f;
    f.bytes_ = bytes;
    f.name_ = std::move(name);
    f.parse_all();
    return f;
}

void File::parse_all() {
    const uint64_t header_len = read_header_length(bytes_, name_);
    const std::string_view text(reinterpret_cast<const char*>(bytes_.data() + 8), header_len);
    const json header = parse_header_json(text, name_);
    if (!header.is_object())
        fail(name_, ": header is a JSON ", header.type_name(), ", expected an object");

    const std::span<const uint8_t> data = bytes_.subspan(8 + header_len);
    for (const auto& [key, entry] : header.items()) {
        if (key == "__metadata__") {
            metadata_ = parse_metadata(entry, name_);
            continue;
        }
        Tensor t = parse_tensor(key, entry, data.size(), name_);
        t.data = data.subspan(t.data_begin, t.n_elements * dtype_size(t.dtype));
        tensors_.push_back(std::move(t));
    }
    std::sort(tensors_.begin(), tensors_.end(), [](const Tensor& a, const Tensor& b) {
        return a.data_begin != b.data_begin ? a.data_begin < b.data_begin : a.name < b.name;
    });
    check_no_overlap(tensors_, name_);
    for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const Tensor* File::find(std::string_view name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

const Tensor& File::require(std::string_view name) const {
    const Tensor* t = find(name);
    if (!t) fail(name_, ": tensor '", name, "' is missing");
    return *t;
}

std::vector<int64_t> File::to_i64(const Tensor& t) const {
    std::vector<int64_t> out(t.n_elements);
    switch (t.dtype) {
    case DType::I64: widen<int64_t>(t.data, out); break;
    case DType::I32: widen<int32_t>(t.data, out); break;
    case DType::I16: widen<int16_t>(t.data, out); break;
    case DType::I8: widen<int8_t>(t.data, out); break;
    case DType::U16: widen<uint16_t>(t.data, out); break;
    case DType::U8: widen<uint8_t>(t.data, out); break;
    case DType::BOOL:
        // Any non-zero byte is true, as in numpy/torch.
        for (size_t i = 0; i < out.size(); ++i) out[i] = t.data[i] != 0;
        break;
    default:
        fail(where(name_, t.name), " has dtype ", dtype_name(t.dtype),
             ", expected an integer dtype (I8/U8/I16/U16/I32/I64/BOOL)");
    }
    return out;
}

}  // namespace ds4::st
