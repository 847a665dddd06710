// A non-owning view of one weight tensor in GGUF layout (spec model.md §0): dims[0] is
// the contiguous axis, a 2-D linear map has dims {in, out}, a routed-expert tensor has
// dims {in, out, n_expert}. The bytes live elsewhere (the mmap'd GGUF, or the f32 buffers
// a WeightSet owns after converting an official checkpoint).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "gguf/ggml_types.h"

namespace ds4::cpu {

struct TensorView {
    GgmlType type = GgmlType::F32;
    uint32_t n_dims = 0;
    std::array<uint64_t, 4> dims{1, 1, 1, 1};
    const void* data = nullptr;

    uint64_t n_elements() const { return dims[0] * dims[1] * dims[2] * dims[3]; }
    uint64_t in() const { return dims[0]; }   // input features of a linear map
    uint64_t out() const { return dims[1]; }  // output features of a linear map
    // Bytes of one dims[0]-long row (block-quantized types pack whole blocks).
    uint64_t row_bytes() const { return ggml_row_bytes(type, dims[0]); }
    // Start of row `r` of a 2-D view (or of the flattened rows of a 3-D view).
    const void* row(uint64_t r) const {
        return static_cast<const std::byte*>(data) + r * row_bytes();
    }
    // 2-D slab `e` of a 3-D tensor (routed expert e) as its own view.
    TensorView slab(uint64_t e) const {
        TensorView v = *this;
        v.n_dims = 2;
        v.dims[2] = 1;
        v.data = row(e * dims[1]);
        return v;
    }
    const float* f32() const { return static_cast<const float*>(data); }
    const int32_t* i32() const { return static_cast<const int32_t*>(data); }
};

// "[64, 320]" for error messages.
std::string dims_string(const TensorView& v);

}  // namespace ds4::cpu
