// ds4-bench --synthetic end to end: one published-width layer (D 4096, 256 experts,
// vocab 129280) generated in memory and benched at tiny frontiers. Several GB of memory
// and tens of seconds, so it is its own ctest case labelled "slow", and skipped under
// AddressSanitizer (the shadow memory would double the footprint).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif

std::string run_stdout(const std::string& args, int& code) {
    const std::string cmd = std::string(DS4_BINARY_DIR) + "/bin/ds4-bench " + args + " 2>&1";
    std::string out;
    std::FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return out;
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
    const int status = ::pclose(p);
    code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out(1);
    for (char c : s) {
        if (c == sep)
            out.emplace_back();
        else
            out.back().push_back(c);
    }
    return out;
}

TEST(BenchSyntheticRun, OnePublishedWidthLayerInMemoryGivesACsv) {
    if (kAsan) GTEST_SKIP() << "several GB of weights: not under AddressSanitizer";
    const std::string csv = ::testing::TempDir() + "ds4-bench-synthetic.csv";
    int code = -1;
    const std::string log = run_stdout(
        "--synthetic q2 --layers 1 --ctx-start 8 --ctx-max 16 --step-incr 8 --gen-tokens 2 "
        "--bw-mib 8 -t 2 --csv " +
            csv,
        code);
    // A machine with less free memory than one full-width layer needs is refused up front
    // (that refusal has its own test in bench_test.cpp).
    if (code != 0 && log.find("needs about") != std::string::npos)
        GTEST_SKIP() << "not enough memory here: " << log;
    ASSERT_EQ(code, 0) << log;
    EXPECT_NE(log.find("generating the synthetic model in memory"), std::string::npos) << log;

    std::ifstream in(csv);
    std::string line, header;
    std::vector<std::string> meta;
    std::vector<std::vector<std::string>> rows;
    while (std::getline(in, line)) {
        if (line.starts_with("#"))
            meta.push_back(line);
        else if (header.empty())
            header = line;
        else
            rows.push_back(split(line, ','));
    }
    EXPECT_TRUE(header.starts_with("ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,"))
        << header;
    ASSERT_EQ(rows.size(), 2u);
    for (size_t i = 0; i < rows.size(); ++i) {
        ASSERT_EQ(rows[i].size(), 14u);
        EXPECT_EQ(rows[i][0], i == 0 ? "8" : "16");
        EXPECT_EQ(rows[i][1], "8");
        EXPECT_GT(std::stod(rows[i][2]), 0.0);  // prefill t/s
        EXPECT_EQ(rows[i][3], "2");
        EXPECT_GT(std::stod(rows[i][4]), 0.0);  // gen t/s
        // One layer: embedding row, 6 of 256 experts, the attention and the Q8_0 head.
        EXPECT_GT(std::stoull(rows[i][8]), 500'000'000u);
        EXPECT_GT(std::stoull(rows[i][11]), 0u);
    }
    std::string all;
    for (const auto& m : meta) all += m + "\n";
    EXPECT_NE(all.find("synthetic=yes layers=1 n_embd=4096 experts=6/256"), std::string::npos)
        << all;
    EXPECT_NE(all.find("quant=q2"), std::string::npos);
    EXPECT_NE(all.find("model=/proc/self/fd/"), std::string::npos) << all;  // no file
    EXPECT_NE(all.find("synthetic_in_memory_bytes="), std::string::npos);
    std::remove(csv.c_str());
}

}  // namespace
