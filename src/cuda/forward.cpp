// Host side of the CUDA forward pass: weight upload, per-sequence device KV state and the
// op-by-op orchestration that mirrors src/cpu/forward.cpp, attention.cpp and moe.cpp
// (same order, same shapes); the kernels are in forward_kernels.h and kernels.h.
#include "cuda/forward.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cpu/matvec.h"
#include "cpu/numerics.h"
#include "cuda/attention_batch.h"
#include "cuda/device.h"
#include "cuda/env_switch.h"
#include "cuda/forward_kernels.h"
#include "cuda/kernels.h"
#include "cuda/matmul_mma.h"
#include "cuda/matmul_mma_experts.h"
#include "cuda/matmul_q8.h"
#include "cuda/matmul_q8_experts.h"
#include "cuda/steering.h"
#include "ds4/error.h"

namespace ds4::cuda {

int gpu_count() { return device_count(); }

namespace {

// A weight matrix in VRAM: `out` rows of `in` values in GGUF layout (3-D expert tensors:
// slab e starts at row e·out).
struct DMat {
    GgmlType type = GgmlType::F32;
    uint64_t in = 0, out = 0, row_bytes = 0;
    const uint8_t* data = nullptr;
    bool q8r = false;  // Q8_0 rows repacked in place for matmul_q8r (kernels.h)

    const uint8_t* row(uint64_t r) const { return data + r * row_bytes; }
};

struct DComp {
    DMat kv, gate;
    const float* ape = nullptr;
    const float* norm = nullptr;
};

struct DLayer {
    uint32_t ratio = 0;
    DMat hc_attn_fn, hc_ffn_fn;
    const float *hc_attn_scale = nullptr, *hc_attn_base = nullptr;
    const float *hc_ffn_scale = nullptr, *hc_ffn_base = nullptr;
    const float *attn_norm = nullptr, *q_a_norm = nullptr, *kv_norm = nullptr, *sinks = nullptr;
    DMat q_a, q_b, kv, out_a, out_b;
    std::optional<DComp> comp, icomp;
    DMat indexer_q_b, indexer_proj;
    const float* ffn_norm = nullptr;
    DMat router;
    const float* router_bias = nullptr;
    const int32_t* tid2eid = nullptr;
    DMat exp_gate, exp_up, exp_down;
    DMat sh_gate, sh_up, sh_down;
};

// n_rows is the host's mirror of the device count n_rows_dev, which the compressor
// kernel advances (the host advances the mirror for the same positions before a pass).
struct DevComp {
    uint32_t ratio = 0, d = 0, coff = 1, n_rows = 0, capacity = 0;
    DeviceBuffer<float> kv, score, rows;
    DeviceBuffer<uint32_t> n_rows_dev;
    uint32_t width() const { return coff * d; }
};

struct DevLayerKv {
    DeviceBuffer<float> raw;
    std::optional<DevComp> attn, index;
};

struct DevState {
    uint64_t n_tokens = 0;
    bool device_valid = false;  // device contents match the host's (or are newer)
    bool host_valid = true;     // host contents match the device's
    bool upload_rows = true;    // the next upload also sends the compressed rows
    std::vector<DevLayerKv> layers;
};

template <typename T>
void grow(DeviceBuffer<T>& b, uint64_t count) {
    if (b.size() < count) b = DeviceBuffer<T>(count);
}

// What a captured pass bakes in besides the scratch buffers: its tokens' sequences
// (their device buffers), each token's indexer grid bound and the logit rows. Positions
// and row counts are device values, so one graph serves every later step of this key.
struct GraphKey {
    std::vector<const DevState*> states;
    std::vector<uint32_t> index_rows;
    std::vector<uint32_t> logit_rows;
    bool operator==(const GraphKey&) const = default;
};

struct CachedGraph {
    GraphKey key;
    GraphExec exec;
    uint64_t last_use = 0;
};

constexpr size_t kMaxGraphs = 8;             // graphs kept (least recently used goes)
constexpr size_t kSeenKeys = 4;              // eager keys remembered (a server interleaves keys)
constexpr uint32_t kMaxGraphTokens = 64;     // larger passes are not launch bound
constexpr uint32_t kIndexGrain = 1024;       // indexer grids grow in steps of this many rows

bool graphs_from_env() { return env_switch_on("DS4_CUDA_GRAPH"); }

// (issue 8) the stateful attention part batched over a pass's tokens (attention_batch.h)
// for passes of at least this many tokens; DS4_CUDA_BATCH_ATTN=0: token by token always,
// =all: batched from one token (a single-token pass gains nothing: the same launch count;
// on an H200 batch-1 decode measured slower batched, see bench/RESULTS.md).
constexpr uint32_t kBatchAttnMinTokens = 2;
bool batch_attn_from_env() { return env_switch_on("DS4_CUDA_BATCH_ATTN"); }
uint32_t batch_attn_min_from_env() {
    const char* v = std::getenv("DS4_CUDA_BATCH_ATTN");
    return v != nullptr && std::string_view(v) == "all" ? 1 : kBatchAttnMinTokens;
}

constexpr uint64_t kIndexScoreFloats = uint64_t{32} << 20;  // batched indexer scores scratch (128 MiB)

// (issue 8) products that read one input merged into few launches; DS4_CUDA_MULTI=0: one each.
bool multi_from_env() { return env_switch_on("DS4_CUDA_MULTI"); }

// (issue 8) small kernels fused (norm + RoPE + FP8 rows, the MoE sum into hc_post);
// DS4_CUDA_FUSE=0: the separate launches.
bool fuse_from_env() { return env_switch_on("DS4_CUDA_FUSE"); }

// (issue 8) DS4_CUDA_MMA_MIN_WORK=N: the rows x tokens from which dense Q8_0 products take
// the tensor cores (default kMmaMinWork).
uint64_t mma_min_work_from_env() {
    const char* v = std::getenv("DS4_CUDA_MMA_MIN_WORK");
    return v != nullptr ? std::strtoull(v, nullptr, 10) : kMmaMinWork;
}

// One product of a shared input (mm_shared_input): all of w's rows into y (stride w.out).
struct MmPart {
    const DMat* w = nullptr;
    float* y = nullptr;
};

}  // namespace

// DS4_CUDA_HOST_TIMING=1: where a pass's wall time goes on the host (preparation,
// launching, waiting for the GPU and the logits), per pass size; printed at exit.
struct PassTimes {
    struct Sum {
        uint64_t passes = 0;
        double prep = 0, launch = 0, wait = 0;
    };
    bool on = std::getenv("DS4_CUDA_HOST_TIMING") != nullptr;
    std::map<uint32_t, Sum> by_n;
    ~PassTimes() {
        for (const auto& [n, t] : by_n)
            std::fprintf(stderr, "cuda host timing: %u tokens x %llu passes: prep %.3f, launch %.3f, wait %.3f ms/pass\n",
                         n, static_cast<unsigned long long>(t.passes), 1e3 * t.prep / t.passes,
                         1e3 * t.launch / t.passes, 1e3 * t.wait / t.passes);
    }
};

struct Forward::Impl {
    const cpu::CpuModel& model;
    const model::Hparams& hp;
    Stream stream;
    std::vector<DeviceBuffer<uint8_t>> blobs;
    uint64_t weight_bytes = 0;
    std::vector<DLayer> layers;
    DMat output_hc_fn, output;
    const float *output_hc_scale = nullptr, *output_hc_base = nullptr, *output_norm = nullptr;
    const float *omega_dense = nullptr, *omega_comp = nullptr;
    HcShape hc_shape;

