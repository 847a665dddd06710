// Reading the converter's inputs: the official checkpoint (one file or a sharded
// directory), its ModelArgs, and a legacy imatrix.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "convert.h"
#include "ds4/error.h"

namespace ds4::convert {

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) fail(p.string(), ": cannot open");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

nlohmann::json parse_json(std::string_view text, const std::string& where) {
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        fail(where, ": invalid JSON: ", e.what());
    }
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& path) {
    Checkpoint c;
    c.path_ = path;
    std::vector<fs::path> shards;
    if (fs::is_directory(path)) {
        const fs::path dir(path);
        if (!fs::exists(dir / "config.json"))
            fail(path, ": checkpoint directory has no config.json (official ModelArgs keys)");
        c.model_args_ = read_text(dir / "config.json");
        const fs::path index = dir / "model.safetensors.index.json";
        if (!fs::exists(index))
            fail(path, ": checkpoint directory has no model.safetensors.index.json");
        const auto j = parse_json(read_text(index), index.string());
        if (!j.contains("weight_map") || !j["weight_map"].is_object())
            fail(index.string(), ": no weight_map object");
        std::set<std::string> files;
        for (const auto& [name, file] : j["weight_map"].items()) {
            if (!file.is_string())
                fail(index.string(), ": weight_map entry ", name, " is not a file name");
            files.insert(file.get<std::string>());
        }
        for (const std::string& f : files) shards.push_back(dir / f);
    } else {
        if (!fs::exists(path)) fail(path, ": no such file or directory");
        shards.emplace_back(path);
    }
    for (const fs::path& p : shards) {
        c.files_.push_back(std::make_unique<st::File>(st::File::open(p.string())));
        const st::File& f = *c.files_.back();
        for (const st::Tensor& t : f.tensors()) {
            if (!c.index_.emplace(t.name, quant::TensorRef{&f, &t}).second)
                fail(path, ": tensor ", t.name, " appears in more than one shard (", p.string(),
                     ")");
        }
    }
    if (c.model_args_.empty()) {
        const auto& meta = c.files_.front()->metadata();
        const auto it = meta.find("model_args");
        if (it == meta.end())
            fail(path,
                 ": no model_args in the safetensors __metadata__ (a single-file checkpoint "
                 "must carry its ModelArgs; use a directory with config.json otherwise)");
        c.model_args_ = it->second;
    }
    return c;
}

const quant::TensorRef* Checkpoint::find(std::string_view name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &it->second;
}

quant::TensorRef Checkpoint::require(std::string_view name) const {
    const quant::TensorRef* r = find(name);
    if (!r) fail(path_, ": official tensor ", name, " is missing from the checkpoint");
    return *r;
}

std::vector<std::string> Checkpoint::names() const {
    std::vector<std::string> out;
    for (const auto& [name, ref] : index_) out.push_back(name);
    return out;
}

model::Hparams hparams_from_model_args(std::string_view json_text, const std::string& where) {
    const auto j = parse_json(json_text, where + " model_args");
    if (!j.is_object()) fail(where, ": model_args is not a JSON object");
    auto req = [&](const char* key) -> const nlohmann::json& {
        if (!j.contains(key)) fail(where, ": model_args has no key ", key);
        return j.at(key);
    };
    auto u32 = [&](const char* key) {
        const auto& v = req(key);
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > UINT32_MAX)
            fail(where, ": model_args.", key, " must be a non-negative integer, got ", v.dump());
        return v.get<uint32_t>();
    };
    auto f32 = [&](const char* key, float def) {
        if (!j.contains(key)) return def;
        const auto& v = j.at(key);
        if (!v.is_number()) fail(where, ": model_args.", key, " must be a number, got ", v.dump());
        return v.get<float>();
    };
    model::Hparams h;
    h.n_layer = u32("n_layers");
    h.n_embd = u32("dim");
    h.n_vocab = u32("vocab_size");
    h.n_head = u32("n_heads");
    h.n_head_kv = 1;
    h.head_dim = u32("head_dim");
    h.rope_dim = u32("rope_head_dim");
    h.q_lora_rank = u32("q_lora_rank");
    h.o_lora_rank = u32("o_lora_rank");
    h.o_groups = u32("o_groups");
    h.n_expert = u32("n_routed_experts");
    h.n_expert_used = u32("n_activated_experts");
    h.n_expert_shared = u32("n_shared_experts");
    h.ff_exp = u32("moe_inter_dim");
    h.n_hash_layer = u32("n_hash_layers");
    h.window = u32("window_size");
    h.idx_n_heads = u32("index_n_heads");
    h.idx_head_dim = u32("index_head_dim");
    h.idx_topk = u32("index_topk");
    h.hc_mult = u32("hc_mult");
    h.hc_sinkhorn_iters = u32("hc_sinkhorn_iters");
    h.norm_eps = f32("norm_eps", h.norm_eps);
    h.hc_eps = f32("hc_eps", h.hc_eps);
    h.route_scale = f32("route_scale", h.route_scale);
    h.swiglu_limit = f32("swiglu_limit", h.swiglu_limit);
    h.rope_theta = f32("rope_theta", h.rope_theta);
    h.compress_rope_theta = f32("compress_rope_theta", h.compress_rope_theta);
    h.rope_factor = f32("rope_factor", h.rope_factor);
    h.beta_fast = f32("beta_fast", h.beta_fast);
    h.beta_slow = f32("beta_slow", h.beta_slow);
    if (j.contains("original_seq_len"))
        h.original_seq_len = j.at("original_seq_len").get<uint64_t>();
    if (j.contains("max_seq_len")) h.context_length = j.at("max_seq_len").get<uint64_t>();
    if (j.contains("score_func") && j.at("score_func") != "sqrtsoftplus")
        fail(where, ": model_args.score_func is ", j.at("score_func").dump(),
             ", ds4 implements only \"sqrtsoftplus\"");
    const auto& ratios = req("compress_ratios");
    if (!ratios.is_array() || ratios.size() < h.n_layer)
        fail(where, ": model_args.compress_ratios must list at least n_layers (", h.n_layer,
             ") ratios");
    for (uint32_t il = 0; il < h.n_layer; ++il)
        h.compress_ratios.push_back(ratios.at(il).get<uint32_t>());
    try {
        h.validate();
    } catch (const Error& e) {
        fail(where, ": model_args describe an invalid shape: ", e.what());
    }
    return h;
}

