// GGUF v3 streaming writer (spec formats.md §1.9). Metadata records are encoded as they
// are added; the header, metadata and tensor directory are written by begin(); tensor
// bytes then stream through a fixed 4 MiB buffer, so memory use does not depend on the
// size of the model being written. Or they are placed (write_tensor_at) by several
// threads at once into a shared mapping of the file: one sequential writer copying into a
// memfd or page cache moved ~1 GB/s, the bound of ds4-bench's synthetic models.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <unordered_set>

#include "ds4/error.h"
#include "gguf/gguf.h"

namespace ds4::gguf {
namespace {

constexpr size_t kBufferBytes = size_t{4} << 20;

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof(T));
}

void put_string(std::vector<uint8_t>& out, std::string_view s) {
    put<uint64_t>(out, s.size());
    out.insert(out.end(), s.begin(), s.end());
}

uint64_t align_up(uint64_t v, uint64_t a) { return v % a == 0 ? v : v + (a - v % a); }

// The reader's alignment rule (spec §1.1) applied to a UINT32 general.alignment value:
// zero means the default; anything else must be a power of two.
uint32_t alignment_from(uint32_t v) {
    if (v == 0) return kDefaultAlignment;
    if ((v & (v - 1)) != 0) fail("GGUF writer: general.alignment ", v, " is not a power of two");
    return v;
}

void write_all(int fd, const uint8_t* p, size_t n, const std::string& path) {
    while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            fail(path, ": write failed: ", std::strerror(errno));
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
}

// Makes a finished rename durable; best effort, as some filesystems refuse to fsync a
// directory and the file itself is already safely on disk.
void sync_parent_dir(const std::string& path) {
    const auto slash = path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)::fsync(fd);
    ::close(fd);
}

}  // namespace

struct Writer::Impl {
    enum class State { Declaring, Writing, Finished, Failed };

    struct Tensor {
        std::string name;
        std::vector<uint64_t> dims;
        GgmlType type;
        uint64_t bytes;
        uint64_t offset = 0;
    };

    State state = State::Declaring;
    std::vector<uint8_t> metadata;  // encoded records, in insertion order
    uint64_t kv_count = 0;
    std::unordered_set<std::string> keys;
    std::vector<Tensor> tensors;
    std::unordered_set<std::string> tensor_names;
    uint32_t alignment = kDefaultAlignment;

    std::string path, tmp_path;
    int fd = -1;
    bool tmp_created = false;
    std::vector<uint8_t> buffer;
    size_t current = 0;           // tensor receiving data
    uint64_t current_written = 0;  // bytes of it received so far
    uint64_t data_start = 0, data_end = 0;  // file offsets of the tensor data (begin())
    bool streamed = false;                  // write_data was called
    std::atomic<bool> placing{false};       // write_tensor_at has placed bytes
    std::unique_ptr<std::atomic<uint64_t>[]> placed_of;  // ... per tensor (begin())
    std::atomic<bool> place_failed{false};
    std::once_flag map_once;
    uint8_t* map = nullptr;  // the file mapped shared (the first write_tensor_at)

    ~Impl() {
        unmap();
        if (fd >= 0) ::close(fd);
        if (tmp_created && state != State::Finished) ::unlink(tmp_path.c_str());
    }

    void expect_declaring(std::string_view what) const {
        if (state != State::Declaring) fail("GGUF writer: ", what, " after begin()");
    }

    // Starts a record: checks the key and writes key + type; the caller appends the value.
    std::vector<uint8_t>& open_record(const std::string& key, ValueType type) {
        expect_declaring(cat("metadata key ", key, " added"));
        if (keys.count(key)) fail("GGUF writer: metadata key ", key, " added twice");
        keys.insert(key);
        ++kv_count;
        put_string(metadata, key);
        put<uint32_t>(metadata, static_cast<uint32_t>(type));
        return metadata;
    }

    template <typename T>
    void add_scalar(const std::string& key, ValueType type, T v) {
        put<T>(open_record(key, type), v);
    }

    template <typename T>
    void add_array(const std::string& key, ValueType elem, std::span<const T> v) {
        auto& out = open_record(key, ValueType::ARRAY);
        put<uint32_t>(out, static_cast<uint32_t>(elem));
        put<uint64_t>(out, v.size());
        for (const T& x : v) put<T>(out, x);
    }

    // ---- output ----

    void flush() {
        write_all(fd, buffer.data(), buffer.size(), tmp_path);
        buffer.clear();
    }

