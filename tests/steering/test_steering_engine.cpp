// EngineOptions::steering: the file is read and checked at open, the scale defaults are
// resolved (and reported by options()), and step() applies exactly what CpuForward does
// with the same directions and scales.
#include <gtest/gtest.h>

#include <filesystem>
#include <numeric>

#include "cpu/matvec.h"
#include "cpu/quant_matvec.h"
#include "ds4/engine.h"
#include "ds4/error.h"
#include "steering_test_util.h"

namespace ds4::cpu::test {
namespace {

constexpr uint32_t kTokens = 10;

std::vector<int32_t> tokens(uint32_t n_vocab) {
    synth::Rng rng(23);
    std::vector<int32_t> t(kTokens);
    for (int32_t& v : t) v = static_cast<int32_t>(rng.below(n_vocab));
    return t;
}

// A direction file for the tiny model, removed with the fixture.
struct DirFile {
    std::string path = temp_path("engine.f32");
    std::vector<float> values;
    DirFile() {
        const model::Hparams& hp = tiny_model().hp();
        values = unit_directions(hp.n_layer, hp.n_embd, 29);
        write_steering_file(path, values);
    }
    ~DirFile() { std::filesystem::remove(path); }
};

EngineOptions options(const DirectionalSteering& s) {
    EngineOptions o;
    o.ctx = 64;
    o.threads = 2;
    o.steering = s;
    return o;
}

// Logits after every token, through the engine.
std::vector<float> engine_logits(const EngineOptions& o) {
    Engine e = Engine::open(tiny_model().path, o);
    const SequenceId seq = e.create_sequence();
    const std::vector<int32_t> t = tokens(e.model().n_vocab);
    std::vector<uint32_t> at(kTokens);
    std::iota(at.begin(), at.end(), 0u);
    Batch b;
    b.add(seq, t, at);
    const Logits l = e.step(b);
    std::vector<float> out;
    for (size_t r = 0; r < l.rows(); ++r) out.insert(out.end(), l.row(r).begin(), l.row(r).end());
    return out;
}

// The same through CpuForward with an explicit Steering, in the engine's numerics.
std::vector<float> forward_logits(const std::vector<float>& dirs, float attn, float ffn) {
    const TinyModel& tm = tiny_model();
    const model::Hparams& hp = tm.hp();
    const NumericsScope scope(default_numerics(tm.model->weights()));
    CpuForward fwd(*tm.model);
    fwd.set_steering(Steering(std::make_shared<const SteeringDirections>(dirs, hp.n_layer, hp.n_embd), attn, ffn));
    KvState state(hp, 64);
    const std::vector<int32_t> t = tokens(hp.n_vocab);
    std::vector<uint32_t> rows(kTokens);
    std::iota(rows.begin(), rows.end(), 0u);
    std::vector<float> logits(uint64_t{kTokens} * hp.n_vocab);
    fwd.eval(state, 0, t, rows, logits);
    return logits;
}

std::string open_error(const EngineOptions& o) {
    try {
        (void)Engine::open(tiny_model().path, o);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

TEST(EngineSteering, FileAloneDefaultsToFfnScaleOne) {
    const DirFile f;
    const Engine e = Engine::open(tiny_model().path, options({f.path, std::nullopt, std::nullopt}));
    EXPECT_EQ(e.options().steering.attn, 0.0f);
    EXPECT_EQ(e.options().steering.ffn, 1.0f);
    const Engine none = Engine::open(tiny_model().path, options({}));
    EXPECT_EQ(none.options().steering.attn, 0.0f);
    EXPECT_EQ(none.options().steering.ffn, 0.0f);
}

TEST(EngineSteering, StepAppliesTheSameSteeringAsTheForwardPass) {
    const DirFile f;
    const std::vector<float> plain = engine_logits(options({}));
    const std::vector<float> by_default = engine_logits(options({f.path, std::nullopt, std::nullopt}));
    EXPECT_EQ(by_default, forward_logits(f.values, 0.0f, 1.0f));
    const std::vector<float> both = engine_logits(options({f.path, -0.5f, 2.0f}));
    EXPECT_EQ(both, forward_logits(f.values, -0.5f, 2.0f));
    EXPECT_NE(plain, by_default);
    EXPECT_NE(plain, both);
}

TEST(EngineSteering, ZeroScalesWithAFileAreBitIdenticalToNone) {
    const DirFile f;
    EXPECT_EQ(engine_logits(options({})), engine_logits(options({f.path, 0.0f, 0.0f})));
}

TEST(EngineSteering, WrongSizeFileFailsAtOpen) {
    const std::string path = temp_path("engine-short.f32");
    write_steering_file(path, std::vector<float>(100, 0.0f));
    const std::string msg = open_error(options({path, std::nullopt, std::nullopt}));
    std::filesystem::remove(path);
    const model::Hparams& hp = tiny_model().hp();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(cat("has size 400 bytes, expected ", hp.n_layer * hp.n_embd * 4, " bytes")), std::string::npos)
        << msg;
}

TEST(EngineSteering, ScaleWithoutFileOrOutOfRangeFailsAtOpen) {
    EXPECT_NE(open_error(options({"", std::nullopt, 0.5f})).find("--dir-steering-ffn"), std::string::npos);
    EXPECT_NE(open_error(options({"", 1.0f, std::nullopt})).find("--dir-steering-attn"), std::string::npos);
    const DirFile f;
    EXPECT_NE(open_error(options({f.path, 250.0f, std::nullopt})).find("[-100, 100]"), std::string::npos);
    EXPECT_EQ(open_error(options({"", 0.0f, 0.0f})), "");
}

// Steering runs on the CUDA backend too (tests/cuda/test_mtp.cpp checks it against the
// CPU): asking for both can fail at open only for want of a CUDA build or GPU.
TEST(EngineSteering, CudaBackendDoesNotRefuseSteering) {
    const DirFile f;
    EngineOptions o = options({f.path, std::nullopt, std::nullopt});
    o.backend = Backend::Cuda;
    const std::string msg = open_error(o);
    EXPECT_EQ(msg.find("steering"), std::string::npos) << msg;
}

}  // namespace
}  // namespace ds4::cpu::test
