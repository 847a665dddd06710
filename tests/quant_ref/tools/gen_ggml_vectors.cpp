// Generates tests/data/quant_ref/ggml_quantizer_vectors.safetensors: inputs and the
// bytes ggml's own quantizers produce for them, so ds4's reference quantizers can be
// checked byte-for-byte without ggml at test time. Not built by CMake; run by hand:
//
//   npm pack @node-llama-cpp/linux-x64@3.22.1 && tar xzf node-llama-cpp-linux-x64-3.22.1.tgz
//   g++ -std=c++20 -O2 gen_ggml_vectors.cpp -ldl -o gen
//   ./gen package/bins/linux-x64/libggml-base.so OUT.safetensors
//
// (that prebuilt libggml-base.so is llama.cpp built without FMA; its x86-64 baseline
// code is what ggml's reference quantizers compute). Only ggml's public C entry points
// are called: quantize_q8_0 / quantize_q2_K / quantize_q4_K / quantize_iq2_xxs
// (nrow = 1) and quantize_row_q8_K_ref.
#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using QuantizeFn = size_t (*)(const float*, void*, int64_t, int64_t, const float*);
using RowFn = void (*)(const float*, void*, int64_t);
using InitFn = void (*)(int);

constexpr int kRows = 32;
constexpr int kN = 256;  // one block per row for the K/IQ types, 8 for Q8_0

// Row r's values: a different shape per row, covering the code paths of the fits.
void make_row(int r, std::mt19937& rng, float* x, float* w) {
    std::normal_distribution<float> nd;
    std::uniform_real_distribution<float> ud(-1.f, 1.f);
    std::student_t_distribution<float> td(2.f);
    const float scale = std::exp(ud(rng) * 4.f);
    for (int i = 0; i < kN; ++i) {
        float v = 0;
        switch (r % 10) {
            case 0:
                v = nd(rng);
                break;
            case 1:
                v = ud(rng);
                break;
            case 2:
                v = td(rng);
                break;
            case 3:
                v = nd(rng) + 0.7f;
                break;
            case 4:
                v = std::fabs(nd(rng));
                break;
            case 5:
                v = -std::fabs(nd(rng));
                break;
            case 6:
                v = (rng() % 3 == 0) ? 0.f : nd(rng);
                break;
            case 7:
                v = nd(rng) * ((i % 37 == 3) ? 25.f : 1.f);
                break;
            case 8:
                v = (i / 32 == 2) ? 0.f : nd(rng);
                break;  // one all-zero group
            default:
                v = ud(rng) * 0.01f + 0.3f;
                break;  // nearly constant
        }
        x[i] = v * scale;
        w[i] = std::exp(1.5f * nd(rng));
    }
    // special rows: all zero, constant, tiny, subnormal, large, zero importance
    if (r == 20)
        for (int i = 0; i < kN; ++i) x[i] = 0.f;
    if (r == 21)
        for (int i = 0; i < kN; ++i) x[i] = -0.37f;
    if (r == 22)
        for (int i = 0; i < kN; ++i) x[i] *= 1e-30f;
    if (r == 23)
        for (int i = 0; i < kN; ++i) x[i] = nd(rng) * 1e-40f;
    if (r == 24)
        for (int i = 0; i < kN; ++i) x[i] = nd(rng) * 3000.f;
    if (r == 25)
        for (int i = 0; i < kN; ++i) w[i] = 0.f;
    if (r == 26)
        for (int i = 0; i < kN; i += 2) w[i] = 0.f;
}