    void emit(std::span<const uint8_t> bytes) {
        if (buffer.empty() && bytes.size() >= kBufferBytes) {
            write_all(fd, bytes.data(), bytes.size(), tmp_path);
            return;
        }
        while (!bytes.empty()) {
            const size_t n = std::min(bytes.size(), kBufferBytes - buffer.size());
            buffer.insert(buffer.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(n));
            bytes = bytes.subspan(n);
            if (buffer.size() == kBufferBytes) flush();
        }
    }

    void emit_zeros(uint64_t n) {
        while (n > 0) {
            const size_t k = static_cast<size_t>(std::min<uint64_t>(n, kBufferBytes - buffer.size()));
            buffer.insert(buffer.end(), k, uint8_t{0});
            n -= k;
            if (buffer.size() == kBufferBytes) flush();
        }
    }

    std::vector<uint8_t> encode_directory() const {
        std::vector<uint8_t> out;
        for (const auto& t : tensors) {
            put_string(out, t.name);
            put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
            for (uint64_t d : t.dims) put<uint64_t>(out, d);
            put<uint32_t>(out, static_cast<uint32_t>(t.type));
            put<uint64_t>(out, t.offset);
        }
        return out;
    }

    // Moves past every tensor that has received all its bytes, padding each one.
    void settle() {
        while (current < tensors.size() && current_written == tensors[current].bytes) {
            const uint64_t bytes = tensors[current].bytes;
            emit_zeros(align_up(bytes, alignment) - bytes);
            ++current;
            current_written = 0;
        }
    }

    void begin(const std::string& out_path) {
        expect_declaring("begin() called");
        state = State::Failed;  // until the header is fully written
        path = out_path;
        tmp_path = out_path + ".tmp";

        uint64_t offset = 0;
        for (auto& t : tensors) {
            t.offset = offset;
            const uint64_t padded = align_up(t.bytes, alignment);
            if (padded < t.bytes || offset > std::numeric_limits<uint64_t>::max() - padded)
                fail(path, ": tensor data offsets overflow at tensor '", t.name, "'");
            offset += padded;
        }

        // read and write: write_tensor_at maps the file
        fd = ::open(tmp_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) fail(tmp_path, ": cannot create: ", std::strerror(errno));
        tmp_created = true;
        buffer.reserve(kBufferBytes);

        data_end = offset;
        placed_of = std::make_unique<std::atomic<uint64_t>[]>(tensors.size());
        std::vector<uint8_t> head;
        put<uint32_t>(head, kMagic);
        put<uint32_t>(head, kVersion);
        put<uint64_t>(head, tensors.size());
        put<uint64_t>(head, kv_count);
        emit(head);
        emit(metadata);
        const auto directory = encode_directory();
        emit(directory);
        const uint64_t end = head.size() + metadata.size() + directory.size();
        emit_zeros(align_up(end, alignment) - end);
        data_start = align_up(end, alignment);
        data_end += data_start;
        flush();  // the header is in the file before any placed bytes
        state = State::Writing;
        settle();  // leading zero-byte tensors need no data
    }

    // Copies tensor `index`'s bytes [at, at + size) into the file's shared mapping, from
    // any thread (parallel pwrites serialize on the inode lock; page faults of a mapping
    // do not). A throw leaves the writer unusable, as write_data's.
    void write_tensor_at(size_t index, uint64_t at, std::span<const uint8_t> bytes) {
        if (state != State::Writing || place_failed.load())
            fail("GGUF writer: write_tensor_at() outside begin()..finish()");
        const auto refuse = [&](auto&&... why) {
            place_failed = true;
            fail(why...);
        };
        if (streamed) refuse("GGUF writer: write_tensor_at() after write_data() in one file");
        if (index >= tensors.size())
            refuse(path, ": write_tensor_at: tensor index ", index, " out of range (",
                   tensors.size(), " declared)");
        const Tensor& t = tensors[index];
        if (at > t.bytes || bytes.size() > t.bytes - at)
            refuse(path, ": write_tensor_at: bytes [", at, ", ", at + bytes.size(),
                   ") outside tensor '", t.name, "' (", t.bytes, " bytes)");
        std::call_once(map_once, [&] { map_file(); });
        if (map == nullptr) refuse("GGUF writer: write_tensor_at() after a failed mapping");
        if (!bytes.empty())
            std::memcpy(map + data_start + t.offset + at, bytes.data(), bytes.size());
        placed_of[index] += bytes.size();
        if (!bytes.empty()) placing = true;
    }

