// Weights resident in VRAM: every tensor of a GGUF copied once from the mmap into one
// device arena (each tensor 256-byte aligned, so the matmul kernels' 16-byte loads are
// aligned), with a progress line on stderr. Sizes are checked against free memory first.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cuda/device.h"
#include "gguf/gguf.h"

namespace ds4::cuda {

struct DeviceTensor {
    GgmlType type = GgmlType::F32;
    uint32_t n_dims = 0;
    uint64_t dims[4] = {1, 1, 1, 1};
    uint64_t n_bytes = 0;
    const void* data = nullptr;  // device pointer into the arena
};

class DeviceWeights {
public:
    // Uploads every tensor of `file` (progress on stderr when `progress`) in pieces of
    // at most piece_bytes through pinned staging buffers. Throws ds4::Error naming the
    // file when the weights do not fit the free GPU memory.
    static constexpr uint64_t kUploadPiece = uint64_t{64} << 20;
    static DeviceWeights upload(const gguf::File& file, bool progress = true, uint64_t piece_bytes = kUploadPiece);

    const DeviceTensor* find(std::string_view name) const;
    const DeviceTensor& at(std::string_view name) const;  // throws naming the tensor
    size_t bytes() const { return arena_.bytes(); }
    size_t size() const { return tensors_.size(); }

private:
    DeviceBuffer<uint8_t> arena_;
    std::unordered_map<std::string, DeviceTensor> tensors_;
    std::string path_;
};

}  // namespace ds4::cuda
