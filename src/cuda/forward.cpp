// Host side of the CUDA forward pass: weight upload, per-sequence device KV state,
// scratch, the output head, CUDA graphs and the public API; the sublayers are in
// forward_attention.cpp and forward_moe.cpp (mirroring src/cpu/forward.cpp, attention.cpp
// and moe.cpp: same order, same shapes); the kernels in forward_kernels.h and kernels.h.
#include <cstdlib>

#include "cuda/forward_impl.h"
#include "cuda/matmul_f16_mma.h"
#include "cuda/matmul_q8r_tc.h"

namespace ds4::cuda {

int gpu_count() { return device_count(); }

namespace {
// Each block starts with a header saying how it was allocated (64 bytes: the values stay
// 64-byte aligned in both kinds).
constexpr size_t kLogitsHeader = 64;
constexpr uint64_t kPinnedTag = 0x64733470696e6e64ull, kHeapTag = 0x6473346865617021ull;
}  // namespace

void* pinned_logits_alloc(size_t bytes) {
    const size_t total = (bytes + kLogitsHeader + 63) & ~size_t{63};
    void* base = nullptr;
    uint64_t tag = kPinnedTag;
    if (bytes > kPinnedLogitsMaxBytes || cudaHostAlloc(&base, total, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();  // a failed page-lock is not an error of the next launch
        base = std::aligned_alloc(64, total);
        tag = kHeapTag;
        if (base == nullptr) return nullptr;
    }
    *static_cast<uint64_t*>(base) = tag;
    return static_cast<char*>(base) + kLogitsHeader;
}

void pinned_logits_free(void* p) {
    if (p == nullptr) return;
    void* base = static_cast<char*>(p) - kLogitsHeader;
    if (*static_cast<const uint64_t*>(base) == kPinnedTag)
        cudaFreeHost(base);  // at exit the runtime may be gone: nothing to report then
    else
        std::free(base);
}

void Forward::Impl::upload_weights() {
    HostStager st(stream.get());
    struct Unset {
        HostStager*& p;
        ~Unset() { p = nullptr; }
    } unset{stager = &st};
    const cpu::ModelWeights& w = model.weights();
    hc_shape = HcShape{hp.hc_mult, hp.n_embd, hp.hc_sinkhorn_iters, hp.norm_eps, hp.hc_eps};
    output_hc_fn = upload_mat(w.output_hc_fn);
    output_hc_scale = upload_vec(w.output_hc_scale);
    output_hc_base = upload_vec(w.output_hc_base);
    output_norm = upload_vec(w.output_norm);
    output = upload_mat(w.output);
    omega_dense = upload_vec(cpu::RopeFreqs::for_layer(hp, 0).omega);
    omega_comp = upload_vec(cpu::RopeFreqs::for_layer(hp, 4).omega);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const cpu::LayerWeights& lw = w.layers[il];
        DLayer L;
        L.ratio = lw.ratio;
        L.hc_attn_fn = upload_mat(lw.hc_attn_fn);
        L.hc_attn_scale = upload_vec(lw.hc_attn_scale);
        L.hc_attn_base = upload_vec(lw.hc_attn_base);
        L.hc_ffn_fn = upload_mat(lw.hc_ffn_fn);
        L.hc_ffn_scale = upload_vec(lw.hc_ffn_scale);
        L.hc_ffn_base = upload_vec(lw.hc_ffn_base);
        L.attn_norm = upload_vec(lw.attn_norm);
        L.q_a = upload_mat(lw.q_a);
        L.q_a_norm = upload_vec(lw.q_a_norm);
        L.q_b = upload_mat(lw.q_b);
        L.kv = upload_mat(lw.kv);
        L.kv_norm = upload_vec(lw.kv_norm);
        L.sinks = upload_vec(lw.sinks);
        L.out_a = upload_mat(lw.out_a);
        L.out_b = upload_mat(lw.out_b);
        if (lw.compressor) L.comp = upload_comp(*lw.compressor);
        if (lw.indexer_compressor) {
            L.icomp = upload_comp(*lw.indexer_compressor);
            L.indexer_q_b = upload_mat(lw.indexer_q_b);
            L.indexer_proj = upload_mat(lw.indexer_proj);
        }
        L.ffn_norm = upload_vec(lw.ffn_norm);
        L.router = upload_mat(lw.router);
        L.router_bias = upload_vec(lw.router_bias);
        if (hp.is_hash_layer(il)) {
            if (lw.tid2eid.data == nullptr || lw.tid2eid.type != GgmlType::I32)
                fail("cuda forward: layer ", il, " is hash-routed but has no I32 tid2eid");
            // the experts' kernels index weight slabs by these ids on the device: checked once here
            const auto* ids = static_cast<const int32_t*>(lw.tid2eid.data);
            for (uint64_t i = 0; i < lw.tid2eid.n_elements(); ++i)
                if (ids[i] < 0 || static_cast<uint32_t>(ids[i]) >= hp.n_expert)
                    fail("cuda forward: layer ", il, " tid2eid names expert ", ids[i], " of ", hp.n_expert);
            L.tid2eid = reinterpret_cast<const int32_t*>(
                upload_bytes(lw.tid2eid.data, lw.tid2eid.n_elements() * sizeof(int32_t)));
        }
        L.exp_gate = upload_mat(lw.experts.gate);
        L.exp_up = upload_mat(lw.experts.up);
        L.exp_down = upload_mat(lw.experts.down);
        L.sh_gate = upload_mat(lw.shared_gate);
        L.sh_up = upload_mat(lw.shared_up);
        L.sh_down = upload_mat(lw.shared_down);
        layers.push_back(std::move(L));
    }
    // (issue 8) the dense Q8_0 matrices (not the experts) for matmul_q8r
    repack_q8(output);
    for (DMat* m : dense_mats()) repack_q8(*m);
    make_f16_copies();
    // the weights are final here: kernels may read them before their pdl wait (pdl.cuh)
    DS4_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
}

std::vector<DMat*> Forward::Impl::dense_mats() {
    std::vector<DMat*> mats;
    for (DLayer& L : layers) {
        for (DMat* m : {&L.q_a, &L.q_b, &L.kv, &L.out_a, &L.out_b, &L.indexer_q_b, &L.indexer_proj, &L.router,
                        &L.sh_gate, &L.sh_up, &L.sh_down})
            mats.push_back(m);
        for (std::optional<DComp>* c : {&L.comp, &L.icomp})
            if (*c) {
                mats.push_back(&(*c)->kv);
                mats.push_back(&(*c)->gate);
            }
    }
    return mats;
}

void Forward::Impl::make_f16_copies() {
    if (!wgmma_available()) return;
    std::vector<DMat*> mats = dense_mats();  // the repacked ones (the F16 router, compressors... are not)
    std::erase_if(mats, [](const DMat* m) { return !m->q8r || m->in % 256 != 0; });
    uint64_t halves = 0;
    for (const DMat* m : mats) halves += m->out * m->in;
    size_t free = 0, total = 0;
    DS4_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    if (halves == 0 || free < 2 * halves + kF16CopyHeadroom) return;
    f16_weights = DeviceBuffer<__half>(halves);
    weight_bytes += 2 * halves;
    __half* at = f16_weights.data();
    for (DMat* m : mats) {
        q8r_to_f16(m->data, m->out, m->in, at, stream.get());
        m->f16 = at;
        at += m->out * m->in;
    }
}

// ---- device KV state ----

DevState& Forward::Impl::device_state(const cpu::KvState& host) {
    auto& slot = states[&host];
    if (slot) return *slot;
    auto ds = std::make_unique<DevState>();
    uint64_t bytes = 0;
    for (uint32_t il = 0; il < host.n_layer(); ++il) {
        const cpu::LayerKv& hl = host.layer(il);
        bytes += hl.raw.size() * sizeof(float);
        for (const auto* c : {&hl.attn, &hl.index})
            if (*c) bytes += ((*c)->state_kv.size() * 2 + (*c)->rows.size()) * sizeof(float);
    }
    ensure_fits(bytes, cat("cuda forward: KV state of a sequence (ctx ", host.ctx(), ")"));
    ds->layers.resize(host.n_layer());
    for (uint32_t il = 0; il < host.n_layer(); ++il) {
        const cpu::LayerKv& hl = host.layer(il);
        DevLayerKv& dl = ds->layers[il];
        dl.raw = DeviceBuffer<float>(hl.raw.size());
        const auto make = [](const cpu::CompressorState& c) {
            DevComp d;
            d.ratio = c.ratio;
            d.d = c.d;
            d.coff = c.coff;
            d.capacity = c.capacity;
            d.kv = DeviceBuffer<float>(c.state_kv.size());
            d.score = DeviceBuffer<float>(c.state_score.size());
            d.rows = DeviceBuffer<float>(c.rows.size());
            d.n_rows_dev = DeviceBuffer<uint32_t>(1);
            return d;
        };
        if (hl.attn) dl.attn = make(*hl.attn);
        if (hl.index) dl.index = make(*hl.index);
    }
    slot = std::move(ds);
    return *slot;
}

void Forward::Impl::upload_state(const cpu::KvState& host, DevState& ds) {
    const cudaStream_t s = stream.get();
    for (uint32_t il = 0; il < host.n_layer(); ++il) {
        const cpu::LayerKv& hl = host.layer(il);
        DevLayerKv& dl = ds.layers[il];
        DS4_CUDA_CHECK(cudaMemcpyAsync(dl.raw.data(), hl.raw.data(), hl.raw.size() * sizeof(float),
                                       cudaMemcpyHostToDevice, s));
        const auto put = [&](const cpu::CompressorState& c, DevComp& d) {
            d.n_rows = c.n_rows;
            DS4_CUDA_CHECK(cudaMemcpyAsync(d.n_rows_dev.data(), &d.n_rows, sizeof(uint32_t),
                                           cudaMemcpyHostToDevice, s));
            DS4_CUDA_CHECK(cudaMemcpyAsync(d.kv.data(), c.state_kv.data(), c.state_kv.size() * sizeof(float),
                                           cudaMemcpyHostToDevice, s));
            DS4_CUDA_CHECK(cudaMemcpyAsync(d.score.data(), c.state_score.data(),
                                           c.state_score.size() * sizeof(float), cudaMemcpyHostToDevice, s));
            if (c.n_rows != 0 && ds.upload_rows)
                DS4_CUDA_CHECK(cudaMemcpyAsync(d.rows.data(), c.rows.data(), uint64_t{c.n_rows} * c.d * sizeof(float),
                                               cudaMemcpyHostToDevice, s));
        };
        if (hl.attn) put(*hl.attn, *dl.attn);
        if (hl.index) put(*hl.index, *dl.index);
    }
    stream.sync();
    ds.n_tokens = host.n_tokens();
    ds.device_valid = true;
    ds.host_valid = true;
    ds.upload_rows = false;
}

void Forward::Impl::download_state(cpu::KvState& host, DevState& ds) {
    const cudaStream_t s = stream.get();
    for (uint32_t il = 0; il < host.n_layer(); ++il) {
        cpu::LayerKv& hl = host.layer(il);
        DevLayerKv& dl = ds.layers[il];
        DS4_CUDA_CHECK(cudaMemcpyAsync(hl.raw.data(), dl.raw.data(), hl.raw.size() * sizeof(float),
                                       cudaMemcpyDeviceToHost, s));
        const auto get = [&](cpu::CompressorState& c, const DevComp& d) {
            c.n_rows = d.n_rows;
            DS4_CUDA_CHECK(cudaMemcpyAsync(c.state_kv.data(), d.kv.data(), c.state_kv.size() * sizeof(float),
                                           cudaMemcpyDeviceToHost, s));
            DS4_CUDA_CHECK(cudaMemcpyAsync(c.state_score.data(), d.score.data(),
                                           c.state_score.size() * sizeof(float), cudaMemcpyDeviceToHost, s));
            if (d.n_rows != 0)
                DS4_CUDA_CHECK(cudaMemcpyAsync(c.rows.data(), d.rows.data(), uint64_t{d.n_rows} * d.d * sizeof(float),
                                               cudaMemcpyDeviceToHost, s));
        };
        if (hl.attn) get(*hl.attn, *dl.attn);
        if (hl.index) get(*hl.index, *dl.index);
    }
    stream.sync();
    ds.host_valid = true;
}

// ---- scratch ----

// Calls f(buffer, count) for each buffer whose size follows the pass's token count.
template <class F>
void Forward::Impl::each_token_buffer(uint64_t n, F&& f) {
    const uint64_t dim = hp.n_embd, hc = hp.hc_dim(), H = hp.hc_mult, hd = hp.head_dim;
    const uint64_t K = hp.n_expert_used, ff = hp.ff_exp, qw = uint64_t{hp.n_head} * hd;
    const uint64_t idw = 2 * uint64_t{hp.idx_head_dim};
    // the opt-in wgmma experts' half activations (experts_wgmma.h) are larger than Q8_K's
    const bool wgmma_experts_any =
        experts_wgmma_opted_in(GgmlType::IQ2_XXS) || experts_wgmma_opted_in(GgmlType::Q2_K);
    f(x, n * hc);
    f(mix, n * hp.hc_mix());
    f(pre, n * H);
    f(post, n * H);
    f(comb, n * H * H);
    f(u, n * dim);
    f(nrm, n * dim);
    f(y, n * dim);
    f(qr, n * hp.q_lora_rank);
    f(q, n * qw);
    f(kvb, n * hd);
    f(ckv, n * 2 * hd);
    f(csc, n * 2 * hd);
    f(ikv, n * idw);
    f(isc, n * idw);
    f(iq, n * hp.idx_n_heads * hp.idx_head_dim);
    f(iw, n * hp.idx_n_heads);
    f(o, n * qw);
    f(z, n * hp.o_groups * hp.o_lora_rank);
    f(probs, n * hp.n_expert);
    f(sel, n * K);
    f(sel_w, n * K);
    f(ex_in, n * K * dim);
    f(ex_g, n * K * ff);
    f(ex_u, n * K * ff);
    f(ex_out, n * K * dim);
    f(moe, n * dim);
    f(sh_g, n * ff);
    f(sh_u, n * ff);
    f(sh_out, n * dim);
    f(moe_idx, n == 0 ? 0 : std::max<uint64_t>(3 * n * K + n + 1, 5 * n * K + n + 3 * uint64_t{hp.n_expert} + 2));
    f(ex_q, std::max({q8_activation_bytes(std::max<uint64_t>(dim, ff), n * K),
                      q8k_token_bytes(std::max<uint64_t>(dim, ff)) * n * K,
                      wgmma_experts_any ? half_rows_bytes(std::max<uint64_t>(dim, ff), static_cast<uint32_t>(n * K))
                                        : 0}));
    f(mx_tiles, n == 0 ? 0
                       : mma_experts_tile_words(static_cast<uint32_t>(n * K),
                                                static_cast<uint32_t>(std::min<uint64_t>(hp.n_expert, n * K))));
    if (q8r_max_in > 0) {
        f(mm_q, mma_activation_bytes(std::max(q8r_max_in, uint64_t{hp.n_head} * hp.head_dim), n));
        f(mm_part, n == 0 ? 0 : kMmaSplitScratchFloats);
    }
    f(tokens_dev, n);
    f(positions_dev, n);
}

uint64_t Forward::Impl::token_scratch_bytes(uint32_t n) {
    uint64_t bytes = 0;
    each_token_buffer(n, [&]<class T>(DeviceBuffer<T>&, uint64_t count) { bytes += count * sizeof(T); });
    return bytes;
}

void Forward::Impl::release_token_scratch() {
    clear_graphs();
    each_token_buffer(0, []<class T>(DeviceBuffer<T>& b, uint64_t) { b = DeviceBuffer<T>(); });
    cap_tokens = 0;
}

void Forward::Impl::reserve(uint32_t n, uint32_t logit_rows, uint64_t ctx) {
    uint64_t comp = 0;
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const uint32_t r = hp.ratio(il);
        if (r == 0) continue;
        const uint64_t rows = ctx / r;
        comp = std::max<uint64_t>(comp, r == 4 ? std::min<uint64_t>(rows, hp.idx_topk) : rows);
    }
    const uint64_t need_rows = hp.window + comp, need_index = std::max<uint64_t>(ctx / 4, 1);
    // captured graphs hold the scratch pointers: any reallocation retires them
    if (n > cap_tokens || need_rows > cap_rows || need_index > cap_index_rows) clear_graphs();
    // each capacity is raised only once its buffers all hold it: a failed allocation
    // (out of VRAM) leaves the last good capacity, never a larger one
    if (n > cap_tokens) {
        each_token_buffer(n, [](auto& b, uint64_t count) { grow(b, count); });
        cap_tokens = n;
    }
    // the head's buffers by logit rows: a long prefill pass wants one row, not n (at
    // 2048 tokens, n rows of logits would be 1 GiB)
    if (logit_rows > cap_logit_rows) {
        clear_graphs();
        const uint64_t dim = hp.n_embd;
        grow(head_rows, logit_rows);
        grow(head_mix, logit_rows * uint64_t{hp.hc_mult});
        grow(collapsed, logit_rows * dim);
        grow(head_nrm, logit_rows * dim);
        grow(logits_dev, logit_rows * uint64_t{hp.n_vocab});
        cap_logit_rows = logit_rows;
    }
    if (need_rows > cap_rows) {
        scores = DeviceBuffer<float>(uint64_t{hp.n_head} * need_rows);
        cap_rows = need_rows;
    }
    if (need_index > cap_index_rows) {
        index_scores = DeviceBuffer<float>(need_index);
        grow(index_sel, std::max<uint64_t>(hp.idx_topk, 1));
        cap_index_rows = need_index;
    }
}

