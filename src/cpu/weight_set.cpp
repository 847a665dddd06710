#include "cpu/weight_set.h"

#include <initializer_list>

#include "ds4/error.h"
#include "quant/scalars.h"

namespace ds4::cpu {

std::string dims_string(const TensorView& v) {
    std::string s = "[";
    for (uint32_t i = 0; i < v.n_dims; ++i) s += cat(i ? ", " : "", v.dims[i]);
    return s + "]";
}

// ---- WeightSet ----

void WeightSet::insert(std::string name, TensorView view) {
    if (views_.count(name) != 0) fail("weight set: duplicate tensor ", name);
    views_.emplace(std::move(name), view);
}

void WeightSet::add_view(std::string name, const TensorView& view) { insert(std::move(name), view); }

namespace {

TensorView make_view(GgmlType type, const std::vector<uint64_t>& dims, const void* data,
                     size_t n_values, const std::string& name) {
    if (dims.empty() || dims.size() > 4) fail("weight set: tensor ", name, " has ", dims.size(), " dims");
    TensorView v;
    v.type = type;
    v.n_dims = static_cast<uint32_t>(dims.size());
    uint64_t n = 1;
    for (size_t i = 0; i < dims.size(); ++i) {
        v.dims[i] = dims[i];
        n *= dims[i];
    }
    if (n != n_values) fail("weight set: tensor ", name, " has ", n_values, " values for dims of ", n);
    v.data = data;
    return v;
}

}  // namespace

void WeightSet::add_f32(std::string name, std::vector<uint64_t> dims, std::vector<float> values) {
    const auto& buf = owned_f32_.emplace_back(std::move(values));
    insert(name, make_view(GgmlType::F32, dims, buf.data(), buf.size(), name));
}

void WeightSet::add_i32(std::string name, std::vector<uint64_t> dims, std::vector<int32_t> values) {
    const auto& buf = owned_i32_.emplace_back(std::move(values));
    insert(name, make_view(GgmlType::I32, dims, buf.data(), buf.size(), name));
}

const TensorView* WeightSet::find(std::string_view name) const {
    const auto it = views_.find(name);
    return it == views_.end() ? nullptr : &it->second;
}

const TensorView& WeightSet::require(std::string_view name) const {
    const TensorView* v = find(name);
    if (v == nullptr) fail("required tensor is missing: ", name);
    return *v;
}

std::vector<float> to_f32_vector(const TensorView& v) {
    const uint64_t n = v.n_elements();
    std::vector<float> out(n);
    switch (v.type) {
        case GgmlType::F32:
            for (uint64_t i = 0; i < n; ++i) out[i] = v.f32()[i];
            break;
        case GgmlType::F16:
            for (uint64_t i = 0; i < n; ++i) out[i] = quant::f16_to_f32(static_cast<const uint16_t*>(v.data)[i]);
            break;
        case GgmlType::BF16:
            for (uint64_t i = 0; i < n; ++i) out[i] = quant::bf16_to_f32(static_cast<const uint16_t*>(v.data)[i]);
            break;
        default: fail("tensor of type ", ggml_type_name(v.type), " cannot be read element-wise");
    }
    return out;
}

// ---- binding ----

namespace {

bool is_matrix_type(GgmlType t) {
    switch (t) {
        case GgmlType::F32:
        case GgmlType::F16:
        case GgmlType::BF16:
        case GgmlType::Q8_0:
        case GgmlType::Q2_K:
        case GgmlType::Q4_K:
        case GgmlType::IQ2_XXS: return true;
        default: return false;
    }
}

void check_dims(const std::string& name, const TensorView& v, std::initializer_list<uint64_t> dims) {
    if (v.n_dims != dims.size())
        fail("tensor ", name, " has ", v.n_dims, " dimensions, expected ", dims.size());
    uint32_t i = 0;
    for (uint64_t d : dims) {
        if (v.dims[i] != d) fail("tensor ", name, " has dim[", i, "]=", v.dims[i], ", expected ", d);
        ++i;
    }
}

class Binder {
public:
    Binder(const WeightSet& ws, std::string prefix) : ws_(ws), prefix_(std::move(prefix)) {}

