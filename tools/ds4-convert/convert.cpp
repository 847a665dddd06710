// The conversion itself: type policy, tensor-by-tensor decode → quantize → stream.
#include "convert.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <set>
#include <thread>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "model/metadata.h"
#include "quant/quant.h"
#include "vocab.h"

namespace ds4::convert {

using model::TensorKind;
using model::TensorSpec;

std::string_view type_policy_name(TypePolicy p) {
    switch (p) {
        case TypePolicy::F32:
            return "f32";
        case TypePolicy::F16:
            return "f16";
        case TypePolicy::Q8_0:
            return "q8_0";
        case TypePolicy::Q2:
            return "q2";
        case TypePolicy::Q4:
            return "q4";
    }
    return "?";
}

TypePolicy parse_type_policy(std::string_view s) {
    for (TypePolicy p :
         {TypePolicy::F32, TypePolicy::F16, TypePolicy::Q8_0, TypePolicy::Q2, TypePolicy::Q4})
        if (s == type_policy_name(p)) return p;
    fail("unknown --type '", s, "', expected f32, f16, q8_0, q2 or q4");
}

namespace {

// The part of a tensor name after "blk.L." / "mtp.N." (the whole name for globals).
std::string_view leaf_name(std::string_view name) {
    if (name.starts_with("blk.") || name.starts_with("mtp.")) {
        const size_t dot = name.find('.', 4);
        if (dot != std::string_view::npos) return name.substr(dot + 1);
    }
    return name;
}

// Matrices the released files store as Q8_0 (formats.md §4.2); every other matrix is F16.
bool is_q8_class(std::string_view name) {
    static const std::set<std::string_view> q8 = {
        "attn_q_a.weight",      "attn_q_b.weight",       "attn_kv.weight",
        "attn_output_a.weight", "attn_output_b.weight",  "ffn_gate_shexp.weight",
        "ffn_up_shexp.weight",  "ffn_down_shexp.weight", "output.weight",
        "e_proj.weight",        "h_proj.weight"};
    return q8.contains(leaf_name(name));
}

bool is_k_quant(GgmlType t) {
    return t == GgmlType::Q2_K || t == GgmlType::Q4_K || t == GgmlType::IQ2_XXS;
}

uint64_t block_elems(GgmlType t) {
    const auto info = ggml_type_info(static_cast<uint32_t>(t));
    return info ? info->block_elems : 1;
}

}  // namespace

GgmlType intended_type(const TensorSpec& spec, TypePolicy policy) {
    if (spec.type == GgmlType::I32) return GgmlType::I32;
    if (spec.dims.size() == 1 || policy == TypePolicy::F32) return GgmlType::F32;
    if (policy == TypePolicy::F16) return GgmlType::F16;
    if (spec.kind == TensorKind::Experts) {
        if (policy == TypePolicy::Q8_0) return GgmlType::F16;
        if (policy == TypePolicy::Q4) return GgmlType::Q4_K;
        return leaf_name(spec.name) == "ffn_down_exps.weight" ? GgmlType::Q2_K : GgmlType::IQ2_XXS;
    }
    return is_q8_class(spec.name) ? GgmlType::Q8_0 : GgmlType::F16;
}

GgmlType fitting_type(GgmlType intended, uint64_t row_length) {
    if (row_length % block_elems(intended) == 0) return intended;
    if (is_k_quant(intended) && row_length % block_elems(GgmlType::Q8_0) == 0)
        return GgmlType::Q8_0;
    return GgmlType::F16;
}

namespace {

TypedPlan typed_subset(const model::Hparams& h, TypePolicy policy, bool router_bias, bool mtp) {
    // The f32 mix lays out any valid shape; the types are then chosen here.
    const model::TensorPlan layout(
        h, {.mix = model::QuantMix::F32, .router_bias = router_bias, .mtp = mtp});
    TypedPlan out;
    for (TensorSpec spec : layout.tensors()) {
        if (spec.name.starts_with("mtp.") != mtp) continue;
        const GgmlType want = intended_type(spec, policy);
        spec.type = fitting_type(want, spec.row_length());
        if (spec.type != want)
            out.fallbacks.push_back(cat(spec.name, ": ", ggml_type_name(want), " -> ",
                                        ggml_type_name(spec.type), " (rows of ", spec.row_length(),
                                        ")"));
        out.tensors.push_back(std::move(spec));
    }
    return out;
}

}  // namespace

TypedPlan typed_plan(const model::Hparams& h, TypePolicy policy, bool router_bias) {
    return typed_subset(h, policy, router_bias, false);
}

TypedPlan typed_mtp_plan(const model::Hparams& h, TypePolicy policy) {
    return typed_subset(h, policy, true, true);
}

bool has_mtp_block(const Checkpoint& ck) {
    return ck.find("mtp.0.e_proj.weight") != nullptr;
}

namespace {

// Runs fn(i) for i in [0, n) on up to `threads` threads; rethrows the first exception.
template <typename Fn>
void parallel_for(uint64_t n, unsigned threads, const Fn& fn) {
    const unsigned t = static_cast<unsigned>(std::min<uint64_t>(std::max(1u, threads), n));
    if (t <= 1) {
        for (uint64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    std::atomic<uint64_t> next{0};
    std::exception_ptr error;
    std::mutex mu;
    auto work = [&] {
        for (uint64_t i; (i = next.fetch_add(1)) < n;) {
            try {
                fn(i);
            } catch (...) {
                const std::lock_guard lock(mu);
                if (!error) error = std::current_exception();
                next = n;
            }
        }
    };
    {
        std::vector<std::jthread> pool;
        for (unsigned k = 1; k < t; ++k) pool.emplace_back(work);
        work();
    }
    if (error) std::rethrow_exception(error);
}

std::vector<uint64_t> reversed_trimmed(std::vector<uint64_t> shape) {
    std::reverse(shape.begin(), shape.end());
    while (shape.size() > 1 && shape.back() == 1) shape.pop_back();
    return shape;
}

void check_shape(const Checkpoint& ck, std::string_view official,
                 const std::vector<uint64_t>& hf_shape, std::vector<uint64_t> want,
                 const std::string& gguf_name) {
    while (want.size() > 1 && want.back() == 1) want.pop_back();
    if (reversed_trimmed(hf_shape) != want)
        fail(ck.path(), ": tensor ", official, " has shape ", st::shape_string(hf_shape), ", but ",
             gguf_name, " needs GGUF dims ", st::shape_string(want),
             " (the reversed official shape)");
}

// Decodes one official weight (with its block scales when the dtype has them).
quant::DecodedTensor decode(const Checkpoint& ck, const std::string& official) {
    const quant::TensorRef w = ck.require(official);
    const st::DType dt = w.tensor->dtype;
    std::optional<quant::TensorRef> scale;
    if (dt == st::DType::F8_E4M3 || dt == st::DType::I8)
        scale = ck.require(quant::official_scale_name(official));
    try {
        return quant::decode_official(w, scale);
    } catch (const Error& e) {
        fail(ck.path(), ": cannot decode ", official, ": ", e.what());
    }
}

// Quantizes rows [0, n_rows) of `values` (row length n) into `dst`.
void quantize_rows(GgmlType type, const float* values, uint64_t n_rows, uint64_t n, uint8_t* dst,
                   const float* importance) {
    const uint64_t rb = ggml_row_bytes(type, n);
    for (uint64_t r = 0; r < n_rows; ++r)
        quant::quantize_row(type, values + r * n, dst + r * rb, static_cast<int64_t>(n),
                            importance);
}

// Per-column Σx² of a [rows, n] matrix: the IQ2_XXS importance without an imatrix.
std::vector<float> column_sum_squares(const std::vector<float>& m, uint64_t n) {
    std::vector<float> w(n, 0.0f);
    for (uint64_t i = 0; i < m.size(); ++i) w[i % n] += m[i] * m[i];
    return w;
}

class Progress {
  public:
    Progress(bool on, size_t tensors, uint64_t bytes) : on_(on), tensors_(tensors), bytes_(bytes) {}
    // Redraws at most every 0.2 s (and at the end) so a log file stays short.
    void update(size_t done, uint64_t bytes_done, std::string_view name) {
        if (!on_) return;
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
        if (done != tensors_ && s - last_ < 0.2) return;
        last_ = s;
        const double mb = static_cast<double>(bytes_done) / 1e6;
        std::fprintf(stderr, "\r[%zu/%zu] %.1f/%.1f MB  %.1f MB/s  %-48.48s", done, tensors_, mb,
                     static_cast<double>(bytes_) / 1e6, s > 0 ? mb / s : 0.0,
                     std::string(name).c_str());
        if (done == tensors_) std::fputc('\n', stderr);
        std::fflush(stderr);
    }

  private:
    bool on_;
    size_t tensors_;
    uint64_t bytes_;
    double last_ = -1;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

class Converter {
  public:
    Converter(const Checkpoint& ck, const model::Hparams& h, const ConvertOptions& opt,
              const Imatrix* imatrix)
        : ck_(ck),
          h_(h),
          imatrix_(imatrix),
          threads_(opt.threads ? opt.threads : std::max(1u, std::thread::hardware_concurrency())) {}

    // Every official tensor the plan needs, checked before any output is written.
    void require_inputs(const TensorSpec& spec, std::set<std::string>& used) const {
        auto need = [&](const std::string& official) {
            const quant::TensorRef r = ck_.require(official);
            used.insert(official);
            const st::DType dt = r.tensor->dtype;
            if (dt == st::DType::F8_E4M3 || dt == st::DType::I8) {
                const std::string s = quant::official_scale_name(official);
                ck_.require(s);
                used.insert(s);
            }
        };
        if (spec.kind == TensorKind::Experts) {
            for (uint32_t e = 0; e < h_.n_expert; ++e) need(expert_name(spec, e));
            return;
        }
        need(official_name(spec));
    }

    std::vector<uint8_t> convert(const TensorSpec& spec) const {
        if (spec.kind == TensorKind::Experts) return convert_experts(spec);
        const std::string official = official_name(spec);
        if (spec.type == GgmlType::I32) {
            const quant::TensorRef r = ck_.require(official);
            check_shape(ck_, official, r.tensor->shape, spec.dims, spec.name);
            const std::vector<int32_t> ids = quant::narrow_i64_to_i32(r);
            std::vector<uint8_t> out(ids.size() * sizeof(int32_t));
            std::memcpy(out.data(), ids.data(), out.size());
            return out;
        }
        const quant::DecodedTensor d = decode(ck_, official);
        check_shape(ck_, official, d.shape, spec.dims, spec.name);
        const uint64_t n = spec.row_length(), rows = spec.n_rows(), rb = spec.row_bytes();
        std::vector<uint8_t> out(rows * rb);
        const uint64_t chunk = 64;
        parallel_for((rows + chunk - 1) / chunk, threads_, [&](uint64_t c) {
            const uint64_t r0 = c * chunk, r1 = std::min(rows, r0 + chunk);
            quantize_rows(spec.type, d.values.data() + r0 * n, r1 - r0, n, out.data() + r0 * rb,
                          nullptr);
        });
        return out;
    }

    // Streams a routed-expert tensor in batches of `threads` experts (memory: one batch).
    template <typename Sink>
    void convert_experts_streaming(const TensorSpec& spec, Sink&& sink) const {
        const uint64_t n = spec.dims[0], rows = spec.dims[1];
        const uint64_t slab = rows * spec.row_bytes();
        for (uint32_t e0 = 0; e0 < h_.n_expert; e0 += threads_) {
            const uint32_t batch = std::min(threads_, h_.n_expert - e0);
            std::vector<uint8_t> out(batch * slab);
            parallel_for(batch, threads_, [&](uint64_t i) {
                const uint32_t e = e0 + static_cast<uint32_t>(i);
                const std::string official = expert_name(spec, e);
                const quant::DecodedTensor d = decode(ck_, official);
                check_shape(ck_, official, d.shape, {n, rows}, cat(spec.name, " (expert ", e, ")"));
                std::vector<float> own_importance;
                std::span<const float> importance;
                if (imatrix_)
                    importance = imatrix_->for_expert(spec.name, official, e, n, h_.n_expert);
                if (importance.empty() && spec.type == GgmlType::IQ2_XXS) {
                    own_importance = column_sum_squares(d.values, n);
                    importance = own_importance;
                }
                quantize_rows(spec.type, d.values.data(), rows, n, out.data() + i * slab,
                              importance.empty() ? nullptr : importance.data());
            });
            sink(out);
        }
    }

    std::vector<uint8_t> convert_experts(const TensorSpec& spec) const {
        std::vector<uint8_t> all;
        convert_experts_streaming(spec, [&](const std::vector<uint8_t>& b) {
            all.insert(all.end(), b.begin(), b.end());
        });
        return all;
    }

  private:
    std::string official_name(const TensorSpec& spec) const {
        const auto n = quant::official_name_for_gguf(spec.name);
        if (!n) fail("no official checkpoint name for ds4 tensor ", spec.name);
        return *n;
    }
    std::string expert_name(const TensorSpec& spec, uint32_t e) const {
        const auto n = quant::official_expert_name(spec.name, e);
        if (!n) fail("no official checkpoint name for expert ", e, " of ", spec.name);
        return *n;
    }

    const Checkpoint& ck_;
    const model::Hparams& h_;
    const Imatrix* imatrix_;
    unsigned threads_;
};

bool has_router_bias(const Checkpoint& ck, const model::Hparams& h) {
    for (uint32_t il = h.n_hash_layer; il < h.n_layer; ++il)
        if (ck.find(cat("layers.", il, ".ffn.gate.bias"))) return true;
    return false;
}

}  // namespace

namespace {

struct GgufHeader {
    const model::Hparams* hparams;
    std::string name;
    bool tokenizer;
    TypePolicy type;
};

// Writes one GGUF: metadata, then the tensors of `tensors` converted in order. Returns the
// payload bytes.
uint64_t write_gguf(const std::string& path, const GgufHeader& head,
                    const std::vector<TensorSpec>& tensors, const Converter& conv,
                    bool progress_on) {
    gguf::Writer w;
    model::write_metadata(w, *head.hparams, {.name = head.name, .mtp_entry = true});
    if (head.tokenizer) synth::write_tokenizer(w, synth::make_byte_vocab(head.hparams->n_vocab));
    w.add_string("general.source.format", "official DeepSeek V4 checkpoint");
    w.add_string("ds4.convert.type", std::string(type_policy_name(head.type)));
    uint64_t total = 0;
    for (const TensorSpec& spec : tensors) {
        w.add_tensor(spec.name, spec.dims, spec.type);
        total += spec.n_bytes();
    }
    Progress progress(progress_on, tensors.size(), total);
    w.begin(path);
    uint64_t bytes = 0;
    size_t done = 0;
    for (const TensorSpec& spec : tensors) {
        if (spec.kind == TensorKind::Experts) {
            conv.convert_experts_streaming(spec, [&](const std::vector<uint8_t>& b) {
                w.write_data(b);
                bytes += b.size();
            });
        } else {
            const std::vector<uint8_t> data = conv.convert(spec);
            w.write_data(data);
            bytes += data.size();
        }
        progress.update(++done, bytes, spec.name);
    }
    w.finish();
    return bytes;
}

}  // namespace

ConvertResult convert_checkpoint(const std::string& input, const std::string& output,
                                 const ConvertOptions& options) {
    const auto t0 = std::chrono::steady_clock::now();
    const Checkpoint ck = Checkpoint::open(input);
    ConvertResult res;
    res.hparams = hparams_from_model_args(ck.model_args(), ck.path());
    const model::Hparams& h = res.hparams;
    std::optional<Imatrix> imatrix;
    if (!options.imatrix.empty()) imatrix = Imatrix::load(options.imatrix);
    const TypedPlan plan = typed_plan(h, options.type, has_router_bias(ck, h));
    res.fallbacks = plan.fallbacks;
    const bool want_mtp = !options.mtp_output.empty();
    if (want_mtp && !has_mtp_block(ck))
        fail(ck.path(),
             ": --mtp-out was given but the checkpoint has no MTP block (no official tensor "
             "mtp.0.e_proj.weight)");
    TypedPlan mtp_plan;
    if (want_mtp) {
        mtp_plan = typed_mtp_plan(h, options.type);
        res.fallbacks.insert(res.fallbacks.end(), mtp_plan.fallbacks.begin(),
                             mtp_plan.fallbacks.end());
    }
    const Converter conv(ck, h, options, imatrix ? &*imatrix : nullptr);

    // Every input is checked before any output is written.
    std::set<std::string> used;
    for (const TensorSpec& spec : plan.tensors) conv.require_inputs(spec, used);
    for (const TensorSpec& spec : mtp_plan.tensors) conv.require_inputs(spec, used);
    for (const std::string& name : ck.names())
        if (!used.contains(name)) res.ignored.push_back(name);

    res.tokenizer = h.n_vocab >= synth::min_vocab_size();
    if (options.log) {
        for (const std::string& f : res.fallbacks) *options.log << "fallback: " << f << "\n";
        if (!res.tokenizer)
            *options.log << "note: vocabulary of " << h.n_vocab
                         << " tokens is too small for the byte-level "
                         << "tokenizer (needs " << synth::min_vocab_size()
                         << "); no tokenizer metadata written\n";
        if (!res.ignored.empty())
            *options.log << "note: " << res.ignored.size()
                         << " official tensors not converted (e.g. " << res.ignored.front()
                         << ")\n";
    }

    res.bytes = write_gguf(output, {&h, options.model_name, res.tokenizer, options.type},
                           plan.tensors, conv, options.progress);
    res.tensors = plan.tensors.size();
    if (want_mtp) {
        res.mtp_bytes =
            write_gguf(options.mtp_output, {&h, options.model_name + " MTP", false, options.type},
                       mtp_plan.tensors, conv, options.progress);
        res.mtp_tensors = mtp_plan.tensors.size();
    }
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return res;
}

}  // namespace ds4::convert
