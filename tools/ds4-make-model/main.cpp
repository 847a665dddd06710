// ds4-make-model: writes a synthetic DeepSeek V4 Flash GGUF (exact ds4 names, shapes,
// types and metadata; seeded random weights). See maker.h.
//
//   ds4-make-model -o demo.gguf --shape demo --quant q2 --seed 1
//   ds4-make-model -o full.gguf --shape published --quant q2        (81 GB, fast blocks)
//   ds4-make-model -o l4.gguf --shape published --layers 4 --no-fast-random-blocks
#include <CLI/CLI.hpp>

#include <cstdio>
#include <optional>
#include <sstream>
#include <string>

#include "ds4/error.h"
#include "maker.h"
#include "vocab.h"
#include "model/tensor_plan.h"

namespace {

using ds4::model::Hparams;

// Command-line overrides of single shape fields; unset ones keep the preset's value.
struct ShapeOverrides {
    std::optional<uint32_t> layers, embd, vocab, heads, head_dim, rope_dim, q_lora, o_lora,
        o_groups, experts, experts_used, ff, hash_layers, window, idx_heads, idx_head_dim, idx_topk,
        hc, sinkhorn_iters;
    std::optional<uint64_t> ctx, original_ctx;
    std::optional<float> rope_theta, compress_rope_theta, rope_factor, swiglu_limit, route_scale;
    std::string ratios;

    void add_to(CLI::App& app) {
        const char* g = "Shape overrides";
        app.add_option("--layers", layers,
                       "n_layer (ratios follow the published rule unless --ratios)")
            ->group(g);
        app.add_option("--embd", embd, "n_embd")->group(g);
        app.add_option("--vocab", vocab, "n_vocab")->group(g);
        app.add_option("--heads", heads, "n_head")->group(g);
        app.add_option("--head-dim", head_dim, "head_dim (K = V width)")->group(g);
        app.add_option("--rope-dim", rope_dim, "rotary dims per head")->group(g);
        app.add_option("--q-lora", q_lora, "q LoRA rank")->group(g);
        app.add_option("--o-lora", o_lora, "output LoRA rank")->group(g);
        app.add_option("--o-groups", o_groups, "output groups")->group(g);
        app.add_option("--experts", experts, "routed experts")->group(g);
        app.add_option("--experts-used", experts_used, "experts per token")->group(g);
        app.add_option("--ff", ff, "expert hidden width")->group(g);
        app.add_option("--hash-layers", hash_layers, "hash-routed layers")->group(g);
        app.add_option("--window", window, "sliding window")->group(g);
        app.add_option("--idx-heads", idx_heads, "indexer heads")->group(g);
        app.add_option("--idx-head-dim", idx_head_dim, "indexer head dim")->group(g);
        app.add_option("--idx-topk", idx_topk, "indexer top-k")->group(g);
        app.add_option("--hc", hc, "hyper-connection streams")->group(g);
        app.add_option("--sinkhorn-iters", sinkhorn_iters, "Sinkhorn iterations")->group(g);
        app.add_option("--ratios", ratios,
                       "compress ratios, comma separated (0, 4 or 128 per layer)")
            ->group(g);
        app.add_option("--ctx", ctx, "deepseek4.context_length (informational)")->group(g);
        app.add_option("--original-ctx", original_ctx, "YaRN original context length")->group(g);
        app.add_option("--rope-theta", rope_theta, "rope base of ratio-0 layers")->group(g);
        app.add_option("--compress-rope-theta", compress_rope_theta,
                       "rope base of compressed layers")
            ->group(g);
        app.add_option("--rope-factor", rope_factor, "YaRN factor")->group(g);
        app.add_option("--swiglu-limit", swiglu_limit, "SwiGLU clamp")->group(g);
        app.add_option("--route-scale", route_scale, "routed weight scale")->group(g);
    }

    void apply(Hparams& h) const {
        auto set = [](auto& field, const auto& v) {
            if (v) field = *v;
        };
        set(h.n_embd, embd);
        set(h.n_vocab, vocab);
        set(h.n_head, heads);
        set(h.head_dim, head_dim);
        set(h.rope_dim, rope_dim);
        set(h.q_lora_rank, q_lora);
        set(h.o_lora_rank, o_lora);
        set(h.o_groups, o_groups);
        set(h.n_expert, experts);
        set(h.n_expert_used, experts_used);
        set(h.ff_exp, ff);
        set(h.window, window);
        set(h.idx_n_heads, idx_heads);
        set(h.idx_head_dim, idx_head_dim);
        set(h.idx_topk, idx_topk);
        set(h.hc_mult, hc);
        set(h.hc_sinkhorn_iters, sinkhorn_iters);
        set(h.context_length, ctx);
        set(h.original_seq_len, original_ctx);
        set(h.rope_theta, rope_theta);
        set(h.compress_rope_theta, compress_rope_theta);
        set(h.rope_factor, rope_factor);
        set(h.swiglu_limit, swiglu_limit);
        set(h.route_scale, route_scale);
        if (layers) {
            h.n_layer = *layers;
            h.compress_ratios = ds4::synth::default_ratios(h.n_layer);
            if (!hash_layers) h.n_hash_layer = std::min(h.n_hash_layer, h.n_layer);
        }
        set(h.n_hash_layer, hash_layers);
        if (!ratios.empty()) h.compress_ratios = parse_ratios(ratios);
    }

