// Engine MTP drafts end to end: golden checkpoint → ds4-convert (main GGUF + --mtp-out
// GGUF) → Engine with EngineOptions::mtp_path → mtp_draft after each step, against
// golden.mtp_logits_decode (tests/data/golden/README.md, "MTP block": row i = the block on
// the final HC state of position i and token i + 1).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "convert.h"
#include "cpu/forward.h"
#include "cpu/gguf_weights.h"
#include "cpu/matvec.h"
#include "cpu/mtp.h"
#include "ds4/engine.h"
#include "ds4/error.h"
#include "gguf/gguf.h"
#include "gguf/safetensors.h"
#include "maker.h"
#include "model/metadata.h"
#include "quant/checkpoint.h"

namespace ds4 {
namespace {

namespace fs = std::filesystem;

std::string golden_path(const std::string& name) {
    return std::string(DS4_TEST_DATA_DIR) + "/golden/golden_" + name + ".safetensors";
}

// A converted golden (f32: weights decode exactly) and its reference MTP rows (full layout).
struct Converted {
    fs::path dir;
    std::string main, mtp;
    std::vector<int32_t> tokens;
    std::vector<float> ref;  // (T − 1) × V
    uint32_t T = 0, P = 0, V = 0;

    explicit Converted(const std::string& name) {
        dir = fs::temp_directory_path() / cat("ds4-engine-mtp-", ::getpid(), "-", name);
        fs::create_directories(dir);
        main = (dir / "main.gguf").string();
        mtp = (dir / "mtp.gguf").string();
        convert::ConvertOptions o;
        o.type = convert::TypePolicy::F32;
        o.threads = 2;
        o.mtp_output = mtp;
        const convert::ConvertResult r = convert::convert_checkpoint(golden_path(name), main, o);
        V = r.hparams.n_vocab;
        const st::File f = st::File::open(golden_path(name));
        const auto ids = f.to_i64(f.require("golden.tokens"));
        tokens.assign(ids.begin(), ids.end());
        T = static_cast<uint32_t>(tokens.size());
        P = static_cast<uint32_t>(std::stoul(f.metadata().at("prefill_len")));
        ref = quant::decode_f32(f, f.require("golden.mtp_logits_decode"));
    }
    ~Converted() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    Engine open(bool with_mtp = true) const {
        EngineOptions opt;
        opt.threads = 2;
        opt.ctx = T;
        if (with_mtp) opt.mtp_path = mtp;
        return Engine::open(main, opt);
    }
    double diff(uint32_t row, const std::vector<float>& ours) const {
        double d = 0;
        for (uint32_t v = 0; v < V; ++v)
            d = std::max(d, std::fabs(static_cast<double>(ours[v]) - ref[uint64_t{row} * V + v]));
        return d;
    }
};

const Converted& tiny(const std::string& name) {
    static std::map<std::string, std::unique_ptr<Converted>> cache;
    auto& c = cache[name];
    if (!c) c = std::make_unique<Converted>(name);
    return *c;
}

double percentile(std::vector<double> v, double pct) {
    std::sort(v.begin(), v.end());
    const double rank = pct / 100.0 * static_cast<double>(v.size() - 1);
    const auto lo = static_cast<size_t>(rank);
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

class EngineMtp : public ::testing::TestWithParam<std::string> {};

// Decode one token per step; after each, a draft for a wrong candidate first (it must
// leave no trace), then for the true next token.
TEST_P(EngineMtp, DraftsAfterEachDecodeStepMatchReference) {
    const Converted& c = tiny(GetParam());
    Engine e = c.open();
    ASSERT_TRUE(e.has_mtp());
    const SequenceId seq = e.create_sequence();
    std::vector<double> d;
    uint32_t argmax_agree = 0;
    for (uint32_t t = 0; t + 1 < c.T; ++t) {
        Batch b;
        b.add_token(seq, c.tokens[t]);
        e.step(b);
        e.mtp_draft(seq, (c.tokens[t + 1] + 1) % static_cast<int32_t>(c.V));
        const std::vector<float> draft = e.mtp_draft(seq, c.tokens[t + 1]);
        d.push_back(c.diff(t, draft));
        const auto* ref = c.ref.data() + uint64_t{t} * c.V;
        argmax_agree += std::max_element(draft.begin(), draft.end()) - draft.begin() ==
                        std::max_element(ref, ref + c.V) - ref;
        EXPECT_EQ(e.sequence_length(seq), t + 1);
    }
    const double med = percentile(d, 50), p99 = percentile(d, 99), mx = percentile(d, 100);
    std::printf("[engine mtp %s] decode drafts: median %.3g p99 %.3g max %.3g argmax %u/%u\n",
                GetParam().c_str(), med, p99, mx, argmax_agree, c.T - 1);
    EXPECT_LE(med, 1e-4);
    EXPECT_LE(p99, 1e-3);
    EXPECT_LE(mx, 5e-2);
    EXPECT_GE(argmax_agree, (c.T - 1) * 95 / 100);
}

// A prefill of P tokens, then drafts and decode: the MTP window is filled lazily from the
// states the prefill recorded (the reference used mode-(a) states, so mode (b) bounds).
TEST_P(EngineMtp, DraftsAfterPrefillMatchReference) {
    const Converted& c = tiny(GetParam());
    Engine e = c.open();
    const SequenceId seq = e.create_sequence();
    Batch b;
    b.add(seq, std::span<const int32_t>(c.tokens.data(), c.P), LogitsWanted::None);
    e.step(b);
    std::vector<double> d;
    for (uint32_t t = c.P - 1; t + 1 < c.T; ++t) {
        if (t >= c.P) {
            b.clear();
            b.add_token(seq, c.tokens[t]);
            e.step(b);
        }
        d.push_back(c.diff(t, e.mtp_draft(seq, c.tokens[t + 1])));
    }
    const double med = percentile(d, 50), p99 = percentile(d, 99), mx = percentile(d, 100);
    std::printf("[engine mtp %s] drafts after a %u-token prefill: median %.3g p99 %.3g max %.3g\n",
                GetParam().c_str(), c.P, med, p99, mx);
    EXPECT_LE(med, 5e-4);
    EXPECT_LE(p99, 5e-3);
    EXPECT_LE(mx, 5e-2);
}

INSTANTIATE_TEST_SUITE_P(Goldens, EngineMtp, ::testing::Values("tiny_s1", "tiny_s2"),
                         [](const auto& p) { return p.param; });

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "no error";
}

TEST(EngineMtpErrors, AreClear) {
    const Converted& c = tiny("tiny_s1");
    Engine plain = c.open(false);
    EXPECT_FALSE(plain.has_mtp());
    const SequenceId s0 = plain.create_sequence();
    EXPECT_NE(error_of([&] { plain.mtp_draft(s0, 1); }).find("no MTP model"), std::string::npos);

    Engine e = c.open();
    const SequenceId seq = e.create_sequence();
    EXPECT_NE(error_of([&] { e.mtp_draft(seq, 1); }).find("is empty"), std::string::npos);
    Batch b;
    b.add_token(seq, c.tokens[0]);
    e.step(b);
    EXPECT_NE(error_of([&] { e.mtp_draft(seq, static_cast<int32_t>(c.V)); }).find("out of range"),
              std::string::npos);
    std::vector<float> small(c.V - 1);
    EXPECT_NE(error_of([&] { e.mtp_draft(seq, 1, small); }).find("buffer"), std::string::npos);
    EXPECT_NE(error_of([&] { e.mtp_draft(seq + 100, 1); }).find("unknown sequence"),
              std::string::npos);

    // the main GGUF is no MTP file: named in the error
    EngineOptions opt;
    opt.ctx = 16;
    opt.mtp_path = c.main;
    const std::string msg = error_of([&] { Engine::open(c.main, opt); });
    EXPECT_NE(msg.find("mtp.0.attn_q_a.weight"), std::string::npos) << msg;
}

// reset / free-and-reuse restart the MTP window with the sequence.
TEST(EngineMtpErrors, ResetSequenceRestartsTheMtpWindow) {
    const Converted& c = tiny("tiny_s1");
    Engine e = c.open();
    const SequenceId seq = e.create_sequence();
    auto first_draft = [&](SequenceId s) {
        Batch b;
        b.add_token(s, c.tokens[0]);
        e.step(b);
        return e.mtp_draft(s, c.tokens[1]);
    };
    const auto a = first_draft(seq);
    Batch b;
    b.add(seq, std::span<const int32_t>(c.tokens.data() + 1, 5), LogitsWanted::None);
    e.step(b);
    e.mtp_draft(seq, c.tokens[7]);
    e.reset_sequence(seq);
    const auto again = first_draft(seq);
    EXPECT_EQ(0, std::memcmp(a.data(), again.data(), a.size() * sizeof(float)));
    e.free_sequence(seq);
    const SequenceId reused = e.create_sequence();
    const auto third = first_draft(reused);
    EXPECT_EQ(0, std::memcmp(a.data(), third.data(), a.size() * sizeof(float)));
}

// A block-quantized (q2) synthetic model whose file also carries the MTP block (as
// ds4-make-model --mtp writes it): the engine takes the same path as mtp_path, runs the
// block with the fast numerics, independent of the thread count and of prefill chunking,
// and equal to the CPU MTP block fed one token at a time.
TEST(EngineMtpSynthetic, CombinedQ2FileDraftsMatchTheCpuBlock) {
    const fs::path path =
        fs::temp_directory_path() / cat("ds4-engine-mtp-synth-", ::getpid(), ".gguf");
    synth::MakeOptions mo;
    mo.shape = synth::shape_preset("tiny");
    mo.plan.mix = model::QuantMix::Q2;
    mo.plan.mtp = true;
    mo.seed = 11;
    mo.threads = 2;
    mo.fast_blocks = true;
    synth::make_model(path.string(), mo);
    struct Remove {
        fs::path p;
        ~Remove() {
            std::error_code ec;
            fs::remove(p, ec);
        }
    } remove{path};

    const uint32_t n = 40;
    std::vector<int32_t> tokens(n);
    for (uint32_t i = 0; i < n; ++i)
        tokens[i] = static_cast<int32_t>((i * 37 + 5) % mo.shape.n_vocab);
    const uint32_t prefill = 30, V = mo.shape.n_vocab;

    // engine: prefill, then decode with a draft for the true next token after each step
    auto engine_drafts = [&](unsigned threads) {
        EngineOptions opt;
        opt.threads = threads;
        opt.ctx = n;
        opt.mtp_path = path.string();
        Engine e = Engine::open(path.string(), opt);
        EXPECT_TRUE(e.has_mtp());
        const SequenceId seq = e.create_sequence();
        Batch b;
        b.add(seq, std::span<const int32_t>(tokens.data(), prefill), LogitsWanted::None);
        e.step(b);
        std::vector<float> out;
        for (uint32_t t = prefill - 1; t + 1 < n; ++t) {
            if (t >= prefill) {
                b.clear();
                b.add_token(seq, tokens[t]);
                e.step(b);
            }
            const std::vector<float> d = e.mtp_draft(seq, tokens[t + 1]);
            out.insert(out.end(), d.begin(), d.end());
        }
        return out;
    };
    const std::vector<float> one = engine_drafts(1), two = engine_drafts(2);
    ASSERT_EQ(one.size(), uint64_t{n - prefill} * V);
    EXPECT_EQ(0, std::memcmp(one.data(), two.data(), one.size() * sizeof(float)));
    for (float v : one) ASSERT_TRUE(std::isfinite(v));

    // the CPU block directly, one token per call, same numerics as the engine
    const gguf::File f = gguf::File::open(path.string());
    const model::Hparams hp = model::read_hparams(f);
    cpu::WeightSet ws;
    cpu::add_gguf_views(ws, f);
    const cpu::CpuModel main_model(hp, ws);
    const cpu::MtpModel mtp(hp, ws);
    const cpu::NumericsScope numerics(cpu::Numerics::Fast);
    cpu::CpuForward fwd(main_model);
    cpu::MtpForward mf(mtp);
    cpu::KvState kv(hp, n);
    cpu::KvState mkv = mtp.make_state(n);
    std::vector<float> ref(V);
    const uint32_t row0 = 0;
    float worst = 0;
    for (uint32_t t = 0; t + 1 < n; ++t) {
        fwd.eval(kv, t, {tokens.data() + t, 1}, {}, {});
        const std::vector<float> hc(fwd.final_hc(0).begin(), fwd.final_hc(0).end());
        mf.eval(mkv, t, {tokens.data() + t + 1, 1}, hc, {&row0, 1}, ref);
        if (t + 1 < prefill) continue;
        const float* ours = one.data() + uint64_t{t - (prefill - 1)} * V;
        float d = 0;
        for (uint32_t v = 0; v < V; ++v) d = std::max(d, std::fabs(ours[v] - ref[v]));
        EXPECT_LE(d, 1e-4f) << "position " << t;
        worst = std::max(worst, d);
    }
    // (the engine's 30-token prefill chunk vs one token at a time: the fast products are
    // chunk-invariant, so this is expected to be exactly 0)
    std::printf("[engine mtp synthetic q2] max |engine draft - cpu block| = %g\n", worst);
}

}  // namespace
}  // namespace ds4
