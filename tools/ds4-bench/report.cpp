#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "ds4/error.h"
#include "text/dsml_render.h"

namespace ds4::bench {

std::vector<uint64_t> frontiers(uint64_t ctx_start, uint64_t ctx_max, uint64_t step_incr,
                                double step_mul) {
    if (ctx_start == 0) fail("--ctx-start must be at least 1");
    if (ctx_start > ctx_max)
        fail(cat("--ctx-start ", ctx_start, " is larger than --ctx-max ", ctx_max));
    if (!(step_mul >= 1.0)) fail(cat("--step-mul must be >= 1, got ", step_mul));
    if (step_mul == 1.0 && step_incr == 0)
        fail("--step-incr must be at least 1 when --step-mul is 1");
    std::vector<uint64_t> out{ctx_start};
    while (out.back() < ctx_max) {
        const uint64_t prev = out.back();
        uint64_t next =
            step_mul == 1.0 ? prev + step_incr : uint64_t(std::ceil(double(prev) * step_mul));
        next = std::min(std::max(next, prev + 1), ctx_max);  // a tiny multiplier still advances
        out.push_back(next);
    }
    return out;
}

std::string csv_header() {
    return "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,"
           "batch,seq_gen_tps,weight_bytes_per_step,gen_gbs,bw_ratio,"
           "flops_per_token,prefill_gflops,gemm_ratio";
}

std::string csv_row(const Row& r) {
    char buf[512];
    std::snprintf(
        buf, sizeof buf, "%llu,%llu,%.2f,%llu,%.2f,%llu,%u,%.2f,%llu,%.3f,%.4f,%llu,%.3f,%.4f",
        (unsigned long long)r.ctx_tokens, (unsigned long long)r.prefill_tokens, r.prefill_tps,
        (unsigned long long)r.gen_tokens, r.gen_tps, (unsigned long long)r.kvcache_bytes, r.batch,
        r.seq_gen_tps, (unsigned long long)r.weight_bytes_per_step, r.gen_gbs, r.bw_ratio,
        (unsigned long long)r.flops_per_token, r.prefill_gflops, r.gemm_ratio);
    return buf;
}

namespace {

// SVG text and attributes need the same four entities as DSML attributes.
std::string escape_xml(const std::string& s) {
    return ds4::text::dsml_escape_attribute(s);
}

// v with `digits` decimals.
std::string fmt(int digits, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return buf;
}

// One panel: a framed plot of `value(row)` against ctx, with min/max labels on both axes.
// Prefill and generation rates differ by orders of magnitude, so each gets its own panel
// (and y scale) rather than sharing one axis that would flatten the generation line.
template <class F>
std::string panel(std::span<const Row> rows, double top, const std::string& label,
                  const char* colour, F value) {
    constexpr double kLeft = 80, kWidth = 620, kHeight = 200;
    const double x0 = double(rows.front().ctx_tokens), x1 = double(rows.back().ctx_tokens);
    double ymax = 0;
    for (const Row& r : rows) ymax = std::max(ymax, value(r));
    ymax = ymax > 0 ? ymax * 1.1 : 1.0;
    const auto px = [&](double x) {
        return kLeft + (x1 > x0 ? (x - x0) / (x1 - x0) * kWidth : kWidth / 2);
    };
    const auto py = [&](double y) { return top + kHeight - y / ymax * kHeight; };
    std::string s;
    s += "<g class=\"panel\">\n";
    s += "<rect x=\"" + fmt(1, kLeft) + "\" y=\"" + fmt(1, top) + "\" width=\"" + fmt(1, kWidth) +
         "\" height=\"" + fmt(1, kHeight) + "\" fill=\"none\" stroke=\"#888\"/>\n";
    s += "<text x=\"" + fmt(1, kLeft) + "\" y=\"" + fmt(1, top - 6) + "\" font-size=\"13\">" +
         escape_xml(label) + "</text>\n";
    s += "<text x=\"" + fmt(1, kLeft - 6) + "\" y=\"" + fmt(1, top + 10) +
         "\" font-size=\"11\" text-anchor=\"end\">" + fmt(1, ymax) + "</text>\n";
    s += "<text x=\"" + fmt(1, kLeft - 6) + "\" y=\"" + fmt(1, top + kHeight) +
         "\" font-size=\"11\" text-anchor=\"end\">0</text>\n";
    s += "<text x=\"" + fmt(1, kLeft) + "\" y=\"" + fmt(1, top + kHeight + 14) +
         "\" font-size=\"11\">" + fmt(0, x0) + "</text>\n";
    s += "<text x=\"" + fmt(1, kLeft + kWidth) + "\" y=\"" + fmt(1, top + kHeight + 14) +
         "\" font-size=\"11\" text-anchor=\"end\">" + fmt(0, x1) + " ctx tokens</text>\n";
    s += "<polyline fill=\"none\" stroke=\"" + std::string(colour) +
         "\" stroke-width=\"2\" points=\"";
    for (const Row& r : rows)
        s += fmt(1, px(double(r.ctx_tokens))) + "," + fmt(1, py(value(r))) + " ";
    s += "\"/>\n";
    for (const Row& r : rows)
        s += "<circle cx=\"" + fmt(1, px(double(r.ctx_tokens))) + "\" cy=\"" +
             fmt(1, py(value(r))) + "\" r=\"3\" fill=\"" + colour + "\"/>\n";
    s += "</g>\n";
    return s;
}

}  // namespace

std::string svg_chart(std::span<const Row> rows, const std::string& title,
                      const std::string& subtitle) {
    if (rows.empty()) fail("svg_chart: no rows to plot");
    std::string s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"740\" height=\"560\" viewBox=\"0 0 740 "
         "560\" "
         "font-family=\"sans-serif\">\n";
    s += "<title>" + escape_xml(title) + "</title>\n";
    s += "<rect width=\"740\" height=\"560\" fill=\"white\"/>\n";
    s += "<text x=\"370\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">" + escape_xml(title) +
         "</text>\n";
    s += "<text x=\"370\" y=\"40\" font-size=\"11\" text-anchor=\"middle\" fill=\"#555\">" +
         escape_xml(subtitle) + "</text>\n";
    s += panel(rows, 70, "prefill t/s", "#1f77b4", [](const Row& r) { return r.prefill_tps; });
    s += panel(rows, 320, "generation t/s (aggregate)", "#d62728",
               [](const Row& r) { return r.gen_tps; });
    s += "</svg>\n";
    return s;
}

}  // namespace ds4::bench
