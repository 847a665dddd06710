#include "runtime/session_payload.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>

#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "ds4/error.h"
#include "gguf/gguf.h"
#include "maker.h"
#include "model/metadata.h"
#include "rng.h"

namespace ds4::runtime {
namespace {

constexpr uint32_t kCtx = 512;
constexpr uint32_t kTokens = 300;  // past two ratio-128 rows and many window wraps (window 16)

// The tiny synthetic q2 model (4 layers: window-only, window-only, ratio 4, ratio 128).
struct TinyModel {
    gguf::File file;
    cpu::WeightSet ws;
    std::unique_ptr<cpu::CpuModel> model;
    std::vector<int32_t> tokens;

    TinyModel() : file(make()) {
        cpu::add_gguf_views(ws, file);
        model = std::make_unique<cpu::CpuModel>(model::read_hparams(file), ws);
        synth::Rng rng(11);
        for (uint32_t i = 0; i < kTokens; ++i)
            tokens.push_back(static_cast<int32_t>(rng.below(model->hparams().n_vocab)));
    }
    static gguf::File make() {
        const std::string path = (std::filesystem::temp_directory_path() /
                                  ("ds4-payload-test-" + std::to_string(::getpid()) + ".gguf"))
                                     .string();
        synth::MakeOptions opt;
        opt.shape = synth::shape_preset("tiny");
        opt.seed = 5;
        opt.threads = 1;
        opt.fast_blocks = true;
        synth::make_model(path, opt);
        gguf::File f = gguf::File::open(path);
        std::filesystem::remove(path);  // the mapping outlives the name
        return f;
    }
    const model::Hparams& hp() const { return model->hparams(); }
};

const TinyModel& tiny() {
    static const TinyModel m;
    return m;
}

// Feeds tokens [from, to) one by one, returning the logits after each.
std::vector<float> decode(const TinyModel& m, cpu::KvState& kv, uint32_t from, uint32_t to) {
    cpu::CpuForward fwd(*m.model);
    const uint32_t V = m.hp().n_vocab;
    std::vector<float> all(uint64_t{to - from} * V);
    const std::vector<uint32_t> row{0};
    for (uint32_t p = from; p < to; ++p)
        fwd.eval(kv, p, {m.tokens.data() + p, 1}, row, {all.data() + uint64_t{p - from} * V, V});
    return all;
}

std::vector<uint8_t> payload_at(const TinyModel& m, uint32_t T, std::vector<float>* tail_logits,
                                uint32_t ctx = kCtx) {
    cpu::KvState kv(m.hp(), ctx);
    const std::vector<float> logits = decode(m, kv, 0, T);
    const uint32_t V = m.hp().n_vocab;
    std::vector<uint8_t> bytes;
    save_payload(m.hp(), kv, {m.tokens.data(), T}, {logits.data() + uint64_t{T - 1} * V, V}, bytes);
    EXPECT_EQ(bytes.size(), payload_bytes(m.hp(), kv));
    if (tail_logits) *tail_logits = decode(m, kv, T, kTokens);
    return bytes;
}

TEST(SessionPayload, RestoredStateContinuesWithBitIdenticalLogits) {
    const TinyModel& m = tiny();
    for (uint32_t T : {1u, 5u, 17u, 127u, 130u, 257u}) {
        std::vector<float> expected;
        const std::vector<uint8_t> bytes = payload_at(m, T, &expected);
        cpu::KvState kv(m.hp(), kCtx);
        const RestoredHistory h = load_payload(m.hp(), bytes, kv);
        ASSERT_EQ(kv.n_tokens(), T);
        EXPECT_EQ(h.tokens, std::vector<int32_t>(m.tokens.begin(), m.tokens.begin() + T));
        const std::vector<float> got = decode(m, kv, T, kTokens);
        ASSERT_EQ(got.size(), expected.size());
        EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0)
            << "T=" << T;
        // save(load(x)) == x
        std::vector<uint8_t> again;
        cpu::KvState kv2(m.hp(), kCtx);
        load_payload(m.hp(), bytes, kv2);
        save_payload(m.hp(), kv2, h.tokens, h.logits, again);
        EXPECT_EQ(again, bytes) << "T=" << T;
    }
}

TEST(SessionPayload, HeaderWordsAreDs4CpuValues) {
    const TinyModel& m = tiny();
    const std::vector<uint8_t> b = payload_at(m, 130, nullptr);
    uint32_t w[13];
    std::memcpy(w, b.data(), sizeof w);
    const uint32_t expected[13] = {0x34565344, 1, kCtx, kCtx, 16,  16, kCtx / 4 + 2,
                                   130,        4, 128,  128,  320, 16};
    for (int i = 0; i < 13; ++i) EXPECT_EQ(w[i], expected[i]) << "word " << i;
    EXPECT_EQ(std::memcmp(b.data(), "DSV4", 4), 0);
}

// formats.md §5.2: 52,184,460 bytes for T = 2048 and 80,373,132 for T = 4096 on the
// published 43-layer shape, with the normal row counts.
TEST(SessionPayload, PublishedShapeSizesMatchTheSpec) {
    const model::Hparams hp = model::Hparams::published();
    for (auto [T, bytes] : {std::pair<uint32_t, uint64_t>{2048, 52184460}, {4096, 80373132}}) {
        cpu::KvState kv(hp, 8192);
        for (uint32_t il = 0; il < hp.n_layer; ++il) {
            if (kv.layer(il).attn) kv.layer(il).attn->n_rows = T / hp.ratio(il);
            if (kv.layer(il).index) kv.layer(il).index->n_rows = T / 4;
        }
        kv.advance(T);
        EXPECT_EQ(payload_bytes(hp, kv), bytes) << "T=" << T;
    }
}

std::string load_error(const std::vector<uint8_t>& bytes, uint32_t ctx = kCtx) {
    cpu::KvState kv(tiny().hp(), ctx);
    try {
        load_payload(tiny().hp(), bytes, kv);
    } catch (const ds4::Error& e) {
        return e.what();
    }
    return "(no error)";
}

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
}

