#include "cuda/weights.h"

#include <algorithm>
#include <cstdio>

#include "cuda/device.h"
#include "cuda/stager.h"

namespace ds4::cuda {
namespace {

constexpr uint64_t kAlign = 256;

uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

}  // namespace

DeviceWeights DeviceWeights::upload(const gguf::File& file, bool progress, uint64_t piece_bytes) {
    if (piece_bytes == 0) fail("cuda: upload piece of 0 bytes");
    DeviceWeights w;
    w.path_ = file.path();
    uint64_t total = 0;
    for (const gguf::TensorInfo& t : file.tensors()) {
        if (t.n_dims > 4) fail(file.path(), ": tensor ", t.name, " has ", t.n_dims, " dims, at most 4 expected");
        if (t.n_bytes == 0 && t.n_elements != 0)
            fail(file.path(), ": tensor ", t.name, " has unsupported type ", ggml_type_name(t.type));
        if (t.abs_offset + t.n_bytes > file.size())
            fail(file.path(), ": tensor ", t.name, " extends past the end of the file");
        total += align_up(t.n_bytes);
    }
    ensure_fits(total, cat(file.path(), ": weights (", file.tensors().size(), " tensors)"));
    w.arena_ = DeviceBuffer<uint8_t>(total);

    // Pieces go through pinned staging buffers: host threads copy piece i + 1 out of the
    // mmap while the DMA of piece i runs (one thread's memcpy, then a synchronous copy,
    // took ~15 s for the 81 GB q2 model on an H200 host).
    const Stream stream;
    HostStager stager(stream.get(), piece_bytes);
    const std::span<const uint8_t> bytes = file.bytes();
    uint64_t offset = 0, done = 0;
    int last_pct = -1;
    for (const gguf::TensorInfo& t : file.tensors()) {
        DeviceTensor d;
        d.type = t.ggml_type();
        d.n_dims = t.n_dims;
        for (uint32_t i = 0; i < t.n_dims; ++i) d.dims[i] = t.dims[i];
        d.n_bytes = t.n_bytes;
        d.data = w.arena_.data() + offset;
        for (uint64_t pos = 0; pos < t.n_bytes; pos += piece_bytes) {
            const uint64_t n = std::min(piece_bytes, t.n_bytes - pos);
            stager.copy(w.arena_.data() + offset + pos, bytes.data() + t.abs_offset + pos, n);  // one piece
            done += n;
            const int pct = total == 0 ? 100 : static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total));
            if (progress && pct != last_pct) {
                std::fprintf(stderr, "\rcuda: uploading weights %3d%% (%.2f GiB)", pct,
                             static_cast<double>(done) / (1024.0 * 1024.0 * 1024.0));
                last_pct = pct;
            }
        }
        w.tensors_.emplace(std::string(t.name), d);
        offset += align_up(t.n_bytes);
    }
    stager.finish();
    if (progress) std::fprintf(stderr, "\n");
    return w;
}

const DeviceTensor* DeviceWeights::find(std::string_view name) const {
    const auto it = tensors_.find(std::string(name));
    return it == tensors_.end() ? nullptr : &it->second;
}

const DeviceTensor& DeviceWeights::at(std::string_view name) const {
    const DeviceTensor* t = find(name);
    if (t == nullptr) fail(path_, ": tensor ", name, " is not on the GPU (not in the file)");
    return *t;
}

}  // namespace ds4::cuda
