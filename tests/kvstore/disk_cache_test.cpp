#include "kvstore/disk_cache.h"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "cache_test_util.h"
#include "ds4/error.h"

namespace ds4::kvstore {
namespace {
namespace fs = std::filesystem;
using test::payload_of;
using test::request;
using test::TempDir;

struct Fixture {
    explicit Fixture(const std::string& tag, uint64_t budget = 1 << 20) : dir(tag) {
        opt.dir = dir.path();
        opt.budget_bytes = budget;
        opt.min_tokens = 4;
        opt.cold_max_tokens = 1000;
        opt.clock = [this] { return clock; };
        opt.log = [this](const std::string& m) { log.push_back(m); };
    }
    DiskCache open() { return DiskCache(opt); }
    TempDir dir;
    DiskCacheOptions opt;
    int64_t clock = 1700000000;
    std::vector<std::string> log;
};

TEST(DiskCache, StoresAFileNamedBySha1OfItsText) {
    Fixture f("name");
    DiskCache c = f.open();
    const auto payload = payload_of(1000, 1);
    EXPECT_EQ(c.store(request("hello world", payload, 8)), StoreOutcome::Written);
    const fs::path file = f.dir.path() / (sha1_hex("hello world") + ".kv");
    ASSERT_TRUE(fs::exists(file));
    EXPECT_EQ(fs::file_size(file), 52u + 11u + 1000u);
    const auto all = c.entries();
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all[0].header.tokens, 8u);
    EXPECT_EQ(all[0].header.created, 1700000000);
    EXPECT_EQ(fs::status(f.dir.path()).permissions() & fs::perms::all, fs::perms::owner_all);
}

TEST(DiskCache, FindsTheLongestTextPrefixAndLoadsItExactly) {
    Fixture f("prefix");
    DiskCache c = f.open();
    const auto p1 = payload_of(300, 1), p2 = payload_of(500, 2), p3 = payload_of(700, 3);
    c.store(request("system: be brief", p1, 10));
    c.store(request("system: be brief\nuser: hi", p2, 20));
    c.store(request("system: be verbose", p3, 30));
    const std::string prompt = "system: be brief\nuser: hi\nassistant:";
    const auto best = c.find_best(prompt, 100000, 2);
    ASSERT_TRUE(best);
    EXPECT_EQ(best->header.tokens, 20u);
    const auto hit = c.load(*best, prompt);
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->text, "system: be brief\nuser: hi");
    EXPECT_EQ(hit->payload, p2);
    EXPECT_FALSE(c.find_best("unrelated", 100000, 2));
    EXPECT_FALSE(c.find_best("system: be", 100000, 2));  // every entry is longer than the prompt
}

TEST(DiskCache, LookupHonoursContextQuantAndMinTokens) {
    Fixture f("filters");
    f.opt.reject_different_quant = true;
    DiskCache c = f.open();
    const auto p = payload_of(100, 1);
    auto big_ctx = request("abc", p, 10);
    big_ctx.ctx = 200000;
    c.store(big_ctx);
    EXPECT_FALSE(c.find_best("abcdef", 100000, 2));  // written by a larger context
    EXPECT_TRUE(c.find_best("abcdef", 200000, 2));
    EXPECT_FALSE(c.find_best("abcdef", 200000, 4));  // other quantization, rejected by policy
    EXPECT_EQ(c.store(request("tiny", p, 3)), StoreOutcome::SkippedTooSmall);
}

TEST(DiskCache, RecordHitCountsOrConsumesLargeCheckpoints) {
    Fixture f("hits");
    DiskCache c = f.open();
    const auto p = payload_of(100, 1);
    c.store(request("small", p, 10));
    c.store(request("large", p, 2000));
    f.clock += 60;
    auto small = c.find_best("small!", 100000, 2);
    ASSERT_TRUE(small);
    c.record_hit(*small, 10);
    small = c.find_best("small!", 100000, 2);
    EXPECT_EQ(small->header.hits, 1u);
    EXPECT_EQ(small->header.last_used, 1700000060);
    const auto large = c.find_best("large!", 100000, 2);
    ASSERT_TRUE(large);
    c.record_hit(*large, 2000);  // above cold_max_tokens: single use
    EXPECT_FALSE(c.find_best("large!", 100000, 2));
}

