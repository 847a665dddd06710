// Writer behaviour: streaming in any chunking, placed writes from several threads, strict
// byte accounting, temp file and rename, verbatim record copies, declaration errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <thread>
#include <vector>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "gguf_builder.h"

namespace ds4::gguf {
namespace {

namespace fs = std::filesystem;

template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const ds4::Error& e) {
        return e.what();
    }
    return "(no error)";
}

class WriterTest : public ::testing::Test {
protected:
    void TearDown() override {
        fs::remove(path_);
        fs::remove(path_ + ".tmp");
    }
    // Three tensors: 20, 68 and 84 bytes.
    static void declare(Writer& w) {
        w.add_string("general.name", "w");
        const uint64_t a[] = {5}, b[] = {32, 2}, c[] = {256};
        w.add_tensor("a", a, GgmlType::F32);
        w.add_tensor("b", b, GgmlType::Q8_0);
        w.add_tensor("c", c, GgmlType::Q2_K);
    }
    static std::vector<uint8_t> payload() {
        std::vector<uint8_t> v(20 + 68 + 84);
        std::iota(v.begin(), v.end(), uint8_t{1});
        return v;
    }
    std::string path_ = testing::temp_path("writer");
};

TEST_F(WriterTest, AnyChunkingGivesIdenticalFiles) {
    const auto data = payload();
    std::vector<uint8_t> reference;
    for (size_t chunk : {size_t{1}, size_t{7}, size_t{20}, size_t{64}, data.size()}) {
        Writer w;
        declare(w);
        w.begin(path_);
        for (size_t i = 0; i < data.size(); i += chunk)
            w.write_data(std::span(data).subspan(i, std::min(chunk, data.size() - i)));
        w.finish();
        const auto bytes = testing::read_file_bytes(path_);
        if (reference.empty()) reference = bytes;
        EXPECT_EQ(bytes, reference) << "chunk " << chunk;
    }
    const File f = File::parse(reference, "w.gguf");
    ASSERT_EQ(f.tensors().size(), 3u);
    EXPECT_EQ(f.tensors()[1].offset, 32u);
    EXPECT_EQ(f.tensors()[2].offset, 32u + 96u);
    EXPECT_EQ(f.size(), f.data_start() + 32 + 96 + 96);
    const auto c = f.tensor_data(f.tensors()[2]);
    EXPECT_TRUE(std::equal(c.begin(), c.end(), data.begin() + 88));
    // Padding between tensors and after the last one is zero.
    for (uint64_t i = f.tensors()[0].abs_offset + 20; i < f.tensors()[1].abs_offset; ++i)
        EXPECT_EQ(reference[i], 0) << i;
    for (uint64_t i = f.tensors()[2].abs_offset + 84; i < f.size(); ++i) EXPECT_EQ(reference[i], 0) << i;
    // Between the directory and data_start too.
    EXPECT_EQ(reference[f.data_start() - 1], 0);
}

// write_tensor_at from several threads, pieces in any order (a zero-byte tensor
// declared between): the file write_data streams, byte for byte, padding included.
TEST_F(WriterTest, PlacedWritesFromThreadsGiveTheStreamedFile) {
    const auto declare_with_empty = [](Writer& w) {
        declare(w);
        const uint64_t e[] = {0};
        w.add_tensor("empty", e, GgmlType::F32);
        const uint64_t d[] = {32, 3};
        w.add_tensor("d", d, GgmlType::Q8_0);  // 102 bytes
    };
    std::vector<uint8_t> data(20 + 68 + 84 + 102);
    std::iota(data.begin(), data.end(), uint8_t{3});
    Writer streamed;
    declare_with_empty(streamed);
    streamed.begin(path_);
    streamed.write_data(data);
    streamed.finish();
    const auto want = testing::read_file_bytes(path_);
    fs::remove(path_);

    Writer placed;
    declare_with_empty(placed);
    placed.begin(path_);
    const uint64_t starts[] = {0, 20, 88, 172, 172}, sizes[] = {20, 68, 84, 0, 102};
    struct Piece {
        size_t tensor;
        uint64_t at, n;
    };
    std::vector<Piece> pieces;
    for (size_t t = 0; t < 5; ++t)
        for (uint64_t at = 0; at < sizes[t]; at += 13)
            pieces.push_back({t, at, std::min<uint64_t>(13, sizes[t] - at)});
    std::reverse(pieces.begin(), pieces.end());
    std::vector<std::thread> pool;
    for (size_t k = 0; k < 4; ++k)
        pool.emplace_back([&, k] {
            for (size_t i = k; i < pieces.size(); i += 4) {
                const Piece& p = pieces[i];
                const auto bytes = std::span(data).subspan(starts[p.tensor] + p.at, p.n);
                placed.write_tensor_at(p.tensor, p.at, bytes);
            }
        });
    for (auto& t : pool) t.join();
    placed.finish();
    EXPECT_EQ(testing::read_file_bytes(path_), want);
}

