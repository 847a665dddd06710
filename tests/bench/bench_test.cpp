// ds4-bench: the frontier schedule, the CSV schema (formats.md §8.5 + ds4-bench columns),
// the SVG chart, and the binary end to end on the demo model with tiny frontiers. No
// assertion depends on a measured speed (the box is shared): only on structure.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ds4/engine.h"
#include "ds4/error.h"
#include "report.h"
#include "synthetic.h"

namespace {

namespace fs = std::filesystem;

const std::string kHeader =
    "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,"
    "batch,seq_gen_tps,weight_bytes_per_step,gen_gbs,bw_ratio,"
    "flops_per_token,prefill_gflops,gemm_ratio";

std::string bin() {
    return std::string(DS4_BINARY_DIR) + "/bin/ds4-bench";
}
std::string demo() {
    return std::string(DS4_BINARY_DIR) + "/ds4-demo.gguf";
}

struct Result {
    int code = -1;
    std::string out;  // stdout (and stderr, unless left out)
};

// stdout only when `with_stderr` is false (stderr then goes to /dev/null).
Result run(const std::string& args, bool with_stderr = true) {
    Result r;
    const std::string cmd = bin() + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
    std::FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return r;
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int status = ::pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s) {
        if (c == sep) {
            out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    out.push_back(cur);
    return out;
}

struct Csv {
    std::vector<std::string> comments;
    std::string header;
    std::vector<std::vector<std::string>> rows;
};

Csv parse_csv(const std::string& text) {
    Csv c;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        if (line[0] == '#')
            c.comments.push_back(line);
        else if (c.header.empty())
            c.header = line;
        else
            c.rows.push_back(split(line, ','));
    }
    return c;
}

fs::path temp_path(const std::string& name) {
    return fs::temp_directory_path() / (name + "-" + std::to_string(::getpid()));
}

// A minimal XML well-formedness check: every tag closes in order, attributes quoted,
// comments and the declaration skipped. Returns the element names seen.
std::vector<std::string> xml_elements(const std::string& s) {
    std::vector<std::string> stack, seen;
    size_t i = 0;
    while ((i = s.find('<', i)) != std::string::npos) {
        const size_t end = s.find('>', i);
        if (end == std::string::npos) throw ds4::Error("unterminated tag");
        std::string tag = s.substr(i + 1, end - i - 1);
        i = end + 1;
        if (tag.starts_with("?") || tag.starts_with("!--")) continue;
        if (tag.starts_with("/")) {
            if (stack.empty() || stack.back() != tag.substr(1))
                throw ds4::Error("mismatched </" + tag + ">");
            stack.pop_back();
            continue;
        }
        const bool self_closing = tag.ends_with("/");
        const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
        if (std::count(tag.begin(), tag.end(), '"') % 2 != 0)
            throw ds4::Error("unbalanced quotes in <" + name);
        seen.push_back(name);
        if (!self_closing) stack.push_back(name);
    }
    if (!stack.empty()) throw ds4::Error("unclosed <" + stack.back() + ">");
    return seen;
}

// The attributes of every start tag, in order: (element, name, value).
struct Attr {
    std::string element, name, value;
};
std::vector<Attr> xml_attributes(const std::string& s) {
    std::vector<Attr> out;
    size_t i = 0;
    while ((i = s.find('<', i)) != std::string::npos) {
        const size_t end = s.find('>', i);
        const std::string tag = s.substr(i + 1, end - i - 1);
        i = end;
        if (tag.empty() || tag[0] == '/' || tag[0] == '?' || tag[0] == '!') continue;
        const size_t name_end = tag.find_first_of(" \t\n/");
        const std::string element = tag.substr(0, name_end);
        size_t at = name_end;
        while (at != std::string::npos && (at = tag.find('=', at)) != std::string::npos) {
            size_t k = at;
            while (k > 0 && tag[k - 1] != ' ' && tag[k - 1] != '\n') --k;
            const size_t q0 = tag.find('"', at), q1 = tag.find('"', q0 + 1);
            out.push_back({element, tag.substr(k, at - k), tag.substr(q0 + 1, q1 - q0 - 1)});
            at = q1 + 1;
        }
    }
    return out;
}

// Parses the whole string as a number (throws otherwise).
double number(const std::string& v) {
    size_t used = 0;
    const double d = std::stod(v, &used);
    if (used != v.size()) throw ds4::Error("not a number: '" + v + "'");
    return d;
}

// Every coordinate attribute (x, y, cx, cy, width, height, r, points) of every element is
// a plain number inside the root viewBox. Returns the number of coordinates checked.
size_t check_svg_geometry(const std::string& svg) {
    const auto attrs = xml_attributes(svg);
    double vw = -1, vh = -1;
    for (const Attr& a : attrs)
        if (a.element == "svg" && a.name == "viewBox") {
            std::istringstream ss(a.value);
            double x0 = 1, y0 = 1;
            ss >> x0 >> y0 >> vw >> vh;
            if (!ss || x0 != 0 || y0 != 0) throw ds4::Error("bad viewBox " + a.value);
        }
    if (vw <= 0 || vh <= 0) throw ds4::Error("no viewBox");
    size_t checked = 0;
    const auto inside = [&](double v, double limit, const Attr& a) {
        if (!(v >= 0 && v <= limit))
            throw ds4::Error("<" + a.element + " " + a.name + "=\"" + a.value +
                             "\"> outside the viewBox");
        ++checked;
    };
    for (const Attr& a : attrs) {
        if (a.element == "svg") continue;
        if (a.name == "x" || a.name == "cx" || a.name == "width") inside(number(a.value), vw, a);
        if (a.name == "y" || a.name == "cy" || a.name == "height") inside(number(a.value), vh, a);
        if (a.name == "r") inside(number(a.value), std::min(vw, vh), a);
        if (a.name == "points") {
            std::istringstream ss(a.value);
            std::string pair;
            size_t pairs = 0;
            while (ss >> pair) {
                const size_t comma = pair.find(',');
                if (comma == std::string::npos) throw ds4::Error("bad point " + pair);
                inside(number(pair.substr(0, comma)), vw, a);
                inside(number(pair.substr(comma + 1)), vh, a);
                ++pairs;
            }
            if (pairs == 0) throw ds4::Error("empty points");
        }
    }
    return checked;
}

TEST(BenchFrontiers, LinearAndGeometricSchedules) {
    EXPECT_EQ(ds4::bench::frontiers(2048, 8192, 2048, 1.0),
              (std::vector<uint64_t>{2048, 4096, 6144, 8192}));
    EXPECT_EQ(ds4::bench::frontiers(16, 40, 16, 1.0), (std::vector<uint64_t>{16, 32, 40}));
    EXPECT_EQ(ds4::bench::frontiers(10, 50, 0, 2.0), (std::vector<uint64_t>{10, 20, 40, 50}));
    EXPECT_EQ(ds4::bench::frontiers(3, 5, 0, 1.1), (std::vector<uint64_t>{3, 4, 5}));
    EXPECT_EQ(ds4::bench::frontiers(7, 7, 1, 1.0), (std::vector<uint64_t>{7}));
}

TEST(BenchFrontiers, RejectsSchedulesThatCannotAdvance) {
    EXPECT_THROW(ds4::bench::frontiers(0, 10, 1, 1.0), ds4::Error);
    EXPECT_THROW(ds4::bench::frontiers(20, 10, 1, 1.0), ds4::Error);
    EXPECT_THROW(ds4::bench::frontiers(1, 10, 0, 1.0), ds4::Error);
    EXPECT_THROW(ds4::bench::frontiers(1, 10, 1, 0.5), ds4::Error);
}

TEST(BenchCsv, HeaderStartsWithDs4ColumnsAndRowsFormatRates) {
    EXPECT_EQ(ds4::bench::csv_header(), kHeader);
    ds4::bench::Row r;
    r.ctx_tokens = 2048, r.prefill_tokens = 2048, r.prefill_tps = 343.756, r.gen_tokens = 128;
    r.gen_tps = 26.764, r.kvcache_bytes = 52184460, r.batch = 1, r.seq_gen_tps = 26.764;
    r.weight_bytes_per_step = 1000, r.gen_gbs = 0.5, r.bw_ratio = 0.25;
    r.flops_per_token = 2000000, r.prefill_gflops = 0.687512, r.gemm_ratio = 0.0123;
    EXPECT_EQ(ds4::bench::csv_row(r),
              "2048,2048,343.76,128,26.76,52184460,1,26.76,1000,0.500,0.2500,2000000,0.688,0.0123");
}

TEST(BenchSvg, ChartIsWellFormedWithBothSeries) {
    std::vector<ds4::bench::Row> rows(3);
    for (size_t i = 0; i < rows.size(); ++i)
        rows[i].ctx_tokens = 16 * (i + 1), rows[i].prefill_tps = 100.0 + double(i),
        rows[i].gen_tps = 5;
    const auto svg = ds4::bench::svg_chart(rows, "a <title> & more", "sub");
    const auto elems = xml_elements(svg);
    EXPECT_EQ(std::count(elems.begin(), elems.end(), "svg"), 1);
    EXPECT_EQ(std::count(elems.begin(), elems.end(), "polyline"), 2);
    EXPECT_EQ(std::count(elems.begin(), elems.end(), "circle"), 6);
    EXPECT_NE(svg.find("a &lt;title&gt; &amp; more"), std::string::npos);
    // 2 rects (4 each), 10 texts (2 each), 6 circles (3 each), 6 points (2 each), the
    // background rect (2) and the two title texts (4).
    EXPECT_EQ(check_svg_geometry(svg), 8u + 20u + 18u + 12u + 2u + 4u);
    EXPECT_THROW(ds4::bench::svg_chart({}, "t", "s"), ds4::Error);
}

// Small enough for an ASan build on a shared 2-core box.
const std::string kTiny =
    "--ctx-start 16 --ctx-max 48 --step-incr 16 --gen-tokens 3 --bw-mib 8 -t 2";

TEST(BenchBinary, DemoModelCsvSchemaMonotoneFrontiersAndPlot) {
    const fs::path csv = temp_path("ds4-bench-test.csv"), svg = temp_path("ds4-bench-test.svg");
    const auto r =
        run("-m " + demo() + " " + kTiny + " --csv " + csv.string() + " --plot " + svg.string());
    ASSERT_EQ(r.code, 0) << r.out;
    const Csv c = parse_csv(slurp(csv));
    EXPECT_EQ(c.header, kHeader);
    ASSERT_EQ(c.rows.size(), 3u);
    const std::vector<uint64_t> want_ctx{16, 32, 48};
    for (size_t i = 0; i < c.rows.size(); ++i) {
        const auto& row = c.rows[i];
        ASSERT_EQ(row.size(), 14u);
        EXPECT_EQ(std::stoull(row[0]), want_ctx[i]);
        EXPECT_EQ(std::stoull(row[1]), 16u);  // only the new interval is prefilled
        EXPECT_GT(std::stod(row[2]), 0.0);
        EXPECT_EQ(std::stoull(row[3]), 3u);
        EXPECT_GT(std::stod(row[4]), 0.0);
        EXPECT_EQ(row[6], "1");
        EXPECT_EQ(row[4], row[7]);  // batch 1: aggregate == per sequence
        EXPECT_GT(std::stoull(row[8]), 0u);
        EXPECT_GT(std::stoull(row[11]), 0u);  // prefill FLOPs per token
        EXPECT_GT(std::stod(row[12]), 0.0);   // prefill GFLOP/s
        EXPECT_GT(std::stod(row[13]), 0.0);   // ratio to the GEMM ceiling
        EXPECT_NEAR(std::stod(row[12]), std::stod(row[2]) * std::stod(row[11]) / 1e9,
                    0.002 + 0.01 * std::stod(row[12]));
        if (i > 0) {
            EXPECT_GT(std::stoull(row[5]), std::stoull(c.rows[i - 1][5]));  // KV grows with ctx
        }
    }
    bool have_read = false, have_gemm = false, have_tok = false, have_flops = false,
         have_prompt = false;
    for (const auto& line : c.comments) {
        have_read |= line.find("ceiling read_gbs=") != std::string::npos;
        have_gemm |= line.find("ceiling gemm_gflops=") != std::string::npos;
        have_tok |= line.find("tokenized_with=model tokenizer") != std::string::npos;
        have_flops |= line.find(" prefill_flops_per_token=") != std::string::npos;
        have_prompt |= line.find("bench/data/austen-persuasion.txt tokens=") != std::string::npos;
    }
    EXPECT_TRUE(have_read && have_gemm && have_tok && have_flops && have_prompt);
    const std::string chart = slurp(svg);
    const auto elems = xml_elements(chart);
    EXPECT_EQ(std::count(elems.begin(), elems.end(), "polyline"), 2);
    EXPECT_EQ(std::count(elems.begin(), elems.end(), "circle"), 6);
    EXPECT_GT(check_svg_geometry(chart), 40u);
    fs::remove(csv);
    fs::remove(svg);
}

// (9 sequences: the per-step argmax runs on host threads from 8 rows on)
TEST(BenchBinary, BatchModeReportsAggregateAndPerSequenceRates) {
    const auto r = run("-m " + demo() + " " + kTiny + " --ctx-max 32 --batch 9", false);
    ASSERT_EQ(r.code, 0) << r.out;
    const Csv c = parse_csv(r.out);
    EXPECT_EQ(c.header, kHeader);
    ASSERT_EQ(c.rows.size(), 2u);
    for (const auto& row : c.rows) {
        EXPECT_EQ(row[6], "9");
        const double agg = std::stod(row[4]), seq = std::stod(row[7]);
        EXPECT_NEAR(agg / 9.0, seq, 0.01 + agg * 1e-3);
    }
    size_t aggregate_lines = 0;
    for (const auto& line : c.comments)
        if (line.starts_with("# aggregate batch=9 frontiers=2 mean_gen_tps=")) ++aggregate_lines;
    EXPECT_EQ(aggregate_lines, 1u);
}

TEST(BenchBinary, GeometricFrontiersPrefillOnlyTheNewInterval) {
    const auto r = run(
        "-m " + demo() + " --ctx-start 8 --ctx-max 40 --step-mul 2 --gen-tokens 1 --bw-mib 8 -t 2",
        false);
    ASSERT_EQ(r.code, 0) << r.out;
    const Csv c = parse_csv(r.out);
    ASSERT_EQ(c.rows.size(), 4u);
    const std::vector<uint64_t> ctx{8, 16, 32, 40}, prefill{8, 8, 16, 8};
    for (size_t i = 0; i < c.rows.size(); ++i) {
        EXPECT_EQ(std::stoull(c.rows[i][0]), ctx[i]);
        EXPECT_EQ(std::stoull(c.rows[i][1]), prefill[i]);
        EXPECT_EQ(std::stoull(c.rows[i][3]), 1u);
    }
}

// --gen-warmup K: K more (untimed) decode steps, counted in the context room and the
// header, not in the gen_tokens column; ctx-alloc must hold them.
TEST(BenchBinary, GenWarmupStepsAreUntimedButNeedRoom) {
    const auto r = run("-m " + demo() + " --ctx-start 16 --ctx-max 16 --gen-tokens 2 --gen-warmup 3 --batch 2 "
                       "--bw-mib 8 -t 2", false);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find(" gen_tokens=2 gen_warmup=3 "), std::string::npos) << r.out;
    const Csv c = parse_csv(r.out);
    ASSERT_EQ(c.rows.size(), 1u);
    EXPECT_EQ(std::stoull(c.rows[0][3]), 2u);
    const auto tight = run("-m " + demo() + " --ctx-start 16 --ctx-max 16 --gen-tokens 2 --gen-warmup 3 "
                           "--ctx-alloc 20 --bw-mib 8 -t 2");
    EXPECT_NE(tight.code, 0);
    EXPECT_NE(tight.out.find("must be larger than ctx-max + gen-warmup + gen-tokens = 21"), std::string::npos)
        << tight.out;
}

