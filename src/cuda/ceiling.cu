#include "cuda/ceiling.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "cuda/device.h"

namespace ds4::cuda {

CopyCeiling measure_copy_ceiling(uint64_t bytes, int reps) {
    if (bytes == 0 || reps <= 0) fail("measure_copy_ceiling: bytes and reps must be positive");
    if (device_count() == 0) fail("measure_copy_ceiling: no CUDA device is visible");
    ensure_fits(2 * bytes, "the device-to-device copy ceiling (two buffers)");
    CopyCeiling c;
    c.bytes = bytes;
    c.reps = reps;
    c.device = device_info(0).name;
    DeviceBuffer<uint8_t> src(bytes), dst(bytes);
    // Touch both buffers first: the first pass over fresh allocations pays page mapping.
    src.fill_bytes(1);
    dst.fill_bytes(0);
    Stream stream;
    const auto copy = [&] {
        DS4_CUDA_CHECK(
            cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream.get()));
    };
    copy();
    stream.sync();
    std::vector<float> ms;
    for (int i = 0; i < reps; ++i) {
        Event a, b;
        a.record(stream.get());
        copy();
        b.record(stream.get());
        b.sync();
        ms.push_back(b.ms_since(a));
    }
    std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
    c.copy_gbs = 2.0 * double(bytes) / (double(ms[size_t(reps / 2)]) * 1e6);
    return c;
}

DeviceMemory device_memory() {
    const DeviceInfo d = device_info(0);
    return DeviceMemory{d.name, d.free_bytes, d.total_bytes};
}

namespace {

// The few cuBLAS entry points the ceiling needs, resolved from a dlopen'ed library.
struct Cublas {
    void* lib = nullptr;
    std::string path;
    decltype(&cublasCreate_v2) create = nullptr;
    decltype(&cublasDestroy_v2) destroy = nullptr;
    decltype(&cublasSetStream_v2) set_stream = nullptr;
    // spelled out: C++ sees two cublasGemmEx overloads (compute type as enum or data type)
    using GemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int,
                                      int, int, const void*, const void*, cudaDataType, int,
                                      const void*, cudaDataType, int, const void*, void*,
                                      cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
    GemmEx gemm = nullptr;

    Cublas() = default;
    Cublas(const Cublas&) = delete;
    Cublas& operator=(const Cublas&) = delete;
    ~Cublas() {
        if (lib != nullptr) dlclose(lib);
    }
    // Tries DS4_CUBLAS, then the loader's search path; returns why it failed, or "".
    std::string load() {
        std::vector<std::string> names;
        if (const char* env = std::getenv("DS4_CUBLAS"); env != nullptr && *env != 0)
            names.emplace_back(env);
        names.emplace_back("libcublas.so.13");
        names.emplace_back("libcublas.so");
        std::string why;
        for (const std::string& name : names) {
            lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
            if (lib != nullptr) {
                path = name;
                break;
            }
            const char* e = dlerror();
            why = e != nullptr ? e : name + ": cannot be loaded";
        }
        if (lib == nullptr)
            return "cuBLAS not found (" + why + "; set DS4_CUBLAS=/path/to/libcublas.so.13)";
        create = reinterpret_cast<decltype(create)>(dlsym(lib, "cublasCreate_v2"));
        destroy = reinterpret_cast<decltype(destroy)>(dlsym(lib, "cublasDestroy_v2"));
        set_stream = reinterpret_cast<decltype(set_stream)>(dlsym(lib, "cublasSetStream_v2"));
        gemm = reinterpret_cast<GemmEx>(dlsym(lib, "cublasGemmEx"));
        if (create == nullptr || destroy == nullptr || set_stream == nullptr || gemm == nullptr)
            return path + " lacks cublasCreate_v2/cublasGemmEx";
        return "";
    }
};

void check_cublas(cublasStatus_t st, const char* what) {
    if (st != CUBLAS_STATUS_SUCCESS)
        fail("gemm ceiling: ", what, " failed with cuBLAS status ", int(st));
}

// Uniform values in [-1, 1) from a hash of the index: random enough to keep the
// multipliers' switching activity (and so the clock) realistic.
__global__ void fill_random_bf16(__nv_bfloat16* p, uint64_t n, uint32_t seed) {
    for (uint64_t i = blockIdx.x * uint64_t{blockDim.x} + threadIdx.x; i < n;
         i += uint64_t{gridDim.x} * blockDim.x) {
        uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = __float2bfloat16(static_cast<float>(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
    }
}

}  // namespace

GemmCeiling measure_gemm_ceiling(uint32_t n, int reps) {
    if (n == 0 || n % 16 != 0 || reps <= 0)
        fail("measure_gemm_ceiling: n must be a positive multiple of 16, reps > 0");
    if (device_count() == 0) fail("measure_gemm_ceiling: no CUDA device is visible");
    GemmCeiling c;
    c.n = n;
    c.reps = reps;
    Cublas blas;
    c.why_not = blas.load();
    if (!c.why_not.empty()) return c;
    c.library = blas.path;
    const uint64_t elems = uint64_t{n} * n;
    ensure_fits(elems * (2 * sizeof(__nv_bfloat16) + sizeof(float)), "the GEMM ceiling (A, B, C)");
    DeviceBuffer<__nv_bfloat16> a(elems), b(elems);
    DeviceBuffer<float> out(elems);
    Stream stream;
    fill_random_bf16<<<1024, 256, 0, stream.get()>>>(a.data(), elems, 1u);
    fill_random_bf16<<<1024, 256, 0, stream.get()>>>(b.data(), elems, 2u);
    DS4_CUDA_CHECK(cudaGetLastError());
    cublasHandle_t h = nullptr;
    check_cublas(blas.create(&h), "cublasCreate");
    const float alpha = 1.0f, beta = 0.0f;
    std::vector<float> ms;
    try {
        check_cublas(blas.set_stream(h, stream.get()), "cublasSetStream");
        const int ni = static_cast<int>(n);
        const auto gemm = [&] {
            check_cublas(blas.gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, ni, ni, ni, &alpha, a.data(),
                                   CUDA_R_16BF, ni, b.data(), CUDA_R_16BF, ni, &beta, out.data(),
                                   CUDA_R_32F, ni, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                         "cublasGemmEx");
        };
        gemm();
        stream.sync();
        for (int i = 0; i < reps; ++i) {
            Event e0, e1;
            e0.record(stream.get());
            gemm();
            e1.record(stream.get());
            e1.sync();
            ms.push_back(e1.ms_since(e0));
        }
    } catch (...) {
        blas.destroy(h);
        throw;
    }
    blas.destroy(h);
    std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
    c.gflops = 2.0 * double(n) * double(n) * double(n) / (double(ms[size_t(reps / 2)]) * 1e6);
    return c;
}

}  // namespace ds4::cuda
