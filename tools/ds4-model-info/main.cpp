// ds4-model-info FILE: a summary of a ds4 GGUF (container, shape, quant mix, tokenizer)
// and a full validation against what the engine will bind: metadata with ds4's rules
// (model/metadata.h), every planned tensor with its type and dims (model/tensor_plan.h),
// the tokenizer's required special tokens and the tid2eid expert ids. Exit status 1 with
// a message naming what is wrong when the file would not load.
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "model/metadata.h"
#include "model/tensor_plan.h"

namespace {

using ds4::cat;
using ds4::model::Hparams;

std::string human_bytes(uint64_t b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(b);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", v, units[u]);
    return buf;
}

// Top-level "label value" lines and indented detail lines, values in one column.
void row(const std::string& label, const std::string& value) {
    std::printf("%-13s%s\n", label.c_str(), value.c_str());
}
void detail(const std::string& label, const std::string& value) {
    std::printf("  %-11s%s\n", label.c_str(), value.c_str());
}

// "0-1" for a run of consecutive layers, "2,4..42" for a longer run with one stride.
std::string layer_set(const std::vector<uint32_t>& layers) {
    std::string out;
    for (size_t i = 0; i < layers.size();) {
        size_t j = i + 1;
        const uint32_t stride = j < layers.size() ? layers[j] - layers[i] : 1;
        while (j < layers.size() && layers[j] - layers[j - 1] == stride) ++j;
        if (!out.empty()) out += ",";
        const size_t n = j - i;
        if (n >= 3 || (n == 2 && stride == 1)) {
            out += stride == 1 ? cat(layers[i], "-", layers[j - 1])
                               : cat(layers[i], ",", layers[i] + stride, "..", layers[j - 1]);
            i = j;
        } else {
            out += cat(layers[i]);
            ++i;
        }
    }
    return out;
}

// "0: 0-1 | 4: 2,4..42 (21) | 128: 3,5..41 (20)"
std::string ratio_schedule(const Hparams& h) {
    std::map<uint32_t, std::vector<uint32_t>> by_ratio;
    for (uint32_t il = 0; il < h.n_layer; ++il) by_ratio[h.ratio(il)].push_back(il);
    std::string out;
    for (const auto& [ratio, layers] : by_ratio) {
        if (!out.empty()) out += " | ";
        out += cat("ratio ", ratio, ": ", layer_set(layers), " (", layers.size(), ")");
    }
    return out;
}

void print_container(const ds4::gguf::File& f) {
    row("file", f.path());
    row("size", cat(human_bytes(f.size()), " (", f.size(), " bytes)"));
    row("GGUF", cat("version ", f.version(), ", alignment ", f.alignment(), ", ",
                    f.metadata().size(), " metadata keys, ", f.tensors().size(), " tensors"));
    const auto arch = f.get_string(ds4::model::key::architecture);
    const auto name = f.get_string(ds4::model::key::name);
    row("model", cat(arch ? *arch : "?", " \"", name ? *name : "", "\""));
}

void print_shape(const Hparams& h) {
    row("shape", ds4::model::is_published_shape(h)
                     ? "published (DeepSeek V4 Flash, 43 layers)"
                     : "reduced (the published model has 43 layers, D 4096)");
    detail("layers", cat(h.n_layer, " (hash-routed: ",
                         h.n_hash_layer ? cat("0-", h.n_hash_layer - 1) : "none", ")"));
    detail("ratios", ratio_schedule(h));
    detail("embedding", cat("D ", h.n_embd, ", vocab ", h.n_vocab));
    detail("attention", cat(h.n_head, " heads x ", h.head_dim, " (", h.rope_dim, " rotary), ",
                            h.n_head_kv, " K=V head, q_lora ", h.q_lora_rank, ", output ",
                            h.o_groups, " groups x ", h.o_lora_rank, ", window ", h.window));
    detail("indexer", cat(h.idx_n_heads, " heads x ", h.idx_head_dim, ", top-k ", h.idx_topk));
    detail("experts", cat(h.n_expert, " routed (", h.n_expert_used, " used, scale ", h.route_scale,
                          h.expert_weights_norm ? ", normalised" : "", ") + ", h.n_expert_shared,
                          " shared, ff ", h.ff_exp, ", clamp ", h.swiglu_limit));
    detail("hyper-conn", cat(h.hc_mult, " streams, ", h.hc_sinkhorn_iters, " Sinkhorn iterations"));
    detail("rope", cat("base ", h.rope_theta, " / compressed ", h.compress_rope_theta, ", YaRN x",
                       h.rope_factor, " over ", h.original_seq_len, " (beta ", h.beta_fast, "/",
                       h.beta_slow, ")"));
    detail("context", h.context_length ? cat(h.context_length, " (informational)") : "not stored");
}

void print_tensors(const ds4::gguf::File& f) {
    std::map<std::string, std::pair<size_t, uint64_t>> by_type;  // count, bytes
    uint64_t total = 0;
    for (const auto& t : f.tensors()) {
        auto& e = by_type[ds4::ggml_type_name(t.type)];
        ++e.first;
        e.second += t.n_bytes;
        total += t.n_bytes;
    }
    row("tensors", cat(f.tensors().size(), ", ", human_bytes(total)));
    for (const auto& [type, e] : by_type)
        detail(type, cat(e.first, " tensors, ", human_bytes(e.second)));
    const auto mix = ds4::model::detect_quant_mix(f);
    const auto* gate = f.find_tensor("blk.0.ffn_gate_exps.weight");
    row("quant",
        cat("mix ", ds4::model::quant_mix_name(mix), ", routed experts ",
            ds4::model::routed_quant_bits(f), "-bit",
            gate ? cat(" (blk.0.ffn_gate_exps ", ds4::ggml_type_name(gate->type), ")") : ""));
}

// ds4 resolves its control tokens by string at load time (interface.md §1.3).
void print_tokenizer(const ds4::gguf::File& f) {
    const auto model = f.get_string("tokenizer.ggml.model");
    const auto pre = f.get_string("tokenizer.ggml.pre");
    if (!f.has("tokenizer.ggml.tokens"))
        ds4::fail(f.path(), ": GGUF tokenizer token table is missing");
    const auto tokens = f.get_string_array("tokenizer.ggml.tokens");
    const size_t merges =
        f.has("tokenizer.ggml.merges") ? f.get_string_array("tokenizer.ggml.merges").size() : 0;
    row("tokenizer", cat(model ? *model : "?", " / ", pre ? *pre : "?", ", ", tokens.size(),
                         " tokens, ", merges, " merges"));
    const char* required[] = {"<｜begin▁of▁sentence｜>",
                              "<｜end▁of▁sentence｜>",
                              "<｜User｜>",
                              "<｜Assistant｜>",
                              "<think>",
                              "</think>",
                              "｜DSML｜"};
    std::string found;
    for (const char* r : required) {
        size_t id = tokens.size();
        for (size_t i = 0; i < tokens.size(); ++i) {
            if (tokens[i] == r) id = i;  // ds4 keeps the last id of a duplicate
        }
        if (id == tokens.size()) ds4::fail(f.path(), ": required tokenizer token is missing: ", r);
        found += cat(found.empty() ? "" : ", ", r, " ", id);
    }
    detail("specials", found);
}

int run(const std::string& path) {
    const ds4::gguf::File f = ds4::gguf::File::open(path);
    const auto name = f.get_string(ds4::model::key::name);
    if (name && name->find("synthetic") != std::string_view::npos) {
        const auto* layers = f.find(ds4::model::key::block_count);
        const bool full = layers && layers->type == ds4::gguf::ValueType::U32 &&
                          f.get_u32(ds4::model::key::block_count) == 43;
        std::printf(
            "This is %s, not DeepSeek's weights (real weights: scripts/download_model.sh "
            "q2-imatrix; text it generates is not meaningful).\n\n",
            full ? "a synthetic random-weight model of the published shape"
                 : "a small synthetic random-weight demo model");
    }
    print_container(f);
    const Hparams h = ds4::model::read_hparams(f);
    print_shape(h);
    print_tensors(f);
    print_tokenizer(f);

    ds4::model::PlanOptions opt;
    opt.mix = ds4::model::detect_quant_mix(f);
    opt.mtp = f.find_tensor("mtp.0.e_proj.weight") != nullptr;  // an MTP block travels along
    const ds4::model::TensorPlan plan(h, opt);
    ds4::model::check_tensors(f, plan);
    ds4::model::check_tid2eid(f, h);
    row("check", cat("OK: metadata, ", plan.size(),
                     " planned tensors (types and dims), tokenizer specials, "
                     "tid2eid ids"));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2 || std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help") {
        std::fprintf(stderr, "usage: ds4-model-info FILE.gguf\n");
        return argc == 2 ? 0 : 2;
    }
    try {
        return run(argv[1]);
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "ds4-model-info: error: %s\n", e.what());
        return 1;
    }
}