TEST(DiskCache, SameTextKeepsThePayloadAndRewritesOnlyTheToolMap) {
    Fixture f("ktm");
    DiskCache c = f.open();
    const auto p1 = payload_of(200, 1), p2 = payload_of(200, 9);
    c.store(request("conversation", p1, 10));
    const std::vector<ToolIdEntry> ids = {{"call_1", "<｜DSML｜tool_calls>x</｜DSML｜tool_calls>"}};
    auto again = request("conversation", p2, 10);
    again.tool_ids = ids;
    EXPECT_EQ(c.store(again), StoreOutcome::KeptExisting);
    const auto hit = c.load(*c.find_best("conversation", 100000, 2), "conversation");
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->payload, p1);  // the existing payload was kept
    EXPECT_EQ(hit->tool_ids, ids);
    EXPECT_TRUE(hit->entry.header.ext_flags & kExtToolMap);
    const auto found = c.load_tool_ids([](std::string_view id) { return id == "call_1"; });
    EXPECT_EQ(found, ids);
    EXPECT_TRUE(c.load_tool_ids([](std::string_view id) { return id == "call_2"; }).empty());
}

TEST(DiskCache, IncompatibleSameNameFileIsReplaced) {
    Fixture f("replace");
    DiskCache c = f.open();
    const auto p1 = payload_of(200, 1), p2 = payload_of(300, 2);
    auto first = request("same text", p1, 10);
    first.ctx = 200000;
    c.store(first);
    EXPECT_EQ(c.store(request("same text", p2, 12)), StoreOutcome::Written);  // ctx 100000 < 200000
    const auto hit = c.load(*c.find_best("same text", 100000, 2), "same text");
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->payload, p2);
}

TEST(DiskCache, EvictsTheLowestScoreFirstAndProtectsTheNewEntry) {
    Fixture f("evict", 3000);
    DiskCache c = f.open();
    const auto p = payload_of(800, 1);
    c.store(request("a", p, 100));  // score ∝ tokens/bytes
    c.store(request("b", p, 50));   // the lowest score: evicted first
    c.store(request("c", p, 400));
    EXPECT_EQ(c.entries().size(), 3u);
    c.store(request("d", p, 10));  // over budget: "b" goes although "d" scores lower
    std::vector<std::string> left;
    for (const auto& e : c.entries()) left.push_back(e.sha);
    std::sort(left.begin(), left.end());
    std::vector<std::string> expected = {sha1_hex("a"), sha1_hex("c"), sha1_hex("d")};
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(left, expected);
    EXPECT_LE(c.total_bytes(), 3000u);
}

TEST(DiskCache, RecentHitsRaiseTheScore) {
    Fixture f("decay", 3000);
    DiskCache c = f.open();
    const auto p = payload_of(800, 1);
    c.store(request("a", p, 100));
    c.store(request("b", p, 100));
    c.store(request("c", p, 100));
    for (int i = 0; i < 3; ++i) c.record_hit(*c.find_best("a", 100000, 2), 100);
    c.store(request("d", p, 100));
    bool a_left = false;
    for (const auto& e : c.entries()) a_left |= e.sha == sha1_hex("a");
    EXPECT_TRUE(a_left);
    EXPECT_EQ(c.entries().size(), 3u);
}

TEST(DiskCache, RefusesEntriesLargerThanTheBudget) {
    Fixture f("budget", 1000);
    DiskCache c = f.open();
    const auto p = payload_of(950, 1);
    EXPECT_EQ(c.store(request("x", p, 10)), StoreOutcome::SkippedOverBudget);
    EXPECT_TRUE(c.entries().empty());
    ASSERT_FALSE(f.log.empty());
    EXPECT_NE(f.log.back().find("exceed the budget of 1000"), std::string::npos) << f.log.back();
}

TEST(DiskCache, CorruptAndTruncatedEntriesAreReportedAndDeleted) {
    Fixture f("corrupt");
    {
        DiskCache c = f.open();
        const auto p = payload_of(400, 1);
        c.store(request("good", p, 10));
        c.store(request("will be truncated", p, 10));
    }
    const fs::path cut = f.dir.path() / (sha1_hex("will be truncated") + ".kv");
    fs::resize_file(cut, 100);
    const fs::path garbage = f.dir.path() / (sha1_hex("garbage") + ".kv");
    std::ofstream(garbage) << "not a kv cache file at all, but long enough to have a header.....";
    std::ofstream(f.dir.path() / "notes.txt") << "foreign files are left alone";
    DiskCache c = f.open();
    EXPECT_EQ(c.entries().size(), 1u);
    EXPECT_FALSE(fs::exists(cut));
    EXPECT_FALSE(fs::exists(garbage));
    EXPECT_TRUE(fs::exists(f.dir.path() / "notes.txt"));
    std::string joined;
    for (const auto& m : f.log) joined += m + "\n";
    EXPECT_NE(joined.find("truncated: 100 bytes, header says 469"), std::string::npos) << joined;
    EXPECT_NE(joined.find("bad magic"), std::string::npos) << joined;
}