// ---- imatrix ----

namespace {

class DatReader {
  public:
    DatReader(std::string path, std::string bytes)
        : path_(std::move(path)), bytes_(std::move(bytes)) {}
    bool at_end() const { return pos_ == bytes_.size(); }
    int32_t i32(const char* what) {
        int32_t v;
        read(&v, sizeof v, what);
        return v;
    }
    void read(void* dst, size_t n, const char* what) {
        if (bytes_.size() - pos_ < n)
            fail(path_, ": imatrix truncated while reading ", what, " at byte ", pos_);
        std::memcpy(dst, bytes_.data() + pos_, n);
        pos_ += n;
    }

  private:
    std::string path_;
    std::string bytes_;
    size_t pos_ = 0;
};

}  // namespace

Imatrix Imatrix::load(const std::string& path) {
    Imatrix m;
    m.path_ = path;
    DatReader r(path, read_text(path));
    const int32_t n = r.i32("the entry count");
    if (n < 0) fail(path, ": imatrix entry count ", n, " is negative");
    for (int32_t e = 0; e < n; ++e) {
        const int32_t len = r.i32("a name length");
        if (len < 1 || len > 4096)
            fail(path, ": imatrix entry ", e, " has name length ", len, " (1..4096)");
        std::string name(static_cast<size_t>(len), '\0');
        r.read(name.data(), name.size(), "a name");
        const int32_t ncall = r.i32("ncall");
        const int32_t nval = r.i32("nval");
        if (nval < 1) fail(path, ": imatrix entry ", name, " has nval ", nval);
        std::vector<float> v(static_cast<size_t>(nval));
        r.read(v.data(), v.size() * sizeof(float), "values");
        for (float& x : v) {
            if (!std::isfinite(x)) fail(path, ": imatrix entry ", name, " has a non-finite value");
            if (ncall > 0) x /= static_cast<float>(ncall);
        }
        m.entries_[name] = std::move(v);
    }
    return m;  // the optional trailer (chunks, dataset) carries nothing the quantizer uses
}

std::span<const float> Imatrix::for_expert(std::string_view gguf_name, std::string_view hf_name,
                                           uint32_t expert, uint64_t ncols,
                                           uint32_t n_expert) const {
    const std::string suffixes[] = {cat(".expert.", expert), cat(".expert_", expert),
                                    std::string()};
    for (const std::string& suffix : suffixes) {
        for (std::string_view base : {gguf_name, hf_name}) {
            const auto it = entries_.find(cat(base, suffix));
            if (it == entries_.end()) continue;
            const std::vector<float>& v = it->second;
            if (v.size() == ncols) return v;
            if (v.size() == ncols * n_expert)
                return std::span<const float>(v).subspan(expert * ncols, ncols);
            fail(path_, ": imatrix entry ", it->first, " has ", v.size(), " values, expected ",
                 ncols, " or ", ncols * n_expert);
        }
    }
    return {};
}

}  // namespace ds4::convert
