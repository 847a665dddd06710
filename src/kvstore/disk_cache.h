// The disk KV cache directory (formats.md §6): lookup by longest rendered-text prefix,
// atomic stores, hit bookkeeping, and a space budget with score-based eviction.
//
// Differences from ds4, all on the safe side and invisible in the file format:
//  - stores write "<sha>.kv.tmp.<pid>.<n>", fsync it, rename, then fsync the directory,
//    so a crash never leaves a partial file under a real name; stale temp files of dead
//    processes are removed when the cache opens;
//  - entries with a valid name but a corrupt or truncated body are reported and deleted
//    (ds4 silently keeps them forever, outside the budget);
//  - every method is safe to call from several threads of one process.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvstore/kvc_format.h"

namespace ds4::kvstore {

struct DiskCacheOptions {
    std::filesystem::path dir;
    uint64_t budget_bytes = uint64_t{4096} << 20;  // --kv-disk-space-mb (0 means the default)
    bool reject_different_quant = false;           // --kv-cache-reject-different-quant
    uint32_t min_tokens = 512;                     // --kv-cache-min-tokens
    uint32_t cold_max_tokens = 30000;              // hits above this many tokens consume the file
    uint32_t max_tool_ids = 100000;                // --tool-memory-max-ids
    std::function<int64_t()> clock;                // Unix seconds; default: system clock
    std::function<void(const std::string&)> log;   // diagnostics; default: stderr
};

struct CacheEntry {
    std::string sha;  // lowercase hex, the file name stem
    std::filesystem::path path;
    KvcHeader header;
    uint64_t file_bytes = 0;
};

struct StoreRequest {
    std::string_view text;             // rendered text: the lookup key
    std::span<const uint8_t> payload;  // DS4 session payload v1
    uint32_t tokens = 0;
    uint32_t ctx = 0;
    uint8_t quant_bits = 2;
    SaveReason reason = SaveReason::Unknown;
    uint8_t ext_flags = 0;                  // bits 1-2 only; bit 0 follows tool_ids
    std::span<const ToolIdEntry> tool_ids;  // entries for the DSML blocks in text
};

enum class StoreOutcome { Written, KeptExisting, SkippedTooSmall, SkippedOverBudget };

struct CacheHit {
    CacheEntry entry;
    std::string text;
    std::vector<uint8_t> payload;
    std::vector<ToolIdEntry> tool_ids;
};

class DiskCache {
  public:
    // Creates the directory (mode 0700), removes stale temp files and corrupt entries, and
    // evicts down to the budget. Throws ds4::Error when the directory is unusable.
    explicit DiskCache(DiskCacheOptions options);

    const DiskCacheOptions& options() const { return opt_; }

    // The listed entries, from a fresh directory scan.
    std::vector<CacheEntry> entries();
    uint64_t total_bytes();

    // The entry whose text is the longest byte prefix of prompt_text (ties: more tokens)
    // and that this session may load (ctx, quant policy, min tokens).
    std::optional<CacheEntry> find_best(std::string_view prompt_text, uint32_t ctx,
                                        uint8_t quant_bits);

    // Reads an entry after re-checking it against the prompt. nullopt (logged) when the
    // entry changed, is corrupt (then deleted) or is no longer a prefix of prompt_text.
    std::optional<CacheHit> load(const CacheEntry& entry, std::string_view prompt_text);

    // After a successful restore: hits+1 and last_used=now, or delete a large
    // (> cold_max_tokens) checkpoint, which is single-use.
    void record_hit(const CacheEntry& entry, uint32_t loaded_tokens);

    void remove(const CacheEntry& entry, std::string_view why);

    StoreOutcome store(const StoreRequest& req);

    // KTM entries of every listed file whose id satisfies wanted (request-time scan).
    std::vector<ToolIdEntry> load_tool_ids(const std::function<bool(std::string_view)>& wanted);

  private:
    int64_t now() const;
    void note(const std::string& msg) const;
    std::vector<CacheEntry> scan_locked();
    std::optional<CacheEntry> read_entry_locked(const std::filesystem::path& path,
                                                const std::string& sha);
    void evict_locked(const std::string& protected_sha);
    bool keep_existing_locked(const StoreRequest& req, const std::filesystem::path& path,
                              const std::string& sha);
    void remove_stale_temp_files_locked();

    DiskCacheOptions opt_;
    std::mutex mu_;
    uint64_t tmp_counter_ = 0;
};

}  // namespace ds4::kvstore
