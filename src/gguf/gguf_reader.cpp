// GGUF v3 reader (spec formats.md §1). Parsing validates the whole header, metadata
// table and tensor directory up front; afterwards accessors only touch byte ranges that
// parsing proved to lie inside the file.
#include <algorithm>
#include <cstring>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "ds4/error.h"
#include "gguf/gguf.h"

namespace ds4::gguf {
namespace {

constexpr uint64_t kHeaderBytes = 24;
// ds4 refuses files below 32 bytes; a valid file is never smaller (24-byte header
// padded to the minimum alignment of the data region).
constexpr uint64_t kMinFileBytes = 32;
// Smallest possible encodings, used to reject absurd counts before allocating:
// empty key + u32 type + 1-byte value; empty name + n_dims + one dim + type + offset.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;
constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// Encoded size of a fixed-size value type; 0 for STRING, ARRAY and unknown codes.
uint64_t scalar_size(uint32_t type) {
    switch (static_cast<ValueType>(type)) {
        case ValueType::U8:
        case ValueType::I8:
        case ValueType::BOOL: return 1;
        case ValueType::U16:
        case ValueType::I16: return 2;
        case ValueType::U32:
        case ValueType::I32:
        case ValueType::F32: return 4;
        case ValueType::U64:
        case ValueType::I64:
        case ValueType::F64: return 8;
        default: return 0;
    }
}

bool is_known_type(uint32_t type) { return type <= static_cast<uint32_t>(ValueType::F64); }

// Names and keys from a damaged file can hold control bytes; escape them so error
// messages stay one readable line, and cap the length.
std::string printable(std::string_view s) {
    constexpr size_t kMaxShown = 96;
    std::string out;
    for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
        const auto ch = static_cast<unsigned char>(s[i]);
        if (ch < 0x20 || ch == 0x7f) {
            static constexpr char kHex[] = "0123456789abcdef";
            out += "\\x";
            out += kHex[ch >> 4];
            out += kHex[ch & 15];
        } else {
            out += static_cast<char>(ch);
        }
    }
    if (s.size() > kMaxShown) out += "...";
    return out;
}

// "[a, b)" for a byte range whose end may not be representable.
std::string byte_range(uint64_t start, uint64_t n) {
    if (n > kU64Max - start) return cat("[", start, ", ", start, " + ", n, ")");
    return cat("[", start, ", ", start + n, ")");
}

// Bounds-checked little-endian reader over the file. Every byte of the header, the
// metadata and the tensor directory is read through it; `context` names the record
// being read so a truncation error says where it happened.
class Cursor {
public:
    Cursor(std::span<const uint8_t> bytes, const std::string& file) : bytes_(bytes), file_(file) {}

    uint64_t pos() const { return pos_; }
    uint64_t remaining() const { return bytes_.size() - pos_; }
    void set_context(std::string context) { context_ = std::move(context); }

    [[noreturn]] void error(const std::string& what) const {
        if (context_.empty()) fail(file_, ": ", what);
        fail(file_, ": ", context_, ": ", what);
    }

    // `what` + `suffix` name the field; split so hot paths need not build a string.
    void need(uint64_t n, std::string_view what, std::string_view suffix = {}) const {
        if (n > remaining())
            error(cat("truncated GGUF file at byte ", pos_, ": ", what, suffix, " needs ", n,
                      " bytes, only ", remaining(), " remain"));
    }