void Forward::Impl::check_chunk(const cpu::KvState& state, uint64_t pos, uint32_t n, std::span<const int32_t> tokens,
                                std::span<const uint32_t> logit_rows, std::span<float> logits) const {
    if (n == 0) fail("cuda forward: empty chunk");
    if (pos != state.n_tokens())
        fail("cuda forward: chunk starts at position ", pos, " but the sequence has ", state.n_tokens(), " tokens");
    if (pos + n > state.ctx())
        fail("cuda forward: positions up to ", pos + n, " exceed the context of ", state.ctx());
    if (state.n_layer() != hp.n_layer || state.head_dim() != hp.head_dim || state.window() != hp.window)
        fail("cuda forward: kv state was made for another model shape");
    if (logits.size() < logit_rows.size() * uint64_t{hp.n_vocab})
        fail("cuda forward: logits buffer holds ", logits.size(), " values, need ",
             logit_rows.size() * uint64_t{hp.n_vocab});
    for (uint32_t r : logit_rows)
        if (r >= n) fail("cuda forward: logits requested for chunk row ", r, " of ", n);
    for (int32_t tok : tokens)
        if (tok < 0 || static_cast<uint32_t>(tok) >= hp.n_vocab)
            fail("cuda forward: token id ", tok, " is outside the vocabulary of ", hp.n_vocab);
}

