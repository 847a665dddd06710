// The Engine over the CPU backend: a mapped GGUF bound zero-copy into a WeightSet, one
// CpuForward (its scratch reused by every step) sharing one ThreadPool, and one KvState
// per sequence. Sequences of a batch are evaluated one after another.
//
// With an MTP GGUF (a separate file, or the main file again when it carries the block),
// its views go into a WeightSet of their own and an MtpForward runs the block; each
// sequence then also records the main model's final HC states and tokens of its last
// `window` positions (a ring) and keeps the MTP block's own window cache, which
// mtp_draft() brings up to date lazily. On Backend::Cuda a cuda::MtpForward runs the block
// instead (its window cache in VRAM, synced like the main KV state).
#include "ds4/engine.h"

#include <algorithm>
#include <map>
#include <optional>
#include <thread>
#include <unordered_map>

#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "cpu/matvec.h"
#include "cpu/mtp.h"
#include "cpu/quant_matvec.h"
#include "cpu/steering.h"
#include "ds4/error.h"
#include "gguf/gguf.h"
#include "model/metadata.h"
#include "model/tensor_plan.h"
#include "runtime/memory_estimate.h"
#include "runtime/session_payload.h"
#ifdef DS4_HAVE_CUDA
#include "cuda/ceiling.h"
#include "cuda/env_switch.h"
#include "cuda/forward.h"
#include "cuda/mtp.h"
#endif

namespace ds4 {

namespace {

constexpr std::string_view kTokensKey = "tokenizer.ggml.tokens";

unsigned resolve_threads(unsigned threads) {
    return threads != 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
}

void check_options(const EngineOptions& opt) {
    if (opt.ctx == 0) fail("engine: context size must be positive");
    // KvState counts compressed rows in 32 bits.
    const uint64_t max_ctx = uint64_t{0xffffffff} * 4;
    if (opt.ctx > max_ctx) fail("engine: context size ", opt.ctx, " exceeds the maximum ", max_ctx);
}

std::vector<std::string> read_vocab(const gguf::File& f, const model::Hparams& hp) {
    std::vector<std::string> vocab;
    if (!f.has(kTokensKey)) return vocab;
    for (std::string_view t : f.get_string_array(kTokensKey)) vocab.emplace_back(t);
    if (vocab.size() != hp.n_vocab)
        fail(f.path(), ": ", kTokensKey, " has ", vocab.size(), " entries, expected vocab_size ",
             hp.n_vocab);
    return vocab;
}

// ModelSummary's --model-info part: metadata and the tensor directory by type.
void add_tensor_stats(ModelSummary& s, const gguf::File& f) {
    if (const auto arch = f.get_string(model::key::architecture)) s.architecture = *arch;
    if (const auto* kv = f.find(model::key::context_length)) s.context_length = f.require_integer(kv->key);
    std::map<uint32_t, ModelSummary::TensorTypeGroup> by_type;
    for (const gguf::TensorInfo& t : f.tensors()) {
        ModelSummary::TensorTypeGroup& g = by_type[t.type];
        g.type = ggml_type_name(t.type);
        g.tensors += 1;
        g.bytes += t.n_bytes;
        s.tensor_bytes += t.n_bytes;
        if (t.name.starts_with("mtp.")) {
            s.mtp_tensor_bytes += t.n_bytes;
        } else if (t.name.ends_with(".ffn_gate_exps.weight")) {
            s.expert_gate_type = ggml_type_name(t.type);
        } else if (t.name.ends_with(".ffn_up_exps.weight")) {
            s.expert_up_type = ggml_type_name(t.type);
        } else if (t.name.ends_with(".ffn_down_exps.weight")) {
            s.expert_down_type = ggml_type_name(t.type);
        }
    }
    for (auto& [code, group] : by_type) s.tensor_types.push_back(std::move(group));
}

ModelSummary summarize(const gguf::File& f, const model::Hparams& hp, const model::TensorPlan& plan) {
    ModelSummary s;
    s.path = f.path();
    if (const auto name = f.get_string(model::key::name)) s.name = *name;
    s.quant = model::quant_mix_name(plan.options().mix);
    s.n_vocab = hp.n_vocab;
    s.n_layer = hp.n_layer;
    s.n_embd = hp.n_embd;
    s.n_head = hp.n_head;
    s.head_dim = hp.head_dim;
    s.n_expert = hp.n_expert;
    s.n_expert_used = hp.n_expert_used;
    s.window = hp.window;
    s.compress_ratios.assign(hp.compress_ratios.begin(), hp.compress_ratios.begin() + hp.n_layer);
    s.n_params = plan.total_elements();
    s.file_bytes = f.size();
    // ds4-make-model names its files "DeepSeek-V4-Flash synthetic random weights (...)".
    s.synthetic = s.name.find("synthetic") != std::string::npos;
    add_tensor_stats(s, f);
    return s;
}

}  // namespace

// What mtp_draft() needs of one sequence (see the file comment).
struct MtpTrack {
    cpu::KvState cache;           // the MTP block's raw window, positions [0, cache.n_tokens())
    uint64_t ring;                // = window: positions p − window + 1 .. p are kept
    std::vector<float> hc;        // ring × hc_dim: final HC state of position q at q % ring
    std::vector<int32_t> tokens;  // ring: token at position q at q % ring