TEST(DiskCache, TextNotHashingToItsNameIsDeletedOnLoad) {
    Fixture f("mismatch");
    DiskCache c = f.open();
    const auto p = payload_of(100, 1);
    c.store(request("original", p, 10));
    const fs::path real = f.dir.path() / (sha1_hex("original") + ".kv");
    const fs::path forged = f.dir.path() / (sha1_hex("origin") + ".kv");
    fs::rename(real, forged);  // a file whose name promises another text
    const std::string prompt = "original prompt";
    const auto best = c.find_best("origin", 100000, 2);
    EXPECT_FALSE(best);  // text_bytes 8 > prompt 6
    const CacheEntry e = c.entries().at(0);
    EXPECT_FALSE(c.load(e, prompt));
    EXPECT_FALSE(fs::exists(forged));
}

TEST(DiskCache, ConcurrentWritersLeaveOnlyCompleteFiles) {
    Fixture f("threads", 64 << 10);
    DiskCache c = f.open();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&c, t] {
            for (int i = 0; i < 20; ++i) {
                const std::string text =
                    "shared prefix " + std::to_string(i % 5) + (i % 2 ? "" : std::to_string(t));
                const auto p = payload_of(1000 + 100 * t, static_cast<uint8_t>(i));
                c.store(request(text, p, 10 + static_cast<uint32_t>(i)));
            }
        });
    }
    for (auto& th : threads) th.join();
    uint64_t total = 0;
    for (const auto& e : c.entries()) {
        const auto hit = c.load(e, std::string(4096, ' '));  // not a prefix: only re-reads
        total += e.file_bytes;
        EXPECT_EQ(e.file_bytes, e.header.body_end());
    }
    EXPECT_LE(total, 64u << 10);
    for (const auto& de : fs::directory_iterator(f.dir.path()))
        EXPECT_EQ(de.path().extension(), ".kv") << de.path();  // no temp files left behind
}

TEST(DiskCache, UnusableDirectoryIsAClearError) {
    TempDir d("notadir");
    std::ofstream(d.path()) << "a file";
    DiskCacheOptions o;
    o.dir = d.path();
    try {
        DiskCache c(o);
        FAIL() << "expected an error";
    } catch (const ds4::Error& e) {
        EXPECT_NE(std::string(e.what()).find("--kv-disk-dir " + d.path().string() +
                                             ": cannot create directory"),
                  std::string::npos)
            << e.what();
    }
    fs::remove(d.path());
}


// ---- tool-id map (KTM, formats.md §6.5) through the hooks the server sets ----

std::string file_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::string s(static_cast<size_t>(fs::file_size(p)), '\0');
    in.read(s.data(), static_cast<std::streamsize>(s.size()));
    return s;
}

std::string u32le(uint32_t v) {
    std::string s(4, '\0');
    for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
}

const std::string kBlock = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

TEST(DiskCacheToolMap, StoreAppendsTheHookEntriesAndLoadHandsThemBack) {
    Fixture f("ktm");
    std::vector<ToolIdEntry> loaded;
    std::string asked;
    f.opt.tool_ids_for_text = [&](std::string_view text) {
        asked = text;
        return std::vector<ToolIdEntry>{{"call_1", kBlock}, {"toolu_2", kBlock}};
    };
    f.opt.on_tool_ids_loaded = [&](const std::vector<ToolIdEntry>& e) { loaded = e; };
    DiskCache c = f.open();
    const std::string text = "<｜User｜>go<｜Assistant｜>" + kBlock + "<｜end▁of▁sentence｜>";
    const auto payload = payload_of(100, 7);
    ASSERT_EQ(c.store(request(text, payload, 8)), StoreOutcome::Written);
    EXPECT_EQ(asked, text);
    const fs::path file = f.dir.path() / (sha1_hex(text) + ".kv");
    const std::string bytes = file_bytes(file);
    EXPECT_EQ(static_cast<uint8_t>(bytes[6]), kExtToolMap);
    const std::string expected_ktm = std::string("KTM\x01", 4) + u32le(2) +
                                     u32le(6) + u32le(static_cast<uint32_t>(kBlock.size())) + "call_1" + kBlock +
                                     u32le(7) + u32le(static_cast<uint32_t>(kBlock.size())) + "toolu_2" + kBlock;
    ASSERT_EQ(bytes.size(), 52 + text.size() + 100 + expected_ktm.size());
    EXPECT_EQ(bytes.substr(52 + text.size() + 100), expected_ktm);
    const auto best = c.find_best(text + "more", 100000, 2);
    ASSERT_TRUE(best);
    const auto hit = c.load(*best, text + "more");
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->payload, payload);
    const std::vector<ToolIdEntry> want = {{"call_1", kBlock}, {"toolu_2", kBlock}};
    EXPECT_EQ(hit->tool_ids, want);
    EXPECT_EQ(loaded, want);
    // The request-time lookup reads only the ids asked for.
    const auto some = c.load_tool_ids([](std::string_view id) { return id == "toolu_2"; });
    EXPECT_EQ(some, (std::vector<ToolIdEntry>{{"toolu_2", kBlock}}));
}