// §4.1 on the host (one row per token from the mapped embedding), then one upload.
void Forward::Impl::embed(std::span<const int32_t> tokens) {
    const uint64_t dim = hp.n_embd, hc = hp.hc_dim(), n = tokens.size();
    host_x.resize(n * hc);
    for (uint64_t t = 0; t < n; ++t) {
        float* xt = host_x.data() + t * hc;
        cpu::dequant_row(model.weights().token_embd, static_cast<uint64_t>(tokens[t]), xt);
        for (uint32_t h = 1; h < hp.hc_mult; ++h) std::copy(xt, xt + dim, xt + h * dim);
    }
    DS4_CUDA_CHECK(cudaMemcpyAsync(x.data(), host_x.data(), n * hc * sizeof(float), cudaMemcpyHostToDevice,
                                   stream.get()));
    // eval_from_hc: the given rows replace the embeddings (stream order: after the upload)
    if (input_x != nullptr)
        DS4_CUDA_CHECK(cudaMemcpyAsync(x.data(), input_x, n * hc * sizeof(float), cudaMemcpyDeviceToDevice,
                                       stream.get()));
    DS4_CUDA_CHECK(cudaMemcpyAsync(tokens_dev.data(), tokens.data(), n * sizeof(int32_t), cudaMemcpyHostToDevice,
                                   stream.get()));
    DS4_CUDA_CHECK(cudaMemcpyAsync(positions_dev.data(), tok_pos.data(), n * sizeof(uint64_t), cudaMemcpyHostToDevice,
                                   stream.get()));
}

