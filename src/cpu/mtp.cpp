// MTP block (see mtp.h): binding as a one-layer model, and the input projections.
#include "cpu/mtp.h"

#include <algorithm>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "cpu/matvec.h"
#include "cpu/numerics.h"
#include "ds4/error.h"
#include "model/tensor_plan.h"

namespace ds4::cpu {

namespace {

constexpr std::string_view kPrefix = "mtp.0.";

// The MTP head and final norm take the places of the main head's globals in the
// one-layer model; e/h projections and their norms are bound by MtpModel itself.
constexpr std::pair<std::string_view, std::string_view> kGlobalRenames[] = {
    {"hc_head_base.weight", "output_hc_base.weight"},
    {"hc_head_fn.weight", "output_hc_fn.weight"},
    {"hc_head_scale.weight", "output_hc_scale.weight"},
    {"norm.weight", "output_norm.weight"},
};
constexpr std::string_view kInputTensors[] = {"e_proj.weight", "h_proj.weight", "enorm.weight",
                                              "hnorm.weight"};

// Name under which the one-layer model looks up mtp.0.<leaf> ("" = not renamed).
std::string renamed(std::string_view leaf) {
    for (const auto& [from, to] : kGlobalRenames)
        if (leaf == from) return std::string(to);
    for (std::string_view in : kInputTensors)
        if (leaf == in) return {};
    return cat("blk.0.", leaf);
}

// Error messages of ModelWeights::bind name the one-layer model's tensors; give them
// back their mtp.0.* names.
std::string original_names(std::string msg) {
    auto replace_all = [&](std::string_view from, std::string_view to) {
        for (size_t at = msg.find(from); at != std::string::npos;
             at = msg.find(from, at + to.size()))
            msg.replace(at, from.size(), to);
    };
    replace_all("blk.0.", kPrefix);
    for (const auto& [from, to] : kGlobalRenames) replace_all(to, cat(kPrefix, from));
    return msg;
}

bool is_matrix_type(GgmlType t) {
    switch (t) {
        case GgmlType::F32:
        case GgmlType::F16:
        case GgmlType::BF16:
        case GgmlType::Q8_0:
        case GgmlType::Q2_K:
        case GgmlType::Q4_K:
        case GgmlType::IQ2_XXS:
            return true;
        default:
            return false;
    }
}

void check_dims(std::string_view name, const TensorView& v, std::initializer_list<uint64_t> dims) {
    if (v.n_dims != dims.size())
        fail("MTP block: tensor ", name, " has ", v.n_dims, " dimensions, expected ", dims.size());
    uint32_t i = 0;
    for (uint64_t d : dims) {
        if (v.dims[i] != d)
            fail("MTP block: tensor ", name, " has dim[", i, "]=", v.dims[i], ", expected ", d);
        ++i;
    }
}

TensorView bind_projection(const WeightSet& ws, std::string_view leaf, uint64_t dim) {
    const std::string name = cat(kPrefix, leaf);
    const TensorView& v = ws.require(name);
    if (!is_matrix_type(v.type))
        fail("MTP block: tensor ", name, " has type ", ggml_type_name(v.type),
             ", expected a matrix type");
    check_dims(name, v, {dim, dim});
    return v;
}

std::vector<float> bind_norm(const WeightSet& ws, std::string_view leaf, uint64_t dim) {
    const std::string name = cat(kPrefix, leaf);
    const TensorView& v = ws.require(name);
    check_dims(name, v, {dim});
    return to_f32_vector(v);
}

}  // namespace

model::Hparams mtp_hparams(const model::Hparams& main) {
    model::Hparams h = main;
    h.n_layer = 1;
    h.compress_ratios = {0};
    h.n_hash_layer = 0;  // the MTP block routes by biased top-k, never by tid2eid
    return h;
}

MtpModel::MtpModel(const model::Hparams& main, const WeightSet& shared, const WeightSet& ws) {
    // The planned mtp.0.* names (model.md §2.4); every one must be present, the router
    // bias included (optional in the main model, required here).
    const model::TensorPlan plan(main,
                                 {.mix = model::QuantMix::F32, .router_bias = true, .mtp = true});
    for (const model::TensorSpec& spec : plan.tensors()) {
        if (!spec.name.starts_with(kPrefix)) continue;
        const TensorView& v = ws.require(spec.name);
        const std::string as = renamed(std::string_view(spec.name).substr(kPrefix.size()));
        if (!as.empty()) renamed_.add_view(as, v);
    }
    for (std::string_view name : {"token_embd.weight", "output.weight"})
        renamed_.add_view(std::string(name), shared.require(name));

    try {
        block_ = std::make_unique<CpuModel>(mtp_hparams(main), renamed_);
    } catch (const Error& e) {
        throw Error(original_names(e.what()));
    }
    const uint64_t dim = main.n_embd;
    token_embd_ = block_->weights().token_embd;
    e_proj_ = bind_projection(ws, "e_proj.weight", dim);
    h_proj_ = bind_projection(ws, "h_proj.weight", dim);
    enorm_ = bind_norm(ws, "enorm.weight", dim);
    hnorm_ = bind_norm(ws, "hnorm.weight", dim);
}

MtpForward::MtpForward(const MtpModel& model, ThreadPool* pool)
    : model_(model), pool_(pool), block_(model.block(), pool) {}

// X[s][k] = e_proj·enorm(embed[ids[s]]) + h_proj·hnorm(hc[s][k]), in the official order
// (the e_proj term first, broadcast over the streams).
void MtpForward::project_inputs(std::span<const int32_t> ids, std::span<const float> hc) {
    const model::Hparams& hp = model_.hparams();
    const auto n = static_cast<uint32_t>(ids.size());
    const uint64_t dim = hp.n_embd, H = hp.hc_mult, hcd = hp.hc_dim();
    e_.resize(n * dim);
    eproj_.resize(n * dim);
    hn_.resize(n * hcd);
    hproj_.resize(n * hcd);
    x_.resize(n * hcd);
    for (uint32_t s = 0; s < n; ++s) {
        if (ids[s] < 0 || static_cast<uint32_t>(ids[s]) >= hp.n_vocab)
            fail("MTP block: token id ", ids[s], " is outside the vocabulary of ", hp.n_vocab);
        float* e = e_.data() + s * dim;
        dequant_row(model_.token_embd_, static_cast<uint64_t>(ids[s]), e);
        rms_norm(e, model_.enorm_.data(), dim, hp.norm_eps, e);
        for (uint64_t k = 0; k < H; ++k) {
            const uint64_t at = s * hcd + k * dim;
            rms_norm(hc.data() + at, model_.hnorm_.data(), dim, hp.norm_eps, hn_.data() + at);
        }
    }
    matmul(model_.e_proj_, n, e_.data(), dim, eproj_.data(), dim, pool_);
    // every stream of every slot is one row of the h_proj product
    matmul(model_.h_proj_, static_cast<uint32_t>(n * H), hn_.data(), dim, hproj_.data(), dim,
           pool_);
    for (uint32_t s = 0; s < n; ++s)
        for (uint64_t k = 0; k < H; ++k)
            for (uint64_t d = 0; d < dim; ++d) {
                const uint64_t at = s * hcd + k * dim + d;
                x_[at] = eproj_[s * dim + d] + hproj_[at];
            }
}

void MtpForward::eval(KvState& state, uint64_t pos, std::span<const int32_t> ids,
                      std::span<const float> hc, std::span<const uint32_t> logit_rows,
                      std::span<float> logits) {
    const model::Hparams& hp = model_.hparams();
    if (ids.empty()) fail("MTP block: empty chunk");
    if (hc.size() != ids.size() * uint64_t{hp.hc_dim()})
        fail("MTP block: ", hc.size(), " HC values for ", ids.size(), " slots, expected ",
             ids.size() * uint64_t{hp.hc_dim()});
    if (pos != state.n_tokens())
        fail("MTP block: chunk starts at position ", pos, " but the MTP cache holds ",
             state.n_tokens(), " positions");
    project_inputs(ids, hc);
    block_.eval_from_hc(state, pos, ids, x_, logit_rows, logits);
}

}  // namespace ds4::cpu