    std::unordered_map<const cpu::KvState*, std::unique_ptr<DevState>> states;

    // scratch
    uint32_t cap_tokens = 0;
    uint32_t cap_logit_rows = 0;
    uint64_t cap_rows = 0, cap_index_rows = 0;
    uint32_t last_n = 0;
    DeviceBuffer<float> x, mix, pre, post, comb, u, nrm, y, qr, q, kvb, ckv, csc, ikv, isc, iq, iw, o, z;
    DeviceBuffer<float> probs, sel_w, ex_in, ex_g, ex_u, ex_out, moe, sh_g, sh_u, sh_out;
    DeviceBuffer<float> scores, index_scores, head_mix, collapsed, head_nrm, logits_dev;
    DeviceBuffer<uint32_t> sel, index_sel, moe_idx, head_rows;
    DeviceBuffer<uint8_t> ex_q;  // the experts' int8 activations (fast path)
    DeviceBuffer<uint8_t> mm_q;  // mm()'s int8 activations for the tensor-core path (matmul_mma.h)
    DeviceBuffer<float> mm_part;  // its split-K scratch (kMmaSplitScratchFloats)
    bool mma = true;
    uint64_t mma_min_work = mma_min_work_from_env();
    uint64_t q8r_max_in = 0;     // the widest repacked matrix: sizes mm_q
    bool fast_experts = false;
    bool mma_experts = true;            // routed experts on the tensor cores (matmul_mma_experts.h)
    uint64_t mx_min_values = kMmaExpertsMinValues;
    DeviceBuffer<uint32_t> mx_tiles;    // their tile list
    bool q8_experts = true;             // smaller passes' experts on matmul_q8_experts.h
    uint64_t q8_min_values = kQ8ExpertsMinValues;
    std::unique_ptr<DeviceSteering> steering;  // null: off
    const float* input_x = nullptr;             // eval_from_hc: device input HC rows
    DeviceBuffer<int32_t> tokens_dev;
    DeviceBuffer<uint64_t> positions_dev;
    // per token of the current batch: its sequence's device state and position
    std::vector<DevState*> tok_state;
    std::vector<uint64_t> tok_pos;
    std::vector<int32_t> host_tokens;
    std::vector<uint32_t> host_rows;
    std::vector<float> host_x;
    std::vector<uint32_t> host_sel, host_idx;
    std::vector<float> host_hc;
    std::vector<uint32_t> tok_index_rows;  // per token: indexer grid bound (0: off in every layer)