    template <typename T>
    T read(std::string_view what, std::string_view suffix = {}) {
        need(sizeof(T), what, suffix);
        T v;
        std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    void skip(uint64_t n, std::string_view what) {
        need(n, what);
        pos_ += n;
    }

    std::string_view string(std::string_view what) {
        const uint64_t len = read<uint64_t>(what, " length");
        need(len, what);
        const auto* p = reinterpret_cast<const char*>(bytes_.data() + pos_);
        pos_ += len;
        return {p, static_cast<size_t>(len)};
    }

private:
    std::span<const uint8_t> bytes_;
    const std::string& file_;
    std::string context_;
    uint64_t pos_ = 0;
};

// Fails unless `count` elements of at least `min_size` bytes each could still fit.
void check_array_fits(const Cursor& c, uint64_t count, uint64_t min_size, uint32_t elem) {
    if (count > c.remaining() / min_size)
        c.error(cat("array of ", count, " ", value_type_name(static_cast<ValueType>(elem)),
                    " elements at byte ", c.pos(), " cannot fit in the ", c.remaining(),
                    " remaining bytes"));
}

// Skips one encoded value. `depth` is the number of arrays enclosing it.
void skip_value(Cursor& c, uint32_t type, uint32_t depth) {
    if (const uint64_t n = scalar_size(type)) return c.skip(n, "value");
    if (type == static_cast<uint32_t>(ValueType::STRING)) {
        c.string("string value");
        return;
    }
    if (type != static_cast<uint32_t>(ValueType::ARRAY))
        c.error(cat("unknown GGUF metadata type ", type, " at byte ", c.pos() - 4));
    if (depth + 1 > kMaxArrayNesting)
        c.error(cat("metadata array nesting is too deep at byte ", c.pos(), " (more than ",
                    kMaxArrayNesting, " levels)"));

    const uint32_t elem = c.read<uint32_t>("array element type");
    const uint64_t count = c.read<uint64_t>("array element count");
    if (const uint64_t n = scalar_size(elem)) {
        check_array_fits(c, count, n, elem);
        return c.skip(count * n, "array elements");
    }
    if (elem == static_cast<uint32_t>(ValueType::STRING)) {
        check_array_fits(c, count, 8, elem);
    } else if (elem == static_cast<uint32_t>(ValueType::ARRAY)) {
        check_array_fits(c, count, 4 + 8, elem);
    } else {
        c.error(cat("unknown GGUF metadata type ", elem, " for array elements at byte ",
                    c.pos() - 12));
    }
    // Elements are bare values of type `elem`: an element array starts with its own
    // element type and count, with no repeated ARRAY code (as ggml and ds4 read it).
    for (uint64_t i = 0; i < count; ++i) skip_value(c, elem, depth + 1);
}

// Little-endian value at an offset that parsing already proved to be in bounds.
template <typename T>
T load(std::span<const uint8_t> bytes, uint64_t offset) {
    T v;
    std::memcpy(&v, bytes.data() + offset, sizeof(T));
    return v;
}

uint64_t align_up(uint64_t v, uint64_t a) { return v % a == 0 ? v : v + (a - v % a); }

std::string type_description(const KeyValue& kv) {
    if (kv.type != ValueType::ARRAY) return std::string(value_type_name(kv.type));
    return cat("ARRAY of ", value_type_name(kv.array_type));
}

bool is_integer_type(ValueType t) {
    switch (t) {
        case ValueType::U8:
        case ValueType::I8:
        case ValueType::U16:
        case ValueType::I16:
        case ValueType::U32:
        case ValueType::I32:
        case ValueType::U64:
        case ValueType::I64: return true;
        default: return false;
    }
}

}  // namespace

std::string_view value_type_name(ValueType t) {
    switch (t) {
        case ValueType::U8: return "UINT8";
        case ValueType::I8: return "INT8";
        case ValueType::U16: return "UINT16";
        case ValueType::I16: return "INT16";
        case ValueType::U32: return "UINT32";
        case ValueType::I32: return "INT32";
        case ValueType::F32: return "FLOAT32";
        case ValueType::BOOL: return "BOOL";
        case ValueType::STRING: return "STRING";
        case ValueType::ARRAY: return "ARRAY";
        case ValueType::U64: return "UINT64";
        case ValueType::I64: return "INT64";
        case ValueType::F64: return "FLOAT64";
    }
    return "UNKNOWN";
}

// ---------------------------------------------------------------------------------
// Parsing

File File::open(const std::string& path) {
    auto map = std::make_shared<MappedFile>(path);
    File f;
    f.bytes_ = map->bytes();
    f.map_ = std::move(map);
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

namespace {

// Reads the metadata table; returns it in file order.
std::vector<KeyValue> parse_metadata(Cursor& c, std::span<const uint8_t> bytes,
                                     uint64_t kv_count) {
    std::vector<KeyValue> kvs;
    kvs.reserve(kv_count);
    for (uint64_t i = 0; i < kv_count; ++i) {
        c.set_context(cat("metadata key #", i));
        KeyValue kv{};
        kv.index = i;
        kv.key = c.string("key");
        c.set_context(cat("metadata key '", printable(kv.key), "' (#", i, ")"));
        const uint32_t type = c.read<uint32_t>("value type");
        if (!is_known_type(type))
            c.error(cat("unknown GGUF metadata type ", type, " at byte ", c.pos() - 4));
        kv.type = static_cast<ValueType>(type);
        kv.value_offset = c.pos();
        skip_value(c, type, 0);
        kv.value_size = c.pos() - kv.value_offset;
        if (kv.type == ValueType::ARRAY) {  // skip_value proved the 12-byte head is in bounds
            kv.array_type = static_cast<ValueType>(load<uint32_t>(bytes, kv.value_offset));
            kv.array_count = load<uint64_t>(bytes, kv.value_offset + 4);
        }
        kvs.push_back(kv);
    }
    c.set_context("");
    return kvs;
}

// Bytes of a tensor of a known type (dims[0] must be whole blocks, as ggml requires);
// 0 for an unknown type code, which ds4 tolerates until the tensor is used.
uint64_t tensor_byte_size(const Cursor& c, const TensorInfo& t) {
    const auto info = ggml_type_info(t.type);
    if (!info) return 0;
    if (t.dims[0] % info->block_elems != 0)
        c.error(cat("dim[0]=", t.dims[0], " is not a multiple of the ", info->name,
                    " block size ", info->block_elems));
    const uint64_t blocks = t.n_elements / info->block_elems;
    if (blocks > kU64Max / info->block_bytes) c.error("tensor byte size overflow");
    return blocks * info->block_bytes;
}

// Reads the tensor directory; fills `seen` with name -> index.
std::vector<TensorInfo> parse_tensor_infos(Cursor& c, uint64_t tensor_count,
                                           std::unordered_map<std::string_view, size_t>& seen) {
    std::vector<TensorInfo> tensors;
    tensors.reserve(tensor_count);
    seen.clear();
    seen.reserve(tensor_count);
    for (uint64_t i = 0; i < tensor_count; ++i) {
        c.set_context(cat("tensor #", i));
        TensorInfo t{};
        t.index = i;
        t.name = c.string("tensor name");
        c.set_context(cat("tensor '", printable(t.name), "' (#", i, ")"));
        if (auto [it, fresh] = seen.emplace(t.name, i); !fresh)
            c.error(cat("duplicate tensor name (also tensor #", it->second, ")"));
        t.n_dims = c.read<uint32_t>("n_dims");
        if (t.n_dims == 0 || t.n_dims > kMaxDims)
            c.error(cat("n_dims is ", t.n_dims, " at byte ", c.pos() - 4, ", expected 1..", kMaxDims));
        std::fill(std::begin(t.dims), std::end(t.dims), uint64_t{1});
        t.n_elements = 1;
        bool overflow = false;
        for (uint32_t d = 0; d < t.n_dims; ++d) {
            t.dims[d] = c.read<uint64_t>("dimension");
            if (t.dims[d] != 0 && t.n_elements > kU64Max / t.dims[d]) overflow = true;
            t.n_elements *= t.dims[d];
        }
        if (overflow) c.error("tensor element count overflow");
        t.type = c.read<uint32_t>("ggml type");
        t.offset = c.read<uint64_t>("data offset");
        t.n_bytes = tensor_byte_size(c, t);
        tensors.push_back(t);
    }
    c.set_context("");
    return tensors;
}

// Resolves absolute offsets and checks alignment, bounds and overlaps.
void place_tensors(std::vector<TensorInfo>& tensors, const std::string& file, uint64_t file_size,
                   uint64_t data_start, uint64_t alignment) {
    const auto where = [&](const TensorInfo& t) {
        return cat(file, ": tensor '", printable(t.name), "' (#", t.index, "): ");
    };
    for (auto& t : tensors) {
        if (t.offset > kU64Max - data_start)
            fail(where(t), "tensor offset overflow (offset ", t.offset, " + data start ",
                 data_start, ")");
        t.abs_offset = data_start + t.offset;
        if (t.offset % alignment != 0)
            fail(where(t), "data offset ", t.offset, " is not a multiple of the alignment ",
                 alignment);
        if (!ggml_type_info(t.type)) continue;  // unknown type: no extent to check
        if (t.abs_offset > file_size || t.n_bytes > file_size - t.abs_offset)
            fail(where(t), "data ", byte_range(t.abs_offset, t.n_bytes),
                 " extends past end of file (", file_size, " bytes)");
    }

    std::vector<const TensorInfo*> order;
    for (const auto& t : tensors)
        if (t.n_bytes > 0) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
        return a->abs_offset != b->abs_offset ? a->abs_offset < b->abs_offset : a->index < b->index;
    });
    // Sweep in offset order keeping the tensor that reaches furthest: any overlap shows
    // up as a start below that furthest end.
    const TensorInfo* reach = nullptr;
    for (const TensorInfo* t : order) {
        if (reach && t->abs_offset < reach->abs_offset + reach->n_bytes)
            fail(file, ": tensors '", printable(reach->name), "' (#", reach->index, ") data ",
                 byte_range(reach->abs_offset, reach->n_bytes), " and '", printable(t->name),
                 "' (#", t->index, ") data ", byte_range(t->abs_offset, t->n_bytes), " overlap");
        if (!reach || t->abs_offset + t->n_bytes > reach->abs_offset + reach->n_bytes) reach = t;
    }
}

}  // namespace