    // The whole file's length reserved first (a full disk is an error here, not a SIGBUS
    // on a store into the mapping), then mapped shared; the padding stays zero.
    void map_file() {
        const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(data_end));
        if (rc != 0) {
            place_failed = true;
            fail(tmp_path, ": cannot reserve ", data_end, " bytes: ", std::strerror(rc));
        }
        void* m = ::mmap(nullptr, data_end, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            place_failed = true;
            fail(tmp_path, ": cannot map ", data_end, " bytes: ", std::strerror(errno));
        }
        map = static_cast<uint8_t*>(m);
    }

    // Every tensor placed in full (byte counts: the caller writes each byte once).
    void finish_placed() {
        for (size_t i = 0; i < tensors.size(); ++i)
            if (placed_of[i].load() != tensors[i].bytes)
                fail(path, ": tensor '", tensors[i].name, "' (#", i, ") received ",
                     placed_of[i].load(), " of its ", tensors[i].bytes, " bytes before finish()");
        unmap();
        close_and_rename();  // its fsync writes the mapping's dirty pages
    }

    void unmap() {
        if (map != nullptr) ::munmap(map, data_end);
        map = nullptr;
    }

    void close_and_rename() {
        if (::fsync(fd) != 0) fail(tmp_path, ": fsync failed: ", std::strerror(errno));
        const int rc = ::close(fd);
        fd = -1;
        if (rc != 0) fail(tmp_path, ": close failed: ", std::strerror(errno));
        if (::rename(tmp_path.c_str(), path.c_str()) != 0)
            fail(tmp_path, ": cannot rename to ", path, ": ", std::strerror(errno));
        state = State::Finished;
        sync_parent_dir(path);
    }

    void write_data(std::span<const uint8_t> bytes) {
        if (state != State::Writing) fail("GGUF writer: write_data() outside begin()..finish()");
        if (placing.load()) fail("GGUF writer: write_data() after write_tensor_at() in one file");
        streamed = true;
        state = State::Failed;
        while (!bytes.empty()) {
            if (current == tensors.size())
                fail(path, ": ", bytes.size(), " bytes of tensor data beyond the ",
                     tensors.size(), " declared tensors");
            const auto& t = tensors[current];
            const size_t n = static_cast<size_t>(std::min<uint64_t>(bytes.size(), t.bytes - current_written));
            emit(bytes.first(n));
            current_written += n;
            bytes = bytes.subspan(n);
            settle();
        }
        state = State::Writing;
    }

    void finish() {
        if (state != State::Writing || place_failed.load())
            fail("GGUF writer: finish() without a successful begin()");
        state = State::Failed;
        if (placing.load()) return finish_placed();
        if (current < tensors.size()) {
            const auto& t = tensors[current];
            fail(path, ": tensor '", t.name, "' (#", current, ") received ", current_written,
                 " of its ", t.bytes, " bytes before finish()");
        }
        flush();
        close_and_rename();
    }
};

Writer::Writer() : impl_(std::make_unique<Impl>()) {}
Writer::~Writer() = default;

void Writer::add_u8(std::string key, uint8_t v) { impl_->add_scalar(key, ValueType::U8, v); }
void Writer::add_i8(std::string key, int8_t v) { impl_->add_scalar(key, ValueType::I8, v); }
void Writer::add_u16(std::string key, uint16_t v) { impl_->add_scalar(key, ValueType::U16, v); }
void Writer::add_i16(std::string key, int16_t v) { impl_->add_scalar(key, ValueType::I16, v); }
void Writer::add_i32(std::string key, int32_t v) { impl_->add_scalar(key, ValueType::I32, v); }
void Writer::add_u64(std::string key, uint64_t v) { impl_->add_scalar(key, ValueType::U64, v); }
void Writer::add_i64(std::string key, int64_t v) { impl_->add_scalar(key, ValueType::I64, v); }
void Writer::add_f32(std::string key, float v) { impl_->add_scalar(key, ValueType::F32, v); }
void Writer::add_f64(std::string key, double v) { impl_->add_scalar(key, ValueType::F64, v); }
void Writer::add_bool(std::string key, bool v) {
    impl_->add_scalar<uint8_t>(key, ValueType::BOOL, v ? 1 : 0);
}

void Writer::add_u32(std::string key, uint32_t v) {
    // Validate before recording so a bad alignment leaves the writer unchanged.
    const uint32_t a = key == "general.alignment" ? alignment_from(v) : impl_->alignment;
    impl_->add_scalar(key, ValueType::U32, v);
    impl_->alignment = a;
}

void Writer::add_string(std::string key, std::string_view v) {
    put_string(impl_->open_record(key, ValueType::STRING), v);
}