    MtpTrack(const cpu::MtpModel& m, uint64_t ctx)
        : cache(m.make_state(ctx)),
          ring(m.hparams().window),
          hc(ring * m.hparams().hc_dim()),
          tokens(ring) {}
};

struct Sequence {
    cpu::KvState kv;
    std::optional<MtpTrack> mtp;
    // Checkpoint validity (Engine::restore): the positions at which evaluation restarted
    // behind the longest length reached (a rewrite). A checkpoint of length L taken when
    // rewrites.size() was e stays valid while every rewrite since is at or after L: an
    // evaluation at p >= L only writes compressed rows >= L / ratio, which the checkpoint
    // does not hold anyway.
    uint64_t high = 0;
    std::vector<uint64_t> rewrites;

    void note_eval_at(uint64_t pos) {
        if (pos < high) rewrites.push_back(pos);
        high = pos;
    }
    void note_replaced() {
        rewrites.push_back(0);
        high = kv.n_tokens();
    }
    void forget_history() {
        rewrites.clear();
        high = kv.n_tokens();
    }

    Sequence(const model::Hparams& hp, uint64_t ctx, const cpu::MtpModel* m) : kv(hp, ctx) {
        if (m) mtp.emplace(*m, ctx);
    }
    void reset() {
        kv.reset();
        if (mtp) mtp->cache.reset();
        note_replaced();
    }
};

struct Engine::Impl {
    EngineOptions opt;
    gguf::File file;
    model::Hparams hp;
    ModelSummary summary;
    std::vector<std::string> vocab;
    cpu::WeightSet weights;
    std::unique_ptr<cpu::CpuModel> model;
    std::unique_ptr<cpu::ThreadPool> pool;
    std::unique_ptr<cpu::CpuForward> forward;
#ifdef DS4_HAVE_CUDA
    std::unique_ptr<cuda::Forward> cuda_forward;  // Backend::Cuda: evaluates instead of `forward`
    // Logits' values where the device copies them directly (cuda::pinned_logits_alloc)
    detail::LogitsAllocator<float> logits_alloc{cuda::pinned_logits_alloc, cuda::pinned_logits_free};
    uint32_t cuda_prefill_chunk = runtime::kCudaPrefillChunk;  // chosen at open: runtime::cuda_prefill_chunk
    std::vector<cuda::Forward::Chunk> cuda_chunks;
    // Several sequences, each chunk within one CUDA prefill chunk and no MTP recording:
    // batched CUDA passes (shared projections and grouped experts) instead of one per entry;
    // step() groups the entries into passes of at most cuda_prefill_chunk tokens (the
    // scratch reserved at open: ~0.9 MB of VRAM per token).
    bool cuda_batchable(const Batch& batch) const {
        if (!cuda_forward || batch.size() < 2) return false;
        for (size_t i = 0; i < batch.size(); ++i)
            if (batch[i].tokens.size() > cuda_prefill_chunk || states[i]->mtp) return false;
        return true;
    }
#endif
    // MTP (optional)
    std::optional<gguf::File> mtp_file;
    cpu::WeightSet mtp_weights;  // views of mtp_file (which may be the main file again)
    std::unique_ptr<cpu::MtpModel> mtp_model;
    std::unique_ptr<cpu::MtpForward> mtp_forward;
#ifdef DS4_HAVE_CUDA
    std::unique_ptr<cuda::MtpForward> cuda_mtp;  // Backend::Cuda: runs the block instead of mtp_forward
#endif

    std::unordered_map<SequenceId, std::unique_ptr<Sequence>> sequences;
    std::vector<std::unique_ptr<Sequence>> spare;  // freed sequences, reused by create
    SequenceId next_id = 1;

    // step() scratch, reused
    std::vector<Sequence*> states;
    std::vector<SequenceId> seen;
    std::vector<uint32_t> chunk_rows;

    explicit Impl(gguf::File f) : file(std::move(f)) {}

    Sequence& sequence(SequenceId seq) const {
        const auto it = sequences.find(seq);
        if (it == sequences.end()) fail("engine: unknown sequence ", seq, " (never created or freed)");
        return *it->second;
    }
    cpu::KvState& state(SequenceId seq) const { return sequence(seq).kv; }