void File::parse_all() {
    if (bytes_.size() < kMinFileBytes)
        fail(name_, ": file is ", bytes_.size(), " bytes, too small to be a GGUF file (at least ",
             kMinFileBytes, " expected)");
    Cursor c(bytes_, name_);
    const uint32_t magic = c.read<uint32_t>("magic");
    if (magic != kMagic) {
        std::ostringstream hex;
        hex << std::hex << magic;
        fail(name_, ": not a GGUF file: magic at byte 0 is 0x", hex.str(),
             ", expected 0x46554747 (\"GGUF\")");
    }
    version_ = c.read<uint32_t>("version");
    if (version_ != kVersion)
        fail(name_, ": unsupported GGUF version ", version_, " at byte 4 (expected ", kVersion, ")");
    const uint64_t tensor_count = c.read<uint64_t>("tensor_count");
    const uint64_t kv_count = c.read<uint64_t>("kv_count");
    // Counts come straight from the file: bound them by the bytes that could encode
    // them before any allocation depends on them.
    const uint64_t rest = c.remaining();
    if (kv_count > rest / kMinKvBytes || tensor_count > rest / kMinTensorInfoBytes ||
        kv_count * kMinKvBytes + tensor_count * kMinTensorInfoBytes > rest)
        fail(name_, ": header claims ", kv_count, " metadata records and ", tensor_count,
             " tensors (bytes 8..", kHeaderBytes, "), but only ", rest,
             " bytes follow the header (a record needs at least ", kMinKvBytes,
             ", a tensor info at least ", kMinTensorInfoBytes, ")");

    kvs_ = parse_metadata(c, bytes_, kv_count);
    if (tensor_count > c.remaining() / kMinTensorInfoBytes)
        fail(name_, ": header claims ", tensor_count, " tensors, but only ", c.remaining(),
             " bytes follow the metadata at byte ", c.pos());

    // Alignment rule of spec §1.1: only a non-zero UINT32 general.alignment counts.
    alignment_ = kDefaultAlignment;
    if (const KeyValue* kv = find("general.alignment"); kv && kv->type == ValueType::U32) {
        const auto a = scalar_at<uint32_t>(kv->value_offset);
        if (a != 0 && (a & (a - 1)) != 0)
            fail(name_, ": metadata key 'general.alignment' (#", kv->index, ") is ", a,
                 ", expected a power of two");
        if (a != 0) alignment_ = a;
    }

    tensors_ = parse_tensor_infos(c, tensor_count, tensor_index_);
    data_start_ = align_up(c.pos(), alignment_);
    if (data_start_ > bytes_.size())
        fail(name_, ": tensor data region starts at byte ", data_start_,
             " (end of tensor infos at byte ", c.pos(), " aligned to ", alignment_,
             "), past end of file (", bytes_.size(), " bytes)");
    place_tensors(tensors_, name_, bytes_.size(), data_start_, alignment_);
}


