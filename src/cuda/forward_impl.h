// Internal to the CUDA forward pass (forward.cpp: weights, device state, scratch,
// graphs and the public API; forward_attention.cpp and forward_moe.cpp: the two
// sublayers): the device-side model, per-sequence KV state and Forward::Impl's members.
#pragma once

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
#include "cuda/experts_wgmma.h"
#include "cuda/matmul_wgmma.h"
#include "cuda/stager.h"
#include "cuda/steering.h"
#include "ds4/error.h"

namespace ds4::cuda {

// Named, not anonymous: Forward::Impl (external linkage) holds these types.
namespace fwd {


// A weight matrix in VRAM: `out` rows of `in` values in GGUF layout (3-D expert tensors:
// slab e starts at row e·out).
struct DMat {
    GgmlType type = GgmlType::F32;
    uint64_t in = 0, out = 0, row_bytes = 0;
    const uint8_t* data = nullptr;
    bool q8r = false;  // Q8_0 rows repacked in place for matmul_q8r (kernels.h)
    const __half* f16 = nullptr;  // (issue 8) its f16 copy for long passes' wgmma (matmul_wgmma.h), or null

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

// A pass's graph in parts of a few layers each (the last one ends with the head).
struct CachedGraph {
    GraphKey key;
    std::vector<GraphExec> parts;
    uint64_t last_use = 0;
};

constexpr size_t kMaxGraphs = 8;             // graphs kept (least recently used goes)
constexpr size_t kSeenKeys = 4;              // eager keys remembered (a server interleaves keys)
constexpr uint32_t kMaxGraphTokens = 64;     // larger passes are not launch bound
constexpr uint32_t kIndexGrain = 1024;       // indexer grids grow in steps of this many rows

inline bool graphs_from_env() { return env_switch_on("DS4_CUDA_GRAPH"); }

// (issue 8) DS4_CUDA_GRAPH_LAYERS=N: a captured pass is launched as graphs of N layers
// each (the last one with the head), so the GPU can run the first while the host launches
// the rest; by default (0) one graph. On the H200 (43 layers, ~1150 kernels a step) the
// parts gained nothing measurable (batch 1: 122.5-126.2 t/s for 2, 4 and 8 layers against
// 124.6-124.8 for one graph) and each part's start costs ~8 µs; only under CUPTI, whose
// launches are slower, did one graph leave the GPU idle for 2.7 ms a step (0.8 in parts).
constexpr uint32_t kGraphPartLayers = 0;
inline uint32_t graph_part_layers_from_env() { return env_u32_or("DS4_CUDA_GRAPH_LAYERS", kGraphPartLayers); }

// (issue 8) the stateful attention part batched over a pass's tokens (attention_batch.h)
// for passes of at least this many tokens; DS4_CUDA_BATCH_ATTN=0: token by token always,
// =all: batched from one token (a single-token pass gains nothing: the same launch count;
// on an H200 batch-1 decode measured slower batched, see bench/RESULTS.md).
constexpr uint32_t kBatchAttnMinTokens = 2;
inline bool batch_attn_from_env() { return env_switch_on("DS4_CUDA_BATCH_ATTN"); }
inline uint32_t batch_attn_min_from_env() {
    const char* v = std::getenv("DS4_CUDA_BATCH_ATTN");
    return v != nullptr && std::string_view(v) == "all" ? 1 : kBatchAttnMinTokens;
}

constexpr uint64_t kIndexScoreFloats = uint64_t{32} << 20;  // batched indexer scores scratch (128 MiB)

// (issue 8) products that read one input merged into few launches; DS4_CUDA_MULTI=0: one each.
inline bool multi_from_env() { return env_switch_on("DS4_CUDA_MULTI"); }

// (issue 8) small kernels fused (norm + RoPE + FP8 rows, the MoE sum into hc_post);
// DS4_CUDA_FUSE=0: the separate launches.
inline bool fuse_from_env() { return env_switch_on("DS4_CUDA_FUSE"); }

// (issue 8) passes of up to this many tokens run their sublayers' independent chains on
// two streams (Forward::Impl::Fork); DS4_CUDA_FORK=0: one stream. A batch-1 layer has
// ~30 launches, a third of them short latency chains that leave DRAM idle: beside a
// bandwidth-bound product they cost little. (Larger passes are not launch bound.)
constexpr uint32_t kForkMaxTokens = 64;
inline bool fork_from_env() { return env_switch_on("DS4_CUDA_FORK"); }

// (issue 8) DS4_CUDA_MMA_MIN_WORK=N: the rows x tokens from which dense Q8_0 products take
// the tensor cores (default kMmaMinWork).
inline uint64_t mma_min_work_from_env() {
    const char* v = std::getenv("DS4_CUDA_MMA_MIN_WORK");
    return v != nullptr ? std::strtoull(v, nullptr, 10) : kMmaMinWork;
}

// One product of a shared input (mm_shared_input): all of w's rows into y (stride w.out).
struct MmPart {
    const DMat* w = nullptr;
    float* y = nullptr;
};


}  // namespace fwd

using namespace fwd;  // this header's own types, for the three implementation files

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
    DeviceBuffer<__half> f16_weights;  // the dense matrices' f16 copies (make_f16_copies), or empty
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
    uint32_t graph_part_layers = graph_part_layers_from_env();
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