TEST_F(WriterTest, PlacedWriteErrors) {
    const auto data = payload();
    {
        Writer w;
        declare(w);
        w.begin(path_);
        w.write_tensor_at(0, 0, std::span(data).first(20));
        w.write_tensor_at(2, 0, std::span(data).first(84));
        w.write_tensor_at(1, 0, std::span(data).first(60));
        EXPECT_EQ(error_of([&] { w.finish(); }),
                  path_ + ": tensor 'b' (#1) received 60 of its 68 bytes before finish()");
    }
    {
        Writer w;
        declare(w);
        w.begin(path_);
        EXPECT_EQ(error_of([&] { w.write_tensor_at(1, 60, std::span(data).first(9)); }),
                  path_ + ": write_tensor_at: bytes [60, 69) outside tensor 'b' (68 bytes)");
        // unusable afterwards, as after a failed write_data
        const auto four = std::span(data).first(4);
        const std::string again = error_of([&] { w.write_tensor_at(0, 0, four); });
        EXPECT_NE(again.find("outside begin()"), std::string::npos) << again;
    }
    {
        Writer w;
        declare(w);
        w.begin(path_);
        EXPECT_EQ(error_of([&] { w.write_tensor_at(3, 0, std::span(data).first(4)); }),
                  path_ + ": write_tensor_at: tensor index 3 out of range (3 declared)");
    }
    {
        Writer w;
        declare(w);
        w.begin(path_);
        w.write_data(std::span(data).first(4));
        EXPECT_EQ(error_of([&] { w.write_tensor_at(0, 4, std::span(data).first(4)); }),
                  "GGUF writer: write_tensor_at() after write_data() in one file");
    }
    {
        Writer w;
        declare(w);
        w.begin(path_);
        w.write_tensor_at(0, 0, std::span(data).first(4));
        EXPECT_EQ(error_of([&] { w.write_data(std::span(data).first(4)); }),
                  "GGUF writer: write_data() after write_tensor_at() in one file");
    }
    EXPECT_FALSE(fs::exists(path_));
}

TEST_F(WriterTest, WritesToTmpThenRenames) {
    Writer w;
    declare(w);
    w.begin(path_);
    EXPECT_TRUE(fs::exists(path_ + ".tmp"));
    EXPECT_FALSE(fs::exists(path_));
    w.write_data(payload());
    w.finish();
    EXPECT_FALSE(fs::exists(path_ + ".tmp"));
    EXPECT_TRUE(fs::exists(path_));
}

TEST_F(WriterTest, DestructorWithoutFinishRemovesTmp) {
    {
        Writer w;
        declare(w);
        w.begin(path_);
        const auto data = payload();
        w.write_data(std::span(data).first(30));
    }
    EXPECT_FALSE(fs::exists(path_ + ".tmp"));
    EXPECT_FALSE(fs::exists(path_));
}

TEST_F(WriterTest, TooFewBytesFailsAtFinish) {
    Writer w;
    declare(w);
    w.begin(path_);
    const auto data = payload();
    w.write_data(std::span(data).first(50));
    EXPECT_EQ(error_of([&] { w.finish(); }),
              path_ + ": tensor 'b' (#1) received 30 of its 68 bytes before finish()");
    EXPECT_NE(error_of([&] { w.finish(); }).find("finish() without a successful begin()"),
              std::string::npos);
}

TEST_F(WriterTest, TooManyBytesFails) {
    Writer w;
    declare(w);
    w.begin(path_);
    auto data = payload();
    data.push_back(9);
    EXPECT_EQ(error_of([&] { w.write_data(data); }),
              path_ + ": 1 bytes of tensor data beyond the 3 declared tensors");
}