    bool has(const std::string& suffix) const { return ws_.find(prefix_ + suffix) != nullptr; }
    // A weight used as a linear map (any type the matvec dispatcher reads).
    TensorView matrix(const std::string& suffix, std::initializer_list<uint64_t> dims) const {
        const std::string name = prefix_ + suffix;
        const TensorView& v = ws_.require(name);
        if (!is_matrix_type(v.type))
            fail("tensor ", name, " has type ", ggml_type_name(v.type), ", expected a matrix type");
        check_dims(name, v, dims);
        return v;
    }
    // A small tensor read element by element, returned as f32.
    std::vector<float> vec(const std::string& suffix, std::initializer_list<uint64_t> dims) const {
        const std::string name = prefix_ + suffix;
        const TensorView& v = ws_.require(name);
        check_dims(name, v, dims);
        return to_f32_vector(v);
    }
    TensorView i32(const std::string& suffix, std::initializer_list<uint64_t> dims) const {
        const std::string name = prefix_ + suffix;
        const TensorView& v = ws_.require(name);
        if (v.type != GgmlType::I32)
            fail("tensor ", name, " has type ", ggml_type_name(v.type), ", expected I32");
        check_dims(name, v, dims);
        return v;
    }

private:
    const WeightSet& ws_;
    std::string prefix_;
};

CompressorWeights bind_compressor(const Binder& b, const std::string& stem, uint32_t ratio,
                                  uint64_t dim, uint64_t d) {
    const uint64_t width = (ratio == 4 ? 2 : 1) * d;
    CompressorWeights c;
    c.kv = b.matrix(stem + "_kv.weight", {dim, width});
    c.gate = b.matrix(stem + "_gate.weight", {dim, width});
    c.ape = b.vec(stem + "_ape.weight", {width, ratio});
    c.norm = b.vec(stem + "_norm.weight", {d});
    return c;
}

LayerWeights bind_layer(const WeightSet& ws, const model::Hparams& hp, uint32_t il) {
    const Binder b(ws, cat("blk.", il, "."));
    const uint64_t dim = hp.n_embd, hc = hp.hc_dim(), mix = hp.hc_mix(), hd = hp.head_dim;
    const uint64_t hpg = hp.n_head / hp.o_groups;
    LayerWeights l;
    l.ratio = hp.ratio(il);
    l.hc_attn_fn = b.matrix("hc_attn_fn.weight", {hc, mix});
    l.hc_attn_scale = b.vec("hc_attn_scale.weight", {3});
    l.hc_attn_base = b.vec("hc_attn_base.weight", {mix});
    l.hc_ffn_fn = b.matrix("hc_ffn_fn.weight", {hc, mix});
    l.hc_ffn_scale = b.vec("hc_ffn_scale.weight", {3});
    l.hc_ffn_base = b.vec("hc_ffn_base.weight", {mix});

    l.attn_norm = b.vec("attn_norm.weight", {dim});
    l.q_a = b.matrix("attn_q_a.weight", {dim, hp.q_lora_rank});
    l.q_a_norm = b.vec("attn_q_a_norm.weight", {hp.q_lora_rank});
    l.q_b = b.matrix("attn_q_b.weight", {hp.q_lora_rank, uint64_t{hp.n_head} * hd});
    l.kv = b.matrix("attn_kv.weight", {dim, hd});
    l.kv_norm = b.vec("attn_kv_a_norm.weight", {hd});
    l.sinks = b.vec("attn_sinks.weight", {hp.n_head});
    l.out_a = b.matrix("attn_output_a.weight", {hpg * hd, uint64_t{hp.o_groups} * hp.o_lora_rank});
    l.out_b = b.matrix("attn_output_b.weight", {uint64_t{hp.o_groups} * hp.o_lora_rank, dim});
    if (l.ratio != 0) l.compressor = bind_compressor(b, "attn_compressor", l.ratio, dim, hd);
    if (l.ratio == 4) {
        l.indexer_compressor = bind_compressor(b, "indexer_compressor", l.ratio, dim, hp.idx_head_dim);
        l.indexer_q_b = b.matrix("indexer.attn_q_b.weight",
                                 {hp.q_lora_rank, uint64_t{hp.idx_n_heads} * hp.idx_head_dim});
        l.indexer_proj = b.matrix("indexer.proj.weight", {dim, hp.idx_n_heads});
    }

    l.ffn_norm = b.vec("ffn_norm.weight", {dim});
    l.router = b.matrix("ffn_gate_inp.weight", {dim, hp.n_expert});
    if (hp.is_hash_layer(il)) {
        l.tid2eid = b.i32("ffn_gate_tid2eid.weight", {hp.n_expert_used, hp.n_vocab});
        for (uint64_t i = 0; i < l.tid2eid.n_elements(); ++i) {
            const int32_t e = l.tid2eid.i32()[i];
            if (e < 0 || static_cast<uint32_t>(e) >= hp.n_expert)
                fail("tensor blk.", il, ".ffn_gate_tid2eid.weight: expert id ", e, " at ", i,
                     " is outside [0, ", hp.n_expert, ")");
        }
    } else if (b.has("exp_probs_b.bias")) {
        l.router_bias = b.vec("exp_probs_b.bias", {hp.n_expert});
    } else {
        // optional in ds4's validation (formats.md §1.6): no bias means selection by p alone
        l.router_bias.assign(hp.n_expert, 0.0f);
    }
    l.experts.gate = b.matrix("ffn_gate_exps.weight", {dim, hp.ff_exp, hp.n_expert});
    l.experts.up = b.matrix("ffn_up_exps.weight", {dim, hp.ff_exp, hp.n_expert});
    l.experts.down = b.matrix("ffn_down_exps.weight", {hp.ff_exp, dim, hp.n_expert});
    l.shared_gate = b.matrix("ffn_gate_shexp.weight", {dim, hp.ff_exp});
    l.shared_up = b.matrix("ffn_up_shexp.weight", {dim, hp.ff_exp});
    l.shared_down = b.matrix("ffn_down_shexp.weight", {hp.ff_exp, dim});
    return l;
}

}  // namespace

ModelWeights ModelWeights::bind(const WeightSet& ws, const model::Hparams& hp) {
    if (hp.compress_ratios.size() < hp.n_layer)
        fail("hparams: compress_ratios has ", hp.compress_ratios.size(), " entries, need ", hp.n_layer);
    const Binder b(ws, "");
    ModelWeights m;
    m.token_embd = b.matrix("token_embd.weight", {hp.n_embd, hp.n_vocab});
    m.output_hc_fn = b.matrix("output_hc_fn.weight", {hp.hc_dim(), hp.hc_mult});
    m.output_hc_scale = b.vec("output_hc_scale.weight", {1});
    m.output_hc_base = b.vec("output_hc_base.weight", {hp.hc_mult});
    m.output_norm = b.vec("output_norm.weight", {hp.n_embd});
    m.output = b.matrix("output.weight", {hp.n_embd, hp.n_vocab});
    m.layers.reserve(hp.n_layer);
    for (uint32_t il = 0; il < hp.n_layer; ++il) m.layers.push_back(bind_layer(ws, hp, il));
    return m;
}

}  // namespace ds4::cpu
