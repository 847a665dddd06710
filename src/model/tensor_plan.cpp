// Tensor layout of a ds4 model (see tensor_plan.h). The tables of formats.md §1.6 and
// model.md §2.3/§2.4 written as code, with every dimension derived from Hparams so the
// same layout serves the published shape and reduced ones.
#include "model/tensor_plan.h"

#include <cstring>

#include "ds4/error.h"

namespace ds4::model {

namespace {

// How a tensor is stored in the released files, before the mix decides the type.
enum class Storage {
    Q8,     // Q8_0 in both releases (attention projections, shared expert, output)
    Half,   // F16 in both releases (embedding, HC, compressor, indexer, router)
    Float,  // F32 (1-D: norms, biases, HC scale/base, sinks)
    Int,    // I32 (tid2eid)
    ExpertGateUp,
    ExpertDown,
};

GgmlType storage_type(Storage s, QuantMix mix) {
    if (s == Storage::Int) return GgmlType::I32;
    if (s == Storage::Float || mix == QuantMix::F32) return GgmlType::F32;
    if (mix == QuantMix::F16) return GgmlType::F16;
    switch (s) {
        case Storage::Q8:
            return GgmlType::Q8_0;
        case Storage::Half:
            return GgmlType::F16;
        case Storage::ExpertGateUp:
            return mix == QuantMix::Q4 ? GgmlType::Q4_K : GgmlType::IQ2_XXS;
        case Storage::ExpertDown:
            return mix == QuantMix::Q4 ? GgmlType::Q4_K : GgmlType::Q2_K;
        default:
            return GgmlType::F32;
    }
}

uint64_t block_elems(GgmlType t) {
    const auto info = ggml_type_info(static_cast<uint32_t>(t));
    return info ? info->block_elems : 1;
}

class PlanBuilder {
  public:
    PlanBuilder(const Hparams& h, const PlanOptions& opt, std::vector<TensorSpec>& out)
        : h_(h), opt_(opt), out_(out) {}

    void build() {
        add_global_input();
        for (uint32_t il = 0; il < h_.n_layer; ++il) add_layer(il);
        add_global_output();
        if (opt_.mtp) add_mtp();
    }

  private:
    void add(std::string name, std::vector<uint64_t> dims, Storage s, TensorKind kind,
             int32_t layer) {
        TensorSpec t{std::move(name), std::move(dims), storage_type(s, opt_.mix), kind, layer};
        const uint64_t block = block_elems(t.type);
        if (t.dims[0] % block != 0)
            fail("tensor plan: ", t.name, " has rows of ", t.dims[0],
                 " values, not a multiple of the ", ggml_type_name(t.type), " block (", block,
                 "); use dims that are multiples of ", block, " or the f16/f32 mix");
        out_.push_back(std::move(t));
    }

    uint64_t hc_dim() const { return h_.hc_dim(); }
    uint64_t hc_mix() const { return h_.hc_mix(); }

    void add_global_input() {
        add("token_embd.weight", {h_.n_embd, h_.n_vocab}, Storage::Half, TensorKind::TokenEmbd, -1);
    }

    // The head's hyper-connection collapse and the logits projection (model.md §4.7).
    void add_global_output() {
        add("output_hc_base.weight", {h_.hc_mult}, Storage::Float, TensorKind::HcBase, -1);
        add("output_hc_fn.weight", {hc_dim(), h_.hc_mult}, Storage::Half, TensorKind::HcFn, -1);
        add("output_hc_scale.weight", {1}, Storage::Float, TensorKind::HcScale, -1);
        add("output_norm.weight", {h_.n_embd}, Storage::Float, TensorKind::Norm, -1);
        add("output.weight", {h_.n_embd, h_.n_vocab}, Storage::Q8, TensorKind::Output, -1);
    }

    void add_hc(const std::string& p, const char* site, int32_t il) {
        add(p + "hc_" + site + "_fn.weight", {hc_dim(), hc_mix()}, Storage::Half, TensorKind::HcFn,
            il);
        add(p + "hc_" + site + "_scale.weight", {3}, Storage::Float, TensorKind::HcScale, il);
        add(p + "hc_" + site + "_base.weight", {hc_mix()}, Storage::Float, TensorKind::HcBase, il);
    }

