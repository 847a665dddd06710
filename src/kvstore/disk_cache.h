// The disk KV cache directory (formats.md §6): lookup by longest rendered-text prefix,
// atomic stores, hit bookkeeping, and a space budget with score-based eviction.
//
// Differences from ds4, all on the safe side and invisible in the file format:
//  - stores write "<sha>.kv.tmp.<pid>.<n>", fsync it, rename, then fsync the directory,
//    so a crash never leaves a partial file under a real name; stale temp files of dead
//    processes are removed when the cache opens;
//  - entries with a valid name but a corrupt or truncated body are reported and deleted
//    (ds4 silently keeps them forever, outside the budget);
//  - every method is safe to call from several threads of one process;
//  - the directory is not rescanned per lookup (interface.md §8 item 23): an in-memory index
//    is built when the cache opens and updated by every store, hit, eviction and delete;
//    files added or removed by someone else are picked up when the directory's mtime
//    changes (a cheap stat per call; an mtime less than 2 s old is not trusted, since
//    file-system timestamps are coarse, so the next call rescans once more).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
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
    // Exact tool replay (interface.md §3.9): the KTM entries a store appends when the
    // request brings none (the ids whose DSML block occurs in the text), and where the
    // entries of a loaded file go. Unset: no KTM section is written, loaded ones are
    // returned in CacheHit only.
    std::function<std::vector<ToolIdEntry>(std::string_view text)> tool_ids_for_text;
    std::function<void(const std::vector<ToolIdEntry>&)> on_tool_ids_loaded;
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

    // The listed entries (from the index; see the header comment).
    std::vector<CacheEntry> entries();
    // Full directory scans so far (1 after opening; tests check that lookups add none).
    uint64_t scans() const;
    uint64_t total_bytes();

    // The entry whose text is the longest byte prefix of prompt_text (ties: more tokens)
    // and that this session may load (ctx, quant policy, min tokens).
    std::optional<CacheEntry> find_best(std::string_view prompt_text, uint32_t ctx,
                                        uint8_t quant_bits);

    // Reads an entry after re-checking it against the prompt. nullopt (logged) when the
    // entry changed, is corrupt (then deleted) or is no longer a prefix of prompt_text.
    // A tool-id map section (ext bit0) that is truncated or malformed makes the file
    // corrupt (logged, deleted); bit0 with no section at all loads nothing (formats §6.5).
    std::optional<CacheHit> load(const CacheEntry& entry, std::string_view prompt_text);

    // After a successful restore: hits+1 and last_used=now, or delete a large
    // (> cold_max_tokens) checkpoint, which is single-use.
    void record_hit(const CacheEntry& entry, uint32_t loaded_tokens);

    void remove(const CacheEntry& entry, std::string_view why);

    StoreOutcome store(const StoreRequest& req);

    // KTM entries of the listed files whose id satisfies wanted (request time). Only the
    // files the index knows to hold such an id are read.
    std::vector<ToolIdEntry> load_tool_ids(const std::function<bool(std::string_view)>& wanted);

  private:
    int64_t now() const;
    void note(const std::string& msg) const;
    bool in_step_locked() const;
    void refresh_locked();
    void rescan_locked();
    void mark_dir_locked();
    void index_locked(const CacheEntry& e);
    void remove_locked(const CacheEntry& entry, std::string_view why);
    std::optional<CacheEntry> read_entry_locked(const std::filesystem::path& path,
                                                const std::string& sha);
    std::optional<std::vector<ToolIdEntry>> read_tool_map_locked(const CacheEntry& e, int fd);
    void evict_locked(const std::string& protected_sha);
    bool keep_existing_locked(const StoreRequest& req, std::span<const ToolIdEntry> tool_ids,
                              const std::filesystem::path& path, const std::string& sha);
    void remove_stale_temp_files_locked();

    DiskCacheOptions opt_;
    mutable std::mutex mu_;
    uint64_t tmp_counter_ = 0;
    std::map<std::string, CacheEntry> index_;                  // sha -> listed entry
    std::map<std::string, std::vector<std::string>> tool_ids_;  // sha -> ids of its KTM section
    int64_t dir_mtime_ns_ = -1;  // when the index was last in step with the directory
    bool dir_racy_ = true;       // dir_mtime_ns_ too recent to trust
    uint64_t scans_ = 0;
};

}  // namespace ds4::kvstore