TEST(DiskCacheToolMap, NoEntriesMeansNoSectionAndBit0Clear) {
    Fixture f("ktm-none");
    f.opt.tool_ids_for_text = [](std::string_view) { return std::vector<ToolIdEntry>{}; };
    DiskCache c = f.open();
    const auto payload = payload_of(64, 1);
    c.store(request("plain text key", payload, 8));
    const std::string bytes = file_bytes(f.dir.path() / (sha1_hex("plain text key") + ".kv"));
    EXPECT_EQ(bytes[6], 0);
    EXPECT_EQ(bytes.size(), 52u + 14u + 64u);
}

TEST(DiskCacheToolMap, TruncatedOrMalformedSectionMakesTheFileCorrupt) {
    for (const int cut : {3, 20}) {
        Fixture f("ktm-cut" + std::to_string(cut));
        f.opt.tool_ids_for_text = [](std::string_view) { return std::vector<ToolIdEntry>{{"call_1", kBlock}}; };
        std::vector<ToolIdEntry> loaded;
        f.opt.on_tool_ids_loaded = [&](const std::vector<ToolIdEntry>& e) { loaded = e; };
        DiskCache c = f.open();
        const auto payload = payload_of(64, 1);
        c.store(request("key text", payload, 8));
        const fs::path file = f.dir.path() / (sha1_hex("key text") + ".kv");
        fs::resize_file(file, fs::file_size(file) - static_cast<uint64_t>(cut));
        const auto entries = c.entries();
        ASSERT_EQ(entries.size(), 1u);
        EXPECT_FALSE(c.load(entries[0], "key text and more"));
        EXPECT_FALSE(fs::exists(file));
        EXPECT_TRUE(loaded.empty());
        ASSERT_FALSE(f.log.empty());
        EXPECT_NE(f.log.back().find("tool-id map (KTM) section is truncated or malformed (corrupt)"), std::string::npos)
            << f.log.back();
    }
}

TEST(DiskCacheToolMap, Bit0WithoutASectionLoadsNothingAndWrongMagicIsCorrupt) {
    Fixture f("ktm-bit0");
    DiskCache c = f.open();
    const auto payload = payload_of(64, 1);
    c.store(request("ds4 wrote me", payload, 8));
    const fs::path file = f.dir.path() / (sha1_hex("ds4 wrote me") + ".kv");
    {
        std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
        io.seekp(6);
        io.put(static_cast<char>(kExtToolMap));
    }
    auto hit = c.load(c.entries().at(0), "ds4 wrote me!");
    ASSERT_TRUE(hit);
    EXPECT_TRUE(hit->tool_ids.empty());
    std::ofstream(file, std::ios::binary | std::ios::app) << "XYZ\x01garbage";
    EXPECT_FALSE(c.load(c.entries().at(0), "ds4 wrote me!"));
    EXPECT_FALSE(fs::exists(file));
}

// ---- no directory rescans per lookup (interface.md §8 item 23) ----

TEST(DiskCacheIndex, LookupsUseTheIndexAndOutsideChangesArePickedUp) {
    Fixture f("index");
    DiskCache c = f.open();
    const auto payload = payload_of(200, 3);
    c.store(request("first entry", payload, 8));
    // Directory stamps younger than 2 s are not trusted (coarse timestamps).
    std::this_thread::sleep_for(std::chrono::milliseconds(2100));
    ASSERT_EQ(c.entries().size(), 1u);
    const uint64_t scans = c.scans();
    for (int i = 0; i < 5; ++i) {
        EXPECT_TRUE(c.find_best("first entry, then more", 100000, 2));
        EXPECT_EQ(c.entries().size(), 1u);
        (void)c.load_tool_ids([](std::string_view) { return true; });
    }
    EXPECT_EQ(c.scans(), scans);
    // Our own store updates the index without a scan of its own.
    c.store(request("second entry", payload, 8));
    EXPECT_EQ(c.entries().size(), 2u);
    std::this_thread::sleep_for(std::chrono::milliseconds(2100));
    EXPECT_EQ(c.entries().size(), 2u);
    const uint64_t settled = c.scans();
    EXPECT_EQ(c.entries().size(), 2u);
    EXPECT_EQ(c.scans(), settled);
    // Another process writes a file: the directory's mtime changes, one rescan finds it.
    {
        Fixture other("index-unused");
        other.opt.dir = f.dir.path();
        DiskCache writer = other.open();
        writer.store(request("written elsewhere", payload, 8));
    }
    const auto all = c.entries();
    EXPECT_EQ(all.size(), 3u);
    EXPECT_EQ(c.scans(), settled + 1);
    EXPECT_TRUE(c.find_best("written elsewhere!", 100000, 2));
}

}  // namespace
}  // namespace ds4::kvstore