// The site's mix and hc_pre, then nrm = rms_norm(u, norm_w) (fused into hc_pre's launch
// unless DS4_CUDA_FUSE=0: the same bits).
void Forward::Impl::hc_site_pre(const DMat& fn, const float* scale, const float* base, const float* norm_w,
                                uint32_t n) {
    const uint32_t mixw = hp.hc_mix();
    mm(fn, 0, mixw, x.data(), hp.hc_dim(), mix.data(), mixw, n);
    if (use_fuse)
        return hc_pre_norm(hc_shape, x.data(), mix.data(), scale, base, pre.data(), post.data(), comb.data(),
                           u.data(), norm_w, nrm.data(), hp.norm_eps, n, stream.get());
    hc_pre(hc_shape, x.data(), mix.data(), scale, base, pre.data(), post.data(), comb.data(), u.data(), n,
           stream.get());
    rms_norm(u.data(), norm_w, nrm.data(), hp.n_embd, n, hp.norm_eps, stream.get());
}

// ---- output head (§4.7) ----

void Forward::Impl::head(std::span<const uint32_t> rows) {
    const auto n = static_cast<uint32_t>(rows.size());
    if (n == 0) return;
    const cudaStream_t s = stream.get();
    const uint64_t hc = hp.hc_dim(), H = hp.hc_mult, V = hp.n_vocab;
    for (uint32_t i = 0; i < n; ++i)
        mm(output_hc_fn, 0, H, x.data() + uint64_t{rows[i]} * hc, hc, head_mix.data() + i * H, H, 1);
    hc_collapse(hc_shape, x.data(), head_rows.data(), head_mix.data(), output_hc_scale, output_hc_base,
                collapsed.data(), n, s);
    rms_norm(collapsed.data(), output_norm, head_nrm.data(), hp.n_embd, n, hp.norm_eps, s);
    mm(output, 0, V, head_nrm.data(), hp.n_embd, logits_dev.data(), V, n);
}

