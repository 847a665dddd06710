// Crash safety: a writer killed with SIGKILL in the middle of a store never leaves a
// partial file under a real entry name, and the next open removes its temp file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "cache_test_util.h"

namespace ds4::kvstore {
namespace {
namespace fs = std::filesystem;
using test::payload_of;
using test::request;
using test::TempDir;

bool has_temp_file(const fs::path& dir) {
    std::error_code ec;
    for (const auto& de : fs::directory_iterator(dir, ec))
        if (de.path().filename().string().find(".kv.tmp.") != std::string::npos) return true;
    return false;
}

// The child stores 8 MiB checkpoints forever; the parent kills it while a temp file exists.
[[noreturn]] void store_forever(const fs::path& dir) {
    DiskCacheOptions o;
    o.dir = dir;
    o.min_tokens = 1;
    o.log = [](const std::string&) {};
    DiskCache c(o);
    const auto payload = payload_of(8 << 20, 7);
    for (uint32_t i = 0;; ++i)
        c.store(request("checkpoint " + std::to_string(i), payload, 100 + i));
}

TEST(DiskCacheCrash, KillDuringWriteLeavesOnlyCompleteEntries) {
    TempDir dir("crash");
    fs::create_directories(dir.path());
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) store_forever(dir.path());
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!has_temp_file(dir.path()) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));

    std::vector<std::string> log;
    DiskCacheOptions o;
    o.dir = dir.path();
    o.min_tokens = 1;
    o.log = [&log](const std::string& m) { log.push_back(m); };
    DiskCache c(o);
    EXPECT_FALSE(has_temp_file(dir.path()));
    for (const auto& e : c.entries()) {
        EXPECT_EQ(e.file_bytes, e.header.body_end());
        const std::string text = "checkpoint " + std::to_string(e.header.tokens - 100);
        const auto hit = c.load(e, text);
        ASSERT_TRUE(hit) << e.sha;
        EXPECT_EQ(hit->payload.size(), size_t{8} << 20);
        EXPECT_EQ(hit->payload[12345], payload_of(12346, 7)[12345]);
    }
    bool reported = false;
    for (const auto& m : log)
        reported |= m.find("left by an interrupted save") != std::string::npos;
    EXPECT_TRUE(reported);
}

TEST(DiskCacheCrash, TempFilesOfLiveWritersAreKept) {
    TempDir dir("livetmp");
    fs::create_directories(dir.path());
    const fs::path mine =
        dir.path() / (sha1_hex("x") + ".kv.tmp." + std::to_string(::getpid()) + ".1");
    std::ofstream(mine) << "in progress";
    DiskCacheOptions o;
    o.dir = dir.path();
    o.log = [](const std::string&) {};
    DiskCache c(o);
    EXPECT_TRUE(fs::exists(mine));
}

}  // namespace
}  // namespace ds4::kvstore
