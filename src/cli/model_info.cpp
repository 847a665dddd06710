#include "cli/model_info.h"

#include <cstdio>
#include <iostream>

#include "cli/app.h"
#include "ds4/error.h"

namespace ds4::cli {

namespace {

std::string mib(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
    return buf;
}

std::string gib(uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
    return buf;
}

// "12345 bytes (0.01 MiB)": exact for scripts, readable for people.
std::string bytes_text(uint64_t bytes) { return cat(bytes, " bytes (", mib(bytes), ")"); }

void row(std::string& out, std::string_view label, const std::string& value) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "  %-18.*s", static_cast<int>(label.size()), label.data());
    out += cat(buf, value, "\n");
}

std::string ratios_text(const std::vector<uint32_t>& ratios) {
    std::string s;
    for (size_t i = 0; i < ratios.size(); ++i) s += cat(i ? "," : "", ratios[i]);
    return s;
}

std::string experts_types(const ModelSummary& m) {
    if (m.expert_gate_type.empty() && m.expert_down_type.empty()) return "none";
    return cat("gate ", m.expert_gate_type, ", up ", m.expert_up_type, ", down ", m.expert_down_type);
}

void add_metadata(std::string& out, const ModelSummary& m) {
    out += cat("model ", m.path, "\n");
    row(out, "name", m.name.empty() ? "(none)" : m.name);
    row(out, "architecture", m.architecture);
    row(out, "layers", cat(m.n_layer));
    row(out, "hidden size", cat(m.n_embd));
    row(out, "attention", cat(m.n_head, " heads x ", m.head_dim, ", sliding window ", m.window));
    row(out, "compress ratios", ratios_text(m.compress_ratios));
    row(out, "experts", cat(m.n_expert, " routed, ", m.n_expert_used, " used per token"));
    row(out, "vocabulary", cat(m.n_vocab, " tokens"));
    row(out, "context length",
        m.context_length ? cat(m.context_length, " tokens (model metadata)") : "(not in the file)");
    row(out, "parameters", cat(m.n_params, " (main model)"));
    row(out, "quant mix", m.quant);
    row(out, "routed experts", experts_types(m));
    if (m.synthetic) row(out, "synthetic", "yes: random weights from ds4-make-model, not a real model");
}

void add_tensor_types(std::string& out, const ModelSummary& m) {
    out += "tensors by type\n";
    uint64_t count = 0;
    for (const ModelSummary::TensorTypeGroup& g : m.tensor_types) {
        char buf[48];
        std::snprintf(buf, sizeof buf, "  %-10s%6llu tensors  ", g.type.c_str(),
                      static_cast<unsigned long long>(g.tensors));
        out += cat(buf, bytes_text(g.bytes), "\n");
        count += g.tensors;
    }
    out += cat("  weights   ", count, " tensors, ", bytes_text(m.tensor_bytes), "\n");
    if (m.mtp_tensor_bytes) out += cat("  of which MTP  ", bytes_text(m.mtp_tensor_bytes), "\n");
    out += cat("  file      ", bytes_text(m.file_bytes), "\n");
}

void add_memory(std::string& out, const MemoryEstimate& est) {
    out += cat("memory at --ctx ", est.ctx, "\n  ", est.report());
    out += cat("  total                ", bytes_text(est.total()), " = ", gib(est.total()),
               " (weights + one sequence + scratch)\n");
}

}  // namespace

std::string format_model_info(const ModelSummary& m, const MemoryEstimate& est) {
    std::string out;
    add_metadata(out, m);
    add_tensor_types(out, m);
    add_memory(out, est);
    return out;
}

int run_model_info(const Options& o) {
    Options one_thread = o;
    one_thread.threads = 1;  // nothing is evaluated
    const Engine engine = map_model(one_thread, o.ctx);
    std::cout << format_model_info(engine.model(), engine.memory_estimate(o.ctx)) << std::flush;
    return 0;
}

}  // namespace ds4::cli
