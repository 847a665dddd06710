#include "gguf_builder.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "ds4/error.h"

namespace ds4::gguf::testing {

Bytes& Bytes::append(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    data_.insert(data_.end(), b, b + n);
    return *this;
}

Bytes& Bytes::str(std::string_view s) {
    put<uint64_t>(s.size());
    return append(s.data(), s.size());
}

Bytes& Bytes::zeros(size_t n) {
    data_.insert(data_.end(), n, uint8_t{0});
    return *this;
}

RawGguf& RawGguf::kv(std::string_view key, ValueType type, const Bytes& value) {
    Bytes b;
    b.str(key).u32(static_cast<uint32_t>(type)).raw(value.data());
    kvs.push_back(b.data());
    return *this;
}

static Bytes encode_infos(const std::vector<RawTensor>& tensors) {
    Bytes b;
    for (const auto& t : tensors) {
        b.str(t.name).u32(static_cast<uint32_t>(t.dims.size()));
        for (uint64_t d : t.dims) b.u64(d);
        b.u32(t.type).u64(t.offset);
    }
    return b;
}

size_t RawGguf::infos_end() const {
    size_t n = 24;
    for (const auto& kv : kvs) n += kv.size();
    return n + encode_infos(tensors).size();
}

std::vector<uint8_t> RawGguf::build() const {
    Bytes b;
    b.u32(magic).u32(version);
    b.u64(tensor_count.value_or(tensors.size()));
    b.u64(kv_count.value_or(kvs.size()));
    for (const auto& kv : kvs) b.raw(kv);
    b.raw(encode_infos(tensors).data());
    if (b.size() % alignment) b.zeros(alignment - b.size() % alignment);
    b.raw(data);
    return b.data();
}

Bytes nested_array(int depth) {
    Bytes b;
    if (depth == 1) {
        b.u32(static_cast<uint32_t>(ValueType::U32)).u64(2).u32(7).u32(9);
        return b;
    }
    // Two elements, each an array value one level shallower (element type, count, items).
    const Bytes inner = nested_array(depth - 1);
    b.u32(static_cast<uint32_t>(ValueType::ARRAY)).u64(2).raw(inner.data()).raw(inner.data());
    return b;
}

SampleFile make_sample_file() {
    RawGguf g;
    g.kv("general.architecture", ValueType::STRING, Bytes().str("deepseek4"));
    g.kv_scalar<uint32_t>("general.alignment", ValueType::U32, 32);
    g.kv_scalar<uint8_t>("t.u8", ValueType::U8, 200);
    g.kv_scalar<int16_t>("t.i16", ValueType::I16, -1234);
    g.kv_scalar<float>("t.f32", ValueType::F32, 1.5f);
    g.kv_scalar<uint64_t>("t.u64", ValueType::U64, 1ull << 40);
    g.kv_scalar<double>("t.f64", ValueType::F64, -2.25);
    g.kv_scalar<uint8_t>("t.bool", ValueType::BOOL, 1);
    g.kv("t.tokens", ValueType::ARRAY,
         Bytes().u32(static_cast<uint32_t>(ValueType::STRING)).u64(3).str("a").str("").str("xyz"));
    g.kv("t.ratios", ValueType::ARRAY,
         Bytes().u32(static_cast<uint32_t>(ValueType::I32)).u64(3).u32(0).u32(4).u32(128));
    g.kv("t.nested", ValueType::ARRAY, nested_array(3));

    SampleFile s;
    // F32 [8] at 0 (32 B), Q8_0 [32, 2] at 32 (68 B), I32 [3] at 128 (12 B), F16 [4] at 160.
    g.tensor("norm.weight", {8}, GgmlType::F32, 0);
    g.tensor("blk.0.attn_kv.weight", {32, 2}, GgmlType::Q8_0, 32);
    g.tensor("tid2eid", {3}, GgmlType::I32, 128);
    g.tensor("half", {4}, GgmlType::F16, 160);
    const std::pair<uint64_t, uint64_t> extents[] = {{0, 32}, {32, 68}, {128, 12}, {160, 8}};
    g.data.assign(192, 0);
    for (const auto& [off, n] : extents) {
        std::vector<uint8_t> t(n);
        for (uint64_t i = 0; i < n; ++i) t[i] = static_cast<uint8_t>(off * 7 + i * 13 + 1);
        std::copy(t.begin(), t.end(), g.data.begin() + static_cast<ptrdiff_t>(off));
        s.tensor_bytes.push_back(std::move(t));
    }
    s.bytes = g.build();
    s.infos_end = g.infos_end();
    return s;
}

namespace {
template <typename F>
void attempt(F&& f) {
    try {
        f();
    } catch (const ds4::Error&) {
    }
}
}  // namespace

// Calls the getter that matches each record's type (lookups go by key, so with
// duplicate keys the first record answers and may throw), plus the mismatching
// helpers that exercise the error paths.
uint64_t exercise_all(const File& f) {
    uint64_t sum = f.version() + f.alignment() + f.data_start() + f.size();
    for (const auto& kv : f.metadata()) {
        const std::string_view k = kv.key;
        sum += f.has(k) + f.raw_value(kv).size();
        attempt([&] {
            switch (kv.type) {
                case ValueType::U8: sum += f.get_u8(k).value_or(0); break;
                case ValueType::I8: sum += static_cast<uint64_t>(f.get_i8(k).value_or(0)); break;
                case ValueType::U16: sum += f.get_u16(k).value_or(0); break;
                case ValueType::I16: sum += static_cast<uint64_t>(f.get_i16(k).value_or(0)); break;
                case ValueType::U32: sum += f.require_u32(k); break;
                case ValueType::I32: sum += static_cast<uint64_t>(f.get_i32(k).value_or(0)); break;
                case ValueType::U64: sum += f.get_u64(k).value_or(0); break;
                case ValueType::I64: sum += static_cast<uint64_t>(f.get_i64(k).value_or(0)); break;
                case ValueType::F32: sum += f.get_f32(k).value_or(0) != 0; break;
                case ValueType::F64: sum += f.get_f64(k).value_or(0) != 0; break;
                case ValueType::BOOL: sum += f.require_bool(k); break;
                case ValueType::STRING: sum += f.require_string(k).size(); break;
                case ValueType::ARRAY:
                    if (kv.array_type == ValueType::STRING) {
                        for (auto s : f.get_string_array(k)) sum += s.size() + (s.empty() ? 0 : s.back());
                    } else if (kv.array_type == ValueType::F32 || kv.array_type == ValueType::F64) {
                        for (auto v : f.get_float_array(k)) sum += v != 0;
                    } else if (kv.array_type == ValueType::BOOL) {
                        for (auto v : f.get_bool_array(k)) sum += v;
                    } else if (kv.array_type != ValueType::ARRAY) {
                        for (auto v : f.get_int_array(k)) sum += static_cast<uint64_t>(v);
                    }
                    break;
            }
        });
        attempt([&] { sum += f.require_integer(k); });
        attempt([&] { sum += f.require_float(k) != 0; });
        attempt([&] { sum += f.get_string(k).value_or("").size(); });
    }
    for (const auto& t : f.tensors()) {
        sum += f.find_tensor(t.name) != nullptr;
        attempt([&] {
            for (uint8_t b : f.tensor_data(t)) sum += b;
        });
    }
    return sum;
}

std::string temp_path(std::string_view stem) {
    static std::atomic<int> counter{0};
    const std::filesystem::path dir = std::filesystem::path(DS4_BINARY_DIR) / "test-tmp";
    std::filesystem::create_directories(dir);
    return (dir / cat("gguf-", stem, "-", ::getpid(), "-", counter++, ".gguf")).string();
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, ": cannot open");
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) fail(path, ": cannot write");
}

}  // namespace ds4::gguf::testing
