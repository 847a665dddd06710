// The Engine over the CPU backend: a mapped GGUF bound zero-copy into a WeightSet, one
// CpuForward (its scratch reused by every step) sharing one ThreadPool, and one KvState
// per sequence. Sequences of a batch are evaluated one after another.
#include "ds4/engine.h"

#include <algorithm>
#include <thread>
#include <unordered_map>

#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "cpu/matvec.h"
#include "cpu/quant_matvec.h"
#include "ds4/error.h"
#include "gguf/gguf.h"
#include "model/metadata.h"
#include "model/tensor_plan.h"
#include "runtime/memory_estimate.h"

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
    return s;
}

}  // namespace

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

    std::unordered_map<SequenceId, std::unique_ptr<cpu::KvState>> sequences;
    std::vector<std::unique_ptr<cpu::KvState>> spare;  // freed states, reused by create
    SequenceId next_id = 1;

    // step() scratch, reused
    std::vector<cpu::KvState*> states;
    std::vector<SequenceId> seen;
    std::vector<uint32_t> chunk_rows;

    explicit Impl(gguf::File f) : file(std::move(f)) {}

    cpu::KvState& state(SequenceId seq) const {
        const auto it = sequences.find(seq);
        if (it == sequences.end()) fail("engine: unknown sequence ", seq, " (never created or freed)");
        return *it->second;
    }

    void validate(const Batch& batch);
    void evaluate(const Batch::Entry& e, cpu::KvState& kv, std::span<float> out);
};

void Engine::Impl::validate(const Batch& batch) {
    states.clear();
    seen.clear();
    for (size_t i = 0; i < batch.size(); ++i) {
        const Batch::Entry e = batch[i];
        cpu::KvState& kv = state(e.seq);
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
        states.push_back(&kv);
    }
}

// Feeds one entry in chunks of at most kPrefillChunk tokens (any split gives the same
// logits, model.md §8) so the scratch stays bounded whatever the prompt length.
void Engine::Impl::evaluate(const Batch::Entry& e, cpu::KvState& kv, std::span<float> out) {
    // ds4 numerics (quantized activations) for block-quantized models; F32/F16 models
    // keep the exact path that reproduces the official goldens.
    const cpu::NumericsScope numerics(cpu::default_numerics(model->weights()));
    const uint64_t V = hp.n_vocab;
    size_t next_row = 0;
    for (size_t begin = 0; begin < e.tokens.size(); begin += runtime::kPrefillChunk) {
        const size_t n = std::min<size_t>(runtime::kPrefillChunk, e.tokens.size() - begin);
        chunk_rows.clear();
        const size_t first_row = next_row;
        while (next_row < e.logits_at.size() && e.logits_at[next_row] < begin + n)
            chunk_rows.push_back(static_cast<uint32_t>(e.logits_at[next_row++] - begin));
        forward->eval(kv, kv.n_tokens(), e.tokens.subspan(begin, n), chunk_rows,
                      out.subspan(first_row * V, chunk_rows.size() * V));
    }
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
    return Engine(std::move(impl));
}

const ModelSummary& Engine::model() const { return impl_->summary; }
const EngineOptions& Engine::options() const { return impl_->opt; }
const std::vector<std::string>& Engine::vocab() const { return impl_->vocab; }

MemoryEstimate Engine::memory_estimate(uint64_t ctx) const {
    MemoryEstimate m = runtime::estimate_memory(impl_->hp, ctx);
    m.weights = impl_->file.size();
    return m;
}

SequenceId Engine::create_sequence() {
    std::unique_ptr<cpu::KvState> kv;
    if (!impl_->spare.empty()) {
        kv = std::move(impl_->spare.back());
        impl_->spare.pop_back();
        kv->reset();
    } else {
        kv = std::make_unique<cpu::KvState>(impl_->hp, impl_->opt.ctx);
    }
    const SequenceId id = impl_->next_id++;
    impl_->sequences.emplace(id, std::move(kv));
    return id;
}

void Engine::free_sequence(SequenceId seq) {
    impl_->state(seq);  // throws for an unknown id
    auto node = impl_->sequences.extract(seq);
    impl_->spare.push_back(std::move(node.mapped()));
}

void Engine::reset_sequence(SequenceId seq) { impl_->state(seq).reset(); }
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
    out.values_.resize(batch.n_logits() * V);
    size_t row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
        const Batch::Entry e = batch[i];
        cpu::KvState& kv = *m.states[i];
        const uint64_t start = kv.n_tokens();
        for (uint32_t r : e.logits_at) out.info_.push_back(Logits::RowInfo{e.seq, start + r});
        try {
            m.evaluate(e, kv, std::span<float>(out.values_).subspan(row * V, e.logits_at.size() * V));
        } catch (...) {
            // Not expected once validation passed; a half-evaluated state is unusable.
            kv.reset();
            throw;
        }
        row += e.logits_at.size();
    }
}

}  // namespace ds4
