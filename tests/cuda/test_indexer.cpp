// The indexer's fast per-token top k (cuda/indexer_fast.h) against its first version
// (set_indexer_fast(false)) on random data: bitwise the same scores and the same rows in
// the same order, at several row counts (a grid bound above the row count too), with
// ties (duplicated rows; all-zero weights or every dot negative: every score 0, so the
// first k rows win) and weights of both signs (scores of both signs). Also checks the order against
// a host ranking of the downloaded scores, and prints both versions' kernel times.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <numeric>
#include <vector>

#include "cuda/device.h"
#include "cuda/forward_kernels.h"
#include "cuda/indexer_fast.h"
#include "cuda_test_util.h"

namespace ds4::cuda {
namespace {

constexpr uint32_t kD = 128;

// The published indexer (64 heads, top 512) unless a test sets a smaller one (the demo
// model's 4 heads, top 16: head groups below 32).
struct Shape {
    uint32_t heads = 64, top = 512;
};
Shape g_shape;

struct Result {
    std::vector<float> scores;
    std::vector<uint32_t> sel;
    float ms = 0;
};

struct IndexerCase {
    DeviceBuffer<float> q, w, rows;
    DeviceBuffer<uint32_t> n_rows;
    uint32_t n, max_rows;

    IndexerCase(const std::vector<float>& hq, const std::vector<float>& hw,
                const std::vector<float>& hrows, uint32_t n_, uint32_t max_rows_)
        : q(to_device<float>(hq)),
          w(to_device<float>(hw)),
          rows(to_device<float>(hrows)),
          n_rows(1),
          n(n_),
          max_rows(max_rows_) {
        n_rows.upload(std::vector<uint32_t>{n});
    }

    Result run(bool fast, int reps = 1) {
        set_indexer_fast(fast);
        DeviceBuffer<float> scores(max_rows);
        DeviceBuffer<uint32_t> sel(g_shape.top);
        scores.fill_bytes(0xff);
        sel.fill_bytes(0xff);
        Stream s;
        cudaEvent_t e0, e1;
        DS4_CUDA_CHECK(cudaEventCreate(&e0));
        DS4_CUDA_CHECK(cudaEventCreate(&e1));
        const auto once = [&] {
            indexer_topk(q.data(), w.data(), rows.data(), n_rows.data(), max_rows, kD,
                         g_shape.heads, g_shape.top, scores.data(), sel.data(), s.get());
        };
        once();  // warm-up
        DS4_CUDA_CHECK(cudaEventRecord(e0, s.get()));
        for (int r = 0; r < reps; ++r) once();
        DS4_CUDA_CHECK(cudaEventRecord(e1, s.get()));
        s.sync();
        Result res;
        DS4_CUDA_CHECK(cudaEventElapsedTime(&res.ms, e0, e1));
        res.ms /= static_cast<float>(reps);
        DS4_CUDA_CHECK(cudaEventDestroy(e0));
        DS4_CUDA_CHECK(cudaEventDestroy(e1));
        res.scores = scores.download();
        res.scores.resize(n);
        res.sel = sel.download();
        set_indexer_fast(true);
        return res;
    }
};

// The first k rows by (score descending, row ascending), in that order.
std::vector<uint32_t> host_topk(const std::vector<float>& s) {
    std::vector<uint32_t> idx(s.size());
    std::iota(idx.begin(), idx.end(), 0u);
    std::stable_sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return s[a] > s[b]; });
    idx.resize(g_shape.top);
    return idx;
}