    // Query LoRA, the shared K=V row, sinks and the grouped low-rank output (§4.5).
    void add_attention(const std::string& p, int32_t il) {
        const uint64_t D = h_.n_embd, hd = h_.head_dim;
        const uint64_t group_in = uint64_t(h_.n_head / h_.o_groups) * hd;  // heads of one group
        add(p + "attn_norm.weight", {D}, Storage::Float, TensorKind::Norm, il);
        add(p + "attn_q_a.weight", {D, h_.q_lora_rank}, Storage::Q8, TensorKind::Linear, il);
        add(p + "attn_q_a_norm.weight", {h_.q_lora_rank}, Storage::Float, TensorKind::Norm, il);
        add(p + "attn_q_b.weight", {h_.q_lora_rank, uint64_t(h_.n_head) * hd}, Storage::Q8,
            TensorKind::Linear, il);
        add(p + "attn_kv.weight", {D, hd}, Storage::Q8, TensorKind::Linear, il);
        add(p + "attn_kv_a_norm.weight", {hd}, Storage::Float, TensorKind::Norm, il);
        add(p + "attn_sinks.weight", {h_.n_head}, Storage::Float, TensorKind::AttnSinks, il);
        add(p + "attn_output_a.weight", {group_in, uint64_t(h_.o_groups) * h_.o_lora_rank},
            Storage::Q8, TensorKind::Linear, il);
        add(p + "attn_output_b.weight", {uint64_t(h_.o_groups) * h_.o_lora_rank, D}, Storage::Q8,
            TensorKind::Linear, il);
    }

    // KV compressors (§5) and, on ratio-4 layers, the lightning indexer (§6).
    void add_compression(const std::string& p, uint32_t il) {
        const uint32_t ratio = h_.ratio(il);
        if (ratio == 0) return;
        const uint64_t D = h_.n_embd, W = h_.compressor_width(il);
        const auto l = static_cast<int32_t>(il);
        add(p + "attn_compressor_ape.weight", {W, ratio}, Storage::Half, TensorKind::CompressorApe,
            l);
        add(p + "attn_compressor_kv.weight", {D, W}, Storage::Half, TensorKind::Linear, l);
        add(p + "attn_compressor_gate.weight", {D, W}, Storage::Half, TensorKind::Linear, l);
        add(p + "attn_compressor_norm.weight", {h_.head_dim}, Storage::Float, TensorKind::Norm, l);
        if (!h_.has_indexer(il)) return;
        const uint64_t iw = 2ull * h_.idx_head_dim;  // ratio-4 compressors have two halves
        add(p + "indexer.attn_q_b.weight",
            {h_.q_lora_rank, uint64_t(h_.idx_n_heads) * h_.idx_head_dim}, Storage::Half,
            TensorKind::Linear, l);
        add(p + "indexer.proj.weight", {D, h_.idx_n_heads}, Storage::Half, TensorKind::Linear, l);
        add(p + "indexer_compressor_ape.weight", {iw, ratio}, Storage::Half,
            TensorKind::CompressorApe, l);
        add(p + "indexer_compressor_kv.weight", {D, iw}, Storage::Half, TensorKind::Linear, l);
        add(p + "indexer_compressor_gate.weight", {D, iw}, Storage::Half, TensorKind::Linear, l);
        add(p + "indexer_compressor_norm.weight", {h_.idx_head_dim}, Storage::Float,
            TensorKind::Norm, l);
    }

