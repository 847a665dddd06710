// libFuzzer target: parse arbitrary bytes as GGUF. The only acceptable outcomes are a
// parsed File whose every accessor works, or a ds4::Error. Anything else (another
// exception escapes, an ASan/UBSan report, a crash) is a finding.
#include <cstddef>
#include <cstdint>
#include <span>

#include "ds4/error.h"
#include "gguf/gguf.h"

namespace {

using ds4::gguf::File;
using ds4::gguf::ValueType;

template <typename F>
void attempt(F&& f) {
    try {
        f();
    } catch (const ds4::Error&) {
    }
}

uint64_t exercise(const File& f) {
    uint64_t sum = f.alignment() + f.data_start();
    for (const auto& kv : f.metadata()) {
        const std::string_view k = kv.key;
        for (uint8_t b : f.raw_value(kv)) sum += b;
        attempt([&] { sum += f.get_u32(k).value_or(0); });
        attempt([&] { sum += f.get_u64(k).value_or(0); });
        attempt([&] { sum += static_cast<uint64_t>(f.get_i8(k).value_or(0)); });
        attempt([&] { sum += f.get_bool(k).value_or(false); });
        attempt([&] { sum += f.get_string(k).value_or("").size(); });
        attempt([&] { sum += f.require_integer(k); });
        attempt([&] { sum += f.require_float(k) > 0; });
        if (kv.type != ValueType::ARRAY) continue;
        attempt([&] {
            for (auto s : f.get_string_array(k)) sum += s.size() + (s.empty() ? 0 : s[0]);
        });
        attempt([&] {
            for (auto v : f.get_int_array(k)) sum += static_cast<uint64_t>(v);
        });
        attempt([&] {
            for (auto v : f.get_float_array(k)) sum += v > 0;
        });
        attempt([&] {
            for (auto v : f.get_bool_array(k)) sum += v;
        });
    }
    for (const auto& t : f.tensors()) {
        sum += f.find_tensor(t.name) == &t;
        attempt([&] {
            const auto d = f.tensor_data(t);
            if (!d.empty()) sum += d.front() + d.back();
        });
    }
    return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const File f = File::parse(std::span<const uint8_t>(data, size), "fuzz.gguf");
        volatile uint64_t sink = exercise(f);
        (void)sink;
    } catch (const ds4::Error&) {
    }
    return 0;
}
