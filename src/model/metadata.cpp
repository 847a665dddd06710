// deepseek4.* metadata: writer and ds4-compatible reader/validator (see metadata.h).
#include "model/metadata.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <vector>

#include "ds4/error.h"

namespace ds4::model {

namespace {

using gguf::ValueType;

// The UINT32 keys, in ds4's validation order. value_length is handled separately: it
// is the same field as key_length (K and V rows are one vector).
struct U32Field {
    std::string_view key;
    uint32_t Hparams::*field;
};
constexpr U32Field kU32Fields[] = {
    {key::block_count, &Hparams::n_layer},
    {key::embedding_length, &Hparams::n_embd},
    {key::vocab_size, &Hparams::n_vocab},
    {key::head_count, &Hparams::n_head},
    {key::head_count_kv, &Hparams::n_head_kv},
    {key::key_length, &Hparams::head_dim},
    {key::rope_dimension_count, &Hparams::rope_dim},
    {key::q_lora_rank, &Hparams::q_lora_rank},
    {key::output_lora_rank, &Hparams::o_lora_rank},
    {key::output_group_count, &Hparams::o_groups},
    {key::expert_count, &Hparams::n_expert},
    {key::expert_used_count, &Hparams::n_expert_used},
    {key::expert_feed_forward_length, &Hparams::ff_exp},
    {key::expert_shared_count, &Hparams::n_expert_shared},
    {key::hash_layer_count, &Hparams::n_hash_layer},
    {key::sliding_window, &Hparams::window},
    {key::indexer_head_count, &Hparams::idx_n_heads},
    {key::indexer_key_length, &Hparams::idx_head_dim},
    {key::indexer_top_k, &Hparams::idx_topk},
    {key::hc_count, &Hparams::hc_mult},
    {key::hc_sinkhorn_iterations, &Hparams::hc_sinkhorn_iters},
};

// The "required float" keys (F32, F64, UINT32 or INT32 accepted, like ds4).
struct FloatField {
    std::string_view key;
    float Hparams::*field;
};
constexpr FloatField kFloatFields[] = {
    {key::rope_freq_base, &Hparams::rope_theta},
    {key::rope_scaling_factor, &Hparams::rope_factor},
    {key::yarn_beta_fast, &Hparams::beta_fast},
    {key::yarn_beta_slow, &Hparams::beta_slow},
    {key::compress_rope_freq_base, &Hparams::compress_rope_theta},
    {key::expert_weights_scale, &Hparams::route_scale},
    {key::rms_epsilon, &Hparams::norm_eps},
    {key::hc_epsilon, &Hparams::hc_eps},
};

constexpr uint32_t kPublishedLayers = 43;

// A value read from the file: enough digits that two values that differ print
// differently (10000 vs 10000.0195).
std::string show(double v) {
    std::ostringstream os;
    os << std::setprecision(10) << v;
    return os.str();
}

// An expected value held as float: float precision, so 1e-6f prints as 1e-06.
std::string show_expected(float v) {
    std::ostringstream os;
    os << std::setprecision(7) << v;
    return os.str();
}

// ds4's float check (formats.md §1.5).
bool float_matches(double got, double expected) {
    return std::fabs(got - expected) <= std::max(1.0, std::fabs(expected)) * 1e-6;
}

// Typed access with ds4's acceptance rules and messages that name the file and key.
class MetaReader {
  public:
    explicit MetaReader(const gguf::File& f) : f_(f) {}

    // ds4's u32 getter only accepts UINT32; anything else reads as "missing".
    uint32_t u32(std::string_view k) const {
        const gguf::KeyValue* kv = f_.find(k);
        if (!kv || kv->type != ValueType::U32) missing(k, kv, "UINT32");
        return *f_.get_u32(k);
    }

    // Optional u32 keys (expert_group_count): absent, or stored with another type,
    // reads as 0 — the same getter, whose failure means "not there".
    uint32_t optional_u32(std::string_view k) const {
        const gguf::KeyValue* kv = f_.find(k);
        if (!kv || kv->type != ValueType::U32) return 0;
        return *f_.get_u32(k);
    }

    // ds4's "required integer": UINT64 or UINT32.
    uint64_t integer(std::string_view k) const {
        const gguf::KeyValue* kv = f_.find(k);
        if (kv && kv->type == ValueType::U64) return *f_.get_u64(k);
        if (kv && kv->type == ValueType::U32) return *f_.get_u32(k);
        missing(k, kv, "UINT64 or UINT32");
    }

    uint64_t optional_integer(std::string_view k) const {
        const gguf::KeyValue* kv = f_.find(k);
        if (kv && (kv->type == ValueType::U64 || kv->type == ValueType::U32)) return integer(k);
        return 0;
    }