    // CUDA graphs of whole passes (layers + head), replayed when a key repeats
    bool use_graphs = graphs_from_env();
    std::vector<CachedGraph> graphs;
    std::vector<GraphKey> seen;  // keys of the last few eager passes: captured when one comes again
    uint64_t graph_clock = 0;
    Forward::GraphStats graph_stats;
    PassTimes pass_times;

    // batched attention: per token its segment (a run of one sequence's tokens), per
    // layer and segment the sequence's KV pointers; the indexer's per-token scratch
    bool batch_attn = batch_attn_from_env();
    uint32_t batch_min_tokens = batch_attn_min_from_env();
    bool batch_pass = false;  // this pass runs batched (set with its tables)
    uint32_t n_seg = 0, index_group = 0, index_max_rows = 0;
    std::vector<TokSeg> host_tok_seg;
    std::vector<SegKv> host_seg_kv;
    DeviceBuffer<TokSeg> tok_seg_dev;
    DeviceBuffer<SegKv> seg_kv_dev;
    DeviceBuffer<float> batch_index_scores;
    DeviceBuffer<uint32_t> batch_index_sel;

    explicit Impl(const cpu::CpuModel& m) : model(m), hp(m.hparams()) {}

    // ---- weights ----
    const uint8_t* upload_bytes(const void* host, uint64_t bytes) {
        DeviceBuffer<uint8_t> b(bytes);
        DS4_CUDA_CHECK(cudaMemcpy(b.data(), host, bytes, cudaMemcpyHostToDevice));
        weight_bytes += bytes;
        blobs.push_back(std::move(b));
        return blobs.back().data();
    }
    const float* upload_vec(const std::vector<float>& v) {
        if (v.empty()) return nullptr;
        return reinterpret_cast<const float*>(upload_bytes(v.data(), v.size() * sizeof(float)));
    }
    DMat upload_mat(const cpu::TensorView& v) {
        DMat m;
        if (v.data == nullptr) return m;
        m.type = v.type;
        m.in = v.dims[0];
        m.out = v.dims[1];
        m.row_bytes = v.row_bytes();
        m.data = upload_bytes(v.data, m.row_bytes * (v.n_elements() / v.dims[0]));
        return m;
    }
    DComp upload_comp(const cpu::CompressorWeights& c) {
        return DComp{upload_mat(c.kv), upload_mat(c.gate), upload_vec(c.ape), upload_vec(c.norm)};
    }
    void upload_weights();
    // (issue 8) a dense Q8_0 matrix into matmul_q8r's layout, in place: no second copy
    void repack_q8(DMat& m) {
        if (m.data == nullptr || !q8r_applies(m.type, m.in) || reinterpret_cast<uintptr_t>(m.data) % 16 != 0)
            return;
        q8r_repack(const_cast<uint8_t*>(m.data), m.out, m.in, stream.get());
        m.q8r = true;
        q8r_max_in = std::max(q8r_max_in, m.in);
    }

    // ---- matrix products ----
    void mm(const DMat& w, uint64_t row0, uint64_t rows, const float* xin, uint64_t xs, float* yout, uint64_t ys,
            uint32_t n) {
        const uint8_t* base = w.row(row0);
        const bool aligned = reinterpret_cast<uintptr_t>(xin) % 16 == 0 && xs % 4 == 0 &&
                             reinterpret_cast<uintptr_t>(base) % 4 == 0;
        if (w.q8r && aligned && mma && mma_applies(rows, n, mma_min_work)) {  // (issue 8) tensor cores for multi-token passes
            quantize_mma_activations(xin, xs, w.in, n, mm_q.data(), stream.get());
            matmul_q8r_mma(base, rows, w.in, mm_q.data(), n, yout, ys, stream.get(), MmaExtra{mm_part.data()});
        } else if (w.q8r)
            matmul_q8r(base, rows, w.in, xin, xs, yout, ys, n, stream.get());
        else if (matmul_supported(w.type) && w.in % 256 == 0 && aligned)
            matmul(w.type, base, rows, w.in, xin, xs, yout, ys, n, stream.get());
        else
            matmul_any(w.type, base, w.row_bytes, rows, w.in, xin, xs, yout, ys, n, stream.get());
    }