// --env-sweep: one process, the engine reopened for each value in turn, rounds
// alternating; each run's rows after a "# sweep" line, its aggregate tagged.
TEST(BenchBinary, EnvSweepRunsEachValueInTurnOnTheSameWeights) {
    const auto r = run("-m " + demo() +
                           " --ctx-start 16 --ctx-max 32 --step-incr 16 --gen-tokens 2 --bw-mib 8"
                           " -t 2"
                           " --env-sweep DS4_BENCH_TEST_SWEEP=a,b --sweep-rounds 2",
                       false);
    ASSERT_EQ(r.code, 0) << r.out;
    const Csv c = parse_csv(r.out);
    EXPECT_EQ(c.header, kHeader);
    EXPECT_EQ(c.rows.size(), 8u);  // 2 frontiers x 2 values x 2 rounds
    std::vector<std::string> sweeps, aggregates;
    for (const auto& line : c.comments) {
        if (line.starts_with("# sweep ")) sweeps.push_back(line.substr(0, line.find(" load_s=")));
        if (line.starts_with("# aggregate "))
            aggregates.push_back(line.substr(line.rfind(' ') + 1));
    }
    const std::string v = "DS4_BENCH_TEST_SWEEP=";
    const std::vector<std::string> want{"# sweep " + v + "a round=0", "# sweep " + v + "b round=0",
                                        "# sweep " + v + "a round=1", "# sweep " + v + "b round=1"};
    EXPECT_EQ(sweeps, want);
    const std::string a = "[" + v + "a]", b = "[" + v + "b]";
    const std::vector<std::string> tags{a, b, a, b};
    EXPECT_EQ(aggregates, tags);
}