    // ds4's "required float": F32, F64, UINT32 or INT32, converted.
    double real(std::string_view k) const {
        const gguf::KeyValue* kv = f_.find(k);
        if (kv) {
            switch (kv->type) {
                case ValueType::F32:
                    return *f_.get_f32(k);
                case ValueType::F64:
                    return *f_.get_f64(k);
                case ValueType::U32:
                    return *f_.get_u32(k);
                case ValueType::I32:
                    return *f_.get_i32(k);
                default:
                    break;
            }
        }
        missing(k, kv, "FLOAT32, FLOAT64, UINT32 or INT32");
    }

    bool boolean(std::string_view k) const {
        const gguf::KeyValue* kv = f_.find(k);
        if (!kv || kv->type != ValueType::BOOL) missing(k, kv, "BOOL");
        return *f_.get_bool(k);
    }

    // compress_ratios: ARRAY of UINT32 or INT32 with at least n_layer entries; only the
    // first n_layer are the main model's (a trailing entry belongs to the MTP block).
    std::vector<uint32_t> ratios(std::string_view k, uint32_t n_layer) const {
        array(k, n_layer, {ValueType::U32, ValueType::I32}, "UINT32 or INT32");
        const std::vector<int64_t> all = f_.get_int_array(k);
        std::vector<uint32_t> out(n_layer);
        for (uint32_t il = 0; il < n_layer; ++il) {
            if (all[il] < 0 || all[il] > UINT32_MAX)
                fail(f_.path(), ": metadata key ", k, "[", il, "] = ", all[il],
                     " is not a valid ratio");
            out[il] = static_cast<uint32_t>(all[il]);
        }
        return out;
    }

    // swiglu_clamp_exp: ARRAY of F32 or F64 with at least n_layer entries.
    std::vector<double> clamps(std::string_view k, uint32_t n_layer) const {
        array(k, n_layer, {ValueType::F32, ValueType::F64}, "FLOAT32 or FLOAT64");
        std::vector<double> all = f_.get_float_array(k);
        all.resize(n_layer);
        return all;
    }

    [[noreturn]] void mismatch(std::string_view k, const std::string& got,
                               const std::string& expected, std::string_view why) const {
        fail(f_.path(), ": metadata key ", k, " = ", got, ", expected ", expected, " (", why, ")");
    }

    const std::string& path() const { return f_.path(); }

  private:
    [[noreturn]] void missing(std::string_view k, const gguf::KeyValue* kv,
                              std::string_view accepted) const {
        if (!kv) fail(f_.path(), ": required metadata key ", k, " is missing");
        fail(f_.path(), ": required metadata key ", k, " is missing (stored as ",
             gguf::value_type_name(kv->type), "; ds4 accepts only ", accepted, ")");
    }

    void array(std::string_view k, uint32_t min_count, std::initializer_list<ValueType> elems,
               std::string_view accepted) const {
        const gguf::KeyValue* kv = f_.find(k);
        bool ok = kv && kv->type == ValueType::ARRAY;
        if (ok) {
            ok = false;
            for (ValueType t : elems) ok = ok || kv->array_type == t;
        }
        if (!ok) {
            if (kv && kv->type == ValueType::ARRAY)
                fail(f_.path(), ": required metadata key ", k, " is missing (ARRAY of ",
                     gguf::value_type_name(kv->array_type), "; ds4 accepts only ARRAY of ",
                     accepted, ")");
            missing(k, kv, cat("ARRAY of ", accepted));
        }
        if (kv->array_count < min_count)
            fail(f_.path(), ": metadata key ", k, " has ", kv->array_count,
                 " entries, expected at least ", min_count, " (one per layer)");
    }