    // Products of one input x (n rows of xs), each all of its matrix's rows into its own
    // output (stride = rows): the repacked Q8_0 ones of one width in one launch
    // (matmul_q8r_multi), the others of one type and width in another (matmul_multi), the
    // rest (and the products mm() puts on the tensor cores) one mm() each. Every output has
    // the bits of its own mm() call.
    bool use_multi = multi_from_env();
    bool use_fuse = fuse_from_env();
    void mm_shared_input(std::span<const MmPart> parts, const float* xin, uint64_t xs, uint32_t n) {
        std::vector<const MmPart*> q8, other;
        const bool x_ok = reinterpret_cast<uintptr_t>(xin) % 16 == 0 && xs % 4 == 0;
        for (const MmPart& p : parts) {
            const DMat& w = *p.w;
            if (w.data == nullptr || w.out == 0) continue;
            // (a product the tensor cores take in this pass goes to mm(): the merged launch is a matvec)
            const bool to_mma = w.q8r && mma && mma_applies(w.out, n, mma_min_work);
            if (use_multi && x_ok && w.q8r && !to_mma && (q8.empty() || w.in == q8[0]->w->in)) {
                q8.push_back(&p);
            } else if (use_multi && x_ok && !w.q8r && matmul_supported(w.type) && w.in % 256 == 0 &&
                       reinterpret_cast<uintptr_t>(w.data) % 4 == 0 &&
                       (other.empty() || (w.type == other[0]->w->type && w.in == other[0]->w->in))) {
                other.push_back(&p);
            } else {
                mm(w, 0, w.out, xin, xs, p.y, w.out, n);
            }
        }
        // a lone part: its own mm() (nothing to merge)
        for (auto* list : {&q8, &other})
            if (list->size() == 1) {
                const DMat& w = *(*list)[0]->w;
                mm(w, 0, w.out, xin, xs, (*list)[0]->y, w.out, n);
                list->clear();
            }
        if (!q8.empty()) {
            std::vector<Q8rProduct> prods;
            for (const MmPart* p : q8) prods.push_back({p->w->data, p->w->out, p->y, p->w->out});
            matmul_q8r_multi(prods, q8[0]->w->in, xin, xs, n, stream.get());
        }
        if (!other.empty()) {
            std::vector<MatProduct> prods;
            for (const MmPart* p : other) prods.push_back({p->w->data, p->w->out, p->y, p->w->out});
            matmul_multi(other[0]->w->type, prods, other[0]->w->in, xin, xs, n, stream.get());
        }
    }

    // The fast int8 path (matmul_q8.h) applies to an expert matrix of a type it takes,
    // with 256-multiple rows and 4-byte aligned slabs.
    bool fast_ok(const DMat& w) const {
        return fast_experts && matmul_q8_supported(w.type) && w.in % 256 == 0 && w.row_bytes * w.out % 4 == 0 &&
               reinterpret_cast<uintptr_t>(w.data) % 4 == 0;
    }
    // One expert's rows [row0, row0 + rows) times `count` activation rows: through the
    // int8 copy xq (quantized from xin by the caller) when fast, else the exact kernel.
    void mm_expert(const DMat& w, uint64_t row0, uint64_t rows, const float* xin, const uint8_t* xq, float* yout,
                   uint64_t ys, uint32_t count) {
        if (xq != nullptr)
            matmul_q8(w.type, w.row(row0), rows, w.in, xq, count, yout, ys, stream.get());
        else
            mm(w, row0, rows, xin, w.in, yout, ys, count);
    }

    // ---- state ----
    DevState& device_state(const cpu::KvState& host);
    void upload_state(const cpu::KvState& host, DevState& ds);
    void download_state(cpu::KvState& host, DevState& ds);

