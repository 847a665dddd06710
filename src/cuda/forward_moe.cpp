// The FFN sublayer of the CUDA forward pass (cpu moe.cpp): router, routed experts
// (grouped on the device: tensor cores, int8 matvec or exact kernels) and shared expert.
#include "cuda/forward_impl.h"

namespace ds4::cuda {

// ---- FFN sublayer (cpu moe.cpp) ----

// Routed experts grouped by expert (each expert's weights read once per chunk), in
// ascending expert id; each token's outputs are then summed in that order, as the CPU
// does. The selection (route's) comes back to the host to form the groups: one small
// download per layer. The path of layers without device grouping (device_dispatch_ok).
void Forward::Impl::routed_experts_host(const DLayer& L, uint32_t n) {
    const cudaStream_t s = stream.get();
    const uint32_t E = hp.n_expert, K = hp.n_expert_used, dim = hp.n_embd, ff = hp.ff_exp;
    host_sel.resize(uint64_t{n} * K);
    DS4_CUDA_CHECK(cudaMemcpyAsync(host_sel.data(), sel.data(), host_sel.size() * sizeof(uint32_t),
                                   cudaMemcpyDeviceToHost, s));
    stream.sync();
    // host_idx: src[M] | widx[M] | pair_rows[M] | pair_begin[n + 1]
    struct Group {
        uint32_t expert, begin, count;
    };
    std::vector<Group> groups;
    std::vector<uint32_t> src, widx;
    std::vector<std::vector<uint32_t>> per_token(n);
    for (uint32_t e = 0; e < E; ++e) {
        const auto begin = static_cast<uint32_t>(src.size());
        for (uint32_t t = 0; t < n; ++t)
            for (uint32_t k = 0; k < K; ++k)
                if (host_sel[uint64_t{t} * K + k] == e) {
                    per_token[t].push_back(static_cast<uint32_t>(src.size()));
                    src.push_back(t);
                    widx.push_back(t * K + k);
                    break;  // an expert listed twice for one token counts once
                }
        if (src.size() > begin) groups.push_back({e, begin, static_cast<uint32_t>(src.size()) - begin});
    }
    for (uint32_t v : src)
        if (v >= n) fail("cuda forward: bad routing");
    for (const Group& g : groups)
        if (g.expert >= E) fail("cuda forward: expert id ", g.expert, " out of range");
    const auto M = static_cast<uint32_t>(src.size());
    host_idx.assign(src.begin(), src.end());
    host_idx.insert(host_idx.end(), widx.begin(), widx.end());
    const uint64_t rows_at = host_idx.size();
    host_idx.resize(rows_at + M);
    const uint64_t begin_at = host_idx.size();
    host_idx.resize(begin_at + n + 1);
    uint32_t at = 0;
    for (uint32_t t = 0; t < n; ++t) {
        host_idx[begin_at + t] = at;
        for (uint32_t i : per_token[t]) host_idx[rows_at + at++] = i;
    }
    host_idx[begin_at + n] = at;
    DS4_CUDA_CHECK(cudaMemcpyAsync(moe_idx.data(), host_idx.data(), host_idx.size() * sizeof(uint32_t),
                                   cudaMemcpyHostToDevice, s));
    const uint32_t* d_src = moe_idx.data();
    const uint32_t* d_widx = d_src + M;
    const uint32_t* d_rows = d_src + rows_at;
    const uint32_t* d_begin = d_src + begin_at;

    gather_rows(nrm.data(), d_src, ex_in.data(), M, dim, s);
    // Fast path: each pair's activation quantized once, shared by gate and up.
    const uint64_t qd = q8_token_bytes(dim), qf = q8_token_bytes(ff);
    const bool fast_in = fast_ok(L.exp_gate) && fast_ok(L.exp_up), fast_down = fast_ok(L.exp_down);
    if (fast_in) quantize_q8_activations(ex_in.data(), dim, dim, M, ex_q.data(), s);
    for (const Group& g : groups) {
        const uint64_t b = g.begin;
        const uint8_t* xq = fast_in ? ex_q.data() + b * qd : nullptr;
        mm_expert(L.exp_gate, uint64_t{g.expert} * ff, ff, ex_in.data() + b * dim, xq, ex_g.data() + b * ff, ff,
                  g.count);
        mm_expert(L.exp_up, uint64_t{g.expert} * ff, ff, ex_in.data() + b * dim, xq, ex_u.data() + b * ff, ff,
                  g.count);
    }
    weighted_swiglu(ex_g.data(), ex_u.data(), sel_w.data(), d_widx, M, ff, hp.swiglu_limit, s);
    if (fast_down) quantize_q8_activations(ex_g.data(), ff, ff, M, ex_q.data(), s);
    for (const Group& g : groups) {
        const uint64_t b = g.begin;
        const uint8_t* xq = fast_down ? ex_q.data() + b * qf : nullptr;
        mm_expert(L.exp_down, uint64_t{g.expert} * dim, dim, ex_g.data() + b * ff, xq, ex_out.data() + b * dim,
                  dim, g.count);
    }
    scatter_sum(ex_out.data(), d_begin, d_rows, moe.data(), n, dim, s);
}

// The exact path's expert matrices in a shape matmul_experts takes (the fast int8 path
// keeps the host grouping above).
bool Forward::Impl::device_dispatch_ok(const DLayer& L) const {
    if (fast_experts) return false;
    const uint32_t dim = hp.n_embd, ff = hp.ff_exp;
    return L.exp_gate.type == L.exp_up.type && matmul_experts_supported(L.exp_gate.type, dim, ff) &&
           matmul_experts_supported(L.exp_down.type, ff, dim) && L.exp_gate.in == dim && L.exp_down.in == ff &&
           uint64_t{ff} % 4 == 0 && uint64_t{dim} % 4 == 0;
}

// Routed experts with the grouping made on the device (moe_group): same groups, same
// per-token arithmetic and the same ascending-expert sum as routed_experts, but no host
// round trip, and gate + up in one launch. Grids are sized for the worst case (n·K
// pairs, min(E, n·K) experts); blocks past the device counts return at once.
// The grouping's arrays in moe_idx for a pass of n tokens.
MoeGroups Forward::Impl::device_groups(uint32_t n) {
    const uint32_t E = hp.n_expert;
    const uint64_t nk = uint64_t{n} * hp.n_expert_used;
    uint32_t* at = moe_idx.data();
    const auto take = [&](uint64_t count) {
        uint32_t* p = at;
        at += count;
        return p;
    };
    MoeGroups g;
    g.src = take(nk);
    g.widx = take(nk);
    g.pos_of = take(nk);
    g.rows = take(nk);
    g.tok_count = take(n);
    g.expert = take(E);
    g.begin = take(E);
    g.count = take(E);
    g.n_active = take(1);
    g.n_pairs = take(1);
    return g;
}

// The groups are route_group's, launched just before by moe_layer (device_dispatch_ok).
// sum_in_hc_post: the caller adds the experts' rows inside hc_post (hc_post_moe_add)
// instead of moe_sum into `moe` here.
void Forward::Impl::routed_experts_device(const DLayer& L, uint32_t n, bool sum_in_hc_post) {
    const cudaStream_t s = stream.get();
    const uint32_t E = hp.n_expert, K = hp.n_expert_used, dim = hp.n_embd, ff = hp.ff_exp;
    const uint64_t nk = uint64_t{n} * K;
    const MoeGroups g = device_groups(n);  // made by route_group (moe_layer)
    const auto M = static_cast<uint32_t>(nk);
    const auto slots = static_cast<uint32_t>(std::min<uint64_t>(E, nk));
    const ExpertGroups eg{g.expert, g.begin, g.count, g.n_active};
    // the quantizers read the pairs' rows of nrm by index and the weighted SwiGLU on the
    // way in (act_rows.h): no gathered copy, no written-back gate; the same records
    const ActRows by_pair{g.src, g.n_pairs};
    const ActRows swiglu{nullptr, g.n_pairs, ex_u.data(), sel_w.data(), g.widx, hp.swiglu_limit};
    // a token lists an expert at most once: no expert has more than n tokens
    if (wgmma_experts_ok(L.exp_gate, n) && wgmma_experts_ok(L.exp_up, n)) {
        quantize_half_rows(nrm.data(), dim, dim, M, ex_q.data(), s, by_pair);
        matmul_experts_wgmma(L.exp_gate.type, L.exp_gate.data, L.exp_up.data, ff, dim, ex_q.data(), M, ex_g.data(),
                             ex_u.data(), ff, eg, slots, M, mx_tiles.data(), s);
    } else if (mma_experts_ok(L.exp_gate, n) && mma_experts_ok(L.exp_up, n)) {
        quantize_q8k_activations(nrm.data(), dim, dim, M, ex_q.data(), s, by_pair);
        matmul_experts_mma(L.exp_gate.type, L.exp_gate.data, L.exp_up.data, ff, dim, ex_q.data(), ex_g.data(),
                           ex_u.data(), ff, eg, slots, M, mx_tiles.data(), s);
    } else if (q8_experts_ok(L.exp_gate, n) && q8_experts_ok(L.exp_up, n)) {
        quantize_q8_activations(nrm.data(), dim, dim, M, ex_q.data(), s, by_pair);
        matmul_experts_q8(L.exp_gate.type, L.exp_gate.data, L.exp_up.data, ff, dim, ex_q.data(), ex_g.data(),
                          ex_u.data(), ff, eg, slots, n, s);
    } else {
        gather_rows(nrm.data(), g.src, ex_in.data(), M, dim, s, g.n_pairs);
        matmul_experts(L.exp_gate.type, L.exp_gate.data, L.exp_up.data, ff, E, dim, ex_in.data(), dim, ex_g.data(),
                       ex_u.data(), ff, eg, slots, n, s);
    }
    if (wgmma_experts_ok(L.exp_down, n)) {
        quantize_half_rows(ex_g.data(), ff, ff, M, ex_q.data(), s, swiglu);
        matmul_experts_wgmma(L.exp_down.type, L.exp_down.data, nullptr, dim, ff, ex_q.data(), M, ex_out.data(),
                             nullptr, dim, eg, slots, M, mx_tiles.data(), s);
    } else if (mma_experts_ok(L.exp_down, n)) {
        quantize_q8k_activations(ex_g.data(), ff, ff, M, ex_q.data(), s, swiglu);
        matmul_experts_mma(L.exp_down.type, L.exp_down.data, nullptr, dim, ff, ex_q.data(), ex_out.data(), nullptr,
                           dim, eg, slots, M, mx_tiles.data(), s);
    } else if (q8_experts_ok(L.exp_down, n)) {
        quantize_q8_activations(ex_g.data(), ff, ff, M, ex_q.data(), s, swiglu);
        matmul_experts_q8(L.exp_down.type, L.exp_down.data, nullptr, dim, ff, ex_q.data(), ex_out.data(), nullptr,
                          dim, eg, slots, n, s);
    } else {
        weighted_swiglu(ex_g.data(), ex_u.data(), sel_w.data(), g.widx, M, ff, hp.swiglu_limit, s, g.n_pairs);
        matmul_experts(L.exp_down.type, L.exp_down.data, nullptr, dim, E, ff, ex_g.data(), ff, ex_out.data(),
                       nullptr, dim, eg, slots, n, s);
    }
    if (!sum_in_hc_post) moe_sum(ex_out.data(), g, n, K, moe.data(), dim, s);
}

// The expert mma path (matmul_mma_experts.h) for passes of at least
// mma_experts_min_tokens() tokens and slabs of at least mx_min_values weights: smaller
// ones go to q8_experts_ok or the exact kernels.
bool Forward::Impl::mma_experts_ok(const DMat& w, uint32_t n) const {
    return mma && mma_experts && n >= mma_experts_min_tokens() && w.in * w.out >= mx_min_values &&
           matmul_experts_mma_supported(w.type, w.in, w.row_bytes, w.data);
}

// The wgmma path (experts_wgmma.h, opt-in) for passes of at least kWgmmaMinTokens tokens,
// where the expert mma path would take them and the type is one it decodes.
bool Forward::Impl::wgmma_experts_ok(const DMat& w, uint32_t n) const {
    return n >= kWgmmaMinTokens && experts_wgmma_opted_in(w.type) && mma_experts_ok(w, n) &&
           experts_wgmma_supported(w.type, w.in, w.row_bytes, w.data);
}

// The grouped int8 matvec (matmul_q8_experts.h) for the passes below the mma path's
// token threshold, slabs of at least q8_min_values weights: per token, the result does
// not depend on the pass (a batch's tokens get the bits they get stepped alone).
bool Forward::Impl::q8_experts_ok(const DMat& w, uint32_t n) const {
    return q8_experts && n < mma_experts_min_tokens() && w.in * w.out >= q8_min_values &&
           matmul_experts_q8_supported(w.type, w.in, w.data);
}

// The shared expert's SwiGLU and down product, from its gate + up in sh_g / sh_u.
void Forward::Impl::shared_expert(const DLayer& L, uint32_t n) {
    swiglu_clamp(sh_g.data(), sh_u.data(), sh_g.data(), uint64_t{n} * hp.ff_exp, hp.swiglu_limit, cur);
    mm(L.sh_down, 0, hp.n_embd, sh_g.data(), hp.ff_exp, sh_out.data(), hp.n_embd, n);
}

void Forward::Impl::moe_layer(uint32_t il, uint32_t n) {
    const DLayer& L = layers[il];
    const cudaStream_t s = stream.get();
    const uint32_t dim = hp.n_embd, E = hp.n_expert;
    const bool forked = forks(n);
    hc_site_pre(L.hc_ffn_fn, L.hc_ffn_scale, L.hc_ffn_base, L.ffn_norm, n);
    // (issue 8) the shared expert on the side stream while the main stream routes and runs
    // the routed experts (their scratch is ex_q / mx_tiles, the shared expert's mm_q)
    Fork fork(*this, forked);
    // the router and the shared expert's gate + up read nrm: merged (bitwise as one mm() each)
    const MmPart router_in[] = {{&L.router, probs.data()}};
    const MmPart shared_in[] = {{&L.sh_gate, sh_g.data()}, {&L.sh_up, sh_u.data()}};
    const MmPart all_in[] = {router_in[0], shared_in[0], shared_in[1]};
    if (forked) {
        mm_shared_input(shared_in, nrm.data(), dim, n);
        shared_expert(L, n);
        fork.main();
        mm_shared_input(router_in, nrm.data(), dim, n);
    } else {
        mm_shared_input(all_in, nrm.data(), dim, n);
    }
    const bool on_device = device_dispatch_ok(L);
    if (on_device)  // the selection grouped on the device, in the same launch for small passes
        route_group(probs.data(), L.router_bias, L.tid2eid, tokens_dev.data(), n, E, hp.n_expert_used,
                    hp.route_scale, hp.is_hash_layer(il), sel.data(), sel_w.data(), device_groups(n), s);
    else
        route(probs.data(), L.router_bias, L.tid2eid, tokens_dev.data(), n, E, hp.n_expert_used, hp.route_scale,
              hp.is_hash_layer(il), sel.data(), sel_w.data(), s);
    // the routed sum inside hc_post (device grouping, no steering): the same bits
    const bool sum_in_post = use_fuse && !steering && on_device;
    if (on_device)  // reads the groups route_group made above
        routed_experts_device(L, n, sum_in_post);
    else
        routed_experts_host(L, n);
    // shared expert (gate + up above; on the side stream when forked), added after the routed sum
    if (!forked) shared_expert(L, n);
    fork.join();
    if (sum_in_post) {
        const MoeGroups g = device_groups(n);
        const MoeSumRows rows{ex_out.data(), g.rows, g.tok_count, hp.n_expert_used};
        return hc_post_moe_add(hc_shape, x.data(), rows, sh_out.data(), post.data(), comb.data(), n, s);
    }
    if (use_fuse && !steering)  // the sum inside hc_post: the same bits
        return hc_post_add(hc_shape, x.data(), moe.data(), sh_out.data(), post.data(), comb.data(), n, s);
    add_values(moe.data(), sh_out.data(), y.data(), uint64_t{n} * dim, s);
    if (steering) steering->apply(il, cpu::SteeringSite::ffn, y.data(), n, dim, s);
    hc_post(hc_shape, x.data(), y.data(), post.data(), comb.data(), n, s);
}

}  // namespace ds4::cuda
