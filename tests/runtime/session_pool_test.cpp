#include "runtime/session_pool.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <thread>

#include "ds4/error.h"
#include "session_test_util.h"

namespace ds4::runtime {
namespace {

using test::cold_logits;
using test::concat;
using test::prefix;
using test::random_tokens;
using test::same_bits;
using test::tiny_engine;

// A stand-in for rendering: "id," per token, so a token prefix is a byte prefix and a
// byte suffix after a whole token tokenizes back exactly.
std::string render(std::span<const int32_t> tokens) {
    std::string s;
    for (int32_t t : tokens) s += std::to_string(t) + ",";
    return s;
}

std::vector<int32_t> tokenize(std::string_view text) {
    std::vector<int32_t> out;
    while (!text.empty()) {
        const size_t comma = text.find(',');
        int32_t v = 0;
        std::from_chars(text.data(), text.data() + comma, v);
        out.push_back(v);
        text.remove_prefix(comma + 1);
    }
    return out;
}

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        static int n = 0;
        path = std::filesystem::temp_directory_path() /
               ("ds4-session-pool-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
        std::filesystem::remove_all(path);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

kvstore::DiskCacheOptions disk_options(const std::filesystem::path& dir) {
    kvstore::DiskCacheOptions o;
    o.dir = dir;
    o.min_tokens = 16;
    o.clock = [] { return int64_t{1'800'000'000}; };
    o.log = [](const std::string&) {};
    return o;
}

SessionPoolOptions pool_options(kvstore::DiskCache* disk, size_t max_sessions) {
    SessionPoolOptions o;
    o.max_sessions = max_sessions;
    o.disk = disk;
    o.session.checkpoint_interval = 32;
    o.session.max_checkpoints = 4;
    o.policy.min_tokens = 16;
    o.policy.cold_max_tokens = 0;     // cold saves off unless a test wants them
    o.policy.continued_interval = 0;  // continued saves off unless a test wants them
    o.policy.boundary_align = 32;
    o.policy.boundary_trim = 8;
    return o;
}

struct Request {
    std::vector<int32_t> tokens;
    std::string text;
    explicit Request(std::vector<int32_t> t) : tokens(std::move(t)), text(render(tokens)) {}
    PoolRequest get() const { return PoolRequest{tokens, text, tokenize}; }
};

TEST(SessionPool, AlternatingAgentsStayLive) {
    SessionPool pool(tiny_engine(), pool_options(nullptr, 2), render);
    Request a(random_tokens(30, 80)), b(random_tokens(31, 70));
    EXPECT_EQ(pool.acquire(a.get()).source, CacheSource::Cold);
    EXPECT_EQ(pool.acquire(b.get()).source, CacheSource::Cold);
    for (int round = 0; round < 2; ++round) {
        a = Request(concat(a.tokens, random_tokens(40 + round, 9)));
        const PoolResult ra = pool.acquire(a.get());
        EXPECT_EQ(ra.source, CacheSource::Live);
        EXPECT_EQ(ra.evaluated, 9u);
        EXPECT_TRUE(same_bits(ra.session->logits(), cold_logits(a.tokens)));
        b = Request(concat(b.tokens, random_tokens(50 + round, 5)));
        const PoolResult rb = pool.acquire(b.get());
        EXPECT_EQ(rb.source, CacheSource::Live);
        EXPECT_EQ(rb.evaluated, 5u);
        EXPECT_TRUE(same_bits(rb.session->logits(), cold_logits(b.tokens)));
    }
    const PoolStats st = pool.stats();
    EXPECT_EQ(st.sessions, 2u);
    EXPECT_EQ(st.live_hits, 4u);
    EXPECT_EQ(st.cold_starts, 2u);
    EXPECT_EQ(st.evictions, 0u);
}

// Two requests sharing a system prompt: the second continues in a fork, the first keeps
// its own continuation.
TEST(SessionPool, DivergingRequestForksWhenASlotIsFree) {
    SessionPool pool(tiny_engine(), pool_options(nullptr, 3), render);
    const std::vector<int32_t> system = random_tokens(32, 60);
    Request a(concat(system, random_tokens(33, 20))), b(concat(system, random_tokens(34, 15)));
    pool.acquire(a.get());
    const PoolResult rb = pool.acquire(b.get());
    EXPECT_EQ(rb.source, CacheSource::Live);
    EXPECT_EQ(pool.stats().forks, 1u);
    EXPECT_EQ(pool.stats().sessions, 2u);
    EXPECT_TRUE(same_bits(rb.session->logits(), cold_logits(b.tokens)));
    Request a2(concat(a.tokens, random_tokens(35, 4)));
    const PoolResult ra = pool.acquire(a2.get());
    EXPECT_EQ(ra.evaluated, 4u);
    EXPECT_TRUE(same_bits(ra.session->logits(), cold_logits(a2.tokens)));
}

TEST(SessionPool, EvictedSessionIsRestoredFromDisk) {
    TempDir dir;
    kvstore::DiskCache disk(disk_options(dir.path));
    SessionPool pool(tiny_engine(), pool_options(&disk, 1), render);
    Request a(random_tokens(36, 100)), b(random_tokens(37, 50));
    pool.acquire(a.get());
    pool.acquire(b.get());  // evicts a, saved with reason evict
    EXPECT_EQ(pool.stats().evictions, 1u);
    EXPECT_EQ(pool.stats().disk_saves, 1u);
    const std::vector<kvstore::CacheEntry> entries = disk.entries();
    ASSERT_EQ(entries.size(), 1u);
    EXPECT_EQ(entries[0].header.tokens, 100u);
    EXPECT_EQ(entries[0].header.reason, kvstore::SaveReason::Evict);
    Request a2(concat(a.tokens, random_tokens(38, 12)));
    const PoolResult r = pool.acquire(a2.get());  // evicts b (saved too), loads a
    EXPECT_EQ(r.source, CacheSource::Disk);
    EXPECT_EQ(r.evaluated, 12u);
    EXPECT_EQ(r.reused, 100u);
    EXPECT_EQ(r.session->tokens(), a2.tokens);
    EXPECT_TRUE(same_bits(r.session->logits(), cold_logits(a2.tokens)));
    EXPECT_EQ(pool.stats().disk_hits, 1u);
    EXPECT_EQ(disk.entries().size(), 2u);
}

TEST(SessionPool, DiskMissAndCorruptFileFallBackToCold) {
    TempDir dir;
    kvstore::DiskCache disk(disk_options(dir.path));
    SessionPool pool(tiny_engine(), pool_options(&disk, 1), render);
    Request a(random_tokens(39, 90)), b(random_tokens(40, 40));
    pool.acquire(a.get());
    pool.acquire(b.get());  // a goes to disk
    ASSERT_EQ(disk.entries().size(), 1u);
    // Unrelated prompt: miss.
    Request c(random_tokens(41, 30));
    EXPECT_EQ(pool.acquire(c.get()).source, CacheSource::Cold);
    // Corrupt a's payload in place (a layer row count far past its capacity).
    std::filesystem::path a_file;
    for (const auto& e : disk.entries())
        if (e.header.tokens == 90) a_file = e.path;
    ASSERT_FALSE(a_file.empty());
    {
        std::fstream f(a_file, std::ios::in | std::ios::out | std::ios::binary);
        const uint64_t payload_at = kvstore::kPrefixBytes + render(a.tokens).size();
        f.seekp(static_cast<std::streamoff>(payload_at));
        f.write("XXXX", 4);  // the payload magic
    }
    Request a2(concat(a.tokens, random_tokens(42, 3)));
    const PoolResult r = pool.acquire(a2.get());
    EXPECT_EQ(r.source, CacheSource::Cold);
    EXPECT_TRUE(same_bits(r.session->logits(), cold_logits(a2.tokens)));
    EXPECT_EQ(pool.stats().disk_load_failures, 1u);
    EXPECT_FALSE(std::filesystem::exists(a_file));
}

// The cold save stores a stable prefix (here 64 of 100 tokens: 100 − 8 aligned down to
// 32); a later prompt sharing only that prefix loads it.
TEST(SessionPool, ColdSaveServesALaterPromptWithTheSamePrefix) {
    TempDir dir;
    kvstore::DiskCache disk(disk_options(dir.path));
    SessionPoolOptions o = pool_options(&disk, 1);
    o.policy.cold_max_tokens = 1000;
    SessionPool pool(tiny_engine(), o, render);
    Request a(random_tokens(43, 100));
    const PoolResult ra = pool.acquire(a.get());
    EXPECT_TRUE(same_bits(ra.session->logits(), cold_logits(a.tokens)));
    ASSERT_EQ(disk.entries().size(), 1u);
    EXPECT_EQ(disk.entries()[0].header.tokens, 64u);
    EXPECT_EQ(disk.entries()[0].header.reason, kvstore::SaveReason::Cold);
    pool.shutdown();  // saves a (100 tokens, reason shutdown)
    EXPECT_EQ(disk.entries().size(), 2u);
    Request c(concat(prefix(a.tokens, 64), random_tokens(44, 10)));
    const PoolResult rc = pool.acquire(c.get());
    EXPECT_EQ(rc.source, CacheSource::Disk);
    EXPECT_EQ(rc.evaluated, 10u);
    EXPECT_TRUE(same_bits(rc.session->logits(), cold_logits(c.tokens)));
}

TEST(SessionPool, ContinuedSavesAtAlignedFrontiers) {
    TempDir dir;
    kvstore::DiskCache disk(disk_options(dir.path));
    SessionPoolOptions o = pool_options(&disk, 2);
    o.policy.continued_interval = 40;  // rounded up to the 32 alignment: every 64 tokens
    SessionPool pool(tiny_engine(), o, render);
    Request a(random_tokens(45, 140));
    const PoolResult r = pool.acquire(a.get());
    EXPECT_TRUE(same_bits(r.session->logits(), cold_logits(a.tokens)));
    std::vector<uint32_t> stored;
    for (const auto& e : disk.entries()) stored.push_back(e.header.tokens);
    std::sort(stored.begin(), stored.end());
    EXPECT_EQ(stored, (std::vector<uint32_t>{64, 128}));
    // Decoding past the next frontier.
    for (int32_t t : random_tokens(46, 52)) {
        r.session->append(t);
        pool.note_decoded(*r.session);
    }
    EXPECT_EQ(disk.entries().size(), 3u);
}

TEST(SessionPool, MemoryBudgetLimitsLiveSessions) {
    const uint64_t cost = SessionPool(tiny_engine(), pool_options(nullptr, 1), render).session_cost();
    ASSERT_GT(cost, 0u);
    SessionPoolOptions o = pool_options(nullptr, 8);
    o.memory_budget = 2 * cost + cost / 2;
    SessionPool pool(tiny_engine(), o, render);
    for (uint64_t i = 0; i < 4; ++i) pool.acquire(Request(random_tokens(60 + i, 20)).get());
    EXPECT_EQ(pool.stats().sessions, 2u);
    EXPECT_LE(pool.stats().resident_bytes, o.memory_budget);
    EXPECT_EQ(pool.stats().evictions, 2u);
    o.memory_budget = cost - 1;
    EXPECT_THROW(SessionPool(tiny_engine(), o, render), Error);
}

// stats() may be read from another thread while the worker acquires.
TEST(SessionPool, StatsReadableFromAnotherThread) {
    SessionPool pool(tiny_engine(), pool_options(nullptr, 2), render);
    std::atomic<bool> done{false};
    uint64_t reads = 0;
    std::thread reader([&] {
        while (!done.load()) {
            const PoolStats s = pool.stats();
            EXPECT_LE(s.sessions, 2u);
            ++reads;
        }
    });
    for (uint64_t i = 0; i < 5; ++i) pool.acquire(Request(random_tokens(70 + i, 12)).get());
    done = true;
    reader.join();
    EXPECT_GT(reads, 0u);
    EXPECT_EQ(pool.stats().cold_starts + pool.stats().live_hits, 5u);
}

}  // namespace
}  // namespace ds4::runtime

namespace ds4::runtime {
namespace {

// With no free slot a diverging request reuses the best session in place, after saving
// it (its tail would be lost); a short shared head does not count as a live match.
TEST(SessionPool, InPlaceReuseSavesTheSessionFirstAndShortHeadsAreCold) {
    TempDir dir;
    kvstore::DiskCache disk(disk_options(dir.path));
    SessionPool pool(tiny_engine(), pool_options(&disk, 1), render);
    const std::vector<int32_t> head = random_tokens(80, 40);
    Request a(concat(head, random_tokens(81, 30))), b(concat(head, random_tokens(82, 10)));
    pool.acquire(a.get());
    const PoolResult rb = pool.acquire(b.get());
    EXPECT_EQ(rb.source, CacheSource::Live);
    EXPECT_EQ(rb.evaluated, 18u);  // from the checkpoint at 32
    EXPECT_TRUE(same_bits(rb.session->logits(), cold_logits(b.tokens)));
    ASSERT_EQ(disk.entries().size(), 1u);
    EXPECT_EQ(disk.entries()[0].header.tokens, 70u);
    Request c(concat(prefix(head, 5), random_tokens(83, 20)));
    const PoolResult rc = pool.acquire(c.get());
    EXPECT_EQ(rc.source, CacheSource::Cold);
    EXPECT_EQ(rc.evaluated, 25u);
    EXPECT_TRUE(same_bits(rc.session->logits(), cold_logits(c.tokens)));
}

}  // namespace
}  // namespace ds4::runtime
