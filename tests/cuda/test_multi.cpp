// The decode launch savings of issue 8: merged launches of products that share an input
// (kernels.h matmul_q8r_multi, matmul_multi), the fused small kernels (forward_kernels.h
// norm_rope_rows, hc_post_add) and programmatic dependent launch (cuda/pdl.cuh). Every
// merged part's output is bit for bit its own single call's (part counts above one
// launch's table, parts that split rows differently, 1-13 tokens); each fused kernel gives
// the bits of the launches it replaces; a chain of dependent launches gives the same bits
// with PDL on or off, launched eagerly or replayed from a captured graph.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cuda/device.h"
#include "cuda/forward_kernels.h"
#include "cuda/kernels.h"
#include "cuda/pdl.h"
#include "cuda_test_util.h"
#include "quant/reference.h"
#include "quant/scalars.h"

namespace ds4::cuda {
namespace {

std::vector<uint8_t> q8_rows(uint64_t rows, uint64_t cols, uint32_t seed) {
    const std::vector<float> w = test::random_floats(rows * cols, seed);
    const uint64_t rb = cols / 32 * 34;
    std::vector<uint8_t> bytes(rows * rb);
    for (uint64_t r = 0; r < rows; ++r)
        quant::ref::quantize_q8_0(w.data() + r * cols, reinterpret_cast<quant::BlockQ8_0*>(bytes.data() + r * rb),
                                  static_cast<int64_t>(cols));
    return bytes;
}

std::vector<uint8_t> f16_rows(uint64_t rows, uint64_t cols, uint32_t seed) {
    const std::vector<float> w = test::random_floats(rows * cols, seed);
    std::vector<uint8_t> bytes(rows * cols * 2);
    for (uint64_t i = 0; i < w.size(); ++i) {
        const uint16_t h = quant::f32_to_f16(w[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
    return bytes;
}

// Part i's outputs of the merged call against its own call (poisoned buffers: every
// output must be written).
template <class MergedCall, class SingleCall>
void expect_parts_match(const std::vector<uint64_t>& rows, uint32_t n_tok, MergedCall merged, SingleCall single) {
    std::vector<DeviceBuffer<float>> ym, ys;
    for (uint64_t r : rows) {
        ym.emplace_back(n_tok * r);
        ys.emplace_back(n_tok * r);
        ym.back().fill_bytes(0xff);
        ys.back().fill_bytes(0xfe);
    }
    merged(ym);
    for (size_t i = 0; i < rows.size(); ++i) single(i, ys[i]);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    for (size_t i = 0; i < rows.size(); ++i) {
        const std::vector<float> a = ym[i].download(), b = ys[i].download();
        ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
            << "part " << i << " (" << rows[i] << " rows), " << n_tok << " tokens";
    }
}

TEST(CudaMultiProduct, Q8rEachPartEqualsItsOwnCall) {
    DS4_REQUIRE_GPU();
    // 4096 columns: the attention / shared-expert shapes (4 warps per row), 8192 rows (2 warps
    // per row: its own launch), 9 parts (two tables), 1 row; and 768 columns (256-spans).
    const std::vector<std::pair<uint64_t, std::vector<uint64_t>>> cases = {
        {4096, {1024, 512, 1024, 1024, 256, 256, 64, 8192, 1}},
        {768, {70, 3, 200}},
    };
    for (const auto& [cols, rows] : cases) {
        std::vector<DeviceBuffer<uint8_t>> w;
        for (size_t i = 0; i < rows.size(); ++i) {
            w.push_back(to_device<uint8_t>(q8_rows(rows[i], cols, static_cast<uint32_t>(7 + i))));
            q8r_repack(w.back().data(), rows[i], cols, nullptr);
        }
        for (const uint32_t n_tok : {1u, 2u, 3u, 5u, 13u}) {
            const std::vector<float> x = test::random_floats(n_tok * cols, 99 + n_tok);
            DeviceBuffer<float> dx = to_device<float>(x);
            expect_parts_match(
                rows, n_tok,
                [&](std::vector<DeviceBuffer<float>>& y) {
                    std::vector<Q8rProduct> parts;
                    for (size_t i = 0; i < rows.size(); ++i)
                        parts.push_back({w[i].data(), rows[i], y[i].data(), rows[i]});
                    matmul_q8r_multi(parts, cols, dx.data(), cols, n_tok, nullptr);
                },
                [&](size_t i, DeviceBuffer<float>& y) {
                    matmul_q8r(w[i].data(), rows[i], cols, dx.data(), cols, y.data(), rows[i], n_tok, nullptr);
                });
        }
    }
}

TEST(CudaMultiProduct, SplitKernelEachPartEqualsItsOwnCall) {
    DS4_REQUIRE_GPU();
    // F16 at 4096 columns (the compressor / indexer / router shapes; 4096 rows take the
    // many-rows kernel: one matmul() of its own), 9 parts; Q8_0 GGUF rows at 1024 columns.
    struct Case {
        GgmlType type;
        uint64_t cols;
        std::vector<uint64_t> rows;
    };
    const std::vector<Case> cases = {
        {GgmlType::F16, 4096, {1024, 1024, 256, 256, 64, 256, 4096, 3, 17}},
        {GgmlType::Q8_0, 1024, {40, 2050, 7}},
    };
    for (const Case& c : cases) {
        std::vector<DeviceBuffer<uint8_t>> w;
        for (size_t i = 0; i < c.rows.size(); ++i) {
            const auto seed = static_cast<uint32_t>(31 + i);
            w.push_back(to_device<uint8_t>(c.type == GgmlType::F16 ? f16_rows(c.rows[i], c.cols, seed)
                                                                   : q8_rows(c.rows[i], c.cols, seed)));
        }
        for (const uint32_t n_tok : {1u, 4u, 9u}) {
            const std::vector<float> x = test::random_floats(n_tok * c.cols, 7 + n_tok);
            DeviceBuffer<float> dx = to_device<float>(x);
            expect_parts_match(
                c.rows, n_tok,
                [&](std::vector<DeviceBuffer<float>>& y) {
                    std::vector<MatProduct> parts;
                    for (size_t i = 0; i < c.rows.size(); ++i)
                        parts.push_back({w[i].data(), c.rows[i], y[i].data(), c.rows[i]});
                    matmul_multi(c.type, parts, c.cols, dx.data(), c.cols, n_tok, nullptr);
                },
                [&](size_t i, DeviceBuffer<float>& y) {
                    matmul(c.type, w[i].data(), c.rows[i], c.cols, dx.data(), c.cols, y.data(), c.rows[i], n_tok,
                           nullptr);
                });
        }
    }
}

// A dependent chain of the PDL-launched kernels (each reads the previous one's output and
// overwrites a buffer an earlier one read): PDL on and off give the same bits, eagerly and
// from a graph, many times over (a missing wait would show as a race).
TEST(CudaMultiProduct, PdlChainMatchesPlainLaunches) {
    DS4_REQUIRE_GPU();
    const uint64_t cols = 4096, rows = 4096;
    DeviceBuffer<uint8_t> wq = to_device<uint8_t>(q8_rows(rows, cols, 5));
    q8r_repack(wq.data(), rows, cols, nullptr);
    DeviceBuffer<uint8_t> wf = to_device<uint8_t>(f16_rows(rows, cols, 6));
    const std::vector<float> x0 = test::random_floats(cols, 8);
    DeviceBuffer<float> x = to_device<float>(x0), a(rows), b(rows);
    Stream st;
    const auto chain = [&] {
        for (int i = 0; i < 8; ++i) {
            rms_norm(x.data(), nullptr, a.data(), static_cast<uint32_t>(cols), 1, 1e-6f, st.get());
            const Q8rProduct q[] = {{wq.data(), rows / 2, b.data(), rows / 2},
                                    {wq.data() + rows / 2 * (cols / 32 * 34), rows / 2, b.data() + rows / 2, rows / 2}};
            matmul_q8r_multi(q, cols, a.data(), cols, 1, st.get());
            const MatProduct f[] = {{wf.data(), 1024, x.data(), 1024}, {wf.data(), 1024, x.data() + 1024, 1024}};
            matmul_multi(GgmlType::F16, f, cols, b.data(), cols, 1, st.get());
            rms_norm(b.data(), nullptr, x.data() + 2048, 2048, 1, 1e-6f, st.get());
        }
    };
    const auto run = [&](bool pdl, bool graph) {
        set_pdl_enabled(pdl);
        x.upload(x0);
        if (graph) {
            GraphExec g = capture_graph(st.get(), chain);
            g.launch(st.get());
        } else {
            chain();
        }
        st.sync();
        return x.download();
    };
    const std::vector<float> ref = run(false, false);
    for (int rep = 0; rep < 20; ++rep)
        for (const bool graph : {false, true}) {
            const std::vector<float> got = run(true, graph);
            ASSERT_EQ(0, std::memcmp(got.data(), ref.data(), ref.size() * sizeof(float)))
                << "rep " << rep << (graph ? " (graph)" : " (eager)");
        }
    set_pdl_enabled(true);
    for (float v : ref) ASSERT_TRUE(std::isfinite(v));
}

// norm_rope_rows == rms_norm, rope_tokens, fp8_rows: the attention's q heads (no weight,
// no FP8) and kv row (weight, FP8 of the first 448) shapes, and a 2048-wide row (1024
// threads), for 1 and 3 tokens at large positions (cos/sin of big angles).
TEST(CudaFusedKernels, NormRopeRowsEqualsThreeLaunches) {
    DS4_REQUIRE_GPU();
    struct Case {
        uint32_t n, vec_per_tok, half, fp8_len;
        bool weight;
    };
    const Case cases[] = {{512, 64, 32, 0, false}, {512, 1, 32, 448, true}, {2048, 2, 64, 1920, true},
                          {128, 4, 32, 64, false}};
    for (const Case& c : cases)
        for (const uint32_t n_tok : {1u, 3u}) {
            SCOPED_TRACE(cat("n=", c.n, " vecs=", c.vec_per_tok, " half=", c.half, " fp8=", c.fp8_len, " tok=", n_tok));
            const uint32_t rows = n_tok * c.vec_per_tok;
            const std::vector<float> x0 = test::random_floats(uint64_t{rows} * c.n, c.n + rows, -3.f, 3.f);
            const std::vector<float> w0 = test::random_floats(c.n, 3, 0.5f, 1.5f);
            const std::vector<float> om = test::random_floats(c.half, 4, 0.0f, 1.0f);
            std::vector<uint64_t> pos(n_tok);
            for (uint32_t t = 0; t < n_tok; ++t) pos[t] = 1000003ull * (t + 1) % 70000;
            DeviceBuffer<float> a = to_device<float>(x0), b = to_device<float>(x0), w = to_device<float>(w0);
            DeviceBuffer<float> dom = to_device<float>(om);
            DeviceBuffer<uint64_t> dpos = to_device<uint64_t>(pos);
            const float* wp = c.weight ? w.data() : nullptr;
            norm_rope_rows(a.data(), wp, c.n, rows, 1e-6f, c.vec_per_tok, dom.data(), c.half, dpos.data(), c.fp8_len,
                           nullptr);
            rms_norm(b.data(), wp, b.data(), c.n, rows, 1e-6f, nullptr);
            rope_tokens(b.data(), n_tok, uint64_t{c.vec_per_tok} * c.n, c.vec_per_tok, c.n, c.n - 2 * c.half,
                        dom.data(), c.half, dpos.data(), false, nullptr);
            if (c.fp8_len != 0) fp8_rows(b.data(), rows, c.n, c.fp8_len, nullptr);
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            const std::vector<float> fa = a.download(), fb = b.download();
            ASSERT_EQ(0, std::memcmp(fa.data(), fb.data(), fa.size() * sizeof(float)));
            ASSERT_NE(0, std::memcmp(fa.data(), x0.data(), fa.size() * sizeof(float)));
        }
    DeviceBuffer<float> x(512);
    EXPECT_THROW(norm_rope_rows(x.data(), nullptr, 512, 1, 1e-6f, 1, nullptr, 32, nullptr, 480, nullptr), Error);
    EXPECT_THROW(norm_rope_rows(x.data(), nullptr, 512, 1, 1e-6f, 1, nullptr, 32, nullptr, 100, nullptr), Error);
}

// The warp-per-row kernel (from 1024 rows) == the block-per-row one, bitwise: widths that
// leave some of the block's 256 threads short of values (200, 1000), the widest warp case
// (1984), rows not a multiple of its 8 rows per block.
TEST(CudaFusedKernels, NormRopeWarpRowsEqualBlockRows) {
    DS4_REQUIRE_GPU();
    for (const uint32_t n : {200u, 512u, 1000u, 1984u}) {
        SCOPED_TRACE(cat("n=", n));
        const uint32_t rows = 1100, half = 16, fp8 = n >= 512 ? 448 : 128;
        const std::vector<float> x0 = test::random_floats(uint64_t{rows} * n, n, -3.f, 3.f);
        const std::vector<float> w0 = test::random_floats(n, 3, 0.5f, 1.5f), om = test::random_floats(half, 4, 0.f, 1.f);
        std::vector<uint64_t> pos(rows);
        for (uint32_t t = 0; t < rows; ++t) pos[t] = 7919ull * (t + 1) % 50000;
        DeviceBuffer<float> w = to_device<float>(w0), dom = to_device<float>(om);
        DeviceBuffer<uint64_t> dpos = to_device<uint64_t>(pos);
        std::vector<float> out[2];
        for (const bool warp : {true, false}) {
            DeviceBuffer<float> x = to_device<float>(x0);
            set_norm_rope_warp(warp);
            norm_rope_rows(x.data(), w.data(), n, rows, 1e-6f, 1, dom.data(), half, dpos.data(), fp8, nullptr);
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            out[warp ? 0 : 1] = x.download();
        }
        set_norm_rope_warp(true);
        EXPECT_EQ(0, std::memcmp(out[0].data(), out[1].data(), out[0].size() * sizeof(float)));
        EXPECT_NE(0, std::memcmp(out[0].data(), x0.data(), x0.size() * sizeof(float)));
    }
}

// norm_rope_pair == rms_norm on the first buffer (qr: 1024 wide, a weight) and
// norm_rope_rows on the second (kv: 512 wide, RoPE + FP8) in one launch; and with rows
// whose rms_norm blocks differ (4096 wide: two launches).
TEST(CudaFusedKernels, NormRopePairEqualsSeparateLaunches) {
    DS4_REQUIRE_GPU();
    const std::vector<float> om = test::random_floats(32, 4, 0.0f, 1.0f), w1 = test::random_floats(4096, 5, 0.5f, 1.5f),
                             w2 = test::random_floats(512, 6, 0.5f, 1.5f);
    DeviceBuffer<float> dom = to_device<float>(om), dw1 = to_device<float>(w1), dw2 = to_device<float>(w2);
    for (const uint32_t na : {1024u, 4096u})
        for (const uint32_t n_tok : {1u, 3u}) {
            SCOPED_TRACE(cat("first row ", na, ", tokens ", n_tok));
            std::vector<uint64_t> pos(n_tok);
            for (uint32_t t = 0; t < n_tok; ++t) pos[t] = 977 * t + 5;
            DeviceBuffer<uint64_t> dpos = to_device<uint64_t>(pos);
            const std::vector<float> a0 = test::random_floats(uint64_t{n_tok} * na, na + n_tok, -2.f, 2.f),
                                     b0 = test::random_floats(uint64_t{n_tok} * 512, 9 + n_tok, -2.f, 2.f);
            DeviceBuffer<float> a1 = to_device<float>(a0), a2 = to_device<float>(a0), b1 = to_device<float>(b0),
                                b2 = to_device<float>(b0);
            norm_rope_pair(NormRope{a1.data(), dw1.data(), nullptr, na, n_tok, 1, 0, 0},
                           NormRope{b1.data(), dw2.data(), dom.data(), 512, n_tok, 1, 32, 448}, 1e-6f, dpos.data(),
                           nullptr);
            rms_norm(a2.data(), dw1.data(), a2.data(), na, n_tok, 1e-6f, nullptr);
            norm_rope_rows(b2.data(), dw2.data(), 512, n_tok, 1e-6f, 1, dom.data(), 32, dpos.data(), 448, nullptr);
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            for (auto [x, y] : {std::pair{&a1, &a2}, std::pair{&b1, &b2}}) {
                const std::vector<float> u = x->download(), v = y->download();
                ASSERT_EQ(0, std::memcmp(u.data(), v.data(), u.size() * sizeof(float)));
            }
        }
}

// rope_hadamard_fp4 == rope_tokens, hadamard_scaled, fp4_simulate (the indexer's 64 heads
// of 128, 1 and 2 tokens; 32-wide and 1024-wide vectors).
TEST(CudaFusedKernels, RopeHadamardFp4EqualsThreeLaunches) {
    DS4_REQUIRE_GPU();
    struct Case {
        uint32_t d, n_vec, half;
    };
    for (const Case c : {Case{128, 64, 32}, Case{32, 3, 8}, Case{1024, 2, 32}})
        for (const uint32_t n_tok : {1u, 2u}) {
            SCOPED_TRACE(cat("d=", c.d, " vecs=", c.n_vec, " tokens=", n_tok));
            const uint64_t total = uint64_t{n_tok} * c.n_vec * c.d;
            const std::vector<float> x0 = test::random_floats(total, c.d + n_tok, -4.f, 4.f);
            const std::vector<float> om = test::random_floats(c.half, 7, 0.0f, 1.0f);
            std::vector<uint64_t> pos(n_tok);
            for (uint32_t t = 0; t < n_tok; ++t) pos[t] = 4099 * t + 17;
            DeviceBuffer<float> a = to_device<float>(x0), b = to_device<float>(x0), dom = to_device<float>(om);
            DeviceBuffer<uint64_t> dpos = to_device<uint64_t>(pos);
            rope_hadamard_fp4(a.data(), n_tok, c.n_vec, c.d, dom.data(), c.half, dpos.data(), nullptr);
            rope_tokens(b.data(), n_tok, uint64_t{c.n_vec} * c.d, c.n_vec, c.d, c.d - 2 * c.half, dom.data(), c.half,
                        dpos.data(), false, nullptr);
            hadamard_scaled(b.data(), c.d, n_tok * c.n_vec, nullptr);
            fp4_simulate(b.data(), total, nullptr);
            DS4_CUDA_CHECK(cudaDeviceSynchronize());
            const std::vector<float> u = a.download(), v = b.download();
            ASSERT_EQ(0, std::memcmp(u.data(), v.data(), u.size() * sizeof(float)));
            ASSERT_NE(0, std::memcmp(u.data(), x0.data(), u.size() * sizeof(float)));
        }
    DeviceBuffer<float> x(256);
    EXPECT_THROW(rope_hadamard_fp4(x.data(), 1, 1, 96, nullptr, 8, nullptr, nullptr), Error);
}

// hc_pre_norm == hc_pre then rms_norm, for rows that rms_norm reduces with 1024 threads
// (4096) and with 256 (1024, 512), with and without a norm weight.
TEST(CudaFusedKernels, HcPreNormEqualsPreThenNorm) {
    DS4_REQUIRE_GPU();
    for (const uint32_t dim : {4096u, 1024u, 512u})
        for (const uint32_t n : {1u, 3u}) {
            SCOPED_TRACE(cat("dim=", dim, " n=", n));
            const HcShape sh{4, dim, 20, 1e-6f, 1e-6f};
            const uint32_t H = sh.H, mixw = (2 + H) * H;
            const std::vector<float> x0 = test::random_floats(uint64_t{n} * H * dim, dim + n, -2.f, 2.f);
            const std::vector<float> mix = test::random_floats(n * mixw, 11), scale = test::random_floats(3, 12),
                                     base = test::random_floats(mixw, 13), nw = test::random_floats(dim, 14, 0.5f, 1.5f);
            DeviceBuffer<float> dx = to_device<float>(x0), dm = to_device<float>(mix), ds = to_device<float>(scale),
                                db = to_device<float>(base), dw = to_device<float>(nw);
            struct Out {
                DeviceBuffer<float> pre, post, comb, u, nrm;
            };
            const auto outs = [&] {
                return Out{DeviceBuffer<float>(n * H), DeviceBuffer<float>(n * H), DeviceBuffer<float>(n * H * H),
                           DeviceBuffer<float>(uint64_t{n} * dim), DeviceBuffer<float>(uint64_t{n} * dim)};
            };
            for (const bool weight : {true, false}) {
                Out a = outs(), b = outs();
                const float* w = weight ? dw.data() : nullptr;
                hc_pre_norm(sh, dx.data(), dm.data(), ds.data(), db.data(), a.pre.data(), a.post.data(), a.comb.data(),
                            a.u.data(), w, a.nrm.data(), 1e-6f, n, nullptr);
                hc_pre(sh, dx.data(), dm.data(), ds.data(), db.data(), b.pre.data(), b.post.data(), b.comb.data(),
                       b.u.data(), n, nullptr);
                rms_norm(b.u.data(), w, b.nrm.data(), dim, n, 1e-6f, nullptr);
                DS4_CUDA_CHECK(cudaDeviceSynchronize());
                for (auto m : {&Out::pre, &Out::post, &Out::comb, &Out::u, &Out::nrm}) {
                    const std::vector<float> va = (a.*m).download(), vb = (b.*m).download();
                    ASSERT_EQ(0, std::memcmp(va.data(), vb.data(), va.size() * sizeof(float))) << "weight " << weight;
                }
            }
        }
}

// hc_pre's register kernel (4 streams of 2048-4096 values; Sinkhorn in a second block up
// to 64 tokens, one block per token from 65 on) == the one-block kernel, bit for bit, for
// all five outputs, hc_pre and hc_pre_norm, with and without a norm weight; 512 values
// take the one-block kernel either way.
TEST(CudaFusedKernels, HcPreRegisterKernelEqualsOneBlock) {
    DS4_REQUIRE_GPU();
    for (const uint32_t dim : {4096u, 3072u, 2048u, 512u})
        for (const uint32_t n : {1u, 3u, 64u, 80u}) {
            SCOPED_TRACE(cat("dim=", dim, " n=", n));
            const HcShape sh{4, dim, 20, 1e-6f, 1e-6f};
            const uint32_t H = sh.H, mixw = (2 + H) * H;
            const std::vector<float> x0 = test::random_floats(uint64_t{n} * H * dim, 3 * dim + n, -2.f, 2.f);
            const std::vector<float> mix = test::random_floats(n * mixw, 21), scale = test::random_floats(3, 22),
                                     base = test::random_floats(mixw, 23), nw = test::random_floats(dim, 24, 0.5f, 1.5f);
            DeviceBuffer<float> dx = to_device<float>(x0), dm = to_device<float>(mix), ds = to_device<float>(scale),
                                db = to_device<float>(base), dw = to_device<float>(nw);
            std::vector<float> ref[2][3][5];  // [path][no norm, norm, weighted norm][output]
            for (const HcPrePath path : {HcPrePath::one_block, HcPrePath::automatic})
                for (const int mode : {0, 1, 2}) {
                    const uint32_t sizes[5] = {n * H, n * H, n * H * H, n * dim, n * dim};
                    std::vector<DeviceBuffer<float>> o;
                    for (const uint32_t size : sizes) o.emplace_back(size);
                    for (auto& b : o) DS4_CUDA_CHECK(cudaMemset(b.data(), 0xff, b.size() * sizeof(float)));
                    if (mode == 0)
                        hc_pre(sh, dx.data(), dm.data(), ds.data(), db.data(), o[0].data(), o[1].data(), o[2].data(),
                               o[3].data(), n, nullptr, path);
                    else
                        hc_pre_norm(sh, dx.data(), dm.data(), ds.data(), db.data(), o[0].data(), o[1].data(),
                                    o[2].data(), o[3].data(), mode == 2 ? dw.data() : nullptr, o[4].data(), 1e-6f, n,
                                    nullptr, path);
                    DS4_CUDA_CHECK(cudaDeviceSynchronize());
                    for (int k = 0; k < 5; ++k) ref[path == HcPrePath::automatic][mode][k] = o[k].download();
                }
            for (int mode = 0; mode < 3; ++mode)
                for (int k = 0; k < (mode == 0 ? 4 : 5); ++k) {
                    const std::vector<float>& a = ref[0][mode][k];
                    const std::vector<float>& b = ref[1][mode][k];
                    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << mode << " " << k;
                    for (const float v : a) ASSERT_TRUE(std::isfinite(v)) << mode << " " << k;  // all written
                }
            // comb is doubly stochastic after Sinkhorn: each column sums to ~1
            const std::vector<float>& comb = ref[1][1][2];
            for (uint32_t b = 0; b < H; ++b) {
                float c = 0;
                for (uint32_t a = 0; a < H; ++a) c += comb[a * H + b];
                EXPECT_NEAR(1.0f, c, 1e-4f);
            }
        }
}

// hc_post_add == add_values then hc_post (4 streams of 4096, 1 and 5 tokens).
TEST(CudaFusedKernels, HcPostAddEqualsAddThenPost) {
    DS4_REQUIRE_GPU();
    const HcShape sh{4, 4096, 20, 1e-6f, 1e-6f};
    for (const uint32_t n : {1u, 5u}) {
        const uint64_t hc = uint64_t{n} * sh.H * sh.dim, f = uint64_t{n} * sh.dim;
        const std::vector<float> x0 = test::random_floats(hc, 1 + n), fa = test::random_floats(f, 2 + n),
                                 fb = test::random_floats(f, 3 + n), post = test::random_floats(n * sh.H, 4, 0.f, 2.f),
                                 comb = test::random_floats(n * sh.H * sh.H, 5, 0.f, 1.f);
        DeviceBuffer<float> xa = to_device<float>(x0), xb = to_device<float>(x0), da = to_device<float>(fa),
                            db = to_device<float>(fb), dp = to_device<float>(post), dc = to_device<float>(comb), y(f);
        hc_post_add(sh, xa.data(), da.data(), db.data(), dp.data(), dc.data(), n, nullptr);
        add_values(da.data(), db.data(), y.data(), f, nullptr);
        hc_post(sh, xb.data(), y.data(), dp.data(), dc.data(), n, nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> ga = xa.download(), gb = xb.download();
        ASSERT_EQ(0, std::memcmp(ga.data(), gb.data(), ga.size() * sizeof(float))) << n << " tokens";
        ASSERT_NE(0, std::memcmp(ga.data(), x0.data(), ga.size() * sizeof(float)));
    }
}

// hc_post_moe_add == moe_sum then hc_post_add: per token 0..K expert rows, in the
// grouping's order (rows), tokens with none included.
TEST(CudaFusedKernels, HcPostMoeAddEqualsSumThenPostAdd) {
    DS4_REQUIRE_GPU();
    const HcShape sh{4, 4096, 20, 1e-6f, 1e-6f};
    constexpr uint32_t K = 6;
    for (const uint32_t n : {1u, 5u}) {
        const uint64_t hc = uint64_t{n} * sh.H * sh.dim, f = uint64_t{n} * sh.dim;
        std::vector<uint32_t> rows(n * K), count(n);
        uint32_t next = 0;
        for (uint32_t t = 0; t < n; ++t) {
            count[t] = t == 3 ? 0 : K - t % 3;  // token 3: no routed rows
            for (uint32_t j = 0; j < count[t]; ++j) rows[t * K + j] = (next++ * 7) % (n * K);
        }
        const std::vector<float> x0 = test::random_floats(hc, 11 + n), ex = test::random_floats(n * K * sh.dim, 12),
                                 fb = test::random_floats(f, 13 + n), post = test::random_floats(n * sh.H, 14, 0.f, 2.f),
                                 comb = test::random_floats(n * sh.H * sh.H, 15, 0.f, 1.f);
        DeviceBuffer<float> xa = to_device<float>(x0), xb = to_device<float>(x0), dex = to_device<float>(ex),
                            db = to_device<float>(fb), dp = to_device<float>(post), dc = to_device<float>(comb), moe(f);
        DeviceBuffer<uint32_t> drows = to_device<uint32_t>(rows), dcount = to_device<uint32_t>(count);
        hc_post_moe_add(sh, xa.data(), MoeSumRows{dex.data(), drows.data(), dcount.data(), K}, db.data(), dp.data(),
                        dc.data(), n, nullptr);
        MoeGroups g;
        g.rows = drows.data();
        g.tok_count = dcount.data();
        moe_sum(dex.data(), g, n, K, moe.data(), sh.dim, nullptr);
        hc_post_add(sh, xb.data(), moe.data(), db.data(), dp.data(), dc.data(), n, nullptr);
        DS4_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> ga = xa.download(), gb = xb.download();
        ASSERT_EQ(0, std::memcmp(ga.data(), gb.data(), ga.size() * sizeof(float))) << n << " tokens";
        ASSERT_NE(0, std::memcmp(ga.data(), x0.data(), ga.size() * sizeof(float)));
    }
}

}  // namespace
}  // namespace ds4::cuda
