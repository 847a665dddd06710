// Initial values of the synthetic model (rules and reasons in init.h).
#include "init.h"

#include <cmath>
#include <numeric>
#include <vector>

namespace ds4::synth {

using model::TensorKind;
using model::TensorSpec;

namespace {

// Sigmoid argument giving 1/H: the "average the streams" point of the HC gates.
float logit_of_inverse(uint32_t hc_mult) {
    if (hc_mult <= 1) return 3.0f;  // one stream: σ(3) ≈ 0.95, keep it mostly open
    return -std::log(static_cast<float>(hc_mult - 1));
}

// hc base of a layer site: [pre (H) | post (H) | comb (H·H)] (model.md §4.2).
void init_layer_hc_base(const model::Hparams& h, Rng& rng, std::span<float> row) {
    const uint32_t H = h.hc_mult;
    for (size_t i = 0; i < row.size(); ++i) {
        const float z = rng.gauss();
        if (i < H) {
            row[i] = logit_of_inverse(H) + 0.1f * z;
        } else if (i < 2 * H) {
            row[i] = 0.1f * z;
        } else {
            row[i] = 0.25f * z;
        }
    }
}

}  // namespace

float init_std(const TensorSpec& t) {
    const float inv_sqrt_fan_in = 1.0f / std::sqrt(static_cast<float>(t.row_length()));
    switch (t.kind) {
        case TensorKind::TokenEmbd:
            return 1.0f;
        case TensorKind::Linear:
        case TensorKind::Experts:
            return inv_sqrt_fan_in;
        case TensorKind::Output:
            return 4.0f * inv_sqrt_fan_in;
        case TensorKind::Router:
            return 2.0f * inv_sqrt_fan_in;
        case TensorKind::HcFn:
            return 0.1f * inv_sqrt_fan_in;
        case TensorKind::HcScale:
        case TensorKind::HcBase:
        case TensorKind::Norm:
        case TensorKind::CompressorApe:
            return 0.1f;
        case TensorKind::AttnSinks:
            return 0.5f;
        case TensorKind::RouterBias:
            return 0.05f;
        case TensorKind::Tid2Eid:
            return 0.0f;
    }
    return 0.0f;
}

void init_row(const TensorSpec& t, const model::Hparams& h, Rng& rng, std::span<float> row) {
    const float sd = init_std(t);
    switch (t.kind) {
        case TensorKind::HcBase:
            if (t.row_length() == h.hc_mult) {  // a head collapse (output or MTP)
                for (float& v : row) v = logit_of_inverse(h.hc_mult) + sd * rng.gauss();
            } else {
                init_layer_hc_base(h, rng, row);
            }
            return;
        case TensorKind::HcScale:
        case TensorKind::Norm:
            for (float& v : row) v = 1.0f + sd * rng.gauss();
            return;
        default:
            for (float& v : row) v = sd * rng.gauss();
            return;
    }
}

void init_tid2eid_row(const model::Hparams& h, Rng& rng, std::span<int32_t> row) {
    // Partial Fisher-Yates over the expert ids: the first n_expert_used of a seeded
    // shuffle are distinct by construction.
    thread_local std::vector<int32_t> ids;
    ids.resize(h.n_expert);
    std::iota(ids.begin(), ids.end(), 0);
    for (size_t k = 0; k < row.size(); ++k) {
        const uint32_t j =
            static_cast<uint32_t>(k) + rng.below(h.n_expert - static_cast<uint32_t>(k));
        std::swap(ids[k], ids[j]);
        row[k] = ids[k];
    }
}

}  // namespace ds4::synth
