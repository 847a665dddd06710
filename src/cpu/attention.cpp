// Attention sublayer (spec model.md §4.5), KV compressors (§5) and the lightning indexer
// (§6), for one layer and a chunk of tokens.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/forward.h"
#include "cpu/matvec.h"
#include "ds4/error.h"

namespace ds4::cpu {

void CpuForward::attention(uint32_t il, KvState& state, uint64_t pos, uint32_t n) {
    const LayerWeights& lw = model_.weights().layers[il];
    hc_pre({&lw.hc_attn_fn, &lw.hc_attn_scale, &lw.hc_attn_base}, n);
    const uint64_t dim = hp_.n_embd;
    for (uint32_t t = 0; t < n; ++t)
        rms_norm(u_.data() + t * dim, lw.attn_norm.data(), dim, hp_.norm_eps, nrm_.data() + t * dim);
    attention_projections(il, n);
    if (lw.ratio == 4) indexer_queries(il, n);

    // The stateful part, token by token in position order (§5.4): append the K=V row,
    // advance the compressors (a row emitted now is visible to this token), then attend.
    LayerKv& kv = state.layer(il);
    const uint64_t hd = hp_.head_dim, cw = 2 * hd, iw = 2 * uint64_t{hp_.idx_head_dim};
    for (uint32_t t = 0; t < n; ++t) {
        const uint64_t p = pos + t;
        std::copy_n(kv_.data() + t * hd, hd, state.raw_row(il, p));
        if (kv.attn)
            compressor_step(*kv.attn, *lw.compressor, ckv_.data() + t * cw, csc_.data() + t * cw, p, false, il);
        if (kv.index)
            compressor_step(*kv.index, *lw.indexer_compressor, ikv_.data() + t * iw, isc_.data() + t * iw, p,
                            true, il);
        attend_token(il, state, p, t);
    }
    output_projection(il, n);
    steering_.apply(il, SteeringSite::attn, y_.data(), n, hp_.n_embd);
    hc_post(n);
}

// q (LoRA, per-head unweighted norm, RoPE), the K=V row (kv_norm, RoPE, FP8) and the
// compressor projections, for every token of the chunk.
void CpuForward::attention_projections(uint32_t il, uint32_t n) {
    const LayerWeights& lw = model_.weights().layers[il];
    const uint64_t dim = hp_.n_embd, hd = hp_.head_dim, ql = hp_.q_lora_rank, rd = hp_.rope_dim;
    const uint64_t nope = hd - rd, qw = uint64_t{hp_.n_head} * hd;
    const int kind = lw.ratio != 0 ? 1 : 0;

    // qr = q_norm(wq_a · n) is kept: it also feeds the indexer (§4.5, [TRAP] 6)
    matmul(lw.q_a, n, nrm_.data(), dim, qr_.data(), ql, pool_);
    for (uint32_t t = 0; t < n; ++t)
        rms_norm(qr_.data() + t * ql, lw.q_a_norm.data(), ql, hp_.norm_eps, qr_.data() + t * ql);
    matmul(lw.q_b, n, qr_.data(), ql, q_.data(), qw, pool_);
    for (uint32_t t = 0; t < n; ++t) {
        const RopeAngles& a = angles_[2 * t + kind];
        for (uint32_t h = 0; h < hp_.n_head; ++h) {
            float* qh = q_.data() + t * qw + h * hd;
            rms_norm_inplace(qh, hd, hp_.norm_eps);
            rope_rotate(qh + nope, a, false);
        }
    }

    matmul(lw.kv, n, nrm_.data(), dim, kv_.data(), hd, pool_);
    for (uint32_t t = 0; t < n; ++t) {
        float* row = kv_.data() + t * hd;
        rms_norm(row, lw.kv_norm.data(), hd, hp_.norm_eps, row);
        rope_rotate(row + nope, angles_[2 * t + kind], false);
        fp8_simulate(row, nope);  // rotary dims stay f32
    }

    if (lw.compressor) {
        matmul(lw.compressor->kv, n, nrm_.data(), dim, ckv_.data(), 2 * hd, pool_);
        matmul(lw.compressor->gate, n, nrm_.data(), dim, csc_.data(), 2 * hd, pool_);
    }
    if (lw.indexer_compressor) {
        const uint64_t iw = 2 * uint64_t{hp_.idx_head_dim};
        matmul(lw.indexer_compressor->kv, n, nrm_.data(), dim, ikv_.data(), iw, pool_);
        matmul(lw.indexer_compressor->gate, n, nrm_.data(), dim, isc_.data(), iw, pool_);
    }
}

// Indexer queries (§6): wq_b · qr, RoPE on the last rope_dim dims of each head, Hadamard,
// FP4; and the per-head weights (weights_proj · n)·(index_head_dim·index_n_heads)^-1/2.
void CpuForward::indexer_queries(uint32_t il, uint32_t n) {
    const LayerWeights& lw = model_.weights().layers[il];
    const uint64_t d = hp_.idx_head_dim, nh = hp_.idx_n_heads, rd = hp_.rope_dim, ql = hp_.q_lora_rank;
    matmul(lw.indexer_q_b, n, qr_.data(), ql, iq_.data(), nh * d, pool_);
    for (uint32_t t = 0; t < n; ++t) {
        for (uint64_t h = 0; h < nh; ++h) {
            float* qh = iq_.data() + (t * nh + h) * d;
            rope_rotate(qh + (d - rd), angles_[2 * t + 1], false);
            hadamard_scaled(qh, d);
            fp4_simulate(qh, d);
        }
    }
    matmul(lw.indexer_proj, n, nrm_.data(), hp_.n_embd, iw_.data(), nh, pool_);
    // official: weights_proj(x) * (head_dim^-0.5 · n_heads^-0.5), a double product
    // applied as one f32 scalar
    const auto scale = static_cast<float>(std::pow(static_cast<double>(d), -0.5) *
                                          std::pow(static_cast<double>(nh), -0.5));
    for (uint64_t i = 0; i < uint64_t{n} * nh; ++i) iw_[i] *= scale;
}

// §5: one token's step of a compressor. Writes the token's projections (score + APE)
// into its frontier slot; after the last token of a window pools the window with a
// per-dimension softmax over the slots, normalises, rotates at the window's first
// position and applies the QAT round trip, and appends the row.
void CpuForward::compressor_step(CompressorState& cs, const CompressorWeights& w, const float* kv,
                                 const float* score, uint64_t p, bool indexer_row, uint32_t il) {
    const uint32_t r = cs.ratio, d = cs.d, width = cs.width();
    const bool overlap = cs.coff == 2;
    const auto in_window = static_cast<uint32_t>(p % r);
    const uint32_t slot = overlap ? r + in_window : in_window;
    const float* ape = w.ape.data() + uint64_t{in_window} * width;
    std::copy_n(kv, width, cs.slot_kv(slot));
    float* sc = cs.slot_score(slot);
    for (uint32_t j = 0; j < width; ++j) sc[j] = score[j] + ape[j];
    if ((p + 1) % r != 0) return;

    // Candidates per column j: ratio 4 pools the previous window's first halves (slots
    // 0..3, column j) with the current window's second halves (slots 4..7, column d + j);
    // other ratios pool their r slots at column j. Softmax and weighted sum in f32, slot
    // order, as the official (kv · score.softmax(dim=slots)).sum(dim=slots).
    float* pooled = pooled_.data();
    const uint32_t n_cand = overlap ? 2 * r : r;
    for (uint32_t j = 0; j < d; ++j) {
        const auto col = [&](uint32_t s) { return overlap && s >= r ? d + j : j; };
        float m = -std::numeric_limits<float>::infinity();
        for (uint32_t s = 0; s < n_cand; ++s) m = std::max(m, cs.slot_score(s)[col(s)]);
        float fsum = 0;
        for (uint32_t s = 0; s < n_cand; ++s) fsum += std::exp(cs.slot_score(s)[col(s)] - m);
        float acc = 0;
        for (uint32_t s = 0; s < n_cand; ++s) {
            const float prob = std::exp(cs.slot_score(s)[col(s)] - m) / fsum;
            acc += cs.slot_kv(s)[col(s)] * prob;
        }
        pooled[j] = acc;
    }
    if (overlap) {  // the current window becomes the previous one
        std::copy_n(cs.slot_kv(r), uint64_t{r} * width, cs.slot_kv(0));
        std::copy_n(cs.slot_score(r), uint64_t{r} * width, cs.slot_score(0));
    }

    if (cs.n_rows >= cs.capacity) fail("cpu forward: compressed cache of layer ", il, " is full");
    float* row = cs.row(cs.n_rows);
    rms_norm(pooled, w.norm.data(), d, hp_.norm_eps, row);
    // [TRAP] §13.3: the row is rotated at the FIRST position of its own window
    row_angles_.compute(model_.rope(il), p + 1 - r);
    const uint32_t rd = hp_.rope_dim;
    rope_rotate(row + (d - rd), row_angles_, false);
    if (indexer_row) {
        hadamard_scaled(row, d);
        fp4_simulate(row, d);
    } else {
        fp8_simulate(row, d - rd);
    }
    ++cs.n_rows;
}

// §6: the compressed rows a ratio-4 query may attend. All rows that exist when there are
// at most index_topk; otherwise the top index_topk by Σ_h w_h·relu(q_h·k_c), exact ties to
// the lower row. Rows come out in index_order_[0..k), ascending.
uint32_t CpuForward::indexer_select(const CompressorState& index, uint32_t t) {
    const uint32_t n_rows = index.n_rows;  // = floor((p+1)/4): exactly the visible rows
    if (n_rows <= hp_.idx_topk) {
        for (uint32_t c = 0; c < n_rows; ++c) index_order_[c] = c;
        return n_rows;
    }
    const uint64_t d = hp_.idx_head_dim, nh = hp_.idx_n_heads;
    const float* q = iq_.data() + uint64_t{t} * nh * d;
    const float* wt = iw_.data() + uint64_t{t} * nh;
    parallel_for(pool_, n_rows, 256, [&](uint64_t b, uint64_t e) {
        for (uint64_t c = b; c < e; ++c) {
            const float* k = index.row(static_cast<uint32_t>(c));
            float s = 0.0f;
            for (uint64_t h = 0; h < nh; ++h) {
                s += std::max(dot_f32(q + h * d, k, d), 0.0f) * wt[h];
            }
            index_scores_[c] = s;
        }
    });
    top_k_lower_index({index_scores_.data(), n_rows}, hp_.idx_topk, {index_order_.data(), n_rows});
    return hp_.idx_topk;
}

// One token's attention over its raw window and visible compressed rows (§4.5, §7):
// a single softmax with the per-head sink in the denominator, K = V, then the inverse
// RoPE at the query position.
void CpuForward::attend_token(uint32_t il, KvState& state, uint64_t p, uint32_t t) {
    const LayerWeights& lw = model_.weights().layers[il];
    const LayerKv& kv = state.layer(il);
    const uint64_t hd = hp_.head_dim, rd = hp_.rope_dim, W = hp_.window;

    uint64_t n_rows = 0;
    for (uint64_t q = p + 1 > W ? p + 1 - W : 0; q <= p; ++q) rows_[n_rows++] = state.raw_row(il, q);
    if (kv.index) {
        const uint32_t k = indexer_select(*kv.index, t);
        for (uint32_t i = 0; i < k; ++i) rows_[n_rows++] = kv.attn->row(index_order_[i]);
    } else if (kv.attn) {
        for (uint32_t c = 0; c < kv.attn->n_rows; ++c) rows_[n_rows++] = kv.attn->row(c);
    }

    const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
    const RopeAngles& angles = angles_[2 * t + (lw.ratio != 0 ? 1 : 0)];
    const uint64_t qw = uint64_t{hp_.n_head} * hd;
    parallel_for(pool_, hp_.n_head, 1, [&](uint64_t hb, uint64_t he) {
        for (uint64_t h = hb; h < he; ++h) {
            const float* qh = q_.data() + t * qw + h * hd;
            float* s = scores_.data() + h * cap_rows_;
            float m = -std::numeric_limits<float>::infinity();
            for (uint64_t i = 0; i < n_rows; ++i) {
                s[i] = dot_f32(qh, rows_[i], hd) * scale;
                m = std::max(m, s[i]);
            }
            // official: the running max excludes the sink, which joins the denominator only
            // o = (Σ_i e_i·row_i) / (Σ_i e_i + e^(sink − m)), f32 in row order
            float* oh = o_.data() + t * qw + h * hd;
            std::fill_n(oh, hd, 0.0f);
            float den = 0;
            for (uint64_t i = 0; i < n_rows; ++i) {
                const float e = std::exp(s[i] - m);
                den += e;
                axpy_f32(e, rows_[i], oh, hd);
            }
            den += std::exp(lw.sinks[h] - m);
            for (uint64_t j = 0; j < hd; ++j) oh[j] /= den;
            rope_rotate(oh + (hd - rd), angles, true);  // [TRAP] §13.4, query position
        }
    });
}

// Grouped low-rank output projection: z_g = wo_a[g] · (heads of group g), y = wo_b · z.
void CpuForward::output_projection(uint32_t il, uint32_t n) {
    const LayerWeights& lw = model_.weights().layers[il];
    const uint64_t hd = hp_.head_dim, G = hp_.o_groups, R = hp_.o_lora_rank;
    const uint64_t group_in = hp_.n_head / G * hd, qw = uint64_t{hp_.n_head} * hd;
    for (uint32_t t = 0; t < n; ++t)
        for (uint64_t g = 0; g < G; ++g)
            matvec_rows(lw.out_a, g * R, R, o_.data() + t * qw + g * group_in, z_.data() + t * G * R + g * R,
                        pool_);
    matmul(lw.out_b, n, z_.data(), G * R, y_.data(), hp_.n_embd, pool_);
}

}  // namespace ds4::cpu