TEST(BenchBinary, BadFlagsGiveOneErrorLineAndNonZeroExit) {
    const std::vector<std::string> cases{"--no-such-flag",
                                         "--ctx-start abc",
                                         "--synthetic q3",
                                         "--env-sweep NAME",
                                         "--env-sweep =1,2",
                                         "--env-sweep A=1 --plot x.svg",
                                         "--batch 0",
                                         "-m " + demo() + " --ctx-start 64 --ctx-max 32",
                                         "-m /nonexistent.gguf --ctx-start 16 --ctx-max 16"};
    for (const std::string& args : cases) {
        const auto r = run(args);
        EXPECT_NE(r.code, 0) << args;
        EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
        EXPECT_TRUE(r.out.starts_with("ds4-bench: error: ")) << args << ": " << r.out;
    }
}

// The chart checked in under docs/ (bench/RESULTS.md shows it): well-formed, two series,
// every coordinate numeric and inside the viewBox.
TEST(BenchDocs, DemoPlotIsWellFormedSvgInsideItsViewBox) {
    const std::string svg = slurp(fs::path(DS4_SOURCE_DIR) / "docs" / "bench-demo.svg");
    ASSERT_FALSE(svg.empty());
    const auto elems = xml_elements(svg);
    EXPECT_EQ(std::count(elems.begin(), elems.end(), "svg"), 1);
    EXPECT_EQ(std::count(elems.begin(), elems.end(), "polyline"), 2);
    EXPECT_GE(std::count(elems.begin(), elems.end(), "circle"), 4);
    EXPECT_GT(check_svg_geometry(svg), 40u);
    EXPECT_NE(svg.find("ds4-bench"), std::string::npos);
}

