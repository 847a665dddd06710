#include "runtime/session_payload.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "ds4/error.h"

namespace ds4::runtime {
namespace {

constexpr uint32_t kMagic = 0x34565344;  // "DSV4"
constexpr uint32_t kHeaderWords = 13;

// Appends little-endian values (the host is little-endian: x86-64 and aarch64 only).
class Writer {
  public:
    explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
    void u32(uint32_t v) { bytes(&v, 4); }
    void u32s(std::span<const int32_t> v) { bytes(v.data(), v.size_bytes()); }
    void f32s(const float* p, uint64_t n) { bytes(p, n * sizeof(float)); }

  private:
    void bytes(const void* p, uint64_t n) {
        const auto* b = static_cast<const uint8_t*>(p);
        out_.insert(out_.end(), b, b + n);
    }
    std::vector<uint8_t>& out_;
};

// Reads within the payload's byte budget; any overrun is "truncated session payload".
class Reader {
  public:
    explicit Reader(std::span<const uint8_t> b) : b_(b) {}
    uint32_t u32() {
        uint32_t v;
        std::memcpy(&v, take(4), 4);
        return v;
    }
    const uint8_t* take(uint64_t n) {
        if (b_.size() - off_ < n)
            fail("truncated session payload: needs ", off_ + n, " bytes, has ", b_.size());
        const uint8_t* p = b_.data() + off_;
        off_ += n;
        return p;
    }
    void f32s(float* dst, uint64_t n) {
        std::memcpy(dst, take(n * sizeof(float)), n * sizeof(float));
    }
    uint64_t left() const { return b_.size() - off_; }

  private:
    std::span<const uint8_t> b_;
    uint64_t off_ = 0;
};

uint32_t raw_rows(const PayloadLayout& l, uint64_t T) {
    return static_cast<uint32_t>(std::min<uint64_t>(l.raw_cap, T));
}

uint64_t compressor_bytes(const cpu::CompressorState& c, uint32_t n_rows) {
    return 4 * (uint64_t{n_rows} * c.d + 2 * uint64_t{c.slots()} * c.width());
}

}  // namespace

PayloadLayout payload_layout(const model::Hparams& hp, uint32_t ctx) {
    PayloadLayout l;
    l.ctx = ctx;
    l.prefill_cap = std::min<uint32_t>(ctx, 2048);
    l.raw_window = std::max<uint32_t>(1, std::min(hp.window, ctx));
    l.raw_cap = l.raw_window;
    l.comp_cap = ctx / 4 + 2;
    l.n_layer = hp.n_layer;
    l.head_dim = hp.head_dim;
    l.idx_head_dim = hp.idx_head_dim;
    l.vocab = hp.n_vocab;
    return l;
}

uint64_t payload_bytes(const model::Hparams& hp, const cpu::KvState& kv) {
    const PayloadLayout l = payload_layout(hp, static_cast<uint32_t>(kv.ctx()));
    const uint64_t T = kv.n_tokens();
    uint64_t n = 4 * (kHeaderWords + T + uint64_t{l.vocab} + 2 * uint64_t{l.n_layer});
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const cpu::LayerKv& lk = kv.layer(il);
        n += 4 * uint64_t{raw_rows(l, T)} * l.head_dim;
        if (lk.attn) n += compressor_bytes(*lk.attn, lk.attn->n_rows);
        if (lk.index) n += compressor_bytes(*lk.index, lk.index->n_rows);
    }
    return n;
}

void save_payload(const model::Hparams& hp, const cpu::KvState& kv, std::span<const int32_t> tokens,
                  std::span<const float> logits, std::vector<uint8_t>& out) {
    const uint64_t T = kv.n_tokens();
    if (tokens.size() != T)
        fail("session payload: history has ", tokens.size(), " tokens, KV state ", T);
    if (logits.size() != hp.n_vocab)
        fail("session payload: ", logits.size(), " logits, vocab is ", hp.n_vocab);
    if (kv.ctx() > UINT32_MAX)
        fail("session payload: context ", kv.ctx(), " does not fit the u32 header");
    const PayloadLayout l = payload_layout(hp, static_cast<uint32_t>(kv.ctx()));
    const uint32_t R = raw_rows(l, T);
    out.clear();
    out.reserve(payload_bytes(hp, kv));
    Writer w(out);
    for (uint32_t v : {kMagic, 1u, l.ctx, l.prefill_cap, l.raw_cap, l.raw_window, l.comp_cap,
                       static_cast<uint32_t>(T), l.n_layer, l.head_dim, l.idx_head_dim, l.vocab, R})
        w.u32(v);
    w.u32s(tokens);
    w.f32s(logits.data(), logits.size());
    for (uint32_t il = 0; il < hp.n_layer; ++il)
        w.u32(kv.layer(il).attn ? kv.layer(il).attn->n_rows : 0);
    for (uint32_t il = 0; il < hp.n_layer; ++il)
        w.u32(kv.layer(il).index ? kv.layer(il).index->n_rows : 0);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        // raw rows in logical order, oldest first, whatever ring slot they occupy
        for (uint64_t p = T - R; p < T; ++p) w.f32s(kv.raw_row(il, p), l.head_dim);
        for (const auto* c : {&kv.layer(il).attn, &kv.layer(il).index}) {
            if (!*c) continue;
            const cpu::CompressorState& cs = **c;
            w.f32s(cs.rows.data(), uint64_t{cs.n_rows} * cs.d);
            w.f32s(cs.state_kv.data(), cs.state_kv.size());
            w.f32s(cs.state_score.data(), cs.state_score.size());
        }
    }
}