    // The side stream of a Fork, its two events, and where mm() and the sublayers' own
    // launches go: the main stream, or the side stream inside a Fork's first part.
    Stream side;
    Event fork_ev{cudaEventDisableTiming}, join_ev{cudaEventDisableTiming};
    cudaStream_t cur = nullptr;
    bool use_fork = fork_from_env();
    bool forks(uint32_t n) const { return use_fork && n <= kForkMaxTokens; }

    explicit Impl(const cpu::CpuModel& m) : model(m), hp(m.hparams()), cur(stream.get()) {}

    // (issue 8) Two independent launch chains of a sublayer on two streams. Launches made
    // between the constructor and main() go to the side stream, after everything the main
    // stream had; the next ones to the main stream; join() makes the main stream wait for
    // the side's. Under a capture the events become graph edges. The same launches with
    // the same inputs, so the same bits as one stream; off, everything stays on the main
    // stream in the same order. The two chains must not share scratch (mm_q, mm_part,
    // ex_q, ...): the callers keep the routed experts and the dense q8r products apart.
    class Fork {
    public:
        Fork(Impl& f, bool on) : f_(f), on_(on) {
            if (!on_) return;
            f_.fork_ev.record(f_.stream.get());
            DS4_CUDA_CHECK(cudaStreamWaitEvent(f_.side.get(), f_.fork_ev.get(), 0));
            f_.cur = f_.side.get();
        }
        void main() {
            if (!on_ || f_.cur == f_.stream.get()) return;
            f_.join_ev.record(f_.side.get());
            f_.cur = f_.stream.get();
        }
        void join() {
            main();
            if (on_) DS4_CUDA_CHECK(cudaStreamWaitEvent(f_.stream.get(), f_.join_ev.get(), 0));
            on_ = false;
        }
        // left by an exception: back to the main stream, which still waits for the side's
        // launches (unchecked: the error in flight is the one to report)
        ~Fork() {
            if (!on_) return;
            if (f_.cur != f_.stream.get()) (void)cudaEventRecord(f_.join_ev.get(), f_.side.get());
            f_.cur = f_.stream.get();
            (void)cudaStreamWaitEvent(f_.stream.get(), f_.join_ev.get(), 0);
        }
        Fork(const Fork&) = delete;
        Fork& operator=(const Fork&) = delete;

    private:
        Impl& f_;
        bool on_;
    };

