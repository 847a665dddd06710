// The attention sublayer of the CUDA forward pass (cpu attention.cpp): projections,
// the per-token and batched stateful part (raw ring, compressors, indexer, attend).
#include "cuda/forward_impl.h"

namespace ds4::cuda {

// ---- attention sublayer (cpu attention.cpp) ----

void Forward::Impl::attention_projections(const DLayer& L, uint32_t n, float* raw_ring) {
    const cudaStream_t s = stream.get();
    const uint64_t dim = hp.n_embd, hd = hp.head_dim, ql = hp.q_lora_rank, rd = hp.rope_dim;
    const uint64_t nope = hd - rd;
    const float* om = omega(L);
    // everything that reads nrm first, merged (bitwise as one mm() each)
    std::vector<MmPart> from_nrm{{&L.q_a, qr.data()}, {&L.kv, kvb.data()}};
    if (L.comp) from_nrm.insert(from_nrm.end(), {{&L.comp->kv, ckv.data()}, {&L.comp->gate, csc.data()}});
    if (L.icomp)
        from_nrm.insert(from_nrm.end(),
                        {{&L.icomp->kv, ikv.data()}, {&L.icomp->gate, isc.data()}, {&L.indexer_proj, iw.data()}});
    mm_shared_input(from_nrm, nrm.data(), dim, n);
    const uint32_t half = hp.rope_dim / 2;
    if (use_fuse) {  // the same bits as the launches below: qr's norm beside kv's norm + RoPE + FP8
        const NormRope qr_norm{qr.data(), L.q_a_norm, nullptr, static_cast<uint32_t>(ql), n, 1, 0, 0};
        NormRope kv_rows{kvb.data(), L.kv_norm, om, hp.head_dim, n, 1, half, static_cast<uint32_t>(nope)};
        kv_rows.ring = raw_ring;
        kv_rows.window = hp.window;
        norm_rope_pair(qr_norm, kv_rows, hp.norm_eps, positions_dev.data(), s);
    } else {
        rms_norm(qr.data(), L.q_a_norm, qr.data(), static_cast<uint32_t>(ql), n, hp.norm_eps, s);
        rms_norm(kvb.data(), L.kv_norm, kvb.data(), hp.head_dim, n, hp.norm_eps, s);
        rope_tokens(kvb.data(), n, hd, 1, hd, nope, om, hp.rope_dim / 2, positions_dev.data(), false, s);
        fp8_rows(kvb.data(), n, hd, static_cast<uint32_t>(nope), s);
    }
}

// The attention queries from the normed qr: q_b, then each head's norm and RoPE.
void Forward::Impl::attention_queries(const DLayer& L, uint32_t n) {
    const uint64_t hd = hp.head_dim, ql = hp.q_lora_rank, nope = hd - hp.rope_dim, qw = uint64_t{hp.n_head} * hd;
    const float* om = omega(L);
    mm(L.q_b, 0, qw, qr.data(), ql, q.data(), qw, n);
    if (use_fuse) {  // the same bits as the two launches below
        norm_rope_rows(q.data(), nullptr, hp.head_dim, n * hp.n_head, hp.norm_eps, hp.n_head, om, hp.rope_dim / 2,
                       positions_dev.data(), 0, cur);
    } else {
        rms_norm(q.data(), nullptr, q.data(), hp.head_dim, n * hp.n_head, hp.norm_eps, cur);
        rope_tokens(q.data(), n, qw, hp.n_head, hd, nope, om, hp.rope_dim / 2, positions_dev.data(), false, cur);
    }
}

// The indexer's queries (§6) from the normed qr: wq_b·qr, RoPE on the last rope_dim
// dims, Hadamard, FP4; and its head weights' scale.
void Forward::Impl::indexer_queries(const DLayer& L, uint32_t n) {
    if (!L.icomp) return;
    const uint64_t d = hp.idx_head_dim, nh = hp.idx_n_heads, ql = hp.q_lora_rank, rd = hp.rope_dim;
    const uint32_t half = hp.rope_dim / 2;
    mm(L.indexer_q_b, 0, nh * d, qr.data(), ql, iq.data(), nh * d, n);
    if (use_fuse) {  // the same bits as the three launches below
        rope_hadamard_fp4(iq.data(), n, hp.idx_n_heads, hp.idx_head_dim, omega_comp, half, positions_dev.data(), cur);
    } else {
        rope_tokens(iq.data(), n, nh * d, hp.idx_n_heads, d, d - rd, omega_comp, half, positions_dev.data(), false,
                    cur);
        hadamard_scaled(iq.data(), hp.idx_head_dim, n * hp.idx_n_heads, cur);
        fp4_simulate(iq.data(), n * nh * d, cur);
    }
    const auto scale = static_cast<float>(std::pow(static_cast<double>(d), -0.5) *
                                          std::pow(static_cast<double>(nh), -0.5));
    scale_values(iw.data(), n * nh, scale, cur);
}

// One token's compressors (§5.4): its kv / score rows into each compressor's state,
// emitting a row when its window fills.
void Forward::Impl::compress_token(const DLayer& L, DevLayerKv& kv, uint32_t t) {
    const auto step = [&](DevComp& c, const DComp& w, const float* kvp, const float* scp, bool indexer) {
        CompressorStep cs;
        cs.state_kv = c.kv.data();
        cs.state_score = c.score.data();
        cs.kv = kvp;
        cs.score = scp;
        cs.ape = w.ape;
        cs.norm = w.norm;
        cs.omega = omega_comp;
        cs.rows = c.rows.data();
        cs.n_rows = c.n_rows_dev.data();
        cs.pos = positions_dev.data() + t;
        cs.ratio = c.ratio;
        cs.d = c.d;
        cs.coff = c.coff;
        cs.capacity = c.capacity;
        cs.rope_dim = hp.rope_dim;
        cs.eps = hp.norm_eps;
        cs.indexer = indexer;
        compressor_step(cs, cur);
    };
    if (kv.attn) {
        const uint64_t cw = kv.attn->width();
        step(*kv.attn, *L.comp, ckv.data() + t * cw, csc.data() + t * cw, false);
    }
    if (kv.index) {
        const uint64_t iwd = kv.index->width();
        step(*kv.index, *L.icomp, ikv.data() + t * iwd, isc.data() + t * iwd, true);
    }
}

// One token's compressed rows to attend: the indexer's top k where it is on.
void Forward::Impl::select_rows(DevLayerKv& kv, uint32_t t) {
    if (!kv.index || tok_index_rows[t] == 0) return;
    const uint64_t d = hp.idx_head_dim, nh = hp.idx_n_heads;
    indexer_topk(iq.data() + t * nh * d, iw.data() + t * nh, kv.index->rows.data(), kv.index->n_rows_dev.data(),
                 tok_index_rows[t], hp.idx_head_dim, hp.idx_n_heads, hp.idx_topk, index_scores.data(),
                 index_sel.data(), cur);
}

// Everything position-dependent (ring slot, row counts, indexer on/off) is read on the
// device; tok_index_rows[t] only bounds the indexer's grid.
void Forward::Impl::attend(const DLayer& L, DevLayerKv& kv, uint32_t t) {
    const uint64_t hd = hp.head_dim, qw = uint64_t{hp.n_head} * hd;
    AttendToken a;
    a.q = q.data() + t * qw;
    a.raw = kv.raw.data();
    if (kv.index) {  // select_rows() made its selection
        a.comp = kv.attn->rows.data();
        a.n_comp = kv.index->n_rows_dev.data();
        a.comp_sel = index_sel.data();
        a.topk = hp.idx_topk;
    } else if (kv.attn) {
        a.comp = kv.attn->rows.data();
        a.n_comp = kv.attn->n_rows_dev.data();
    }
    a.sinks = L.sinks;
    a.omega = omega(L);
    a.scores = scores.data();
    a.cap_rows = cap_rows;
    a.out = o.data() + t * qw;
    a.n_head = hp.n_head;
    a.hd = hp.head_dim;
    a.rope_dim = hp.rope_dim;
    a.window = hp.window;
    a.pos = positions_dev.data() + t;
    attend_token(a, stream.get());
}

// The host mirror of the compressed-row counts, advanced over this pass's tokens in
// order (the compressor kernels advance the device counts the same way), with the
// capacity check; and per token the indexer's grid bound: its rows after the step,
// rounded up to kIndexGrain (so a graph's grid stays valid for many steps), 0 where no
// layer has more rows than the top k.
void Forward::Impl::advance_row_counts() {
    const uint32_t n = static_cast<uint32_t>(tok_pos.size());
    tok_index_rows.assign(n, 0);
    for (uint32_t t = 0; t < n; ++t) {
        const uint64_t p = tok_pos[t];
        uint32_t index_rows = 0;
        for (uint32_t il = 0; il < hp.n_layer; ++il) {
            DevLayerKv& kv = tok_state[t]->layers[il];
            for (DevComp* c : {kv.attn ? &*kv.attn : nullptr, kv.index ? &*kv.index : nullptr}) {
                if (c == nullptr || (p + 1) % c->ratio != 0) continue;
                if (c->n_rows >= c->capacity) fail("cuda forward: compressed cache of layer ", il, " is full");
                ++c->n_rows;
            }
            if (kv.index) index_rows = std::max(index_rows, kv.index->n_rows);
        }
        if (index_rows > hp.idx_topk)
            tok_index_rows[t] =
                static_cast<uint32_t>((uint64_t{index_rows} + kIndexGrain - 1) / kIndexGrain * kIndexGrain);
    }
    batch_pass = batch_attn && n >= batch_min_tokens;
    if (batch_pass) prepare_batch_attn();
}

// The batched attention's tables for this pass (uploaded before it, outside any graph:
// the same key gives the same tables) and its indexer scratch. A reallocation retires
// the graphs, which hold the pointers.
void Forward::Impl::prepare_batch_attn() {
    const auto n = static_cast<uint32_t>(tok_state.size());
    host_tok_seg.resize(n);
    std::vector<DevState*> seg_state;
    for (uint32_t t = 0; t < n; ++t) {
        if (t == 0 || tok_state[t] != tok_state[t - 1]) seg_state.push_back(tok_state[t]);
        host_tok_seg[t].seg = static_cast<uint32_t>(seg_state.size() - 1);
    }
    n_seg = static_cast<uint32_t>(seg_state.size());
    for (uint32_t t = 0; t < n; ++t) {
        TokSeg& ts = host_tok_seg[t];
        ts.first = t == 0 || host_tok_seg[t - 1].seg != ts.seg ? t : host_tok_seg[t - 1].first;
    }
    for (uint32_t t = n; t-- > 0;) {
        TokSeg& ts = host_tok_seg[t];
        ts.last = t + 1 == n || host_tok_seg[t + 1].seg != ts.seg ? t : host_tok_seg[t + 1].last;
    }
    host_seg_kv.assign(uint64_t{hp.n_layer} * n_seg, SegKv{});
    for (uint32_t il = 0; il < hp.n_layer; ++il)
        for (uint32_t sg = 0; sg < n_seg; ++sg) {
            DevLayerKv& kv = seg_state[sg]->layers[il];
            SegKv& k = host_seg_kv[uint64_t{il} * n_seg + sg];
            k.raw = kv.raw.data();
            const auto ptrs = [](DevComp& c) {
                return CompPtrs{c.kv.data(), c.score.data(), c.rows.data(), c.n_rows_dev.data(), c.capacity};
            };
            if (kv.attn) k.attn = ptrs(*kv.attn);
            if (kv.index) k.index = ptrs(*kv.index);
        }
    index_max_rows = n == 0 ? 0 : *std::max_element(tok_index_rows.begin(), tok_index_rows.end());
    index_group = index_max_rows == 0 ? 0
                                      : static_cast<uint32_t>(std::clamp<uint64_t>(
                                            kIndexScoreFloats / index_max_rows, 1, n));
    bool moved = false;
    const auto need = [&](auto& buf, uint64_t count) {
        if (buf.size() >= count) return;
        buf = std::remove_reference_t<decltype(buf)>(count);
        moved = true;
    };
    need(tok_seg_dev, n);
    need(seg_kv_dev, host_seg_kv.size());
    if (index_max_rows != 0) {
        need(batch_index_scores, uint64_t{index_group} * index_max_rows);
        need(batch_index_sel, uint64_t{n} * hp.idx_topk);
    }
    if (moved) clear_graphs();
    const cudaStream_t s = stream.get();
    DS4_CUDA_CHECK(cudaMemcpyAsync(tok_seg_dev.data(), host_tok_seg.data(), n * sizeof(TokSeg),
                                   cudaMemcpyHostToDevice, s));
    DS4_CUDA_CHECK(cudaMemcpyAsync(seg_kv_dev.data(), host_seg_kv.data(), host_seg_kv.size() * sizeof(SegKv),
                                   cudaMemcpyHostToDevice, s));
}

// The batched kernels' limits (shapes beyond them run token by token).
bool Forward::Impl::batch_attn_ok(uint32_t il) const {
    if (!batch_pass || !batch_attend_fits(hp.head_dim, cap_rows)) return false;
    const DevLayerKv& kv = tok_state[0]->layers[il];
    for (const auto* c : {&kv.attn, &kv.index})
        if (*c && ((*c)->coff * (*c)->ratio > kBatchMaxSlots || (*c)->width() > 1024)) return false;
    return true;
}

// §5.4 for all n tokens at once (attention_batch.h): compressor emits, the indexer's
// top k, attention, then the ring / frontiers / counts, bitwise as the per-token walk.
void Forward::Impl::attend_batch(uint32_t il, uint32_t n) {
    const DLayer& L = layers[il];
    const cudaStream_t s = stream.get();
    const DevLayerKv& kv0 = tok_state[0]->layers[il];  // shapes (every sequence has the same)
    const BatchPass p{n, n_seg, tok_seg_dev.data(), seg_kv_dev.data() + uint64_t{il} * n_seg, positions_dev.data()};
    const auto comp = [&](const DevComp& c, const DComp& w, const float* kvp, const float* scp, bool index) {
        BatchComp b;
        b.index = index;
        b.kv = kvp;
        b.score = scp;
        b.ape = w.ape;
        b.norm = w.norm;
        b.omega = omega_comp;
        b.ratio = c.ratio;
        b.d = c.d;
        b.coff = c.coff;
        b.rope_dim = hp.rope_dim;
        b.eps = hp.norm_eps;
        return b;
    };
    BatchFinish f;
    f.kvb = kvb.data();
    f.hd = hp.head_dim;
    f.window = hp.window;
    if (kv0.attn) {
        f.attn = comp(*kv0.attn, *L.comp, ckv.data(), csc.data(), false);
        batch_compressor_emit(p, f.attn, s);
    }
    if (kv0.index) {
        f.index = comp(*kv0.index, *L.icomp, ikv.data(), isc.data(), true);
        batch_compressor_emit(p, f.index, s);
    }
    BatchAttend a;
    if (kv0.index && index_max_rows != 0) {
        BatchIndexer ix;
        ix.q = iq.data();
        ix.w = iw.data();
        ix.ratio = kv0.index->ratio;
        ix.d = hp.idx_head_dim;
        ix.n_heads = hp.idx_n_heads;
        ix.k = hp.idx_topk;
        ix.max_rows = index_max_rows;
        ix.scores = batch_index_scores.data();
        ix.score_stride = index_max_rows;
        ix.sel = batch_index_sel.data();
        for (uint32_t t0 = 0; t0 < n; t0 += index_group)
            batch_indexer_topk(p, ix, t0, std::min(index_group, n - t0), s);
        a.sel = batch_index_sel.data();
    }
    a.q = q.data();
    a.kvb = kvb.data();
    a.comp = kv0.attn.has_value();
    a.index = kv0.index.has_value();
    a.comp_ratio = kv0.index ? kv0.index->ratio : kv0.attn ? kv0.attn->ratio : 0;
    a.topk = hp.idx_topk;
    a.sinks = L.sinks;
    a.omega = omega(L);
    a.cap_rows = cap_rows;
    a.out = o.data();
    a.n_head = hp.n_head;
    a.hd = hp.head_dim;
    a.rope_dim = hp.rope_dim;
    a.window = hp.window;
    batch_attend(p, a, s);
    batch_attn_finish(p, f, s);
}

void Forward::Impl::attention(uint32_t il, uint32_t n) {
    const DLayer& L = layers[il];
    const cudaStream_t s = stream.get();
    hc_site_pre(L.hc_attn_fn, L.hc_attn_scale, L.hc_attn_base, L.attn_norm, n);
    // all tokens at once (attend_batch), or token by token in position order (§5.4): raw
    // row, compressors, then attend. One token's raw row is stored by the kv row's
    // norm / RoPE / FP8 launch (fused; nothing between reads the ring)
    const bool batched = batch_attn_ok(il);
    const bool raw_fused = use_fuse && !batched && n == 1;
    attention_projections(L, n, raw_fused ? tok_state[0]->layers[il].raw.data() : nullptr);
    // (issue 8) the indexer's queries (and, for a single token, its compressors and top k)
    // on the side stream while the main stream makes the queries: nothing of the one
    // reads the other's outputs before attend
    const bool side_tok = !batched && n == 1;
    const bool side_work = L.icomp || (side_tok && (tok_state[0]->layers[il].attn || tok_state[0]->layers[il].index));
    {
        Fork fork(*this, forks(n) && side_work);
        indexer_queries(L, n);
        if (side_tok) {
            compress_token(L, tok_state[0]->layers[il], 0);
            select_rows(tok_state[0]->layers[il], 0);
        }
        fork.main();
        attention_queries(L, n);
        fork.join();
    }

    if (batched) attend_batch(il, n);
    const uint64_t hd = hp.head_dim;
    for (uint32_t t = 0; t < n && !batched; ++t) {
        DevLayerKv& kv = tok_state[t]->layers[il];
        if (!raw_fused)
            store_raw_row(kv.raw.data(), kvb.data() + t * hd, hp.head_dim, hp.window, positions_dev.data() + t, s);
        if (!side_tok) {
            compress_token(L, kv, t);
            select_rows(kv, t);
        }
        attend(L, kv, t);
    }
    // grouped low-rank output projection
    const uint64_t G = hp.o_groups, R = hp.o_lora_rank, qw = uint64_t{hp.n_head} * hd;
    const uint64_t group_in = hp.n_head / G * hd;
    const bool fused = matmul_groups_fused(L.out_a.type, R, L.out_a.in) && group_in % 4 == 0 &&
                       reinterpret_cast<uintptr_t>(L.out_a.data) % 4 == 0;
    const bool out_a_mma = L.out_a.q8r && mma && mma_applies(G * R, n, mma_min_work);  // one grid of G x R rows
    if (wgmma_takes(L.out_a, n) && G * group_in == qw && qw % 256 == 0 && group_in % 256 == 0) {
        quantize_mma_activations(o.data(), qw, qw, n, mm_q.data(), s);
        WgmmaGroups ex;
        ex.groups = static_cast<uint32_t>(G);
        ex.xq_cols = qw;
        ex.y_group = R;
        matmul_f16_wgmma(L.out_a.f16, R, group_in, mm_q.data(), n, z.data(), G * R, s, ex);
    } else if (out_a_mma && G * group_in == qw && qw <= 32768 && group_in % 512 == 0 && qw % 512 == 0 &&
        L.out_a.row_bytes * R % 16 == 0) {  // (issue 8) the G groups in one tensor-core launch, bits of the loop below
        quantize_mma_activations(o.data(), qw, qw, n, mm_q.data(), s);
        MmaExtra ex{mm_part.data()};
        ex.groups = static_cast<uint32_t>(G);
        ex.w_group = L.out_a.row_bytes * R;
        ex.y_group = R;
        ex.xq_cols = qw;
        matmul_q8r_mma(L.out_a.data, R, group_in, mm_q.data(), n, z.data(), G * R, s, ex);
    } else if (L.out_a.q8r && !(mma && mma_applies(R, n, mma_min_work)))  // (issue 8) one launch, the same bits as the loop below
        matmul_q8r_groups(L.out_a.data, R, L.out_a.in, static_cast<uint32_t>(G), o.data(), qw, group_in, z.data(),
                          G * R, R, n, s);
    else if (fused && !L.out_a.q8r)  // (the loop's mm() takes repacked rows to the tensor cores)  // one launch for the G groups, the same bits as the loop below
        matmul_groups(L.out_a.type, L.out_a.data, R, L.out_a.in, static_cast<uint32_t>(G), o.data(), qw, group_in,
                      z.data(), G * R, R, n, s);
    else
        for (uint64_t g = 0; g < G; ++g)
            mm(L.out_a, g * R, R, o.data() + g * group_in, qw, z.data() + g * R, G * R, n);
    mm(L.out_b, 0, hp.n_embd, z.data(), G * R, y.data(), hp.n_embd, n);
    if (steering) steering->apply(il, cpu::SteeringSite::attn, y.data(), n, hp.n_embd, s);
    hc_post(hc_shape, x.data(), y.data(), post.data(), comb.data(), n, s);
}

}  // namespace ds4::cuda