// ---------------------------------------------------------------------------------
// Metadata access

template <typename T>
T File::scalar_at(uint64_t offset) const {
    return load<T>(bytes_, offset);
}

const KeyValue* File::find(std::string_view key) const {
    for (const auto& kv : kvs_)
        if (kv.key == key) return &kv;
    return nullptr;
}

const KeyValue* File::find_typed(std::string_view key, ValueType type) const {
    const KeyValue* kv = find(key);
    if (kv && kv->type != type)
        fail(name_, ": metadata key ", key, " has type ", type_description(*kv), ", expected ",
             value_type_name(type));
    return kv;
}

#define DS4_GGUF_GETTER(fn, T, VT)                                     \
    std::optional<T> File::fn(std::string_view key) const {            \
        const KeyValue* kv = find_typed(key, ValueType::VT);           \
        if (!kv) return std::nullopt;                                  \
        return scalar_at<T>(kv->value_offset);                         \
    }
DS4_GGUF_GETTER(get_u8, uint8_t, U8)
DS4_GGUF_GETTER(get_i8, int8_t, I8)
DS4_GGUF_GETTER(get_u16, uint16_t, U16)
DS4_GGUF_GETTER(get_i16, int16_t, I16)
DS4_GGUF_GETTER(get_u32, uint32_t, U32)
DS4_GGUF_GETTER(get_i32, int32_t, I32)
DS4_GGUF_GETTER(get_u64, uint64_t, U64)
DS4_GGUF_GETTER(get_i64, int64_t, I64)
DS4_GGUF_GETTER(get_f32, float, F32)
DS4_GGUF_GETTER(get_f64, double, F64)
#undef DS4_GGUF_GETTER

