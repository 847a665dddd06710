// Synthetic model maker (see maker.h): plan → metadata → tensor data placed in parallel.
#include "maker.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "ds4/error.h"
#include "copy_head.h"
#include "fast_blocks.h"
#include "gguf/gguf.h"
#include "init.h"
#include "model/metadata.h"
#include "pipeline.h"
#include "quant/quant.h"
#include "rng.h"
#include "vocab.h"

namespace ds4::synth {

namespace {

using model::TensorKind;
using model::TensorSpec;
using Clock = std::chrono::steady_clock;

// One unit of work: a run of rows of one tensor. About 1M values, so a worker holds a
// few MB and a 3-D expert tensor splits into many items that run in parallel.
struct WorkItem {
    uint32_t tensor;
    uint64_t row_begin;
    uint64_t row_end;
};
constexpr uint64_t kItemValues = 1u << 20;

std::vector<WorkItem> split_rows(const model::TensorPlan& plan) {
    std::vector<WorkItem> items;
    for (uint32_t ti = 0; ti < plan.size(); ++ti) {
        const TensorSpec& t = plan.tensors()[ti];
        const uint64_t rows = t.n_rows();
        const uint64_t step = std::max<uint64_t>(1, kItemValues / t.row_length());
        for (uint64_t r = 0; r < rows; r += step)
            items.push_back({ti, r, std::min(rows, r + step)});
    }
    return items;
}

// Generates (and quantizes) rows [begin, end) of one tensor.
class RowGenerator {
  public:
    RowGenerator(const model::Hparams& h, const model::TensorPlan& plan, const MakeOptions& opt)
        : h_(h), plan_(plan), opt_(opt) {
        for (const TensorSpec& t : plan.tensors()) hashes_.push_back(name_hash(t.name));
    }

    Bytes operator()(const WorkItem& w) const {
        const TensorSpec& t = plan_.tensors()[w.tensor];
        const uint64_t row_bytes = t.row_bytes();
        Bytes out((w.row_end - w.row_begin) * row_bytes);
        thread_local std::vector<float> values;
        values.resize(t.row_length());
        for (uint64_t r = w.row_begin; r < w.row_end; ++r) {
            Rng rng(row_seed(opt_.seed, hashes_[w.tensor], r));
            uint8_t* dst = out.data() + (r - w.row_begin) * row_bytes;
            if (opt_.mtp_copy_head && copy_head_row(t, r, values))
                quant::quantize_row(t.type, values.data(), dst, static_cast<int64_t>(values.size()));
            else
                fill_row(t, rng, values, std::span<uint8_t>(dst, row_bytes));
        }
        return out;
    }

  private:
    void fill_row(const TensorSpec& t, Rng& rng, std::vector<float>& values,
                  std::span<uint8_t> dst) const {
        const auto n = static_cast<int64_t>(t.row_length());
        if (t.kind == TensorKind::Tid2Eid) {
            thread_local std::vector<int32_t> ids;
            ids.resize(t.row_length());
            init_tid2eid_row(h_, rng, ids);
            std::memcpy(dst.data(), ids.data(), dst.size());
        } else if (opt_.fast_blocks && has_random_blocks(t.type)) {
            random_blocks(t.type, init_std(t), rng, dst, n);
        } else {
            init_row(t, h_, rng, values);
            quant::quantize_row(t.type, values.data(), dst.data(), n);
        }
    }

    const model::Hparams& h_;
    const model::TensorPlan& plan_;
    const MakeOptions& opt_;
    std::vector<uint64_t> hashes_;
};

// "written / total, MB/s, ETA" on stderr, at most once a second; in place on a terminal.
class Progress {
  public:
    Progress(bool enabled, uint64_t total)
        : enabled_(enabled), total_(total), tty_(isatty(2) != 0) {}

    void advance(uint64_t bytes) {
        done_ += bytes;
        if (!enabled_) return;
        const auto now = Clock::now();
        if (now - last_ < std::chrono::seconds(tty_ ? 1 : 10) && done_ < total_) return;
        last_ = now;
        const double s = std::chrono::duration<double>(now - start_).count();
        const double rate = s > 0 ? done_ / s : 0;
        const double eta = rate > 0 ? (total_ - done_) / rate : 0;
        std::fprintf(stderr, "%s%.2f / %.2f GiB (%.1f%%), %.0f MB/s, ETA %.0f s%s",
                     tty_ ? "\r" : "", done_ / 1073741824.0, total_ / 1073741824.0,
                     100.0 * done_ / total_, rate / 1e6, eta, tty_ ? "   " : "\n");
        if (tty_ && done_ >= total_) std::fputc('\n', stderr);
    }

