// GGUF v3 reader and streaming writer (spec formats.md §1).
//
// Reader: maps the file read-only, parses the header, metadata and tensor directory in
// place, validates everything up front (bounds, alignment, overlaps, counts) and never
// reads outside the mapping afterwards. Values are decoded on demand through typed
// accessors that are strict about the stored GGUF type, like ds4's getters.
//
// Writer: declare metadata and tensor infos, then stream tensor bytes in declaration
// order. Output goes to "<path>.tmp" and is fsync'd and renamed on finish(), so a crash
// never leaves a half-written file under the real name. Memory use is independent of the
// tensor sizes (an 81 GB model streams through a few MB).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gguf/ggml_types.h"
#include "gguf/mapped_file.h"

namespace ds4::gguf {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 8;
// Deepest metadata array nesting accepted (a top-level array is level 1). ds4 uses the
// same bound; deeper input fails with "metadata array nesting is too deep".
constexpr uint32_t kMaxArrayNesting = 8;

enum class ValueType : uint32_t {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    BOOL = 7,
    STRING = 8,
    ARRAY = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
};

std::string_view value_type_name(ValueType t);  // "UINT32", "ARRAY", ... ("UNKNOWN")

// One metadata record. Points into the mapped file; valid while the File lives.
struct KeyValue {
    std::string_view key;
    ValueType type;
    ValueType array_type;    // element type when type == ARRAY
    uint64_t array_count;    // element count when type == ARRAY
    uint64_t value_offset;   // file offset of the encoded value (after the u32 type)
    uint64_t value_size;     // encoded size in bytes
    size_t index;            // position in the metadata table (for messages)
};

struct TensorInfo {
    std::string_view name;
    uint32_t n_dims;
    uint64_t dims[kMaxDims];  // dims[0] innermost (ggml order); unused entries are 1
    uint32_t type;            // raw ggml type code (may be unknown: then n_bytes == 0)
    uint64_t offset;          // relative to data_start
    uint64_t abs_offset;      // data_start + offset
    uint64_t n_elements;
    uint64_t n_bytes;
    size_t index;             // position in the tensor directory (for messages)

    GgmlType ggml_type() const { return static_cast<GgmlType>(type); }
    std::span<const uint64_t> shape() const { return {dims, n_dims}; }
};

class File {
public:
    // Maps and parses. Throws ds4::Error naming the file and what was wrong.
    static File open(const std::string& path);
    // Parses bytes owned by the caller (tests, fuzzing); `name` is used in messages.
    static File parse(std::span<const uint8_t> bytes, std::string name);

    const std::string& path() const { return name_; }
    uint32_t version() const { return version_; }
    uint32_t alignment() const { return alignment_; }
    uint64_t data_start() const { return data_start_; }
    uint64_t size() const { return bytes_.size(); }
    std::span<const uint8_t> bytes() const { return bytes_; }

    // ---- metadata ----
    const std::vector<KeyValue>& metadata() const { return kvs_; }
    const KeyValue* find(std::string_view key) const;  // first record wins, like ds4
    bool has(std::string_view key) const { return find(key) != nullptr; }

    // Strict typed getters: nullopt when the key is absent; ds4::Error when present
    // with another type ("FILE: metadata key K has type INT32, expected UINT32").
    std::optional<uint8_t> get_u8(std::string_view key) const;
    std::optional<int8_t> get_i8(std::string_view key) const;
    std::optional<uint16_t> get_u16(std::string_view key) const;
    std::optional<int16_t> get_i16(std::string_view key) const;
    std::optional<uint32_t> get_u32(std::string_view key) const;
    std::optional<int32_t> get_i32(std::string_view key) const;
    std::optional<uint64_t> get_u64(std::string_view key) const;
    std::optional<int64_t> get_i64(std::string_view key) const;
    std::optional<float> get_f32(std::string_view key) const;
    std::optional<double> get_f64(std::string_view key) const;
    std::optional<bool> get_bool(std::string_view key) const;
    std::optional<std::string_view> get_string(std::string_view key) const;

    // Required variants: throw "FILE: required metadata key K is missing" when absent.
    uint32_t require_u32(std::string_view key) const;
    std::string_view require_string(std::string_view key) const;
    bool require_bool(std::string_view key) const;
    // ds4's "required integer" (UINT64 or UINT32) and "required float" (F32, F64,
    // UINT32 or INT32, converted) helpers.
    uint64_t require_integer(std::string_view key) const;
    double require_float(std::string_view key) const;

    // Arrays. Throw when the key is absent (use has() for optional arrays) or is not an
    // ARRAY of the expected element type. The integer variant accepts any integer
    // element type and converts (a UINT64 element above INT64_MAX throws); the float
    // variant accepts F32 or F64; bools come back as 0/1.
    std::vector<std::string_view> get_string_array(std::string_view key) const;
    std::vector<int64_t> get_int_array(std::string_view key) const;
    std::vector<double> get_float_array(std::string_view key) const;  // F32 or F64
    std::vector<uint8_t> get_bool_array(std::string_view key) const;