// The default prompt is the shipped public-domain novel, long enough for the default
// --ctx-max 32768 with the V4 tokenizer (the demo model carries it).
TEST(BenchData, DefaultPromptIsThePublicDomainNovel) {
    const std::string text =
        slurp(fs::path(DS4_SOURCE_DIR) / "bench" / "data" / "austen-persuasion.txt");
    EXPECT_TRUE(text.starts_with("Jane Austen, Persuasion (1818)")) << text.substr(0, 80);
    EXPECT_NE(text.find("public domain"), std::string::npos);
    EXPECT_NE(text.find("Sir Walter Elliot, of Kellynch Hall"), std::string::npos);
    EXPECT_LE(text.size(), 300u * 1024u);
    const auto r =
        run("-m " + demo() + " --ctx-start 16 --ctx-max 16 --gen-tokens 1 --bw-mib 8 -t 2", false);
    ASSERT_EQ(r.code, 0) << r.out;
    const size_t at = r.out.find("austen-persuasion.txt tokens=");
    ASSERT_NE(at, std::string::npos) << r.out;
    EXPECT_GT(std::stoull(r.out.substr(at + 29)), 32768u);
}

// --synthetic checks memory before generating anything: refused in one line that says
// how much is needed and how many layers would fit.
TEST(BenchSynthetic, RefusesWhatDoesNotFitBeforeGenerating) {
    const auto none = run("--synthetic q2 --layers 1 --mem-limit-mib 64 --ctx-start 8 --ctx-max 8");
    EXPECT_NE(none.code, 0);
    EXPECT_EQ(std::count(none.out.begin(), none.out.end(), '\n'), 1) << none.out;
    EXPECT_TRUE(none.out.starts_with("ds4-bench: error: --synthetic q2 --layers 1 needs about "))
        << none.out;
    EXPECT_NE(none.out.find("not even one layer fits"), std::string::npos) << none.out;

    const auto full = run("--synthetic q2 --mem-limit-mib 8000 --ctx-start 8 --ctx-max 8");
    EXPECT_NE(full.code, 0);
    EXPECT_EQ(std::count(full.out.begin(), full.out.end(), '\n'), 1) << full.out;
    EXPECT_NE(full.out.find("--synthetic q2 --layers 43 needs about "), std::string::npos);
    const size_t at = full.out.find("use --layers ");
    ASSERT_NE(at, std::string::npos) << full.out;
    const unsigned layers = unsigned(std::stoul(full.out.substr(at + 13)));
    EXPECT_GE(layers, 1u);  // 8000 MiB holds the embedding, head and a few ~1.8 GiB layers
    EXPECT_LE(layers, 4u);
}

