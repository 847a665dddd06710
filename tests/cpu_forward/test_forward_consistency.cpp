// Properties of the CPU forward pass that do not need reference logits: any split of a
// sequence into prefill chunks gives the same logits as one prefill and as token-by-token
// decode; the thread count does not change a bit; a reset state behaves like a new one;
// misuse is reported.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>

#include "ds4/error.h"
#include "golden_runs.h"

namespace ds4::cpu::test {
namespace {

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float d = 0.0f;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
}

RunOptions prefix(uint32_t n_tokens, ThreadPool* pool = nullptr, KvState* state = nullptr) {
    RunOptions o;
    o.n_tokens = n_tokens;
    o.pool = pool;
    o.state = state;
    return o;
}

class ForwardConsistency : public ::testing::TestWithParam<std::string> {
protected:
    const LoadedGolden& lg() const { return loaded_golden(GetParam()); }
    // small: the first 300 tokens (two ratio-128 rows, 75 ratio-4 rows, indexer active
    // from position 67) keep the sanitizer build fast; tiny: all 264
    uint32_t T() const { return std::min<uint32_t>(lg().golden->T, 300); }
};

// Chunks of 7, 64 and 1 tokens (cycling, so chunks start at every phase of the
// compressor windows and cross the indexer top-k threshold) against one prefill of the
// whole sequence and against one-token decode. Each token runs the same code in the same
// order in every schedule, so the logits agree exactly.
TEST_P(ForwardConsistency, ChunkedPrefillEqualsOnePrefillAndDecode) {
    const uint32_t T = this->T();
    const auto one_shot = run_in_chunks(lg(), {T}, prefix(T));
    const auto chunked = run_in_chunks(lg(), cyclic_schedule({7, 64, 1}, T), prefix(T));
    const auto decode = run_in_chunks(lg(), {1}, prefix(T));
    const float d_chunked = max_abs_diff(one_shot, chunked);
    const float d_decode = max_abs_diff(one_shot, decode);
    std::cout << "[consistency] " << GetParam() << ": max |chunked(7,64,1) - one prefill| = " << d_chunked
              << ", max |decode - one prefill| = " << d_decode << "\n";
    EXPECT_LE(d_chunked, 1e-6f);
    EXPECT_LE(d_decode, 1e-6f);
}

TEST_P(ForwardConsistency, ThreadCountDoesNotChangeLogits) {
    const uint32_t T = this->T();
    const auto schedule = cyclic_schedule({37, 1, 5}, T);
    const auto single = run_in_chunks(lg(), schedule, prefix(T));
    ThreadPool pool(3);
    const auto threaded = run_in_chunks(lg(), schedule, prefix(T, &pool));
    EXPECT_EQ(max_abs_diff(single, threaded), 0.0f);
}

TEST_P(ForwardConsistency, ResetStateMatchesFreshState) {
    const uint32_t T = this->T();
    KvState state(lg().golden->hp, T);
    const auto first = run_in_chunks(lg(), {50, 3}, prefix(T, nullptr, &state));
    EXPECT_EQ(state.n_tokens(), T);
    state.reset();
    EXPECT_EQ(state.n_tokens(), 0u);
    const auto second = run_in_chunks(lg(), {50, 3}, prefix(T, nullptr, &state));
    EXPECT_EQ(max_abs_diff(first, second), 0.0f);
}

INSTANTIATE_TEST_SUITE_P(Goldens, ForwardConsistency, ::testing::Values("tiny_s1", "tiny_s2", "small_s1"),
                         [](const auto& p) { return p.param; });

TEST(ForwardErrors, RejectsMisuse) {
    const LoadedGolden& lg = loaded_golden("tiny_s1");
    const Golden& g = *lg.golden;
    KvState state(g.hp, 16);
    CpuForward fwd(*lg.model);
    std::vector<float> logits(g.hp.n_vocab);
    const std::vector<uint32_t> last{0};
    const std::vector<int32_t> one{g.tokens[0]};
    // position must continue the sequence
    EXPECT_THROW(fwd.eval(state, 3, one, last, logits), Error);
    // token ids must be inside the vocabulary
    const std::vector<int32_t> bad{static_cast<int32_t>(g.hp.n_vocab)};
    EXPECT_THROW(fwd.eval(state, 0, bad, last, logits), Error);
    // logits rows must be inside the chunk, and the buffer large enough
    const std::vector<uint32_t> outside{1};
    EXPECT_THROW(fwd.eval(state, 0, one, outside, logits), Error);
    std::vector<float> small(g.hp.n_vocab - 1);
    EXPECT_THROW(fwd.eval(state, 0, one, last, small), Error);
    // the context is a hard limit
    const std::vector<int32_t> many(17, g.tokens[0]);
    EXPECT_THROW(fwd.eval(state, 0, many, {}, logits), Error);
    // nothing above advanced the state
    EXPECT_EQ(state.n_tokens(), 0u);
    fwd.eval(state, 0, one, last, logits);
    EXPECT_EQ(state.n_tokens(), 1u);
}

TEST(ForwardErrors, MissingTensorIsNamed) {
    const Golden& g = *loaded_golden("tiny_s1").golden;
    WeightSet partial;
    try {
        CpuModel model(g.hp, partial);
        FAIL() << "binding an empty weight set succeeded";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("token_embd.weight"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace ds4::cpu::test