struct Tensor {
    std::string name, dtype;
    std::vector<int> shape;
    std::vector<uint8_t> data;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s libggml-base.so out.safetensors\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW);
    if (lib == nullptr) {
        std::fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    auto sym = [&](const char* name) {
        void* p = dlsym(lib, name);
        if (p == nullptr) {
            std::fprintf(stderr, "missing %s\n", name);
            std::exit(1);
        }
        return p;
    };
    auto q8_0 = reinterpret_cast<QuantizeFn>(sym("quantize_q8_0"));
    auto q2_K = reinterpret_cast<QuantizeFn>(sym("quantize_q2_K"));
    auto q4_K = reinterpret_cast<QuantizeFn>(sym("quantize_q4_K"));
    auto iq2_xxs = reinterpret_cast<QuantizeFn>(sym("quantize_iq2_xxs"));
    auto q8_K = reinterpret_cast<RowFn>(sym("quantize_row_q8_K_ref"));
    reinterpret_cast<InitFn>(sym("ggml_quantize_init"))(16 /* GGML_TYPE_IQ2_XXS */);

    std::mt19937 rng(20250601);
    std::vector<float> x(kRows * kN), w(kRows * kN);
    for (int r = 0; r < kRows; ++r) make_row(r, rng, &x[r * kN], &w[r * kN]);

    auto run = [&](const char* name, size_t row_bytes, auto&& fn) {
        Tensor t{name,
                 "U8",
                 {kRows, static_cast<int>(row_bytes)},
                 std::vector<uint8_t>(kRows * row_bytes, 0)};
        for (int r = 0; r < kRows; ++r) fn(&x[r * kN], &w[r * kN], &t.data[r * row_bytes]);
        return t;
    };
    std::vector<Tensor> tensors;
    auto floats = [](const char* name, const std::vector<float>& v) {
        Tensor t{name, "F32", {kRows, kN}, std::vector<uint8_t>(v.size() * 4)};
        std::memcpy(t.data.data(), v.data(), t.data.size());
        return t;
    };
    tensors.push_back(floats("input", x));
    tensors.push_back(floats("importance", w));
    tensors.push_back(run("Q8_0", 8 * 34, [&](const float* xr, const float*, uint8_t* y) {
        q8_0(xr, y, 1, kN, nullptr);
    }));
    tensors.push_back(run("Q2_K", 84, [&](const float* xr, const float*, uint8_t* y) {
        q2_K(xr, y, 1, kN, nullptr);
    }));
    tensors.push_back(run("Q2_K.imatrix", 84, [&](const float* xr, const float* wr, uint8_t* y) {
        q2_K(xr, y, 1, kN, wr);
    }));
    tensors.push_back(run("Q4_K", 144, [&](const float* xr, const float*, uint8_t* y) {
        q4_K(xr, y, 1, kN, nullptr);
    }));
    tensors.push_back(run("Q4_K.imatrix", 144, [&](const float* xr, const float* wr, uint8_t* y) {
        q4_K(xr, y, 1, kN, wr);
    }));
    tensors.push_back(run("IQ2_XXS.imatrix", 66, [&](const float* xr, const float* wr, uint8_t* y) {
        iq2_xxs(xr, y, 1, kN, wr);
    }));
    tensors.push_back(
        run("Q8_K", 292, [&](const float* xr, const float*, uint8_t* y) { q8_K(xr, y, kN); }));

    std::string header =
        "{\"__metadata__\":{\"producer\":\"tests/quant_ref/tools/gen_ggml_vectors.cpp\","
        "\"library\":\"libggml-base.so from npm @node-llama-cpp/linux-x64@3.22.1\","
        "\"seed\":\"20250601\"}";
    size_t offset = 0;
    for (const auto& t : tensors) {
        header += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[" +
                  std::to_string(t.shape[0]) + "," + std::to_string(t.shape[1]) +
                  "],\"data_offsets\":[" + std::to_string(offset) + "," +
                  std::to_string(offset + t.data.size()) + "]}";
        offset += t.data.size();
    }
    header += "}";
    while (header.size() % 8 != 0) header += ' ';
    FILE* f = std::fopen(argv[2], "wb");
    if (f == nullptr) return 1;
    const uint64_t len = header.size();
    std::fwrite(&len, 8, 1, f);
    std::fwrite(header.data(), 1, header.size(), f);
    for (const auto& t : tensors) std::fwrite(t.data.data(), 1, t.data.size(), f);
    std::fclose(f);
    std::printf("wrote %s (%zu bytes of tensors)\n", argv[2], offset);
    return 0;
}
