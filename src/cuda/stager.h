// Host → device copies of large amounts (the weights at engine open) through pinned
// staging buffers on one stream: host threads fill one buffer out of the mmap while the
// DMA of the previous one runs. A pageable cudaMemcpy per tensor (the CUDA forward's
// upload until session 16) or one thread's memcpy then a synchronous copy leaves both the
// copy engine and the host idle half the time (~15 s for the 81 GB q2 model, H200 host).
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "cuda/device.h"

namespace ds4::cuda {

class HostStager {
public:
    static constexpr uint64_t kPiece = uint64_t{64} << 20;
    // Copies are queued on `stream` (work queued after them there sees the bytes).
    explicit HostStager(cudaStream_t stream, uint64_t piece_bytes = kPiece);
    ~HostStager();  // waits for the queued copies before the buffers go
    HostStager(const HostStager&) = delete;
    HostStager& operator=(const HostStager&) = delete;

    // dst (device) ← src (host), n bytes, in pieces of at most piece_bytes. src may change
    // once copy returns (each piece is in a staging buffer by then); dst is written when
    // the stream gets there.
    void copy(void* dst, const void* src, uint64_t n);
    void finish();  // waits for every queued copy

private:
    static constexpr size_t kBuffers = 3;
    void copy_piece(uint8_t* dst, const uint8_t* src, uint64_t n);
    void fill(uint8_t* dst, const uint8_t* src, uint64_t n) const;

    cudaStream_t stream_;
    uint64_t piece_;
    unsigned threads_ = 1;
    std::array<void*, kBuffers> buf_{};
    std::array<cudaEvent_t, kBuffers> done_{};
    std::array<bool, kBuffers> used_{};
    size_t next_ = 0;
};

}  // namespace ds4::cuda