    // ---- weights ----
    HostStager* stager = nullptr;  // set during upload_weights: pinned, overlapped copies
    const uint8_t* upload_bytes(const void* host, uint64_t bytes) {
        DeviceBuffer<uint8_t> b(bytes);
        if (stager != nullptr)
            stager->copy(b.data(), host, bytes);  // on `stream`, before the repacks
        else
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

    // (issue 8) f16 copies of the dense repacked matrices where the VRAM leaves
    // kF16CopyHeadroom free after them (an H200 with the q2 model: ~11 GB for ~47 GiB left)
    static constexpr uint64_t kF16CopyHeadroom = uint64_t{32} << 30;
    void make_f16_copies();
    std::vector<DMat*> dense_mats();  // each layer's dense matrices (repacked where Q8_0)
    // Long passes' products of a matrix with an f16 copy go to wgmma (half activations).
    bool wgmma_takes(const DMat& w, uint32_t n) const {
        return w.f16 != nullptr && mma && n >= kWgmmaMinTokens && mma_precision() == MmaPrecision::Half;
    }

    // ---- matrix products ----
    void mm(const DMat& w, uint64_t row0, uint64_t rows, const float* xin, uint64_t xs, float* yout, uint64_t ys,
            uint32_t n) {
        const uint8_t* base = w.row(row0);
        const bool aligned = reinterpret_cast<uintptr_t>(xin) % 16 == 0 && xs % 4 == 0 &&
                             reinterpret_cast<uintptr_t>(base) % 4 == 0;
        if (aligned && wgmma_takes(w, n)) {
            quantize_mma_activations(xin, xs, w.in, n, mm_q.data(), cur);
            matmul_f16_wgmma(w.f16 + row0 * w.in, rows, w.in, mm_q.data(), n, yout, ys, cur);
        } else if (w.q8r && aligned && mma && mma_applies(rows, n, mma_min_work)) {  // (issue 8) tensor cores for multi-token passes
            quantize_mma_activations(xin, xs, w.in, n, mm_q.data(), cur);
            matmul_q8r_mma(base, rows, w.in, mm_q.data(), n, yout, ys, cur, MmaExtra{mm_part.data()});
        } else if (w.q8r)
            matmul_q8r(base, rows, w.in, xin, xs, yout, ys, n, cur);
        else if (matmul_supported(w.type) && w.in % 256 == 0 && aligned)
            matmul(w.type, base, rows, w.in, xin, xs, yout, ys, n, cur);
        else
            matmul_any(w.type, base, w.row_bytes, rows, w.in, xin, xs, yout, ys, n, cur);
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
            matmul_q8r_multi(prods, q8[0]->w->in, xin, xs, n, cur);
        }
        if (!other.empty()) {
            std::vector<MatProduct> prods;
            for (const MmPart* p : other) prods.push_back({p->w->data, p->w->out, p->y, p->w->out});
            matmul_multi(other[0]->w->type, prods, other[0]->w->in, xin, xs, n, cur);
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
            matmul_q8(w.type, w.row(row0), rows, w.in, xq, count, yout, ys, cur);
        else
            mm(w, row0, rows, xin, w.in, yout, ys, count);
    }

    // ---- state ----
    DevState& device_state(const cpu::KvState& host);
    void upload_state(const cpu::KvState& host, DevState& ds);
    void download_state(cpu::KvState& host, DevState& ds);

    // ---- forward ----
    void reserve(uint32_t n, uint32_t logit_rows, uint64_t ctx);
    template <class F>
    void each_token_buffer(uint64_t n, F&& f);
    uint64_t token_scratch_bytes(uint32_t n);
    void release_token_scratch();
    void clear_graphs() {
        graphs.clear();
        seen.clear();
    }
    void advance_row_counts();
    bool graphable(uint32_t n) const;
    void run_pass(uint32_t n, bool graph);
    void layers_and_head(uint32_t n);
    void layers_and_head(uint32_t n, uint32_t first, uint32_t end);
    std::vector<GraphExec> capture_pass(uint32_t n);
    void check_chunk(const cpu::KvState& state, uint64_t pos, uint32_t n, std::span<const int32_t> tokens,
                     std::span<const uint32_t> logit_rows, std::span<float> logits) const;
    void embed(std::span<const int32_t> tokens);
    void hc_site_pre(const DMat& fn, const float* scale, const float* base, const float* norm_w, uint32_t n);
    void attention(uint32_t il, uint32_t n);
    // raw_ring: one token's raw ring, filled by the kv row's fused launch (nullptr: not)
    void attention_projections(const DLayer& L, uint32_t n, float* raw_ring);
    void attention_queries(const DLayer& L, uint32_t n);
    void indexer_queries(const DLayer& L, uint32_t n);
    void compress_token(const DLayer& L, DevLayerKv& kv, uint32_t t);
    void select_rows(DevLayerKv& kv, uint32_t t);
    void attend(const DLayer& L, DevLayerKv& kv, uint32_t t);
    void prepare_batch_attn();
    bool batch_attn_ok(uint32_t il) const;
    void attend_batch(uint32_t il, uint32_t n);
    void moe_layer(uint32_t il, uint32_t n);
    void shared_expert(const DLayer& L, uint32_t n);
    void routed_experts_host(const DLayer& L, uint32_t n);
    bool device_dispatch_ok(const DLayer& L) const;
    void routed_experts_device(const DLayer& L, uint32_t n, bool sum_in_hc_post);
    MoeGroups device_groups(uint32_t n);
    bool mma_experts_ok(const DMat& w, uint32_t n) const;
    bool wgmma_experts_ok(const DMat& w, uint32_t n) const;
    bool q8_experts_ok(const DMat& w, uint32_t n) const;
    void head(std::span<const uint32_t> rows);
    void upload_head_rows(std::span<const uint32_t> rows);
    const float* omega(const DLayer& L) const { return L.ratio != 0 ? omega_comp : omega_dense; }
};

}  // namespace ds4::cuda