std::optional<bool> File::get_bool(std::string_view key) const {
    const KeyValue* kv = find_typed(key, ValueType::BOOL);
    if (!kv) return std::nullopt;
    return scalar_at<uint8_t>(kv->value_offset) != 0;  // non-zero is true, as in ds4
}

std::optional<std::string_view> File::get_string(std::string_view key) const {
    const KeyValue* kv = find_typed(key, ValueType::STRING);
    if (!kv) return std::nullopt;
    const auto* p = reinterpret_cast<const char*>(bytes_.data() + kv->value_offset + 8);
    return std::string_view(p, kv->value_size - 8);
}

namespace {
template <typename T>
T present(std::optional<T> v, const std::string& file, std::string_view key) {
    if (!v) fail(file, ": required metadata key ", key, " is missing");
    return *v;
}
}  // namespace

uint32_t File::require_u32(std::string_view key) const { return present(get_u32(key), name_, key); }
std::string_view File::require_string(std::string_view key) const {
    return present(get_string(key), name_, key);
}
bool File::require_bool(std::string_view key) const { return present(get_bool(key), name_, key); }

uint64_t File::require_integer(std::string_view key) const {
    const KeyValue* kv = find(key);
    if (!kv) fail(name_, ": required metadata key ", key, " is missing");
    if (kv->type == ValueType::U64) return scalar_at<uint64_t>(kv->value_offset);
    if (kv->type == ValueType::U32) return scalar_at<uint32_t>(kv->value_offset);
    fail(name_, ": metadata key ", key, " has type ", type_description(*kv),
         ", expected UINT64 or UINT32");
}

double File::require_float(std::string_view key) const {
    const KeyValue* kv = find(key);
    if (!kv) fail(name_, ": required metadata key ", key, " is missing");
    switch (kv->type) {
        case ValueType::F32: return scalar_at<float>(kv->value_offset);
        case ValueType::F64: return scalar_at<double>(kv->value_offset);
        case ValueType::U32: return scalar_at<uint32_t>(kv->value_offset);
        case ValueType::I32: return scalar_at<int32_t>(kv->value_offset);
        default:
            fail(name_, ": metadata key ", key, " has type ", type_description(*kv),
                 ", expected FLOAT32, FLOAT64, UINT32 or INT32");
    }
}

const KeyValue& File::require_array(std::string_view key) const {
    const KeyValue* kv = find(key);
    if (!kv) fail(name_, ": required metadata key ", key, " is missing");
    if (kv->type != ValueType::ARRAY)
        fail(name_, ": metadata key ", key, " has type ", type_description(*kv),
             ", expected ARRAY");
    return *kv;
}

std::vector<std::string_view> File::get_string_array(std::string_view key) const {
    const KeyValue& kv = require_array(key);
    if (kv.array_type != ValueType::STRING)
        fail(name_, ": metadata key ", key, " has type ", type_description(kv),
             ", expected ARRAY of STRING");
    std::vector<std::string_view> out;
    out.reserve(kv.array_count);
    uint64_t pos = kv.value_offset + 12;
    for (uint64_t i = 0; i < kv.array_count; ++i) {
        const auto len = scalar_at<uint64_t>(pos);
        out.emplace_back(reinterpret_cast<const char*>(bytes_.data() + pos + 8), len);
        pos += 8 + len;
    }
    return out;
}

