// Speculative greedy decoding (include/ds4/speculative.h): output and KV state identical
// to plain greedy decoding, on a random demo-shape model with its random MTP block (drafts
// nearly always rejected: rollback on every step), with an oracle drafter that is right up
// to a chosen index (every partial-acceptance length), on a converted golden checkpoint,
// and on the forced-acceptance model of ds4-make-model --mtp-copy-head (every draft
// accepted). "SpeculativeLong*" tests are the 200-token runs (ctest label slow).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "convert.h"
#include "ds4/engine.h"
#include "ds4/error.h"
#include "ds4/speculative.h"
#include "maker.h"

namespace ds4 {
namespace {

namespace fs = std::filesystem;

// A model file in a temporary directory, removed with the object.
struct TempModel {
    fs::path dir;
    std::string path;  // main model (with the MTP block for the synthetic ones)
    std::string mtp;   // MTP GGUF (== path for the synthetic ones)

    explicit TempModel(const std::string& tag) {
        dir = fs::temp_directory_path() / cat("ds4-spec-", ::getpid(), "-", tag);
        fs::create_directories(dir);
        path = (dir / "model.gguf").string();
        mtp = path;
    }
    ~TempModel() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    TempModel(const TempModel&) = delete;
    TempModel& operator=(const TempModel&) = delete;
};

std::unique_ptr<TempModel> make_synthetic(const std::string& tag, const std::string& shape,
                                          model::QuantMix mix, bool copy_head, uint64_t seed) {
    auto m = std::make_unique<TempModel>(tag);
    synth::MakeOptions o;
    o.shape = synth::shape_preset(shape);
    o.plan.mix = mix;
    o.plan.mtp = true;
    o.seed = seed;
    o.threads = 2;
    o.fast_blocks = true;
    o.mtp_copy_head = copy_head;
    synth::make_model(m->path, o);
    return m;
}

std::unique_ptr<TempModel> convert_golden(const std::string& name) {
    auto m = std::make_unique<TempModel>(name);
    m->mtp = (m->dir / "mtp.gguf").string();
    convert::ConvertOptions o;
    o.type = convert::TypePolicy::F32;
    o.threads = 2;
    o.mtp_output = m->mtp;
    convert::convert_checkpoint(
        std::string(DS4_TEST_DATA_DIR) + "/golden/golden_" + name + ".safetensors", m->path, o);
    return m;
}

// Models are made once per test binary.
const TempModel& model(const std::string& key) {
    static std::map<std::string, std::unique_ptr<TempModel>> cache;
    auto& m = cache[key];
    if (m) return *m;
    if (key == "demo")
        m = make_synthetic(key, "demo", model::QuantMix::Q2, false, 4);
    else if (key == "tiny")
        m = make_synthetic(key, "tiny", model::QuantMix::Q2, false, 7);
    else if (key == "copy_f32")
        m = make_synthetic(key, "tiny", model::QuantMix::F32, true, 3);
    else if (key == "copy_q2")
        m = make_synthetic(key, "demo", model::QuantMix::Q2, true, 5);
    else
        m = convert_golden(key);
    return *m;
}

Engine open(const TempModel& m, uint64_t ctx = 512) {
    EngineOptions o;
    o.threads = 2;
    o.ctx = ctx;
    o.mtp_path = m.mtp;
    return Engine::open(m.path, o);
}

std::vector<int32_t> prompt_for(const Engine& e, uint32_t n, uint32_t salt) {
    std::vector<int32_t> p(n);
    for (uint32_t i = 0; i < n; ++i)
        p[i] = static_cast<int32_t>((i * 37u + salt * 11u + 5u) % e.model().n_vocab);
    return p;
}

// Prefills the prompt; returns the argmax of the last logits.
int32_t prefill(Engine& e, SequenceId seq, std::span<const int32_t> prompt) {
    Batch b;
    b.add(seq, prompt);
    return e.step(b).argmax(0);
}

// The reference: plain greedy decoding with the engine's step(), written independently of
// the decoder (feed, argmax; the last token is not fed; a stop token ends the run).
std::vector<int32_t> plain_greedy(Engine& e, SequenceId seq, int32_t first, uint64_t max_tokens,
                                  int32_t stop = -1) {
    std::vector<int32_t> out;
    int32_t t = first;
    Batch b;
    while (out.size() < max_tokens && t != stop) {
        out.push_back(t);
        if (out.size() == max_tokens) break;
        b.clear();
        b.add_token(seq, t);
        t = e.step(b).argmax(0);
    }
    return out;
}

// The whole KV state of a sequence as bytes (the session payload: raw windows, frontiers
// and compressed rows), for an exact comparison of two sequences.
std::vector<uint8_t> state_bytes(const Engine& e, SequenceId seq) {
    const std::vector<int32_t> history(e.sequence_length(seq), 0);
    const std::vector<float> logits(e.model().n_vocab, 0.0f);
    std::vector<uint8_t> out;
    e.save_sequence(seq, history, logits, out);
    return out;
}

struct Run {
    std::vector<int32_t> tokens;
    SpeculativeStats stats;
    double seconds = 0;  // wall time of the generation (reported, never asserted)
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Greedy run of `n` tokens after a prompt, plain (n_draft 0 → the reference loop) or
// speculative; `check` then compares the final states and one more greedy step.
struct Pair {
    Engine plain_engine, spec_engine;
    SequenceId plain_seq, spec_seq;
    Run plain, spec;
};

Pair run_pair(const TempModel& m, uint32_t prompt_len, uint64_t n, uint32_t n_draft,
              int32_t stop = -1, const SpeculativeDecoder::Drafter& drafter = {}) {
    Pair p{open(m), open(m), 0, 0, {}, {}};
    p.plain_seq = p.plain_engine.create_sequence();
    p.spec_seq = p.spec_engine.create_sequence();
    const std::vector<int32_t> prompt = prompt_for(p.plain_engine, prompt_len, 1);
    const int32_t first = prefill(p.plain_engine, p.plain_seq, prompt);
    EXPECT_EQ(prefill(p.spec_engine, p.spec_seq, prompt), first);
    auto t0 = std::chrono::steady_clock::now();
    p.plain.tokens = plain_greedy(p.plain_engine, p.plain_seq, first, n, stop);
    p.plain.seconds = seconds_since(t0);
    auto is_stop = [stop](int32_t t) { return t == stop; };
    SpeculativeDecoder dec =
        drafter ? SpeculativeDecoder(p.spec_engine, p.spec_seq, n_draft, drafter, is_stop)
                : SpeculativeDecoder(p.spec_engine, p.spec_seq, n_draft, is_stop);
    t0 = std::chrono::steady_clock::now();
    p.spec.tokens = generate_greedy(dec, first, n, is_stop);
    p.spec.seconds = seconds_since(t0);
    p.spec.stats = dec.stats();
    return p;
}

void expect_identical(Pair& p) {
    ASSERT_EQ(p.spec.tokens, p.plain.tokens);
    ASSERT_EQ(p.spec_engine.sequence_length(p.spec_seq),
              p.plain_engine.sequence_length(p.plain_seq));
    EXPECT_TRUE(state_bytes(p.spec_engine, p.spec_seq) == state_bytes(p.plain_engine, p.plain_seq))
        << "KV state differs after speculative decoding";
    // ... and so does what comes next, bit for bit
    if (p.plain.tokens.empty()) return;
    Batch a, b;
    a.add_token(p.plain_seq, p.plain.tokens.back());
    b.add_token(p.spec_seq, p.spec.tokens.back());
    const Logits la = p.plain_engine.step(a), lb = p.spec_engine.step(b);
    ASSERT_EQ(la.row(0).size(), lb.row(0).size());
    EXPECT_TRUE(std::equal(la.row(0).begin(), la.row(0).end(), lb.row(0).begin()));
}

void report(const char* what, uint32_t n_draft, const Pair& p) {
    const SpeculativeStats& s = p.spec.stats;
    std::printf(
        "[spec %s N=%u] %zu tokens: drafted %llu accepted %llu (%.1f%%), main steps %llu "
        "(verify %llu, replay %llu, plain %llu), %.2f tokens/step; %.1f t/s, plain %.1f t/s\n",
        what, n_draft, p.spec.tokens.size(), (unsigned long long)s.drafted,
        (unsigned long long)s.accepted, 100.0 * s.acceptance(), (unsigned long long)s.main_steps(),
        (unsigned long long)s.verify_steps, (unsigned long long)s.replay_steps,
        (unsigned long long)s.plain_steps, s.tokens_per_step(),
        double(p.spec.tokens.size()) / std::max(p.spec.seconds, 1e-9),
        double(p.plain.tokens.size()) / std::max(p.plain.seconds, 1e-9));
}

// ---- fast cases (also under sanitizers) ----

class SpeculativeTiny : public ::testing::TestWithParam<uint32_t> {};

// Random MTP drafts: almost every step rolls back; tokens and state stay exact.
TEST_P(SpeculativeTiny, RandomMtpMatchesPlainGreedy) {
    Pair p = run_pair(model("tiny"), 21, 40, GetParam());
    report("tiny random", GetParam(), p);
    expect_identical(p);
    EXPECT_EQ(p.spec.stats.committed + 1, p.spec.tokens.size());  // all but the last fed
}

// An oracle that knows the plain continuation and errs at a rotating index, so every
// acceptance length 0..N occurs, compressor boundaries included.
TEST_P(SpeculativeTiny, OracleDrafterEveryAcceptanceLength) {
    const uint32_t n_draft = GetParam();
    const TempModel& m = model("tiny");
    // the plain continuation, long enough for any draft
    Engine ref = open(m);
    const SequenceId rs = ref.create_sequence();
    const std::vector<int32_t> prompt = prompt_for(ref, 21, n_draft);
    const uint64_t n = 60;
    const std::vector<int32_t> truth = plain_greedy(ref, rs, prefill(ref, rs, prompt), n + 20);
    uint32_t call = 0;
    std::vector<uint32_t> lengths(n_draft + 1, 0);  // how often each acceptance length was set up
    Engine* spec_engine = nullptr;
    // the pending token is truth[fed]; the drafts guess truth[fed + 1 ..]
    auto drafter = [&](SequenceId seq, int32_t, std::span<int32_t> drafts) {
        const uint64_t fed = spec_engine->sequence_length(seq) - prompt.size();
        const auto V = static_cast<int32_t>(spec_engine->model().n_vocab);
        const uint32_t wrong = call++ % (n_draft + 1);  // index of the first wrong draft
        for (size_t i = 0; i < drafts.size(); ++i) {
            const int32_t t = truth.at(fed + 1 + i);
            drafts[i] = i < wrong ? t : (t + 1) % V;
        }
        ++lengths[std::min<size_t>(wrong, drafts.size())];
    };
    Pair p{open(m), open(m), 0, 0, {}, {}};
    spec_engine = &p.spec_engine;
    p.plain_seq = p.plain_engine.create_sequence();
    p.spec_seq = p.spec_engine.create_sequence();
    const int32_t first = prefill(p.plain_engine, p.plain_seq, prompt);
    ASSERT_EQ(prefill(p.spec_engine, p.spec_seq, prompt), first);
    p.plain.tokens = plain_greedy(p.plain_engine, p.plain_seq, first, n);
    SpeculativeDecoder dec(p.spec_engine, p.spec_seq, n_draft, drafter);
    p.spec.tokens = generate_greedy(dec, first, n, {});
    p.spec.stats = dec.stats();
    report("tiny oracle", n_draft, p);
    expect_identical(p);
    for (uint32_t k = 0; k <= n_draft; ++k) EXPECT_GT(lengths[k], 0u) << "acceptance length " << k;
    EXPECT_GT(p.spec.stats.replay_steps, 0u);
    EXPECT_GT(p.spec.stats.accepted, 0u);
}

// A stop token ends both runs at the same place and is never fed.
TEST_P(SpeculativeTiny, StopTokenEndsLikePlainGreedy) {
    Pair probe = run_pair(model("tiny"), 21, 40, 0);
    const int32_t stop = probe.plain.tokens.at(25);
    Pair p = run_pair(model("tiny"), 21, 40, GetParam(), stop);
    expect_identical(p);
    EXPECT_EQ(p.spec.tokens.size(), static_cast<size_t>(std::find(probe.plain.tokens.begin(),
                                                                  probe.plain.tokens.end(), stop) -
                                                        probe.plain.tokens.begin()));
}

// The forced-acceptance model: every draft accepted, no rollback, N + 1 tokens a step.
TEST_P(SpeculativeTiny, CopyHeadModelAcceptsEveryDraft) {
    const uint32_t n_draft = GetParam();
    const uint64_t n = 41;
    Pair p = run_pair(model("copy_f32"), 9, n, n_draft);
    report("copy-head f32", n_draft, p);
    expect_identical(p);
    const SpeculativeStats& s = p.spec.stats;
    EXPECT_GT(s.drafted, 0u);
    EXPECT_EQ(s.accepted, s.drafted);
    EXPECT_EQ(s.replay_steps, 0u);
    // n − 1 tokens are fed (the last is not): ceil((n − 1) / (N + 1)) steps
    EXPECT_EQ(s.main_steps(), (n - 1 + n_draft) / (n_draft + 1));
}

INSTANTIATE_TEST_SUITE_P(Drafts, SpeculativeTiny, ::testing::Values(1u, 2u, 3u, 4u),
                         [](const auto& i) { return cat("N", i.param); });

// Drafts are side-effect free: a chain leaves later single drafts bit-identical.
TEST(Speculative, ChainedDraftsLeaveTheMtpWindowIntact) {
    const TempModel& m = model("tiny");
    Engine a = open(m), b = open(m);
    const SequenceId sa = a.create_sequence(), sb = b.create_sequence();
    const std::vector<int32_t> prompt = prompt_for(a, 40, 1);  // longer than the window
    prefill(a, sa, prompt);
    prefill(b, sb, prompt);
    std::vector<int32_t> chain(6);
    a.mtp_draft_greedy(sa, 3, chain);
    std::vector<int32_t> again(6);
    a.mtp_draft_greedy(sa, 3, again);
    EXPECT_EQ(chain, again);
    const std::vector<float> da = a.mtp_draft(sa, 9), db = b.mtp_draft(sb, 9);
    EXPECT_TRUE(da == db);
    // the first chained draft is the argmax of the single draft
    const std::vector<float> d3 = b.mtp_draft(sb, 3);
    EXPECT_EQ(chain[0], std::max_element(d3.begin(), d3.end()) - d3.begin());
}

// restore() keeps the MTP window rows that are still valid: drafts after a restore equal
// drafts of a run that never went past the checkpoint.
TEST(Speculative, DraftsAfterRestoreMatchAFreshRun) {
    const TempModel& m = model("tiny");
    Engine a = open(m), b = open(m);
    const SequenceId sa = a.create_sequence(), sb = b.create_sequence();
    const std::vector<int32_t> prompt = prompt_for(a, 30, 2);
    prefill(a, sa, prompt);
    prefill(b, sb, prompt);
    a.mtp_draft(sa, 4);  // fills a's MTP window
    const SequenceCheckpoint cp = a.checkpoint(sa);
    Batch batch;
    const std::vector<int32_t> extra{5, 6, 7};
    batch.add(sa, extra);
    a.step(batch);
    a.restore(sa, cp);
    EXPECT_TRUE(a.mtp_draft(sa, 11) == b.mtp_draft(sb, 11));
}

TEST(Speculative, ErrorsAreClear) {
    const TempModel& m = model("tiny");
    Engine e = open(m);
    const SequenceId seq = e.create_sequence();
    auto message = [](const std::function<void()>& f) -> std::string {
        try {
            f();
        } catch (const Error& err) {
            return err.what();
        }
        return "no error";
    };
    EXPECT_NE(message([&] { SpeculativeDecoder(e, seq, 2); }).find("is empty"), std::string::npos);
    prefill(e, seq, prompt_for(e, 5, 0));
    EXPECT_NE(message([&] { SpeculativeDecoder(e, seq, 17); }).find("maximum 16"),
              std::string::npos);
    EngineOptions o;
    o.threads = 2;
    o.ctx = 64;
    Engine plain = Engine::open(m.path, o);
    const SequenceId ps = plain.create_sequence();
    prefill(plain, ps, prompt_for(plain, 5, 0));
    EXPECT_NE(message([&] { SpeculativeDecoder(plain, ps, 2); }).find("no MTP block"),
              std::string::npos);
    EXPECT_NO_THROW(SpeculativeDecoder(plain, ps, 0));
}

// Near the end of the context the drafts shrink to the room left; the run still matches.
TEST(Speculative, DraftsShrinkAtTheContextEnd) {
    const TempModel& m = model("copy_f32");
    Engine plain = open(m, 24), spec = open(m, 24);
    const SequenceId ps = plain.create_sequence(), ss = spec.create_sequence();
    const std::vector<int32_t> prompt = prompt_for(plain, 9, 0);
    const int32_t first = prefill(plain, ps, prompt);
    prefill(spec, ss, prompt);
    const uint64_t n = 24 - 9;  // fills the context exactly (the last token is not fed)
    const std::vector<int32_t> a = plain_greedy(plain, ps, first, n);
    SpeculativeStats st;
    const std::vector<int32_t> b = generate_greedy(spec, ss, first, n, 4, {}, &st);
    EXPECT_EQ(a, b);
    EXPECT_EQ(spec.sequence_length(ss), 23u);
    EXPECT_EQ(st.accepted, st.drafted);
}

// ---- long runs (label slow) ----

class SpeculativeLong : public ::testing::TestWithParam<uint32_t> {};

TEST_P(SpeculativeLong, DemoShapeRandomMtp200Tokens) {
    Pair p = run_pair(model("demo"), 33, 200, GetParam());
    report("demo q2 random", GetParam(), p);
    expect_identical(p);
}

TEST_P(SpeculativeLong, GoldenTinyS1Mtp200Tokens) {
    Pair p = run_pair(model("tiny_s1"), 17, 200, GetParam());
    report("golden tiny_s1 f32", GetParam(), p);
    expect_identical(p);
}

TEST_P(SpeculativeLong, CopyHeadDemoShapeQ2AcceptsEveryDraft200Tokens) {
    const uint32_t n_draft = GetParam();
    Pair p = run_pair(model("copy_q2"), 33, 200, n_draft);
    report("copy-head demo q2", n_draft, p);
    expect_identical(p);
    EXPECT_EQ(p.spec.stats.accepted, p.spec.stats.drafted);
    EXPECT_EQ(p.spec.stats.main_steps(), (200 - 1 + n_draft) / (n_draft + 1));
}

INSTANTIATE_TEST_SUITE_P(Drafts, SpeculativeLong, ::testing::Values(1u, 2u, 3u, 4u),
                         [](const auto& i) { return cat("N", i.param); });

}  // namespace
}  // namespace ds4