namespace {

struct SavedHeader {
    uint32_t w[kHeaderWords];
    uint32_t ctx() const { return w[2]; }
    uint32_t T() const { return w[7]; }
    uint32_t R() const { return w[12]; }
};

// §5.3 checks 2-7, in ds4's order and with its messages (plus the numbers involved).
void check_header(const SavedHeader& h, const PayloadLayout& cur) {
    if (h.w[0] != kMagic || h.w[1] != 1)
        fail("unsupported session payload version (magic 0x", std::hex, h.w[0], ", version ",
             std::dec, h.w[1], ")");
    if (h.ctx() > cur.ctx || h.T() >= cur.ctx)
        fail("KV checkpoint does not fit current context (checkpoint ctx ", h.ctx(), ", ", h.T(),
             " tokens; current ctx ", cur.ctx, ")");
    if (h.w[8] != cur.n_layer || h.w[9] != cur.head_dim || h.w[10] != cur.idx_head_dim ||
        h.w[11] != cur.vocab)
        fail("KV checkpoint was written for a different DS4 layout (layers/row/indexer/vocab ",
             h.w[8], "/", h.w[9], "/", h.w[10], "/", h.w[11], ", model has ", cur.n_layer, "/",
             cur.head_dim, "/", cur.idx_head_dim, "/", cur.vocab, ")");
    if (h.w[3] != cur.prefill_cap || h.w[5] != cur.raw_window)
        fail("KV checkpoint graph chunk layout does not match current runtime (prefill cap ",
             h.w[3], ", window ", h.w[5], "; current ", cur.prefill_cap, ", ", cur.raw_window, ")");
    const uint32_t raw_cap = h.w[4];
    if (raw_cap == 0 || h.R() != std::min(h.T(), h.w[5]) || h.R() > raw_cap || h.R() > cur.raw_cap)
        fail("KV checkpoint raw ring layout does not match current context (raw cap ", raw_cap,
             ", ", h.R(), " raw rows for ", h.T(), " tokens)");
    if (h.w[6] > cur.comp_cap)
        fail("KV checkpoint compressed cache is larger than current context (", h.w[6], " rows > ",
             cur.comp_cap, ")");
}

// Row counts must fit both ds4's bound and this state's storage, and match the token
// count: the evaluator derives row visibility from the position alone.
void check_rows(const char* what, uint32_t il, uint32_t n,
                const std::optional<cpu::CompressorState>& c, const SavedHeader& h) {
    const uint32_t expected = c ? h.T() / c->ratio : 0;
    if (n > h.w[6] || (c && n > c->capacity) || n != expected)
        fail("KV checkpoint has an invalid ", what, " row count: layer ", il, " has ", n,
             ", expected ", expected);
}

}  // namespace

RestoredHistory load_payload(const model::Hparams& hp, std::span<const uint8_t> bytes,
                             cpu::KvState& kv) {
    if (kv.ctx() > UINT32_MAX)
        fail("session payload: context ", kv.ctx(), " does not fit the u32 header");
    const PayloadLayout cur = payload_layout(hp, static_cast<uint32_t>(kv.ctx()));
    Reader r(bytes);
    SavedHeader h;
    for (uint32_t& w : h.w) w = r.u32();
    check_header(h, cur);
    const uint32_t T = h.T(), R = h.R();
    RestoredHistory out;
    out.tokens.resize(T);
    std::memcpy(out.tokens.data(), r.take(uint64_t{T} * 4), uint64_t{T} * 4);
    for (uint32_t i = 0; i < T; ++i)
        if (out.tokens[i] < 0 || static_cast<uint32_t>(out.tokens[i]) >= hp.n_vocab)
            fail("KV checkpoint token ", i, " has id ", out.tokens[i],
                 ", outside the vocabulary of ", hp.n_vocab);
    out.logits.resize(hp.n_vocab);
    r.f32s(out.logits.data(), hp.n_vocab);
    std::vector<uint32_t> n_comp(hp.n_layer), n_index(hp.n_layer);
    for (uint32_t& n : n_comp) n = r.u32();
    for (uint32_t& n : n_index) n = r.u32();
    uint64_t body = 0;
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const cpu::LayerKv& lk = kv.layer(il);
        check_rows("compressed", il, n_comp[il], lk.attn, h);
        check_rows("indexer", il, n_index[il], lk.index, h);
        body += 4 * uint64_t{R} * cur.head_dim;
        if (lk.attn) body += compressor_bytes(*lk.attn, n_comp[il]);
        if (lk.index) body += compressor_bytes(*lk.index, n_index[il]);
    }
    if (r.left() < body)
        fail("truncated session payload: the layer sections need ", body, " bytes, ", r.left(),
             " left");
    if (r.left() > body) fail("KV checkpoint has trailing payload bytes (", r.left() - body, ")");

    // Everything is validated: from here on nothing can fail.
    kv.reset();
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        for (uint64_t p = T - R; p < T; ++p) r.f32s(kv.raw_row(il, p), cur.head_dim);
        cpu::LayerKv& lk = kv.layer(il);
        const uint32_t counts[2] = {n_comp[il], n_index[il]};
        std::optional<cpu::CompressorState>* comps[2] = {&lk.attn, &lk.index};
        for (int k = 0; k < 2; ++k) {
            if (!*comps[k]) continue;
            cpu::CompressorState& cs = **comps[k];
            cs.n_rows = counts[k];
            r.f32s(cs.rows.data(), uint64_t{cs.n_rows} * cs.d);
            r.f32s(cs.state_kv.data(), cs.state_kv.size());
            r.f32s(cs.state_score.data(), cs.state_score.size());
        }
    }
    kv.advance(T);
    return out;
}

}  // namespace ds4::runtime
