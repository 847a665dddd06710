#include "kvstore/disk_cache.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>

#include "ds4/error.h"

namespace ds4::kvstore {
namespace fs = std::filesystem;
namespace {

// A POSIX file descriptor closed on scope exit.
class Fd {
  public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    bool ok() const { return fd_ >= 0; }

  private:
    int fd_;
};

bool read_exact(int fd, void* dst, uint64_t n, uint64_t offset) {
    auto* p = static_cast<uint8_t*>(dst);
    while (n > 0) {
        const ssize_t r =
            ::pread(fd, p, std::min<uint64_t>(n, 1u << 30), static_cast<off_t>(offset));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= static_cast<uint64_t>(r);
        offset += static_cast<uint64_t>(r);
    }
    return true;
}

bool write_all(int fd, const void* src, uint64_t n) {
    const auto* p = static_cast<const uint8_t*>(src);
    while (n > 0) {
        const ssize_t w = ::write(fd, p, std::min<uint64_t>(n, 1u << 30));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= static_cast<uint64_t>(w);
    }
    return true;
}

// Makes a rename durable; best effort, as some filesystems refuse to fsync a directory.
void sync_directory(const fs::path& dir) {
    Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY));
    if (fd.ok()) (void)::fsync(fd.get());
}

// Hits decay with a 6-hour half-life so old popular entries eventually make room.
double eviction_score(const KvcHeader& h, uint64_t file_bytes, int64_t now) {
    const int64_t used_at = h.last_used != 0 ? h.last_used : h.created;
    double eff = 0;
    if (used_at != 0) {
        eff = h.hits * std::exp2(-static_cast<double>(now - used_at) / 21600.0);
        if (eff < 0.01) eff = 0;
    }
    return (eff + 1) * h.tokens / static_cast<double>(std::max<uint64_t>(file_bytes, 1));
}

bool is_own_temp_name(const std::string& name, pid_t* pid) {
    const size_t at = name.find(".kv.tmp.");
    if (at != 40) return false;
    const char* p = name.c_str() + at + 8;
    char* end = nullptr;
    const long v = std::strtol(p, &end, 10);
    if (end == p || v <= 0) return false;
    *pid = static_cast<pid_t>(v);
    return true;
}

}  // namespace

DiskCache::DiskCache(DiskCacheOptions options) : opt_(std::move(options)) {
    if (opt_.dir.empty()) fail("--kv-disk-dir: empty directory name");
    if (opt_.budget_bytes == 0) opt_.budget_bytes = uint64_t{4096} << 20;
    std::error_code ec;
    fs::create_directories(opt_.dir, ec);
    if (ec) fail("--kv-disk-dir ", opt_.dir.string(), ": cannot create directory: ", ec.message());
    if (!fs::is_directory(opt_.dir, ec))
        fail("--kv-disk-dir ", opt_.dir.string(), ": not a directory");
    (void)::chmod(opt_.dir.c_str(), 0700);
    if (::access(opt_.dir.c_str(), R_OK | W_OK | X_OK) != 0)
        fail("--kv-disk-dir ", opt_.dir.string(), ": not writable: ", std::strerror(errno));
    std::lock_guard lock(mu_);
    remove_stale_temp_files_locked();
    rescan_locked();
    evict_locked("");
}

int64_t DiskCache::now() const {
    if (opt_.clock) return opt_.clock();
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void DiskCache::note(const std::string& msg) const {
    if (opt_.log)
        opt_.log(msg);
    else
        std::cerr << "ds4: kv cache: " << msg << '\n';
}

void DiskCache::remove_stale_temp_files_locked() {
    std::error_code ec;
    for (const auto& de : fs::directory_iterator(opt_.dir, ec)) {
        pid_t pid = 0;
        const std::string name = de.path().filename().string();
        if (!is_own_temp_name(name, &pid)) continue;
        if (pid == ::getpid() || (::kill(pid, 0) == 0 || errno == EPERM)) continue;  // writer alive
        if (fs::remove(de.path(), ec)) note(cat("removed ", name, ", left by an interrupted save"));
    }
}

std::optional<CacheEntry> DiskCache::read_entry_locked(const fs::path& path,
                                                       const std::string& sha) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.ok()) return std::nullopt;  // vanished meanwhile
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return std::nullopt;
    const auto size = static_cast<uint64_t>(st.st_size);
    std::string why;
    KvcHeader h;
    std::array<uint8_t, kPrefixBytes> prefix{};
    if (size < kPrefixBytes)
        why = cat("file is ", size, " bytes, shorter than the 52-byte header");
    else if (!read_exact(fd.get(), prefix.data(), kPrefixBytes, 0))
        why = "cannot read the header";
    else if (decode_prefix(prefix, &h, &why) && size < h.body_end())
        why = cat("truncated: ", size, " bytes, header says ", h.body_end());
    if (why.empty()) return CacheEntry{sha, path, h, size};
    std::error_code ec;
    fs::remove(path, ec);
    index_.erase(sha);
    tool_ids_.erase(sha);
    note(cat("deleted corrupt entry ", path.filename().string(), ": ", why));
    return std::nullopt;
}