    static std::vector<uint32_t> parse_ratios(const std::string& s) {
        std::vector<uint32_t> out;
        std::stringstream ss(s);
        for (std::string item; std::getline(ss, item, ',');) {
            try {
                out.push_back(static_cast<uint32_t>(std::stoul(item)));
            } catch (const std::exception&) {
                ds4::fail("--ratios: '", item, "' is not a number");
            }
        }
        return out;
    }
};

int run(int argc, char** argv) {
    CLI::App app{
        "Writes a synthetic DeepSeek V4 Flash GGUF: ds4's exact tensor names, shapes, types and "
        "metadata, filled with seeded random weights."};
    std::string out, shape = "published", quant = "q2", name;
    uint64_t seed = 1;
    unsigned threads = 0;
    bool fast = false, no_fast = false, no_router_bias = false, mtp = false, quiet = false,
         dry_run = false;
    ShapeOverrides over;
    app.add_option("-o,--output", out, "output GGUF path")->required();
    app.add_option("--shape", shape, "published | demo | tiny")->capture_default_str();
    app.add_option("--quant", quant, "q2 | q4 | f16 | f32")->capture_default_str();
    app.add_option("--seed", seed, "random seed")->capture_default_str();
    app.add_option("--threads", threads, "worker threads (0: all)")->capture_default_str();
    app.add_option("--name", name, "general.name");
    std::string vocab_gguf;
    app.add_option("--vocab-gguf", vocab_gguf,
                   "copy the tokenizer of this GGUF (e.g. ds4-v4-tokenizer.gguf) and set n_vocab "
                   "to its token count");
    app.add_flag(
        "--fast-random-blocks", fast,
        "emit random valid quant blocks instead of quantizing (default above 1e10 weights)");
    app.add_flag("--no-fast-random-blocks", no_fast,
                 "always quantize with the reference quantizers");
    app.add_flag("--no-router-bias", no_router_bias, "omit exp_probs_b.bias (optional in ds4)");
    app.add_flag("--mtp", mtp, "also write the mtp.0.* block");
    bool mtp_copy_head = false;
    app.add_flag("--mtp-copy-head", mtp_copy_head,
                 "forced-acceptance speculative test model (needs --mtp): blocks add nothing, "
                 "the MTP block drafts exactly the main model's next greedy token");
    app.add_flag("--dry-run", dry_run, "print the plan size and exit");
    app.add_flag("-q,--quiet", quiet, "no progress or summary");
    over.add_to(app);
    CLI11_PARSE(app, argc, argv);
    if (fast && no_fast)
        ds4::fail("--fast-random-blocks and --no-fast-random-blocks exclude each other");

    ds4::synth::MakeOptions opt;
    opt.shape = ds4::synth::shape_preset(shape);
    over.apply(opt.shape);
    opt.plan.mix = ds4::model::parse_quant_mix(quant);
    opt.plan.router_bias = !no_router_bias;
    opt.plan.mtp = mtp;
    opt.mtp_copy_head = mtp_copy_head;
    opt.seed = seed;
    opt.threads = threads;
    opt.name = name;
    if (!vocab_gguf.empty()) {
        if (over.vocab) ds4::fail("--vocab and --vocab-gguf exclude each other");
        opt.vocab_gguf = vocab_gguf;
        opt.shape.n_vocab = static_cast<uint32_t>(ds4::synth::read_vocab_gguf(vocab_gguf).tokens.size());
    }
    opt.progress = !quiet;

    const ds4::model::TensorPlan plan(opt.shape, opt.plan);
    opt.fast_blocks = fast || (!no_fast && ds4::synth::wants_fast_blocks(plan));
    if (!quiet || dry_run)
        std::fprintf(stderr, "ds4-make-model: %s, %zu tensors, %.3f GiB payload, %.3fB weights%s\n",
                     out.c_str(), plan.size(), plan.total_bytes() / 1073741824.0,
                     plan.total_elements() / 1e9, opt.fast_blocks ? ", fast random blocks" : "");
    if (dry_run) return 0;

    const ds4::synth::MakeResult r = ds4::synth::make_model(out, opt);
    if (!quiet)
        std::fprintf(stderr,
                     "ds4-make-model: wrote %s: %zu tensors, %.1f MiB in %.2f s (%.1f MB/s)\n",
                     out.c_str(), r.n_tensors, r.file_bytes / 1048576.0, r.seconds,
                     r.file_bytes / 1e6 / r.seconds);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ds4-make-model: error: %s\n", e.what());
        return 1;
    }
}
