#include "cuda/stager.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "cuda/check.h"
#include "ds4/error.h"

namespace ds4::cuda {
namespace {

// A page-cache memcpy runs at a few GB/s a thread: pieces split over threads, none under this.
constexpr uint64_t kMinPerThread = uint64_t{256} << 10;

}  // namespace

HostStager::HostStager(cudaStream_t stream, uint64_t piece_bytes) : stream_(stream), piece_(piece_bytes) {
    if (piece_ == 0) fail("cuda: host staging pieces of 0 bytes");
    threads_ = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
    for (size_t b = 0; b < kBuffers; ++b) {
        DS4_CUDA_CHECK(cudaMallocHost(&buf_[b], piece_));
        DS4_CUDA_CHECK(cudaEventCreateWithFlags(&done_[b], cudaEventDisableTiming));
    }
}

HostStager::~HostStager() {
    cudaStreamSynchronize(stream_);
    for (size_t b = 0; b < kBuffers; ++b) {
        if (done_[b] != nullptr) cudaEventDestroy(done_[b]);
        if (buf_[b] != nullptr) cudaFreeHost(buf_[b]);
    }
}

void HostStager::copy(void* dst, const void* src, uint64_t n) {
    auto* d = static_cast<uint8_t*>(dst);
    const auto* s = static_cast<const uint8_t*>(src);
    for (uint64_t at = 0; at < n; at += piece_) copy_piece(d + at, s + at, std::min(piece_, n - at));
}

void HostStager::finish() { DS4_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

// The buffer's previous DMA done, filled, its DMA queued and marked.
void HostStager::copy_piece(uint8_t* dst, const uint8_t* src, uint64_t n) {
    const size_t b = next_++ % kBuffers;
    if (used_[b]) DS4_CUDA_CHECK(cudaEventSynchronize(done_[b]));
    fill(static_cast<uint8_t*>(buf_[b]), src, n);
    DS4_CUDA_CHECK(cudaMemcpyAsync(dst, buf_[b], n, cudaMemcpyHostToDevice, stream_));
    DS4_CUDA_CHECK(cudaEventRecord(done_[b], stream_));
    used_[b] = true;
}

void HostStager::fill(uint8_t* dst, const uint8_t* src, uint64_t n) const {
    const uint64_t parts = std::min<uint64_t>(threads_, std::max<uint64_t>(1, n / kMinPerThread));
    if (parts <= 1) {
        std::memcpy(dst, src, n);
        return;
    }
    const uint64_t step = (n + parts - 1) / parts;
    std::vector<std::thread> pool;
    pool.reserve(parts - 1);
    for (uint64_t i = 1; i < parts && i * step < n; ++i) {
        const uint64_t at = i * step, len = std::min(step, n - at);
        pool.emplace_back([=] { std::memcpy(dst + at, src + at, len); });
    }
    std::memcpy(dst, src, std::min(step, n));
    for (std::thread& th : pool) th.join();
}

}  // namespace ds4::cuda