    // Router, routed experts, shared expert (§4.6). `hash` layers route by tid2eid and
    // carry no selection bias; `bias` forces the bias (the MTP block requires it).
    void add_ffn(const std::string& p, int32_t il, bool hash, bool bias) {
        const uint64_t D = h_.n_embd, F = h_.ff_exp, E = h_.n_expert;
        add(p + "ffn_norm.weight", {D}, Storage::Float, TensorKind::Norm, il);
        add(p + "ffn_gate_inp.weight", {D, E}, Storage::Half, TensorKind::Router, il);
        if (bias) add(p + "exp_probs_b.bias", {E}, Storage::Float, TensorKind::RouterBias, il);
        add(p + "ffn_gate_exps.weight", {D, F, E}, Storage::ExpertGateUp, TensorKind::Experts, il);
        add(p + "ffn_up_exps.weight", {D, F, E}, Storage::ExpertGateUp, TensorKind::Experts, il);
        add(p + "ffn_down_exps.weight", {F, D, E}, Storage::ExpertDown, TensorKind::Experts, il);
        add(p + "ffn_gate_shexp.weight", {D, F}, Storage::Q8, TensorKind::Linear, il);
        add(p + "ffn_up_shexp.weight", {D, F}, Storage::Q8, TensorKind::Linear, il);
        add(p + "ffn_down_shexp.weight", {F, D}, Storage::Q8, TensorKind::Linear, il);
        if (hash)
            add(p + "ffn_gate_tid2eid.weight", {h_.n_expert_used, h_.n_vocab}, Storage::Int,
                TensorKind::Tid2Eid, il);
    }

    void add_layer(uint32_t il) {
        const std::string p = cat("blk.", il, ".");
        const auto l = static_cast<int32_t>(il);
        const bool hash = h_.is_hash_layer(il);
        add_hc(p, "attn", l);
        add_attention(p, l);
        add_compression(p, il);
        add_hc(p, "ffn", l);
        add_ffn(p, l, hash, opt_.router_bias && !hash);
    }

    // The MTP block (model.md §2.4): a ratio-0, non-hash block with its own input
    // projections and head collapse; it reuses token_embd and output.
    void add_mtp() {
        const std::string p = "mtp.0.";
        const auto l = static_cast<int32_t>(h_.n_layer);
        const uint64_t D = h_.n_embd;
        add(p + "hc_head_base.weight", {h_.hc_mult}, Storage::Float, TensorKind::HcBase, l);
        add(p + "hc_head_fn.weight", {hc_dim(), h_.hc_mult}, Storage::Half, TensorKind::HcFn, l);
        add(p + "hc_head_scale.weight", {1}, Storage::Float, TensorKind::HcScale, l);
        add(p + "e_proj.weight", {D, D}, Storage::Q8, TensorKind::Linear, l);
        add(p + "h_proj.weight", {D, D}, Storage::Q8, TensorKind::Linear, l);
        add(p + "enorm.weight", {D}, Storage::Float, TensorKind::Norm, l);
        add(p + "hnorm.weight", {D}, Storage::Float, TensorKind::Norm, l);
        add(p + "norm.weight", {D}, Storage::Float, TensorKind::Norm, l);
        add_hc(p, "attn", l);
        add_attention(p, l);
        add_hc(p, "ffn", l);
        add_ffn(p, l, /*hash=*/false, /*bias=*/true);
    }