namespace {

int64_t mtime_ns(const fs::path& dir) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return -1;
    return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}

int64_t wall_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

// Records the directory's mtime as in step with the index. A stamp younger than 2 s may
// hide a later change with the same (coarse) timestamp: then the next call rescans.
void DiskCache::mark_dir_locked() {
    dir_mtime_ns_ = mtime_ns(opt_.dir);
    dir_racy_ = dir_mtime_ns_ < 0 || wall_ns() - dir_mtime_ns_ < 2'000'000'000;
}

bool DiskCache::in_step_locked() const { return !dir_racy_ && mtime_ns(opt_.dir) == dir_mtime_ns_; }

void DiskCache::refresh_locked() {
    if (!in_step_locked()) rescan_locked();
}

void DiskCache::index_locked(const CacheEntry& e) {
    index_[e.sha] = e;
    tool_ids_.erase(e.sha);
    if (!(e.header.ext_flags & kExtToolMap) || e.file_bytes <= e.header.body_end()) return;
    Fd fd(::open(e.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.ok()) return;
    if (auto map = read_tool_map_locked(e, fd.get()); map && !map->empty()) {
        std::vector<std::string>& ids = tool_ids_[e.sha];
        for (ToolIdEntry& t : *map) ids.push_back(std::move(t.id));
    }
}

void DiskCache::rescan_locked() {
    ++scans_;
    mark_dir_locked();  // before listing: a change during the scan shows up next time
    std::error_code ec;
    std::vector<std::pair<fs::path, std::string>> names;
    for (const auto& de : fs::directory_iterator(opt_.dir, ec)) {
        std::string sha;
        if (de.is_regular_file(ec) && parse_entry_name(de.path().filename().string(), &sha))
            names.emplace_back(de.path(), std::move(sha));
    }
    if (ec) note(cat("cannot scan ", opt_.dir.string(), ": ", ec.message()));
    std::sort(names.begin(), names.end());  // deterministic order for ties and logs
    std::map<std::string, CacheEntry> old = std::move(index_);
    index_.clear();
    for (const auto& [path, sha] : names) {
        auto it = old.find(sha);
        // Unchanged size: the header is what the index holds (our own writes update it).
        std::error_code size_ec;
        const uint64_t size = fs::file_size(path, size_ec);
        if (it != old.end() && !size_ec && size == it->second.file_bytes) {
            index_[sha] = it->second;
            continue;
        }
        if (auto e = read_entry_locked(path, sha)) index_locked(*e);
    }
    for (auto it = tool_ids_.begin(); it != tool_ids_.end();)
        it = index_.count(it->first) ? std::next(it) : tool_ids_.erase(it);
}

std::vector<CacheEntry> DiskCache::entries() {
    std::lock_guard lock(mu_);
    refresh_locked();
    std::vector<CacheEntry> out;
    for (const auto& [sha, e] : index_) out.push_back(e);
    return out;
}

uint64_t DiskCache::scans() const {
    std::lock_guard lock(mu_);
    return scans_;
}

uint64_t DiskCache::total_bytes() {
    uint64_t total = 0;
    for (const CacheEntry& e : entries()) total += e.file_bytes;
    return total;
}

std::optional<CacheEntry> DiskCache::find_best(std::string_view prompt_text, uint32_t ctx,
                                               uint8_t quant_bits) {
    std::lock_guard lock(mu_);
    refresh_locked();
    std::optional<CacheEntry> best;
    for (auto& [sha, e] : index_) {
        const KvcHeader& h = e.header;
        if (h.text_bytes > prompt_text.size() || h.tokens < opt_.min_tokens || h.ctx > ctx)
            continue;
        if (opt_.reject_different_quant && h.quant_bits != quant_bits) continue;
        if (best && !(h.text_bytes > best->header.text_bytes ||
                      (h.text_bytes == best->header.text_bytes && h.tokens > best->header.tokens)))
            continue;
        if (sha1_hex(prompt_text.substr(0, h.text_bytes)) == e.sha) best = e;
    }
    return best;
}

std::optional<CacheHit> DiskCache::load(const CacheEntry& entry, std::string_view prompt_text) {
    std::lock_guard lock(mu_);
    auto fresh = read_entry_locked(entry.path, entry.sha);
    if (!fresh) {
        index_.erase(entry.sha);
        tool_ids_.erase(entry.sha);
        note(cat("entry ", entry.path.filename().string(), " disappeared before loading"));
        return std::nullopt;
    }
    const KvcHeader& h = fresh->header;
    if (h.text_bytes > prompt_text.size()) {
        note(cat("entry ", entry.sha, " changed: its text is now longer than the prompt"));
        return std::nullopt;
    }
    Fd fd(::open(entry.path.c_str(), O_RDONLY | O_CLOEXEC));
    CacheHit hit{*fresh, std::string(h.text_bytes, '\0'), {}, {}};
    hit.payload.resize(h.payload_bytes);
    if (!fd.ok() || !read_exact(fd.get(), hit.text.data(), h.text_bytes, kPrefixBytes) ||
        !read_exact(fd.get(), hit.payload.data(), h.payload_bytes, kPrefixBytes + h.text_bytes)) {
        note(cat("cannot read entry ", entry.sha, ": ", std::strerror(errno)));
        return std::nullopt;
    }
    if (sha1_hex(hit.text) != entry.sha) {
        remove_locked(*fresh, "its text does not hash to its name (corrupt)");
        return std::nullopt;
    }
    if (prompt_text.substr(0, h.text_bytes) != hit.text) {
        note(cat("entry ", entry.sha, " is not a prefix of the prompt; not loaded"));
        return std::nullopt;
    }
    if (h.ext_flags & kExtToolMap) {
        auto map = read_tool_map_locked(*fresh, fd.get());
        if (!map) {
            remove_locked(*fresh, "its tool-id map (KTM) section is truncated or malformed (corrupt)");
            return std::nullopt;
        }
        hit.tool_ids = std::move(*map);
        if (opt_.on_tool_ids_loaded && !hit.tool_ids.empty()) opt_.on_tool_ids_loaded(hit.tool_ids);
    }
    return hit;
}

// The KTM section after the payload: nullopt when it is malformed (wrong magic, short,
// a bad entry); an empty map when it is absent or of an unknown version (skipped, as
// formats.md §6.5 says).
std::optional<std::vector<ToolIdEntry>> DiskCache::read_tool_map_locked(const CacheEntry& e, int fd) {
    const uint64_t tail = e.file_bytes - e.header.body_end();
    if (tail == 0) return std::vector<ToolIdEntry>{};
    std::vector<uint8_t> ktm(tail);
    if (!read_exact(fd, ktm.data(), tail, e.header.body_end())) return std::nullopt;
    if (tail < 8 || std::memcmp(ktm.data(), "KTM", 3) != 0) return std::nullopt;
    if (ktm[3] != 1) {
        note(cat("entry ", e.sha, ": tool-id map version ", int{ktm[3]}, " is not 1; ignored"));
        return std::vector<ToolIdEntry>{};
    }
    bool stopped = false;
    std::vector<ToolIdEntry> out = decode_tool_map(ktm, 4 * opt_.max_tool_ids, &stopped);
    if (stopped) return std::nullopt;
    return out;
}

void DiskCache::record_hit(const CacheEntry& entry, uint32_t loaded_tokens) {
    std::lock_guard lock(mu_);
    if (opt_.cold_max_tokens > 0 && loaded_tokens > opt_.cold_max_tokens) {
        remove_locked(entry,
                      cat("consumed: ", loaded_tokens, " tokens > cold max ", opt_.cold_max_tokens));
        return;
    }
    auto fresh = read_entry_locked(entry.path, entry.sha);
    if (!fresh) {
        index_.erase(entry.sha);
        return;
    }
    KvcHeader h = fresh->header;
    h.hits += 1;
    h.last_used = now();
    const auto prefix = encode_prefix(h);
    Fd fd(::open(entry.path.c_str(), O_WRONLY | O_CLOEXEC));
    // The 48-byte header fits one sector: the in-place rewrite is effectively atomic.
    if (!fd.ok() ||
        ::pwrite(fd.get(), prefix.data(), kHeaderBytes, 0) != static_cast<ssize_t>(kHeaderBytes))
        note(cat("cannot update hit count of ", entry.sha, ": ", std::strerror(errno)));
    else if (auto it = index_.find(entry.sha); it != index_.end())
        it->second.header = h;
}

void DiskCache::remove(const CacheEntry& entry, std::string_view why) {
    std::lock_guard lock(mu_);
    remove_locked(entry, why);
}

void DiskCache::remove_locked(const CacheEntry& entry, std::string_view why) {
    const bool in_step = in_step_locked();
    std::error_code ec;
    if (fs::remove(entry.path, ec))
        note(cat("deleted ", entry.path.filename().string(), ": ", why));
    else if (ec)
        note(cat("cannot delete ", entry.path.filename().string(), ": ", ec.message()));
    index_.erase(entry.sha);
    tool_ids_.erase(entry.sha);
    if (in_step) mark_dir_locked();  // our own change only
}

void DiskCache::evict_locked(const std::string& protected_sha) {
    std::vector<CacheEntry> all;
    for (const auto& [sha, e] : index_) all.push_back(e);
    uint64_t total = 0;
    for (const CacheEntry& e : all) total += e.file_bytes;
    const int64_t t = now();
    const auto score = [&](const CacheEntry& e) {
        if (e.sha == protected_sha && e.file_bytes <= opt_.budget_bytes)
            return std::numeric_limits<double>::infinity();
        return eviction_score(e.header, e.file_bytes, t);
    };
    while (total > opt_.budget_bytes && !all.empty()) {
        auto victim =
            std::min_element(all.begin(), all.end(), [&](const CacheEntry& a, const CacheEntry& b) {
                const double sa = score(a), sb = score(b);
                if (sa != sb) return sa < sb;
                return a.header.last_used < b.header.last_used;
            });
        std::error_code ec;
        if (!fs::remove(victim->path, ec)) {
            note(cat("eviction stopped: cannot delete ", victim->path.filename().string(), ": ",
                     ec.message()));
            return;
        }
        note(cat("evicted ", victim->sha, " (", victim->header.tokens, " tokens, ",
                 victim->file_bytes, " bytes) to stay within ", opt_.budget_bytes, " bytes"));
        total -= victim->file_bytes;
        index_.erase(victim->sha);
        tool_ids_.erase(victim->sha);
        all.erase(victim);
    }
}

bool DiskCache::keep_existing_locked(const StoreRequest& req, std::span<const ToolIdEntry> tool_ids,
                                     const fs::path& path, const std::string& sha) {
    auto existing = read_entry_locked(path, sha);
    if (!existing) return false;
    const KvcHeader& h = existing->header;
    std::string text(h.text_bytes, '\0');
    Fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    const bool same_text = fd.ok() && h.text_bytes == req.text.size() &&
                           read_exact(fd.get(), text.data(), h.text_bytes, kPrefixBytes) &&
                           text == req.text;
    const bool usable =
        (h.quant_bits == req.quant_bits || !opt_.reject_different_quant) && h.ctx <= req.ctx;
    if (!same_text || !usable) {
        remove_locked(*existing, same_text ? "replaced: written for another context size or quantization"
                                           : "replaced: stored text differs from its name");
        return false;
    }
    if (tool_ids.empty()) {
        index_locked(*existing);
        return true;
    }
    // Only the tool-id map changes: truncate after the payload and append the new one.
    const std::string ktm = encode_tool_map(tool_ids);
    KvcHeader updated = h;
    updated.ext_flags |= kExtToolMap;
    updated.last_used = now();
    const auto prefix = encode_prefix(updated);
    const bool ok =
        ::ftruncate(fd.get(), static_cast<off_t>(h.body_end())) == 0 &&
        ::lseek(fd.get(), static_cast<off_t>(h.body_end()), SEEK_SET) >= 0 &&
        write_all(fd.get(), ktm.data(), ktm.size()) && ::fsync(fd.get()) == 0 &&
        ::pwrite(fd.get(), prefix.data(), kHeaderBytes, 0) == static_cast<ssize_t>(kHeaderBytes);
    if (!ok) note(cat("cannot update the tool-id map of ", sha, ": ", std::strerror(errno)));
    if (auto e = read_entry_locked(path, sha)) index_locked(*e);
    return true;
}

StoreOutcome DiskCache::store(const StoreRequest& req) {
    if (req.quant_bits != 2 && req.quant_bits != 4)
        fail("kv cache store: routed quant bits must be 2 or 4, got ", int{req.quant_bits});
    if (req.tokens == 0 || req.tokens < opt_.min_tokens) return StoreOutcome::SkippedTooSmall;
    if (req.text.size() > std::numeric_limits<uint32_t>::max())
        fail("kv cache store: rendered text of ", req.text.size(),
             " bytes does not fit the u32 length field");
    std::vector<ToolIdEntry> provided;
    std::span<const ToolIdEntry> tool_ids = req.tool_ids;
    if (tool_ids.empty() && opt_.tool_ids_for_text) {
        provided = opt_.tool_ids_for_text(req.text);
        tool_ids = provided;
    }
    const std::string ktm = tool_ids.empty() ? std::string() : encode_tool_map(tool_ids);
    const uint64_t bytes = kPrefixBytes + req.text.size() + req.payload.size() + ktm.size();
    if (bytes + (bytes + 99) / 100 > opt_.budget_bytes) {
        note(cat("not saving ", req.tokens, " tokens (", save_reason_name(req.reason), "): ", bytes,
                 " bytes exceed the budget of ", opt_.budget_bytes));
        return StoreOutcome::SkippedOverBudget;
    }
    const std::string sha = sha1_hex(req.text);
    const fs::path path = opt_.dir / (sha + ".kv");
    uint64_t serial = 0;
    {
        std::lock_guard lock(mu_);
        if (fs::exists(path) && keep_existing_locked(req, tool_ids, path, sha))
            return StoreOutcome::KeptExisting;
        serial = ++tmp_counter_;
    }
    KvcHeader h;
    h.quant_bits = req.quant_bits;
    h.reason = req.reason;
    h.ext_flags =
        static_cast<uint8_t>((req.ext_flags & ~kExtToolMap) | (ktm.empty() ? 0 : kExtToolMap));
    h.tokens = req.tokens;
    h.ctx = req.ctx;
    h.created = h.last_used = now();
    h.payload_bytes = req.payload.size();
    h.text_bytes = static_cast<uint32_t>(req.text.size());
    const auto prefix = encode_prefix(h);
    // A unique temp name per writer: concurrent stores of one key never share a file.
    const fs::path tmp = opt_.dir / cat(sha, ".kv.tmp.", ::getpid(), '.', serial);
    {
        Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        const bool ok = fd.ok() && write_all(fd.get(), prefix.data(), prefix.size()) &&
                        write_all(fd.get(), req.text.data(), req.text.size()) &&
                        write_all(fd.get(), req.payload.data(), req.payload.size()) &&
                        write_all(fd.get(), ktm.data(), ktm.size()) && ::fsync(fd.get()) == 0;
        if (!ok) {
            const std::string err = std::strerror(errno);
            std::error_code ec;
            fs::remove(tmp, ec);
            fail("kv cache: cannot write ", tmp.string(), ": ", err);
        }
    }
    std::lock_guard lock(mu_);
    const bool in_step = in_step_locked();
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string err = std::strerror(errno);
        std::error_code ec;
        fs::remove(tmp, ec);
        fail("kv cache: cannot rename ", tmp.string(), " to ", path.filename().string(), ": ", err);
    }
    sync_directory(opt_.dir);
    if (auto e = read_entry_locked(path, sha)) index_locked(*e);
    evict_locked(sha);
    // Our own rename changed the directory: still in step unless someone else wrote first.
    if (in_step) mark_dir_locked();
    return StoreOutcome::Written;
}

std::vector<ToolIdEntry> DiskCache::load_tool_ids(
    const std::function<bool(std::string_view)>& wanted) {
    std::lock_guard lock(mu_);
    refresh_locked();
    std::vector<ToolIdEntry> out;
    for (const auto& [sha, ids] : tool_ids_) {
        if (std::none_of(ids.begin(), ids.end(), [&](const std::string& id) { return wanted(id); }))
            continue;
        auto it = index_.find(sha);
        if (it == index_.end()) continue;
        Fd fd(::open(it->second.path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd.ok()) continue;
        auto map = read_tool_map_locked(it->second, fd.get());
        if (!map) continue;
        for (ToolIdEntry& t : *map)
            if (wanted(t.id)) out.push_back(std::move(t));
    }
    return out;
}

}  // namespace ds4::kvstore