  private:
    bool enabled_;
    uint64_t total_;
    bool tty_;
    uint64_t done_ = 0;
    Clock::time_point start_ = Clock::now();
    Clock::time_point last_ = start_;
};

std::string describe(const MakeOptions& opt) {
    return cat("DeepSeek-V4-Flash synthetic random weights (", opt.shape.n_layer, " layers, D ",
               opt.shape.n_embd, ", ", model::quant_mix_name(opt.plan.mix), ", seed ", opt.seed,
               ")");
}

void declare_tensors(gguf::Writer& w, const model::TensorPlan& plan) {
    for (const TensorSpec& t : plan.tensors()) w.add_tensor(t.name, t.dims, t.type);
}

}  // namespace

std::vector<uint32_t> default_ratios(uint32_t n_layer) {
    std::vector<uint32_t> r(n_layer);
    for (uint32_t il = 0; il < n_layer; ++il) r[il] = il < 2 ? 0 : (il % 2 == 0 ? 4 : 128);
    return r;
}

model::Hparams shape_preset(std::string_view name) {
    model::Hparams h = model::Hparams::published();
    if (name == "published") return h;
    if (name != "demo" && name != "tiny")
        fail("unknown shape '", name, "', expected published, demo or tiny");
    // Both reduced shapes keep the published routing/YaRN constants and every block
    // type: pure-window, CSA (with indexer) and HCA layers, hash and biased routing.
    // Row lengths (D, ff) are multiples of 256 so the K-quant and IQ2 formats apply.
    h.n_embd = 256;
    h.head_dim = 128;  // 64 no-pos dims = one FP8 block, 64 rotary dims
    h.rope_dim = 64;
    h.o_groups = 2;
    h.ff_exp = 256;
    h.idx_head_dim = 128;
    h.hc_mult = 4;
    if (name == "demo") {
        h.n_layer = 6;
        h.n_vocab = 512;
        h.n_head = 8;
        h.q_lora_rank = 128;
        h.o_lora_rank = 128;
        h.n_expert = 16;
        h.n_expert_used = 4;
        h.window = 128;
        h.idx_n_heads = 4;
        h.idx_topk = 16;
    } else {
        h.n_layer = 4;
        h.n_vocab = 320;
        h.n_head = 4;
        h.q_lora_rank = 64;
        h.o_lora_rank = 64;
        h.n_expert = 4;
        h.n_expert_used = 2;
        h.window = 16;
        h.idx_n_heads = 2;
        h.idx_topk = 4;
    }
    h.compress_ratios = default_ratios(h.n_layer);
    return h;
}

bool wants_fast_blocks(const model::TensorPlan& plan) {
    return plan.total_elements() > 10'000'000'000ull;
}

MakeResult make_model(const std::string& path, const MakeOptions& opt) {
    const auto start = Clock::now();
    const model::TensorPlan plan(opt.shape, opt.plan);  // validates the shape
    if (opt.mtp_copy_head && !opt.plan.mtp) fail("--mtp-copy-head needs the MTP block (--mtp)");
    const Vocab vocab =
        opt.vocab_gguf.empty() ? make_byte_vocab(opt.shape.n_vocab) : read_vocab_gguf(opt.vocab_gguf);
    if (vocab.tokens.size() != opt.shape.n_vocab)
        fail(opt.vocab_gguf, ": ", vocab.tokens.size(), " tokens, but the shape has n_vocab ",
             opt.shape.n_vocab);

    gguf::Writer w;
    model::MetadataOptions meta;
    meta.name = opt.name.empty() ? describe(opt) : opt.name;
    model::write_metadata(w, opt.shape, meta);
    write_tokenizer(w, vocab);
    declare_tensors(w, plan);
    w.begin(path);

    const std::vector<WorkItem> items = split_rows(plan);
    const RowGenerator generate(opt.shape, plan, opt);
    const unsigned threads =
        opt.threads ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
    Progress progress(opt.progress && plan.total_bytes() >= (64ull << 20), plan.total_bytes());
    std::mutex progress_mu;
    // each item written at its place by its worker: writing into the file (or ds4-bench's
    // memfd) in parallel, not through one thread (~1 GB/s)
    run_parallel(items.size(), threads, [&](size_t i) {
        const WorkItem& item = items[i];
        const Bytes b = generate(item);
        w.write_tensor_at(item.tensor, item.row_begin * plan.tensors()[item.tensor].row_bytes(), b);
        const std::lock_guard lk(progress_mu);
        progress.advance(b.size());
    });
    w.finish();

    MakeResult r;
    r.n_tensors = plan.size();
    r.tensor_bytes = plan.total_bytes();
    r.file_bytes = std::filesystem::file_size(path);
    r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return r;
}

}  // namespace ds4::synth
