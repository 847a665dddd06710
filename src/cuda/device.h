// RAII wrappers for device memory, streams and events, plus device queries. Every
// failure throws ds4::Error (see check.h); destructors never throw.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cuda/check.h"
#include "cuda/env_switch.h"

namespace ds4::cuda {

struct DeviceInfo {
    int ordinal = 0;
    std::string name;
    int sm_count = 0;
    int cc_major = 0, cc_minor = 0;
    size_t total_bytes = 0;
    size_t free_bytes = 0;
    size_t l2_bytes = 0;
};

int device_count();  // 0 when no driver / no GPU (never throws)
DeviceInfo device_info(int ordinal = 0);
// The current device's shared memory per block with the opt-in attribute (sm_80: 163 KB,
// sm_90: 227 KB, sm_86 / 89 / 120: 99 KB), asked once: kernels that need more than the
// default 48 KB check it, so that a smaller card takes another path (or a smaller tile)
// instead of failing at cudaFuncSetAttribute.
uint64_t device_smem_optin();
// The current device's compute capability major, 0 without a usable device (the error
// cleared, never throws): for the switches that pick a kernel family by architecture.
int device_cc_major_or_zero();

// A kernel family's switch: on unless $env is "0", and only on a device of compute
// capability min_cc_major or newer; decided at first use. set(): on (still subject to
// both) or off for the launches that follow (the forward when it opens, tests).
class DeviceSwitch {
public:
    constexpr DeviceSwitch(const char* env, int min_cc_major) : env_(env), min_cc_(min_cc_major) {}
    bool on() {
        int v = state_.load(std::memory_order_relaxed);
        if (v < 0) {
            v = allowed() ? 1 : 0;
            state_.store(v, std::memory_order_relaxed);
        }
        return v != 0;
    }
    void set(bool on) { state_.store(on && allowed() ? 1 : 0, std::memory_order_relaxed); }

private:
    bool allowed() const { return env_switch_on(env_) && device_cc_major_or_zero() >= min_cc_; }
    const char* env_;
    int min_cc_;
    std::atomic<int> state_{-1};  // -1: not decided yet
};
// The current device's streaming multiprocessors, asked once (grid sizes by the card).
uint32_t device_sm_count();
// Blocks of `threads` threads of `kernel` that fit the current device at once (at least
// 1): the grid of a persistent kernel. Asks the driver; callers keep the answer.
template <class Kernel>
unsigned device_resident_blocks(Kernel kernel, int threads) {
    int per_sm = 0;
    DS4_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
    return per_sm > 0 ? device_sm_count() * static_cast<unsigned>(per_sm) : 1u;
}

// Throws a ds4::Error that says how much `what` needs and how much is free, before an
// allocation that would fail with a bare "out of memory".
void ensure_fits(size_t bytes, const std::string& what);

// Owning device allocation of `count` elements of T (uninitialised).
template <typename T>
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t count) : count_(count) {
        if (count_ != 0) DS4_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), bytes()));
    }
    ~DeviceBuffer() {
        if (ptr_ != nullptr) cudaFree(ptr_);
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& o) noexcept
        : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        if (this != &o) {
            if (ptr_ != nullptr) cudaFree(ptr_);
            ptr_ = std::exchange(o.ptr_, nullptr);
            count_ = std::exchange(o.count_, 0);
        }
        return *this;
    }

    T* data() { return ptr_; }
    const T* data() const { return ptr_; }
    size_t size() const { return count_; }
    size_t bytes() const { return count_ * sizeof(T); }

    // Complete on return, also for kernels on non-blocking streams: a cudaMemcpy from
    // pageable memory may return before its DMA lands and cudaMemset is asynchronous; both
    // run on the legacy stream, which non-blocking streams do not wait for (the likely
    // cause of one failure of CudaMultiProduct.PdlChainMatchesPlainLaunches, whose
    // chains start on a Stream right after x.upload).
    void upload(std::span<const T> host) {
        if (host.size() > count_) fail("cuda upload: ", host.size(), " elements into a buffer of ", count_);
        DS4_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), host.size_bytes(), cudaMemcpyHostToDevice));
        DS4_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    }
    std::vector<T> download() const {
        std::vector<T> host(count_);
        DS4_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost));
        return host;
    }
    // Byte-pattern fill (tests poison outputs with 0xff = NaN before a kernel runs).
    void fill_bytes(int byte) {
        DS4_CUDA_CHECK(cudaMemset(ptr_, byte, bytes()));
        DS4_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    }

private:
    T* ptr_ = nullptr;
    size_t count_ = 0;
};

template <typename T>
DeviceBuffer<T> to_device(std::span<const T> host) {
    DeviceBuffer<T> d(host.size());
    d.upload(host);
    return d;
}

class Stream {
public:
    Stream() { DS4_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
    ~Stream() {
        if (s_ != nullptr) cudaStreamDestroy(s_);
    }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    cudaStream_t get() const { return s_; }
    void sync() const { DS4_CUDA_CHECK(cudaStreamSynchronize(s_)); }

private:
    cudaStream_t s_ = nullptr;
};

class Event {
public:
    Event() { DS4_CUDA_CHECK(cudaEventCreate(&e_)); }
    // flags: cudaEventDisableTiming for an event that only orders streams
    explicit Event(unsigned flags) { DS4_CUDA_CHECK(cudaEventCreateWithFlags(&e_, flags)); }
    ~Event() {
        if (e_ != nullptr) cudaEventDestroy(e_);
    }
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;
    void record(cudaStream_t s) { DS4_CUDA_CHECK(cudaEventRecord(e_, s)); }
    void sync() const { DS4_CUDA_CHECK(cudaEventSynchronize(e_)); }
    cudaEvent_t get() const { return e_; }
    // Milliseconds from `start` to this event (both recorded and complete).
    float ms_since(const Event& start) const {
        float ms = 0;
        DS4_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
        return ms;
    }

private:
    cudaEvent_t e_ = nullptr;
};

// An instantiated CUDA graph (cudaGraphExec_t): the launches of a captured stream
// segment, replayed with one launch.
class GraphExec {
public:
    GraphExec() = default;
    ~GraphExec() {
        if (e_ != nullptr) cudaGraphExecDestroy(e_);
    }
    GraphExec(const GraphExec&) = delete;
    GraphExec& operator=(const GraphExec&) = delete;
    GraphExec(GraphExec&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
    GraphExec& operator=(GraphExec&& o) noexcept {
        if (this != &o) {
            if (e_ != nullptr) cudaGraphExecDestroy(e_);
            e_ = std::exchange(o.e_, nullptr);
        }
        return *this;
    }
    void launch(cudaStream_t s) const { DS4_CUDA_CHECK(cudaGraphLaunch(e_, s)); }

private:
    friend GraphExec capture_graph(cudaStream_t s, const std::function<void()>& body);
    cudaGraphExec_t e_ = nullptr;
};

// Runs `body` (stream work on s only, no host syncs) under stream capture and returns
// the instantiated graph; nothing executes until it is launched. A throw from body
// ends the capture and propagates.
GraphExec capture_graph(cudaStream_t s, const std::function<void()>& body);

}  // namespace ds4::cuda