void Writer::add_array_u8(std::string key, std::span<const uint8_t> v) {
    impl_->add_array(key, ValueType::U8, v);
}
void Writer::add_array_i8(std::string key, std::span<const int8_t> v) {
    impl_->add_array(key, ValueType::I8, v);
}
void Writer::add_array_u16(std::string key, std::span<const uint16_t> v) {
    impl_->add_array(key, ValueType::U16, v);
}
void Writer::add_array_i16(std::string key, std::span<const int16_t> v) {
    impl_->add_array(key, ValueType::I16, v);
}
void Writer::add_array_u32(std::string key, std::span<const uint32_t> v) {
    impl_->add_array(key, ValueType::U32, v);
}
void Writer::add_array_i32(std::string key, std::span<const int32_t> v) {
    impl_->add_array(key, ValueType::I32, v);
}
void Writer::add_array_f32(std::string key, std::span<const float> v) {
    impl_->add_array(key, ValueType::F32, v);
}
void Writer::add_array_f64(std::string key, std::span<const double> v) {
    impl_->add_array(key, ValueType::F64, v);
}
void Writer::add_array_u64(std::string key, std::span<const uint64_t> v) {
    impl_->add_array(key, ValueType::U64, v);
}
void Writer::add_array_i64(std::string key, std::span<const int64_t> v) {
    impl_->add_array(key, ValueType::I64, v);
}
void Writer::add_array_bool(std::string key, std::span<const bool> v) {
    std::vector<uint8_t> bytes(v.begin(), v.end());
    impl_->add_array(key, ValueType::BOOL, std::span<const uint8_t>(bytes));
}
void Writer::add_array_string(std::string key, std::span<const std::string> v) {
    auto& out = impl_->open_record(key, ValueType::ARRAY);
    put<uint32_t>(out, static_cast<uint32_t>(ValueType::STRING));
    put<uint64_t>(out, v.size());
    for (const auto& s : v) put_string(out, s);
}

void Writer::copy_kv(const File& from, const KeyValue& kv) {
    const auto value = from.raw_value(kv);
    std::string key(kv.key);
    uint32_t a = impl_->alignment;
    if (key == "general.alignment" && kv.type == ValueType::U32) {
        uint32_t v;
        std::memcpy(&v, value.data(), sizeof v);
        a = alignment_from(v);
    }
    auto& out = impl_->open_record(key, kv.type);
    out.insert(out.end(), value.begin(), value.end());
    impl_->alignment = a;
}

void Writer::add_tensor(std::string name, std::span<const uint64_t> dims, GgmlType type) {
    impl_->expect_declaring(cat("tensor '", name, "' added"));
    const auto where = [&] { return cat("GGUF writer: tensor '", name, "': "); };
    if (impl_->tensor_names.count(name)) fail(where(), "declared twice");
    if (dims.empty() || dims.size() > kMaxDims)
        fail(where(), dims.size(), " dimensions, expected 1..", kMaxDims);
    const auto info = ggml_type_info(static_cast<uint32_t>(type));
    if (!info) fail(where(), "unknown ggml type ", static_cast<uint32_t>(type));
    if (dims[0] % info->block_elems != 0)
        fail(where(), "dim[0]=", dims[0], " is not a multiple of the ", info->name,
             " block size ", info->block_elems);
    uint64_t elements = 1;
    for (uint64_t d : dims) {
        if (d != 0 && elements > std::numeric_limits<uint64_t>::max() / d)
            fail(where(), "element count overflow");
        elements *= d;
    }
    const uint64_t bytes = ggml_row_bytes(type, elements);
    impl_->tensor_names.insert(name);
    impl_->tensors.push_back({std::move(name), {dims.begin(), dims.end()}, type, bytes});
}

void Writer::begin(const std::string& path) { impl_->begin(path); }
void Writer::write_data(std::span<const uint8_t> bytes) { impl_->write_data(bytes); }
void Writer::write_tensor_at(size_t index, uint64_t at, std::span<const uint8_t> bytes) {
    impl_->write_tensor_at(index, at, bytes);
}
void Writer::finish() { impl_->finish(); }

uint64_t Writer::tensor_bytes(size_t index) const {
    if (index >= impl_->tensors.size())
        fail("GGUF writer: tensor index ", index, " out of range (", impl_->tensors.size(),
             " declared)");
    return impl_->tensors[index].bytes;
}

size_t Writer::tensor_count() const { return impl_->tensors.size(); }
uint32_t Writer::alignment() const { return impl_->alignment; }

}  // namespace ds4::gguf
