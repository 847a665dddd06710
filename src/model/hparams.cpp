// The published DeepSeek V4 Flash shape (spec model.md §1.1/§1.2) and the internal
// consistency rules every shape (published, golden, demo, test) must satisfy before a
// single tensor is planned or bound.
#include "model/hparams.h"

#include "ds4/error.h"

namespace ds4::model {

namespace {

// model.md §1.2: layers 0 and 1 are pure-window layers; from layer 2 on the schedule
// alternates CSA (ratio 4, even layers) and HCA (ratio 128, odd layers).
uint32_t published_ratio(uint32_t il) {
    if (il < 2) return 0;
    return il % 2 == 0 ? 4 : 128;
}

void require(bool ok, const char* field, const std::string& what) {
    if (!ok) fail("invalid model shape: ", field, " ", what);
}

void require_positive(uint32_t v, const char* field) {
    require(v > 0, field, "must be > 0");
}

void require_positive(float v, const char* field) {
    // NaN fails this comparison too, which is what we want.
    require(v > 0.0f, field, cat("must be > 0 (got ", v, ")"));
}

void validate_counts(const Hparams& h) {
    require_positive(h.n_layer, "n_layer (block_count)");
    require_positive(h.n_embd, "n_embd (embedding_length)");
    require_positive(h.n_vocab, "n_vocab (vocab_size)");
    require_positive(h.n_head, "n_head (attention.head_count)");
    require_positive(h.q_lora_rank, "q_lora_rank");
    require_positive(h.o_lora_rank, "o_lora_rank (attention.output_lora_rank)");
    require_positive(h.o_groups, "o_groups (attention.output_group_count)");
    require_positive(h.n_expert, "n_expert (expert_count)");
    require_positive(h.n_expert_used, "n_expert_used (expert_used_count)");
    require_positive(h.ff_exp, "ff_exp (expert_feed_forward_length)");
    require_positive(h.window, "window (attention.sliding_window)");
    require_positive(h.idx_n_heads, "idx_n_heads (attention.indexer.head_count)");
    require_positive(h.idx_topk, "idx_topk (attention.indexer.top_k)");
    require_positive(h.hc_mult, "hc_mult (hyper_connection.count)");
    require_positive(h.hc_sinkhorn_iters,
                     "hc_sinkhorn_iters (hyper_connection.sinkhorn_iterations)");
    // ds4 and the official model have exactly one K=V head and one shared expert; the
    // tensor layout (attn_kv [D, head_dim], *_shexp [D, ff]) has no room for more.
    require(h.n_head_kv == 1, "n_head_kv (attention.head_count_kv)",
            cat("must be 1 (single shared K=V head), got ", h.n_head_kv));
    require(h.n_expert_shared == 1, "n_expert_shared (expert_shared_count)",
            cat("must be 1, got ", h.n_expert_shared));
    // Routing selects n_expert_used distinct experts (top-k, or the tid2eid row of a
    // hash layer); there must be that many to choose from.
    require(h.n_expert_used <= h.n_expert, "n_expert_used (expert_used_count)",
            cat("(", h.n_expert_used, ") must be <= n_expert (", h.n_expert, ")"));
    require(h.n_hash_layer <= h.n_layer, "n_hash_layer (hash_layer_count)",
            cat("(", h.n_hash_layer, ") must be <= n_layer (", h.n_layer, ")"));
    require(h.n_head % h.o_groups == 0, "n_head (attention.head_count)",
            cat("(", h.n_head, ") must be a multiple of o_groups (", h.o_groups, ")"));
}

void validate_head_geometry(const Hparams& h) {
    require(h.rope_dim > 0 && h.rope_dim % 2 == 0, "rope_dim (rope.dimension_count)",
            cat("must be even and > 0 (rotary dims come in pairs), got ", h.rope_dim));
    require(h.head_dim > h.rope_dim, "head_dim (attention.key_length)",
            cat("(", h.head_dim, ") must exceed rope_dim (", h.rope_dim, ")"));
    // The FP8 KV simulation works on 64-wide blocks of the non-rotary dims (model.md §3.3).
    require(h.nope_dim() % 64 == 0, "head_dim (attention.key_length)",
            cat("- rope_dim = ", h.nope_dim(), " must be a multiple of 64 (FP8 KV block)"));
    // The indexer rotates the last rope_dim of each indexer head and runs its FP4
    // simulation in 32-wide blocks after a Hadamard transform (model.md §3.4).
    require(h.idx_head_dim >= h.rope_dim, "idx_head_dim (attention.indexer.key_length)",
            cat("(", h.idx_head_dim, ") must be >= rope_dim (", h.rope_dim, ")"));
    require(h.idx_head_dim % 32 == 0, "idx_head_dim (attention.indexer.key_length)",
            cat("must be a multiple of 32 (FP4 block), got ", h.idx_head_dim));
    require((h.idx_head_dim & (h.idx_head_dim - 1)) == 0,
            "idx_head_dim (attention.indexer.key_length)",
            cat("must be a power of two (Hadamard transform), got ", h.idx_head_dim));
}

void validate_schedule(const Hparams& h) {
    require(h.compress_ratios.size() == h.n_layer, "compress_ratios",
            cat("has ", h.compress_ratios.size(), " entries, expected n_layer = ", h.n_layer));
    for (size_t il = 0; il < h.compress_ratios.size(); ++il) {
        const uint32_t r = h.compress_ratios[il];
        require(r == 0 || r == 4 || r == 128, "compress_ratios",
                cat("[", il, "] = ", r, ", expected 0, 4 or 128"));
    }
}

void validate_scalars(const Hparams& h) {
    require_positive(h.norm_eps, "norm_eps (attention.layer_norm_rms_epsilon)");
    require_positive(h.hc_eps, "hc_eps (hyper_connection.epsilon)");
    require_positive(h.route_scale, "route_scale (expert_weights_scale)");
    // swiglu_limit <= 0 means "no clamp" in the official code; only NaN is invalid.
    require(h.swiglu_limit == h.swiglu_limit, "swiglu_limit (swiglu_clamp_exp)", "is NaN");
    require_positive(h.rope_theta, "rope_theta (rope.freq_base)");
    require_positive(h.compress_rope_theta,
                     "compress_rope_theta (attention.compress_rope_freq_base)");
    require_positive(h.rope_factor, "rope_factor (rope.scaling.factor)");
    require(h.original_seq_len > 0, "original_seq_len (rope.scaling.original_context_length)",
            "must be > 0");
    require(h.beta_fast > h.beta_slow, "beta_fast (rope.scaling.yarn_beta_fast)",
            cat("(", h.beta_fast, ") must exceed beta_slow (", h.beta_slow, ")"));
}

}  // namespace

Hparams Hparams::published() {
    Hparams h;  // the member initialisers are the published values (model.md §1.1)
    h.compress_ratios.resize(h.n_layer);
    for (uint32_t il = 0; il < h.n_layer; ++il) h.compress_ratios[il] = published_ratio(il);
    return h;
}

void Hparams::validate() const {
    validate_counts(*this);
    validate_head_geometry(*this);
    validate_schedule(*this);
    validate_scalars(*this);
}

}  // namespace ds4::model
