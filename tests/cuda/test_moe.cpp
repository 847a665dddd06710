// The routed experts' device-side pieces (no host round trip in a step): moe_group (the
// grouping the host used to make), matmul_experts (one launch over the active experts),
// moe_sum, and matmul_groups (the grouped low-rank output in one launch).
#include <gtest/gtest.h>

#include <algorithm>
#include <utility>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "cuda/device.h"
#include "cuda/forward_kernels.h"
#include "cuda/kernels.h"
#include "cuda/matmul_mma_experts.h"
#include "cuda/matmul_q8.h"
#include "cuda_test_util.h"
#include "gguf/ggml_types.h"
#include "quant/reference.h"

namespace ds4::cuda {
namespace {

struct Quantized {
    std::vector<uint8_t> bytes;
    std::vector<float> dequant;
};

Quantized quantize(GgmlType t, uint64_t rows, uint64_t cols, uint32_t seed) {
    const std::vector<float> w = test::random_floats(rows * cols, seed);
    const uint64_t rb = ggml_row_bytes(t, cols);
    Quantized q{std::vector<uint8_t>(rows * rb), std::vector<float>(rows * cols)};
    for (uint64_t r = 0; r < rows; ++r) {
        const auto n = static_cast<int64_t>(cols);
        uint8_t* dst = q.bytes.data() + r * rb;
        float* deq = q.dequant.data() + r * cols;
        if (t == GgmlType::Q8_0) {
            auto* b = reinterpret_cast<quant::BlockQ8_0*>(dst);
            quant::ref::quantize_q8_0(w.data() + r * cols, b, n);
            quant::ref::dequant_q8_0(b, deq, n);
        } else {
            auto* b = reinterpret_cast<quant::BlockIQ2XXS*>(dst);
            quant::ref::quantize_iq2_xxs(w.data() + r * cols, b, n, nullptr);
            quant::ref::dequant_iq2_xxs(b, deq, n);
        }
    }
    return q;
}

struct Groups {
    std::vector<uint32_t> expert, begin, count;
};

// Runs matmul_experts over gate-like (w0) and up-like (w1) experts for the groups g.
std::pair<std::vector<float>, std::vector<float>> run_experts(GgmlType t, const Quantized& w0, const Quantized& w1,
                                                              uint64_t slab_rows, uint32_t n_slabs, uint64_t cols,
                                                              const std::vector<float>& x, const Groups& g,
                                                              uint32_t max_slots, uint32_t max_tokens) {
    const auto n_rows = static_cast<uint32_t>(x.size() / cols);
    DeviceBuffer<uint8_t> d0 = to_device<uint8_t>(w0.bytes), d1 = to_device<uint8_t>(w1.bytes);
    DeviceBuffer<float> dx = to_device<float>(x);
    DeviceBuffer<float> y0(uint64_t{n_rows} * slab_rows), y1(uint64_t{n_rows} * slab_rows);
    y0.fill_bytes(0xff);  // NaN poison: every output must be written
    y1.fill_bytes(0xff);
    std::vector<uint32_t> meta(3 * max_slots + 1, 0);
    std::copy(g.expert.begin(), g.expert.end(), meta.begin());
    std::copy(g.begin.begin(), g.begin.end(), meta.begin() + max_slots);
    std::copy(g.count.begin(), g.count.end(), meta.begin() + 2 * max_slots);
    meta[3 * max_slots] = static_cast<uint32_t>(g.expert.size());
    DeviceBuffer<uint32_t> dm = to_device<uint32_t>(meta);
    const ExpertGroups eg{dm.data(), dm.data() + max_slots, dm.data() + 2 * max_slots, dm.data() + 3 * max_slots};
    matmul_experts(t, d0.data(), d1.data(), slab_rows, n_slabs, cols, dx.data(), cols, y0.data(), y1.data(),
                   slab_rows, eg, max_slots, max_tokens, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    return {y0.download(), y1.download()};
}

void expect_near_reference(const Quantized& w, const std::vector<float>& x, const std::vector<float>& y,
                           const Groups& g, uint64_t slab_rows, uint64_t cols) {
    int bad = 0;
    for (size_t s = 0; s < g.expert.size(); ++s)
        for (uint32_t j = g.begin[s]; j < g.begin[s] + g.count[s]; ++j)
            for (uint64_t r = 0; r < slab_rows; ++r) {
                const float* wr = w.dequant.data() + (g.expert[s] * slab_rows + r) * cols;
                const auto [ref, mag] = test::ref_dot(wr, &x[j * cols], cols);
                const float got = y[j * slab_rows + r];
                if (!(std::fabs(got - ref) <= 1e-5 * mag + 1e-6) && bad++ < 5)
                    ADD_FAILURE() << "slot " << s << " row " << j << " out " << r << ": " << got << " vs " << ref;
            }
    EXPECT_EQ(bad, 0);
}

TEST(CudaMoe, ExpertsKernelMatchesReferenceAndIgnoresGrouping) {
    DS4_REQUIRE_GPU();
    const uint64_t slab_rows = 40, cols = 512;
    const uint32_t E = 4;
    for (GgmlType t : {GgmlType::Q8_0, GgmlType::IQ2_XXS}) {
        SCOPED_TRACE(ggml_type_name(t));
        const Quantized w0 = quantize(t, E * slab_rows, cols, 3), w1 = quantize(t, E * slab_rows, cols, 4);
        const std::vector<float> x = test::random_floats(13 * cols, 5);
        // 3 + 9 (a chunk of 8, then 1) + 1 rows; a fourth slot past n_active does nothing
        const Groups g{{2, 0, 3}, {0, 3, 12}, {3, 9, 1}};
        const auto [y0, y1] = run_experts(t, w0, w1, slab_rows, E, cols, x, g, 4, 9);
        expect_near_reference(w0, x, y0, g, slab_rows, cols);
        expect_near_reference(w1, x, y1, g, slab_rows, cols);
        // every row alone in its slot (the batch-1 kernel): the same bits (a token's
        // arithmetic ignores NT and the rows per warp)
        Groups single;
        for (size_t s = 0; s < g.expert.size(); ++s)
            for (uint32_t j = g.begin[s]; j < g.begin[s] + g.count[s]; ++j) {
                single.expert.push_back(g.expert[s]);
                single.begin.push_back(j);
                single.count.push_back(1);
            }
        const auto [z0, z1] = run_experts(t, w0, w1, slab_rows, E, cols, x, single, 13, 1);
        EXPECT_EQ(0, std::memcmp(y0.data(), z0.data(), y0.size() * sizeof(float)));
        EXPECT_EQ(0, std::memcmp(y1.data(), z1.data(), y1.size() * sizeof(float)));
    }
}

// moe_group's outputs in one device buffer poisoned with 0xee, read back field by field.
struct GroupOut {
    DeviceBuffer<uint32_t> buf;
    MoeGroups g;
    std::vector<uint32_t> host;
    GroupOut(uint32_t n, uint32_t K, uint32_t E) : buf(5 * uint64_t{n} * K + n + 3 * E + 2) {
        buf.fill_bytes(0xee);
        const uint64_t nk = uint64_t{n} * K;
        uint32_t* at = buf.data();
        for (uint32_t** p : {&g.src, &g.widx, &g.pos_of, &g.rows}) *p = std::exchange(at, at + nk);
        g.tok_count = std::exchange(at, at + n);
        for (uint32_t** p : {&g.expert, &g.begin, &g.count}) *p = std::exchange(at, at + E);
        g.n_active = at++;
        g.n_pairs = at;
    }
    void download() { host = buf.download(); }
    std::vector<uint32_t> part(const uint32_t* p, size_t len) const {
        const auto off = static_cast<size_t>(p - buf.data());
        return std::vector<uint32_t>(host.begin() + off, host.begin() + off + len);
    }
};

TEST(CudaMoe, GroupMatchesTheHostGroupingAndSumsInExpertOrder) {
    DS4_REQUIRE_GPU();
    const uint32_t n = 4, K = 3, E = 6, dim = 3;
    // token 2 lists expert 5 twice: counted once (its first k)
    const std::vector<uint32_t> sel = {4, 1, 3, 1, 0, 5, 5, 2, 5, 3, 4, 0};
    DeviceBuffer<uint32_t> dsel = to_device<uint32_t>(sel);
    const uint64_t nk = uint64_t{n} * K;
    GroupOut out(n, K, E);
    const MoeGroups& g = out.g;
    moe_group(dsel.data(), n, K, E, g, nullptr);
    // pairs: expert 0 (t1 k1, t3 k2), 1 (t0 k1, t1 k0), 2 (t2 k1), 3 (t0 k2, t3 k0),
    // 4 (t0 k0, t3 k1), 5 (t1 k2, t2 k0)
    const std::vector<float> ex = test::random_floats(11 * dim, 9);
    DeviceBuffer<float> dex = to_device<float>(ex), moe(n * dim);
    moe_sum(dex.data(), g, n, K, moe.data(), dim, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    out.download();
    const auto part = [&](const uint32_t* p, size_t len) { return out.part(p, len); };
    EXPECT_EQ(part(g.n_pairs, 1), std::vector<uint32_t>{11});
    EXPECT_EQ(part(g.n_active, 1), std::vector<uint32_t>{6});
    EXPECT_EQ(part(g.src, 11), (std::vector<uint32_t>{1, 3, 0, 1, 2, 0, 3, 0, 3, 1, 2}));
    EXPECT_EQ(part(g.widx, 11), (std::vector<uint32_t>{4, 11, 1, 3, 7, 2, 9, 0, 10, 5, 6}));
    EXPECT_EQ(part(g.expert, 6), (std::vector<uint32_t>{0, 1, 2, 3, 4, 5}));
    EXPECT_EQ(part(g.begin, 6), (std::vector<uint32_t>{0, 2, 4, 5, 7, 9}));
    EXPECT_EQ(part(g.count, 6), (std::vector<uint32_t>{2, 2, 1, 2, 2, 2}));
    EXPECT_EQ(part(g.tok_count, n), (std::vector<uint32_t>{3, 3, 2, 3}));
    const std::vector<uint32_t> rows = part(g.rows, nk);
    const std::vector<std::vector<uint32_t>> want = {{2, 5, 7}, {0, 3, 9}, {4, 10}, {1, 6, 8}};
    const std::vector<float> got = moe.download();
    for (uint32_t t = 0; t < n; ++t) {
        EXPECT_EQ(std::vector<uint32_t>(rows.begin() + t * K, rows.begin() + t * K + want[t].size()), want[t]);
        for (uint32_t d = 0; d < dim; ++d) {
            float s = 0.0f;
            for (uint32_t r : want[t]) s += ex[r * dim + d];
            EXPECT_EQ(got[t * dim + d], s) << "token " << t << " d " << d;
        }
    }
}

// A full-size pass (n tokens of K = 6 of E = 256 experts, some repeated within a token,
// some ids past E): every output of moe_group equals the host's serial grouping.
TEST(CudaMoe, GroupOfALongPassMatchesTheSerialGrouping) {
    DS4_REQUIRE_GPU();
    const uint32_t K = 6, E = 256;
    for (const uint32_t n : {1u, 5u, 6u, 31u, 1500u, 2048u}) {  // 5: the one-warp kernel's last, 6: past it
        SCOPED_TRACE(cat("n=", n));
        const uint64_t nk = uint64_t{n} * K;
        std::mt19937 rng(n);
        std::vector<uint32_t> sel(nk);
        for (uint64_t i = 0; i < nk; ++i) {
            const uint32_t r = rng() % 100;
            // mostly a few popular experts (long groups), some repeats, a few invalid ids
            sel[i] = r < 40 ? rng() % 8 : r < 45 && i % K > 0 ? sel[i - 1] : r < 47 ? E + rng() % 5 : rng() % E;
        }
        // the serial grouping
        std::vector<uint32_t> src, widx, pos_of(nk, 0xeeeeeeeeu), expert, begin, count, rows(nk, 0xeeeeeeeeu),
            tok_count(n, 0);
        const auto first = [&](uint64_t i) {
            const uint64_t k = i % K;
            bool f = sel[i] < E;
            for (uint64_t j = 0; j < k && f; ++j) f = sel[i - k + j] != sel[i];
            return f;
        };
        for (uint32_t e = 0; e < E; ++e) {
            const auto at = static_cast<uint32_t>(src.size());
            for (uint64_t i = 0; i < nk; ++i)
                if (sel[i] == e && first(i)) {
                    pos_of[i] = static_cast<uint32_t>(src.size());
                    src.push_back(static_cast<uint32_t>(i / K));
                    widx.push_back(static_cast<uint32_t>(i));
                }
            if (src.size() > at) expert.push_back(e), begin.push_back(at), count.push_back(static_cast<uint32_t>(src.size() - at));
        }
        for (uint32_t t = 0; t < n; ++t) {
            std::vector<uint32_t> r;
            for (uint32_t k = 0; k < K; ++k)
                if (first(uint64_t{t} * K + k)) r.push_back(pos_of[uint64_t{t} * K + k]);
            std::sort(r.begin(), r.end());
            std::copy(r.begin(), r.end(), rows.begin() + uint64_t{t} * K);
            tok_count[t] = static_cast<uint32_t>(r.size());
        }

        DeviceBuffer<uint32_t> dsel = to_device<uint32_t>(sel);
        GroupOut out(n, K, E);
        const MoeGroups& g = out.g;
        moe_group(dsel.data(), n, K, E, g, nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        out.download();
        const auto part = [&](const uint32_t* p, size_t len) { return out.part(p, len); };
        const size_t M = src.size(), A = expert.size();
        EXPECT_EQ(part(g.n_pairs, 1), std::vector<uint32_t>{static_cast<uint32_t>(M)});
        EXPECT_EQ(part(g.n_active, 1), std::vector<uint32_t>{static_cast<uint32_t>(A)});
        EXPECT_EQ(part(g.src, M), src);
        EXPECT_EQ(part(g.widx, M), widx);
        EXPECT_EQ(part(g.pos_of, nk), pos_of);
        EXPECT_EQ(part(g.expert, A), expert);
        EXPECT_EQ(part(g.begin, A), begin);
        EXPECT_EQ(part(g.count, A), count);
        EXPECT_EQ(part(g.tok_count, n), tok_count);
        const std::vector<uint32_t> got_rows = part(g.rows, nk);
        for (uint32_t t = 0; t < n; ++t)
            ASSERT_TRUE(std::equal(rows.begin() + uint64_t{t} * K, rows.begin() + uint64_t{t} * K + tok_count[t],
                                   got_rows.begin() + uint64_t{t} * K))
                << "rows of token " << t;
    }
}

TEST(CudaMoe, GroupedProductsInOneLaunchEqualSeparateCalls) {
    DS4_REQUIRE_GPU();
    const uint64_t rows = 96, cols = 512, G = 3;
    const uint32_t n_tok = 2;
    ASSERT_TRUE(matmul_groups_fused(GgmlType::Q8_0, rows, cols));
    const Quantized w = quantize(GgmlType::Q8_0, G * rows, cols, 21);
    const std::vector<float> x = test::random_floats(n_tok * G * cols, 22);  // token stride G·cols
    DeviceBuffer<uint8_t> dw = to_device<uint8_t>(w.bytes);
    DeviceBuffer<float> dx = to_device<float>(x), a(n_tok * G * rows), b(n_tok * G * rows);
    a.fill_bytes(0xff);
    matmul_groups(GgmlType::Q8_0, dw.data(), rows, cols, G, dx.data(), G * cols, cols, a.data(), G * rows, rows,
                  n_tok, nullptr);
    const uint64_t rb = ggml_row_bytes(GgmlType::Q8_0, cols);
    for (uint64_t g = 0; g < G; ++g)
        matmul(GgmlType::Q8_0, dw.data() + g * rows * rb, rows, cols, dx.data() + g * cols, G * cols,
               b.data() + g * rows, G * rows, n_tok, nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> ya = a.download(), yb = b.download();
    for (float v : ya) ASSERT_FALSE(std::isnan(v));
    EXPECT_EQ(0, std::memcmp(ya.data(), yb.data(), ya.size() * sizeof(float)));
}

}  // namespace
}  // namespace ds4::cuda

namespace ds4::cuda {
namespace {

// The quantizers' row sources (act_rows.h) against the copy passes they replace: rows by
// index == gather_rows then quantize, the weighted SwiGLU on the way in ==
// weighted_swiglu then quantize; bitwise, for both record formats (Q8_0 per 32, Q8_K per
// 256); rows past *m_dev are left alone (poisoned bytes stay).
TEST(CudaMoe, QuantizerRowSourcesEqualTheCopyPasses) {
    DS4_REQUIRE_GPU();
    constexpr uint32_t kRows = 7, kPairs = 40, kLive = 33, kCols = 768;
    const std::vector<float> x = test::random_floats(kRows * kCols, 91, -3.f, 3.f);
    const std::vector<float> g = test::random_floats(kPairs * kCols, 92, -12.f, 12.f);
    const std::vector<float> u = test::random_floats(kPairs * kCols, 93, -12.f, 12.f);
    const std::vector<float> w = test::random_floats(kPairs, 94, 0.f, 2.f);
    std::vector<uint32_t> src(kPairs), widx(kPairs);
    for (uint32_t i = 0; i < kPairs; ++i) src[i] = (i * 5 + 3) % kRows, widx[i] = (i * 7 + 1) % kPairs;
    const std::vector<uint32_t> live{kLive};
    DeviceBuffer<float> dx = to_device<float>(x), dg = to_device<float>(g), du = to_device<float>(u),
                        dw = to_device<float>(w), tmp(kPairs * kCols);
    DeviceBuffer<uint32_t> dsrc = to_device<uint32_t>(src), dwidx = to_device<uint32_t>(widx),
                           dlive = to_device<uint32_t>(live);
    using Quant = void (*)(const float*, uint64_t, uint64_t, uint32_t, void*, cudaStream_t, const ActRows&);
    struct Format {
        const char* name;
        Quant quant;
        uint64_t rec;
    };
    for (const Format& f : {Format{"q8", quantize_q8_activations, q8_token_bytes(kCols)},
                            Format{"q8k", quantize_q8k_activations, q8k_token_bytes(kCols)}}) {
        SCOPED_TRACE(f.name);
        const uint64_t bytes = f.rec * kPairs, live_bytes = f.rec * kLive;
        DeviceBuffer<uint8_t> want(bytes), got(bytes);
        // rows by index
        tmp.fill_bytes(0);
        gather_rows(dx.data(), dsrc.data(), tmp.data(), kPairs, kCols, nullptr, dlive.data());
        want.fill_bytes(0x5a);
        f.quant(tmp.data(), kCols, kCols, kLive, want.data(), nullptr, {});
        got.fill_bytes(0x5a);
        f.quant(dx.data(), kCols, kCols, kPairs, got.data(), nullptr, ActRows{dsrc.data(), dlive.data()});
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<uint8_t> a = want.download(), b = got.download();
        EXPECT_EQ(0, std::memcmp(a.data(), b.data(), live_bytes)) << "rows by index";
        EXPECT_TRUE(std::all_of(b.begin() + static_cast<std::ptrdiff_t>(live_bytes), b.end(),
                                [](uint8_t v) { return v == 0x5a; }))
            << "rows past m_dev were written";
        // the weighted SwiGLU on the way in (and a limit of 0: no clamp)
        for (const float limit : {7.f, 0.f}) {
            DS4_CUDA_CHECK(cudaMemcpy(tmp.data(), dg.data(), kPairs * kCols * 4, cudaMemcpyDeviceToDevice));
            weighted_swiglu(tmp.data(), du.data(), dw.data(), dwidx.data(), kPairs, kCols, limit, nullptr, dlive.data());
            f.quant(tmp.data(), kCols, kCols, kLive, want.data(), nullptr, {});
            f.quant(dg.data(), kCols, kCols, kPairs, got.data(), nullptr,
                    ActRows{nullptr, dlive.data(), du.data(), dw.data(), dwidx.data(), limit});
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            a = want.download(), b = got.download();
            EXPECT_EQ(0, std::memcmp(a.data(), b.data(), live_bytes)) << "swiglu, limit " << limit;
        }
    }
}

}  // namespace
}  // namespace ds4::cuda

namespace ds4::cuda {
namespace {

// route_group == route then moe_group: the probabilities, selections, weights and every
// grouping array, bitwise (one launch up to 32 pairs: n <= 5 at K = 6; n = 6 takes the
// two launches), top-K and hash layers (random hash rows repeat experts).
TEST(CudaMoe, RouteGroupEqualsRouteThenGroup) {
    DS4_REQUIRE_GPU();
    constexpr uint32_t K = 6, E = 256, kVocab = 50;
    const std::vector<float> bias = test::random_floats(E, 71, -0.5f, 0.5f);
    std::mt19937 rng(72);
    std::vector<int32_t> tid2eid(kVocab * K);
    for (int32_t& e : tid2eid) e = static_cast<int32_t>(rng() % E);
    DeviceBuffer<float> dbias = to_device<float>(bias);
    DeviceBuffer<int32_t> dhash = to_device<int32_t>(tid2eid);
    for (const bool hash : {false, true})
        for (const uint32_t n : {1u, 2u, 5u, 6u}) {
            SCOPED_TRACE(cat(hash ? "hash" : "top-k", " n=", n));
            const std::vector<float> probs = test::random_floats(n * E, 73 + n, -4.f, 4.f);
            std::vector<int32_t> tokens(n);
            for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % kVocab);
            DeviceBuffer<int32_t> dtok = to_device<int32_t>(tokens);
            DeviceBuffer<float> pa = to_device<float>(probs), pb = to_device<float>(probs), wa(n * K), wb(n * K);
            DeviceBuffer<uint32_t> sa(n * K), sb(n * K);
            GroupOut ga(n, K, E), gb(n, K, E);
            route(pa.data(), dbias.data(), dhash.data(), dtok.data(), n, E, K, 1.5f, hash, sa.data(), wa.data(), nullptr);
            moe_group(sa.data(), n, K, E, ga.g, nullptr);
            route_group(pb.data(), dbias.data(), dhash.data(), dtok.data(), n, E, K, 1.5f, hash, sb.data(), wb.data(),
                        gb.g, nullptr);
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            ga.download();
            gb.download();
            EXPECT_EQ(pa.download(), pb.download());
            EXPECT_EQ(sa.download(), sb.download());
            const std::vector<float> a = wa.download(), b = wb.download();
            EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
            EXPECT_EQ(ga.host, gb.host);
        }
}

// route's top K against a host ranking of the same biased values (the device's own
// probabilities + bias, one f32 add, as the kernel): value descending, lower id first on
// ties; bias rows with many ties, E past one expert per thread (300), K = 6 and 8.
TEST(CudaMoe, RouteTakesTheTopKInOrderWithTies) {
    DS4_REQUIRE_GPU();
    for (const auto& [E, K] : std::vector<std::pair<uint32_t, uint32_t>>{{256, 6}, {300, 8}, {256, 1}}) {
        for (const bool ties : {false, true}) {
            SCOPED_TRACE(cat("E=", E, " K=", K, ties ? " ties" : ""));
            constexpr uint32_t n = 3;
            std::vector<float> bias = test::random_floats(E, 81 + E, -0.5f, 0.5f);
            std::vector<float> probs = test::random_floats(n * E, 83 + K, -4.f, 4.f);
            if (ties) {  // equal probabilities per token, bias in 7 levels: ties everywhere
                for (uint32_t e = 0; e < E; ++e) bias[e] = 0.125f * static_cast<float>(e % 7);
                for (uint32_t t = 0; t < n; ++t)
                    for (uint32_t e = 0; e < E; ++e) probs[t * E + e] = 0.5f * static_cast<float>(t);
            }
            DeviceBuffer<float> dbias = to_device<float>(bias), dp = to_device<float>(probs), dw(n * K);
            DeviceBuffer<uint32_t> dsel(n * K);
            route(dp.data(), dbias.data(), nullptr, nullptr, n, E, K, 1.5f, false, dsel.data(), dw.data(), nullptr);
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            const std::vector<float> p = dp.download(), w = dw.download();
            const std::vector<uint32_t> sel = dsel.download();
            for (uint32_t t = 0; t < n; ++t) {
                std::vector<uint32_t> order(E);
                std::iota(order.begin(), order.end(), 0u);
                const auto biased = [&](uint32_t e) { return p[t * E + e] + bias[e]; };
                std::stable_sort(order.begin(), order.end(),
                                 [&](uint32_t a, uint32_t b) { return biased(a) > biased(b); });
                float sum = 0.0f;
                for (uint32_t k = 0; k < K; ++k) sum += p[t * E + order[k]];
                for (uint32_t k = 0; k < K; ++k) {
                    EXPECT_EQ(sel[t * K + k], order[k]) << "token " << t << " rank " << k;
                    const float want = p[t * E + order[k]] / sum * 1.5f;
                    EXPECT_EQ(0, std::memcmp(&w[t * K + k], &want, sizeof(float))) << "token " << t << " rank " << k;
                }
            }
        }
    }
}

}  // namespace
}  // namespace ds4::cuda
