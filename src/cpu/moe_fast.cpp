#include "cpu/moe_fast.h"

#include <algorithm>
#include <vector>

#include "cpu/numerics.h"
#include "cpu/quant_matvec.h"
#include "ds4/error.h"

namespace ds4::cpu {

namespace {

using quant::BlockQ8K;

// One (token, expert) use; pairs are kept sorted by expert, then token.
struct Pair {
    uint32_t expert;
    uint32_t tok;
    float weight;
};

// The experts used by a chunk: pairs[begin, end) share `expert`.
struct Group {
    uint32_t expert;
    uint32_t begin, end;
};

struct Scratch {
    std::vector<BlockQ8K> xq;    // n_tok × dim/256
    std::vector<Pair> pairs;     // ≤ n_tok × n_used
    std::vector<Group> groups;
    std::vector<float> mid;      // pairs × ff
    std::vector<BlockQ8K> midq;  // pairs × ff/256

    void reserve(const RoutedExpertsJob& j) {
        const uint64_t np = uint64_t{j.n_tok} * j.n_used;
        grow(xq, j.n_tok * (j.dim / quant::QK_K));
        pairs.reserve(np);
        groups.reserve(np);
        grow(mid, np * j.ff);
        grow(midq, np * (j.ff / quant::QK_K));
    }
    template <typename T>
    static void grow(std::vector<T>& v, uint64_t n) {
        if (v.size() < n) v.resize(n);
    }
};

Scratch& scratch() {
    thread_local Scratch s;
    return s;
}

// Same clamp as the exact path (moe.cpp): gate ≤ L, up ∈ [−L, L] when L > 0.
float clamped_swiglu(float g, float u, float limit) {
    if (limit > 0) {
        u = std::clamp(u, -limit, limit);
        g = std::min(g, limit);
    }
    return silu(g) * u;
}

// (expert, token) pairs sorted by expert then token; an expert listed twice for one
// token counts once with its first weight (the exact path's rule).
void collect_pairs(const RoutedExpertsJob& j, Scratch& s) {
    s.pairs.clear();
    for (uint32_t t = 0; t < j.n_tok; ++t)
        for (uint32_t k = 0; k < j.n_used; ++k) {
            const uint32_t e = j.sel[uint64_t{t} * j.n_used + k];
            bool seen = false;
            for (uint32_t k2 = 0; k2 < k; ++k2) seen = seen || j.sel[uint64_t{t} * j.n_used + k2] == e;
            if (!seen) s.pairs.push_back({e, t, j.sel_w[uint64_t{t} * j.n_used + k]});
        }
    std::sort(s.pairs.begin(), s.pairs.end(), [](const Pair& a, const Pair& b) {
        return a.expert < b.expert || (a.expert == b.expert && a.tok < b.tok);
    });
    s.groups.clear();
    for (uint32_t i = 0; i < s.pairs.size(); ++i)
        if (s.groups.empty() || s.groups.back().expert != s.pairs[i].expert)
            s.groups.push_back({s.pairs[i].expert, i, i + 1});
        else
            s.groups.back().end = i + 1;
}

// mid[p][r] = w_p · swiglu(gate_e[r]·x_p, up_e[r]·x_p) for every pair; items are
// (group, hidden row), so each gate/up row is read once for all tokens of its expert.
void gate_up(const RoutedExpertsJob& j, Scratch& s, ThreadPool* pool) {
    const uint64_t ff = j.ff, xblocks = j.dim / quant::QK_K;
    parallel_for(pool, s.groups.size() * ff, 32, [&](uint64_t b, uint64_t e) {
        for (uint64_t i = b; i < e; ++i) {
            const Group& g = s.groups[i / ff];
            const uint64_t r = i % ff;
            const uint64_t row = uint64_t{g.expert} * ff + r;  // row of the 3-D tensor
            for (uint32_t p = g.begin; p < g.end; ++p) {
                const BlockQ8K* xq = s.xq.data() + s.pairs[p].tok * xblocks;
                const float gv = dot_row_q8K(j.w->gate, row, xq);
                const float uv = dot_row_q8K(j.w->up, row, xq);
                s.mid[p * ff + r] = s.pairs[p].weight * clamped_swiglu(gv, uv, j.swiglu_limit);
            }
        }
    });
}

// out[t][d] = Σ over t's experts in ascending id of down_e[d]·midq[p].
void down(const RoutedExpertsJob& j, Scratch& s, ThreadPool* pool) {
    const uint64_t dim = j.dim, mblocks = j.ff / quant::QK_K;
    parallel_for(pool, dim, 32, [&](uint64_t b, uint64_t e) {
        for (uint32_t t = 0; t < j.n_tok; ++t) std::fill(j.out + t * dim + b, j.out + t * dim + e, 0.0f);
        for (const Group& g : s.groups)
            for (uint64_t d = b; d < e; ++d) {
                const uint64_t row = uint64_t{g.expert} * dim + d;
                for (uint32_t p = g.begin; p < g.end; ++p)
                    j.out[s.pairs[p].tok * dim + d] += dot_row_q8K(j.w->down, row, s.midq.data() + p * mblocks);
            }
    });
}

}  // namespace

bool fast_routed_experts_apply(const ExpertWeights& w) {
    return is_q8K_weight(w.gate.type) && is_q8K_weight(w.up.type) && is_q8K_weight(w.down.type);
}

void fast_routed_experts(const RoutedExpertsJob& j, ThreadPool* pool) {
    if (j.dim % quant::QK_K != 0 || j.ff % quant::QK_K != 0)
        fail("cpu fast experts: dim ", j.dim, " and ff ", j.ff, " must be multiples of ", quant::QK_K);
    Scratch& s = scratch();
    s.reserve(j);
    const uint64_t xblocks = j.dim / quant::QK_K, mblocks = j.ff / quant::QK_K;
    for (uint32_t t = 0; t < j.n_tok; ++t) quantize_q8K(j.x + t * j.dim, s.xq.data() + t * xblocks, j.dim);
    collect_pairs(j, s);
    gate_up(j, s, pool);
    parallel_for(pool, s.pairs.size(), 1, [&](uint64_t b, uint64_t e) {
        for (uint64_t p = b; p < e; ++p) quantize_q8K(s.mid.data() + p * j.ff, s.midq.data() + p * mblocks, j.ff);
    });
    down(j, s, pool);
}

}  // namespace ds4::cpu
