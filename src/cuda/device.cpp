#include "cuda/device.h"

namespace ds4::cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
    fail("CUDA error in ", call, " (", file, ":", line, "): ", cudaGetErrorName(err), ": ",
         cudaGetErrorString(err));
}

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" status
        return 0;
    }
    return n;
}

namespace {
int current_device_attribute(cudaDeviceAttr attr) {
    int dev = 0, v = 0;
    DS4_CUDA_CHECK(cudaGetDevice(&dev));
    DS4_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, dev));
    return v;
}
}  // namespace

uint64_t device_smem_optin() {
    static const auto bytes =
        static_cast<uint64_t>(current_device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
    return bytes;
}

uint32_t device_sm_count() {
    static const auto n =
        static_cast<uint32_t>(current_device_attribute(cudaDevAttrMultiProcessorCount));
    return n;
}

int device_cc_major_or_zero() {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return major;
}

DeviceInfo device_info(int ordinal) {
    cudaDeviceProp p{};
    DS4_CUDA_CHECK(cudaGetDeviceProperties(&p, ordinal));
    DeviceInfo info;
    info.ordinal = ordinal;
    info.name = p.name;
    info.sm_count = p.multiProcessorCount;
    info.cc_major = p.major;
    info.cc_minor = p.minor;
    info.l2_bytes = static_cast<size_t>(p.l2CacheSize);
    DS4_CUDA_CHECK(cudaSetDevice(ordinal));
    DS4_CUDA_CHECK(cudaMemGetInfo(&info.free_bytes, &info.total_bytes));
    return info;
}

void ensure_fits(size_t bytes, const std::string& what) {
    size_t free_b = 0, total_b = 0;
    DS4_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    // Keep a little headroom for the CUDA context's own allocations (graphs, kernels).
    constexpr size_t kHeadroom = size_t{256} << 20;
    if (bytes + kHeadroom > free_b) {
        constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
        fail(what, " needs ", static_cast<double>(bytes) / kGiB, " GiB of GPU memory but only ",
             static_cast<double>(free_b) / kGiB, " GiB of ", static_cast<double>(total_b) / kGiB,
             " GiB are free (use a smaller model, fewer layers or a smaller --ctx)");
    }
}

GraphExec capture_graph(cudaStream_t s, const std::function<void()>& body) {
    // thread-local: another thread's unrelated CUDA calls do not break this capture
    DS4_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
        body();
    } catch (...) {
        if (cudaStreamEndCapture(s, &graph) == cudaSuccess && graph != nullptr)
            cudaGraphDestroy(graph);
        cudaGetLastError();  // the error a broken capture leaves for the next check
        throw;
    }
    DS4_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    GraphExec exec;
    const cudaError_t err = cudaGraphInstantiate(&exec.e_, graph, 0);
    cudaGraphDestroy(graph);
    DS4_CUDA_CHECK(err);
    return exec;
}

}  // namespace ds4::cuda
