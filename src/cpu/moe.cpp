// FFN sublayer: router, routed experts and the shared expert (spec model.md §4.6).
#include <algorithm>
#include <cmath>

#include "cpu/forward.h"
#include "cpu/matvec.h"
#include "cpu/moe_fast.h"
#include "ds4/error.h"

namespace ds4::cpu {

namespace {

// SwiGLU with the official clamp: gate ≤ L (no lower bound), up ∈ [−L, L], when L > 0.
float clamped_swiglu(float g, float u, float limit) {
    if (limit > 0) {
        u = std::clamp(u, -limit, limit);
        g = std::min(g, limit);
    }
    return silu(g) * u;
}

}  // namespace

void CpuForward::moe(uint32_t il, std::span<const int32_t> tokens, uint32_t n) {
    const LayerWeights& lw = model_.weights().layers[il];
    hc_pre({&lw.hc_ffn_fn, &lw.hc_ffn_scale, &lw.hc_ffn_base}, n);
    const uint64_t dim = hp_.n_embd;
    for (uint32_t t = 0; t < n; ++t)
        rms_norm(u_.data() + t * dim, lw.ffn_norm.data(), dim, hp_.norm_eps, nrm_.data() + t * dim);
    route(il, tokens, n);
    routed_experts(il, n);
    shared_expert(il, n);
    steering_.apply(il, SteeringSite::ffn, y_.data(), n, hp_.n_embd);
    hc_post(n);
}

// Router: p_e = sqrt(softplus(gate·n)). Hash layers take their experts from tid2eid[token];
// the others the top n_expert_used of p + bias (exact ties → lower expert id). Weights are
// the UNBIASED p of the chosen experts over their plain sum, times route_scale. The sum
// runs in the official selection order (tid2eid order / descending biased score).
void CpuForward::route(uint32_t il, std::span<const int32_t> tokens, uint32_t n) {
    const LayerWeights& lw = model_.weights().layers[il];
    const uint32_t E = hp_.n_expert, K = hp_.n_expert_used;
    matmul(lw.router, n, nrm_.data(), hp_.n_embd, probs_.data(), E, pool_);
    for (uint64_t i = 0; i < uint64_t{n} * E; ++i) probs_[i] = std::sqrt(softplus(probs_[i]));

    for (uint32_t t = 0; t < n; ++t) {
        const float* p = probs_.data() + uint64_t{t} * E;
        uint32_t* sel = sel_.data() + uint64_t{t} * K;
        if (hp_.is_hash_layer(il)) {
            const int32_t* ids = lw.tid2eid.i32() + static_cast<uint64_t>(tokens[t]) * K;
            for (uint32_t k = 0; k < K; ++k) sel[k] = static_cast<uint32_t>(ids[k]);
        } else {
            for (uint32_t e = 0; e < E; ++e) biased_[e] = p[e] + lw.router_bias[e];
            top_k_lower_index(biased_, K, order_);
            std::copy_n(order_.begin(), K, sel);
            std::sort(sel, sel + K, [&](uint32_t a, uint32_t b) {
                return biased_[a] > biased_[b] || (biased_[a] == biased_[b] && a < b);
            });
        }
        float* w = sel_w_.data() + uint64_t{t} * K;
        float sum = 0.0f;
        for (uint32_t k = 0; k < K; ++k) sum += p[sel[k]];
        for (uint32_t k = 0; k < K; ++k) w[k] = p[sel[k]] / sum * hp_.route_scale;
    }
}

// Routed experts, grouped by expert so each expert's weights are read once per chunk.
// Experts run in ascending id and their outputs are added in that order, as the
// official MoE loop does; the routing weight scales the hidden activation before the
// down projection. Numerics::Fast with block-quantized experts takes ds4's Q8_K path
// (moe_fast.h) instead.
void CpuForward::routed_experts(uint32_t il, uint32_t n) {
    const LayerWeights& lw = model_.weights().layers[il];
    const uint32_t E = hp_.n_expert, K = hp_.n_expert_used;
    const uint64_t dim = hp_.n_embd, ff = hp_.ff_exp;
    if (numerics() == Numerics::Fast && fast_routed_experts_apply(lw.experts)) {
        fast_routed_experts({&lw.experts, n, K, dim, ff, hp_.swiglu_limit, nrm_.data(), sel_.data(),
                             sel_w_.data(), moe_.data()},
                            pool_);
        return;
    }
    std::fill_n(moe_.begin(), uint64_t{n} * dim, 0.0f);
    for (uint32_t e = 0; e < E; ++e) {
        uint32_t m = 0;
        for (uint32_t t = 0; t < n; ++t)
            for (uint32_t k = 0; k < K; ++k)
                if (sel_[uint64_t{t} * K + k] == e) {
                    users_[m] = t;
                    users_w_[m] = sel_w_[uint64_t{t} * K + k];
                    ++m;
                    break;  // an expert listed twice for one token counts once (official y[idx] +=)
                }
        if (m == 0) continue;
        for (uint32_t i = 0; i < m; ++i)
            std::copy_n(nrm_.data() + users_[i] * dim, dim, ex_in_.data() + i * dim);
        matmul(lw.experts.gate.slab(e), m, ex_in_.data(), dim, ex_g_.data(), ff, pool_);
        matmul(lw.experts.up.slab(e), m, ex_in_.data(), dim, ex_u_.data(), ff, pool_);
        for (uint32_t i = 0; i < m; ++i)
            for (uint64_t j = 0; j < ff; ++j) {
                float& h = ex_g_[i * ff + j];
                h = users_w_[i] * clamped_swiglu(h, ex_u_[i * ff + j], hp_.swiglu_limit);
            }
        matmul(lw.experts.down.slab(e), m, ex_g_.data(), ff, ex_out_.data(), dim, pool_);
        for (uint32_t i = 0; i < m; ++i) {
            float* dst = moe_.data() + users_[i] * dim;
            const float* src = ex_out_.data() + i * dim;
            for (uint64_t d = 0; d < dim; ++d) dst[d] += src[d];
        }
    }
}

// The shared expert (unweighted, same clamp), added after the routed sum: y = moe + shared.
void CpuForward::shared_expert(uint32_t il, uint32_t n) {
    const LayerWeights& lw = model_.weights().layers[il];
    const uint64_t dim = hp_.n_embd, ff = hp_.ff_exp;
    matmul(lw.shared_gate, n, nrm_.data(), dim, ex_g_.data(), ff, pool_);
    matmul(lw.shared_up, n, nrm_.data(), dim, ex_u_.data(), ff, pool_);
    for (uint64_t i = 0; i < uint64_t{n} * ff; ++i)
        ex_g_[i] = clamped_swiglu(ex_g_[i], ex_u_[i], hp_.swiglu_limit);
    matmul(lw.shared_down, n, ex_g_.data(), ff, ex_out_.data(), dim, pool_);
    for (uint64_t i = 0; i < uint64_t{n} * dim; ++i) y_[i] = moe_[i] + ex_out_[i];
}

}  // namespace ds4::cpu