// The in-memory path itself, on the tiny shape (fast, so it runs under ASan too): the
// image lands in the memfd and opens through the ordinary Engine::open of its path.
TEST(BenchSynthetic, InMemoryModelOpensThroughTheEngine) {
    ds4::synth::MakeOptions opt;
    opt.shape = ds4::synth::shape_preset("tiny");
    opt.fast_blocks = true;
    opt.threads = 2;
    const ds4::bench::InMemoryModel image(opt);
    EXPECT_TRUE(image.path().starts_with("/proc/self/fd/")) << image.path();
    EXPECT_EQ(image.bytes(), fs::file_size(image.path()));
    EXPECT_LE(image.bytes(), ds4::bench::synthetic_image_bytes(opt));
    ds4::EngineOptions eo;
    eo.threads = 2;
    eo.ctx = 64;
    ds4::Engine engine = ds4::Engine::open(image.path(), eo);
    EXPECT_EQ(engine.model().n_layer, 4u);
    EXPECT_TRUE(engine.model().synthetic);
    EXPECT_EQ(engine.model().file_bytes, image.bytes());
    const ds4::SequenceId seq = engine.create_sequence();
    ds4::Batch batch;
    const std::vector<int32_t> tokens{5, 17, 42, 99};
    batch.add(seq, tokens);
    const ds4::Logits logits = engine.step(batch);
    ASSERT_EQ(logits.rows(), 1u);
    for (const float v : logits.row(0)) ASSERT_TRUE(std::isfinite(v));
}