// Before the pass (a graph cannot capture a copy from pageable host memory that moves).
void Forward::Impl::upload_head_rows(std::span<const uint32_t> rows) {
    if (rows.empty()) return;
    DS4_CUDA_CHECK(cudaMemcpyAsync(head_rows.data(), rows.data(), rows.size() * sizeof(uint32_t),
                                   cudaMemcpyHostToDevice, stream.get()));
}

// ---- graphs ----

// A pass can be captured when it has no host round trip (the fast experts bring the
// router's choice to the host) and is small enough to be launch bound.
bool Forward::Impl::graphable(uint32_t n) const {
    if (!use_graphs || n > kMaxGraphTokens) return false;
    for (const DLayer& L : layers)
        if (!device_dispatch_ok(L)) return false;
    return true;
}

void Forward::Impl::layers_and_head(uint32_t n) { layers_and_head(n, 0, hp.n_layer); }

// Layers [first, end), and the head when end is the last layer.
void Forward::Impl::layers_and_head(uint32_t n, uint32_t first, uint32_t end) {
    for (uint32_t il = first; il < end; ++il) {
        attention(il, n);
        moe_layer(il, n);
    }
    if (end == hp.n_layer) head(host_rows);
}

// The pass as graphs of graph_part_layers layers each (0: one graph; kGraphPartLayers).
std::vector<GraphExec> Forward::Impl::capture_pass(uint32_t n) {
    std::vector<GraphExec> parts;
    const uint32_t step = graph_part_layers != 0 ? graph_part_layers : hp.n_layer;
    for (uint32_t first = 0; first < hp.n_layer; first += step) {
        const uint32_t end = std::min(hp.n_layer, first + step);
        parts.push_back(capture_graph(stream.get(), [&] { layers_and_head(n, first, end); }));
    }
    return parts;
}

