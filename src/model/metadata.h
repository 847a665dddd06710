// GGUF metadata of a ds4 model: the deepseek4.* hyperparameter keys (spec model.md §2.2,
// formats.md §1.5) written with the exact GGUF types ds4's files carry, and read back
// with ds4's type rules.
//
// Reading follows ds4 exactly where ds4 is strict: "u32" keys must be stored as UINT32
// (any other integer type is reported as missing), floats may be F32/F64/UINT32/INT32,
// compress_ratios is an ARRAY of UINT32 or INT32, swiglu_clamp_exp an ARRAY of F32 or F64.
// A file whose block_count is 43 claims to be the published model and every value is
// checked against Hparams::published() like ds4 does (integers equal, floats within
// max(1, |expected|)·1e-6). Other block counts are reduced shapes (tests, goldens, the
// demo): accepted when Hparams::validate() passes.
#pragma once

#include <string>
#include <string_view>

#include "gguf/gguf.h"
#include "model/hparams.h"

namespace ds4::model {

// Metadata key names (model.md §2.2).
namespace key {
inline constexpr std::string_view architecture = "general.architecture";
inline constexpr std::string_view name = "general.name";
inline constexpr std::string_view alignment = "general.alignment";
inline constexpr std::string_view context_length = "deepseek4.context_length";
inline constexpr std::string_view block_count = "deepseek4.block_count";
inline constexpr std::string_view embedding_length = "deepseek4.embedding_length";
inline constexpr std::string_view vocab_size = "deepseek4.vocab_size";
inline constexpr std::string_view head_count = "deepseek4.attention.head_count";
inline constexpr std::string_view head_count_kv = "deepseek4.attention.head_count_kv";
inline constexpr std::string_view key_length = "deepseek4.attention.key_length";
inline constexpr std::string_view value_length = "deepseek4.attention.value_length";
inline constexpr std::string_view rope_dimension_count = "deepseek4.rope.dimension_count";
inline constexpr std::string_view q_lora_rank = "deepseek4.attention.q_lora_rank";
inline constexpr std::string_view output_lora_rank = "deepseek4.attention.output_lora_rank";
inline constexpr std::string_view output_group_count = "deepseek4.attention.output_group_count";
inline constexpr std::string_view expert_count = "deepseek4.expert_count";
inline constexpr std::string_view expert_used_count = "deepseek4.expert_used_count";
inline constexpr std::string_view expert_feed_forward_length =
    "deepseek4.expert_feed_forward_length";
inline constexpr std::string_view expert_shared_count = "deepseek4.expert_shared_count";
inline constexpr std::string_view hash_layer_count = "deepseek4.hash_layer_count";
inline constexpr std::string_view expert_group_count = "deepseek4.expert_group_count";
inline constexpr std::string_view expert_group_used_count = "deepseek4.expert_group_used_count";
inline constexpr std::string_view sliding_window = "deepseek4.attention.sliding_window";
inline constexpr std::string_view indexer_head_count = "deepseek4.attention.indexer.head_count";
inline constexpr std::string_view indexer_key_length = "deepseek4.attention.indexer.key_length";
inline constexpr std::string_view indexer_top_k = "deepseek4.attention.indexer.top_k";
inline constexpr std::string_view hc_count = "deepseek4.hyper_connection.count";
inline constexpr std::string_view hc_sinkhorn_iterations =
    "deepseek4.hyper_connection.sinkhorn_iterations";
inline constexpr std::string_view compress_ratios = "deepseek4.attention.compress_ratios";
inline constexpr std::string_view swiglu_clamp_exp = "deepseek4.swiglu_clamp_exp";
inline constexpr std::string_view original_context_length =
    "deepseek4.rope.scaling.original_context_length";
inline constexpr std::string_view rope_freq_base = "deepseek4.rope.freq_base";
inline constexpr std::string_view rope_scaling_factor = "deepseek4.rope.scaling.factor";
inline constexpr std::string_view yarn_beta_fast = "deepseek4.rope.scaling.yarn_beta_fast";
inline constexpr std::string_view yarn_beta_slow = "deepseek4.rope.scaling.yarn_beta_slow";
inline constexpr std::string_view compress_rope_freq_base =
    "deepseek4.attention.compress_rope_freq_base";
inline constexpr std::string_view expert_weights_scale = "deepseek4.expert_weights_scale";
inline constexpr std::string_view rms_epsilon = "deepseek4.attention.layer_norm_rms_epsilon";
inline constexpr std::string_view hc_epsilon = "deepseek4.hyper_connection.epsilon";
inline constexpr std::string_view expert_weights_norm = "deepseek4.expert_weights_norm";
}  // namespace key

inline constexpr std::string_view kArchitecture = "deepseek4";

struct MetadataOptions {
    std::string name = "DeepSeek-V4-Flash";
    // The official compress_ratios list has one entry per layer plus a trailing 0 for
    // the MTP block (model.md §1.2); ds4 accepts any length >= n_layer. When set, both
    // per-layer arrays get that extra entry (ratio 0, the same clamp).
    bool mtp_entry = true;
};

// Adds general.architecture/name/alignment (u32 32) and every deepseek4.* key of
// model.md §2.2, in ds4's types: u32 keys UINT32, compress_ratios ARRAY of UINT32,
// swiglu_clamp_exp ARRAY of F32, original_context_length and context_length UINT64
// (ds4 prints context_length only when it is UINT64), floats F32, expert_weights_norm
// BOOL, expert_group_count/expert_group_used_count UINT32 0. Validates `h` first.
void write_metadata(gguf::Writer& w, const Hparams& h, const MetadataOptions& opt = {});

// Reads and validates the shape (see the file comment). Throws ds4::Error naming the
// file, the key and, for a value mismatch, both values. context_length is 0 when the
// file does not carry it (it is informational only).
Hparams read_hparams(const gguf::File& f);

// True when every shape field equals Hparams::published() (floats exactly).
bool is_published_shape(const Hparams& h);

}  // namespace ds4::model
