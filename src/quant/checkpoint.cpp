#include "quant/checkpoint.h"

#include <array>
#include <cstring>
#include <limits>

#include "ds4/error.h"
#include "quant/scalars.h"

namespace ds4::quant {
namespace {

using st::DType;

// The official checkpoint scales FP8 weights per 128×128 block.
constexpr uint64_t kFp8Block = 128;
// ... and FP4 expert weights per 32 consecutive values of a row.
constexpr uint64_t kFp4Block = 32;
// E8M0 0xFF is NaN in the OCP MX spec (decoded as +inf); a weight scaled by it is not a
// number, so such a scale is a corrupt checkpoint rather than something to convert.
constexpr uint8_t kE8M0Nan = 0xFF;

template <typename T>
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// All 256 E4M3 bytes decoded once: the FP8 loop is then a table lookup and a multiply.
const std::array<float, 256>& e4m3_table() {
    static const std::array<float, 256> table = [] {
        std::array<float, 256> t{};
        for (int b = 0; b < 256; ++b) t[b] = e4m3_to_f32(static_cast<uint8_t>(b));
        return t;
    }();
    return table;
}

std::string at(TensorRef r) { return cat(r.file->path(), ": tensor '", r.tensor->name, "'"); }

void expect_dtype(TensorRef r, DType want, std::string_view role) {
    if (r.tensor->dtype != want)
        fail(at(r), " has dtype ", st::dtype_name(r.tensor->dtype), ", expected ",
             st::dtype_name(want), " for ", role);
}

void expect_rank2(TensorRef r) {
    if (r.tensor->shape.size() != 2)
        fail(at(r), " has shape ", st::shape_string(r.tensor->shape), ", expected 2 dimensions");
}

void expect_scale_shape(TensorRef scale, uint64_t rows, uint64_t cols, TensorRef weight) {
    const std::vector<uint64_t> want{rows, cols};
    if (scale.tensor->shape != want)
        fail(at(scale), " has shape ", st::shape_string(scale.tensor->shape), ", expected ",
             st::shape_string(want), " for the scales of '", weight.tensor->name, "' ",
             st::shape_string(weight.tensor->shape));
}

// E8M0 scales as f32, rejecting NaN bytes with the block's coordinates.
std::vector<float> decode_scales(TensorRef scale) {
    const std::span<const uint8_t> bytes = scale.tensor->data;
    const uint64_t cols = scale.tensor->shape[1];
    std::vector<float> out(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) {
        if (bytes[i] == kE8M0Nan)
            fail(at(scale), ": scale [", i / cols, ", ", i % cols,
                 "] is 0xFF (E8M0 NaN), the weights it scales would not be finite");
        out[i] = e8m0_to_f32(bytes[i]);
    }
    return out;
}

uint64_t ceil_div(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

void check_plain_dtype(TensorRef r) {
    const DType d = r.tensor->dtype;
    if (d != DType::BF16 && d != DType::F16 && d != DType::F32)
        fail(at(r), " has dtype ", st::dtype_name(d), ", expected BF16, F16 or F32");
}

}  // namespace

std::vector<float> decode_f32(const st::File& file, const st::Tensor& t) {
    const uint8_t* p = t.data.data();
    std::vector<float> out(t.n_elements);
    switch (t.dtype) {
    case DType::F32:
        if (!out.empty()) std::memcpy(out.data(), p, out.size() * sizeof(float));
        break;
    case DType::F64:
        for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(load<double>(p + 8 * i));
        break;
    case DType::F16:
        for (size_t i = 0; i < out.size(); ++i) out[i] = f16_to_f32(load<uint16_t>(p + 2 * i));
        break;
    case DType::BF16:
        for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_f32(load<uint16_t>(p + 2 * i));
        break;
    case DType::F8_E4M3:
        for (size_t i = 0; i < out.size(); ++i) out[i] = e4m3_table()[p[i]];
        break;
    case DType::F8_E8M0:
        for (size_t i = 0; i < out.size(); ++i) out[i] = e8m0_to_f32(p[i]);
        break;
    default: {
        const std::vector<int64_t> ints = file.to_i64(t);
        for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(ints[i]);
    }
    }
    return out;
}

TensorRef tensor_ref(const st::File& file, std::string_view name) {
    return {&file, &file.require(name)};
}

DecodedTensor decode_fp8_block_scaled(TensorRef weight, TensorRef scale) {
    expect_dtype(weight, DType::F8_E4M3, "an FP8 weight");
    expect_dtype(scale, DType::F8_E8M0, "FP8 block scales");
    expect_rank2(weight);
    expect_rank2(scale);
    const uint64_t rows = weight.tensor->shape[0];
    const uint64_t cols = weight.tensor->shape[1];
    const uint64_t scale_cols = ceil_div(cols, kFp8Block);
    expect_scale_shape(scale, ceil_div(rows, kFp8Block), scale_cols, weight);

    const std::vector<float> s = decode_scales(scale);
    const std::array<float, 256>& e4m3 = e4m3_table();
    const uint8_t* w = weight.tensor->data.data();
    DecodedTensor out{{rows, cols}, std::vector<float>(rows * cols)};
    for (uint64_t r = 0; r < rows; ++r) {
        const float* srow = s.data() + (r / kFp8Block) * scale_cols;
        float* dst = out.values.data() + r * cols;
        for (uint64_t c = 0; c < cols; ++c) dst[c] = e4m3[w[r * cols + c]] * srow[c / kFp8Block];
    }
    return out;
}

DecodedTensor decode_fp4_packed(TensorRef weight, TensorRef scale) {
    expect_dtype(weight, DType::I8, "packed FP4 expert weights");
    expect_dtype(scale, DType::F8_E8M0, "FP4 scales");
    expect_rank2(weight);
    expect_rank2(scale);
    const uint64_t rows = weight.tensor->shape[0];
    const uint64_t cols = 2 * weight.tensor->shape[1];  // two codes per byte
    if (cols % kFp4Block != 0)
        fail(at(weight), " has shape ", st::shape_string(weight.tensor->shape), ": ", cols,
             " FP4 values per row is not a multiple of ", kFp4Block);
    const uint64_t scale_cols = cols / kFp4Block;
    expect_scale_shape(scale, rows, scale_cols, weight);

    const std::vector<float> s = decode_scales(scale);
    const uint8_t* w = weight.tensor->data.data();
    DecodedTensor out{{rows, cols}, std::vector<float>(rows * cols)};
    for (uint64_t r = 0; r < rows; ++r) {
        const uint8_t* src = w + r * (cols / 2);
        const float* srow = s.data() + r * scale_cols;
        float* dst = out.values.data() + r * cols;
        for (uint64_t k = 0; k < cols / 2; ++k) {
            const float d = srow[2 * k / kFp4Block];  // both nibbles share a 32-block
            dst[2 * k] = e2m1_to_f32(src[k] & 0x0f) * d;
            dst[2 * k + 1] = e2m1_to_f32(src[k] >> 4) * d;
        }
    }
    return out;
}

DecodedTensor decode_plain(TensorRef t) {
    check_plain_dtype(t);
    return {t.tensor->shape, decode_f32(*t.file, *t.tensor)};
}

std::vector<int32_t> narrow_i64_to_i32(TensorRef t) {
    const DType d = t.tensor->dtype;
    if (d != DType::I64 && d != DType::I32)
        fail(at(t), " has dtype ", st::dtype_name(d), ", expected I64 (or I32)");
    const std::vector<int64_t> wide = t.file->to_i64(*t.tensor);
    std::vector<int32_t> out(wide.size());
    for (size_t i = 0; i < wide.size(); ++i) {
        if (wide[i] < std::numeric_limits<int32_t>::min() ||
            wide[i] > std::numeric_limits<int32_t>::max())
            fail(at(t), ": element ", i, " = ", wide[i], " does not fit in I32");
        out[i] = static_cast<int32_t>(wide[i]);
    }
    return out;
}

DecodedTensor decode_official(TensorRef weight, std::optional<TensorRef> scale) {
    const DType d = weight.tensor->dtype;
    if (d == DType::F8_E4M3 || d == DType::I8) {
        if (!scale)
            fail(at(weight), " has dtype ", st::dtype_name(d), " but no scale tensor ('",
                 official_scale_name(weight.tensor->name), "')");
        return d == DType::F8_E4M3 ? decode_fp8_block_scaled(weight, *scale)
                                   : decode_fp4_packed(weight, *scale);
    }
    check_plain_dtype(weight);
    if (scale)
        fail(at(weight), " has dtype ", st::dtype_name(d), ", which takes no scale tensor, but '",
             scale->tensor->name, "' was given");
    return decode_plain(weight);
}

DecodedTensor decode_official(const st::File& file, std::string_view weight_name) {
    const TensorRef weight = tensor_ref(file, weight_name);
    const DType d = weight.tensor->dtype;
    std::optional<TensorRef> scale;
    if (d == DType::F8_E4M3 || d == DType::I8)
        scale = tensor_ref(file, official_scale_name(weight_name));
    return decode_official(weight, scale);
}

}  // namespace ds4::quant
