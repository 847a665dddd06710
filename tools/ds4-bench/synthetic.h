// ds4-bench --synthetic: a full-width DS4 model with random weights, generated straight
// into memory (a memfd, no file on disk) and opened through the ordinary Engine::open of a
// path, /proc/self/fd/N — so the benchmark measures exactly the code a file model runs.
#pragma once

#include <cstdint>
#include <string>

#include "maker.h"

namespace ds4::bench {

// What --synthetic q2|q4 --layers N generates: the published shape (model.md §1) with
// N layers (the published compress-ratio rule, hash routing on the first min(3, N)), the
// quant mix's tensor types, fast random quant blocks (fast_blocks.h: valid blocks with
// the intended RMS, so every activation stays finite).
synth::MakeOptions synthetic_options(const std::string& quant, uint32_t layers, unsigned threads);

// Bytes of the in-memory GGUF image (tensor payload + padding + metadata, upper bound).
uint64_t synthetic_image_bytes(const synth::MakeOptions& opt);

// MemAvailable from /proc/meminfo, bytes (0 when it cannot be read).
uint64_t available_memory_bytes();

// What a run needs besides the image: the KV state of `batch` sequences at `ctx`, the
// evaluation scratch for a prefill chunk and the ceiling buffers.
uint64_t run_memory_bytes(const synth::MakeOptions& opt, uint64_t ctx, uint32_t batch,
                          uint64_t prefill_chunk, uint64_t bw_bytes);

// Throws ds4::Error (one line: what is needed, per layer, what is available, what to do)
// when image + run memory plus a safety margin exceeds min(available, limit) (limit 0:
// no extra limit).
void check_fits(const synth::MakeOptions& opt, uint64_t run_bytes, uint64_t available,
                uint64_t limit);

// The image, generated into an anonymous memory file. path() ("/proc/self/fd/N") opens it
// like any GGUF while this object lives; its pages are freed when the last mapping goes.
class InMemoryModel {
  public:
    explicit InMemoryModel(const synth::MakeOptions& opt);
    ~InMemoryModel();
    InMemoryModel(const InMemoryModel&) = delete;
    InMemoryModel& operator=(const InMemoryModel&) = delete;

    const std::string& path() const { return path_; }
    uint64_t bytes() const { return bytes_; }
    double seconds() const { return seconds_; }

  private:
    int fd_ = -1;
    std::string path_;
    uint64_t bytes_ = 0;
    double seconds_ = 0;
};

}  // namespace ds4::bench