TEST(SessionPayload, LoaderErrorsNameTheProblem) {
    const std::vector<uint8_t> good = payload_at(tiny(), 130, nullptr);
    auto cut = good;
    cut.resize(good.size() - 1);
    EXPECT_TRUE(starts_with(load_error(cut), "truncated session payload")) << load_error(cut);
    cut.resize(20);
    EXPECT_TRUE(starts_with(load_error(cut), "truncated session payload")) << load_error(cut);
    auto longer = good;
    longer.push_back(0);
    EXPECT_EQ(load_error(longer), "KV checkpoint has trailing payload bytes (1)");
    auto magic = good;
    magic[0] = 'X';
    EXPECT_TRUE(starts_with(load_error(magic), "unsupported session payload version"))
        << load_error(magic);
    EXPECT_TRUE(starts_with(load_error(good, 128), "KV checkpoint does not fit current context"))
        << load_error(good, 128);
    // a larger context with another prefill cap (ds4 graph chunk) is refused like ds4 does
    EXPECT_TRUE(starts_with(load_error(good, 4096),
                            "KV checkpoint graph chunk layout does not match current runtime"));
    auto layout = good;
    layout[8 * 4] = 5;  // layers
    EXPECT_TRUE(
        starts_with(load_error(layout), "KV checkpoint was written for a different DS4 layout"));
    auto rows = good;
    const size_t n_comp_at = 52 + 4 * 130 + 4 * 320;
    rows[n_comp_at + 2 * 4] = 7;  // layer 2 (ratio 4) claims 7 compressed rows, has 32
    EXPECT_EQ(load_error(rows),
              "KV checkpoint has an invalid compressed row count: layer 2 has 7, expected 32");
    auto token = good;
    token[52 + 3] = 0x7f;  // token 0 becomes huge
    EXPECT_TRUE(starts_with(load_error(token), "KV checkpoint token 0 has id"))
        << load_error(token);
}

TEST(SessionPayload, FailedLoadLeavesTheStateUntouched) {
    const TinyModel& m = tiny();
    const std::vector<uint8_t> a = payload_at(m, 17, nullptr);
    auto broken = payload_at(m, 130, nullptr);
    broken.resize(broken.size() - 4);
    cpu::KvState kv(m.hp(), kCtx);
    const RestoredHistory h = load_payload(m.hp(), a, kv);
    EXPECT_THROW(load_payload(m.hp(), broken, kv), ds4::Error);
    std::vector<uint8_t> after;
    save_payload(m.hp(), kv, h.tokens, h.logits, after);
    EXPECT_EQ(after, a);
}

}  // namespace
}  // namespace ds4::runtime