// The layers and the head of a pass (inputs already uploaded): replayed from a cached
// graph of the same key, captured when one of the last few eager passes had this key
// (a key seen once, e.g. a prefill chunk, is not worth a capture), else launched one by
// one. The graph runs the very launches of the eager pass: bitwise the same results.
void Forward::Impl::run_pass(uint32_t n, bool graph) {
    if (!graph) return layers_and_head(n);
    GraphKey key;
    key.states.reserve(n);
    for (const DevState* ds : tok_state) key.states.push_back(ds);
    key.index_rows = tok_index_rows;
    key.logit_rows = host_rows;
    const auto it = std::find_if(graphs.begin(), graphs.end(), [&](const CachedGraph& g) { return g.key == key; });
    if (it != graphs.end()) {
        it->last_use = ++graph_clock;
        for (const GraphExec& part : it->parts) part.launch(stream.get());
        ++graph_stats.replays;
        return;
    }
    const auto was_seen = std::find(seen.begin(), seen.end(), key);
    if (was_seen == seen.end()) {
        layers_and_head(n);
        if (seen.size() >= kSeenKeys) seen.erase(seen.begin());
        seen.push_back(std::move(key));
        ++graph_stats.eager;
        return;
    }
    seen.erase(was_seen);
    if (graphs.size() >= kMaxGraphs)
        graphs.erase(std::min_element(graphs.begin(), graphs.end(), [](const CachedGraph& a, const CachedGraph& b) {
            return a.last_use < b.last_use;
        }));
    std::vector<GraphExec> parts;
    try {
        parts = capture_pass(n);
    } catch (const Error&) {
        // nothing ran during the capture: launch one by one from now on (a real launch
        // error then surfaces there)
        use_graphs = false;
        clear_graphs();
        ++graph_stats.failed;
        return layers_and_head(n);
    }
    CachedGraph g{std::move(key), std::move(parts), ++graph_clock};
    ++graph_stats.captures;
    graph_stats.parts = g.parts.size();
    for (const GraphExec& part : g.parts) part.launch(stream.get());
    ++graph_stats.replays;
    graphs.push_back(std::move(g));
}

// ---- public API ----

namespace {

// Checked before the Impl (and its stream) exists, for a plain message without a GPU.
const cpu::CpuModel& require_gpu(const cpu::CpuModel& model) {
    if (device_count() == 0) fail("cuda forward: no CUDA GPU is available (use the CPU backend)");
    return model;
}

}  // namespace

Forward::Forward(const cpu::CpuModel& model) : impl_(std::make_unique<Impl>(require_gpu(model))) {
    const cpu::ModelWeights& w = model.weights();
    uint64_t bytes = 0;
    const auto count = [&](const cpu::TensorView& v) {
        if (v.data != nullptr) bytes += v.row_bytes() * (v.n_elements() / v.dims[0]);
    };
    count(w.output);
    for (const cpu::LayerWeights& lw : w.layers) {
        for (const cpu::TensorView* v : {&lw.q_a, &lw.q_b, &lw.kv, &lw.out_a, &lw.out_b, &lw.router,
                                         &lw.experts.gate, &lw.experts.up, &lw.experts.down, &lw.shared_gate,
                                         &lw.shared_up, &lw.shared_down, &lw.indexer_q_b})
            count(*v);
    }
    ensure_fits(bytes, "cuda forward: model weights");
    impl_->upload_weights();
    impl_->mma = env_switch_on("DS4_CUDA_MMA");
    if (impl_->q8r_max_in > 0 && mma_applies(uint64_t{1} << 20, kMmaMinTokens, kMmaMinWork)) mma_init();
    impl_->mma_experts = env_switch_on("DS4_CUDA_MMA_EXPERTS");
    impl_->q8_experts = env_switch_on("DS4_CUDA_Q8_EXPERTS");
    // (here, not at first launch: ds4-bench --env-sweep pairs them)
    set_q8r_tc(env_switch_on("DS4_CUDA_Q8T"));
    set_q8r_tc_min_tokens(env_u32_or("DS4_CUDA_Q8T_MIN", kQ8rTcMinTokens));
    // batched attention's kernel choice, for tuning: only where set (tests set them directly)
    if (const uint32_t v = env_u32("DS4_CUDA_ATTN_MMA_MIN"); v != 0) set_batch_attend_mma(v);
    // tile and launch shapes (bench/RESULTS.md, session 20); all but F16_MMA_MANY keep the bits
    set_attend_group_rows(env_u32("DS4_CUDA_ATTN_GROUP_ROWS"));
    set_mma_experts_min_tokens(env_min_tokens("DS4_CUDA_MMA_EXPERTS_MIN", kMmaExpertsMinTokens));
    set_q8_experts_max_chunk(env_u32_or("DS4_CUDA_Q8_EXPERTS_NT", kQ8ExpertsMaxChunk));
    set_mma_split_max_blocks(env_u32("DS4_CUDA_MMA_SPLIT_MAX"));
    set_mma_split_tile_tokens(env_u32_or("DS4_CUDA_MMA_SPLIT_BN", kMmaSplitTileTokens));
    set_f16_mma_many_rows_min_tokens(env_u32_or("DS4_CUDA_F16_MMA_MANY", kF16MmaManyRowsMinTokens));
    if (const uint32_t v = env_u32("DS4_CUDA_ATTN_TILE_BLOCKS"); v != 0)
        set_batch_attend_tile({batch_attend_tile().max_heads, v});
    const char* fast = std::getenv("DS4_CUDA_FAST_EXPERTS");
    impl_->fast_experts = fast != nullptr && std::string_view(fast) == "1";
}

