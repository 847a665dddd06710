// The complete list of ds4 tensors for a shape (spec formats.md §1.6, model.md §2.3):
// name, ggml dims (innermost first), type and what the tensor is. One plan serves the
// synthetic model maker (what to write), the loader (what to bind and validate) and the
// info tool (what to check). Names are ds4's exact GGUF names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/ggml_types.h"
#include "gguf/gguf.h"
#include "model/hparams.h"

namespace ds4::model {

// Which types the tensors get. q2/q4 are the two released recipes (formats.md §4.2);
// f16 turns every quantized tensor of q2 into F16; f32 stores everything but the I32
// tid2eid table as F32 (golden comparisons decode weights exactly).
enum class QuantMix { Q2, Q4, F16, F32 };

std::string_view quant_mix_name(QuantMix m);   // "q2", "q4", "f16", "f32"
QuantMix parse_quant_mix(std::string_view s);  // throws ds4::Error on anything else

// What a tensor is, independent of its name: drives initialisation in the model maker
// and binding in the engine.
enum class TensorKind {
    TokenEmbd,      // [D, V] rows are token embeddings
    Output,         // [D, V] logits head
    Linear,         // 2-D [in, out] projection (attention, shared expert, compressor, indexer, MTP)
    Router,         // ffn_gate_inp [D, n_expert]
    Experts,        // 3-D routed experts [in, out, n_expert]
    HcFn,           // hyper-connection mixing projection [hc_dim, mix]
    HcScale,        // [3] (layers) or [1] (heads)
    HcBase,         // [mix] (layers) or [hc_mult] (heads)
    Norm,           // RMSNorm weight
    AttnSinks,      // [n_head]
    CompressorApe,  // [W, ratio] additive position bias of compressor scores
    RouterBias,     // exp_probs_b.bias [n_expert], selection-only bias
    Tid2Eid,        // I32 [n_expert_used, V] hash-routing table
};

std::string_view tensor_kind_name(TensorKind k);

struct TensorSpec {
    std::string name;
    std::vector<uint64_t> dims;  // ggml order: dims[0] is the contiguous row
    GgmlType type;
    TensorKind kind;
    int32_t layer;  // block index; -1 for global tensors; n_layer for the MTP block

    uint64_t n_elements() const;
    uint64_t n_bytes() const;
    uint64_t row_length() const { return dims[0]; }  // = fan-in of a linear map
    uint64_t n_rows() const { return n_elements() / dims[0]; }
    uint64_t row_bytes() const { return ggml_row_bytes(type, dims[0]); }
};

struct PlanOptions {
    QuantMix mix = QuantMix::Q2;
    // exp_probs_b.bias on every non-hash layer: ds4 treats it as optional, the released
    // files are expected to carry it (model.md §2.3).
    bool router_bias = true;
    // The mtp.0.* block (ds4 ships it as a separate GGUF, formats.md §1.7).
    bool mtp = false;
};

class TensorPlan {
  public:
    // Validates `h`, lays out every tensor and checks that each row length is a
    // multiple of its type's block size (the error names the tensor).
    explicit TensorPlan(const Hparams& h, const PlanOptions& opt = {});

    const std::vector<TensorSpec>& tensors() const { return tensors_; }
    size_t size() const { return tensors_.size(); }
    const TensorSpec* find(std::string_view name) const;
    const TensorSpec& at(std::string_view name) const;  // throws when absent
    const PlanOptions& options() const { return opt_; }

    uint64_t total_bytes() const;     // sum of tensor payloads, no alignment padding
    uint64_t total_elements() const;  // parameter count

  private:
    PlanOptions opt_;
    std::vector<TensorSpec> tensors_;
};

// The routed types ds4 accepts for ffn_{gate,up,down}_exps (formats.md §1.6).
bool is_routed_type(GgmlType t);

// The mix a file was written with, read from a few representative tensors:
// token_embd F32 → f32, blk.0.attn_q_a F16 → f16, blk.0.ffn_gate_exps Q4_K → q4, else q2.
QuantMix detect_quant_mix(const gguf::File& f);

// formats.md §1.6: 4 if blk.0.ffn_gate_exps.weight is Q4_K, else 2.
int routed_quant_bits(const gguf::File& f);

// Every planned tensor must be present with the planned type and dims (extra tensors
// are ignored, like ds4; a main-model exp_probs_b.bias may be absent, ds4 checks it only
// when present; the MTP block's is required). For the quantized mixes routed experts may use any
// routed type per layer (mixed q2/q4 files) as long as gate and up agree. Throws ds4::Error with
// ds4's wording ("required tensor is missing: NAME", "tensor NAME has type X, expected Y",
// "... has dim[i]=A, expected B").
void check_tensors(const gguf::File& f, const TensorPlan& plan);

// The MTP GGUF (model.md §2.4, a separate file): its mix, read from mtp.0.attn_q_a (F32 →
// f32, F16 → f16) and mtp.0.ffn_gate_exps (Q4_K → q4, else q2). Throws naming the file
// when the file has no mtp.0.attn_q_a.weight.
QuantMix detect_mtp_quant_mix(const gguf::File& f);

// Every mtp.0.* tensor of the plan for `h` and the file's mix must be present with the
// planned type and dims, exp_probs_b.bias included (required for the MTP block). Only
// tensors are checked: the file's metadata is not read (like ds4). Errors as check_tensors,
// prefixed "MTP file".
void check_mtp_tensors(const gguf::File& f, const Hparams& h);

// tid2eid ids are used as expert indices; ds4 does not range-check them, we do
// (formats.md §10). Throws naming the tensor, token and id.
void check_tid2eid(const gguf::File& f, const Hparams& h);

}  // namespace ds4::model
