// Official DeepSeek V4 checkpoint → ds4 GGUF (spec formats.md §4, model.md §1.3).
//
// Input: a directory with config.json (official ModelArgs key names), a
// model.safetensors.index.json and its shards; or one .safetensors file whose
// __metadata__ carries "model_args" (the golden format). Output: a GGUF with ds4's
// metadata (write_metadata), a byte-level tokenizer when the vocabulary is large enough
// for one, and the tensors of model::TensorPlan in plan order.
//
// Type policies (--type):
//   f32   every tensor F32 (tid2eid I32): weights decode exactly (golden checks).
//   f16   the plan's f16 mix: every matrix F16, 1-D tensors F32.
//   q8_0  matrices stored Q8_0 in the releases (attention projections, shared expert,
//         output, MTP e/h_proj) Q8_0; the F16 class stays F16; routed experts F16,
//         because ds4 only accepts IQ2_XXS/Q2_K/Q4_K or the f16 mix for them.
//   q2/q4 the released recipes (formats.md §4.2).
// A row length that is not a multiple of the chosen type's block falls back per tensor:
// K-quants (256) → Q8_0 when the row is a multiple of 32, else F16; Q8_0 → F16. The
// fallbacks are listed in the result (reduced shapes such as the goldens hit them; the
// published shape never does).
//
// The MTP block (mtp.0.*, model.md §2.4) goes into a separate GGUF, as ds4 ships it, when
// ConvertOptions::mtp_output is set: the same type policy and fallbacks, the same
// deepseek4.* metadata (general.name gets " MTP"), no tokenizer. Its token embedding and
// head are the main model's, so it holds only mtp.0.* tensors.
//
// Routed experts are decoded and quantized expert by expert, in expert order, a batch
// of `threads` experts at a time, so memory stays bounded by a few tensors. IQ2_XXS
// needs importance weights: the imatrix entry (formats.md §4.3) when given, else the
// per-column Σx² of the expert matrix. Q2_K/Q4_K use the imatrix when given.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/ggml_types.h"
#include "gguf/safetensors.h"
#include "model/hparams.h"
#include "model/tensor_plan.h"
#include "quant/checkpoint.h"

namespace ds4::convert {

enum class TypePolicy { F32, F16, Q8_0, Q2, Q4 };
std::string_view type_policy_name(TypePolicy p);   // "f32", "f16", "q8_0", "q2", "q4"
TypePolicy parse_type_policy(std::string_view s);  // throws naming the accepted values

// The official tensors of a checkpoint, by name, across shards.
class Checkpoint {
  public:
    // A directory (config.json + model.safetensors.index.json + shards) or one
    // .safetensors file with __metadata__.model_args. Throws naming the missing piece.
    static Checkpoint open(const std::string& path);

    const std::string& path() const { return path_; }
    const std::string& model_args() const { return model_args_; }  // JSON text
    const quant::TensorRef* find(std::string_view name) const;
    quant::TensorRef require(std::string_view name) const;  // "PATH: tensor NAME is missing"
    std::vector<std::string> names() const;

  private:
    std::string path_;
    std::string model_args_;
    std::vector<std::unique_ptr<st::File>> files_;
    std::map<std::string, quant::TensorRef, std::less<>> index_;
};

// ModelArgs (official key names) → Hparams (model.md §1.3). `where` names the source
// in errors. Keys absent from the JSON keep the published defaults except the shape keys,
// which are required.
model::Hparams hparams_from_model_args(std::string_view json_text, const std::string& where);

// Legacy llama.cpp imatrix .dat (formats.md §8.2), values already divided by ncall.
class Imatrix {
  public:
    static Imatrix load(const std::string& path);
    // formats.md §4.3 lookup for routed expert `expert` of GGUF tensor `gguf_name`
    // (official name `hf_name`): "<n>.expert.<E>", "<n>.expert_<E>", "<n>", trying the
    // GGUF name then the official one in each pass; an entry of ncols values is used as
    // is, ncols × n_expert is sliced. Empty span when nothing matches.
    std::span<const float> for_expert(std::string_view gguf_name, std::string_view hf_name,
                                      uint32_t expert, uint64_t ncols, uint32_t n_expert) const;
    size_t size() const { return entries_.size(); }

  private:
    std::string path_;
    std::map<std::string, std::vector<float>, std::less<>> entries_;
};

// The type a tensor gets under `policy` before any fallback: `spec` comes from the f32
// plan (it supplies name, dims and kind).
GgmlType intended_type(const model::TensorSpec& spec, TypePolicy policy);
// The intended type, or the fallback when the row length does not fit its block.
GgmlType fitting_type(GgmlType intended, uint64_t row_length);

// The plan for `h` with every tensor typed by the policy (fallbacks applied).
struct TypedPlan {
    std::vector<model::TensorSpec> tensors;
    std::vector<std::string> fallbacks;  // "NAME: Q2_K -> Q8_0 (row 128)"
};
TypedPlan typed_plan(const model::Hparams& h, TypePolicy policy, bool router_bias);
// The mtp.0.* tensors alone (router bias included: the MTP block requires it).
TypedPlan typed_mtp_plan(const model::Hparams& h, TypePolicy policy);

// True when the checkpoint carries the MTP block (its e_proj weight).
bool has_mtp_block(const Checkpoint& ck);

struct ConvertOptions {
    TypePolicy type = TypePolicy::Q2;
    std::string imatrix;          // path, empty = none
    unsigned threads = 0;         // 0 = hardware concurrency
    bool progress = false;        // progress bar on stderr
    std::ostream* log = nullptr;  // fallbacks and notes
    std::string model_name = "DeepSeek-V4-Flash";
    std::string mtp_output;  // path of the MTP GGUF; empty = the MTP block is not converted
};

struct ConvertResult {
    model::Hparams hparams;
    size_t tensors = 0;
    uint64_t bytes = 0;
    std::vector<std::string> fallbacks;
    std::vector<std::string>
        ignored;             // official tensors not converted (golden.*, mtp.* without mtp_output)
    bool tokenizer = false;  // false when the vocabulary is too small for one
    size_t mtp_tensors = 0;  // tensors written to mtp_output (0: none)
    uint64_t mtp_bytes = 0;
    double seconds = 0;
};

ConvertResult convert_checkpoint(const std::string& input, const std::string& output,
                                 const ConvertOptions& options);

}  // namespace ds4::convert