Forward::~Forward() = default;

void Forward::set_fast_experts(bool on) {
    impl_->fast_experts = on;
    impl_->clear_graphs();
}
bool Forward::fast_experts() const { return impl_->fast_experts; }

void Forward::set_mma_experts(bool on, uint64_t min_values) {
    impl_->mma_experts = on;
    impl_->mx_min_values = min_values;
    impl_->clear_graphs();
}
bool Forward::mma_experts() const { return impl_->mma_experts; }

void Forward::set_q8_experts(bool on, uint64_t min_values) {
    impl_->q8_experts = on;
    impl_->q8_min_values = min_values;
    impl_->clear_graphs();
}
bool Forward::q8_experts() const { return impl_->q8_experts; }

void Forward::set_mma(bool on, uint64_t min_work) {
    impl_->mma = on;
    impl_->mma_min_work = min_work;
    impl_->clear_graphs();
}
bool Forward::mma() const { return impl_->mma; }

void Forward::eval(cpu::KvState& state, uint64_t pos, std::span<const int32_t> tokens,
                   std::span<const uint32_t> logit_rows, std::span<float> logits) {
    impl_->check_chunk(state, pos, static_cast<uint32_t>(tokens.size()), tokens, logit_rows, logits);
    const Chunk c{&state, tokens, logit_rows, logits};
    eval_batch({&c, 1});
}

void Forward::eval_from_hc(cpu::KvState& state, uint64_t pos, std::span<const int32_t> tokens, const float* x_dev,
                           std::span<const uint32_t> logit_rows, std::span<float> logits) {
    if (x_dev == nullptr) fail("cuda forward: eval_from_hc without input HC rows");
    impl_->input_x = x_dev;
    try {
        eval(state, pos, tokens, logit_rows, logits);
    } catch (...) {
        impl_->input_x = nullptr;
        throw;
    }
    impl_->input_x = nullptr;
}

void Forward::set_steering(const cpu::SteeringDirections& dirs, float attn_scale, float ffn_scale) {
    impl_->steering = attn_scale != 0.0f || ffn_scale != 0.0f
                          ? std::make_unique<DeviceSteering>(dirs, attn_scale, ffn_scale)
                          : nullptr;
    impl_->clear_graphs();  // the launches change
}

