// Deterministic corruption sweep: every truncation point and several overwrites of every
// byte of the header/metadata/directory region must either parse (and then every
// accessor must work) or throw ds4::Error. Anything else (another exception type, an
// out-of-bounds read caught by ASan, a crash) fails the test.
#include <gtest/gtest.h>

#include <random>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "gguf_builder.h"

namespace ds4::gguf {
namespace {

struct Outcome {
    size_t parsed = 0;
    size_t rejected = 0;
};

// Parses one mutated input; records a failure for any exception but ds4::Error.
void check_one(const std::vector<uint8_t>& bytes, const std::string& what, Outcome& out) {
    try {
        const File f = File::parse(bytes, "corrupt.gguf");
        volatile uint64_t sink = testing::exercise_all(f);
        (void)sink;
        ++out.parsed;
    } catch (const ds4::Error& e) {
        ++out.rejected;
        EXPECT_EQ(std::string(e.what()).rfind("corrupt.gguf: ", 0), 0u) << what << ": " << e.what();
    } catch (const std::exception& e) {
        ADD_FAILURE() << what << ": unexpected exception type: " << e.what();
    } catch (...) {
        ADD_FAILURE() << what << ": unexpected non-standard exception";
    }
}

TEST(GgufCorruption, SampleFileParsesAndExercises) {
    const auto s = testing::make_sample_file();
    const File f = File::parse(s.bytes, "sample.gguf");
    ASSERT_EQ(f.metadata().size(), 11u);
    ASSERT_EQ(f.tensors().size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
        const auto d = f.tensor_data(f.tensors()[i]);
        EXPECT_TRUE(std::equal(d.begin(), d.end(), s.tensor_bytes[i].begin(), s.tensor_bytes[i].end()));
    }
    EXPECT_EQ(f.get_string_array("t.tokens"), (std::vector<std::string_view>{"a", "", "xyz"}));
    EXPECT_EQ(f.get_int_array("t.ratios"), (std::vector<int64_t>{0, 4, 128}));
    EXPECT_GT(testing::exercise_all(f), 0u);
}

TEST(GgufCorruption, TruncationAtEveryHeaderOffsetAndAcrossTheData) {
    const auto s = testing::make_sample_file();
    const File whole = File::parse(s.bytes, "sample.gguf");
    const uint64_t needed = whole.tensors().back().abs_offset + whole.tensors().back().n_bytes;
    Outcome out;
    std::vector<size_t> cuts;
    for (size_t n = 0; n <= s.infos_end + 40; ++n) cuts.push_back(n);
    for (size_t n = s.infos_end + 40; n < s.bytes.size(); n += 3) cuts.push_back(n);
    for (size_t n : cuts) {
        const std::vector<uint8_t> b(s.bytes.begin(), s.bytes.begin() + static_cast<ptrdiff_t>(n));
        check_one(b, cat("truncated to ", n), out);
    }
    // A prefix parses exactly when it still holds the last tensor's bytes (only the
    // trailing padding was cut).
    size_t complete = 0;
    for (size_t n : cuts) complete += n >= needed;
    EXPECT_GT(complete, 0u);
    EXPECT_EQ(out.parsed, complete);
    EXPECT_EQ(out.rejected, cuts.size() - complete);
}

TEST(GgufCorruption, OverwriteEveryHeaderByte) {
    const auto s = testing::make_sample_file();
    Outcome out;
    std::mt19937 rng(1234);  // fixed seed: the sweep is the same on every run
    for (size_t i = 0; i < s.infos_end; ++i) {
        const uint8_t orig = s.bytes[i];
        const uint8_t values[] = {0x00, 0xff, static_cast<uint8_t>(orig + 1),
                                  static_cast<uint8_t>(orig ^ 0x80), static_cast<uint8_t>(rng()),
                                  static_cast<uint8_t>(rng())};
        for (uint8_t v : values) {
            std::vector<uint8_t> b = s.bytes;
            b[i] = v;
            check_one(b, cat("byte ", i, " = ", int(v)), out);
        }
    }
    // Both outcomes must occur: some bytes are free (string contents), many are not.
    EXPECT_GT(out.parsed, 0u);
    EXPECT_GT(out.rejected, 0u);
}

TEST(GgufCorruption, RandomMultiByteDamage) {
    const auto s = testing::make_sample_file();
    Outcome out;
    std::mt19937 rng(42);
    for (int round = 0; round < 4000; ++round) {
        std::vector<uint8_t> b = s.bytes;
        const int n = 1 + static_cast<int>(rng() % 6);
        for (int k = 0; k < n; ++k) b[rng() % s.infos_end] = static_cast<uint8_t>(rng());
        if (rng() % 4 == 0) b.resize(rng() % b.size());
        check_one(b, cat("round ", round), out);
    }
    EXPECT_GT(out.rejected, 0u);
}

}  // namespace
}  // namespace ds4::gguf