void expect_same(uint32_t n, uint32_t max_rows, const std::vector<float>& q,
                 const std::vector<float>& w, const std::vector<float>& rows, const char* what) {
    IndexerCase c(q, w, rows, n, max_rows);
    const Result old = c.run(false, 3), fast = c.run(true, 3);
    ASSERT_EQ(old.scores.size(), fast.scores.size());
    size_t differ = 0;
    for (size_t i = 0; i < old.scores.size(); ++i)
        differ += std::memcmp(&old.scores[i], &fast.scores[i], sizeof(float)) != 0;
    EXPECT_EQ(differ, 0u) << what << " n=" << n << ": scores differ in bits";
    EXPECT_EQ(old.sel, fast.sel) << what << " n=" << n;
    if (n > g_shape.top) {
        EXPECT_EQ(fast.sel, host_topk(old.scores)) << what << " n=" << n;
    }
    std::cout << "[cuda indexer] " << what << " n=" << n << ": first version " << old.ms * 1000
              << " us, fast " << fast.ms * 1000 << " us\n";
}

std::vector<float> random_rows(uint32_t n, uint32_t seed) {
    return test::random_floats(uint64_t{n} * kD, seed);
}

TEST(CudaIndexerFast, SameScoresAndSelectionAsFirstVersion) {
    DS4_REQUIRE_GPU();
    ASSERT_TRUE(indexer_fast_applies(25000, kD, g_shape.heads, g_shape.top));
    const std::vector<float> q = test::random_floats(g_shape.heads * kD, 11);
    const std::vector<float> w = test::random_floats(g_shape.heads, 12, 0.0f, 1.0f);
    for (const uint32_t n : {513u, 600u, 2048u, 8192u, 25000u}) {
        expect_same(n, n, q, w, random_rows(n, n), "random");
        expect_same(n, (n + 255) / 256 * 256 + 256, q, w, random_rows(n, n + 1), "grid above n");
    }
}

TEST(CudaIndexerFast, SmallHeadGroups) {
    DS4_REQUIRE_GPU();
    for (const Shape sh :
         {Shape{4, 16}, Shape{2, 4}, Shape{48, 100}}) {  // groups of 4, 2, 16 heads
        g_shape = sh;
        const std::vector<float> q = test::random_floats(sh.heads * kD, 41);
        const std::vector<float> w = test::random_floats(sh.heads, 42, -1.0f, 1.0f);
        for (const uint32_t n : {17u, 300u, 5000u})
            expect_same(n, n + 64, q, w, random_rows(n, n + 2), "small groups");
    }
    g_shape = Shape{};
}

TEST(CudaIndexerFast, TiesBreakToTheLowerRow) {
    DS4_REQUIRE_GPU();
    const std::vector<float> q = test::random_floats(g_shape.heads * kD, 21);
    const std::vector<float> w =
        test::random_floats(g_shape.heads, 22, -1.0f, 1.0f);  // scores of both signs
    for (const uint32_t n : {600u, 2048u, 8192u}) {
        std::vector<float> rows = random_rows(n, 23);
        for (uint32_t c = 0; c < n; ++c)  // every row repeats one of 97 (many equal scores)
            std::copy_n(rows.begin() + uint64_t{c % 97} * kD, kD, rows.begin() + uint64_t{c} * kD);
        expect_same(n, n, q, w, rows, "duplicated rows");
        expect_same(n, n, q, std::vector<float>(g_shape.heads, 0.0f), random_rows(n, 24),
                    "zero weights");
        const std::vector<float> wneg(g_shape.heads, -0.5f);  // every dot < 0: relu 0 (products −0)
        expect_same(n, n, std::vector<float>(g_shape.heads * kD, -1.0f), wneg,
                    test::random_floats(uint64_t{n} * kD, 25, 0.f, 1.f), "every dot negative");
    }
}

TEST(CudaIndexerFast, NothingAtOrBelowTopK) {
    DS4_REQUIRE_GPU();
    const std::vector<float> q = test::random_floats(g_shape.heads * kD, 31),
                             w = test::random_floats(g_shape.heads, 32);
    IndexerCase c(q, w, random_rows(g_shape.top, 33), g_shape.top,
                  1024);  // n = k: the attention takes every row
    const Result r = c.run(true);
    EXPECT_TRUE(
        std::all_of(r.sel.begin(), r.sel.end(), [](uint32_t v) { return v == 0xffffffffu; }));
}

}  // namespace
}  // namespace ds4::cuda