    // ---- tensors ----
    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo* find_tensor(std::string_view name) const;
    const TensorInfo& require_tensor(std::string_view name) const;  // "required tensor is missing: NAME"
    // The tensor's bytes inside the mapping (throws for unknown-type tensors).
    std::span<const uint8_t> tensor_data(const TensorInfo& t) const;

    // The encoded value bytes of a record (what follows its u32 type), e.g. to copy it.
    std::span<const uint8_t> raw_value(const KeyValue& kv) const;

private:
    File() = default;
    void parse_all();
    const KeyValue* find_typed(std::string_view key, ValueType type) const;
    const KeyValue& require_array(std::string_view key) const;
    template <typename T>
    T scalar_at(uint64_t offset) const;

    std::shared_ptr<MappedFile> map_;  // null when parsing caller-owned bytes
    std::span<const uint8_t> bytes_;
    std::string name_;
    uint32_t version_ = 0;
    uint32_t alignment_ = kDefaultAlignment;
    uint64_t data_start_ = 0;
    std::vector<KeyValue> kvs_;
    std::vector<TensorInfo> tensors_;
    // name -> index into tensors_ (names are unique: parsing rejects duplicates).
    std::unordered_map<std::string_view, size_t> tensor_index_;
};

// ---- writer ----

class Writer {
public:
    Writer();
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    // Metadata, in the order added, before begin(). A key added twice throws. Setting
    // "general.alignment" as u32 (a power of two) changes the alignment used for tensor
    // data; stored with any other type it is ignored, as readers ignore it.
    void add_u8(std::string key, uint8_t v);
    void add_i8(std::string key, int8_t v);
    void add_u16(std::string key, uint16_t v);
    void add_i16(std::string key, int16_t v);
    void add_u32(std::string key, uint32_t v);
    void add_i32(std::string key, int32_t v);
    void add_u64(std::string key, uint64_t v);
    void add_i64(std::string key, int64_t v);
    void add_f32(std::string key, float v);
    void add_f64(std::string key, double v);
    void add_bool(std::string key, bool v);
    void add_string(std::string key, std::string_view v);
    void add_array_u8(std::string key, std::span<const uint8_t> v);
    void add_array_i8(std::string key, std::span<const int8_t> v);
    void add_array_u16(std::string key, std::span<const uint16_t> v);
    void add_array_i16(std::string key, std::span<const int16_t> v);
    void add_array_u32(std::string key, std::span<const uint32_t> v);
    void add_array_i32(std::string key, std::span<const int32_t> v);
    void add_array_f32(std::string key, std::span<const float> v);
    void add_array_f64(std::string key, std::span<const double> v);
    void add_array_u64(std::string key, std::span<const uint64_t> v);
    void add_array_i64(std::string key, std::span<const int64_t> v);
    void add_array_bool(std::string key, std::span<const bool> v);
    void add_array_string(std::string key, std::span<const std::string> v);
    // Copies a record verbatim from another file (converter/splicer use).
    void copy_kv(const File& from, const KeyValue& kv);

    // Tensor directory, in file order. dims in ggml order (innermost first); dims[0]
    // must be a multiple of the type's block size. Offsets are assigned at begin() as a
    // running sum of align_up(bytes, alignment) from 0 (spec §1.9).
    void add_tensor(std::string name, std::span<const uint64_t> dims, GgmlType type);

    // Writes header + metadata + directory to "<path>.tmp". Then stream the tensors'
    // bytes in declaration order with write_data: the concatenation of all calls must be
    // exactly tensor 0's bytes, then tensor 1's, ... (any chunking, a chunk may span
    // tensors; too many bytes throw). finish() checks every tensor got its byte count,
    // pads, fsyncs and renames to `path`. Destroying an unfinished writer removes the
    // temporary file. A throw from begin/write_data/finish leaves the writer unusable
    // (only destruction remains); declaration errors (add_*) leave it as it was.
    void begin(const std::string& path);
    void write_data(std::span<const uint8_t> bytes);
    // Instead of write_data (not both in one file), from any number of threads at once:
    // tensor `index`'s bytes [at, at + bytes.size()) written at their place in the file.
    // Each byte of every tensor must be given once; finish() checks each tensor's count.
    void write_tensor_at(size_t index, uint64_t at, std::span<const uint8_t> bytes);
    void finish();

    // Byte size of a declared tensor (what write_data must deliver for it).
    uint64_t tensor_bytes(size_t index) const;
    size_t tensor_count() const;
    uint32_t alignment() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace ds4::gguf