TEST_F(WriterTest, DeclarationErrors) {
    Writer w;
    w.add_u32("k", 1);
    EXPECT_EQ(error_of([&] { w.add_string("k", "x"); }), "GGUF writer: metadata key k added twice");
    EXPECT_EQ(error_of([&] { w.add_u32("general.alignment", 48); }),
              "GGUF writer: general.alignment 48 is not a power of two");
    EXPECT_EQ(error_of([&] { w.add_u32("general.alignment", 16); }), "(no error)");
    EXPECT_EQ(w.alignment(), 16u);
    const uint64_t ok[] = {32}, odd[] = {33}, none[] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    w.add_tensor("t", ok, GgmlType::Q8_0);
    EXPECT_EQ(error_of([&] { w.add_tensor("t", ok, GgmlType::F32); }),
              "GGUF writer: tensor 't': declared twice");
    EXPECT_EQ(error_of([&] { w.add_tensor("u", odd, GgmlType::Q8_0); }),
              "GGUF writer: tensor 'u': dim[0]=33 is not a multiple of the Q8_0 block size 32");
    EXPECT_EQ(error_of([&] { w.add_tensor("u", none, GgmlType::F32); }),
              "GGUF writer: tensor 'u': 9 dimensions, expected 1..8");
    EXPECT_EQ(error_of([&] { w.add_tensor("u", {}, GgmlType::F32); }),
              "GGUF writer: tensor 'u': 0 dimensions, expected 1..8");
    EXPECT_EQ(error_of([&] { w.add_tensor("u", ok, static_cast<GgmlType>(5)); }),
              "GGUF writer: tensor 'u': unknown ggml type 5");
    EXPECT_EQ(error_of([&] { w.tensor_bytes(1); }), "GGUF writer: tensor index 1 out of range (1 declared)");
    EXPECT_EQ(w.tensor_count(), 1u);
    EXPECT_EQ(error_of([&] { w.write_data({}); }), "GGUF writer: write_data() outside begin()..finish()");
    w.begin(path_);
    EXPECT_EQ(error_of([&] { w.add_u8("late", 1); }), "GGUF writer: metadata key late added after begin()");
    EXPECT_EQ(error_of([&] { w.add_tensor("late", ok, GgmlType::F32); }),
              "GGUF writer: tensor 'late' added after begin()");
}

TEST_F(WriterTest, U64AlignmentKeyDoesNotChangeAlignment) {
    Writer w;
    w.add_u64("general.alignment", 64);
    EXPECT_EQ(w.alignment(), 32u);
}

TEST_F(WriterTest, CopyKvIsVerbatim) {
    const auto sample = testing::make_sample_file();
    const File src = File::parse(sample.bytes, "sample.gguf");
    Writer w;
    for (const auto& kv : src.metadata()) w.copy_kv(src, kv);
    w.begin(path_);
    w.finish();
    const auto out = testing::read_file_bytes(path_);
    const File f = File::parse(out, "copy.gguf");
    ASSERT_EQ(f.metadata().size(), src.metadata().size());
    for (size_t i = 0; i < f.metadata().size(); ++i) {
        const auto& a = src.metadata()[i];
        const auto& b = f.metadata()[i];
        EXPECT_EQ(a.key, b.key);
        EXPECT_EQ(a.type, b.type);
        const auto ra = src.raw_value(a), rb = f.raw_value(b);
        EXPECT_TRUE(std::equal(ra.begin(), ra.end(), rb.begin(), rb.end())) << a.key;
    }
    // The whole metadata region is byte-identical (same header counts aside).
    EXPECT_TRUE(std::equal(sample.bytes.begin() + 16, sample.bytes.begin() + 16 + 8 +
                               (f.metadata().back().value_offset + f.metadata().back().value_size - 24),
                           out.begin() + 16));
}

TEST_F(WriterTest, CopiedU32AlignmentApplies) {
    testing::RawGguf g;
    g.alignment = 128;
    g.kv_scalar<uint32_t>("general.alignment", ValueType::U32, 128);
    const auto bytes = g.build();
    const File src = File::parse(bytes, "src.gguf");
    Writer w;
    w.copy_kv(src, src.metadata()[0]);
    EXPECT_EQ(w.alignment(), 128u);
}

TEST_F(WriterTest, BeginFailsOnUnwritableDirectory) {
    Writer w;
    const std::string bad = path_ + ".dir/none/x.gguf";
    EXPECT_NE(error_of([&] { w.begin(bad); }).find(bad + ".tmp: cannot create: No such file or directory"),
              std::string::npos);
}

}  // namespace
}  // namespace ds4::gguf