std::vector<int64_t> File::get_int_array(std::string_view key) const {
    const KeyValue& kv = require_array(key);
    if (!is_integer_type(kv.array_type))
        fail(name_, ": metadata key ", key, " has type ", type_description(kv),
             ", expected ARRAY of an integer type");
    const uint64_t size = scalar_size(static_cast<uint32_t>(kv.array_type));
    std::vector<int64_t> out;
    out.reserve(kv.array_count);
    for (uint64_t i = 0; i < kv.array_count; ++i) {
        const uint64_t at = kv.value_offset + 12 + i * size;
        switch (kv.array_type) {
            case ValueType::U8: out.push_back(scalar_at<uint8_t>(at)); break;
            case ValueType::I8: out.push_back(scalar_at<int8_t>(at)); break;
            case ValueType::U16: out.push_back(scalar_at<uint16_t>(at)); break;
            case ValueType::I16: out.push_back(scalar_at<int16_t>(at)); break;
            case ValueType::U32: out.push_back(scalar_at<uint32_t>(at)); break;
            case ValueType::I32: out.push_back(scalar_at<int32_t>(at)); break;
            case ValueType::I64: out.push_back(scalar_at<int64_t>(at)); break;
            default: {  // U64
                const auto v = scalar_at<uint64_t>(at);
                if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
                    fail(name_, ": metadata key ", key, " element ", i, " is ", v,
                         ", which does not fit in int64");
                out.push_back(static_cast<int64_t>(v));
            }
        }
    }
    return out;
}

std::vector<double> File::get_float_array(std::string_view key) const {
    const KeyValue& kv = require_array(key);
    const bool f32 = kv.array_type == ValueType::F32;
    if (!f32 && kv.array_type != ValueType::F64)
        fail(name_, ": metadata key ", key, " has type ", type_description(kv),
             ", expected ARRAY of FLOAT32 or FLOAT64");
    std::vector<double> out;
    out.reserve(kv.array_count);
    const uint64_t base = kv.value_offset + 12;
    for (uint64_t i = 0; i < kv.array_count; ++i)
        out.push_back(f32 ? scalar_at<float>(base + 4 * i) : scalar_at<double>(base + 8 * i));
    return out;
}

std::vector<uint8_t> File::get_bool_array(std::string_view key) const {
    const KeyValue& kv = require_array(key);
    if (kv.array_type != ValueType::BOOL)
        fail(name_, ": metadata key ", key, " has type ", type_description(kv),
             ", expected ARRAY of BOOL");
    std::vector<uint8_t> out;
    out.reserve(kv.array_count);
    for (uint64_t i = 0; i < kv.array_count; ++i)
        out.push_back(scalar_at<uint8_t>(kv.value_offset + 12 + i) != 0 ? 1 : 0);
    return out;
}

std::span<const uint8_t> File::raw_value(const KeyValue& kv) const {
    if (kv.value_offset > bytes_.size() || kv.value_size > bytes_.size() - kv.value_offset)
        fail(name_, ": metadata record ", printable(kv.key), " does not belong to this file");
    return bytes_.subspan(kv.value_offset, kv.value_size);
}

// ---------------------------------------------------------------------------------
// Tensor access

const TensorInfo* File::find_tensor(std::string_view name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::require_tensor(std::string_view name) const {
    const TensorInfo* t = find_tensor(name);
    if (!t) fail(name_, ": required tensor is missing: ", name);
    return *t;
}

std::span<const uint8_t> File::tensor_data(const TensorInfo& t) const {
    if (!ggml_type_info(t.type))
        fail(name_, ": tensor '", printable(t.name), "' (#", t.index,
             ") has unsupported ggml type ", t.type);
    // Re-checked so a TensorInfo from another File cannot read out of bounds.
    if (t.abs_offset > bytes_.size() || t.n_bytes > bytes_.size() - t.abs_offset)
        fail(name_, ": tensor '", printable(t.name), "' data ", byte_range(t.abs_offset, t.n_bytes),
             " is outside this file (", bytes_.size(), " bytes)");
    return bytes_.subspan(t.abs_offset, t.n_bytes);
}

}  // namespace ds4::gguf