    void validate(const Batch& batch);
    // Backend dispatch. With CUDA the device KV copy is authoritative after a step:
    // sync_to_host() before the host KvState is read, host_changed() after it is written.
    void eval_chunk(cpu::KvState& kv, uint64_t pos, std::span<const int32_t> tokens, std::span<const uint32_t> rows,
                    std::span<float> out) {
#ifdef DS4_HAVE_CUDA
        if (cuda_forward) return cuda_forward->eval(kv, pos, tokens, rows, out);
#endif
        forward->eval(kv, pos, tokens, rows, out);
    }
    // Most tokens of one sequence per backend pass (MTP tracking keeps the CPU's chunk).
    uint32_t pass_chunk([[maybe_unused]] const Sequence& s) const {
#ifdef DS4_HAVE_CUDA
        if (cuda_forward && !s.mtp) return cuda_prefill_chunk;
#endif
        return runtime::kPrefillChunk;
    }
    std::span<const float> final_hc(uint32_t t) const {
#ifdef DS4_HAVE_CUDA
        if (cuda_forward) return cuda_forward->final_hc(t);
#endif
        return forward->final_hc(t);
    }
    void sync_to_host([[maybe_unused]] cpu::KvState& kv) const {
#ifdef DS4_HAVE_CUDA
        if (cuda_forward) cuda_forward->download(kv);
#endif
    }
    void host_changed([[maybe_unused]] const cpu::KvState& kv, [[maybe_unused]] bool rows) const {
#ifdef DS4_HAVE_CUDA
        if (cuda_forward) cuda_forward->invalidate(kv, rows);
#endif
    }
    // MTP block dispatch, and its window cache's ownership (as for the main KV state): with
    // CUDA, mtp_to_host() before the host cache is read, rewound or copied, and
    // mtp_host_changed() after it was (the next evaluation uploads it).
    void mtp_eval(cpu::KvState& cache, uint64_t pos, std::span<const int32_t> ids, std::span<const float> hc,
                  std::span<const uint32_t> rows, std::span<float> logits) {
#ifdef DS4_HAVE_CUDA
        if (cuda_mtp) return cuda_mtp->eval(cache, pos, ids, hc, rows, logits);
#endif
        mtp_forward->eval(cache, pos, ids, hc, rows, logits);
    }
    std::span<const float> mtp_final_hc(uint32_t t) const {
#ifdef DS4_HAVE_CUDA
        if (cuda_mtp) return cuda_mtp->final_hc(t);
#endif
        return mtp_forward->final_hc(t);
    }
    void mtp_to_host([[maybe_unused]] cpu::KvState& cache) const {
#ifdef DS4_HAVE_CUDA
        if (cuda_mtp) cuda_mtp->download(cache);
#endif
    }
    void mtp_host_changed([[maybe_unused]] const cpu::KvState& cache) const {
#ifdef DS4_HAVE_CUDA
        if (cuda_mtp) cuda_mtp->invalidate(cache);
#endif
    }
    void evaluate(const Batch::Entry& e, Sequence& s, std::span<float> out);
    void record_for_mtp(MtpTrack& t, uint64_t pos, std::span<const int32_t> chunk);
    void mtp_catch_up(MtpTrack& t, uint64_t p);
};

void Engine::Impl::validate(const Batch& batch) {
    states.clear();
    seen.clear();
    for (size_t i = 0; i < batch.size(); ++i) {
        const Batch::Entry e = batch[i];
        Sequence& s = sequence(e.seq);
        const cpu::KvState& kv = s.kv;
        if (std::find(seen.begin(), seen.end(), e.seq) != seen.end())
            fail("engine: sequence ", e.seq, " appears more than once in the batch (entry ", i, ")");
        seen.push_back(e.seq);
        if (e.tokens.empty()) fail("engine: sequence ", e.seq, ": empty token chunk (entry ", i, ")");
        for (size_t t = 0; t < e.tokens.size(); ++t)
            if (e.tokens[t] < 0 || static_cast<uint64_t>(e.tokens[t]) >= hp.n_vocab)
                fail("engine: sequence ", e.seq, ": token id ", e.tokens[t], " at chunk index ", t,
                     " is out of range [0, ", hp.n_vocab, ")");
        for (size_t r = 0; r < e.logits_at.size(); ++r) {
            if (e.logits_at[r] >= e.tokens.size())
                fail("engine: sequence ", e.seq, ": logits index ", e.logits_at[r],
                     " is outside its chunk of ", e.tokens.size(), " tokens");
            if (r > 0 && e.logits_at[r] <= e.logits_at[r - 1])
                fail("engine: sequence ", e.seq, ": logits indices must be increasing (",
                     e.logits_at[r - 1], " then ", e.logits_at[r], ")");
        }
        if (e.tokens.size() > kv.ctx() - kv.n_tokens())
            fail("engine: sequence ", e.seq, ": ", e.tokens.size(), " tokens at position ",
                 kv.n_tokens(), " exceed the context size ", kv.ctx(), " (room for ",
                 kv.ctx() - kv.n_tokens(), ")");
        states.push_back(&s);
    }
}

// Feeds one entry in chunks of at most pass_chunk() tokens (any split gives the same
// logits, model.md §8) so the scratch stays bounded whatever the prompt length.
void Engine::Impl::evaluate(const Batch::Entry& e, Sequence& s, std::span<float> out) {
    cpu::KvState& kv = s.kv;
    // ds4 numerics (quantized activations) for block-quantized models; F32/F16 models
    // keep the exact path that reproduces the official goldens.
    const cpu::NumericsScope numerics(cpu::default_numerics(model->weights()));
    const uint64_t V = hp.n_vocab;
    size_t next_row = 0;
    const uint32_t chunk = pass_chunk(s);
    for (size_t begin = 0; begin < e.tokens.size(); begin += chunk) {
        const size_t n = std::min<size_t>(chunk, e.tokens.size() - begin);
        chunk_rows.clear();
        const size_t first_row = next_row;
        while (next_row < e.logits_at.size() && e.logits_at[next_row] < begin + n)
            chunk_rows.push_back(static_cast<uint32_t>(e.logits_at[next_row++] - begin));
        const uint64_t pos = kv.n_tokens();
        eval_chunk(kv, pos, e.tokens.subspan(begin, n), chunk_rows,
                      out.subspan(first_row * V, chunk_rows.size() * V));
        if (s.mtp) record_for_mtp(*s.mtp, pos, e.tokens.subspan(begin, n));
    }
}

// Keeps the final HC states and tokens of the chunk's last `ring` positions.
void Engine::Impl::record_for_mtp(MtpTrack& t, uint64_t pos, std::span<const int32_t> chunk) {
    const uint64_t n = chunk.size(), hcd = hp.hc_dim();
    for (uint64_t i = n > t.ring ? n - t.ring : 0; i < n; ++i) {
        const uint64_t slot = (pos + i) % t.ring;
        const std::span<const float> x = final_hc(static_cast<uint32_t>(i));
        std::copy(x.begin(), x.end(), t.hc.begin() + static_cast<std::ptrdiff_t>(slot * hcd));
        t.tokens[slot] = chunk[i];
    }
}

// Brings the MTP window cache to positions [0, p): row q pairs the final HC state of q with
// the token at q + 1. A row depends only on its own slot's input (it is appended before
// the block attends), so rows older than p's window are skipped rather than computed.
void Engine::Impl::mtp_catch_up(MtpTrack& t, uint64_t p) {
    cpu::KvState& cache = t.cache;
    const uint64_t first = p + 1 > t.ring ? p + 1 - t.ring : 0;
    if (cache.n_tokens() > p || cache.n_tokens() < first) {
        mtp_to_host(cache);
        if (cache.n_tokens() > p) cache.rewind(p);
        if (cache.n_tokens() < first) cache.advance(first - cache.n_tokens());
        mtp_host_changed(cache);
    }
    const uint64_t hcd = hp.hc_dim();
    for (uint64_t q = cache.n_tokens(); q < p; ++q)
        mtp_eval(cache, q, {&t.tokens[(q + 1) % t.ring], 1},
                          {t.hc.data() + (q % t.ring) * hcd, hcd}, {}, {});
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;

Engine Engine::open(const std::string& path, const EngineOptions& options) {
    auto impl = std::make_unique<Impl>(gguf::File::open(path));
    const gguf::File& f = impl->file;
    impl->hp = model::read_hparams(f);
    check_options(options);
    const cpu::SteeringScales steer = cpu::resolve_steering_scales(
        !options.steering.file.empty(), options.steering.attn, options.steering.ffn);
    model::PlanOptions plan_options;
    plan_options.mix = model::detect_quant_mix(f);
    const model::TensorPlan plan(impl->hp, plan_options);
    model::check_tensors(f, plan);
    model::check_tid2eid(f, impl->hp);
    impl->vocab = read_vocab(f, impl->hp);
    impl->summary = summarize(f, impl->hp, plan);

    impl->opt = options;
    impl->opt.threads = resolve_threads(options.threads);
    cpu::add_gguf_views(impl->weights, f);
    impl->model = std::make_unique<cpu::CpuModel>(impl->hp, impl->weights);
    impl->pool = std::make_unique<cpu::ThreadPool>(impl->opt.threads);
    impl->forward = std::make_unique<cpu::CpuForward>(*impl->model, impl->pool.get());
    if (options.backend == Backend::Cuda) {
#ifdef DS4_HAVE_CUDA
        impl->cuda_forward = std::make_unique<cuda::Forward>(*impl->model);
        if (!cuda::env_switch_on("DS4_CUDA_PINNED_LOGITS")) impl->logits_alloc = {};  // pageable, for comparisons
        cuda::Forward& fw = *impl->cuda_forward;
        const uint64_t free = cuda::device_memory().free_bytes;
        impl->cuda_prefill_chunk = runtime::fit_cuda_pass(
            runtime::cuda_prefill_chunk(free), runtime::cuda_prefill_chunk_forced(), free,
            [&](uint32_t n) { return fw.reserve_pass(n); }, [&](uint32_t n) { return fw.pass_scratch_bytes(n); });
#else
        fail("engine: this build has no CUDA backend (configure with -DDS4_CUDA=ON)");
#endif
    }
    impl->opt.steering.attn = steer.attn;
    impl->opt.steering.ffn = steer.ffn;
    if (!options.steering.file.empty()) {
        // Main model only: the MTP block drafts, and drafts are verified by the main model.
        auto dirs = std::make_shared<const cpu::SteeringDirections>(
            cpu::SteeringDirections::load(options.steering.file, impl->hp.n_layer, impl->hp.n_embd));
#ifdef DS4_HAVE_CUDA
        if (impl->cuda_forward) impl->cuda_forward->set_steering(*dirs, steer.attn, steer.ffn);
#endif
        impl->forward->set_steering(cpu::Steering(std::move(dirs), steer.attn, steer.ffn));
    }
    if (!options.mtp_path.empty()) {
        const gguf::File& mf = impl->mtp_file.emplace(gguf::File::open(options.mtp_path));
        model::check_mtp_tensors(mf, impl->hp);
        cpu::add_gguf_views(impl->mtp_weights, mf);
        impl->mtp_model = std::make_unique<cpu::MtpModel>(impl->hp, impl->weights, impl->mtp_weights);
        impl->mtp_forward = std::make_unique<cpu::MtpForward>(*impl->mtp_model, impl->pool.get());
#ifdef DS4_HAVE_CUDA
        if (impl->cuda_forward) impl->cuda_mtp = std::make_unique<cuda::MtpForward>(*impl->mtp_model);
#endif
    }
    return Engine(std::move(impl));
}

const ModelSummary& Engine::model() const { return impl_->summary; }
uint32_t Engine::pass_tokens() const {
#ifdef DS4_HAVE_CUDA
    if (impl_->cuda_forward) return impl_->cuda_prefill_chunk;
#endif
    return runtime::kPrefillChunk;
}
const EngineOptions& Engine::options() const { return impl_->opt; }
const std::vector<std::string>& Engine::vocab() const { return impl_->vocab; }

MemoryEstimate Engine::memory_estimate(uint64_t ctx) const {
    MemoryEstimate m = runtime::estimate_memory(impl_->hp, ctx);
    m.weights = impl_->file.size();
#ifdef DS4_HAVE_CUDA
    if (impl_->cuda_forward) {
        const cuda::DeviceMemory d = cuda::device_memory();
        m.backend = "cuda";
        m.prefill_chunk = impl_->cuda_prefill_chunk;
        m.device_name = d.name;
        m.device_weights = impl_->cuda_forward->weight_bytes();
        m.device_scratch = impl_->cuda_forward->pass_scratch_bytes(impl_->cuda_prefill_chunk);
        m.device_free = d.free_bytes;
        m.device_total = d.total_bytes;
    }
#endif
    return m;
}

SequenceId Engine::create_sequence() {
    std::unique_ptr<Sequence> s;
    if (!impl_->spare.empty()) {
        s = std::move(impl_->spare.back());
        impl_->spare.pop_back();
        s->reset();
        s->forget_history();  // a new id: no checkpoint refers to it
    } else {
        s = std::make_unique<Sequence>(impl_->hp, impl_->opt.ctx, impl_->mtp_model.get());
    }
    const SequenceId id = impl_->next_id++;
    impl_->sequences.emplace(id, std::move(s));
    return id;
}

void Engine::free_sequence(SequenceId seq) {
    impl_->state(seq);  // throws for an unknown id
    auto node = impl_->sequences.extract(seq);
    impl_->spare.push_back(std::move(node.mapped()));
}

void Engine::reset_sequence(SequenceId seq) { impl_->sequence(seq).reset(); }
uint64_t Engine::sequence_length(SequenceId seq) const { return impl_->state(seq).n_tokens(); }
size_t Engine::sequence_count() const { return impl_->sequences.size(); }

Logits Engine::step(const Batch& batch) {
    Logits out;
    step(batch, out);
    return out;
}

void Engine::step(const Batch& batch, Logits& out) {
    Impl& m = *impl_;
    m.validate(batch);
    const uint64_t V = m.hp.n_vocab;
    out.vocab_ = m.hp.n_vocab;
    out.info_.clear();
#ifdef DS4_HAVE_CUDA
    // a CUDA engine's logits go to page-locked memory (kept across steps with `out`)
    if (m.cuda_forward && out.values_.get_allocator() != m.logits_alloc) out.values_ = Logits::Values(m.logits_alloc);
#endif
    out.values_.resize(batch.n_logits() * V);
    size_t row = 0;
#ifdef DS4_HAVE_CUDA
    if (m.cuda_batchable(batch)) {
        m.cuda_chunks.clear();
        for (size_t i = 0; i < batch.size(); ++i) {
            const Batch::Entry e = batch[i];
            Sequence& s = *m.states[i];
            const uint64_t start = s.kv.n_tokens();
            for (uint32_t r : e.logits_at) out.info_.push_back(Logits::RowInfo{e.seq, start + r});
            s.note_eval_at(start);
            m.cuda_chunks.push_back({&s.kv, e.tokens, e.logits_at,
                                     std::span<float>(out.values_).subspan(row * V, e.logits_at.size() * V)});
            row += e.logits_at.size();
        }
        try {
            const std::span<const cuda::Forward::Chunk> all(m.cuda_chunks);
            for (size_t first = 0; first < all.size();) {
                size_t end = first, tokens = 0;
                while (end < all.size() && (end == first || tokens + all[end].tokens.size() <= m.cuda_prefill_chunk))
                    tokens += all[end++].tokens.size();
                m.cuda_forward->eval_batch(all.subspan(first, end - first));
                first = end;
            }
        } catch (...) {
            for (Sequence* s : m.states) s->reset();  // as below: half-evaluated states are unusable
            throw;
        }
        for (Sequence* s : m.states) s->high = s->kv.n_tokens();
        return;
    }
#endif
    for (size_t i = 0; i < batch.size(); ++i) {
        const Batch::Entry e = batch[i];
        Sequence& s = *m.states[i];
        const uint64_t start = s.kv.n_tokens();
        for (uint32_t r : e.logits_at) out.info_.push_back(Logits::RowInfo{e.seq, start + r});
        s.note_eval_at(start);
        try {
            m.evaluate(e, s, std::span<float>(out.values_).subspan(row * V, e.logits_at.size() * V));
        } catch (...) {
            // Not expected once validation passed; a half-evaluated state is unusable.
            s.reset();
            throw;
        }
        row += e.logits_at.size();
        s.high = s.kv.n_tokens();
    }
}

bool Engine::has_mtp() const { return impl_->mtp_model != nullptr; }

void Engine::mtp_draft(SequenceId seq, int32_t next, std::span<float> logits) {
    Impl& m = *impl_;
    if (!m.mtp_model) fail("engine: no MTP model (open the engine with EngineOptions::mtp_path)");
    Sequence& s = m.sequence(seq);
    const uint64_t len = s.kv.n_tokens();
    if (len == 0) fail("engine: sequence ", seq, " is empty: an MTP draft needs its last token's state");
    if (next < 0 || static_cast<uint64_t>(next) >= m.hp.n_vocab)
        fail("engine: MTP draft token id ", next, " is out of range [0, ", m.hp.n_vocab, ")");
    if (logits.size() < m.hp.n_vocab)
        fail("engine: MTP draft logits buffer holds ", logits.size(), " values, need ", m.hp.n_vocab);
    MtpTrack& t = *s.mtp;
    const cpu::NumericsScope numerics(cpu::default_numerics(m.mtp_model->block().weights()));
    const uint64_t p = len - 1, hcd = m.hp.hc_dim();
    const uint32_t row0 = 0;
    try {
        m.mtp_catch_up(t, p);
        m.mtp_eval(t.cache, p, {&next, 1}, {t.hc.data() + (p % t.ring) * hcd, hcd}, {&row0, 1},
                   logits.first(m.hp.n_vocab));
        m.mtp_to_host(t.cache);
        t.cache.rewind(p);  // the row of `next` is a guess: recomputed once the token is known
        m.mtp_host_changed(t.cache);
    } catch (...) {
        t.cache.reset();  // rebuilt from the recorded states by the next draft
        m.mtp_host_changed(t.cache);
        throw;
    }
}

std::vector<float> Engine::mtp_draft(SequenceId seq, int32_t next) {
    std::vector<float> out(impl_->hp.n_vocab);
    mtp_draft(seq, next, out);
    return out;
}

namespace {

int32_t argmax_lowest(std::span<const float> v) {
    size_t best = 0;
    for (size_t i = 1; i < v.size(); ++i)
        if (v[i] > v[best]) best = i;
    return static_cast<int32_t>(best);
}

}  // namespace

void Engine::mtp_draft_greedy(SequenceId seq, int32_t next, std::span<int32_t> drafts) {
    if (drafts.empty()) return;
    Impl& m = *impl_;
    if (!m.mtp_model) fail("engine: no MTP model (open the engine with EngineOptions::mtp_path)");
    Sequence& s = m.sequence(seq);
    const uint64_t len = s.kv.n_tokens();
    if (len == 0) fail("engine: sequence ", seq, " is empty: an MTP draft needs its last token's state");
    if (next < 0 || static_cast<uint64_t>(next) >= m.hp.n_vocab)
        fail("engine: MTP draft token id ", next, " is out of range [0, ", m.hp.n_vocab, ")");
    const uint64_t p = len - 1, n = drafts.size(), hcd = m.hp.hc_dim();
    if (p + n > s.kv.ctx())
        fail("engine: sequence ", seq, ": ", n, " chained MTP drafts at position ", p,
             " exceed the context size ", s.kv.ctx());
    MtpTrack& t = *s.mtp;
    cpu::KvState& cache = t.cache;
    const cpu::NumericsScope numerics(cpu::default_numerics(m.mtp_model->block().weights()));
    // The chain writes rows p .. p + n − 1 into the ring; the slots of the later ones still
    // hold rows the next real draft attends to, so they are saved and put back.
    const uint64_t hd = cache.head_dim(), touched = std::min<uint64_t>(n, cache.window());
    std::vector<float> saved(touched * hd), logits(m.hp.n_vocab);
    std::vector<float> hc(hcd);
    const uint32_t row0 = 0;
    try {
        m.mtp_catch_up(t, p);
        m.mtp_to_host(cache);  // the saved rows are read from the host copy
        for (uint64_t k = 0; k < touched; ++k)
            std::copy_n(cache.raw_row(0, p + k), hd, saved.begin() + static_cast<std::ptrdiff_t>(k * hd));
        std::copy_n(t.hc.begin() + static_cast<std::ptrdiff_t>((p % t.ring) * hcd), hcd, hc.begin());
        int32_t token = next;
        for (uint64_t k = 0; k < n; ++k) {
            m.mtp_eval(cache, p + k, {&token, 1}, hc, {&row0, 1}, logits);
            token = drafts[k] = argmax_lowest(logits);
            const std::span<const float> out = m.mtp_final_hc(0);
            std::copy(out.begin(), out.end(), hc.begin());  // copied: the next eval reuses it
        }
        // With CUDA the host copy still holds the rows from before the chain (the chain ran
        // on the device only): it becomes the authoritative copy again.
        cache.rewind(p);
        for (uint64_t k = 0; k < touched; ++k)
            std::copy_n(saved.begin() + static_cast<std::ptrdiff_t>(k * hd), hd, cache.raw_row(0, p + k));
        m.mtp_host_changed(cache);
    } catch (...) {
        cache.reset();  // rebuilt from the recorded states by the next draft
        m.mtp_host_changed(cache);
        throw;
    }
}


// ---- Sequence state: payloads, checkpoints, forks ----

namespace {

struct CheckpointFrontier {
    uint32_t n_rows = 0;
    std::vector<float> kv, score;
};
struct CheckpointLayer {
    std::vector<float> raw;
    std::optional<CheckpointFrontier> attn, index;
};

}  // namespace

struct SequenceCheckpoint::Data {
    std::vector<CheckpointLayer> layers;
    size_t epoch = 0;  // Sequence::rewrites.size() when taken
    // MTP: the recorded final states and tokens (the MTP window cache is rebuilt from them).
    std::vector<float> mtp_hc;
    std::vector<int32_t> mtp_tokens;

    uint64_t bytes() const {
        uint64_t n = mtp_hc.size() * sizeof(float) + mtp_tokens.size() * sizeof(int32_t);
        for (const CheckpointLayer& l : layers) {
            n += l.raw.size() * sizeof(float);
            for (const auto* f : {&l.attn, &l.index})
                if (*f) n += ((*f)->kv.size() + (*f)->score.size()) * sizeof(float);
        }
        return n;
    }
};

SequenceCheckpoint::SequenceCheckpoint() = default;
SequenceCheckpoint::~SequenceCheckpoint() = default;
SequenceCheckpoint::SequenceCheckpoint(SequenceCheckpoint&&) noexcept = default;
SequenceCheckpoint& SequenceCheckpoint::operator=(SequenceCheckpoint&&) noexcept = default;
uint64_t SequenceCheckpoint::bytes() const { return data_ ? data_->bytes() : 0; }

namespace {

std::optional<CheckpointFrontier> copy_frontier(const std::optional<cpu::CompressorState>& c) {
    if (!c) return std::nullopt;
    return CheckpointFrontier{c->n_rows, c->state_kv, c->state_score};
}

void put_frontier(const std::optional<CheckpointFrontier>& f,
                  std::optional<cpu::CompressorState>& c) {
    if (!f) return;
    c->n_rows = f->n_rows;
    std::copy(f->kv.begin(), f->kv.end(), c->state_kv.begin());
    std::copy(f->score.begin(), f->score.end(), c->state_score.begin());
}

}  // namespace

void Engine::save_sequence(SequenceId seq, std::span<const int32_t> tokens, std::span<const float> logits,
                           std::vector<uint8_t>& out) const {
    impl_->sync_to_host(impl_->state(seq));
    runtime::save_payload(impl_->hp, impl_->state(seq), tokens, logits, out);
}

uint64_t Engine::sequence_payload_bytes(SequenceId seq) const {
    impl_->sync_to_host(impl_->state(seq));
    return runtime::payload_bytes(impl_->hp, impl_->state(seq));
}

SequenceHistory Engine::load_sequence(SequenceId seq, std::span<const uint8_t> payload) {
    Sequence& s = impl_->sequence(seq);
    runtime::RestoredHistory h = runtime::load_payload(impl_->hp, payload, s.kv);  // untouched on error
    impl_->host_changed(s.kv, true);
    s.note_replaced();
    if (s.mtp) {
        std::fill(s.mtp->hc.begin(), s.mtp->hc.end(), 0.0f);
        std::fill(s.mtp->tokens.begin(), s.mtp->tokens.end(), 0);
        s.mtp->cache.reset();
        impl_->mtp_host_changed(s.mtp->cache);
    }
    return SequenceHistory{std::move(h.tokens), std::move(h.logits)};
}

SequenceCheckpoint Engine::checkpoint(SequenceId seq) const {
    impl_->sync_to_host(impl_->state(seq));
    const Sequence& s = impl_->sequence(seq);
    auto d = std::make_unique<SequenceCheckpoint::Data>();
    d->epoch = s.rewrites.size();
    d->layers.reserve(s.kv.n_layer());
    for (uint32_t il = 0; il < s.kv.n_layer(); ++il) {
        const cpu::LayerKv& l = s.kv.layer(il);
        d->layers.push_back({l.raw, copy_frontier(l.attn), copy_frontier(l.index)});
    }
    if (s.mtp) {
        d->mtp_hc = s.mtp->hc;
        d->mtp_tokens = s.mtp->tokens;
    }
    SequenceCheckpoint cp;
    cp.data_ = std::move(d);
    cp.seq_ = seq;
    cp.length_ = s.kv.n_tokens();
    return cp;
}

bool Engine::can_restore(SequenceId seq, const SequenceCheckpoint& cp) const {
    if (cp.empty() || cp.seq_ != seq) return false;
    const Sequence& s = impl_->sequence(seq);
    const auto& w = s.rewrites;
    if (cp.data_->epoch > w.size()) return false;
    return std::all_of(w.begin() + static_cast<std::ptrdiff_t>(cp.data_->epoch), w.end(),
                       [&](uint64_t p) { return p >= cp.length_; });
}

void Engine::restore(SequenceId seq, const SequenceCheckpoint& cp) {
    if (cp.empty()) fail("engine: sequence ", seq, ": cannot restore an empty checkpoint");
    if (cp.seq_ != seq)
        fail("engine: sequence ", seq, ": the checkpoint belongs to sequence ", cp.seq_);
    if (!can_restore(seq, cp))
        fail("engine: sequence ", seq, ": the checkpoint at ", cp.length_,
             " tokens is stale (positions before it were evaluated again since)");
    Sequence& s = impl_->sequence(seq);
    impl_->sync_to_host(s.kv);  // the host rows must be current: they are kept
    const uint64_t high = s.high;
    s.kv.reset();  // keeps the compressed rows: restoring truncates their counts
    for (uint32_t il = 0; il < s.kv.n_layer(); ++il) {
        cpu::LayerKv& l = s.kv.layer(il);
        const CheckpointLayer& c = cp.data_->layers[il];
        std::copy(c.raw.begin(), c.raw.end(), l.raw.begin());
        put_frontier(c.attn, l.attn);
        put_frontier(c.index, l.index);
    }
    s.kv.advance(cp.length_);
    impl_->host_changed(s.kv, false);
    s.high = std::max(high, cp.length_);  // an evaluation below `high` is a rewrite
    if (s.mtp) {
        std::copy(cp.data_->mtp_hc.begin(), cp.data_->mtp_hc.end(), s.mtp->hc.begin());
        std::copy(cp.data_->mtp_tokens.begin(), cp.data_->mtp_tokens.end(), s.mtp->tokens.begin());
        // The MTP window rows q < cp.length − 1 pair states and tokens the checkpoint still
        // holds; they can be kept when the cache has not gone past cp.length since (its rows
        // beyond would have overwritten ring slots of rows still needed). Speculative
        // decoding restores after every rejected draft: rebuilding the whole window each
        // time would cost `window` MTP evaluations.
        cpu::KvState& cache = s.mtp->cache;
        impl_->mtp_to_host(cache);
        if (cache.n_tokens() <= cp.length_)
            cache.rewind(std::min(cache.n_tokens(), cp.length_ > 0 ? cp.length_ - 1 : 0));
        else
            cache.reset();
        impl_->mtp_host_changed(cache);
    }
}

SequenceId Engine::fork_sequence(SequenceId seq) {
    const Sequence& src = impl_->sequence(seq);
    const SequenceId id = create_sequence();
    Sequence& dst = impl_->sequence(id);
    impl_->sync_to_host(impl_->state(seq));
    dst.kv = src.kv;  // same shapes: copies into the existing buffers
    impl_->host_changed(dst.kv, true);
    if (src.mtp) {
        impl_->mtp_to_host(impl_->sequence(seq).mtp->cache);
        dst.mtp = src.mtp;
        impl_->mtp_host_changed(dst.mtp->cache);
    }
    dst.forget_history();
    return id;
}

}  // namespace ds4