// The memory check's arithmetic: the full published q2 image is ~81 GB, one layer with
// the embedding and head ~3.6 GB; the smaller of MemAvailable and the limit decides.
TEST(BenchSynthetic, ImageSizeGrowsPerLayerAndTheCheckUsesTheLimit) {
    const auto one = ds4::bench::synthetic_options("q2", 1, 1);
    const auto full = ds4::bench::synthetic_options("q2", 43, 1);
    const double gb = 1e9;
    EXPECT_GT(double(ds4::bench::synthetic_image_bytes(full)) / gb, 80.0);
    EXPECT_LT(double(ds4::bench::synthetic_image_bytes(full)) / gb, 90.0);
    EXPECT_GT(double(ds4::bench::synthetic_image_bytes(one)) / gb, 3.0);
    EXPECT_LT(double(ds4::bench::synthetic_image_bytes(one)) / gb, 4.5);
    EXPECT_NO_THROW(ds4::bench::check_fits(one, 0, 64ull << 30, 0));
    EXPECT_THROW(ds4::bench::check_fits(one, 0, 64ull << 30, 1ull << 30), ds4::Error);
    EXPECT_THROW(ds4::bench::check_fits(one, 0, 0, 1ull << 30), ds4::Error);  // no meminfo
    EXPECT_NO_THROW(ds4::bench::check_fits(full, 0, 0, 0));  // nothing known: not refused
    EXPECT_THROW(ds4::bench::check_fits(full, 0, 64ull << 30, 0), ds4::Error);
}

TEST(BenchBinary, PromptShorterThanCtxMaxIsAnError) {
    const fs::path prompt = temp_path("ds4-bench-short.txt");
    std::ofstream(prompt) << "Just a few words.";
    const auto r = run("-m " + demo() + " --prompt-file " + prompt.string() +
                       " --ctx-start 16 --ctx-max 64 --bw-mib 8");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.out.find("fewer than --ctx-max 64"), std::string::npos) << r.out;
    fs::remove(prompt);
}

// A CPU-only build refuses --cuda before mapping the model (a missing file is not what it
// reports) or generating a synthetic one, in one line that says how to get CUDA, like ds4.
TEST(BenchBinary, CudaOnACpuOnlyBuildIsAClearError) {
#ifdef DS4_BENCH_TEST_CUDA_BUILD
    GTEST_SKIP() << "built with CUDA";
#endif
    for (const std::string args : {"--cuda -m /nonexistent.gguf --ctx-start 16 --ctx-max 16",
                                   "--synthetic q2 --layers 1 --cuda"}) {
        const auto r = run(args);
        EXPECT_EQ(r.code, 1) << args;
        EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
        EXPECT_EQ(r.out,
                  "ds4-bench: error: --cuda: this ds4-bench was built without CUDA (configure "
                  "with -DDS4_CUDA=ON)\n")
            << args;
    }
}

}  // namespace