void Forward::eval_batch(std::span<const Chunk> chunks) {
    Impl& m = *impl_;
    using Clock = std::chrono::steady_clock;
    const Clock::time_point t_start = m.pass_times.on ? Clock::now() : Clock::time_point{};
    uint64_t total = 0, ctx = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
        const Chunk& c = chunks[i];
        if (c.state == nullptr) fail("cuda forward: chunk ", i, " has no state");
        m.check_chunk(*c.state, c.state->n_tokens(), static_cast<uint32_t>(c.tokens.size()), c.tokens, c.logit_rows,
                      c.logits);
        for (size_t j = 0; j < i; ++j)
            if (chunks[j].state == c.state) fail("cuda forward: a sequence appears twice in one batch");
        total += c.tokens.size();
        ctx = std::max(ctx, c.state->ctx());
    }
    if (total == 0) return;
    if (total > std::numeric_limits<uint32_t>::max()) fail("cuda forward: batch of ", total, " tokens is too large");
    const auto n = static_cast<uint32_t>(total);
    m.tok_state.clear();
    m.tok_pos.clear();
    m.host_tokens.clear();
    m.host_rows.clear();
    uint64_t rows_total = 0;
    for (const Chunk& c : chunks) {
        DevState& ds = m.device_state(*c.state);
        const uint64_t pos = c.state->n_tokens();
        if (!ds.device_valid || ds.n_tokens != pos) m.upload_state(*c.state, ds);
        for (uint32_t r : c.logit_rows) m.host_rows.push_back(static_cast<uint32_t>(m.host_tokens.size()) + r);
        for (size_t t = 0; t < c.tokens.size(); ++t) {
            m.tok_state.push_back(&ds);
            m.tok_pos.push_back(pos + t);
            m.host_tokens.push_back(c.tokens[t]);
        }
        rows_total += c.logit_rows.size();
    }
    m.reserve(n, static_cast<uint32_t>(rows_total), ctx);
    m.last_n = 0;
    for (DevState* ds : m.tok_state) {
        ds->host_valid = false;
        ds->device_valid = false;  // until the step completes
    }
    m.advance_row_counts();
    m.embed(m.host_tokens);
    m.upload_head_rows(m.host_rows);
    const Clock::time_point t_prep = m.pass_times.on ? Clock::now() : Clock::time_point{};
    m.run_pass(n, m.graphable(n));
    const Clock::time_point t_launch = m.pass_times.on ? Clock::now() : Clock::time_point{};
    const uint64_t V = m.hp.n_vocab;
    uint64_t row = 0;
    for (const Chunk& c : chunks) {
        const uint64_t k = c.logit_rows.size();
        if (k != 0)
            DS4_CUDA_CHECK(cudaMemcpyAsync(c.logits.data(), m.logits_dev.data() + row * V, k * V * sizeof(float),
                                           cudaMemcpyDeviceToHost, m.stream.get()));
        row += k;
    }
    m.stream.sync();
    if (m.pass_times.on) {
        PassTimes::Sum& t = m.pass_times.by_n[n];
        const auto sec = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
        ++t.passes;
        t.prep += sec(t_prep - t_start);
        t.launch += sec(t_launch - t_prep);
        t.wait += sec(Clock::now() - t_launch);
    }
    for (const Chunk& c : chunks) {
        DevState& ds = *m.states.at(c.state);
        ds.n_tokens = c.state->n_tokens() + c.tokens.size();
        ds.device_valid = true;
        c.state->advance(c.tokens.size());
    }
    m.last_n = n;
}

std::span<const float> Forward::final_hc(uint32_t t) {
    Impl& m = *impl_;
    if (t >= m.last_n) fail("cuda forward: final HC state of chunk row ", t, " requested, the last chunk had ", m.last_n);
    const uint64_t hc = m.hp.hc_dim();
    m.host_hc.resize(hc);
    DS4_CUDA_CHECK(cudaMemcpyAsync(m.host_hc.data(), m.x.data() + t * hc, hc * sizeof(float), cudaMemcpyDeviceToHost,
                                   m.stream.get()));
    m.stream.sync();
    return m.host_hc;
}

void Forward::download(cpu::KvState& state) {
    const auto it = impl_->states.find(&state);
    if (it == impl_->states.end()) return;
    DevState& ds = *it->second;
    if (ds.device_valid && !ds.host_valid) impl_->download_state(state, ds);
}

void Forward::invalidate(const cpu::KvState& state, bool rows_changed) {
    const auto it = impl_->states.find(&state);
    if (it != impl_->states.end()) {
        it->second->device_valid = false;
        it->second->host_valid = true;
        it->second->upload_rows = it->second->upload_rows || rows_changed;
    }
}

void Forward::forget(const cpu::KvState& state) {
    if (impl_->states.erase(&state) != 0) impl_->clear_graphs();  // graphs may hold its buffers
}

void Forward::set_batch_attn(bool on, uint32_t min_tokens) {
    impl_->batch_attn = on;
    impl_->batch_min_tokens = std::max(min_tokens, 1u);
    impl_->clear_graphs();  // the launches change
}
bool Forward::batch_attn() const { return impl_->batch_attn; }

void Forward::set_graphs(bool on) {
    impl_->use_graphs = on;
    if (!on) impl_->clear_graphs();
}
bool Forward::graphs() const { return impl_->use_graphs; }
Forward::GraphStats Forward::graph_stats() const { return impl_->graph_stats; }

uint64_t Forward::weight_bytes() const { return impl_->weight_bytes; }

bool Forward::reserve_pass(uint32_t n) {
    try {
        impl_->reserve(n, 1, 0);
        return true;
    } catch (const Error&) {
        // cudaMalloc's failure is also the thread's last error (not sticky): take it, so
        // the next launch check does not report it
        if (cudaGetLastError() != cudaErrorMemoryAllocation) throw;
        impl_->release_token_scratch();
        return false;
    }
}
uint64_t Forward::pass_scratch_bytes(uint32_t n) const { return impl_->token_scratch_bytes(n); }
uint32_t Forward::reserved_tokens() const { return impl_->cap_tokens; }

}  // namespace ds4::cuda