    const Hparams& h_;
    const PlanOptions& opt_;
    std::vector<TensorSpec>& out_;
};

std::string dims_text(std::span<const uint64_t> d) {
    std::string s = "[";
    for (size_t i = 0; i < d.size(); ++i) s += cat(i ? ", " : "", d[i]);
    return s + "]";
}

void check_shape(const gguf::File& f, const gguf::TensorInfo& t, const TensorSpec& want) {
    if (t.n_dims != want.dims.size())
        fail(f.path(), ": tensor ", want.name, " has ", t.n_dims, " dimensions, expected ",
             want.dims.size(), " ", dims_text(want.dims));
    for (size_t i = 0; i < want.dims.size(); ++i) {
        if (t.dims[i] != want.dims[i])
            fail(f.path(), ": tensor ", want.name, " has dim[", i, "]=", t.dims[i], ", expected ",
                 want.dims[i], " (shape ", dims_text(t.shape()), ", expected ",
                 dims_text(want.dims), ")");
    }
}

void check_type(const gguf::File& f, const gguf::TensorInfo& t, const TensorSpec& want) {
    const bool routed_slot = want.kind == TensorKind::Experts && is_routed_type(want.type);
    const bool ok =
        routed_slot ? is_routed_type(t.ggml_type()) : t.type == static_cast<uint32_t>(want.type);
    if (!ok)
        fail(f.path(), ": tensor ", want.name, " has type ", ggml_type_name(t.type), ", expected ",
             routed_slot ? "a routed type (IQ2_XXS, Q2_K or Q4_K)" : ggml_type_name(want.type));
}

// Gate and up of one layer run through the same kernel pair; ds4 rejects a mismatch.
void check_routed_pairs(const gguf::File& f, const TensorPlan& plan) {
    for (const TensorSpec& s : plan.tensors()) {
        const std::string_view name = s.name;
        const std::string_view suffix = "ffn_gate_exps.weight";
        if (name.size() < suffix.size() || name.substr(name.size() - suffix.size()) != suffix)
            continue;
        const std::string prefix(name.substr(0, name.size() - suffix.size()));
        const gguf::TensorInfo& gate = f.require_tensor(prefix + "ffn_gate_exps.weight");
        const gguf::TensorInfo& up = f.require_tensor(prefix + "ffn_up_exps.weight");
        if (gate.type != up.type)
            fail(f.path(), ": routed gate/up experts use different quant types in layer ", s.layer,
                 " (", ggml_type_name(gate.type), " vs ", ggml_type_name(up.type), ")");
    }
}

}  // namespace

std::string_view quant_mix_name(QuantMix m) {
    switch (m) {
        case QuantMix::Q2:
            return "q2";
        case QuantMix::Q4:
            return "q4";
        case QuantMix::F16:
            return "f16";
        case QuantMix::F32:
            return "f32";
    }
    return "?";
}

QuantMix parse_quant_mix(std::string_view s) {
    for (QuantMix m : {QuantMix::Q2, QuantMix::Q4, QuantMix::F16, QuantMix::F32}) {
        if (s == quant_mix_name(m)) return m;
    }
    fail("unknown quant mix '", s, "', expected q2, q4, f16 or f32");
}

std::string_view tensor_kind_name(TensorKind k) {
    switch (k) {
        case TensorKind::TokenEmbd:
            return "token_embd";
        case TensorKind::Output:
            return "output";
        case TensorKind::Linear:
            return "linear";
        case TensorKind::Router:
            return "router";
        case TensorKind::Experts:
            return "experts";
        case TensorKind::HcFn:
            return "hc_fn";
        case TensorKind::HcScale:
            return "hc_scale";
        case TensorKind::HcBase:
            return "hc_base";
        case TensorKind::Norm:
            return "norm";
        case TensorKind::AttnSinks:
            return "attn_sinks";
        case TensorKind::CompressorApe:
            return "compressor_ape";
        case TensorKind::RouterBias:
            return "router_bias";
        case TensorKind::Tid2Eid:
            return "tid2eid";
    }
    return "?";
}

uint64_t TensorSpec::n_elements() const {
    uint64_t n = 1;
    for (uint64_t d : dims) n *= d;
    return n;
}

uint64_t TensorSpec::n_bytes() const {
    return ggml_row_bytes(type, dims[0]) * n_rows();
}

TensorPlan::TensorPlan(const Hparams& h, const PlanOptions& opt) : opt_(opt) {
    h.validate();
    PlanBuilder(h, opt_, tensors_).build();
}

const TensorSpec* TensorPlan::find(std::string_view name) const {
    for (const TensorSpec& t : tensors_) {
        if (t.name == name) return &t;
    }
    return nullptr;
}

const TensorSpec& TensorPlan::at(std::string_view name) const {
    const TensorSpec* t = find(name);
    if (!t) fail("tensor plan has no tensor ", name);
    return *t;
}

uint64_t TensorPlan::total_bytes() const {
    uint64_t n = 0;
    for (const TensorSpec& t : tensors_) n += t.n_bytes();
    return n;
}

uint64_t TensorPlan::total_elements() const {
    uint64_t n = 0;
    for (const TensorSpec& t : tensors_) n += t.n_elements();
    return n;
}

bool is_routed_type(GgmlType t) {
    return t == GgmlType::IQ2_XXS || t == GgmlType::Q2_K || t == GgmlType::Q4_K;
}

QuantMix detect_quant_mix(const gguf::File& f) {
    const gguf::TensorInfo* embd = f.find_tensor("token_embd.weight");
    if (embd && embd->ggml_type() == GgmlType::F32) return QuantMix::F32;
    const gguf::TensorInfo* qa = f.find_tensor("blk.0.attn_q_a.weight");
    if (qa && qa->ggml_type() == GgmlType::F16) return QuantMix::F16;
    return routed_quant_bits(f) == 4 ? QuantMix::Q4 : QuantMix::Q2;
}

int routed_quant_bits(const gguf::File& f) {
    const gguf::TensorInfo* gate = f.find_tensor("blk.0.ffn_gate_exps.weight");
    return gate && gate->ggml_type() == GgmlType::Q4_K ? 4 : 2;
}

namespace {

void check_planned(const gguf::File& f, const TensorPlan& plan, bool mtp_only) {
    for (const TensorSpec& want : plan.tensors()) {
        if (mtp_only && !want.name.starts_with("mtp.")) continue;
        const gguf::TensorInfo* t = f.find_tensor(want.name);
        // exp_probs_b.bias is optional in ds4's main model (validated only when present).
        if (!t && want.kind == TensorKind::RouterBias && want.name.starts_with("blk.")) continue;
        if (!t) fail(f.path(), ": required tensor is missing: ", want.name);
        check_type(f, *t, want);
        check_shape(f, *t, want);
    }
}

}  // namespace

void check_tensors(const gguf::File& f, const TensorPlan& plan) {
    check_planned(f, plan, false);
    check_routed_pairs(f, plan);
}

QuantMix detect_mtp_quant_mix(const gguf::File& f) {
    const gguf::TensorInfo* qa = f.find_tensor("mtp.0.attn_q_a.weight");
    if (!qa)
        fail(f.path(), ": MTP file: required tensor is missing: mtp.0.attn_q_a.weight (is this an MTP GGUF?)");
    if (qa->ggml_type() == GgmlType::F32) return QuantMix::F32;
    if (qa->ggml_type() == GgmlType::F16) return QuantMix::F16;
    const gguf::TensorInfo* gate = f.find_tensor("mtp.0.ffn_gate_exps.weight");
    return gate && gate->ggml_type() == GgmlType::Q4_K ? QuantMix::Q4 : QuantMix::Q2;
}

void check_mtp_tensors(const gguf::File& f, const Hparams& h) {
    const TensorPlan plan(h, {.mix = detect_mtp_quant_mix(f), .router_bias = true, .mtp = true});
    try {
        check_planned(f, plan, true);
        const gguf::TensorInfo& gate = f.require_tensor("mtp.0.ffn_gate_exps.weight");
        const gguf::TensorInfo& up = f.require_tensor("mtp.0.ffn_up_exps.weight");
        if (gate.type != up.type)
            fail(f.path(), ": routed gate/up experts use different quant types in the MTP block (",
                 ggml_type_name(gate.type), " vs ", ggml_type_name(up.type), ")");
    } catch (const Error& e) {
        fail("MTP file: ", e.what());
    }
}

void check_tid2eid(const gguf::File& f, const Hparams& h) {
    for (uint32_t il = 0; il < h.n_hash_layer; ++il) {
        const std::string name = cat("blk.", il, ".ffn_gate_tid2eid.weight");
        const gguf::TensorInfo& t = f.require_tensor(name);
        if (t.ggml_type() != GgmlType::I32)
            fail(f.path(), ": tensor ", name, " has type ", ggml_type_name(t.type),
                 ", expected I32");
        const std::span<const uint8_t> bytes = f.tensor_data(t);
        const uint64_t per_token = t.dims[0];
        for (uint64_t i = 0; i < t.n_elements; ++i) {
            int32_t id;
            std::memcpy(&id, bytes.data() + 4 * i, 4);  // mmapped data may be unaligned
            if (id < 0 || static_cast<uint32_t>(id) >= h.n_expert)
                fail(f.path(), ": tensor ", name, ": token ", i / per_token, " routes to expert ",
                     id, ", outside [0, ", h.n_expert, ")");
        }
    }
}

}  // namespace ds4::model