    // ---- forward ----
    void reserve(uint32_t n, uint32_t logit_rows, uint64_t ctx);
    void clear_graphs() {
        graphs.clear();
        seen.clear();
    }
    void advance_row_counts();
    bool graphable(uint32_t n) const;
    void run_pass(uint32_t n, bool graph);
    void layers_and_head(uint32_t n);
    void check_chunk(const cpu::KvState& state, uint64_t pos, uint32_t n, std::span<const int32_t> tokens,
                     std::span<const uint32_t> logit_rows, std::span<float> logits) const;
    void embed(std::span<const int32_t> tokens);
    void hc_site_pre(const DMat& fn, const float* scale, const float* base, const float* norm_w, uint32_t n);
    void attention(uint32_t il, uint32_t n);
    void attention_projections(const DLayer& L, uint32_t n);
    void attend(const DLayer& L, DevLayerKv& kv, uint32_t t);
    void prepare_batch_attn();
    bool batch_attn_ok(uint32_t il) const;
    void attend_batch(uint32_t il, uint32_t n);
    void moe_layer(uint32_t il, uint32_t n);
    void routed_experts(const DLayer& L, uint32_t n);
    bool device_dispatch_ok(const DLayer& L) const;
    void routed_experts_device(const DLayer& L, uint32_t n);
    bool mma_experts_ok(const DMat& w, uint32_t n) const;
    bool q8_experts_ok(const DMat& w, uint32_t n) const;
    void head(std::span<const uint32_t> rows);
    void upload_head_rows(std::span<const uint32_t> rows);
    const float* omega(const DLayer& L) const { return L.ratio != 0 ? omega_comp : omega_dense; }
};

void Forward::Impl::upload_weights() {
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
    for (DLayer& L : layers) {
        for (DMat* m : {&L.q_a, &L.q_b, &L.kv, &L.out_a, &L.out_b, &L.indexer_q_b, &L.indexer_proj, &L.router,
                        &L.sh_gate, &L.sh_up, &L.sh_down})
            repack_q8(*m);
        for (std::optional<DComp>* c : {&L.comp, &L.icomp})
            if (*c) {
                repack_q8((*c)->kv);
                repack_q8((*c)->gate);
            }
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
    if (n > cap_tokens) {
        cap_tokens = n;
        const uint64_t dim = hp.n_embd, hc = hp.hc_dim(), H = hp.hc_mult, hd = hp.head_dim;
        const uint64_t K = hp.n_expert_used, ff = hp.ff_exp, qw = uint64_t{hp.n_head} * hd;
        const uint64_t idw = 2 * uint64_t{hp.idx_head_dim};
        grow(x, n * hc);
        grow(mix, n * hp.hc_mix());
        grow(pre, n * H);
        grow(post, n * H);
        grow(comb, n * H * H);
        grow(u, n * dim);
        grow(nrm, n * dim);
        grow(y, n * dim);
        grow(qr, n * hp.q_lora_rank);
        grow(q, n * qw);
        grow(kvb, n * hd);
        grow(ckv, n * 2 * hd);
        grow(csc, n * 2 * hd);
        grow(ikv, n * idw);
        grow(isc, n * idw);
        grow(iq, n * hp.idx_n_heads * hp.idx_head_dim);
        grow(iw, n * hp.idx_n_heads);
        grow(o, n * qw);
        grow(z, n * hp.o_groups * hp.o_lora_rank);
        grow(probs, n * hp.n_expert);
        grow(sel, n * K);
        grow(sel_w, n * K);
        grow(ex_in, n * K * dim);
        grow(ex_g, n * K * ff);
        grow(ex_u, n * K * ff);
        grow(ex_out, n * K * dim);
        grow(moe, n * dim);
        grow(sh_g, n * ff);
        grow(sh_u, n * ff);
        grow(sh_out, n * dim);
        grow(moe_idx, std::max<uint64_t>(3 * n * K + n + 1, 5 * n * K + n + 3 * uint64_t{hp.n_expert} + 2));
        grow(ex_q, std::max(q8_activation_bytes(std::max<uint64_t>(dim, ff), n * K),
                            q8k_token_bytes(std::max<uint64_t>(dim, ff)) * n * K));
        grow(mx_tiles, mma_experts_tile_words(static_cast<uint32_t>(n * K),
                                              static_cast<uint32_t>(std::min<uint64_t>(hp.n_expert, n * K))));
        if (q8r_max_in > 0) {
            grow(mm_q, mma_activation_bytes(std::max(q8r_max_in, uint64_t{hp.n_head} * hp.head_dim), n));
            grow(mm_part, kMmaSplitScratchFloats);
        }
        grow(tokens_dev, n);
        grow(positions_dev, n);
    }
    // the head's buffers by logit rows: a long prefill pass wants one row, not n (at
    // 2048 tokens, n rows of logits would be 1 GiB)
    if (logit_rows > cap_logit_rows) {
        clear_graphs();
        cap_logit_rows = logit_rows;
        const uint64_t dim = hp.n_embd;
        grow(head_rows, logit_rows);
        grow(head_mix, logit_rows * uint64_t{hp.hc_mult});
        grow(collapsed, logit_rows * dim);
        grow(head_nrm, logit_rows * dim);
        grow(logits_dev, logit_rows * uint64_t{hp.n_vocab});
    }
    if (need_rows > cap_rows) {
        cap_rows = need_rows;
        scores = DeviceBuffer<float>(uint64_t{hp.n_head} * cap_rows);
    }
    if (need_index > cap_index_rows) {
        cap_index_rows = need_index;
        index_scores = DeviceBuffer<float>(cap_index_rows);
        grow(index_sel, std::max<uint64_t>(hp.idx_topk, 1));
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

// ---- attention sublayer (cpu attention.cpp) ----

void Forward::Impl::attention_projections(const DLayer& L, uint32_t n) {
    const cudaStream_t s = stream.get();
    const uint64_t dim = hp.n_embd, hd = hp.head_dim, ql = hp.q_lora_rank, rd = hp.rope_dim;
    const uint64_t nope = hd - rd, qw = uint64_t{hp.n_head} * hd;
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
        const NormRope kv_rows{kvb.data(), L.kv_norm, om, hp.head_dim, n, 1, half, static_cast<uint32_t>(nope)};
        norm_rope_pair(qr_norm, kv_rows, hp.norm_eps, positions_dev.data(), s);
        mm(L.q_b, 0, qw, qr.data(), ql, q.data(), qw, n);
        norm_rope_rows(q.data(), nullptr, hp.head_dim, n * hp.n_head, hp.norm_eps, hp.n_head, om, half,
                       positions_dev.data(), 0, s);
    } else {
        rms_norm(qr.data(), L.q_a_norm, qr.data(), static_cast<uint32_t>(ql), n, hp.norm_eps, s);
        mm(L.q_b, 0, qw, qr.data(), ql, q.data(), qw, n);
        rms_norm(q.data(), nullptr, q.data(), hp.head_dim, n * hp.n_head, hp.norm_eps, s);
        rope_tokens(q.data(), n, qw, hp.n_head, hd, nope, om, hp.rope_dim / 2, positions_dev.data(), false, s);
        rms_norm(kvb.data(), L.kv_norm, kvb.data(), hp.head_dim, n, hp.norm_eps, s);
        rope_tokens(kvb.data(), n, hd, 1, hd, nope, om, hp.rope_dim / 2, positions_dev.data(), false, s);
        fp8_rows(kvb.data(), n, hd, static_cast<uint32_t>(nope), s);
    }

    if (L.icomp) {
        // indexer queries (§6): wq_b·qr, RoPE on the last rope_dim dims, Hadamard, FP4
        const uint64_t d = hp.idx_head_dim, nh = hp.idx_n_heads;
        mm(L.indexer_q_b, 0, nh * d, qr.data(), ql, iq.data(), nh * d, n);
        if (use_fuse) {  // the same bits as the three launches below
            rope_hadamard_fp4(iq.data(), n, hp.idx_n_heads, hp.idx_head_dim, omega_comp, half, positions_dev.data(), s);
        } else {
            rope_tokens(iq.data(), n, nh * d, hp.idx_n_heads, d, d - rd, omega_comp, half, positions_dev.data(), false,
                        s);
            hadamard_scaled(iq.data(), hp.idx_head_dim, n * hp.idx_n_heads, s);
            fp4_simulate(iq.data(), n * nh * d, s);
        }
        const auto scale = static_cast<float>(std::pow(static_cast<double>(d), -0.5) *
                                              std::pow(static_cast<double>(nh), -0.5));
        scale_values(iw.data(), n * nh, scale, s);
    }
}

// Everything position-dependent (ring slot, row counts, indexer on/off) is read on the
// device; tok_index_rows[t] only bounds the indexer's grid.
void Forward::Impl::attend(const DLayer& L, DevLayerKv& kv, uint32_t t) {
    const uint64_t hd = hp.head_dim, qw = uint64_t{hp.n_head} * hd;
    AttendToken a;
    a.q = q.data() + t * qw;
    a.raw = kv.raw.data();
    if (kv.index) {
        a.comp = kv.attn->rows.data();
        a.n_comp = kv.index->n_rows_dev.data();
        if (tok_index_rows[t] != 0) {
            const uint64_t d = hp.idx_head_dim, nh = hp.idx_n_heads;
            indexer_topk(iq.data() + t * nh * d, iw.data() + t * nh, kv.index->rows.data(), a.n_comp,
                         tok_index_rows[t], hp.idx_head_dim, hp.idx_n_heads, hp.idx_topk, index_scores.data(),
                         index_sel.data(), stream.get());
        }
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
    attention_projections(L, n);

    // all tokens at once (attend_batch), or token by token in position order (§5.4): raw
    // row, compressors, then attend
    const bool batched = batch_attn_ok(il);
    if (batched) attend_batch(il, n);
    const uint64_t hd = hp.head_dim;
    const auto step = [&](DevComp& c, const DComp& w, const float* kvp, const float* scp, uint32_t t,
                          bool indexer) {
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
        compressor_step(cs, s);
    };
    for (uint32_t t = 0; t < n && !batched; ++t) {
        DevLayerKv& kv = tok_state[t]->layers[il];
        store_raw_row(kv.raw.data(), kvb.data() + t * hd, hp.head_dim, hp.window, positions_dev.data() + t, s);
        if (kv.attn) {
            const uint64_t cw = kv.attn->width();
            step(*kv.attn, *L.comp, ckv.data() + t * cw, csc.data() + t * cw, t, false);
        }
        if (kv.index) {
            const uint64_t iwd = kv.index->width();
            step(*kv.index, *L.icomp, ikv.data() + t * iwd, isc.data() + t * iwd, t, true);
        }
        attend(L, kv, t);
    }
    // grouped low-rank output projection
    const uint64_t G = hp.o_groups, R = hp.o_lora_rank, qw = uint64_t{hp.n_head} * hd;
    const uint64_t group_in = hp.n_head / G * hd;
    const bool fused = matmul_groups_fused(L.out_a.type, R, L.out_a.in) && group_in % 4 == 0 &&
                       reinterpret_cast<uintptr_t>(L.out_a.data) % 4 == 0;
    const bool out_a_mma = L.out_a.q8r && mma && mma_applies(G * R, n, mma_min_work);  // one grid of G x R rows
    if (out_a_mma && G * group_in == qw && qw <= 32768 && group_in % 512 == 0 && qw % 512 == 0 &&
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

// ---- FFN sublayer (cpu moe.cpp) ----

// Routed experts grouped by expert (each expert's weights read once per chunk), in
// ascending expert id; each token's outputs are then summed in that order, as the CPU
// does. The selection comes back to the host to form the groups: one small download
// per layer.
void Forward::Impl::routed_experts(const DLayer& L, uint32_t n) {
    if (device_dispatch_ok(L)) return routed_experts_device(L, n);
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
void Forward::Impl::routed_experts_device(const DLayer& L, uint32_t n) {
    const cudaStream_t s = stream.get();
    const uint32_t E = hp.n_expert, K = hp.n_expert_used, dim = hp.n_embd, ff = hp.ff_exp;
    const uint64_t nk = uint64_t{n} * K;
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
    moe_group(sel.data(), n, K, E, g, s);
    const auto M = static_cast<uint32_t>(nk);
    const auto slots = static_cast<uint32_t>(std::min<uint64_t>(E, nk));
    const ExpertGroups eg{g.expert, g.begin, g.count, g.n_active};
    gather_rows(nrm.data(), g.src, ex_in.data(), M, dim, s, g.n_pairs);
    // a token lists an expert at most once: no expert has more than n tokens
    if (mma_experts_ok(L.exp_gate, n) && mma_experts_ok(L.exp_up, n)) {
        quantize_q8k_activations(ex_in.data(), dim, dim, M, ex_q.data(), s);
        matmul_experts_mma(L.exp_gate.type, L.exp_gate.data, L.exp_up.data, ff, dim, ex_q.data(), ex_g.data(),
                           ex_u.data(), ff, eg, slots, M, mx_tiles.data(), s);
    } else if (q8_experts_ok(L.exp_gate, n) && q8_experts_ok(L.exp_up, n)) {
        quantize_q8_activations(ex_in.data(), dim, dim, M, ex_q.data(), s);
        matmul_experts_q8(L.exp_gate.type, L.exp_gate.data, L.exp_up.data, ff, dim, ex_q.data(), ex_g.data(),
                          ex_u.data(), ff, eg, slots, n, s);
    } else {
        matmul_experts(L.exp_gate.type, L.exp_gate.data, L.exp_up.data, ff, E, dim, ex_in.data(), dim, ex_g.data(),
                       ex_u.data(), ff, eg, slots, n, s);
    }
    weighted_swiglu(ex_g.data(), ex_u.data(), sel_w.data(), g.widx, M, ff, hp.swiglu_limit, s, g.n_pairs);
    if (mma_experts_ok(L.exp_down, n)) {
        quantize_q8k_activations(ex_g.data(), ff, ff, M, ex_q.data(), s);
        matmul_experts_mma(L.exp_down.type, L.exp_down.data, nullptr, dim, ff, ex_q.data(), ex_out.data(), nullptr,
                           dim, eg, slots, M, mx_tiles.data(), s);
    } else if (q8_experts_ok(L.exp_down, n)) {
        quantize_q8_activations(ex_g.data(), ff, ff, M, ex_q.data(), s);
        matmul_experts_q8(L.exp_down.type, L.exp_down.data, nullptr, dim, ff, ex_q.data(), ex_out.data(), nullptr,
                          dim, eg, slots, n, s);
    } else {
        matmul_experts(L.exp_down.type, L.exp_down.data, nullptr, dim, E, ff, ex_g.data(), ff, ex_out.data(),
                       nullptr, dim, eg, slots, n, s);
    }
    moe_sum(ex_out.data(), g, n, K, moe.data(), dim, s);
}

// The expert mma path (matmul_mma_experts.h) for passes of at least
// mma_experts_min_tokens() tokens and slabs of at least mx_min_values weights: smaller
// ones go to q8_experts_ok or the exact kernels.
bool Forward::Impl::mma_experts_ok(const DMat& w, uint32_t n) const {
    return mma && mma_experts && n >= mma_experts_min_tokens() && w.in * w.out >= mx_min_values &&
           matmul_experts_mma_supported(w.type, w.in, w.row_bytes, w.data);
}

// The grouped int8 matvec (matmul_q8_experts.h) for the passes below the mma path's
// token threshold, slabs of at least q8_min_values weights: per token, the result does
// not depend on the pass (a batch's tokens get the bits they get stepped alone).
bool Forward::Impl::q8_experts_ok(const DMat& w, uint32_t n) const {
    return q8_experts && n < mma_experts_min_tokens() && w.in * w.out >= q8_min_values &&
           matmul_experts_q8_supported(w.type, w.in, w.data);
}

void Forward::Impl::moe_layer(uint32_t il, uint32_t n) {
    const DLayer& L = layers[il];
    const cudaStream_t s = stream.get();
    const uint32_t dim = hp.n_embd, ff = hp.ff_exp, E = hp.n_expert;
    hc_site_pre(L.hc_ffn_fn, L.hc_ffn_scale, L.hc_ffn_base, L.ffn_norm, n);
    // the router and the shared expert's gate + up read nrm: merged (bitwise as one mm() each)
    const MmPart from_nrm[] = {{&L.router, probs.data()}, {&L.sh_gate, sh_g.data()}, {&L.sh_up, sh_u.data()}};
    mm_shared_input(from_nrm, nrm.data(), dim, n);
    route(probs.data(), L.router_bias, L.tid2eid, tokens_dev.data(), n, E, hp.n_expert_used, hp.route_scale,
          hp.is_hash_layer(il), sel.data(), sel_w.data(), s);
    routed_experts(L, n);
    // shared expert (gate + up above), added after the routed sum
    swiglu_clamp(sh_g.data(), sh_u.data(), sh_g.data(), uint64_t{n} * ff, hp.swiglu_limit, s);
    mm(L.sh_down, 0, dim, sh_g.data(), ff, sh_out.data(), dim, n);
    if (use_fuse && !steering)  // the sum inside hc_post: the same bits
        return hc_post_add(hc_shape, x.data(), moe.data(), sh_out.data(), post.data(), comb.data(), n, s);
    add_values(moe.data(), sh_out.data(), y.data(), uint64_t{n} * dim, s);
    if (steering) steering->apply(il, cpu::SteeringSite::ffn, y.data(), n, dim, s);
    hc_post(hc_shape, x.data(), y.data(), post.data(), comb.data(), n, s);
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

void Forward::Impl::layers_and_head(uint32_t n) {
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        attention(il, n);
        moe_layer(il, n);
    }
    head(host_rows);
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
        it->exec.launch(stream.get());
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
    GraphExec exec;
    try {
        exec = capture_graph(stream.get(), [&] { layers_and_head(n); });
    } catch (const Error&) {
        // nothing ran during the capture: launch one by one from now on (a real launch
        // error then surfaces there)
        use_graphs = false;
        clear_graphs();
        ++graph_stats.failed;
        return layers_and_head(n);
    }
    CachedGraph g{std::move(key), std::move(exec), ++graph_clock};
    ++graph_stats.captures;
    g.exec.launch(stream.get());
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

}  // namespace ds4::cuda
