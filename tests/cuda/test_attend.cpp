// attend_token's column-split and head-group kernels (set_attend_mode) against the
// one-block-per-head kernel on random data: bitwise the same output for the raw window alone (a ring not yet
// full and a wrapped one), all compressed rows (no indexer), and the indexer's selection
// of 512 of 1250 rows; the group scores with 4, 8 and 16 rows a block as well.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "cuda/device.h"
#include "cuda/forward_kernels.h"
#include "cuda_test_util.h"

namespace ds4::cuda {
namespace {

constexpr uint32_t kHeads = 64, kHd = 512, kRope = 64, kWindow = 128, kTop = 512;

std::vector<float> attend(AttendMode mode, uint64_t pos, uint32_t n_comp, bool with_sel, uint32_t group_rows = 0) {
    const std::vector<float> q = test::random_floats(kHeads * kHd, 1),
                             raw = test::random_floats(kWindow * kHd, 2);
    const std::vector<float> comp = test::random_floats(uint64_t{std::max(n_comp, 1u)} * kHd, 3);
    const std::vector<float> sinks = test::random_floats(kHeads, 4),
                             omega = test::random_floats(kRope / 2, 5, 0, 1);
    std::vector<uint32_t> sel(std::max(n_comp, 1u));
    std::iota(sel.begin(), sel.end(), 0u);
    std::shuffle(sel.begin(), sel.end(), std::mt19937(6));
    const uint64_t cap_rows = kWindow + std::max(n_comp, kTop);
    DeviceBuffer<float> dq = to_device<float>(q), draw = to_device<float>(raw),
                        dcomp = to_device<float>(comp);
    DeviceBuffer<float> dsinks = to_device<float>(sinks), domega = to_device<float>(omega);
    DeviceBuffer<uint32_t> dsel = to_device<uint32_t>(sel), dn(1);
    dn.upload(std::vector<uint32_t>{n_comp});
    DeviceBuffer<uint64_t> dpos(1);
    dpos.upload(std::vector<uint64_t>{pos});
    DeviceBuffer<float> scores(kHeads * cap_rows), out(kHeads * kHd);
    out.fill_bytes(0xff);
    AttendToken a;
    a.q = dq.data();
    a.raw = draw.data();
    a.comp = n_comp != 0 ? dcomp.data() : nullptr;
    a.n_comp = n_comp != 0 ? dn.data() : nullptr;
    a.comp_sel = with_sel ? dsel.data() : nullptr;
    a.topk = kTop;
    a.sinks = dsinks.data();
    a.omega = domega.data();
    a.scores = scores.data();
    a.cap_rows = cap_rows;
    a.out = out.data();
    a.n_head = kHeads;
    a.hd = kHd;
    a.rope_dim = kRope;
    a.window = kWindow;
    a.pos = dpos.data();
    set_attend_mode(mode);
    set_attend_group_rows(group_rows);
    Stream s;
    attend_token(a, s.get());
    s.sync();
    set_attend_mode(AttendMode::Group);
    set_attend_group_rows(0);
    return out.download();
}

void expect_same(uint64_t pos, uint32_t n_comp, bool with_sel) {
    const std::vector<float> one = attend(AttendMode::OneBlock, pos, n_comp, with_sel);
    for (const AttendMode m : {AttendMode::Split, AttendMode::Group}) {
        const std::vector<float> other = attend(m, pos, n_comp, with_sel);
        size_t differ = 0;
        for (size_t i = 0; i < one.size(); ++i)
            differ += std::memcmp(&one[i], &other[i], sizeof(float)) != 0;
        EXPECT_EQ(differ, 0u) << (m == AttendMode::Split ? "split" : "group") << ": pos " << pos << ", " << n_comp
                              << " compressed rows" << (with_sel ? ", top k" : "");
        EXPECT_TRUE(std::none_of(other.begin(), other.end(), [](float v) { return std::isnan(v); }));
    }
    for (const uint32_t rows : {4u, 8u, 16u}) {  // the group scores' row blocks, forced
        const std::vector<float> other = attend(AttendMode::Group, pos, n_comp, with_sel, rows);
        EXPECT_EQ(0, std::memcmp(one.data(), other.data(), one.size() * sizeof(float)))
            << "group, " << rows << " rows a block: pos " << pos << ", " << n_comp << " compressed rows";
    }
}

TEST(CudaAttendSplit, SameBitsAsOneBlockPerHead) {
    DS4_REQUIRE_GPU();
    expect_same(40, 0, false);      // ring not full
    expect_same(1000, 0, false);    // wrapped ring
    expect_same(8191, 64, false);   // every compressed row
    expect_same(5003, 1250, true);  // the indexer's 512 of 1250
    expect_same(5003, 300, true);   // n ≤ top k: every row
    expect_same(0, 0, false);       // one row
    expect_same(130, 37, false);    // rows not a multiple of the kernels' blocks
}

}  // namespace
}  // namespace ds4::cuda
