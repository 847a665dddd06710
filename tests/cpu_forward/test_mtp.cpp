// The MTP block (cpu/mtp.h) against golden.mtp_logits_decode (tests/data/golden/README.md,
// "MTP block"): the official MTPBlock run teacher-forced, one call per position i, on the
// main model's final HC state at position i (mode (a)) and the embedding of token i + 1;
// row i predicts token i + 2. Tolerances: the README's "MTP vs mtp_logits_decode" row.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <map>
#include <numeric>

#include "cpu/mtp.h"
#include "ds4/error.h"
#include "golden_compare.h"
#include "golden_runs.h"
#include "model/tensor_plan.h"

namespace ds4::cpu::test {
namespace {

// The main model's final HC state after each token, decoding one token per call (mode (a)).
std::vector<float> final_hc_states(const LoadedGolden& lg) {
    const Golden& g = *lg.golden;
    const uint64_t hc = g.hp.hc_dim();
    KvState state(g.hp, g.T);
    CpuForward fwd(*lg.model);
    std::vector<float> out(g.T * hc);
    for (uint32_t t = 0; t < g.T; ++t) {
        fwd.eval(state, t, {g.tokens.data() + t, 1}, {}, {});
        const auto x = fwd.final_hc(0);
        std::copy(x.begin(), x.end(), out.begin() + t * hc);
    }
    return out;
}

const std::vector<float>& cached_hc_states(const std::string& name) {
    static std::map<std::string, std::vector<float>> cache;
    auto it = cache.find(name);
    if (it == cache.end()) it = cache.emplace(name, final_hc_states(loaded_golden(name))).first;
    return it->second;
}

// MTP logits for positions 0..T−2, in chunks of `chunk` slots.
std::vector<float> run_mtp(const Golden& g, const MtpModel& mtp, const std::vector<float>& hc,
                           uint32_t chunk) {
    const uint32_t V = g.hp.n_vocab, n_pos = g.T - 1;
    const uint64_t hcd = g.hp.hc_dim();
    KvState state = mtp.make_state(n_pos);
    MtpForward fwd(mtp);
    std::vector<float> logits(uint64_t{n_pos} * V);
    std::vector<uint32_t> rows;
    for (uint32_t i = 0; i < n_pos; i += chunk) {
        const uint32_t n = std::min(chunk, n_pos - i);
        rows.resize(n);
        std::iota(rows.begin(), rows.end(), 0u);
        fwd.eval(state, i, {g.tokens.data() + i + 1, n}, {hc.data() + i * hcd, n * hcd}, rows,
                 {logits.data() + uint64_t{i} * V, uint64_t{n} * V});
    }
    return logits;
}

class GoldenMtp : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenMtp, TeacherForcedDraftsMatchReference) {
    const LoadedGolden& lg = loaded_golden(GetParam());
    const Golden& g = *lg.golden;
    ASSERT_EQ(g.mtp.T, g.T - 1) << "golden file has no golden.mtp_logits_decode";
    const MtpModel mtp(g.hp, g.weights);
    const auto logits = run_mtp(g, mtp, cached_hc_states(GetParam()), 1);
    const LogitStats s = compare_logits(g.mtp, logits, 0, g.T - 1);
    const std::string line = describe(GetParam() + " MTP teacher-forced", s);
    std::cout << "[golden] " << line << "\n";
    RecordProperty("mtp", line);
    EXPECT_LE(s.median, 1e-4);
    EXPECT_LE(s.p99, 1e-3);
    EXPECT_LE(s.max, 5e-2) << "worst position " << s.worst_position;
    EXPECT_EQ(s.argmax_mismatch, 0u) << "argmax differs where the reference margin > 1e-2";
    EXPECT_GT(s.argmax_checked, (g.T - 1) / 2);
}

// Several slots per call (the official block's S > 1 form, used to fill the window
// after a prefill) give the same logits as one slot per call, bit for bit.
TEST_P(GoldenMtp, ChunkedSlotsEqualOneByOne) {
    const LoadedGolden& lg = loaded_golden(GetParam());
    const Golden& g = *lg.golden;
    const MtpModel mtp(g.hp, g.weights);
    const auto& hc = cached_hc_states(GetParam());
    const auto one = run_mtp(g, mtp, hc, 1);
    const auto chunked = run_mtp(g, mtp, hc, 37);
    ASSERT_EQ(one.size(), chunked.size());
    EXPECT_EQ(0, std::memcmp(one.data(), chunked.data(), one.size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(Goldens, GoldenMtp, ::testing::Values("tiny_s1", "tiny_s2", "small_s1"),
                         [](const auto& p) { return p.param; });

// A WeightSet with the tiny golden's views, minus `skip`, plus `extra`.
WeightSet views_of(const Golden& g, const std::string& skip, const std::string& replace_name = {},
                   const TensorView* replacement = nullptr) {
    WeightSet ws;
    const model::TensorPlan plan(g.hp,
                                 {.mix = model::QuantMix::F32, .router_bias = true, .mtp = true});
    for (const model::TensorSpec& s : plan.tensors()) {
        if (s.name == skip) continue;
        const TensorView* v = g.weights.find(s.name);
        if (v == nullptr) continue;  // main-model bias the goldens do not carry
        ws.add_view(s.name, s.name == replace_name ? *replacement : *v);
    }
    return ws;
}

std::string error_of(const Golden& g, const WeightSet& ws) {
    try {
        const MtpModel m(g.hp, ws);
    } catch (const Error& e) {
        return e.what();
    }
    return "no error";
}

TEST(MtpBinding, MissingTensorIsNamed) {
    const Golden& g = *loaded_golden("tiny_s1").golden;
    for (const char* name :
         {"mtp.0.e_proj.weight", "mtp.0.hnorm.weight", "mtp.0.attn_sinks.weight",
          "mtp.0.hc_head_fn.weight", "mtp.0.exp_probs_b.bias", "mtp.0.norm.weight"}) {
        const std::string msg = error_of(g, views_of(g, name));
        EXPECT_NE(msg.find(std::string("required tensor is missing: ") + name), std::string::npos)
            << msg;
    }
}

TEST(MtpBinding, WrongDimsAreNamedWithMtpNames) {
    const Golden& g = *loaded_golden("tiny_s1").golden;
    for (const char* name : {"mtp.0.attn_q_a.weight", "mtp.0.hc_head_fn.weight",
                             "mtp.0.h_proj.weight", "mtp.0.norm.weight"}) {
        TensorView bad = *g.weights.find(name);
        bad.dims[0] /= 2;  // a view over fewer values than it has: never read, only checked
        const std::string msg = error_of(g, views_of(g, "", name, &bad));
        EXPECT_NE(msg.find(std::string("tensor ") + name + " has dim[0]="), std::string::npos)
            << msg;
        EXPECT_EQ(msg.find("blk.0."), std::string::npos) << msg;
    }
}

TEST(MtpBinding, HparamsAreOneRatioZeroNonHashLayer) {
    const Golden& g = *loaded_golden("tiny_s1").golden;
    const model::Hparams h = mtp_hparams(g.hp);
    EXPECT_EQ(h.n_layer, 1u);
    EXPECT_EQ(h.compress_ratios, std::vector<uint32_t>{0});
    EXPECT_FALSE(h.is_hash_layer(0));
    EXPECT_EQ(h.n_embd, g.hp.n_embd);
    EXPECT_EQ(h.window, g.hp.window);
}

}  // namespace
}  // namespace ds4::cpu::test