    const gguf::File& f_;
};

// Everything read from the file before it is judged.
struct RawMetadata {
    Hparams h;
    uint32_t value_length = 0;
    uint32_t group_count = 0;
    uint32_t group_used_count = 0;
    std::vector<double> clamps;
};

RawMetadata read_raw(const MetaReader& r) {
    RawMetadata m;
    Hparams& h = m.h;
    for (const U32Field& f : kU32Fields) h.*f.field = r.u32(f.key);
    m.value_length = r.u32(key::value_length);
    m.group_count = r.optional_u32(key::expert_group_count);
    m.group_used_count = r.optional_u32(key::expert_group_used_count);
    h.compress_ratios = r.ratios(key::compress_ratios, h.n_layer);
    m.clamps = r.clamps(key::swiglu_clamp_exp, h.n_layer);
    h.original_seq_len = r.integer(key::original_context_length);
    for (const FloatField& f : kFloatFields) h.*f.field = static_cast<float>(r.real(f.key));
    h.expert_weights_norm = r.boolean(key::expert_weights_norm);
    h.context_length = r.optional_integer(key::context_length);
    return m;
}

// The engine has no group-limited routing (model.md §1.1): ds4 requires 0 when present.
void check_no_expert_groups(const MetaReader& r, const RawMetadata& m) {
    if (m.group_count != 0)
        r.mismatch(key::expert_group_count, cat(m.group_count), "0",
                   "group-limited routing is not supported");
    if (m.group_used_count != 0)
        r.mismatch(key::expert_group_used_count, cat(m.group_used_count), "0",
                   "group-limited routing is not supported");
}

// ds4's validation of the published shape: every key against the hard-coded value.
// Re-reads the raw float values so the tolerance applies to what the file stores.
void check_published(const MetaReader& r, const RawMetadata& m) {
    constexpr const char* why = "published DeepSeek V4 Flash shape";
    const Hparams p = Hparams::published();
    for (const U32Field& f : kU32Fields) {
        if (m.h.*f.field != p.*f.field) r.mismatch(f.key, cat(m.h.*f.field), cat(p.*f.field), why);
    }
    if (m.value_length != p.head_dim)
        r.mismatch(key::value_length, cat(m.value_length), cat(p.head_dim), why);
    for (uint32_t il = 0; il < p.n_layer; ++il) {
        if (m.h.compress_ratios[il] != p.compress_ratios[il])
            r.mismatch(cat(key::compress_ratios, "[", il, "]"), cat(m.h.compress_ratios[il]),
                       cat(p.compress_ratios[il]), why);
        if (!float_matches(m.clamps[il], p.swiglu_limit))
            r.mismatch(cat(key::swiglu_clamp_exp, "[", il, "]"), show(m.clamps[il]),
                       show_expected(p.swiglu_limit), why);
    }
    if (m.h.original_seq_len != p.original_seq_len)
        r.mismatch(key::original_context_length, cat(m.h.original_seq_len), cat(p.original_seq_len),
                   why);
    for (const FloatField& f : kFloatFields) {
        const double got = r.real(f.key);
        if (!float_matches(got, p.*f.field))
            r.mismatch(f.key, show(got), show_expected(p.*f.field), why);
    }
    if (!m.h.expert_weights_norm) r.mismatch(key::expert_weights_norm, "false", "true", why);
}

// Reduced shapes: one clamp for all layers (the engine keeps a single value), K = V
// width, then the general consistency rules.
Hparams finish_reduced(const MetaReader& r, RawMetadata m) {
    if (m.value_length != m.h.head_dim)
        r.mismatch(key::value_length, cat(m.value_length), cat(m.h.head_dim),
                   "must equal attention.key_length: K and V are the same row");
    for (size_t il = 1; il < m.clamps.size(); ++il) {
        if (m.clamps[il] != m.clamps[0])
            r.mismatch(cat(key::swiglu_clamp_exp, "[", il, "]"), show(m.clamps[il]),
                       show(m.clamps[0]), "every layer must use the same clamp");
    }
    m.h.swiglu_limit = static_cast<float>(m.clamps[0]);
    try {
        m.h.validate();
    } catch (const Error& e) {
        fail(r.path(), ": ", e.what());
    }
    return m.h;
}

}  // namespace

void write_metadata(gguf::Writer& w, const Hparams& h, const MetadataOptions& opt) {
    h.validate();
    w.add_string(std::string(key::architecture), kArchitecture);
    w.add_string(std::string(key::name), opt.name);
    w.add_u32(std::string(key::alignment), gguf::kDefaultAlignment);
    w.add_u64(std::string(key::context_length), h.context_length);
    for (const U32Field& f : kU32Fields) w.add_u32(std::string(f.key), h.*f.field);
    w.add_u32(std::string(key::value_length), h.head_dim);
    w.add_u32(std::string(key::expert_group_count), 0);
    w.add_u32(std::string(key::expert_group_used_count), 0);

    std::vector<uint32_t> ratios = h.compress_ratios;
    std::vector<float> clamps(h.n_layer, h.swiglu_limit);
    if (opt.mtp_entry) {
        ratios.push_back(0);  // the MTP block is a ratio-0 block
        clamps.push_back(h.swiglu_limit);
    }
    w.add_array_u32(std::string(key::compress_ratios), ratios);
    w.add_array_f32(std::string(key::swiglu_clamp_exp), clamps);
    w.add_u64(std::string(key::original_context_length), h.original_seq_len);
    for (const FloatField& f : kFloatFields) w.add_f32(std::string(f.key), h.*f.field);
    w.add_bool(std::string(key::expert_weights_norm), h.expert_weights_norm);
}

Hparams read_hparams(const gguf::File& f) {
    const MetaReader r(f);
    RawMetadata m = read_raw(r);
    check_no_expert_groups(r, m);
    if (m.h.n_layer != kPublishedLayers) return finish_reduced(r, std::move(m));
    check_published(r, m);
    // Like ds4, run with the exact constants once the file has been checked against them.
    Hparams h = Hparams::published();
    h.context_length = m.h.context_length;
    return h;
}

bool is_published_shape(const Hparams& h) {
    const Hparams p = Hparams::published();
    for (const U32Field& f : kU32Fields) {
        if (h.*f.field != p.*f.field) return false;
    }
    for (const FloatField& f : kFloatFields) {
        if (h.*f.field != p.*f.field) return false;
    }
    return h.compress_ratios == p.compress_ratios && h.swiglu_limit == p.swiglu_limit &&
           h.original_seq_len == p.original_seq_len &&
           h.expert_weights_norm == p.expert_weights_norm;
}

}  // namespace ds4::model
