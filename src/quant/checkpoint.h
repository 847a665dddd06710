// Official DeepSeek V4 checkpoint (Hugging Face safetensors) → f32, and the tensor-name
// map between ds4 GGUF files and the official checkpoint (spec formats.md §4.1).
//
// Storage classes of the official checkpoint (golden/README.md):
//   FP8   X.weight F8_E4M3 [out, in] + X.scale F8_E8M0 [ceil(out/128), ceil(in/128)],
//         w[r][c] = e4m3(w) · 2^(s[r/128][c/128] − 127)
//   FP4   routed experts: X.weight I8 [out, in/2], two E2M1 codes per byte (low nibble =
//         even element) + X.scale F8_E8M0 [out, in/32], one scale per 32 values of a row
//   plain BF16 / F16 / F32, decoded directly;  I64 (ffn.gate.tid2eid) narrowed to I32.
// Every decoded matrix is row-major [out, in], i.e. the GGUF layout with dims [in, out].
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/safetensors.h"

namespace ds4::quant {

// Element-wise decode of any numeric safetensors tensor to f32, row-major. F8_E4M3 and
// F8_E8M0 are decoded value by value, without any block scale; integers convert exactly
// up to 2^24.
std::vector<float> decode_f32(const st::File& file, const st::Tensor& t);

// A tensor and the file that holds it: official weights and their scales may sit in
// different shards, and error messages name the file.
struct TensorRef {
    const st::File* file;
    const st::Tensor* tensor;
};
TensorRef tensor_ref(const st::File& file, std::string_view name);  // throws when missing

struct DecodedTensor {
    std::vector<uint64_t> shape;  // logical shape, outermost first ([out, in] for matrices)
    std::vector<float> values;    // row-major
};

// FP8 E4M3 [out, in] with 128×128 E8M0 block scales [ceil(out/128), ceil(in/128)].
DecodedTensor decode_fp8_block_scaled(TensorRef weight, TensorRef scale);
// FP4 E2M1 packed two per byte in I8 [out, in/2] with E8M0 scales [out, in/32].
DecodedTensor decode_fp4_packed(TensorRef weight, TensorRef scale);
// BF16 / F16 / F32 of any rank.
DecodedTensor decode_plain(TensorRef t);
// I64 → I32 (ffn.gate.tid2eid); throws naming the first element outside int32.
std::vector<int32_t> narrow_i64_to_i32(TensorRef t);

// Dispatches on the weight's dtype: F8_E4M3 and I8 need `scale` (its sibling
// official_scale_name()), BF16/F16/F32 must come without one.
DecodedTensor decode_official(TensorRef weight, std::optional<TensorRef> scale);
// Single-file convenience: finds the sibling ".scale" in `file` when the dtype needs it.
DecodedTensor decode_official(const st::File& file, std::string_view weight_name);

// ---- tensor names (formats.md §4.1) ----

// Official name of a ds4 GGUF tensor, e.g. "blk.3.attn_q_a.weight" →
// "layers.3.attn.wq_a.weight", "output_hc_fn.weight" → "hc_head_fn",
// "mtp.0.e_proj.weight" → "mtp.0.e_proj.weight". nullopt for names with no official
// counterpart and for routed expert tensors, which are assembled from one official
// tensor per expert (official_expert_name).
std::optional<std::string> official_name_for_gguf(std::string_view gguf_name);

// True for "blk.L.ffn_{gate,up,down}_exps.weight" (and the mtp.N. equivalents).
bool is_routed_expert_gguf_name(std::string_view gguf_name);

// Expert E's slice of a routed GGUF tensor: "blk.L.ffn_gate_exps.weight", 5 →
// "layers.L.ffn.experts.5.w1.weight" (gate = w1, down = w2, up = w3).
std::optional<std::string> official_expert_name(std::string_view gguf_name, uint32_t expert);

// "X.weight" → "X.scale": the E8M0 scales of an FP8 or FP4 weight.
std::string official_scale_name(std::string_view weight_name);

// What an official tensor becomes in a ds4 GGUF file.
struct GgufTarget {
    std::string name;                // ds4 GGUF tensor name
    std::optional<uint32_t> expert;  // routed experts: which slice of the 3-D tensor
    bool scale = false;              // the E8M0 scales of that FP8/FP4 weight
    bool operator==(const GgufTarget&) const = default;
};

// Reverse of the above: "layers.0.ffn.experts.3.w2.scale" →
// {"blk.0.ffn_down_exps.weight", 3, scale}. nullopt for names ds4 does not use
// (golden.* tensors, unknown suffixes) and for ".scale" names of unscaled tensors.
std::optional<GgufTarget> gguf_name_for_official(std::string_view official_name);

}  // namespace ds4::quant
